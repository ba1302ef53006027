/** The global rate limit: a GCRA limiter in Redis that books send slots for every replica. */
import { setTimeout } from 'node:timers/promises';
import type { RateLimit } from '@mailroom/core';
import type { RedisClient } from '@mailroom/core/protocol';

/**
 * Re-exports of the rate limit parser, which lives in @mailroom/core beside the settings
 * (MAILROOM_RATE_LIMIT); kept so that imports from here keep working.
 */
export { parseRateLimit, type RateLimit } from '@mailroom/core';

// GCRA (generic cell rate algorithm) with reservation: each call books the next free slot and says
// how long to wait for it, so replicas never poll and never exceed the rate together. The state is
// one key (the theoretical arrival time), timed by the Redis server's clock, not the replicas'.
// ARGV[2] is the tolerance: slots left unused for less than that (a batch changing connections)
// may still be taken, so short idle moments do not lower the average rate; it bounds the burst.
const RESERVE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now - tolerance then tat = now - tolerance end
local wait = math.max(tat - now, 0)
local nextTat = tat + interval
redis.call('SET', KEYS[1], tostring(nextTat), 'PX', math.ceil(math.max(nextTat - now, 0) + tolerance) + 1000)
return tostring(wait)
`;

type ReservingRedis = RedisClient & {
  mailroomReserveSlot(key: string, interval: string, tolerance: string): Promise<string>;
};

/** Slots (messages) that may be caught up after an idle moment (at most a tenth of the limit's duration). */
const CATCH_UP_SLOTS = 10;

/** Reserves send slots on a global GCRA limiter in Redis. */
export class RateLimiter {
  readonly limit: RateLimit;
  readonly #redis: ReservingRedis;
  readonly #key: string;
  readonly #interval: number;
  readonly #tolerance: number;

  constructor(redis: RedisClient, key: string, limit: RateLimit) {
    this.limit = limit;
    this.#key = key;
    this.#interval = limit.duration / limit.max;
    this.#tolerance = Math.min(this.#interval * CATCH_UP_SLOTS, limit.duration / 10);
    if (!('mailroomReserveSlot' in redis))
      redis.defineCommand('mailroomReserveSlot', { numberOfKeys: 1, lua: RESERVE });
    this.#redis = redis as ReservingRedis;
  }

  /**
   * Books the next slot and waits for it. Resolves with the milliseconds waited; rejects with the
   * signal's reason when aborted while waiting (the booked slot is then simply unused).
   */
  async acquire(signal?: AbortSignal): Promise<number> {
    const wait = Number(
      await this.#redis.mailroomReserveSlot(this.#key, String(this.#interval), String(this.#tolerance)),
    );
    if (wait >= 1) {
      try {
        await setTimeout(wait, undefined, { signal });
      } catch (error) {
        // node:timers/promises rejects with an AbortError; callers want the reason they aborted with.
        throw signal?.aborted ? signal.reason : error;
      }
    }
    return wait;
  }
}
