/**
 * Issue 9, the CLI path of the header-injection matrix: `mailroom send --now` with every hostile
 * character in the subject and in a Reply-To domain literal (the contact-form attack). Each run is
 * either refused (exit 2, the field named, nothing sent) or reaches a real SMTP server as pure,
 * well-formed header bytes. NUL is left out: a process argument cannot carry it (the constructor,
 * wire and campaign paths cover it).
 */
import { describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT, smtpEnvironment, smtpServer, useHarness } from './support/harness.js';
import { CONTROL_NAMES, HOSTILE_CHARACTERS, headerProblems, inject } from './support/hostile.js';
import { runMailroom } from './support/worker-process.js';

const harness = useHarness();

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
