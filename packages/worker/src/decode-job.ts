/** Step one of a batch: read a job into the messages still to send, or refuse it as invalid. */
import { coerceError, decodeWire, ValidationError } from '@mailroom/core';
import type { RedisClient } from '@mailroom/core/protocol';
import {
  BATCH_JOB_NAME,
  type BatchJobData,
  FINAL_STATES,
  type LedgerEntry,
  type ParsedBatchJob,
  parseBatchJob,
} from '@mailroom/core/protocol';
import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { PendingMessage } from './deliver-batch.js';
import type { BatchRef, Ledger } from './ledger.js';
import type { WorkerMetrics } from './metrics.js';
import { shortDetail } from './settle.js';
import { standInForUnreadableJob, unreadableJobs } from './unreadable-jobs.js';

/** What {@link decodeJob} needs besides the job. */
export interface DecodeContext {
  redis: RedisClient;
  /** `<prefix>:<queue>`: the job's hash is `<base>:<id>`. */
  base: string;
  ledger: Ledger;
  maxUnpackedBytes: number;
  logger: Logger;
  metrics: WorkerMetrics;
}

/** A batch job read and checked: its messages, what the ledger knew, and what is left to send. */
export interface DecodedBatch {
  batch: BatchRef;
  data: ParsedBatchJob;
  /** Ledger entries by message index: earlier runs, plus messages that failed to decode now. */
  entries: Map<number, LedgerEntry>;
  /** The failSilently intent of each message, by index. */
  failSilently: Map<number, boolean>;
  /** Messages still to send, in order. */
  pending: PendingMessage[];
  /** Attempts of this batch that already ended with undelivered messages. */
  attemptsUsed: number;
}

/**
 * Reads a batch job. Throws {@link ValidationError} when the job as a whole cannot be used (unreadable
 * Redis hash, unknown name, malformed or oversized payload): the caller dead-letters it. A single
 * malformed message fails alone: it is recorded in the ledger as failed `invalid`, and the rest of its
 * batch goes on. Messages the ledger shows as final (delivered, failed, cancelled) are skipped: a
 * retry, a takeover or a restart never sends them again.
 */
export async function decodeJob(
  job: Job<BatchJobData>,
  token: string | undefined,
  context: DecodeContext,
): Promise<DecodedBatch> {
  const jobId = job.id as string;
  const unreadable = unreadableJobs.get(job);
  if (unreadable) {
    throw new ValidationError(
      await standInForUnreadableJob(context.redis, `${context.base}:${jobId}`, token, unreadable),
    );
  }
  if (job.name !== BATCH_JOB_NAME) throw new ValidationError(`unknown job name ${JSON.stringify(job.name)}`);
  const data = parseBatchJob(job.data, { maxUnpackedBytes: context.maxUnpackedBytes });
  const batch: BatchRef = { jobId, token, campaign: data.campaign };
  // A first run has an empty ledger by construction; later runs (retry, stall, re-queue) read it.
  const snapshot =
    job.attemptsStarted > 1 || job.attemptsMade > 0
      ? await context.ledger.load(jobId)
      : { entries: new Map<number, LedgerEntry>(), attempts: 0 };
  const entries = snapshot.entries;
  // What a campaign message that fails for good is recorded with (ledger.ts failureRecord).
  if (data.campaign !== undefined) {
    batch.messages = data.messages;
    batch.attempt = snapshot.attempts + 1;
  }
  const failSilently = new Map<number, boolean>();
  const pending: PendingMessage[] = [];
  for (const [index, raw] of data.messages.entries()) {
    const known = entries.get(index);
    // Read before decoding, so that a message that fails to decode still counts as failSilently;
    // a null or a non-object is decoded (and refused) like any other malformed message.
    failSilently.set(
      index,
      typeof raw === 'object' && raw !== null && (raw as { failSilently?: unknown }).failSilently === true,
    );
    if (known && FINAL_STATES.has(known.state)) continue;
    try {
      const { message, failSilently: silent } = decodeWire(raw, `job.messages[${index}]`);
      failSilently.set(index, silent);
      pending.push({ index, message, entry: known, enqueuedAt: data.enqueuedAt });
    } catch (error) {
      const entry: LedgerEntry = {
        state: 'f',
        reason: 'invalid',
        detail: shortDetail(coerceError(error).message),
      };
      entries.set(index, entry);
      await context.ledger.record(batch, index, entry);
      context.metrics.messageFailed('invalid');
      context.logger.error({ jobId, index, err: entry.detail }, 'invalid message in batch');
    }
  }
  return { batch, data, entries, failSilently, pending, attemptsUsed: snapshot.attempts };
}
