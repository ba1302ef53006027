/** Live workers: each worker process announces itself on its queue; anyone can list those seen lately. */

import { z } from 'zod';
import { protocolDefaults } from './defaults.js';
import type { QueueKeys } from './keys.js';
import type { RedisClient } from './redis.js';

/**
 * A worker is live while its announcement has not expired: this many heartbeat intervals after the
 * last one. Redis expires the key on its own clock, so a host whose clock is off does not make a
 * live worker look gone (or a dead one live).
 */
export const WORKER_LIVE_INTERVALS = 3;

/** How long a worker counts as live after its last heartbeat, in ms (15 s with the default interval). */
export const WORKER_LIVE_WINDOW = WORKER_LIVE_INTERVALS * protocolDefaults.workerHeartbeatInterval;

/** Schema of one worker's announcement (`keys.worker(id)`), as the worker writes it and readers parse it. */
export const workerInfoSchema = z.object({
  /** `host:pid:random`, unique per process. */
  id: z.string().min(1),
  host: z.string(),
  pid: z.number().int().nonnegative(),
  queue: z.string(),
  /** Batches (= SMTP connections) in flight at most. */
  concurrency: z.number().int().positive(),
  /** The @mailroom/worker version it runs. */
  version: z.string(),
  /** Epoch ms the worker started. */
  startedAt: z.number().int().nonnegative(),
  /** Epoch ms of its last heartbeat, by its own clock. */
  lastSeenAt: z.number().int().nonnegative(),
  /** Milliseconds between its heartbeats. */
  heartbeatInterval: z.number().int().positive(),
});

/** One worker's announcement (see {@link workerInfoSchema}). */
export type WorkerInfo = z.infer<typeof workerInfoSchema>;

/**
 * Writes (or refreshes) a worker's announcement: the JSON record, which expires
 * {@link WORKER_LIVE_INTERVALS} heartbeat intervals from now, and its entry in the queue's index. One
 * MULTI, one round trip. Rejects with the Redis error.
 */
export async function announceWorker(redis: RedisClient, keys: QueueKeys, info: WorkerInfo): Promise<void> {
  throwFirstError(
    await redis
      .multi()
      .set(keys.worker(info.id), JSON.stringify(info), 'PX', WORKER_LIVE_INTERVALS * info.heartbeatInterval)
      .zadd(keys.workers, info.lastSeenAt, info.id)
      .exec(),
  );
}

/** Removes a worker's announcement (a clean shutdown). Rejects with the Redis error. */
export async function withdrawWorker(redis: RedisClient, keys: QueueKeys, id: string): Promise<void> {
  throwFirstError(await redis.multi().del(keys.worker(id)).zrem(keys.workers, id).exec());
}

/** ioredis resolves EXEC with each command's error in its reply (WRONGTYPE...): those are failures too. */
function throwFirstError(replies: [Error | null, unknown][] | null): void {
  const failed = replies?.find(([error]) => error)?.[0];
  if (failed) throw failed;
}

/**
 * The workers of the queue seen within their live window (their announcement has not expired),
 * oldest first. Members of the index whose announcement expired (a worker killed, or cut off from
 * Redis) are removed from it on the way, as are announcements that do not parse. Two round trips;
 * O(workers). Rejects with the Redis error.
 */
export async function liveWorkers(redis: RedisClient, keys: QueueKeys): Promise<WorkerInfo[]> {
  const ids = await redis.zrange(keys.workers, 0, -1);
  if (ids.length === 0) return [];
  const records = await redis.mget(...ids.map((id) => keys.worker(id)));
  const live: WorkerInfo[] = [];
  const stale: string[] = [];
  ids.forEach((id, index) => {
    const record = records[index];
    const info = record ? parseWorkerInfo(record) : undefined;
    if (info?.id === id) live.push(info);
    else stale.push(id);
  });
  // A worker announcing itself again between the two reads is re-added by its next heartbeat.
  if (stale.length > 0) await redis.zrem(keys.workers, ...stale);
  return live.sort((a, b) => a.startedAt - b.startedAt || a.id.localeCompare(b.id));
}

function parseWorkerInfo(record: string): WorkerInfo | undefined {
  try {
    const parsed = workerInfoSchema.safeParse(JSON.parse(record));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
