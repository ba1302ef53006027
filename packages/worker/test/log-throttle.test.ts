import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { captureLogger } from '../../../test/support/wait.js';
import { LogThrottle } from '../src/log-throttle.js';

const SECOND = 1000;

function throttled(options: { maxMessages?: number } = {}) {
  const { logger, lines } = captureLogger();
  const throttle = new LogThrottle(logger, { initialInterval: SECOND, maxInterval: 8 * SECOND, ...options });
  return { throttle, lines };
}

/** Logs `message` every `everyMs` for `forMs` (fake time). */
function repeat(throttle: LogThrottle, forMs: number, everyMs: number, err = 'MOVED 1234 127.0.0.1:1') {
  for (let elapsed = 0; elapsed < forMs; elapsed += everyMs) {
    throttle.log('error', { err }, 'worker error');
    vi.advanceTimersByTime(everyMs);
  }
}

describe('LogThrottle', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('writes the first occurrence at once', () => {
    const { throttle, lines } = throttled();
    throttle.log('warn', { err: 'ECONNREFUSED' }, 'redis connection error');
    expect(lines).toEqual([
      expect.objectContaining({ level: 40, err: 'ECONNREFUSED', msg: 'redis connection error' }),
    ]);
    expect(lines[0]).not.toHaveProperty('repeated');
  });

  it('turns a hot loop of one error into a few lines that count every repeat', () => {
    const { throttle, lines } = throttled();
    // 1,000 a second for 15 s: 15,000 occurrences.
    repeat(throttle, 15 * SECOND, 1);
    throttle.flush();
    // The first at once, then one per window: 1 s, 2 s, 4 s, 8 s, 8 s (15 s), and the flush.
    expect(lines.length).toBeLessThanOrEqual(7);
    const counted = lines.reduce((sum, line) => sum + ((line.repeated as number | undefined) ?? 1), 0);
    expect(counted).toBe(15_000);
  });

  it('spaces the summaries exponentially up to maxInterval', () => {
    const { throttle, lines } = throttled();
    repeat(throttle, 40 * SECOND, 10);
    const gaps = lines.slice(1).map((line) => line.overMs);
    expect(gaps).toEqual([1000, 2000, 4000, 8000, 8000, 8000, 8000]);
  });

  it('writes the count when the repeats stop, without waiting for another occurrence', () => {
    const { throttle, lines } = throttled();
    repeat(throttle, 500, 100);
    expect(lines).toHaveLength(1);
    vi.advanceTimersByTime(SECOND);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ msg: 'worker error', repeated: 4, overMs: SECOND });
  });

  it('keeps the fields of the latest repeat in the summary', () => {
    const { throttle, lines } = throttled();
    throttle.log('error', { err: 'boom', attempt: 1 }, 'worker error');
    throttle.log('error', { err: 'boom', attempt: 2 }, 'worker error');
    throttle.flush();
    expect(lines[1]).toMatchObject({ err: 'boom', attempt: 2, repeated: 1 });
  });

  it('backs off an error that comes back every few seconds too', () => {
    const { throttle, lines } = throttled();
    // ioredis reconnecting every 2 s to a Redis that is down, for a minute: 30 occurrences.
    repeat(throttle, 60 * SECOND, 2 * SECOND, 'connect ECONNREFUSED 127.0.0.1:6379');
    throttle.flush();
    expect(lines.length).toBeLessThan(15);
    const counted = lines.reduce((sum, line) => sum + ((line.repeated as number | undefined) ?? 1), 0);
    expect(counted).toBe(30);
  });

  it('starts over once a message was quiet for maxInterval', () => {
    const { throttle, lines } = throttled();
    repeat(throttle, 3 * SECOND, 100);
    vi.advanceTimersByTime(20 * SECOND);
    const before = lines.length;
    throttle.log('error', { err: 'MOVED 1234 127.0.0.1:1' }, 'worker error');
    expect(lines).toHaveLength(before + 1);
    expect(lines.at(-1)).not.toHaveProperty('repeated');
  });

  it('throttles different errors apart', () => {
    const { throttle, lines } = throttled();
    throttle.log('error', { err: 'MOVED 1234 127.0.0.1:1' }, 'worker error');
    throttle.log('error', { err: 'NOAUTH Authentication required.' }, 'worker error');
    throttle.log('warn', { err: 'NOAUTH Authentication required.' }, 'redis connection error');
    throttle.log('error', { err: 'MOVED 1234 127.0.0.1:1' }, 'worker error');
    expect(lines.map((line) => `${line.msg}: ${line.err}`)).toEqual([
      'worker error: MOVED 1234 127.0.0.1:1',
      'worker error: NOAUTH Authentication required.',
      'redis connection error: NOAUTH Authentication required.',
    ]);
  });

  it('still summarises a flood of errors that all differ, by their msg', () => {
    const { throttle, lines } = throttled({ maxMessages: 10 });
    for (let job = 0; job < 1000; job++)
      throttle.log('error', { err: `job ${job} is broken` }, 'worker error');
    throttle.flush();
    expect(lines.length).toBeLessThanOrEqual(10 + 1 + 1);
    const counted = lines.reduce((sum, line) => sum + ((line.repeated as number | undefined) ?? 1), 0);
    expect(counted).toBe(1000);
  });
});
