/**
 * The set-up every integration test file shares: one Redis client for the file, worker processes and
 * cleanups that end with each test, and a "rig" of a fresh queue, an SMTP peer and a producer.
 *
 * ```ts
 * const harness = useHarness();
 *
 * it('delivers', async () => {
 *   const { server, producer, spawn } = await queueRig(harness, { label: 'proc' });
 *   await spawn();
 *   await producer.enqueue(message);
 *   await queueIdle(producer);
 *   expect(duplicateSends(receiptsPerRecipient(server))).toBe(0);
 * });
 * ```
 *
 * Builds on redis.ts, smtp-server.ts, wait.ts and worker-process.ts; it adds no transport of its own.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmailMessage } from '@mailroom/core';
import { createProducer, type Producer, type ProducerOptions } from '@mailroom/producer';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach } from 'vitest';
import { PREFIX, REDIS_URL, removeQueueKeys, testRedis, uniqueQueue } from './redis.js';
import { type SmtpServerOptions, type SmtpTestServer, startSmtpServer } from './smtp-server.js';
import { captureLogger, waitUntil } from './wait.js';
import { killAll, type MailroomProcess, startWorker } from './worker-process.js';

/** Timeout of tests that run several `mailroom` processes; other suites may be loading the 2 cores meanwhile. */
export const CLI_TEST_TIMEOUT = 180_000;

/**
 * Worker settings for tests that kill workers: a killed worker's batches are back on the queue within
 * seconds (3 s lock, stalled check every 1 s), 2 connections per worker, retries after 200 ms.
 */
export const FAST_RECOVERY_ENV = {
  MAILROOM_CONCURRENCY: '2',
  MAILROOM_LOCK_DURATION: '3s',
  MAILROOM_STALLED_INTERVAL: '1s',
  MAILROOM_BACKOFF: '200ms',
} as const satisfies Record<string, string>;

/** What {@link useHarness} gives a test file. */
export interface Harness {
  /** A plain Redis client for assertions and cleanup, shared by the file and quit after it. */
  readonly redis: Redis;
  /** Kills `process` (SIGKILL) after the current test, before the cleanups run; returns it. */
  track(process: MailroomProcess): MailroomProcess;
  /** Runs `cleanup` after the current test: cleanups run in reverse order of registration. */
  onCleanup(cleanup: () => unknown): void;
}

/**
 * Call once, at the top of a test file. Registers an `afterEach` that kills every tracked process,
 * then runs the test's cleanups with {@link runCleanups} (last registered first, every one even when
 * an earlier one fails); and an `afterAll` that quits the shared Redis client.
 */
export function useHarness(): Harness {
  const redis = testRedis();
  const processes = new Set<MailroomProcess>();
  const cleanups: (() => unknown)[] = [];

  afterEach(async () => {
    const tracked = [...processes];
    processes.clear();
    // The processes go first (so they come last here): a worker still running would go on writing
    // to the keys the cleanups remove.
    await runCleanups([...cleanups.splice(0), () => killAll(tracked)]);
  });
  afterAll(async () => {
    await redis.quit();
  });

  return {
    redis,
    track(process) {
      processes.add(process);
      return process;
    },
    onCleanup(cleanup) {
      cleanups.push(cleanup);
    },
  };
}

/**
 * Runs every cleanup, last registered first, each even when an earlier one fails (each releases
 * something of its own). Then rethrows: the failure if there was one, an AggregateError if several.
 */
export async function runCleanups(cleanups: readonly (() => unknown)[]): Promise<void> {
  const failures: unknown[] = [];
  for (const cleanup of [...cleanups].reverse()) {
    try {
      await cleanup();
    } catch (error) {
      failures.push(error);
    }
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, `${failures.length} cleanups failed`);
}

/**
 * A directory of its own for a test file: made now (under the OS temp dir, named `prefix` + random
 * characters), removed with everything in it after the file's tests. Returns its path.
 */
export function useTemporaryDirectory(prefix: string): string {
  // Made synchronously so the path is a plain constant of the file.
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** A queue name no other test uses (`<label>-<uuid>`); every key of the queue is removed after the test. */
export function freshQueue(harness: Harness, label: string): string {
  const queue = uniqueQueue(label);
  harness.onCleanup(() => removeQueueKeys(harness.redis, queue));
  return queue;
}

/** A BullMQ Queue object on `queue` with mailroom's key prefix (to add or read jobs directly), closed after the test. */
export function bullmqQueue(harness: Harness, queue: string): Queue {
  const jobs = new Queue(queue, { connection: { url: REDIS_URL }, prefix: PREFIX });
  harness.onCleanup(() => jobs.close());
  return jobs;
}

/** Starts an SMTP test server ({@link startSmtpServer}) that is closed after the test. */
export async function smtpServer(harness: Harness, options: SmtpServerOptions = {}): Promise<SmtpTestServer> {
  const server = await startSmtpServer(options);
  harness.onCleanup(() => server.close());
  return server;
}

/** The environment that points a `mailroom` process's SMTP backend at `server`. */
export function smtpEnvironment(server: SmtpTestServer): Record<string, string> {
  return { EMAIL_BACKEND: 'smtp', EMAIL_HOST: server.host, EMAIL_PORT: String(server.port) };
}

/** Options of {@link queueRig}. */
export interface QueueRigOptions {
  /** Start of the queue name (`<label>-<uuid>`). */
  label: string;
  /** Options of the SMTP test server. Default: a plain server that accepts everything. */
  server?: SmtpServerOptions;
  /** Producer options on top of the queue, REDIS_URL and a captured (unread) logger. */
  producer?: Partial<ProducerOptions>;
  /** Environment of every worker process on top of Redis, the queue and the SMTP backend. */
  env?: Record<string, string>;
}

/** A queue with its SMTP peer and producer; see {@link queueRig}. */
export interface QueueRig {
  queue: string;
  server: SmtpTestServer;
  producer: Producer;
  /** Environment of a `mailroom` process on this queue: REDIS_URL, MAILROOM_QUEUE, the SMTP backend, the rig's `env`. */
  env: Record<string, string>;
  /** Starts a `mailroom worker` process with `env` and `extra` (waits for its banner); killed after the test. */
  spawn(extra?: Record<string, string>): Promise<MailroomProcess>;
}

/**
 * A fresh queue, a started SMTP test server and a producer on the queue. After the test the producer
 * is closed, then the server, then the queue's keys are removed (after every worker is killed).
 */
export async function queueRig(harness: Harness, options: QueueRigOptions): Promise<QueueRig> {
  const queue = freshQueue(harness, options.label);
  const server = await smtpServer(harness, options.server);
  const producer = createProducer({
    redis: REDIS_URL,
    queue,
    logger: captureLogger().logger,
    ...options.producer,
  });
  harness.onCleanup(() => producer.close());
  const env = { REDIS_URL, MAILROOM_QUEUE: queue, ...smtpEnvironment(server), ...options.env };
  return {
    queue,
    server,
    producer,
    env,
    async spawn(extra = {}) {
      return harness.track(await startWorker({ ...env, ...extra }));
    },
  };
}

/**
 * Resolves once the producer's queue has no waiting, active, delayed or prioritized job (checked every
 * 100 ms); rejects after `timeoutMs` (default 60 s).
 */
export async function queueIdle(producer: Producer, timeoutMs = 60_000): Promise<void> {
  await waitUntil(
    async () => {
      const counts = await producer.getQueue().getJobCounts('waiting', 'active', 'delayed', 'prioritized');
      return Object.values(counts).every((count) => count === 0);
    },
    'the queue to be idle',
    timeoutMs,
    100,
  );
}

/**
 * How many messages the server accepted for each envelope recipient. With `ignoreCase`, addresses
 * are lowercased first (as campaigns deduplicate them).
 */
export function receiptsPerRecipient(
  server: SmtpTestServer,
  { ignoreCase = false }: { ignoreCase?: boolean } = {},
): Map<string, number> {
  const counts = new Map<string, number>();
  for (const message of server.messages)
    for (const address of message.to) {
      const to = ignoreCase ? address.toLowerCase() : address;
      counts.set(to, (counts.get(to) ?? 0) + 1);
    }
  return counts;
}

/** Messages beyond the first per recipient, over counts from {@link receiptsPerRecipient}. */
export function duplicateSends(counts: Map<string, number>): number {
  let duplicates = 0;
  for (const count of counts.values()) duplicates += count - 1;
  return duplicates;
}

/** `count` newsletter messages, each to its own recipient `reader<i>@example.com`. */
export function numberedNewsletter(count: number): EmailMessage[] {
  return Array.from(
    { length: count },
    (_, index) =>
      new EmailMessage(`Issue 42 for ${index}`, `Hello reader ${index}`, 'news@example.com', [
        `reader${index}@example.com`,
      ]),
  );
}
