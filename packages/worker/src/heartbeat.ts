/** The worker's heartbeat: announces the process on its queue every few seconds, so `mailroom stats` and the CLI's warnings can tell who is consuming it. */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { coerceError } from '@mailroom/core';
import type { RedisClient } from '@mailroom/core/protocol';
import { announceWorker, type QueueKeys, type WorkerInfo, withdrawWorker } from '@mailroom/core/protocol';
import type { LogThrottle } from './log-throttle.js';

/** Options of {@link startHeartbeat}. */
export interface HeartbeatOptions {
  queue: string;
  concurrency: number;
  /** Milliseconds between two announcements (workerDefaults.heartbeatInterval). */
  interval: number;
  /** Where a failed announcement is logged: throttled, so a Redis outage writes a few lines, not one per beat. */
  errorLog: LogThrottle;
}

/** A running {@link startHeartbeat}. */
export interface Heartbeat {
  /** This process's worker id, `host:pid:random`. */
  readonly id: string;
  /** Resolves after the first announcement reached Redis or failed (never rejects). */
  readonly first: Promise<void>;
  /**
   * Stops the timer and removes the announcement (when Redis answers). Idempotent; never rejects; the
   * caller bounds how long it may take (an unanswered Redis).
   */
  stop(): Promise<void>;
}

/** The version of @mailroom/worker, from its package.json (`../package.json` from both src/ and dist/). */
function workerVersion(): string {
  try {
    return (
      JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
    ).version;
  } catch {
    return 'unknown';
  }
}

/**
 * Announces the worker on its queue now and every `interval` (one timer per process, whatever the
 * jobs: no Redis command per job). A beat is skipped while the connection is not ready or the
 * previous one is unanswered: the worker's connection queues commands while Redis is away, and
 * a pile of stale heartbeats would only be sent, late, at the reconnect.
 */
export function startHeartbeat(redis: RedisClient, keys: QueueKeys, options: HeartbeatOptions): Heartbeat {
  const startedAt = Date.now();
  const id = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  const base: Omit<WorkerInfo, 'lastSeenAt'> = {
    id,
    host: hostname(),
    pid: process.pid,
    queue: options.queue,
    concurrency: options.concurrency,
    version: workerVersion(),
    startedAt,
    heartbeatInterval: options.interval,
  };
  let stopped = false;
  let inFlight: Promise<void> | undefined;

  const beat = (): Promise<void> => {
    if (stopped || inFlight) return inFlight ?? Promise.resolve();
    inFlight = announceWorker(redis, keys, { ...base, lastSeenAt: Date.now() })
      .catch((error: unknown) => {
        if (!stopped)
          options.errorLog.log('warn', { err: coerceError(error).message }, 'worker heartbeat failed');
      })
      .finally(() => {
        inFlight = undefined;
      });
    return inFlight;
  };

  // The first one as soon as the connection is ready (queued until then), so a worker that printed
  // its banner is listed at once.
  const first = beat();
  const timer = setInterval(() => {
    if (redis.status === 'ready') void beat();
  }, options.interval);
  // The heartbeat alone must not keep a process alive.
  timer.unref();

  let stopping: Promise<void> | undefined;
  return {
    id,
    first,
    stop() {
      stopping ??= (async () => {
        stopped = true;
        clearInterval(timer);
        // MUST NOT throw: close() runs every cleanup. Without Redis the announcement expires by itself.
        if (redis.status !== 'ready') return;
        await inFlight;
        await withdrawWorker(redis, keys, id).catch(() => {});
      })();
      return stopping;
    },
  };
}
