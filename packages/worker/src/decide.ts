/** What happens to a batch job once its delivery attempt ended: a pure decision, tested on its own. */
import type { FailureReason } from '@mailroom/core';
import { CAMPAIGN_STATES, FINAL_STATES, type LedgerEntry } from '@mailroom/core/protocol';
import type { StopReason } from './deliver-batch.js';
import { exhaust, shortDetail } from './settle.js';

/** Everything {@link decideBatch} looks at, as it stands after the delivery attempt. */
export interface BatchOutcome {
  /** Number of messages in the batch. */
  messageCount: number;
  /** Ledger entries by message index (earlier runs and this one); a missing index is pending. */
  entries: ReadonlyMap<number, LedgerEntry>;
  /** The failSilently intent of each message, by index (missing: false). */
  failSilently: ReadonlyMap<number, boolean>;
  /** The batch's campaign state (`paused`, `cancelled`, `running`...; '' without campaign). */
  campaignState: string;
  /** Why delivery stopped early, if it did. */
  stopped: StopReason | undefined;
  /** Attempts of this batch that already ended with undelivered messages (the ledger's count). */
  attemptsUsed: number;
  /** Delivery attempts allowed per batch, the first included. */
  attempts: number;
  /** The connection error that stopped delivery, classified; undefined when none. */
  connectionFailure: { reason: FailureReason; detail: string } | undefined;
}

/** Message counts of a finished batch. */
export interface BatchCounts {
  delivered: number;
  failed: number;
  cancelled: number;
  failedSilently: number;
}

/**
 * What to do with the job:
 * - `park`: the campaign is paused; back to delayed (checked again later), no attempt spent;
 * - `requeue`: the worker is shutting down; back to waiting for any replica, no attempt spent;
 * - `retry`: undelivered messages and attempts left; delayed by the backoff for attempt `attempt`;
 * - `finish`: nothing left to try; first record `updates` (messages cancelled with their campaign,
 *   or failed for good when the attempts ran out), then complete the job, or dead-letter it when a
 *   message that was not sent with failSilently failed (`hardFailures`).
 */
export type BatchDecision =
  | { kind: 'park'; remaining: number[] }
  | { kind: 'requeue'; remaining: number[] }
  | { kind: 'retry'; remaining: number[]; attempt: number }
  | {
      kind: 'finish';
      /** Entries to record before finishing, by message index. */
      updates: Map<number, LedgerEntry>;
      outcome: 'completed' | 'dead-letter';
      counts: BatchCounts;
      /** One line per message that failed without failSilently: `[index] reason code: detail`. */
      hardFailures: string[];
      /** Whether the attempts ran out for some messages (they are in `updates`). */
      exhausted: boolean;
    };

/** Indexes of the messages that are not final (to cancel, put back or retry). */
export function unsettledIndexes(outcome: Pick<BatchOutcome, 'messageCount' | 'entries'>): number[] {
  const remaining: number[] = [];
  for (let index = 0; index < outcome.messageCount; index++) {
    if (!FINAL_STATES.has(outcome.entries.get(index)?.state ?? 't')) remaining.push(index);
  }
  return remaining;
}

/**
 * Decides what happens to a batch job after a delivery attempt. Pure: it reads the outcome and
 * returns the decision; the caller records and moves the job. In order: a cancelled campaign cancels
 * what is left and finishes; a paused campaign or a shutdown puts the rest back without spending an
 * attempt; undelivered messages are retried while attempts are left, and fail for good (for their
 * last reason, else the connection's) when they run out; then the batch completes, or is
 * dead-lettered if a message sent without failSilently failed.
 */
export function decideBatch(outcome: BatchOutcome): BatchDecision {
  const remaining = unsettledIndexes(outcome);
  const updates = new Map<number, LedgerEntry>();
  let exhausted = false;
  if (outcome.campaignState === CAMPAIGN_STATES.cancelled) {
    for (const index of remaining) updates.set(index, { state: 'c', reason: 'cancelled' });
  } else if (remaining.length > 0) {
    if (outcome.campaignState === CAMPAIGN_STATES.paused) return { kind: 'park', remaining };
    if (outcome.stopped === 'shutdown') return { kind: 'requeue', remaining };
    const attempt = outcome.attemptsUsed + 1;
    if (attempt < outcome.attempts) return { kind: 'retry', remaining, attempt };
    // Messages never tried in the last attempt fail for the reason the connection failed
    // (connection, timeout, auth...), as classified everywhere else.
    const fallback = {
      reason: outcome.connectionFailure?.reason ?? 'connection',
      detail: shortDetail(outcome.connectionFailure?.detail ?? 'not delivered'),
    };
    for (const index of remaining) updates.set(index, exhaust(outcome.entries.get(index), fallback));
    exhausted = true;
  }
  const counts: BatchCounts = { delivered: 0, failed: 0, cancelled: 0, failedSilently: 0 };
  const hardFailures: string[] = [];
  for (let index = 0; index < outcome.messageCount; index++) {
    const entry = updates.get(index) ?? outcome.entries.get(index);
    if (entry === undefined) continue;
    if (entry.state === 'd') counts.delivered++;
    else if (entry.state === 'c') counts.cancelled++;
    else if (entry.state === 'f' || entry.state === 'x') {
      counts.failed++;
      if (outcome.failSilently.get(index)) counts.failedSilently++;
      else {
        hardFailures.push(
          `[${index}] ${entry.reason ?? 'unknown'}${entry.code ? ` ${entry.code}` : ''}: ${entry.detail ?? ''}`,
        );
      }
    }
  }
  return {
    kind: 'finish',
    updates,
    outcome: hardFailures.length > 0 ? 'dead-letter' : 'completed',
    counts,
    hardFailures,
    exhausted,
  };
}
