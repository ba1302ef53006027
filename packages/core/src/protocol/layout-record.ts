/** The shard count a queue is laid out with, recorded on its home shard: changing MAILROOM_SHARDS never strands a job. */
import { ConfigError } from '../errors.js';
import type { RedisClient } from './redis.js';
import { MAX_SHARDS, type QueueLayout, type QueueShard, queueLayout } from './shards.js';

/** Jobs of a shard not yet completed: waiting, active, prioritized, delayed, paused, failed (dead letters). */
export async function unfinishedJobs(redis: RedisClient, shard: QueueShard): Promise<number> {
  const { keys } = shard;
  const counts = await Promise.all([
    redis.llen(keys.jobSet('wait')),
    redis.llen(keys.jobSet('active')),
    redis.zcard(keys.jobSet('prioritized')),
    redis.zcard(keys.jobSet('delayed')),
    redis.zcard(keys.jobSet('failed')),
    redis.llen(`${keys.base}:paused`),
  ]);
  return counts.reduce((sum, count) => sum + count, 0);
}

/**
 * Makes sure the queue is laid out over `layout.shards.length` shards before anything is enqueued or
 * taken: the first process records its count; a process started with the recorded count goes on; one
 * started with another count takes the queue over only when the shards it would leave behind hold no
 * unfinished job (waiting, active, delayed, prioritized, paused or dead-lettered), and records the new count. Otherwise it throws a ConfigError that says how many jobs wait
 * where and what to do. Shard 0 is the same under any count; the other shards' hash tags depend on
 * the count, so every other shard of the old layout is left behind.
 */
export async function claimLayout(redis: RedisClient, layout: QueueLayout): Promise<void> {
  const key = layout.home.keys.layout;
  const wanted = layout.shards.length;
  for (let attempt = 0; attempt < 5; attempt++) {
    const recorded = await redis.get(key);
    if (recorded === null) {
      if ((await redis.set(key, String(wanted), 'NX')) === 'OK') return;
      continue; // another process recorded first: check against its count
    }
    const count = Number(recorded);
    if (count === wanted) return;
    if (!Number.isInteger(count) || count < 1 || count > MAX_SHARDS)
      throw new ConfigError(
        `queue "${layout.queue}": its layout record ${key} holds ${JSON.stringify(recorded)}, not a shard count ` +
          `(1 to ${MAX_SHARDS}) mailroom writes; set it to the MAILROOM_SHARDS its producers and workers use`,
      );
    const old = queueLayout(layout.prefix, layout.queue, count);
    const kept = new Set(layout.shards.map((shard) => shard.prefix));
    const left = old.shards.filter((shard) => !kept.has(shard.prefix));
    const jobs = await Promise.all(left.map((shard) => unfinishedJobs(redis, shard)));
    const total = jobs.reduce((sum, n) => sum + n, 0);
    if (total > 0) {
      const where = left
        .map((shard, i) => `${shard.prefix} ${jobs[i]}`)
        .filter((_, i) => (jobs[i] ?? 0) > 0)
        .join(', ');
      throw new ConfigError(
        `MAILROOM_SHARDS=${wanted} but queue "${layout.queue}" is laid out over ${count} shard(s), and ${total} ` +
          `unfinished job(s) wait on the shards a change would leave behind (${where}). Keep MAILROOM_SHARDS=${count} ` +
          `until \`mailroom stats\` shows none waiting, active, delayed or failed (retry or remove dead letters), then ` +
          'restart producers and workers with the new value.',
      );
    }
    // Compare-and-set: a process that switched meanwhile wins, and this one checks against its count.
    const switched = await redis.eval(
      "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end return 0",
      1,
      key,
      recorded,
      String(wanted),
    );
    if (switched === 1) return;
  }
  throw new ConfigError(
    `queue "${layout.queue}": its shard count keeps changing; start producers and workers with one MAILROOM_SHARDS`,
  );
}

/** A shard named by its prefix: one of `layout`'s, or one a campaign was pinned to under an earlier count. */
function shardByPrefix(layout: QueueLayout, prefix: string): QueueShard {
  const current = layout.shards.find((shard) => shard.prefix === prefix);
  if (current) return current;
  const { keys, slot } = queueLayout(prefix, layout.queue, 1).home;
  return { index: -1, prefix, keys, slot };
}

/**
 * The shard campaign `id` lives on: the one recorded when it started. Without a record: home when its
 * campaign record is there (a campaign started before shards) or the queue has one shard, else the
 * shard its id hashes to (where it was pinned, if the record expired). With `assign`, a campaign
 * without a record on a sharded queue gets one, and a recorded one has the index's life renewed
 * (`ttl`): the index lives as long as its newest campaign. A shard that is not part of `layout` any
 * more (MAILROOM_SHARDS changed since) comes back with index -1: readable, but no worker takes jobs
 * from it, so nothing may be enqueued for it.
 */
export async function campaignShardOf(
  redis: RedisClient,
  layout: QueueLayout,
  id: string,
  options: { assign?: boolean; ttl?: number } = {},
): Promise<QueueShard> {
  const index = layout.home.keys.campaignShards;
  const recorded = await redis.hget(index, id);
  if (recorded !== null) {
    if (options.assign && options.ttl !== undefined) await redis.pexpire(index, options.ttl);
    return shardByPrefix(layout, recorded);
  }
  if (layout.shards.length === 1) return layout.home;
  const onHome = (await redis.exists(layout.home.keys.campaign(id))) === 1;
  const chosen = onHome ? layout.home : layout.campaignShard(id);
  if (!options.assign) return chosen;
  await redis.hsetnx(index, id, chosen.prefix);
  if (options.ttl !== undefined) await redis.pexpire(index, options.ttl);
  return shardByPrefix(layout, (await redis.hget(index, id)) ?? chosen.prefix);
}

/**
 * The shards of several campaigns at once (one HMGET on the home shard, more only for campaigns
 * without a record on a sharded queue): element i is the shard of `ids[i]` ({@link campaignShardOf}).
 */
export async function campaignShardsOf(
  redis: RedisClient,
  layout: QueueLayout,
  ids: readonly string[],
): Promise<QueueShard[]> {
  if (ids.length === 0) return [];
  const recorded = await redis.hmget(layout.home.keys.campaignShards, ...ids);
  return Promise.all(
    recorded.map((prefix, position) =>
      prefix !== null
        ? shardByPrefix(layout, prefix)
        : layout.shards.length === 1
          ? layout.home
          : campaignShardOf(redis, layout, ids[position] as string),
    ),
  );
}

/**
 * Runs `read` once per distinct shard of `shards` with the positions that live there, all at once,
 * and puts the results back in order: a Redis Cluster pipeline or MULTI may only hold keys of one
 * node, so reads of many campaigns go out one pipeline per shard.
 */
export async function readPerShard<R>(
  shards: readonly QueueShard[],
  read: (shard: QueueShard, positions: number[]) => Promise<R[]>,
): Promise<R[]> {
  const groups = new Map<string, { shard: QueueShard; positions: number[] }>();
  shards.forEach((shard, position) => {
    const group = groups.get(shard.prefix) ?? { shard, positions: [] };
    group.positions.push(position);
    groups.set(shard.prefix, group);
  });
  const out: R[] = new Array(shards.length);
  await Promise.all(
    [...groups.values()].map(async ({ shard, positions }) => {
      const results = await read(shard, positions);
      positions.forEach((position, i) => {
        out[position] = results[i] as R;
      });
    }),
  );
  return out;
}
