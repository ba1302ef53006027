/** A campaign's ETA: from the recent send rate, else the average since the start, with retry waits and schedules said as such. */

/**
 * What an ETA is based on: `recent` the rate of the last seconds; `average` the rate since the
 * campaign started (nothing was sent lately); `retries` nothing is ready to send, the queue only
 * holds batches waiting for their retry (the ETA, when there is one, counts the wait); `scheduled`
 * the campaign's sendAt is ahead; `done` nothing remains; `unknown` nothing was settled yet.
 */
export type EtaBasis = 'recent' | 'average' | 'retries' | 'scheduled' | 'done' | 'unknown';

/** What {@link estimateEta} reads; times in epoch ms. */
export interface EtaInput {
  /** Messages not settled yet. */
  remaining: number;
  /** Messages per second over the last seconds. */
  recentRate: number;
  /** Messages settled (sent and failed) since the start. */
  settled: number;
  startedAt: number;
  now: number;
  /** The campaign's sendAt, when scheduled. */
  sendAt?: number | undefined;
  /** When the next batch waiting for a retry is due, while the queue holds nothing else to send. */
  retryAt?: number | undefined;
}

/** An estimate: seconds to completion (null when unknown) and what it is based on. */
export interface Eta {
  seconds: number | null;
  basis: EtaBasis;
}

/**
 * Estimates the seconds to completion. The rate of the last seconds alone goes to 0 (unknown) as
 * soon as the workers wait, on a retry backoff of minutes for instance, while the campaign is far
 * from done: so, in order, nothing remaining is 0 (`done`); a sendAt ahead is `scheduled` (no rate
 * yet: null); a recent rate > 0 gives remaining / rate (`recent`); otherwise the average rate since
 * the start (or since sendAt) does, plus the wait for the next retry when the queue only waits for
 * retries (`retries`, null when nothing was settled yet) or alone (`average`); nothing settled yet is
 * `unknown`. The average includes the waits, so the estimate grows while nothing moves.
 */
export function estimateEta(input: EtaInput): Eta {
  const { remaining, recentRate, settled, now } = input;
  if (remaining <= 0) return { seconds: 0, basis: 'done' };
  if (input.sendAt !== undefined && input.sendAt > now) return { seconds: null, basis: 'scheduled' };
  if (recentRate > 0) return { seconds: Math.ceil(remaining / recentRate), basis: 'recent' };
  const since = Math.max(input.startedAt, input.sendAt ?? 0);
  const elapsedSeconds = (now - since) / 1000;
  const averageRate = elapsedSeconds > 0 ? settled / elapsedSeconds : 0;
  const sending = averageRate > 0 ? remaining / averageRate : null;
  if (input.retryAt !== undefined) {
    const wait = Math.max(0, (input.retryAt - now) / 1000);
    return { seconds: sending === null ? null : Math.ceil(wait + sending), basis: 'retries' };
  }
  if (sending !== null) return { seconds: Math.ceil(sending), basis: 'average' };
  return { seconds: null, basis: 'unknown' };
}
