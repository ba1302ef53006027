/** A worker starts only on a queue layout that fits its MAILROOM_SHARDS, and waits out a layout it cannot read yet. */
import { ConfigError } from '@mailroom/core';
import { queueLayout } from '@mailroom/core/protocol';
import { describe, expect, it } from 'vitest';
import { useHarness } from '../../../test/support/harness.js';
import { REDIS_URL, removeShardedQueueKeys, uniqueQueue } from '../../../test/support/redis.js';
import { captureLogger, waitUntil } from '../../../test/support/wait.js';
import { createWorker, type MailWorker } from '../src/index.js';

const harness = useHarness();
const { redis } = harness;

function workerOn(queue: string, shards: number, logger = captureLogger().logger): MailWorker {
  const worker = createWorker({ redis: REDIS_URL, queue, shards, backend: 'memory', logger });
  harness.onCleanup(() => worker.close());
  return worker;
}

function freshQueue(): string {
  const queue = uniqueQueue('worker-layout');
  harness.onCleanup(() => removeShardedQueueKeys(redis, queue));
  return queue;
}

describe('the worker and the queue layout', () => {
  it('refuses a shard count that would leave jobs unread (ConfigError), and takes nothing', async () => {
    const queue = freshQueue();
    const three = queueLayout('{mailroom}', queue, 3);
    await redis.set(three.home.keys.layout, '3');
    await redis.lpush(three.shards[1]!.keys.jobSet('wait'), 'job-a');
    const error = await workerOn(queue, 1)
      .waitUntilReady()
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(
      /MAILROOM_SHARDS=1 .* laid out over 3 shard\(s\), and 1 unfinished job/,
    );
    expect(await redis.get(three.home.keys.layout)).toBe('3');
  });

  it('waits out a layout record it cannot read, and starts once it can', async () => {
    const queue = freshQueue();
    const layout = queueLayout('{mailroom}', queue, 1);
    // A record of the wrong type: GET fails with WRONGTYPE, a Redis error rather than a bad layout.
    await redis.hset(layout.home.keys.layout, 'not', 'a count');
    const logs = captureLogger();
    const worker = workerOn(queue, 1, logs.logger);
    let ready = false;
    void worker.waitUntilReady().then(() => {
      ready = true;
    });
    await waitUntil(
      () => logs.lines.some((line) => line.msg === 'could not read the queue layout; trying again'),
      'the worker to report the failing read',
      15_000,
    );
    expect(ready).toBe(false);
    expect(worker.isReady()).toBe(false);
    await redis.del(layout.home.keys.layout);
    await waitUntil(() => ready, 'the worker to start', 30_000);
    expect(worker.isReady()).toBe(true);
    expect(await redis.get(layout.home.keys.layout)).toBe('1');
  });
});
