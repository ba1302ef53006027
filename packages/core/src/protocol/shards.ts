/** MAILROOM_SHARDS: a queue split over N BullMQ queues whose keys carry distinct Redis Cluster hash tags. */
import calculateSlot from 'cluster-key-slot';
import { ConfigError } from '../errors.js';
import { type QueueKeys, queueKeys } from './keys.js';

/** Redis Cluster's number of hash slots. */
const SLOTS = 16384;
/** Most shards a queue may have: past this, a queue's fixed costs (one BullMQ worker per shard) outgrow any cluster. */
export const MAX_SHARDS = 64;
/** How close (in slots) a shard's hash tag must land to its target slot. */
const SLOT_TOLERANCE = 8;

/** One shard of a queue: a BullMQ queue of its own under its own hash-tagged prefix. */
export interface QueueShard {
  /** 0 is the home shard: today's single-queue layout, and where the queue-wide keys live. */
  readonly index: number;
  /** The BullMQ prefix of this shard (its hash tag decides the cluster slot of all its keys). */
  readonly prefix: string;
  /** Every key name of this shard. */
  readonly keys: QueueKeys;
  /** The cluster hash slot every key of this shard hashes to. */
  readonly slot: number;
}

/**
 * Where each part of a sharded queue lives. The home shard (0) keeps the queue-wide keys: the global
 * rate limit, the suppression list, the epoch marker, the worker registry, the campaign index and the
 * layout record. Every shard (the home one included) holds its own jobs, ledgers, locks and
 * idempotency keys, and the campaigns pinned to it ({@link QueueLayout.campaignShard}): a campaign's
 * record, counters, seen-address buckets and failure records live on the shard its batches go to, so
 * every script that counts a delivery stays on one slot and one node.
 */
export interface QueueLayout {
  readonly queue: string;
  readonly prefix: string;
  readonly shards: readonly QueueShard[];
  /** The home shard (shards[0]). */
  readonly home: QueueShard;
  /** The shard an idempotency key always lands on (same key, same shard, for as long as N stays). */
  shardForKey(key: string): QueueShard;
  /** The shard a campaign's batches and records live on. */
  campaignShard(campaignId: string): QueueShard;
}

/** The hash tag of a key or prefix: what is between the first `{` and the first `}` after it, when not empty. */
export function hashTag(text: string): { start: number; end: number; tag: string } | undefined {
  const start = text.indexOf('{');
  if (start === -1) return undefined;
  const end = text.indexOf('}', start + 1);
  if (end === -1 || end === start + 1) return undefined;
  return { start, end, tag: text.slice(start + 1, end) };
}

/**
 * The prefix of shard `index` of `count`: shard 0 is `prefix` itself (so MAILROOM_SHARDS=1 is the
 * unsharded layout), shard i carries the tag `<tag>#<i>.<k>` with the smallest k whose slot lands
 * within a few slots of `slot(prefix) + i × 16384 / count`. Evenly spaced slots put one shard on each
 * master of a cluster whose masters own equal slot ranges (what `redis-cli --cluster create` and
 * managed services set up), whatever the masters' count divides into.
 */
export function shardPrefix(prefix: string, index: number, count: number): string {
  if (index === 0) return prefix;
  const found = hashTag(prefix);
  if (!found)
    throw new ConfigError(`MAILROOM_PREFIX "${prefix}" has no {hash tag}: MAILROOM_SHARDS > 1 needs one`);
  const target = (calculateSlot(found.tag) + Math.round((index * SLOTS) / count)) % SLOTS;
  for (let k = 0; ; k++) {
    const tag = `${found.tag}#${index}.${k}`;
    const slot = calculateSlot(tag);
    const distance = Math.min(Math.abs(slot - target), SLOTS - Math.abs(slot - target));
    if (distance <= SLOT_TOLERANCE)
      return `${prefix.slice(0, found.start)}{${tag}}${prefix.slice(found.end + 1)}`;
  }
}

/** Checks MAILROOM_SHARDS: an integer from 1 to {@link MAX_SHARDS}; throws ConfigError naming the value. */
export function checkShardCount(value: number, name = 'MAILROOM_SHARDS'): number {
  if (!Number.isInteger(value) || value < 1 || value > MAX_SHARDS)
    throw new ConfigError(`${name}=${String(value)} is invalid: must be an integer from 1 to ${MAX_SHARDS}`);
  return value;
}

/** A 32-bit FNV-1a hash of a string's UTF-16 units: which shard a key or campaign goes to. */
function spread(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** The layout of `queue` under `prefix` split over `count` shards (1: the unsharded layout). */
export function queueLayout(prefix: string, queue: string, count = 1): QueueLayout {
  checkShardCount(count);
  const shards = Array.from({ length: count }, (_, index): QueueShard => {
    const shardPrefixText = shardPrefix(prefix, index, count);
    const keys = queueKeys(shardPrefixText, queue);
    return { index, prefix: shardPrefixText, keys, slot: calculateSlot(keys.base) };
  });
  const home = shards[0] as QueueShard;
  const pick = (text: string) => shards[spread(text) % count] as QueueShard;
  return {
    queue,
    prefix,
    shards,
    home,
    shardForKey: (key) => pick(`key:${key}`),
    campaignShard: (campaignId) => pick(`campaign:${campaignId}`),
  };
}
