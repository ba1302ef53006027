/** Step two of a batch: send its pending messages over ONE connection, recording each as it settles. */
import type { BaseEmailBackend, EmailMessage } from '@mailroom/core';
import { coerceError } from '@mailroom/core';
import type { LedgerEntry } from '@mailroom/core/protocol';
import { CAMPAIGN_STATES } from '@mailroom/core/protocol';
import type { Logger } from 'pino';
import type { BatchRef, BatchStatus, Ledger } from './ledger.js';
import type { WorkerMetrics } from './metrics.js';
import type { RateLimiter } from './rate-limit.js';
import { settle, truncateRecipients } from './settle.js';

/** One message of a batch that still has to be sent. */
export interface PendingMessage {
  index: number;
  message: EmailMessage;
  /** What the ledger knew before this attempt (e.g. recipients still pending). */
  entry: LedgerEntry | undefined;
  /** Milliseconds epoch of the enqueue, for latency. */
  enqueuedAt: number;
}

/** Inputs of {@link deliverBatch}. */
export interface DeliverBatchInput {
  batch: BatchRef;
  messages: PendingMessage[];
  /** The batch's ONE connection (it may already be open, left by the previous batch). */
  backend: BaseEmailBackend;
  /** Takes the connection back afterwards (to close it or keep it for the next batch). */
  release: (backend: BaseEmailBackend, messagesSent: number) => Promise<void>;
  ledger: Ledger;
  rateLimiter: RateLimiter | undefined;
  /** Aborted at shutdown: no new message is started, the one on the wire finishes. */
  signal: AbortSignal;
  maxReconnects: number;
  logger: Logger;
  metrics: WorkerMetrics;
}

/** Why a batch stopped before its last message. */
export type StopReason = 'shutdown' | 'paused' | 'cancelled' | 'connection' | 'lock-lost';

/** What {@link deliverBatch} did. */
export interface DeliverBatchResult {
  /** Entries written during this attempt, by message index. */
  settled: Map<number, LedgerEntry>;
  stopped: StopReason | undefined;
  /** The connection error that stopped the batch, if any. */
  connectionError: Error | undefined;
}

/**
 * Sends the pending messages of one batch over ONE backend connection (reopened at most
 * `maxReconnects` times if it drops), recording each message in the ledger as soon as it settles.
 * Stops early, between messages, for shutdown, a campaign pause or cancel, or a lost connection;
 * whatever is not settled stays pending for the caller to re-queue or retry.
 */
export async function deliverBatch(input: DeliverBatchInput): Promise<DeliverBatchResult> {
  const { backend, ledger, logger, metrics } = input;
  const settled = new Map<number, LedgerEntry>();
  let stopped: StopReason | undefined;
  let connectionError: Error | undefined;
  let reconnects = 0;
  let sent = 0;

  const connect = async (): Promise<boolean> => {
    try {
      if ((await backend.open()) === true) metrics.connectionOpened();
      return true;
    } catch (error) {
      connectionError = coerceError(error);
      logger.warn(
        { jobId: input.batch.jobId, err: connectionError.message },
        'could not open the backend connection',
      );
      return false;
    }
  };

  try {
    if (!(await connect())) return { settled, stopped: 'connection', connectionError };
    for (const pending of input.messages) {
      if (input.signal.aborted) {
        stopped = 'shutdown';
        break;
      }
      if (input.rateLimiter) {
        let waited: number;
        try {
          waited = await input.rateLimiter.acquire(input.signal);
        } catch {
          stopped = 'shutdown';
          break;
        }
        metrics.rateLimitWaited(waited);
        // A long wait gives a pause, a cancel or a takeover time to happen: look again before sending.
        if (waited >= RECHECK_AFTER_WAIT_MS) {
          stopped = stopReason(await ledger.check(input.batch));
          if (stopped) break;
        }
      }
      if (!backend.isOpen) {
        if (reconnects >= input.maxReconnects || !(await connect())) {
          stopped = 'connection';
          break;
        }
        reconnects++;
      }
      sent++;
      const outcome = await backend.deliver(
        pending.message,
        pending.entry?.pending ? { recipients: pending.entry.pending } : {},
      );
      const entry = settle(outcome, pending.entry);
      settled.set(pending.index, entry);
      // "Written as each message is accepted": before the next message goes out.
      const status = await ledger.record(input.batch, pending.index, entry);
      report(input, pending, entry, outcome.error);
      stopped = stopReason(status);
      if (stopped) break;
      if (entry.state === 't' && (entry.reason === 'connection' || entry.reason === 'timeout')) {
        connectionError = outcome.error;
      }
    }
  } finally {
    // MUST release the connection whatever happened above (release never throws).
    await input.release(backend, sent);
  }
  return { settled, stopped, connectionError };
}

/** Milliseconds of rate-limit wait after which the batch status is checked again before sending. */
const RECHECK_AFTER_WAIT_MS = 100;

/** Why the batch must stop before the next message, if it must. */
function stopReason(status: BatchStatus): StopReason | undefined {
  if (!status.lockHeld) return 'lock-lost';
  if (status.campaignState === CAMPAIGN_STATES.paused || status.campaignState === CAMPAIGN_STATES.cancelled) {
    return status.campaignState;
  }
  return undefined;
}

function report(
  input: DeliverBatchInput,
  pending: PendingMessage,
  entry: LedgerEntry,
  error: Error | undefined,
): void {
  if (entry.state === 'd') {
    input.metrics.messageSent((Date.now() - pending.enqueuedAt) / 1000);
    if (entry.refused?.length) {
      input.logger.warn(
        {
          jobId: input.batch.jobId,
          index: pending.index,
          refused: truncateRecipients(entry.refused.map((r) => r.recipient)),
        },
        'some recipients refused',
      );
    }
    return;
  }
  const fields = {
    jobId: input.batch.jobId,
    index: pending.index,
    to: truncateRecipients(pending.entry?.pending ?? pending.message.recipients()),
    reason: entry.reason,
    code: entry.code,
    detail: entry.detail ?? error?.message,
  };
  if (entry.state === 'f') {
    input.metrics.messageFailed(entry.reason ?? 'unknown');
    input.logger.warn(fields, 'message failed permanently');
  } else {
    input.logger.info(fields, 'message deferred');
  }
}
