/** Sharded queues (shards.ts, layout-record.ts) and REDIS_CLUSTER_NODES (cluster-nodes.ts): pure rules, and the layout record on a real Redis. */

import { ConfigError, readSettings } from '@mailroom/core';
import {
  campaignShardOf,
  checkShardCount,
  claimLayout,
  describeRedis,
  hashTag,
  parseClusterNodes,
  protocolDefaults,
  queueLayout,
  shardPrefix,
} from '@mailroom/core/protocol';
import calculateSlot from 'cluster-key-slot';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { removeShardedQueueKeys, testRedis, uniqueQueue } from '../../../../test/support/redis.js';

const redis = testRedis();
const queues: string[] = [];

/** A queue name whose keys (every shard's) are removed after the test. */
function freshQueue(): string {
  const queue = uniqueQueue('shards');
  queues.push(queue);
  return queue;
}

afterEach(async () => {
  for (const queue of queues.splice(0)) await removeShardedQueueKeys(redis, queue);
});

afterAll(async () => {
  await redis.quit();
});

describe('REDIS_CLUSTER_NODES', () => {
  it('reads host:port seeds, bare hosts and redis:// URLs with one password', () => {
    expect(parseClusterNodes('10.0.0.1:7000, 10.0.0.2:7001,cache')).toEqual({
      seeds: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
        { host: 'cache', port: 6379 },
      ],
      tls: false,
    });
    expect(parseClusterNodes('redis://:s3cret@a:7000,b:7001,[::1]:7002')).toEqual({
      seeds: [
        { host: 'a', port: 7000 },
        { host: 'b', port: 7001 },
        { host: '::1', port: 7002 },
      ],
      password: 's3cret',
      tls: false,
    });
    expect(parseClusterNodes('rediss://app:pw@a:6380,rediss://app:pw@b:6380')).toMatchObject({
      username: 'app',
      password: 'pw',
      tls: true,
    });
  });

  it('refuses what cannot be one cluster, naming the setting and never the password', () => {
    const refusal = (text: string) => {
      try {
        parseClusterNodes(text);
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as Error).message;
      }
      throw new Error(`accepted ${text}`);
    };
    expect(refusal(' , ')).toMatch(/REDIS_CLUSTER_NODES holds no seed node/);
    expect(refusal('a:70000')).toMatch(/port 70000 of a/);
    expect(refusal('redis://:pw-alpha@a:1,redis://:pw-beta@b:2')).toMatch(/different passwords/);
    expect(refusal('redis://:pw-alpha@a:1,redis://:pw-beta@b:2')).not.toMatch(/alpha|beta/);
    expect(refusal('rediss://a:1,b:2')).toMatch(/TLS/);
    expect(refusal('redis://:topsecret@a:1/3')).toMatch(/only database 0/);
    expect(refusal('redis://:topsecret@a:1/3')).not.toContain('topsecret');
    expect(refusal('http://a:1')).toMatch(/host:port or a redis/);
  });

  it('is a setting that takes precedence over REDIS_URL and is never shown', () => {
    expect(readSettings({ REDIS_CLUSTER_NODES: 'a:7000' }).REDIS_CLUSTER_NODES).toBe('a:7000');
    expect(readSettings({}).REDIS_CLUSTER_NODES).toBeNull();
    expect(() => readSettings({ REDIS_CLUSTER_NODES: 'redis://:hunter2@a:99999' })).toThrow(ConfigError);
    try {
      readSettings({ REDIS_CLUSTER_NODES: 'redis://:hunter2@a:99999' });
    } catch (error) {
      expect((error as Error).message).not.toContain('hunter2');
    }
    expect(describeRedis({ cluster: 'redis://:hunter2@a:7000,b:7001' })).toBe('cluster a:7000,b:7001');
  });

  it('MAILROOM_SHARDS is an integer from 1 to 64, default 1', () => {
    expect(readSettings({}).MAILROOM_SHARDS).toBe(1);
    expect(readSettings({ MAILROOM_SHARDS: '3' }).MAILROOM_SHARDS).toBe(3);
    expect(() => readSettings({ MAILROOM_SHARDS: '0' })).toThrow(/MAILROOM_SHARDS/);
    expect(() => readSettings({ MAILROOM_SHARDS: '65' })).toThrow(/from 1 to 64/);
    expect(() => checkShardCount(2.5)).toThrow(ConfigError);
  });
});

describe('shard layout', () => {
  it('keeps shard 0 as the unsharded layout and gives every other shard its own hash tag', () => {
    const prefix = protocolDefaults.prefix;
    expect(shardPrefix(prefix, 0, 3)).toBe(prefix);
    const layout = queueLayout(prefix, 'mail', 3);
    expect(layout.home.keys.base).toBe('{mailroom}:mail');
    expect(new Set(layout.shards.map((shard) => hashTag(shard.prefix)?.tag)).size).toBe(3);
    // Evenly around the slot ring, so a cluster of 3 equal masters holds one shard each.
    const slots = layout.shards.map((shard) => shard.slot);
    expect(slots[0]).toBe(calculateSlot('mailroom'));
    for (let i = 1; i < 3; i++) {
      const offset = ((slots[i] as number) - (slots[0] as number) + 16384) % 16384;
      expect(Math.abs(offset - Math.round((i * 16384) / 3))).toBeLessThanOrEqual(8);
    }
    // Every key of a shard hashes to the shard's slot.
    for (const shard of layout.shards) {
      for (const key of [shard.keys.ledger('j'), shard.keys.campaign('c'), shard.keys.jobSet('wait')])
        expect(calculateSlot(key)).toBe(shard.slot);
    }
    // A prefix with text around its tag keeps it.
    expect(shardPrefix('app:{mail}:x', 1, 2)).toMatch(/^app:\{mail#1\.\d+\}:x$/);
  });

  it('sends an idempotency key and a campaign always to the same shard, and spreads them', () => {
    const layout = queueLayout('{mailroom}', 'mail', 3);
    expect(layout.shardForKey('order-1').index).toBe(
      queueLayout('{mailroom}', 'mail', 3).shardForKey('order-1').index,
    );
    const used = new Set(Array.from({ length: 60 }, (_, i) => layout.shardForKey(`order-${i}`).index));
    expect(used.size).toBe(3);
    const campaigns = new Set(Array.from({ length: 60 }, (_, i) => layout.campaignShard(`news-${i}`).index));
    expect(campaigns.size).toBe(3);
    expect(queueLayout('{mailroom}', 'mail', 1).shardForKey('anything').index).toBe(0);
  });

  it('refuses more than one shard under a prefix without a hash tag', () => {
    expect(() => queueLayout('mailroom', 'mail', 2)).toThrow(/no \{hash tag\}/);
    expect(queueLayout('mailroom', 'mail', 1).home.prefix).toBe('mailroom');
  });
});

describe('layout record', () => {
  it('records the first count, accepts it again, and accepts growing (every old shard stays)', async () => {
    const queue = freshQueue();
    await claimLayout(redis, queueLayout('{mailroom}', queue, 1));
    expect(await redis.get(queueLayout('{mailroom}', queue).home.keys.layout)).toBe('1');
    await claimLayout(redis, queueLayout('{mailroom}', queue, 1));
    await redis.lpush(queueLayout('{mailroom}', queue).home.keys.jobSet('wait'), 'job-1');
    await claimLayout(redis, queueLayout('{mailroom}', queue, 3));
    expect(await redis.get(queueLayout('{mailroom}', queue).home.keys.layout)).toBe('3');
  });

  it('refuses a count that would leave jobs behind, saying where, then switches once they are gone', async () => {
    const queue = freshQueue();
    const three = queueLayout('{mailroom}', queue, 3);
    await claimLayout(redis, three);
    await redis.lpush(three.shards[2]!.keys.jobSet('wait'), 'a', 'b');
    await redis.zadd(three.shards[1]!.keys.jobSet('failed'), 1, 'c');
    const error = await claimLayout(redis, queueLayout('{mailroom}', queue, 2)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(
      /MAILROOM_SHARDS=2 .* laid out over 3 shard\(s\), and 3 unfinished job\(s\)/,
    );
    expect((error as Error).message).toContain('Keep MAILROOM_SHARDS=3');
    expect(await redis.get(three.home.keys.layout)).toBe('3');
    await redis.del(three.shards[2]!.keys.jobSet('wait'), three.shards[1]!.keys.jobSet('failed'));
    await claimLayout(redis, queueLayout('{mailroom}', queue, 2));
    expect(await redis.get(three.home.keys.layout)).toBe('2');
  });

  it('pins a campaign to a shard at its first start, and keeps a campaign from before shards at home', async () => {
    const queue = freshQueue();
    const layout = queueLayout('{mailroom}', queue, 3);
    const pinned = await campaignShardOf(redis, layout, 'spring', { assign: true });
    expect(pinned.prefix).toBe(layout.campaignShard('spring').prefix);
    // Read back, and still readable after MAILROOM_SHARDS changed (index -1: no worker reads it).
    expect((await campaignShardOf(redis, layout, 'spring')).prefix).toBe(pinned.prefix);
    const later = await campaignShardOf(redis, queueLayout('{mailroom}', queue, 1), 'spring');
    expect(later.prefix).toBe(pinned.prefix);
    if (pinned.index !== 0) expect(later.index).toBe(-1);
    // Every start renews the index's life: it lives as long as its newest campaign.
    await redis.pexpire(layout.home.keys.campaignShards, 1000);
    await campaignShardOf(redis, layout, 'spring', { assign: true, ttl: 3_600_000 });
    expect(await redis.pttl(layout.home.keys.campaignShards)).toBeGreaterThan(3_000_000);
    // A campaign whose record is on the home shard (started unsharded) stays there.
    const old = [...Array(50).keys()]
      .map((i) => `old-${i}`)
      .find((id) => layout.campaignShard(id).index !== 0) as string;
    await redis.hset(layout.home.keys.campaign(old), 'state', 'running');
    expect((await campaignShardOf(redis, layout, old, { assign: true })).index).toBe(0);
  });
});
