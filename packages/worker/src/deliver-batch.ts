/** Step two of a batch: send its pending messages over ONE pipelined connection, recording outcomes in groups. */
import type { BaseEmailBackend, DeliveryOutcome, EmailMessage, StreamItem } from '@mailroom/core';
import { coerceError } from '@mailroom/core';
import type { LedgerEntry } from '@mailroom/core/protocol';
import { CAMPAIGN_STATES } from '@mailroom/core/protocol';
import type { Logger } from 'pino';
import type { AutoSuppress } from './auto-suppress.js';
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
  /** Puts hard bounces on the queue's suppression list (auto-suppress.ts). Default: nothing is suppressed. */
  autoSuppress?: AutoSuppress;
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

/** A message of the batch as handed to the backend's stream. */
interface BatchItem extends StreamItem {
  pending: PendingMessage;
}

/**
 * Sends the pending messages of one batch over ONE backend connection (reopened at most
 * `maxReconnects` times if it drops), pipelined: up to the backend's window (MAILROOM_PIPELINE_WINDOW)
 * of messages are on the wire at once, and their outcomes are written to the ledger in groups (one
 * Redis round trip per group, see GroupWriter). A message keeps its place in the window
 * until its entry is written, so a worker killed at any moment has at most one window per connection
 * sent but not recorded (sent again by the next attempt). Stops taking new messages for shutdown, a
 * campaign pause or cancel, a lost lock or a lost connection; what is in flight settles first (one
 * window at most), and whatever was not sent stays pending for the caller to re-queue or retry.
 * Hard bounces go on the suppression list just before the ledger write that records them (autoSuppress).
 */
export async function deliverBatch(input: DeliverBatchInput): Promise<DeliverBatchResult> {
  const { backend, ledger, logger, metrics } = input;
  const settled = new Map<number, LedgerEntry>();
  const queue = [...input.messages];
  let stopped: StopReason | undefined;
  let connectionError: Error | undefined;
  let reconnects = 0;
  let sent = 0;
  const bounces = input.autoSuppress?.batch(input.batch.jobId);
  const writer = new GroupWriter(
    ledger,
    input.batch,
    (status) => {
      stopped ??= stopReason(status);
    },
    () => bounces?.send(),
  );

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

  const next = async (): Promise<BatchItem | undefined> => {
    if (stopped) return undefined;
    if (input.signal.aborted) {
      stopped = 'shutdown';
      return undefined;
    }
    if (queue.length === 0) return undefined;
    if (input.rateLimiter) {
      let waited: number;
      try {
        waited = await input.rateLimiter.acquire(input.signal);
      } catch {
        stopped = 'shutdown';
        return undefined;
      }
      metrics.rateLimitWaited(waited);
      // A long wait gives a pause, a cancel or a takeover time to happen: look again before sending.
      if (waited >= RECHECK_AFTER_WAIT_MS) stopped ??= stopReason(await ledger.check(input.batch));
      if (stopped) return undefined;
    }
    const pending = queue.shift();
    if (!pending) return undefined;
    sent++;
    return pending.entry?.pending
      ? { message: pending.message, recipients: pending.entry.pending, pending }
      : { message: pending.message, pending };
  };

  const onSettled = (item: BatchItem, outcome: DeliveryOutcome): Promise<void> => {
    const { pending } = item;
    const entry = settle(outcome, pending.entry);
    settled.set(pending.index, entry);
    bounces?.note(outcome);
    report(input, pending, entry, outcome.error);
    if (entry.state === 't' && (entry.reason === 'connection' || entry.reason === 'timeout')) {
      connectionError = outcome.error;
    }
    return writer.add(pending.index, entry);
  };

  try {
    if (!(await connect())) return { settled, stopped: 'connection', connectionError };
    for (;;) {
      const result = await backend.deliverStream(next, onSettled, { onWaiting: () => writer.flush() });
      // Taken but never written: back to the front, for the next connection.
      queue.unshift(...result.unsent.map((item) => item.pending));
      sent -= result.unsent.length;
      if (!result.error) break;
      connectionError = result.error;
      if (stopped || queue.length === 0) break;
      if (reconnects >= input.maxReconnects || !(await connect())) {
        stopped = 'connection';
        break;
      }
      reconnects++;
    }
  } finally {
    // MUST release the connection whatever happened above (release never throws).
    await input.release(backend, sent);
  }
  return { settled, stopped, connectionError };
}

/** Ledger entries written together once this many have settled (sooner when the pipeline waits for them). */
const LEDGER_GROUP = 8;

/**
 * Group commit of ledger entries: one Redis round trip (one RECORD script) per group of messages,
 * not per message. Entries are held until {@link LEDGER_GROUP} have settled, or until the pipeline
 * can only go on once they are written (`flush()`, from the stream's onWaiting: the window is full
 * of unrecorded messages, or nothing else is on the wire), and while one write is on its way the
 * next entries gather for the one after. Each add() resolves once its entry is written.
 */
class GroupWriter {
  readonly #ledger: Ledger;
  readonly #batch: BatchRef;
  readonly #onStatus: (status: BatchStatus) => void;
  readonly #beforeWrite: () => Promise<void> | undefined;
  #entries: [number, LedgerEntry][] = [];
  #waiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  #writing = false;
  #flushRequested = false;

  /**
   * `beforeWrite` runs right before each write; when it returns a promise (something was sent), the
   * write waits for it, so what it wrote is in Redis before the write is (whatever node holds it).
   */
  constructor(
    ledger: Ledger,
    batch: BatchRef,
    onStatus: (status: BatchStatus) => void,
    beforeWrite: () => Promise<void> | undefined,
  ) {
    this.#ledger = ledger;
    this.#batch = batch;
    this.#onStatus = onStatus;
    this.#beforeWrite = beforeWrite;
  }

  add(index: number, entry: LedgerEntry): Promise<void> {
    this.#entries.push([index, entry]);
    const written = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    if (this.#entries.length >= LEDGER_GROUP) this.#write();
    return written;
  }

  /** Writes what has gathered now (or right after the write on its way). */
  flush(): void {
    this.#flushRequested = true;
    this.#write();
  }

  #write(): void {
    if (this.#writing || this.#entries.length === 0) return;
    this.#writing = true;
    this.#flushRequested = false;
    const entries = this.#entries;
    const waiters = this.#waiters;
    this.#entries = [];
    this.#waiters = [];
    // The hard bounces of these entries first: a refusal in the ledger is on the suppression list.
    const before = this.#beforeWrite();
    const record = () => this.#ledger.recordMany(this.#batch, entries);
    (before ? before.then(record) : record()).then(
      (status) => {
        this.#onStatus(status);
        for (const waiter of waiters) waiter.resolve();
        this.#done();
      },
      (error: unknown) => {
        for (const waiter of waiters) waiter.reject(error);
        this.#done();
      },
    );
  }

  #done(): void {
    this.#writing = false;
    if (this.#flushRequested || this.#entries.length >= LEDGER_GROUP) this.#write();
  }
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
