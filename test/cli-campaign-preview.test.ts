/**
 * Before a campaign is sent, as a user runs it (child processes): `campaign preview`, `start
 * --dry-run`, `start --test-to`, placeholder typos stopping `start`, `--send-at`, and Ctrl-C during
 * `start` (interrupted, resumed with the same id, every recipient sent once).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { campaignStatus, listCampaigns, type Producer } from '@mailroom/producer';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import {
  CLI_TEST_TIMEOUT,
  type QueueRig,
  queueRig,
  receiptsPerRecipient,
  useHarness,
  useTemporaryDirectory,
} from './support/harness.js';
import { waitUntil } from './support/wait.js';
import { runMailroom, spawnMailroom } from './support/worker-process.js';

const harness = useHarness();
const dir = useTemporaryDirectory('mailroom-cli-preview-');

function rig(): Promise<QueueRig> {
  return queueRig(harness, { label: 'cli-preview' });
}

async function file(name: string, content: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

const CSV =
  'email,name,city\r\n' +
  'ann@example.com,"Ann, the first",Paris\r\n' +
  'bob@example.com,Bob,\r\n' +
  'bad@,Bad,Rome\r\n' +
  'ANN@example.com,Duplicate,Lyon\r\n' +
  'cy@example.com,Cy,Oslo\r\n';

/** The flags of a campaign from `recipients` with body `text`. */
async function campaignFlags(
  recipients: string,
  text = 'Hello {{ name }} from {{ city }}!\n',
): Promise<string[]> {
  return [
    '--from',
    'News <news@example.com>',
    '--subject',
    'News for {{ name }}',
    '--text-file',
    await file(`text-${Math.random().toString(36).slice(2)}.txt`, text),
    '--recipients',
    recipients,
  ];
}

/** Nothing on the queue and no campaign record. */
async function nothingEnqueued(producer: Producer): Promise<void> {
  expect(await listCampaigns(producer)).toEqual([]);
  const counts = await producer.getQueue().getJobCounts('waiting', 'delayed', 'prioritized', 'active');
  expect(counts).toEqual({ waiting: 0, delayed: 0, prioritized: 0, active: 0 });
}

describe('mailroom campaign preview', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('prints the first recipient’s headers and body and writes the .eml', async () => {
    const { env, producer } = await rig();
    const recipients = await file('list.csv', CSV);
    const output = join(dir, 'preview.eml');
    const result = await runMailroom(
      [
        'campaign',
        'preview',
        ...(await campaignFlags(recipients)),
        '--html-file',
        await file('body.html', '<p>{{ name }}</p>'),
        '--output',
        output,
      ],
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe(
      'From: News <news@example.com>\nTo: "Ann, the first" <ann@example.com>\nSubject: News for Ann, the first\n\n' +
        'Hello Ann, the first from Paris!\n\n',
    );
    expect(result.stderr).toContain('recipient 1 (line 2)');
    const parsed = await simpleParser(await readFile(output));
    expect(parsed.subject).toBe('News for Ann, the first');
    expect(parsed.text).toBe('Hello Ann, the first from Paris!\n');
    expect(parsed.html).toContain('<p>Ann, the first</p>');
    await nothingEnqueued(producer);
  });

  it('previews a recipient chosen by address, as JSON', async () => {
    const { env } = await rig();
    const recipients = await file('list.csv', CSV);
    const result = await runMailroom(
      [
        'campaign',
        'preview',
        ...(await campaignFlags(recipients)),
        '--recipient',
        'CY@example.com',
        '--json',
      ],
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({
      recipient: 5,
      line: 6,
      email: 'Cy <cy@example.com>',
      headers: { Subject: 'News for Cy' },
      text: 'Hello Cy from Oslo!\n',
      html: null,
    });
  });

  it('exits 2 naming the row and field of a recipient that cannot be rendered, and of one not in the file', async () => {
    const { env } = await rig();
    const recipients = await file('list.csv', CSV);
    const empty = await runMailroom(
      ['campaign', 'preview', ...(await campaignFlags(recipients)), '--recipient', '2'],
      env,
    );
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain('recipient 2 (');
    expect(empty.stderr).toContain('line 3): placeholder.city: no value for {{ city }}');
    const missing = await runMailroom(
      ['campaign', 'preview', ...(await campaignFlags(recipients)), '--recipient', '9'],
      env,
    );
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--recipient 9:');
    expect(missing.stderr).toContain('has 5 recipients');
  });
});

describe('mailroom campaign start --dry-run', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('checks every line, prints a summary with the invalid rows, exits 0 and writes nothing', async () => {
    const { env, producer } = await rig();
    const recipients = await file('list.csv', CSV);
    const result = await runMailroom(
      ['campaign', 'start', '--dry-run', ...(await campaignFlags(recipients))],
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^recipients {3}5$/m);
    expect(result.stdout).toMatch(/^valid {8}2 \(would be enqueued\)$/m);
    expect(result.stdout).toMatch(/^invalid {6}2$/m);
    expect(result.stdout).toMatch(/^duplicates {3}1$/m);
    expect(result.stdout).toMatch(/^placeholders name, city$/m);
    expect(result.stderr).toContain('invalid: line 3 (bob@example.com): placeholder.city:');
    expect(result.stderr).toContain('invalid: line 4 (bad@): to:');
    expect(result.stderr).toContain('dry run: nothing was enqueued');
    await nothingEnqueued(producer);

    const json = await runMailroom(
      ['campaign', 'start', '--dry-run', '--json', ...(await campaignFlags(recipients))],
      env,
    );
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      dryRun: true,
      recipients: 5,
      valid: 2,
      invalid: 2,
      duplicates: 1,
      suppressed: 0,
      columns: ['email', 'name', 'city'],
      invalidRows: [
        { row: 2, line: 3, field: 'placeholder.city' },
        { row: 3, line: 4, field: 'to' },
      ],
    });
    await nothingEnqueued(producer);
  });
});

describe('placeholders that match no column', { timeout: CLI_TEST_TIMEOUT }, () => {
  it.each([
    [
      'a typo',
      'Hello {{ nmae }}!',
      'list.csv',
      CSV,
      /template\.text uses \{\{ nmae \}\}.*\(did you mean name\?\)/,
    ],
    [
      'a column differing in case',
      'Hello {{ name }}!',
      'upper.csv',
      'email,Name,city\nann@example.com,Ann,Paris\n',
      /\{\{ name \}\}.*\(did you mean Name\? placeholders are case-sensitive\)/,
    ],
  ])(
    'stop start (and --dry-run) for %s with exit 2, nothing enqueued',
    async (_label, text, name, csv, message) => {
      const { env, producer } = await rig();
      const recipients = await file(name, csv);
      const flags = await campaignFlags(recipients, text);
      for (const extra of [[], ['--dry-run']]) {
        const result = await runMailroom(['campaign', 'start', '--id', 'typo', ...extra, ...flags], env);
        expect(result.code).toBe(2);
        expect(result.stderr).toMatch(message);
        expect(result.stdout).toBe('');
      }
      await nothingEnqueued(producer);
      expect(await harness.redis.exists(producer.keys.campaign('typo'))).toBe(0);
    },
  );
});

describe('mailroom campaign start --test-to', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('enqueues exactly one message, to that address only, rendered from the chosen row', async () => {
    const { env, producer, server, spawn } = await rig();
    const recipients = await file('list.csv', CSV);
    const result = await runMailroom(
      [
        'campaign',
        'start',
        ...(await campaignFlags(recipients)),
        '--test-to',
        'me@example.org',
        '--recipient',
        '5',
      ],
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    const jobs = await producer.getQueue().getWaiting();
    expect(jobs.map((job) => job.id)).toEqual([result.stdout.trim()]);
    expect(await listCampaigns(producer)).toEqual([]);
    await spawn();
    await server.waitForMessages(1);
    expect([...receiptsPerRecipient(server)]).toEqual([['me@example.org', 1]]);
    const parsed = await simpleParser(server.messages[0]?.raw ?? '');
    expect(parsed.subject).toBe('News for Cy');
    expect(parsed.text).toBe('Hello Cy from Oslo!\n');
  });
});

describe('mailroom campaign start --send-at', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('enqueues the batches delayed until the time, and status shows it', async () => {
    const { env, producer } = await rig();
    const recipients = await file('ok.csv', 'email,name,city\na@example.com,A,X\nb@example.com,B,Y\n');
    const sendAt = '2099-01-01T09:00:00+02:00';
    const refused = await runMailroom(
      ['campaign', 'start', ...(await campaignFlags(recipients)), '--send-at', sendAt],
      env,
    );
    // Beyond half the campaign record's lifetime.
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('sendAt');
    const past = await runMailroom(
      ['campaign', 'start', ...(await campaignFlags(recipients)), '--send-at', '2020-01-01T00:00:00Z'],
      env,
    );
    expect(past.code).toBe(2);
    expect(past.stderr).toContain('--send-at "2020-01-01T00:00:00Z" is in the past');
    const bad = await runMailroom(
      ['campaign', 'start', ...(await campaignFlags(recipients)), '--send-at', '2025-07-01 09:00'],
      env,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--send-at must be an ISO 8601 time with its offset');
    await nothingEnqueued(producer);

    const before = Date.now();
    const result = await runMailroom(
      ['campaign', 'start', '--id', 'later', ...(await campaignFlags(recipients)), '--send-at', '2h'],
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/scheduled for \d{4}-\d\d-\d\dT/);
    const delayed = await producer.getQueue().getDelayed();
    expect(delayed).toHaveLength(1);
    const due = (delayed[0]?.timestamp ?? 0) + (delayed[0]?.opts.delay ?? 0);
    expect(due).toBeGreaterThanOrEqual(before + 2 * 3_600_000 - 1000);
    expect(due).toBeLessThanOrEqual(Date.now() + 2 * 3_600_000 + 1000);
    const status = await runMailroom(['campaign', 'status', 'later', '--json'], env);
    const sendAtShown = (JSON.parse(status.stdout) as { sendAt: number }).sendAt;
    expect(Math.abs(sendAtShown - due)).toBeLessThan(1000);
    const text = await runMailroom(['campaign', 'status', 'later'], env);
    expect(text.stdout).toContain(`scheduled    for ${new Date(sendAtShown).toISOString()}`);
  });
});

describe('Ctrl-C during mailroom campaign start', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('marks the campaign interrupted, says how to resume, exits 130; the resume sends everyone once', async () => {
    const { env, producer, server, spawn } = await rig();
    const total = 600;
    const lines = Array.from({ length: total }, (_, index) => `reader${index}@example.com,R${index}\n`);
    const recipients = await file('big.csv', `email,name\n${lines.join('')}`);
    const flags = [...(await campaignFlags(recipients, 'Hi {{ name }}')), '--batch-size', '10'];
    // No worker yet: backpressure (20 batches of 10) holds the start mid-file.
    const start = spawnMailroom(['campaign', 'start', '--id', 'ctrl-c', ...flags], env);
    harness.track(start);
    await waitUntil(
      async () => (await harness.redis.hget(producer.keys.campaign('ctrl-c'), 'queued')) === '200',
      'backpressure',
    );
    start.kill('SIGINT');
    const exited = await start.exited;
    expect(exited.code).toBe(130);
    const resume = /resume with: (.*)$/m.exec(start.stderr())?.[1];
    expect(start.stderr()).toContain('interrupted: 200 of 600 recipients enqueued');
    expect(resume).toBe(
      `mailroom campaign start --id ctrl-c --from 'News <news@example.com>' --subject 'News for {{ name }}' ` +
        flags.slice(4).join(' '),
    );
    expect(await campaignStatus(producer, 'ctrl-c')).toMatchObject({
      enqueueFinished: true,
      enqueueError: 'interrupted by SIGINT during "mailroom campaign start"',
      queued: 200,
    });

    await spawn();
    await waitUntil(
      async () => (await campaignStatus(producer, 'ctrl-c')).state === 'interrupted',
      'interrupted',
    );
    const resumed = await runMailroom(['campaign', 'start', '--id', 'ctrl-c', ...flags], env);
    expect(resumed.code, resumed.stderr).toBe(0);
    await waitUntil(
      async () => (await campaignStatus(producer, 'ctrl-c')).state === 'completed',
      'completed',
      60_000,
    );
    const receipts = receiptsPerRecipient(server);
    expect(receipts.size).toBe(total);
    expect([...receipts.values()].every((count) => count === 1)).toBe(true);
  });
});
