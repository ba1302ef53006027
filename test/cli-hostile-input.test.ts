/**
 * Issue 9, the CLI and campaign paths of the header-injection matrix (the constructor, assignment
 * and wire paths are in packages/core/test/regression/issue-9-header-injection.test.ts):
 * - `mailroom send --now` with every hostile character in the subject and in a Reply-To domain
 *   literal (the contact-form attack). NUL is left out: a process argument cannot carry it.
 * - `mailroom campaign start` with a CSV whose `name` column, used in the subject and in a header,
 *   holds every hostile character (NUL included), drained by a real worker.
 * Each case is either refused (the field named, nothing sent for it) or reaches a real SMTP server
 * as pure, well-formed header bytes.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { campaignStatus } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import {
  CLI_TEST_TIMEOUT,
  queueRig,
  smtpEnvironment,
  smtpServer,
  useHarness,
  useTemporaryDirectory,
} from './support/harness.js';
import { CONTROL_NAMES, HOSTILE_CHARACTERS, headerProblems, inject } from './support/hostile.js';
import { runMailroom } from './support/worker-process.js';

const harness = useHarness();
const dir = useTemporaryDirectory('mailroom-cli-hostile-');

/** Runs `jobs` at most `limit` at a time (each spawns a CLI process). */
async function inBatches<T>(jobs: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = [];
  for (let start = 0; start < jobs.length; start += limit) {
    results.push(...(await Promise.all(jobs.slice(start, start + limit).map((job) => job()))));
  }
  return results;
}

describe('hostile header text through mailroom send', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('refuses or sends well-formed headers for every character, in the subject and a Reply-To', async () => {
    const server = await smtpServer(harness);
    const env = { ...smtpEnvironment(server), REDIS_URL: 'redis://127.0.0.1:1' };
    const fields = {
      '--subject': (c: string) => ['--subject', `Hi${inject(c)}`, '--reply-to', 'help@example.com'],
      '--reply-to': (c: string) => [
        '--subject',
        'Hi',
        '--reply-to',
        `Visitor <visitor@[1.2.3.4${c}Bcc:victim]>`,
      ],
    };
    const cases = Object.entries(HOSTILE_CHARACTERS)
      .filter(([name]) => name !== 'NUL')
      .flatMap(([name, c]) => Object.entries(fields).map(([flag, args]) => ({ name, flag, args: args(c) })));
    const results = await inBatches(
      cases.map((testCase) => async () => {
        const result = await runMailroom(
          [
            'send',
            '--now',
            '--from',
            'a@example.com',
            '--to',
            'b@example.com',
            '--body',
            'the real body',
            ...testCase.args,
          ],
          env,
        );
        return { ...testCase, result };
      }),
      4,
    );
    let sent = 0;
    for (const { name, flag, result } of results) {
      const label = `${flag} x ${name}: ${result.stderr}`;
      if (result.code === 2) {
        expect(result.stderr, label).toMatch(flag === '--subject' ? /subject/ : /replyTo|reply-to/i);
        continue;
      }
      // Sent: only a look-alike in the subject has an encoding (RFC 2047); never a control.
      expect(result.code, label).toBe(0);
      expect(CONTROL_NAMES.has(name), label).toBe(false);
      expect(flag, label).toBe('--subject');
      sent++;
    }
    expect(server.messages).toHaveLength(sent);
    expect(sent).toBeGreaterThan(0);
    for (const message of server.messages) {
      expect(headerProblems(message.raw)).toEqual([]);
      expect(message.to).toEqual(['b@example.com']);
      const text = message.raw.toString('latin1');
      expect(text.slice(text.indexOf('\r\n\r\n'))).toContain('the real body');
    }
  });
});

describe('hostile CSV values through mailroom campaign start', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('counts rows with controls invalid (naming the field) and sends look-alikes as well-formed headers', async () => {
    const { env, server, producer, spawn } = await queueRig(harness, { label: 'cli-hostile' });
    await spawn();
    const names = Object.entries(HOSTILE_CHARACTERS);
    const quote = (value: string) => `"${value.replace(/"/g, '""')}"`;
    const csv =
      'email,name\r\n' +
      names.map(([, c], index) => `reader${index}@example.com,${quote(`Ann${inject(c)}`)}`).join('\r\n') +
      '\r\ngood@example.com,Bob\r\n';
    const recipients = join(dir, 'hostile.csv');
    const text = join(dir, 'body.txt');
    await writeFile(recipients, csv);
    await writeFile(text, 'the real body for {{ email }}\n');
    const result = await runMailroom(
      [
        'campaign',
        'start',
        '--id',
        'hostile',
        '--from',
        'news@example.com',
        '--subject',
        'Hi {{ name }}',
        '--header',
        'X-Name: {{ name }}',
        '--text-file',
        text,
        '--recipients',
        recipients,
        '--json',
      ],
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    const controls = names.filter(([name]) => CONTROL_NAMES.has(name)).length;
    const deliverable = names.length - controls + 1;
    await server.waitForMessages(deliverable, 60_000);
    const status = await campaignStatus(producer, 'hostile');
    expect(status.failedByReason.invalid ?? 0).toBe(controls);
    for (const row of status.invalidRows ?? []) expect(['subject', 'headers.X-Name']).toContain(row.field);
    expect(server.messages).toHaveLength(deliverable);
    for (const message of server.messages) {
      expect(headerProblems(message.raw), message.to.join()).toEqual([]);
      expect(message.to).toHaveLength(1);
      expect(message.raw.toString('latin1')).toContain('the real body for');
    }
  });
});
