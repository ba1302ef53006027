import { queueKeys } from '@mailroom/core/protocol';
import { RateLimiter } from '@mailroom/worker';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { removeQueueKeys, testRedis, uniqueQueue } from '../../../test/support/redis.js';

const redis = testRedis();
const queue = uniqueQueue('rate');

afterEach(async () => {
  await removeQueueKeys(redis, queue);
});
afterAll(async () => {
  await redis.quit();
});

describe('RateLimiter', () => {
  it('books consecutive slots one interval apart, shared by every limiter on the key', async () => {
    const key = queueKeys('{mailroom}', queue).rate;
    // Two limiters on two connections stand for two replicas. 10/s: one slot per 100 ms, and a
    // tolerance of one slot (a tenth of the second) for catching up after an idle moment.
    const other = testRedis();
    const a = new RateLimiter(redis, key, { max: 10, duration: 1000 });
    const b = new RateLimiter(other, key, { max: 10, duration: 1000 });
    expect(await a.acquire()).toBeLessThan(1);
    expect(await b.acquire()).toBeLessThan(1);
    // With an already aborted signal, a booking that must wait rejects instead of sleeping: every
    // further booking, from either replica, had to wait for a later slot.
    for (let i = 0; i < 4; i++) {
      await expect(
        (i % 2 === 0 ? b : a).acquire(AbortSignal.abort(new Error('no sleeping'))),
      ).rejects.toThrow('no sleeping');
    }
    await other.quit();
    const tat = Number(await redis.get(key));
    const [seconds, micros] = await redis.time();
    const now = Number(seconds) * 1000 + Number(micros) / 1000;
    // Six slots of 100 ms booked from 100 ms in the past: the next free slot is about 500 ms ahead.
    expect(tat - now).toBeGreaterThan(350);
    expect(tat - now).toBeLessThanOrEqual(500);
  });

  it('never hands out more than the limit plus its small catch-up allowance', async () => {
    const limiter = new RateLimiter(redis, queueKeys('{mailroom}', queue).rate, { max: 100, duration: 1000 });
    let free = 0;
    for (let i = 0; i < 40; i++) {
      try {
        await limiter.acquire(AbortSignal.abort());
        free++;
      } catch {
        // had to wait: not free
      }
    }
    // 10 ms slots, tolerance min(10 slots, 100 ms) = 10 slots: the first booking plus ten catch-up
    // slots are free (give or take the slot that elapses while the loop runs), the rest must wait.
    expect(free).toBeGreaterThanOrEqual(10);
    expect(free).toBeLessThanOrEqual(13);
  });

  it('stops waiting when its signal is aborted', async () => {
    const limiter = new RateLimiter(redis, queueKeys('{mailroom}', queue).rate, { max: 1, duration: 60_000 });
    await limiter.acquire();
    const controller = new AbortController();
    const pending = limiter.acquire(controller.signal);
    controller.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
  });
});
