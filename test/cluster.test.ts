/**
 * mailroom on a real Redis Cluster (3 masters, 3 replicas: scripts/redis-cluster.sh), with
 * MAILROOM_SHARDS=1 and 3: enqueue and drain, idempotency, campaigns, the global rate limit,
 * dead-letter retry, every Lua script on one slot, and a sharded queue spread over the masters.
 * In-process producer and workers, a real SMTP server; the failover tests (worker processes, a
 * master failed over and one killed) are in cluster-failover.test.ts.
 */
import { EmailMessage } from '@mailroom/core';
import {
  claimLayout,
  type MailroomCommands,
  type QueueKeys,
  queueLayout,
  registerScripts,
  SuppressionList,
} from '@mailroom/core/protocol';
import { campaignStatus, createProducer, type Producer, startCampaign } from '@mailroom/producer';
import {
  createWorker,
  listFailed,
  type MailWorker,
  RateLimiter,
  retryFailed,
  type WorkerOptions,
} from '@mailroom/worker';
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readQueueBacklog } from '../packages/worker/src/queue-gauges.js';
import { receiptsPerRecipient, useHarness } from './support/harness.js';
import { uniqueQueue } from './support/redis.js';
import {
  clusterClient,
  ensureCluster,
  masterOfKey,
  perMaster,
  removeClusterQueueKeys,
} from './support/redis-cluster.js';
import { type SmtpServerOptions, type SmtpTestServer, startSmtpServer } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';

const harness = useHarness();
let seeds = '';
let cluster: Cluster;

beforeAll(async () => {
  seeds = (await ensureCluster()).seeds.slice(0, 3).join(',');
  cluster = clusterClient(seeds.split(','));
}, 300_000);

afterAll(async () => {
  await cluster?.quit();
});

/** Every key of `queue` on the cluster, after the test. */
const removeClusterKeys = (queue: string) => removeClusterQueueKeys(cluster, queue);

interface Rig {
  queue: string;
  server: SmtpTestServer;
  producer: Producer;
  startWorker(options?: Partial<WorkerOptions>): MailWorker;
}

/** A queue on the cluster with `shards` shards, an SMTP server, a producer; workers on demand. */
async function rig(shards: number, serverOptions: SmtpServerOptions = {}): Promise<Rig> {
  const queue = uniqueQueue(`cluster${shards}`);
  harness.onCleanup(() => removeClusterKeys(queue));
  const server = await startSmtpServer(serverOptions);
  harness.onCleanup(() => server.close());
  const redis = { cluster: seeds };
  const producer = createProducer({ redis, queue, shards, batchSize: 10, logger: captureLogger().logger });
  harness.onCleanup(() => producer.close());
  return {
    queue,
    server,
    producer,
    startWorker(options = {}) {
      const worker = createWorker({
        redis,
        queue,
        shards,
        backend: 'smtp',
        backendOptions: { host: server.host, port: server.port },
        backoff: { delay: 50, maxDelay: 200 },
        concurrency: 3,
        logger: captureLogger().logger,
        ...options,
      });
      harness.onCleanup(() => worker.close());
      return worker;
    },
  };
}

function messages(count: number, label = 'user'): EmailMessage[] {
  return Array.from(
    { length: count },
    (_, index) =>
      new EmailMessage(`Hello ${index}`, `Body ${index}`, 'news@example.com', [
        `${label}${index}@example.com`,
      ]),
  );
}

/** Jobs per shard in every state but completed. */
async function jobsPerShard(producer: Producer): Promise<number[]> {
  return Promise.all(
    producer.getQueues().map(async (queue) => {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed');
      return Object.values(counts).reduce((sum, count) => sum + count, 0);
    }),
  );
}

async function drained(producer: Producer, timeoutMs = 60_000): Promise<void> {
  await waitUntil(
    async () => (await jobsPerShard(producer)).every((count) => count === 0),
    'every shard to be idle',
    timeoutMs,
    100,
  );
}

describe.each([1, 3])('Redis Cluster, MAILROOM_SHARDS=%i', (shards) => {
  it('enqueues over the shards and drains every message exactly once', async () => {
    const { producer, server, startWorker } = await rig(shards);
    let enqueued = 0;
    for (let call = 0; call < 6; call++)
      enqueued += (await producer.enqueue(messages(50, `c${call}-`))).messages;
    expect(enqueued).toBe(300);
    const perShard = await jobsPerShard(producer);
    expect(perShard).toHaveLength(shards);
    // Calls without a key go to the shards in turn: 6 calls of 5 batches, 2 calls per shard.
    expect(perShard.every((jobs) => jobs === 30 / shards)).toBe(true);
    startWorker();
    await server.waitForMessages(300, 60_000);
    await drained(producer);
    const receipts = receiptsPerRecipient(server);
    expect(receipts.size).toBe(300);
    expect([...receipts.values()].every((count) => count === 1)).toBe(true);
  });

  it('enqueues an idempotency key once, always on the same shard', async () => {
    const { producer, server, startWorker } = await rig(shards);
    const first = await producer.enqueue(messages(25), { idempotencyKey: 'order-42' });
    const again = await producer.enqueue(messages(25), { idempotencyKey: 'order-42' });
    expect(first.messages).toBe(25);
    expect(again).toMatchObject({ messages: 0, duplicate: true, jobIds: first.jobIds });
    const home = producer.layout.shardForKey('order-42');
    const perShard = await jobsPerShard(producer);
    expect(perShard[home.index]).toBe(3);
    expect(perShard.reduce((sum, jobs) => sum + jobs, 0)).toBe(3);
    startWorker();
    await server.waitForMessages(25, 60_000);
    await drained(producer);
    expect(server.messages).toHaveLength(25);
  });

  it('runs a campaign to completion with exact counters, duplicates and suppressed recipients skipped', async () => {
    const { producer, server, startWorker } = await rig(shards);
    await producer.ready();
    await new SuppressionList(producer.redis, producer.keys).add([
      { address: 'reader7@example.com', reason: 'unsubscribe', source: 'test' },
    ]);
    async function* recipients() {
      for (let i = 0; i < 230; i++) yield { email: `reader${i % 200}@example.com`, name: `Reader ${i}` };
    }
    startWorker();
    await startCampaign(producer, {
      id: 'spring',
      template: { subject: 'Hi {{ name }}', text: 'News for {{ name }}', fromEmail: 'news@example.com' },
      recipients: recipients(),
    });
    await waitUntil(
      async () => (await campaignStatus(producer, 'spring')).state === 'completed',
      'the campaign to complete',
      60_000,
      100,
    );
    const status = await campaignStatus(producer, 'spring');
    expect(status).toMatchObject({
      total: 199,
      sent: 199,
      failed: 0,
      duplicates: 30,
      suppressed: 1,
      remaining: 0,
    });
    expect(server.messages).toHaveLength(199);
    // The campaign's record and every one of its batches live on one shard (one slot).
    const shard = await producer.campaignShard('spring');
    expect(shard.index).toBeGreaterThanOrEqual(0);
    expect((await masterOfKey(shard.keys.campaign('spring'))).port).toBe(
      (await masterOfKey(shard.keys.jobSet('wait'))).port,
    );
  });

  it('holds two workers to one global rate limit across the shards', async () => {
    const { producer, server, startWorker } = await rig(shards);
    await producer.enqueue(messages(30, 'a'));
    await producer.enqueue(messages(30, 'b'));
    await producer.enqueue(messages(30, 'c'));
    const started = Date.now();
    startWorker({ rateLimit: '30/s' });
    startWorker({ rateLimit: '30/s' });
    await server.waitForMessages(90, 60_000);
    const seconds = (Date.now() - started) / 1000;
    // 90 messages at 30/s take at least ~3 s whatever the machine (a slow one only takes longer);
    // the limiter's own catch-up allowance is one slot.
    expect(seconds).toBeGreaterThan((90 - 30) / 30);
    // The limiter's state is queue-wide: one key on the home shard.
    expect(await cluster.exists(producer.keys.rate)).toBe(1);
  });

  it('retries a dead letter on whichever shard it failed', async () => {
    let refuse = true;
    const { producer, server, startWorker } = await rig(shards, {
      onRcpt: (address) =>
        refuse && address.startsWith('flaky') ? { code: 451, message: '4.3.0 try again later' } : undefined,
    });
    startWorker({ attempts: 1 });
    for (let call = 0; call < shards; call++) {
      await producer.enqueue([...messages(4, `ok${call}-`), ...messages(1, `flaky${call}-`)]);
    }
    await waitUntil(
      async () => (await listFailed(producer)).total === shards,
      'one dead letter per shard',
      60_000,
      100,
    );
    const failed = await listFailed(producer);
    expect(failed.jobs.map((job) => job.failures.map((failure) => failure.state))).toEqual(
      Array.from({ length: shards }, () => ['exhausted']),
    );
    refuse = false;
    const retried = await retryFailed(producer, 'all');
    expect(retried.retried).toHaveLength(shards);
    expect(retried.problems).toEqual([]);
    await waitUntil(
      async () => server.messages.length === 5 * shards,
      'the retried messages to arrive',
      60_000,
      100,
    );
    await drained(producer);
    const receipts = receiptsPerRecipient(server);
    expect([...receipts.values()].every((count) => count === 1)).toBe(true);
    expect((await listFailed(producer)).total).toBe(0);
  });
});

describe('every key of a shard, and every script, on one slot', () => {
  /** Keys of every kind QueueKeys names, for a campaign `c` and a job `j`. */
  function allKeys(keys: QueueKeys): string[] {
    return [
      keys.base,
      keys.ledger('j'),
      keys.rate,
      keys.campaigns,
      keys.epoch,
      keys.campaign('c'),
      keys.campaignRate('c'),
      `${keys.campaignSeen('c')}:17`,
      keys.campaignChunks('c'),
      keys.campaignChunkSuppressed('c'),
      keys.campaignFailures('c'),
      keys.campaignInvalid('c'),
      keys.campaignFailedRecipients('c'),
      keys.campaignRetrying('c'),
      keys.suppression,
      keys.workers,
      keys.worker('w'),
      keys.layout,
      keys.campaignShards,
      keys.jobLock('j'),
      keys.deduplication('d'),
      keys.jobSet('wait'),
      keys.jobSet('delayed'),
    ];
  }

  it('puts every key of each shard on the slot of its hash tag', async () => {
    const layout = queueLayout('{mailroom}', 'slots', 3);
    for (const shard of layout.shards) {
      for (const key of allKeys(shard.keys))
        expect((await masterOfKey(key)).port).toBe((await masterOfKey(shard.keys.base)).port);
    }
    // The shards' slots are a third of the ring apart.
    const slots = layout.shards.map((shard) => shard.slot).sort((a, b) => a - b);
    expect(slots[1]! - slots[0]!).toBeGreaterThan(5000);
    expect(slots[2]! - slots[1]!).toBeGreaterThan(5000);
  });

  it('runs every mailroom script on the cluster without a cross-slot error', async () => {
    const queue = uniqueQueue('scripts');
    harness.onCleanup(() => removeClusterKeys(queue));
    const layout = queueLayout('{mailroom}', queue, 3);
    const redis = registerScripts(cluster as never) as unknown as MailroomCommands;
    const now = String(Date.now());
    for (const { keys } of layout.shards) {
      const ledgerKeys = [
        keys.ledger('j'),
        keys.campaign('c'),
        keys.campaignFailures('c'),
        keys.campaignRate('c'),
        keys.jobLock('j'),
        keys.campaignFailedRecipients('c'),
      ];
      const calls: [keyof MailroomCommands, Promise<unknown>][] = [
        ['mailroomTransition', redis.mailroomTransition(keys.campaign('c'), 'paused', 'running', now)],
        [
          'mailroomCommitChunk',
          redis.mailroomCommitChunk(
            keys.campaignChunks('c'),
            keys.campaign('c'),
            keys.campaignFailures('c'),
            keys.campaignInvalid('c'),
            'chunk',
            1,
            1,
            0,
            0,
            0,
            0,
            `${keys.campaignSeen('c')}:1`,
            'f1',
          ),
        ],
        [
          'mailroomSeen',
          redis.mailroomSeen(2, `${keys.campaignSeen('c')}:1`, `${keys.campaignSeen('c')}:2`, 'f1', 'f2'),
        ],
        [
          'mailroomRecord',
          redis.mailroomRecord(
            ...ledgerKeys,
            '60000',
            'c',
            now.slice(0, 10),
            '',
            now,
            'm0',
            'd{}',
            '',
            '',
            '',
          ),
        ],
        ['mailroomCheck', redis.mailroomCheck(...ledgerKeys, '60000', 'c', now.slice(0, 10), '', now)],
        [
          'mailroomReopenExhausted',
          redis.mailroomReopenExhausted(
            keys.ledger('j'),
            keys.campaign('c'),
            keys.campaignFailures('c'),
            keys.campaignFailedRecipients('c'),
            'c',
            '60000',
          ),
        ],
        [
          'mailroomClaimRetry',
          redis.mailroomClaimRetry(
            keys.campaignFailedRecipients('c'),
            keys.campaignRetrying('c'),
            keys.campaign('c'),
            keys.campaignFailures('c'),
            'claim',
            now,
            '0',
            now,
            'a@x',
            keys.ledger('j'),
            'm0',
            '0',
          ),
        ],
        ['mailroomEnsureEpoch', redis.mailroomEnsureEpoch(keys.epoch, 'epoch-id', now)],
        ['mailroomRecordLoss', redis.mailroomRecordLoss(keys.epoch, 'epoch-id', now)],
      ];
      for (const [name, call] of calls) {
        await expect(call, `${name} on ${keys.base}`).resolves.toBeDefined();
      }
    }
    // The worker's own scripts: the global rate limit (home shard), the backlog gauges (every shard),
    // and the layout record's compare-and-set (home shard).
    const limiter = new RateLimiter(cluster, layout.home.keys.rate, { max: 1000, duration: 1000 });
    await expect(limiter.acquire()).resolves.toBeTypeOf('number');
    const backlog = await readQueueBacklog(cluster, layout, { sampleJobs: 8 });
    expect(backlog.states.waiting.batches).toBe(0);
    await expect(claimLayout(cluster, layout)).resolves.toBeUndefined();
    await expect(claimLayout(cluster, queueLayout('{mailroom}', queue, 2))).resolves.toBeUndefined();
  });
});

describe('a queue of 3 shards over 3 masters', () => {
  it('puts about a third of the keys and of the commands of a drain on each master', async () => {
    const { producer, server, startWorker } = await rig(3);
    const masters = (await perMaster()).map((master) => master.port);
    expect(masters).toHaveLength(3);
    const shardMasters = await Promise.all(
      producer.layout.shards.map((shard) => masterOfKey(shard.keys.base)),
    );
    expect(new Set(shardMasters.map((master) => master.port)).size).toBe(3);

    const before = await perMaster();
    for (let call = 0; call < 30; call++) await producer.enqueue(messages(30, `m${call}-`));
    const queued = await perMaster();
    const keysAdded = queued.map((master, index) => master.keys - (before[index]?.keys ?? 0));
    startWorker({ concurrency: 6 });
    await server.waitForMessages(900, 120_000);
    await drained(producer, 120_000);
    const after = await perMaster();
    const commands = after.map((master, index) => master.commands - (before[index]?.commands ?? 0));
    const cpu = after.map((master, index) => master.cpuSeconds - (before[index]?.cpuSeconds ?? 0));
    const share = (values: number[]) => values.map((value) => value / values.reduce((sum, v) => sum + v, 0));
    console.log(
      `[cluster] 3 shards, 900 messages: keys queued per master ${keysAdded.join(' / ')}, ` +
        `commands ${commands.join(' / ')}, Redis CPU ${cpu.map((s) => `${(s * 1000).toFixed(0)} ms`).join(' / ')}`,
    );
    // Other test files may use the cluster at the same time: shares, not exact counts, and wide bounds.
    for (const part of share(keysAdded)) expect(part).toBeGreaterThan(0.2);
    for (const part of share(commands)) expect(part).toBeGreaterThan(0.15);
  });
});
