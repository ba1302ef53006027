/** Real Redis helpers for tests: unique queue names and removal of everything a queue left behind. */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';

/** REDIS_URL, or the local default. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** The key prefix mailroom uses by default. */
export const PREFIX = '{mailroom}';

/** A queue name no other test uses. */
export function uniqueQueue(label = 'test'): string {
  return `${label}-${randomUUID()}`;
}

/** A plain client for assertions and cleanup. */
export function testRedis(): Redis {
  return new Redis(REDIS_URL, { maxRetriesPerRequest: null });
}

/** Deletes every key of the queue (BullMQ's and mailroom's own), with SCAN. */
export async function removeQueueKeys(redis: Redis, queue: string, prefix = PREFIX): Promise<number> {
  let removed = 0;
  let cursor = '0';
  // Hash-tag braces are literal in MATCH patterns except for [ ] * ? \, which a prefix does not use.
  const pattern = `${prefix}:${queue}:*`;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) removed += await redis.del(...keys);
  } while (cursor !== '0');
  return removed;
}

/** Every key of the queue (for "nothing was written" assertions). */
export async function queueKeyNames(redis: Redis, queue: string, prefix = PREFIX): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:${queue}:*`, 'COUNT', 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== '0');
  return found;
}

/** Deletes every key of the queue under any prefix, every shard's included (`*:<queue>:*`), with SCAN. */
export async function removeShardedQueueKeys(redis: Redis, queue: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `*:${queue}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
}
