/** Live workers (workers.ts): announced, listed while their announcement lives, pruned once it expired, withdrawn. */
import {
  announceWorker,
  liveWorkers,
  protocolDefaults,
  queueKeys,
  type WorkerInfo,
  withdrawWorker,
} from '@mailroom/core/protocol';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { removeQueueKeys, testRedis, uniqueQueue } from '../../../../test/support/redis.js';
import { waitUntil } from '../../../../test/support/wait.js';

const redis = testRedis();
const queue = uniqueQueue('protocol-workers');
const keys = queueKeys(protocolDefaults.prefix, queue);

afterEach(async () => {
  await removeQueueKeys(redis, queue);
});

afterAll(async () => {
  await redis.quit();
});

function worker(id: string, overrides: Partial<WorkerInfo> = {}): WorkerInfo {
  return {
    id,
    host: 'host-a',
    pid: 100,
    queue,
    concurrency: 2,
    version: '0.1.0',
    startedAt: 1_700_000_000_000,
    lastSeenAt: Date.now(),
    heartbeatInterval: 5000,
    ...overrides,
  };
}

describe('liveWorkers', () => {
  it('lists the announced workers, oldest first, with what they announced', async () => {
    const older = worker('host-a:100:aa', { startedAt: 1_000 });
    const newer = worker('host-b:200:bb', { host: 'host-b', pid: 200, startedAt: 2_000, concurrency: 8 });
    await announceWorker(redis, keys, newer);
    await announceWorker(redis, keys, older);
    expect(await liveWorkers(redis, keys)).toEqual([older, newer]);
  });

  it('drops a worker three heartbeats after its last one, and prunes it from the index', async () => {
    const live = worker('host-a:100:live');
    // 20 ms heartbeats: the announcement lives 60 ms.
    const gone = worker('host-a:101:gone', { heartbeatInterval: 20 });
    await announceWorker(redis, keys, live);
    await announceWorker(redis, keys, gone);
    expect(await redis.pttl(keys.worker(gone.id))).toBeLessThanOrEqual(60);
    expect(await redis.pttl(keys.worker(live.id))).toBeGreaterThan(14_000);
    await waitUntil(
      async () => (await redis.exists(keys.worker(gone.id))) === 0,
      'the announcement to expire',
    );
    expect(await redis.zrange(keys.workers, 0, -1)).toHaveLength(2);

    expect((await liveWorkers(redis, keys)).map((info) => info.id)).toEqual([live.id]);
    expect(await redis.zrange(keys.workers, 0, -1)).toEqual([live.id]);
  });

  it('keeps a worker that heartbeats again within its window', async () => {
    const info = worker('host-a:100:beat', { heartbeatInterval: 200 });
    await announceWorker(redis, keys, info);
    const again = { ...info, lastSeenAt: info.lastSeenAt + 150 };
    await announceWorker(redis, keys, again);
    expect(await liveWorkers(redis, keys)).toEqual([again]);
    expect(Number(await redis.zscore(keys.workers, info.id))).toBe(again.lastSeenAt);
  });

  it('prunes an announcement that does not parse', async () => {
    await redis.zadd(keys.workers, Date.now(), 'bogus');
    await redis.set(keys.worker('bogus'), '{"id":"bogus","pid":"not a number"}', 'PX', 60_000);
    expect(await liveWorkers(redis, keys)).toEqual([]);
    expect(await redis.zcard(keys.workers)).toBe(0);
  });

  it('forgets a withdrawn worker at once', async () => {
    const info = worker('host-a:100:bye');
    await announceWorker(redis, keys, info);
    await withdrawWorker(redis, keys, info.id);
    expect(await liveWorkers(redis, keys)).toEqual([]);
    expect(await redis.exists(keys.workers, keys.worker(info.id))).toBe(0);
  });

  it('returns an empty list for a queue no worker ever announced itself on', async () => {
    expect(await liveWorkers(redis, queueKeys(protocolDefaults.prefix, uniqueQueue('nobody')))).toEqual([]);
  });
});
