/**
 * Shutdown always ends (issue 10): SIGTERM makes `mailroom worker` exit within
 * MAILROOM_SHUTDOWN_TIMEOUT (+ the 2 s the cut may take) whatever the outside world does. Before, it
 * ran on until a second signal when Redis was down (60 s), refused the password (10 min), or when the
 * SMTP server stopped answering after DATA with EMAIL_TIMEOUT unset. Exit times are printed.
 *
 * Redis down and the wrong password use a redis-server of their own; the silent SMTP server uses the
 * shared Redis with a queue of its own.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { EmailMessage } from '@mailroom/core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CLI_TEST_TIMEOUT,
  FAST_RECOVERY_ENV,
  queueIdle,
  queueRig,
  receiptsPerRecipient,
  useHarness,
} from './support/harness.js';
import { freePort, type PrivateRedis, startRedisServer } from './support/redis-server.js';
import { waitUntil } from './support/wait.js';
import { type MailroomProcess, startWorker } from './support/worker-process.js';

const harness = useHarness();

/** The budget under test: 2 s to finish in-flight messages, then up to 2 s to cut connections. */
const SHUTDOWN_TIMEOUT = '2s';
/** Exit within shutdownTimeout + the cut + process start-up slack on a loaded 2-core machine. */
const EXIT_WITHIN_MS = 6000;

/**
 * Workers get the SMTP timeouts Django and mailroom ship (EMAIL_TIMEOUT and MAILROOM_SMTP_TIMEOUT
 * unset: the spawned processes inherit this environment) and, unless a test says, a backend that
 * never connects.
 */
const WORKER_ENV = { MAILROOM_SHUTDOWN_TIMEOUT: SHUTDOWN_TIMEOUT, EMAIL_BACKEND: 'console' };
beforeAll(() => {
  expect(process.env.EMAIL_TIMEOUT).toBeUndefined();
  expect(process.env.MAILROOM_SMTP_TIMEOUT).toBeUndefined();
});

async function redisServer(
  args: readonly string[] = ['--save', '', '--appendonly', 'no'],
): Promise<PrivateRedis> {
  const server = await startRedisServer(args);
  harness.onCleanup(() => server.stop());
  return server;
}

async function spawnWorker(env: Record<string, string | undefined>): Promise<MailroomProcess> {
  return harness.track(await startWorker({ ...WORKER_ENV, ...env }));
}

/** Sends SIGTERM and resolves with the exit and how long it took; fails (and SIGKILLs) after 20 s. */
async function terminate(process: MailroomProcess, label: string) {
  const asked = Date.now();
  process.kill('SIGTERM');
  const patience = new AbortController();
  const exit = await Promise.race([
    process.exited,
    sleep(20_000, undefined, { signal: patience.signal }).catch(() => undefined),
  ]);
  patience.abort();
  const tookMs = Date.now() - asked;
  if (exit === undefined) {
    process.kill('SIGKILL');
    throw new Error(
      `${label}: still running ${tookMs} ms after SIGTERM\nstdout tail:\n${process.stdout().slice(-2000)}`,
    );
  }
  console.log(
    `[shutdown] ${label}: exit ${JSON.stringify(exit)} after ${tookMs} ms (MAILROOM_SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT})`,
  );
  return { exit, tookMs };
}

const isRedisError = (line: { msg?: string }) =>
  line.msg === 'redis connection error' || line.msg === 'worker error';

describe('SIGTERM ends the worker within its shutdown timeout', () => {
  it('when Redis was never reachable', async () => {
    const worker = await spawnWorker({ REDIS_URL: `redis://127.0.0.1:${await freePort()}` });
    await worker.waitForLog(isRedisError);
    const { exit, tookMs } = await terminate(worker, 'Redis never reachable');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(tookMs).toBeLessThan(EXIT_WITHIN_MS);
    expect(worker.logs.some((line) => line.msg === 'worker stopped')).toBe(true);
  });

  it('when Redis went down under it', async () => {
    const redis = await redisServer();
    const worker = await spawnWorker({ REDIS_URL: redis.url });
    // Connected: the start-up check of Redis's persistence settings has been answered.
    await worker.waitForLog((line) => 'appendonly' in line);
    await redis.stop();
    await worker.waitForLog(isRedisError);
    const { exit, tookMs } = await terminate(worker, 'Redis went down');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(tookMs).toBeLessThan(EXIT_WITHIN_MS);
    expect(worker.logs.some((line) => line.msg === 'worker stopped')).toBe(true);
  });

  it('when Redis refuses its password', async () => {
    const redis = await redisServer(['--save', '', '--appendonly', 'no', '--requirepass', 'the-right-one']);
    const worker = await spawnWorker({ REDIS_URL: `redis://:a-wrong-one@127.0.0.1:${redis.port}` });
    await worker.waitForLog((line) => isRedisError(line) && String(line.err).includes('WRONGPASS'));
    const { exit, tookMs } = await terminate(worker, 'wrong Redis password');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(tookMs).toBeLessThan(EXIT_WITHIN_MS);
    // The password is not in the logs.
    expect(worker.stdout() + worker.stderr()).not.toContain('a-wrong-one');
  });

  it(
    'when the SMTP server stops answering after DATA; the batches go back on the queue and are all delivered later',
    async () => {
      const total = 10;
      let silent = true;
      let hung = 0;
      const { server, producer, spawn } = await queueRig(harness, {
        label: 'silent-smtp',
        // Answers EHLO, MAIL, RCPT and DATA (354), then never the final dot while `silent`.
        server: {
          onData: () => {
            if (!silent) return undefined;
            hung++;
            return new Promise<never>(() => {});
          },
        },
        // Two batches of 5: both of the worker's connections hang.
        producer: { batchSize: 5 },
        env: { ...FAST_RECOVERY_ENV, ...WORKER_ENV, EMAIL_BACKEND: 'smtp' },
      });
      await producer.enqueue(
        Array.from(
          { length: total },
          (_, index) =>
            new EmailMessage(`Issue ${index}`, 'Hello', 'news@example.com', [`reader${index}@example.com`]),
        ),
      );
      const leaving = await spawn();
      await waitUntil(() => hung >= 2, 'both batches to hang after DATA', 30_000);
      const { exit, tookMs } = await terminate(leaving, 'SMTP server silent after DATA');
      expect(exit).toEqual({ code: 0, signal: null });
      expect(tookMs).toBeLessThan(EXIT_WITHIN_MS);
      expect(leaving.logs.map((line) => line.msg)).toEqual(
        expect.arrayContaining([
          'shutdown timeout: cutting connections; unfinished batches will be taken over',
          'shutdown: batch remainder back on the queue',
          'worker stopped',
        ]),
      );
      // Nothing lost: both batches are back on the queue, untouched by the server, and a worker
      // started later delivers every message once.
      expect(await producer.getQueue().getJobCounts('waiting', 'active', 'failed')).toEqual({
        waiting: 2,
        active: 0,
        failed: 0,
      });
      expect(server.messages).toHaveLength(0);
      silent = false;
      await spawn();
      await waitUntil(() => receiptsPerRecipient(server).size >= total, 'every recipient', 60_000, 100);
      await queueIdle(producer);
      const receipts = receiptsPerRecipient(server);
      console.log(
        `[shutdown] silent SMTP: recipients=${receipts.size}/${total} messages=${server.messages.length} after the restart`,
      );
      expect([...receipts.values()].every((count) => count === 1)).toBe(true);
      expect(await producer.getQueue().getJobCounts('failed')).toEqual({ failed: 0 });
    },
    CLI_TEST_TIMEOUT,
  );
});

describe('the SMTP timeout of the worker', () => {
  it(
    'gives up on a server silent after DATA after MAILROOM_SMTP_TIMEOUT and delivers once it answers again',
    async () => {
      let silent = true;
      let hung = 0;
      const { server, producer, spawn } = await queueRig(harness, {
        label: 'smtp-timeout',
        server: {
          onData: () => {
            if (!silent) return undefined;
            hung++;
            return new Promise<never>(() => {});
          },
        },
        env: { ...FAST_RECOVERY_ENV, ...WORKER_ENV, EMAIL_BACKEND: 'smtp', MAILROOM_SMTP_TIMEOUT: '1s' },
      });
      await producer.enqueue(new EmailMessage('Hi', 'Hello', 'news@example.com', ['reader@example.com']));
      const worker = await spawn();
      const deferred = await worker.waitForLog((line) => line.msg === 'message deferred', 15_000);
      expect(deferred).toMatchObject({ reason: 'timeout' });
      expect(hung).toBeGreaterThanOrEqual(1);
      silent = false;
      await server.waitForMessages(1, 30_000);
      await queueIdle(producer);
      expect(server.messages.map((message) => message.to)).toEqual([['reader@example.com']]);
    },
    CLI_TEST_TIMEOUT,
  );
});
