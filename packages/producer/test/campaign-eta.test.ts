/** estimateEta (campaign-eta.ts): the recent rate, else the average since the start; retries, schedules and the end said as such. */
import { describe, expect, it } from 'vitest';
import { type EtaInput, estimateEta } from '../src/campaign-eta.js';

const now = 1_700_000_000_000;
const base: EtaInput = { remaining: 1000, recentRate: 0, settled: 0, startedAt: now - 100_000, now };

describe('estimateEta', () => {
  it('is 0 and done when nothing remains', () => {
    expect(estimateEta({ ...base, remaining: 0, recentRate: 50 })).toEqual({ seconds: 0, basis: 'done' });
  });

  it('uses the recent rate while messages are being sent', () => {
    expect(estimateEta({ ...base, recentRate: 40, settled: 500 })).toEqual({ seconds: 25, basis: 'recent' });
  });

  it('falls back to the average rate since the start when nothing was sent lately', () => {
    // 500 settled in 100 s: 5/s, 1000 remaining: 200 s.
    expect(estimateEta({ ...base, settled: 500 })).toEqual({ seconds: 200, basis: 'average' });
  });

  it('grows while nothing moves, instead of freezing', () => {
    const early = estimateEta({ ...base, settled: 500 });
    const later = estimateEta({ ...base, settled: 500, now: now + 100_000 });
    expect(later.seconds).toBeGreaterThan(early.seconds as number);
  });

  it('adds the wait for the next retry while the queue only waits for retries', () => {
    expect(estimateEta({ ...base, settled: 500, retryAt: now + 30_000 })).toEqual({
      seconds: 230,
      basis: 'retries',
    });
  });

  it('says retries even when no rate is known yet', () => {
    expect(estimateEta({ ...base, retryAt: now + 30_000 })).toEqual({ seconds: null, basis: 'retries' });
  });

  it('is unknown before anything settled', () => {
    expect(estimateEta(base)).toEqual({ seconds: null, basis: 'unknown' });
  });

  it('is scheduled while sendAt is ahead, and measures the average from sendAt once it passed', () => {
    expect(estimateEta({ ...base, settled: 500, sendAt: now + 60_000 })).toEqual({
      seconds: null,
      basis: 'scheduled',
    });
    // Started 100 s ago, sending since 50 s ago: 500 in 50 s is 10/s.
    expect(estimateEta({ ...base, settled: 500, sendAt: now - 50_000 })).toEqual({
      seconds: 100,
      basis: 'average',
    });
  });
});
