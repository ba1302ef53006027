/**
 * The pipelining crash bound, end to end: `mailroom worker` processes send through a private Postfix
 * (PIPELINING and CHUNKING, so up to MAILROOM_PIPELINE_WINDOW messages in flight per connection) that
 * relays to a sink smtp-server in its own process; one worker is SIGKILLed mid-window three times.
 * deliverBatch keeps a message's place in the window until its ledger entry is written, so a kill
 * leaves at most `window` messages per connection accepted by Postfix but not recorded, and only those
 * are sent again. The figures are printed for the record.
 */
import { createProducer, type Producer } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import {
  duplicateSends,
  FAST_RECOVERY_ENV,
  freshQueue,
  numberedNewsletter,
  queueIdle,
  useHarness,
} from './support/harness.js';
import { startPostfix } from './support/postfix.js';
import { REDIS_URL } from './support/redis.js';
import { type SpawnedSmtpServer, spawnSmtpServer } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';
import { type MailroomProcess, startWorker } from './support/worker-process.js';

const harness = useHarness();

/** Connections (batches) per worker: at most `CONCURRENCY × window` messages of a worker in flight. */
const CONCURRENCY = 2;
/** Messages per batch job, so that message `index` went over the connection of batch `index / BATCH_SIZE`. */
const BATCH_SIZE = 50;

interface Rig {
  sink: SpawnedSmtpServer;
  /** Messages the Postfix in front of the sink accepted so far (from its log). */
  accepted(): Promise<number>;
  producer: Producer;
  /** Starts a `mailroom worker` sending to Postfix, metrics on a free port; killed after the test. */
  spawn(): Promise<MailroomProcess>;
}

/** A fresh queue, a sink in its own process, a Postfix relaying to it, and workers with `window`. */
async function rig(window: number): Promise<Rig> {
  const queue = freshQueue(harness, 'crash-window');
  const sink = await spawnSmtpServer();
  harness.onCleanup(() => sink.stop());
  const postfix = await startPostfix({ deliverTo: { host: sink.host, port: sink.port } });
  harness.onCleanup(() => postfix.stop());
  const producer = createProducer({
    redis: REDIS_URL,
    queue,
    batchSize: BATCH_SIZE,
    logger: captureLogger().logger,
  });
  harness.onCleanup(() => producer.close());
  const env = {
    REDIS_URL,
    MAILROOM_QUEUE: queue,
    EMAIL_BACKEND: 'smtp',
    EMAIL_HOST: postfix.host,
    EMAIL_PORT: String(postfix.port),
    ...FAST_RECOVERY_ENV,
    MAILROOM_CONCURRENCY: String(CONCURRENCY),
    MAILROOM_PIPELINE_WINDOW: String(window),
    // Port 0: a free port, reported in the banner; scraped to kill a worker while it is sending.
    MAILROOM_METRICS_PORT: '0',
    LOG_LEVEL: 'warn',
  };
  return {
    sink,
    accepted: () => postfix.accepted(),
    producer,
    spawn: async () => harness.track(await startWorker(env)),
  };
}

/**
 * What reached the sink: how many of our recipients, the extra copies (in all, and per batch that had
 * any: one batch is one connection at a time), all messages, and any other recipient (a bounce).
 */
function receipts(sink: SpawnedSmtpServer, total: number) {
  const counts = new Map<string, number>();
  const strangers: string[] = [];
  const messages = sink.messages();
  for (const message of messages) {
    for (const to of message.to) {
      const index = /^reader(\d+)@example\.com$/.exec(to)?.[1];
      if (index !== undefined && Number(index) < total) counts.set(to, (counts.get(to) ?? 0) + 1);
      else strangers.push(to);
    }
  }
  const perBatch = new Map<number, number>();
  for (const [to, count] of counts) {
    if (count === 1) continue;
    const batch = Math.floor(Number(/\d+/.exec(to)?.[0]) / BATCH_SIZE);
    perBatch.set(batch, (perBatch.get(batch) ?? 0) + count - 1);
  }
  return {
    unique: counts.size,
    duplicates: duplicateSends(counts),
    /** Extra copies of each batch that had any, largest first. */
    perBatch: [...perBatch.values()].sort((a, b) => b - a),
    messages: messages.length,
    strangers,
  };
}

/** One value of a worker's Prometheus metrics (a metric without labels). */
async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!match) throw new Error(`no ${name} in the metrics of port ${port}`);
  return Number(match[1]);
}

/** The port of a worker's metrics endpoint, from its start banner (`metrics=:PORT`). */
function metricsPort(worker: MailroomProcess): number {
  const match = /metrics=:(\d+)/.exec(worker.stderr());
  if (!match) throw new Error(`no metrics port in the banner: ${worker.stderr()}`);
  return Number(match[1]);
}

/**
 * Resolves with a worker of `workers` that is in the middle of a batch and sending: a batch in
 * flight, and more messages accepted than at the previous look (10 ms before). Pipelined sending keeps
 * its windows occupied meanwhile, so a kill right after lands with messages in flight. `workers` may
 * grow while this waits (replacements joining).
 */
async function sendingWorker(workers: readonly MailroomProcess[]): Promise<MailroomProcess> {
  const before = new Map<MailroomProcess, number>();
  let found: MailroomProcess | undefined;
  await waitUntil(
    async () => {
      for (const worker of workers) {
        const port = metricsPort(worker);
        const [sent, batches] = await Promise.all([
          metric(port, 'mailroom_messages_sent_total'),
          metric(port, 'mailroom_batches_in_flight'),
        ]);
        const previous = before.get(worker);
        before.set(worker, sent);
        if (previous !== undefined && sent > previous && batches > 0) {
          found = worker;
          return true;
        }
      }
      return false;
    },
    'a worker sending',
    60_000,
    10,
  );
  return found as MailroomProcess;
}

/**
 * Enqueues `total` messages, starts `workers` workers, and SIGKILLs a worker `kills` times: each time
 * once Postfix accepted kill/(kills + 2) of the total, the worker seen sending at that moment. Each
 * killed worker is replaced; the replacement starts in the background (a start takes seconds, the
 * drain does not wait for it). Then waits for every recipient at the sink and an idle queue, and
 * returns what the sink received.
 */
async function drainWithKills(window: number, total: number, kills: number, workers = 3) {
  const { sink, accepted, producer, spawn } = await rig(window);
  await producer.enqueue(numberedNewsletter(total));
  const live = await Promise.all(Array.from({ length: workers }, () => spawn()));
  const replacements: Promise<unknown>[] = [];
  for (let kill = 1; kill <= kills; kill++) {
    const progress = Math.floor((kill * total) / (kills + 2));
    await waitUntil(
      async () => (await accepted()) >= progress,
      `${progress} messages at Postfix`,
      120_000,
      100,
    );
    const victim = await sendingWorker(live);
    victim.kill('SIGKILL');
    expect(await victim.exited).toEqual({ code: null, signal: 'SIGKILL' });
    live.splice(live.indexOf(victim), 1);
    replacements.push(spawn().then((worker) => live.push(worker)));
  }
  await Promise.all(replacements);
  // Postfix relays asynchronously: the sink may lag the queue by a few seconds.
  await waitUntil(() => receipts(sink, total).unique >= total, 'every recipient at the sink', 120_000, 100);
  await queueIdle(producer, 60_000);
  const failed = await producer.getQueue().getJobCounts('failed');
  return { ...receipts(sink, total), failed };
}

/**
 * Prints the figures and checks them against the bound. A kill interrupts at most CONCURRENCY
 * connections (batches), and each leaves at most one window accepted by Postfix but not in the
 * ledger, so: every recipient arrives, at most `kills × CONCURRENCY × window` extra copies in all,
 * and the copies of each batch fit in one window per time a kill interrupted it (a batch taken over
 * after a kill can be interrupted again), i.e. Σ ⌈copies of a batch / window⌉ ≤ kills × CONCURRENCY.
 */
function checkBound(
  counts: Awaited<ReturnType<typeof drainWithKills>>,
  window: number,
  total: number,
  kills: number,
) {
  const bound = kills * CONCURRENCY * window;
  const windowsResent = counts.perBatch.reduce((sum, copies) => sum + Math.ceil(copies / window), 0);
  console.log(
    `[crash-window] window=${window} recipients=${counts.unique}/${total} messages=${counts.messages} duplicates=${counts.duplicates} kills=${kills} bound=${bound} perConnection=[${counts.perBatch.join(',')}]`,
  );
  expect(counts.unique).toBe(total);
  expect(counts.strangers).toEqual([]);
  expect(counts.duplicates).toBeLessThanOrEqual(bound);
  expect(windowsResent).toBeLessThanOrEqual(kills * CONCURRENCY);
  expect(counts.failed).toEqual({ failed: 0 });
}

describe('a worker SIGKILLed mid-window', () => {
  it('loses nothing and sends again at most one window per connection per kill (window 8)', async () => {
    const total = 3000;
    const kills = 3;
    const counts = await drainWithKills(8, total, kills);
    // What the bound means against what is observed: 3 kills × 2 connections × 8 = 48 copies is the
    // case where, at every kill, both of the victim's windows were full and wholly accepted by
    // Postfix but not yet in the ledger. Observed on the 2-core machine (2026-12, load 1 to 10), six
    // runs: 16, 26, 40, 26, 42, 16 copies, by connection e.g. [8,8], [8,8,8,2], [8,8,8,8,8,2].
    // One window per connection is not a loose bound but what a kill usually costs: Postfix answers
    // a pipelined window faster than the busy victim reads the replies and writes their group to
    // Redis. The total stays under 48 only because a kill does not always find both windows full (a
    // batch starting or ending, a BDAT not yet complete at Postfix, which drops it with the
    // connection).
    checkBound(counts, 8, total, kills);
  }, 180_000);

  it('with a window of 1, sends again at most one message per connection per kill', async () => {
    const total = 1000;
    const kills = 3;
    const counts = await drainWithKills(1, total, kills);
    // For comparison, nothing pipelined: the bound is the one message per connection on the wire
    // (3 × 2 × 1 = 6); observed 0 to 3 copies over five runs.
    checkBound(counts, 1, total, kills);
  }, 180_000);
});
