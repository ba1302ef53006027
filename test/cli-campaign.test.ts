/**
 * `mailroom campaign` as a user runs it: start from a CSV or JSONL file, drained by a real
 * `mailroom worker` process into a real SMTP server; `status --watch` with stdout as a pipe (one
 * plain line per interval) and as a terminal (one line redrawn with `\r`, under `script`);
 * pause/resume/cancel; malformed recipient files.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  campaignStatus,
  listCampaigns,
  type Producer,
  pauseCampaign,
  resumeCampaign,
  startCampaign,
} from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import {
  CLI_TEST_TIMEOUT,
  type QueueRig,
  queueRig,
  useHarness,
  useTemporaryDirectory,
} from './support/harness.js';
import { parse } from './support/smtp-server.js';
import { waitUntil } from './support/wait.js';
import { runMailroom, runMailroomInTerminal } from './support/worker-process.js';

const harness = useHarness();
const dir = useTemporaryDirectory('mailroom-cli-campaign-');

/** A queue with its SMTP server and producer (batches of 5); `spawn()` starts a `mailroom worker` on it. */
function rig(): Promise<QueueRig> {
  return queueRig(harness, { label: 'cli-campaign', producer: { batchSize: 5 } });
}

async function file(name: string, content: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

/** A campaign of `count` recipients, fully enqueued through the API, then paused before any worker runs. */
async function pausedCampaign(producer: Producer, id: string, count: number): Promise<void> {
  const handle = await startCampaign(producer, {
    id,
    template: { subject: 'Hello {{ email }}', text: 'Hi {{ email }}', fromEmail: 'news@example.com' },
    recipients: Array.from({ length: count }, (_, index) => `reader${index}@example.com`),
  });
  await handle.enqueued;
  expect(await pauseCampaign(producer, id)).toBe('paused');
}

const FINAL_LINE = (count: number) =>
  new RegExp(`^\\[#{20}\\] 100% ${count}/${count} sent · 0 failed · [\\d.,]+/s · ETA 0s · completed$`);
const PROGRESS_LINE =
  /^\[[#-]{20}\] \d{1,3}% [\d,]+\/[\d,]+ sent · [\d,]+ failed · [\d.,]+\/s · ETA \S+ · \w+$/;

describe('mailroom campaign start', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('drains a CSV with quoted fields, one message per distinct recipient, and --watch ends at 100%', async () => {
    const { env, server, spawn } = await rig();
    await spawn();
    const recipients = await file(
      'subscribers.csv',
      'email,name,city\r\n' +
        'ann@example.com,"Ann, the first",Paris\r\n' +
        '"bob@example.com","Bob ""B"" Jones","New\r\nYork"\r\n' +
        'ANN@example.com,Duplicate,Lyon\r\n' +
        'carl@example.com,Carl,Rome\r\n',
    );
    const text = await file('june.txt', 'Hello {{ name }} from {{ city }}!\n');
    const result = await runMailroom(
      [
        'campaign',
        'start',
        '--id',
        'june',
        '--name',
        'June news',
        '--from',
        'News <news@example.com>',
        '--subject',
        'News for {{ name }}',
        '--text-file',
        text,
        '--recipients',
        recipients,
        '--unsubscribe-url',
        'https://example.com/unsubscribe?e={{ email }}',
        '--batch-size',
        '2',
        '--watch',
        '--interval',
        '200ms',
      ],
      env,
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('june');
    // Not a terminal: plain lines, never a carriage return.
    expect(result.stdout).not.toContain('\r');
    for (const line of lines.slice(1)) expect(line).toMatch(PROGRESS_LINE);
    expect(lines.at(-1)).toMatch(FINAL_LINE(3));

    expect(server.messages.map((message) => message.to[0]).sort()).toEqual([
      'ann@example.com',
      'bob@example.com',
      'carl@example.com',
    ]);
    const byRecipient = new Map(
      await Promise.all(
        server.messages.map(async (message) => [message.to[0], await parse(message.raw)] as const),
      ),
    );
    const ann = byRecipient.get('ann@example.com');
    expect(ann?.subject).toBe('News for Ann, the first');
    expect(ann?.text).toBe('Hello Ann, the first from Paris!\n');
    expect((Array.isArray(ann?.to) ? ann?.to[0] : ann?.to)?.value).toEqual([
      { name: 'Ann, the first', address: 'ann@example.com' },
    ]);
    const annRaw = server.messages.find((message) => message.to[0] === 'ann@example.com')?.raw.toString();
    expect(annRaw).toContain(
      '\r\nList-Unsubscribe: <https://example.com/unsubscribe?e=ann%40example.com>\r\n',
    );
    expect(annRaw).toContain('\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n');
    const bob = byRecipient.get('bob@example.com');
    expect(bob?.subject).toBe('News for Bob "B" Jones');
    expect(bob?.text).toBe('Hello Bob "B" Jones from New\nYork!\n');
  });

  it('starts from JSON Lines, prints the id at once and the enqueue summary on stderr', async () => {
    const { env, producer } = await rig();
    const recipients = await file(
      'list.jsonl',
      `${JSON.stringify({ email: 'a@example.com', name: 'A' })}\n\n${JSON.stringify({ email: 'b@example.com', name: 'B' })}\n` +
        `${JSON.stringify({ email: 'bad@', name: 'Bad' })}\n`,
    );
    const text = await file('text.txt', 'Hi {{ name }}');
    const result = await runMailroom(
      [
        'campaign',
        'start',
        '--from',
        'news@example.com',
        '--subject',
        'Hi',
        '--text-file',
        text,
        '--recipients',
        recipients,
      ],
      env,
    );
    expect(result.code).toBe(0);
    const id = result.stdout.trim();
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(result.stderr).toContain('2 of 3 recipient lines enqueued (1 invalid)');
    // Named by its line in the file (line 2 is blank), address, field and reason (issue 9).
    expect(result.stderr).toMatch(/mailroom campaign: invalid: line 4 \(bad@\): to: Invalid address/);
    const status = await campaignStatus(producer, id);
    expect(status).toMatchObject({ total: 3, queued: 2, failed: 1, failedByReason: { invalid: 1 } });
  });

  it('rejects a malformed recipients file with exit 2 naming the line, and starts nothing', async () => {
    const { env, producer } = await rig();
    const text = await file('t.txt', 'Hi');
    const files = [
      await file('open-quote.csv', 'email,name\na@example.com,"Ann\nb@example.com,Bob\n'),
      await file('no-email.csv', 'address,name\na@example.com,Ann\n'),
      await file('ragged.csv', 'email,name\na@example.com,Ann\nb@example.com\n'),
      await file('bad.jsonl', '{"email": "a@example.com"}\n{"name": "no email"}\n'),
      await file('list.txt', 'a@example.com\n'),
    ];
    const results = await Promise.all(
      files.map((recipients) =>
        runMailroom(
          [
            'campaign',
            'start',
            '--from',
            'n@example.com',
            '--subject',
            'x',
            '--text-file',
            text,
            '--recipients',
            recipients,
          ],
          env,
        ),
      ),
    );
    const fine = await file('fine.csv', 'email\na@example.com\n');
    const insecure = await runMailroom(
      ['campaign', 'start', '--from', 'n@example.com', '--subject', 'x', '--text-file', text].concat([
        '--recipients',
        fine,
        '--unsubscribe-url',
        'http://example.com/u',
      ]),
      env,
    );
    expect(insecure.code).toBe(2);
    expect(insecure.stderr).toBe(
      'mailroom campaign: unsubscribe.url must be an https:// URL (got "http://example.com/u")\n',
    );
    expect(results.map((result) => result.code)).toEqual([2, 2, 2, 2, 2]);
    expect(results[0]?.stderr).toContain('open-quote.csv line 2: a quoted field is never closed');
    expect(results[1]?.stderr).toContain('no-email.csv line 1: the header row has no "email" column');
    expect(results[2]?.stderr).toContain('ragged.csv line 3: expected 2 fields like the header row, got 1');
    expect(results[3]?.stderr).toContain('bad.jsonl line 2: expected an object with an "email" string');
    expect(results[4]?.stderr).toContain('--recipients must be a .csv file');
    for (const result of results) expect(result.stdout).toBe('');
    expect(await listCampaigns(producer)).toEqual([]);
  });
});

describe('mailroom campaign status --watch', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('without a terminal prints one plain line per interval and exits 0 when completed', async () => {
    const { env, producer, spawn } = await rig();
    await pausedCampaign(producer, 'pipe', 12);
    await spawn();
    let paused = 0;
    const watching = runMailroom(['campaign', 'status', 'pipe', '--watch', '--interval', '200ms'], env, {
      onOutput: (stdout) => {
        paused = stdout.split('\n').filter((line) => line.endsWith('· paused')).length;
      },
    });
    await waitUntil(() => paused >= 2, 'two progress lines of the paused campaign');
    expect(await resumeCampaign(producer, 'pipe')).toBe('running');
    const result = await watching;
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.stdout).not.toContain('\r');
    expect(result.stdout).not.toContain('\x1b[');
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const line of lines) expect(line).toMatch(PROGRESS_LINE);
    expect(lines[0]).toMatch(/^\[-{20}\] 0% 0\/12 sent · 0 failed · 0\/s · ETA -- · paused$/);
    expect(lines.at(-1)).toMatch(FINAL_LINE(12));
  });

  it('on a terminal redraws one line with \\r until the campaign completes, then ends the line', async () => {
    const { env, producer, spawn } = await rig();
    await pausedCampaign(producer, 'tty', 12);
    await spawn();
    let frames = 0;
    const watching = runMailroomInTerminal(
      ['campaign', 'status', 'tty', '--watch', '--interval', '200ms'],
      env,
      {
        onOutput: (output) => {
          frames = output.split('\r').filter((frame) => frame.includes('· paused')).length;
        },
      },
    );
    await waitUntil(() => frames >= 2, 'two redraws of the paused campaign');
    expect(await resumeCampaign(producer, 'tty')).toBe('running');
    const result = await watching;
    expect(result.code).toBe(0);
    // Every frame starts with \r and erases the rest of the line; one newline at the very end
    // (the terminal shows it as \r\n).
    expect(result.stdout.startsWith('\r[')).toBe(true);
    expect(result.stdout.endsWith('\x1b[K\r\n')).toBe(true);
    const frameTexts = result.stdout
      .slice(0, -'\r\n'.length)
      .split('\r')
      .filter(Boolean)
      .map((frame) => frame.replace(/\x1b\[K$/, ''));
    expect(frameTexts.length).toBeGreaterThanOrEqual(3);
    for (const frame of frameTexts) expect(frame).toMatch(PROGRESS_LINE);
    expect(frameTexts[0]).toContain('0% 0/12 sent');
    expect(frameTexts.at(-1)).toMatch(FINAL_LINE(12));
  });
});

describe('mailroom campaign status, pause, resume, cancel', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('prints the counts, and each transition prints the new state', async () => {
    const { env, producer } = await rig();
    const handle = await startCampaign(producer, {
      id: 'ops',
      name: 'Ops test',
      template: { subject: 'x', text: 'x', fromEmail: 'news@example.com' },
      recipients: ['a@example.com', 'b@example.com', 'A@example.com', 'bad@'],
    });
    await handle.enqueued;

    const status = await runMailroom(['campaign', 'status', 'ops'], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^campaign {5}ops \(Ops test\)$/m);
    expect(status.stdout).toMatch(/^state {8}running$/m);
    expect(status.stdout).toMatch(/^total {8}3$/m);
    expect(status.stdout).toMatch(/^sent {9}0$/m);
    expect(status.stdout).toMatch(/^failed {7}1 \(invalid 1\)$/m);
    expect(status.stdout).toMatch(/^duplicates {3}1$/m);
    expect(status.stdout).toMatch(/^remaining {4}2$/m);

    const pause = await runMailroom(['campaign', 'pause', 'ops'], env);
    expect([pause.code, pause.stdout]).toEqual([0, 'paused\n']);
    const json = await runMailroom(['campaign', 'status', 'ops', '--json'], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ id: 'ops', state: 'paused', total: 3, remaining: 2 });
    const resume = await runMailroom(['campaign', 'resume', 'ops', '--json'], env);
    expect([resume.code, JSON.parse(resume.stdout)]).toEqual([0, { id: 'ops', state: 'running' }]);
    const cancel = await runMailroom(['campaign', 'cancel', 'ops'], env);
    expect([cancel.code, cancel.stdout]).toEqual([0, 'cancelled\n']);
    expect((await campaignStatus(producer, 'ops')).state).toBe('cancelled');

    const [pauseAgain, unknownStatus, unknownResume] = await Promise.all([
      runMailroom(['campaign', 'pause', 'ops'], env),
      runMailroom(['campaign', 'status', 'nope'], env),
      runMailroom(['campaign', 'resume', 'nope'], env),
    ]);
    expect(pauseAgain.code).toBe(1);
    expect(pauseAgain.stderr).toContain('campaign ops is cancelled; it cannot be paused');
    expect(unknownStatus.code).toBe(1);
    expect(unknownStatus.stderr).toContain('No campaign "nope"');
    expect(unknownResume.code).toBe(1);
    expect(unknownResume.stderr).toContain('No campaign "nope"');
  });
});
