/**
 * A failover mid-drain on the local Redis Cluster (3 masters + 3 replicas), with real `mailroom
 * worker` processes on a queue of 3 shards: a manual CLUSTER FAILOVER of the master holding one
 * shard, then a SIGKILL of the master holding another. Nothing is lost, duplicates are few and
 * printed, and the workers carry on without a restart.
 */
import { EmailMessage } from '@mailroom/core';
import { createProducer, type Producer } from '@mailroom/producer';
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI_TEST_TIMEOUT,
  duplicateSends,
  FAST_RECOVERY_ENV,
  receiptsPerRecipient,
  smtpEnvironment,
  smtpServer,
  useHarness,
} from './support/harness.js';
import { uniqueQueue } from './support/redis.js';
import {
  clusterClient,
  clusterSettle,
  ensureCluster,
  failoverMasterOf,
  killMasterOf,
  removeClusterQueueKeys,
} from './support/redis-cluster.js';
import { captureLogger, waitUntil } from './support/wait.js';
import { runMailroom, startWorker } from './support/worker-process.js';

const harness = useHarness();
let seeds = '';
let cluster: Cluster;

beforeAll(async () => {
  seeds = (await ensureCluster()).seeds.join(',');
  cluster = clusterClient(seeds.split(','));
}, 300_000);

afterAll(async () => {
  await cluster?.quit();
  // The next file finds a healthy cluster (the killed master back as a replica).
  await clusterSettle();
}, 120_000);

/** Every key of `queue` on the cluster, after the test. */
const removeClusterKeys = (queue: string) => removeClusterQueueKeys(cluster, queue);

/** A producer on `queue` with 3 shards over the cluster, closed after the test. */
function shardedProducer(queue: string): Producer {
  const producer = createProducer({
    redis: { cluster: seeds },
    queue,
    shards: 3,
    logger: captureLogger().logger,
  });
  harness.onCleanup(() => producer.close());
  return producer;
}

const MESSAGES = 3000;
const WORKERS = 2;
const CONCURRENCY = 3;
const PIPELINE_WINDOW = 32;

describe('failover mid-drain on a sharded queue', () => {
  it(
    'loses nothing when a shard master fails over and another is killed; workers recover without a restart',
    async () => {
      const queue = uniqueQueue('failover');
      harness.onCleanup(() => removeClusterKeys(queue));
      // Slow replies keep the drain going for several seconds: both failovers happen mid-drain.
      const server = await smtpServer(harness, { replyDelayMs: 8, keepRawMessages: false });
      const producer = shardedProducer(queue);
      for (let call = 0; call < MESSAGES / 100; call++) {
        await producer.enqueue(
          Array.from(
            { length: 100 },
            (_, index) =>
              new EmailMessage(`Issue ${call}`, 'Hello', 'news@example.com', [
                `r${call * 100 + index}@example.com`,
              ]),
          ),
        );
      }
      const env = {
        REDIS_CLUSTER_NODES: seeds,
        MAILROOM_SHARDS: '3',
        MAILROOM_QUEUE: queue,
        MAILROOM_PIPELINE_WINDOW: String(PIPELINE_WINDOW),
        ...FAST_RECOVERY_ENV,
        MAILROOM_CONCURRENCY: String(CONCURRENCY),
        ...smtpEnvironment(server),
      };
      const workers = [];
      for (let i = 0; i < WORKERS; i++) workers.push(harness.track(await startWorker(env)));

      const delivered = () => receiptsPerRecipient(server).size;
      await waitUntil(async () => delivered() >= MESSAGES * 0.1, '10% delivered', 120_000, 50);
      const failedOver = await failoverMasterOf(producer.layout.shards[1]!.keys.base);
      const atFailover = delivered();
      await waitUntil(
        async () => delivered() >= atFailover + MESSAGES * 0.1,
        '10% more delivered',
        120_000,
        50,
      );
      const { killed, promoted } = await killMasterOf(producer.layout.shards[2]!.keys.base);
      const atKill = delivered();
      await waitUntil(async () => delivered() === MESSAGES, 'every recipient delivered', 240_000, 100);

      const receipts = receiptsPerRecipient(server);
      const duplicates = duplicateSends(receipts);
      // At most the windows in flight when a master went away could go out twice: per event, per
      // worker process, per connection, one pipeline window.
      const bound = 2 * WORKERS * CONCURRENCY * PIPELINE_WINDOW;
      console.log(
        `[failover] ${MESSAGES} messages over 3 shards, ${WORKERS} workers: failover ${failedOver.before.port}→${failedOver.after.port} at ${atFailover} delivered, ` +
          `SIGKILL of ${killed.port} (promoted ${promoted.port}) at ${atKill}; lost ${MESSAGES - receipts.size}, duplicates ${duplicates} (bound ${bound})`,
      );
      expect(receipts.size).toBe(MESSAGES);
      expect(duplicates).toBeLessThanOrEqual(bound);
      // The same processes drained the rest: none exited, and each still takes jobs.
      for (const worker of workers) expect(worker.child.exitCode).toBeNull();
      await waitUntil(
        async () => {
          const counts = await Promise.all(
            producer.getQueues().map((q) => q.getJobCounts('waiting', 'active', 'delayed', 'failed')),
          );
          return counts.every((count) => Object.values(count).every((n) => n === 0));
        },
        'every shard idle, no dead letter',
        120_000,
        200,
      );
      await producer.enqueue(new EmailMessage('After', 'Hello', 'news@example.com', ['after@example.com']));
      await waitUntil(
        async () => receiptsPerRecipient(server).has('after@example.com'),
        'a message after the failovers',
        60_000,
        50,
      );
    },
    CLI_TEST_TIMEOUT * 2,
  );
});

describe('the CLI on a sharded queue of the cluster', () => {
  it(
    'counts every shard in `mailroom stats`, and a worker with another MAILROOM_SHARDS refuses to strand jobs (exit 3)',
    async () => {
      const queue = uniqueQueue('cluster-cli');
      harness.onCleanup(() => removeClusterKeys(queue));
      const producer = shardedProducer(queue);
      for (let call = 0; call < 3; call++) {
        await producer.enqueue(new EmailMessage('Hi', 'Hello', 'news@example.com', [`c${call}@example.com`]));
      }
      const env = { REDIS_CLUSTER_NODES: seeds, MAILROOM_SHARDS: '3', MAILROOM_QUEUE: queue };
      const stats = await runMailroom(['stats', '--json'], env);
      expect(stats.code).toBe(0);
      expect(JSON.parse(stats.stdout).jobs.waiting).toBe(3);
      const text = await runMailroom(['stats'], env);
      expect(text.stdout).toContain(`queue ${queue} (prefix {mailroom}, 3 shards) on cluster 127.0.0.1:`);

      const refused = await runMailroom(['worker'], { ...env, MAILROOM_SHARDS: '2' }, { timeoutMs: 60_000 });
      expect(refused.code).toBe(3);
      expect(refused.stderr).toMatch(/MAILROOM_SHARDS=2 but queue .* is laid out over 3 shard\(s\)/);
      expect(refused.stderr).toContain('Keep MAILROOM_SHARDS=3');
      // Nothing was taken: the 3 batches still wait.
      const counts = await Promise.all(producer.getQueues().map((q) => q.getJobCounts('waiting')));
      expect(counts.reduce((sum, count) => sum + (count.waiting ?? 0), 0)).toBe(3);
    },
    CLI_TEST_TIMEOUT,
  );
});
