/** Last step of a batch: carry out the decision (record, then complete, retry, put back or dead-letter). */
import type { FailureReason } from '@mailroom/core';
import type { LedgerEntry } from '@mailroom/core/protocol';
import { DelayedError, type Job, UnrecoverableError, WaitingError } from 'bullmq';
import type { Logger } from 'pino';
import type { BatchCounts, BatchDecision } from './decide.js';
import { workerDefaults } from './defaults.js';
import type { BatchRef, Ledger } from './ledger.js';
import type { WorkerMetrics } from './metrics.js';

/** Exponential backoff with "equal jitter": half the delay fixed, half random. */
export function retryDelay(attempt: number, delay: number, maxDelay: number, random = Math.random): number {
  const base = Math.min(maxDelay, delay * 2 ** Math.max(0, attempt - 1));
  return Math.round(base / 2 + random() * (base / 2));
}

/** The outcome label of a batch in metrics. */
export type BatchOutcomeLabel = 'completed' | 'failed' | 'retry' | 'requeued' | 'paused';

/** What {@link applyDecision} needs besides the decision. */
export interface ApplyContext {
  job: Job;
  token: string | undefined;
  batch: BatchRef;
  messageCount: number;
  /** Ledger entries by message index, for the reasons retried messages are counted under. */
  entries: ReadonlyMap<number, LedgerEntry>;
  /** The classified reason of the connection failure, for messages with no reason of their own. */
  connectionReason: FailureReason;
  connectionError: Error | undefined;
  ledger: Ledger;
  backoff: { delay: number; maxDelay: number; attempts: number };
  startedAt: number;
  logger: Logger;
  metrics: WorkerMetrics;
  /** Records the batch's duration and outcome in metrics (once). */
  finish(outcome: BatchOutcomeLabel): void;
}

/**
 * Carries out a {@link BatchDecision}. Resolves with the counts when the job completes; otherwise
 * throws what BullMQ expects from a processor that moved its job itself (DelayedError, WaitingError)
 * or an UnrecoverableError that dead-letters it with the per-message reasons.
 */
export async function applyDecision(decision: BatchDecision, context: ApplyContext): Promise<BatchCounts> {
  const { job, token, ledger, logger, metrics } = context;
  const jobId = context.batch.jobId;
  switch (decision.kind) {
    case 'park':
      // Not a failure: looked at again after pausePoll, without spending an attempt.
      await job.moveToDelayed(Date.now() + workerDefaults.pausePoll, token);
      context.finish('paused');
      throw new DelayedError();
    case 'requeue':
      await job.moveToWait(token);
      context.finish('requeued');
      logger.info(
        { jobId, remaining: decision.remaining.length },
        'shutdown: batch remainder back on the queue',
      );
      throw new WaitingError();
    case 'retry': {
      await ledger.addAttempt(jobId);
      const { delay, maxDelay, attempts } = context.backoff;
      const wait = retryDelay(decision.attempt, delay, maxDelay);
      for (const index of decision.remaining) {
        metrics.messageRetried(context.entries.get(index)?.reason ?? context.connectionReason);
      }
      logger.info(
        {
          jobId,
          attempt: decision.attempt,
          of: attempts,
          remaining: decision.remaining.length,
          retryInMs: wait,
          err: context.connectionError?.message,
        },
        'batch will be retried for its undelivered messages',
      );
      await job.moveToDelayed(Date.now() + wait, token);
      context.finish('retry');
      throw new DelayedError();
    }
    case 'finish':
      return finishBatch(decision, context);
  }
}

async function finishBatch(
  decision: Extract<BatchDecision, { kind: 'finish' }>,
  context: ApplyContext,
): Promise<BatchCounts> {
  const { ledger, logger, metrics } = context;
  const jobId = context.batch.jobId;
  if (decision.exhausted) await ledger.addAttempt(jobId);
  for (const [index, entry] of decision.updates) {
    await ledger.record(context.batch, index, entry);
    if (!decision.exhausted) continue;
    if (entry.state === 'd') metrics.messageSent(undefined);
    else metrics.messageFailed(entry.reason ?? 'connection');
  }
  const { counts, hardFailures } = decision;
  const summary = {
    jobId,
    campaign: context.batch.campaign,
    messages: context.messageCount,
    ...counts,
    durationMs: Date.now() - context.startedAt,
  };
  if (decision.outcome === 'dead-letter') {
    await ledger.finish(jobId, workerDefaults.ledgerTtl);
    context.finish('failed');
    logger.error({ ...summary, failures: hardFailures.slice(0, 10) }, 'batch dead-lettered');
    throw new UnrecoverableError(
      `${hardFailures.length} of ${context.messageCount} messages failed: ${hardFailures.slice(0, 20).join('; ')}`,
    );
  }
  // A ledger that recorded failures (sent with failSilently) is kept: the record of what failed.
  await ledger.finish(
    jobId,
    counts.failed > 0 ? workerDefaults.ledgerTtl : workerDefaults.ledgerTtlAfterComplete,
  );
  context.finish('completed');
  if (counts.failedSilently > 0) logger.warn(summary, 'batch completed; failures recorded (failSilently)');
  else logger.info(summary, 'batch completed');
  return counts;
}
