/**
 * Terminal escape injection through `mailroom` output: an SMTP server that refuses with escape
 * sequences in its reply, and a hand-made batch job with control characters in its id, campaign and
 * recipient, must not reach a terminal raw. Human output shows them escaped (`\x1b`, `\u009b`);
 * `--json` and the worker's JSON logs escape them too and still parse to the original strings.
 */
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { EmailMessage, toWire, WIRE_VERSION } from '@mailroom/core';
import { BATCH_JOB_NAME } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { bullmqQueue, CLI_TEST_TIMEOUT, freshQueue, useHarness } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import { waitUntil } from './support/wait.js';
import {
  baseEnvironment,
  CLI,
  type MailroomProcess,
  type MailroomResult,
  runMailroom,
  startWorker,
} from './support/worker-process.js';

const harness = useHarness();

/** Colour, bell, "set the window title", a one-character CSI (clear screen), a line separator. */
const HOSTILE_REPLY = '5.1.1 \x1b[31mNo such user\x07 \x1b]0;title\x07 \x9b2J\u2028next';
/** The same tricks, plus a bidi override and a line break, for fields taken from job data. */
const HOSTILE_TEXT = '\x1b[31mred\x07\x1b]0;title\x07\x9b2J\u2028\u202eevil\nline';

/**
 * Byte sequences that must not reach a terminal: ESC, BEL, and the UTF-8 encodings of U+009B (CSI),
 * U+2028 and U+202E.
 */
const FORBIDDEN: readonly [string, Buffer][] = [
  ['ESC', Buffer.from([0x1b])],
  ['BEL', Buffer.from([0x07])],
  ['U+009B', Buffer.from('\u009b', 'utf8')],
  ['U+2028', Buffer.from('\u2028', 'utf8')],
  ['U+202E', Buffer.from('\u202e', 'utf8')],
];

/**
 * The names of the forbidden sequences in what a process wrote, `output` being its bytes decoded as
 * UTF-8 (runMailroom and the worker's stdout). Bytes that are not UTF-8, such as a lone 0x9B (the
 * 8-bit CSI), decode to U+FFFD and are reported as such; without them, re-encoding gives back the
 * exact bytes written, which are searched.
 */
function rawControls(output: string): string[] {
  const bytes = Buffer.from(output, 'utf8');
  const found = FORBIDDEN.filter(([, sequence]) => bytes.includes(sequence)).map(([name]) => name);
  return output.includes('\ufffd') ? [...found, 'invalid UTF-8'] : found;
}

/** A peer that speaks just enough SMTP for a client to reach RCPT TO; see {@link hostileSmtpServer}. */
interface HostileSmtpServer {
  port: number;
  /** RCPT TO addresses it refused, in order. */
  refused: string[];
  close(): Promise<void>;
}

/**
 * An SMTP server that refuses every RCPT TO with `550 <reply>`, the reply's bytes written as given.
 * The test server (smtp-server) replaces control characters in its replies, as a hostile server
 * would not, so this one is a plain socket: greeting, EHLO/HELO, MAIL, RCPT, RSET, NOOP, QUIT.
 */
async function hostileSmtpServer(reply: string): Promise<HostileSmtpServer> {
  const refused: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.write('220 hostile.test ESMTP\r\n');
    let pending = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      let end = pending.indexOf('\r\n');
      while (end >= 0) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') socket.write('250 hostile.test\r\n');
        else if (verb === 'RCPT') {
          refused.push(line.replace(/^RCPT TO:<([^>]*)>.*$/i, '$1'));
          socket.write(`550 ${reply}\r\n`);
        } else if (verb === 'QUIT') socket.end('221 bye\r\n');
        else if (verb === 'MAIL' || verb === 'RSET' || verb === 'NOOP') socket.write('250 OK\r\n');
        else socket.write('502 not implemented\r\n');
        end = pending.indexOf('\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    port: address.port,
    refused,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A hostile server that is closed after the test, and the environment pointing `mailroom` at it. */
async function hostilePeer(): Promise<{ server: HostileSmtpServer; env: Record<string, string> }> {
  const server = await hostileSmtpServer(HOSTILE_REPLY);
  harness.onCleanup(() => server.close());
  return {
    server,
    env: { EMAIL_BACKEND: 'smtp', EMAIL_HOST: '127.0.0.1', EMAIL_PORT: String(server.port) },
  };
}

interface ListedFailure {
  index: number;
  state: string;
  reason: string;
  code: number | null;
  detail: string | null;
  recipients: string;
}

interface Listing {
  jobs: { id: string; campaign: string | null; failedReason: string; failures: ListedFailure[] }[];
}

function expectOk(result: MailroomResult): void {
  expect(result.code, result.stderr).toBe(0);
}

/** What {@link deadLetterHostileJob} made. */
interface DeadLetter {
  env: Record<string, string>;
  queue: string;
  worker: MailroomProcess;
  jobId: string;
  campaign: string;
  hostileRecipient: string;
}

/**
 * A worker on a fresh queue sending to {@link hostileSmtpServer}, and a hand-made batch job (anything
 * with access to Redis can write one) with control characters in its id, campaign and a recipient.
 * Resolves once the job is dead-lettered: message 0 refused with {@link HOSTILE_REPLY}, message 1
 * invalid.
 */
async function deadLetterHostileJob(): Promise<DeadLetter> {
  const peer = await hostilePeer();
  const queue = freshQueue(harness, 'cli-hostile');
  const env = { REDIS_URL, MAILROOM_QUEUE: queue, MAILROOM_ATTEMPTS: '1', ...peer.env };
  const worker = harness.track(await startWorker(env));
  const jobId = `job-${HOSTILE_TEXT}-${queue}`;
  const campaign = `campaign-${HOSTILE_TEXT}`;
  const hostileRecipient = `${HOSTILE_TEXT}@example.com`;
  const refused = toWire(new EmailMessage('Hi', 'Hello', 'shop@example.com', ['bad@example.com']));
  const strange = {
    ...toWire(new EmailMessage('Hi', 'Hello', 'shop@example.com', ['x@example.com'])),
    to: [hostileRecipient],
  };
  const jobs = bullmqQueue(harness, queue);
  await jobs.add(
    BATCH_JOB_NAME,
    { v: WIRE_VERSION, messages: [refused, strange], count: 2, campaign, enqueuedAt: Date.now() },
    { jobId, attempts: 1 },
  );
  await waitUntil(
    async () => (await jobs.getJobCounts('failed')).failed === 1,
    'the job to be dead-lettered',
  );
  expect(peer.server.refused).toContain('bad@example.com');
  return { env, queue, worker, jobId, campaign, hostileRecipient };
}

/** HOSTILE_TEXT as forTerminal shows it. */
const SHOWN = '\\x1b[31mred\\x07\\x1b]0;title\\x07\\u009b2J\\u2028\\u202eevil\\nline';

describe('mailroom output with hostile data', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('failed list shows control characters from SMTP replies and job data escaped', async () => {
    const { env, queue } = await deadLetterHostileJob();
    const text = await runMailroom(['failed', 'list'], env);
    expectOk(text);

    expect(rawControls(text.stdout)).toEqual([]);
    expect(rawControls(text.stderr)).toEqual([]);
    // What was in the data is shown, escaped, on the line where it belongs.
    expect(text.stdout).toMatch(
      /^ {2}\[0\] permanent rejected 550 · bad@example\.com · .*\\x1b\[31mNo such user\\x07 \\x1b\]0;title\\x07 \\u009b2J/m,
    );
    expect(text.stdout).toContain(`job job-${SHOWN}-${queue} · failed `);
    expect(text.stdout).toContain(` · campaign campaign-${SHOWN}`);
    expect(text.stdout).toContain(`  [1] permanent invalid · ${SHOWN}@example.com · `);
    // A line break inside a value starts no line of its own.
    expect(text.stdout.split('\n').filter((line) => line.startsWith('line'))).toEqual([]);
  });

  it('failed list --json escapes C1 controls and U+2028 too, and parses to the original strings', async () => {
    const { env, jobId, campaign, hostileRecipient } = await deadLetterHostileJob();
    const json = await runMailroom(['failed', 'list', '--json'], env);
    expectOk(json);

    expect(rawControls(json.stdout)).toEqual([]);
    expect(json.stdout).toContain('\\u009b2J\\u2028\\u202eevil');
    const listed = JSON.parse(json.stdout) as Listing;
    expect(listed.jobs).toHaveLength(1);
    const [job] = listed.jobs;
    expect(job?.id).toBe(jobId);
    expect(job?.campaign).toBe(campaign);
    const [first, second] = job?.failures ?? [];
    expect(first).toMatchObject({ index: 0, state: 'permanent', code: 550, recipients: 'bad@example.com' });
    // The ledger keeps a reply on one line (white space, U+2028 included, folded to a space).
    expect(first?.detail).toContain('\x1b[31mNo such user\x07 \x1b]0;title\x07 \x9b2J next');
    expect(second).toMatchObject({ index: 1, state: 'permanent', recipients: hostileRecipient });
    expect(job?.failedReason).toContain('\x1b[31mNo such user\x07');
  });

  it("the worker's JSON logs quote the reply escaped, and parse to the same text", async () => {
    const { worker } = await deadLetterHostileJob();
    const deadLettered = await worker.waitForLog((line) => line.msg === 'batch dead-lettered');
    // Parsed by the harness from the line as written: the same text as the server's reply.
    expect((deadLettered.failures as string[])[0]).toContain(
      '\x1b[31mNo such user\x07 \x1b]0;title\x07 \x9b2J next',
    );
    expect(worker.stdout()).toContain('\\u009b2J');
    expect(rawControls(worker.stdout())).toEqual([]);
  });

  it('send --now shows the refusing reply escaped, and --json keeps it', async () => {
    const { env } = await hostilePeer();
    const args = [
      'send',
      '--now',
      '--from',
      'shop@example.com',
      '--to',
      'bad@example.com',
      '--subject',
      'Hi',
      '--body',
      'Hello',
    ];
    const [text, json] = await Promise.all([runMailroom(args, env), runMailroom([...args, '--json'], env)]);

    expect(text.code).toBe(1);
    expect(rawControls(text.stdout)).toEqual([]);
    expect(rawControls(text.stderr)).toEqual([]);
    expect(text.stderr).toContain(
      'mailroom send: bad@example.com refused (550): 550 5.1.1 \\x1b[31mNo such user\\x07 \\x1b]0;title\\x07 \\u009b2J\\u2028next\n',
    );

    expect(rawControls(json.stdout)).toEqual([]);
    const reported = JSON.parse(json.stdout) as { refused: { recipient: string; response: string }[] };
    expect(reported.refused).toEqual([
      { recipient: 'bad@example.com', code: 550, response: `550 ${HOSTILE_REPLY}` },
    ]);
  });

  it('an error nothing caught is printed escaped, and the process exits 1', async () => {
    // Preloaded into the process: once cli.ts has installed its handler (or after 5 s without one),
    // a timer throws an error quoting hostile text, as a background task failing on job data could.
    const preload = `const started = Date.now();
    const check = () => {
      if (process.listenerCount('uncaughtException') > 0 || Date.now() - started > 5000)
        throw new Error(${JSON.stringify(`boom ${HOSTILE_TEXT}`)});
      setTimeout(check, 10);
    };
    setTimeout(check, 10);`;
    const queue = freshQueue(harness, 'cli-hostile-crash');
    const child = spawn(
      process.execPath,
      [
        '--conditions=source',
        '--import',
        'tsx',
        '--import',
        `data:text/javascript,${encodeURIComponent(preload)}`,
        CLI,
        'worker',
      ],
      {
        cwd: fileURLToPath(new URL('..', import.meta.url)),
        env: baseEnvironment({ REDIS_URL, MAILROOM_QUEUE: queue }),
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const chunks: Buffer[] = [];
    child.stderr.on('data', (chunk: Buffer) => chunks.push(chunk));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    const stderr = Buffer.concat(chunks).toString('utf8');

    expect(code).toBe(1);
    expect(rawControls(stderr)).toEqual([]);
    // A stack trace is several lines by design: its line breaks stay, everything else is escaped.
    expect(stderr).toContain(`mailroom: Error: boom ${SHOWN.replace('\\n', '\n')}\n    at `);
  });
});
