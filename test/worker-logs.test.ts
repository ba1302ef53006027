/**
 * Worker logs for people and machines (issue 10): JSON lines by default off a terminal, readable lines
 * with `--pretty` / LOG_FORMAT=pretty (on a terminal by default), and a persistent Redis error logged
 * with backoff. Before, a worker pointed at a Redis Cluster node answering MOVED wrote ~9,000 "worker
 * error" lines a second, and sent as many commands. The measured rates are printed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { type ErrorRedis, startErrorRedis } from './support/fake-redis.js';
import { freshQueue, useHarness } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import { runMailroom, runMailroomInTerminal, startWorker } from './support/worker-process.js';

const harness = useHarness();

/** Seconds over which the rates are measured, after the worker's start-up. */
const WINDOW_SECONDS = 3;

async function errorRedis(options: Parameters<typeof startErrorRedis>[0]): Promise<ErrorRedis> {
  const server = await startErrorRedis(options);
  harness.onCleanup(() => server.close());
  return server;
}

/** The lines a worker writes for a failing Redis: the connection, a job fetch, the queue layout read at start. */
const ERROR_LINES = new Set([
  'worker error',
  'redis connection error',
  'could not read the queue layout; trying again',
]);

/** Log lines a second and commands a second a worker pointed at `redis` writes and sends. */
async function measure(redis: ErrorRedis, label: string) {
  const worker = harness.track(
    await startWorker({ REDIS_URL: redis.url, EMAIL_BACKEND: 'console', MAILROOM_SHUTDOWN_TIMEOUT: '2s' }),
  );
  // Past the start-up: connected (or trying to), the first errors written.
  await worker.waitForLog((line) => typeof line.msg === 'string' && ERROR_LINES.has(line.msg));
  await sleep(1000);
  const [lines, commands] = [worker.logs.length, redis.commandCount];
  await sleep(WINDOW_SECONDS * 1000);
  const linesPerSecond = (worker.logs.length - lines) / WINDOW_SECONDS;
  const commandsPerSecond = (redis.commandCount - commands) / WINDOW_SECONDS;
  console.log(
    `[log-rate] ${label}: ${linesPerSecond.toFixed(1)} log lines/s, ${commandsPerSecond.toFixed(1)} Redis commands/s over ${WINDOW_SECONDS} s`,
  );
  return { worker, linesPerSecond, commandsPerSecond };
}

describe('a persistent Redis error', () => {
  it('from a Redis that answers every command with an error is logged a bounded number of times a second', async () => {
    const redis = await errorRedis({ reply: '-ERR this server refuses every command' });
    const { worker, linesPerSecond, commandsPerSecond } = await measure(redis, 'every command refused');
    expect(linesPerSecond).toBeLessThan(20);
    expect(commandsPerSecond).toBeLessThan(100);
    // What is summarised is counted, not lost.
    expect(worker.logs.some((line) => typeof line.repeated === 'number' && line.repeated > 1)).toBe(true);
  });

  it('from a Redis Cluster node answering MOVED is logged a bounded number of times a second, and not retried in a hot loop', async () => {
    // The node answers the connection's own commands (INFO, CLIENT SETNAME), so the worker gets
    // ready, then every command on a key is MOVED.
    const redis = await errorRedis({ reply: '-MOVED 1234 127.0.0.1:1', connectionCommandsWork: true });
    const { worker, linesPerSecond, commandsPerSecond } = await measure(redis, 'Redis Cluster node, MOVED');
    expect(linesPerSecond).toBeLessThan(20);
    // The worker backs off (its first command, the layout read, as BullMQ's fetch in bull-worker.ts)
    // instead of retrying thousands of times a second.
    expect(commandsPerSecond).toBeLessThan(100);
    expect(
      worker.logs.some(
        (line) =>
          typeof line.msg === 'string' && ERROR_LINES.has(line.msg) && line.err === 'MOVED 1234 127.0.0.1:1',
      ),
    ).toBe(true);
  });
});

describe('a persistent Redis error after start-up', () => {
  it('on every job fetch (MOVED) is logged a bounded number of times a second, and not retried in a hot loop', async () => {
    // The node also answers the layout read (GET: the queue has 1 shard), so the worker starts its
    // BullMQ workers, whose every fetch is then MOVED.
    const redis = await errorRedis({
      reply: '-MOVED 1234 127.0.0.1:1',
      connectionCommandsWork: true,
      answers: { GET: '$1\r\n1\r\n' },
    });
    const { worker, linesPerSecond, commandsPerSecond } = await measure(redis, 'MOVED on every job fetch');
    expect(linesPerSecond).toBeLessThan(20);
    // BullMQ's fetch backs off (bull-worker.ts) instead of thousands a second.
    expect(commandsPerSecond).toBeLessThan(100);
    expect(
      worker.logs.some((line) => line.msg === 'worker error' && line.err === 'MOVED 1234 127.0.0.1:1'),
    ).toBe(true);
  });
});

describe('log format', () => {
  it.each([
    ['--pretty', ['--pretty'], {}],
    ['LOG_FORMAT=pretty', [], { LOG_FORMAT: 'pretty' }],
  ])('is one readable line an event with %s, and JSON nowhere', async (_, args, env) => {
    const queue = freshQueue(harness, 'pretty-logs');
    const worker = harness.track(
      await startWorker({ REDIS_URL, MAILROOM_QUEUE: queue, EMAIL_BACKEND: 'console', ...env }, args),
    );
    worker.kill('SIGTERM');
    expect(await worker.exited).toEqual({ code: 0, signal: null });
    const lines = worker.stdout().trimEnd().split('\n');
    expect(lines.some((line) => line.startsWith('{'))).toBe(false);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(mailroom-worker\): worker stopped \{"queue":"pretty-logs-[0-9a-f-]+","tookMs":\d+\}$/,
        ),
      ]),
    );
  });

  it('is readable lines by default on a terminal', async () => {
    const queue = freshQueue(harness, 'tty-logs');
    let stopped = false;
    const result = await runMailroomInTerminal(
      ['worker'],
      { REDIS_URL, MAILROOM_QUEUE: queue, EMAIL_BACKEND: 'console', LOG_FORMAT: undefined },
      {
        timeoutMs: 60_000,
        // SIGTERM once the banner names the worker's pid.
        onOutput: (output) => {
          const pid = /mailroom worker pid=(\d+)/.exec(output)?.[1];
          if (pid === undefined || stopped) return;
          stopped = true;
          process.kill(Number(pid), 'SIGTERM');
        },
      },
    );
    expect(result.code).toBe(0);
    const lines = result.stdout.replace(/\u001b\[[0-9;]*m/g, '').split('\r\n');
    expect(lines.some((line) => line.startsWith('{'))).toBe(false);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(mailroom-worker\): worker stopped \{/),
      ]),
    );
  });

  it('refuses another LOG_FORMAT with exit code 3, naming it', async () => {
    const result = await runMailroom(['worker'], { LOG_FORMAT: 'logfmt', REDIS_URL });
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('LOG_FORMAT="logfmt" is not a log format: use json or pretty');
  });
});
