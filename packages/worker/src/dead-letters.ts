/**
 * Dead letters: batch jobs that failed for good, listed with why each message failed, and retried
 * without sending anyone a message twice. `mailroom failed list|retry` is a thin layer over these.
 */
import { coerceError } from '@mailroom/core';
import { FINAL_STATES, type LedgerEntry, parseBatchJob, type QueueKeys } from '@mailroom/core/protocol';
import type { Producer } from '@mailroom/producer';
import type { Job, Queue } from 'bullmq';
import { workerDefaults } from './defaults.js';
import { Ledger } from './ledger.js';
import { truncateRecipients } from './settle.js';

/** One failed message of a dead-lettered job. */
export interface FailedMessage {
  /** Position of the message in its batch. */
  index: number;
  /** `permanent`: refused for good (5xx, invalid); `exhausted`: transient failures until the attempts ran out. */
  state: 'permanent' | 'exhausted';
  /** The failure reason (`rejected`, `deferred`, `invalid`, ...), `unknown` when none was recorded. */
  reason: string;
  /** The SMTP reply code, if the server gave one. */
  code: number | null;
  /** The server's reply or the error message, shortened. */
  detail: string | null;
  /** The recipients it failed for (of an exhausted message: the ones still pending), truncated to three. */
  recipients: string;
}

/** A dead-lettered batch job. */
export interface FailedJob {
  id: string;
  /** When it failed for good (ISO 8601), null when BullMQ did not record it. */
  failedAt: string | null;
  /** BullMQ's failedReason: why the job as a whole failed. */
  failedReason: string;
  /** The campaign the batch belongs to, null for single messages. */
  campaign: string | null;
  /** Messages in the batch (0 when its payload cannot be read). */
  messages: number;
  /** Messages delivered. */
  delivered: number;
  /** Messages in no final state (neither delivered, failed nor cancelled). */
  unsettled: number;
  /** Its failed messages, by index. */
  failures: FailedMessage[];
}

/** What {@link listFailed} found. */
export interface FailedJobList {
  /** Failed jobs on the queue, all of them (not only those listed). */
  total: number;
  /** The newest ones, newest first, at most `limit`. */
  jobs: FailedJob[];
}

/** A job {@link retryFailed} could not retry. */
export interface RetryProblem {
  jobId: string;
  /** `not-found`: no such job; `not-failed`: the job is in another state; `refused`: BullMQ refused the retry. */
  problem: 'not-found' | 'not-failed' | 'refused';
  /** What went wrong, as a sentence without the job id: `not failed (it is completed)`. */
  message: string;
}

/** What {@link retryFailed} did. */
export interface RetryResult {
  /** Jobs put back on the queue. */
  retried: string[];
  /** Messages the retried jobs will send again. */
  messages: number;
  /** Exhausted messages reopened (given fresh attempts), in retried and skipped jobs alike. */
  reopened: number;
  /** Failed jobs left alone: every message is delivered or failed permanently. */
  skipped: string[];
  /** Jobs that were named but could not be retried. */
  problems: RetryProblem[];
}

const STATE_NAMES: Partial<Record<LedgerEntry['state'], FailedMessage['state']>> = {
  f: 'permanent',
  x: 'exhausted',
};

/** The envelope recipients of a wire message in a job's data, tolerant of a malformed payload. */
function recipientsOf(message: unknown): string[] {
  if (typeof message !== 'object' || message === null) return [];
  const fields = message as { to?: unknown; cc?: unknown; bcc?: unknown };
  return [fields.to, fields.cc, fields.bcc]
    .flatMap((list) => (Array.isArray(list) ? list : []))
    .filter((address): address is string => typeof address === 'string' && address !== '');
}

function messagesOf(job: Job): unknown[] {
  try {
    return parseBatchJob(job.data).messages;
  } catch {
    // A malformed payload is listed with its failedReason; it has no messages to show.
    return [];
  }
}

function campaignOf(job: Job): string | undefined {
  const campaign = (job.data as { campaign?: unknown } | undefined)?.campaign;
  return typeof campaign === 'string' && campaign ? campaign : undefined;
}

/** A shard's BullMQ queue, its delivery ledger and its keys. */
export interface ShardJobs {
  queue: Queue;
  ledger: Ledger;
  keys: QueueKeys;
}

/** Each shard's BullMQ queue and delivery ledger (one of each on an unsharded queue). */
function shardsOf(producer: Producer): ShardJobs[] {
  const queues = producer.getQueues();
  return producer.layout.shards.map((shard) => ({
    queue: queues[shard.index] as Queue,
    ledger: new Ledger(producer.redis, shard.keys, workerDefaults.ledgerTtl),
    keys: shard.keys,
  }));
}

/**
 * The job `id` of the producer's queue and the shard it is on, or undefined. A job id names no
 * shard: the first shard that has it (ids are random UUIDs, unique across shards).
 */
export async function findJob(
  producer: Producer,
  id: string,
  shards: readonly ShardJobs[] = shardsOf(producer),
): Promise<{ job: Job; shard: ShardJobs } | undefined> {
  for (const shard of shards) {
    const job = (await shard.queue.getJob(id)) as Job | undefined;
    if (job) return { job, shard };
  }
  return undefined;
}

/**
 * The newest `limit` (default 20) failed jobs of the producer's queue, newest first, each with its
 * failed messages read from its delivery ledger. Reads only. Throws a RangeError when `limit` is not
 * a positive integer; rejects with the Redis error when Redis fails.
 */
export async function listFailed(
  producer: Producer,
  options: { limit?: number } = {},
): Promise<FailedJobList> {
  const limit = options.limit ?? 20;
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError(`limit must be a positive integer (got ${limit})`);
  }
  // Every shard's newest `limit`, then the newest `limit` of those.
  const shards = shardsOf(producer);
  const perShard = await Promise.all(
    shards.map(async ({ queue, ledger }) => ({
      total: await queue.getFailedCount(),
      found: (await queue.getFailed(0, limit - 1))
        .filter((job): job is Job => Boolean(job))
        .map((job) => ({ job, ledger })),
    })),
  );
  const total = perShard.reduce((sum, shard) => sum + shard.total, 0);
  const found = perShard
    .flatMap((shard) => shard.found)
    .sort((a, b) => (b.job.finishedOn ?? 0) - (a.job.finishedOn ?? 0))
    .slice(0, limit);
  const jobs: FailedJob[] = [];
  for (const { job, ledger } of found) {
    const jobId = job.id as string;
    const { entries } = await ledger.load(jobId);
    const messages = messagesOf(job);
    const failures: FailedMessage[] = [...entries.entries()]
      .filter(([, entry]) => entry.state === 'f' || entry.state === 'x')
      .sort(([a], [b]) => a - b)
      .map(([index, entry]) => ({
        index,
        state: STATE_NAMES[entry.state] as FailedMessage['state'],
        reason: entry.reason ?? 'unknown',
        code: entry.code ?? null,
        detail: entry.detail ?? null,
        recipients: truncateRecipients(
          entry.state === 'x' && entry.pending?.length ? entry.pending : recipientsOf(messages[index]),
        ),
      }));
    jobs.push({
      id: jobId,
      failedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
      failedReason: job.failedReason ?? '',
      campaign: campaignOf(job) ?? null,
      messages: messages.length,
      delivered: [...entries.values()].filter((entry) => entry.state === 'd').length,
      unsettled: messages.filter((_, index) => !FINAL_STATES.has(entries.get(index)?.state ?? 't')).length,
      failures,
    });
  }
  return { total, jobs };
}

/**
 * Sends again what failed jobs can still deliver: `jobIds`, or every failed job of the queue with
 * `'all'`. For each job the exhausted messages of its ledger are reopened (fresh attempts, campaign
 * counts corrected), then the job goes back to the queue; delivered messages and permanent failures
 * are never sent again, and a job with nothing left to send stays failed (`skipped`). A job that is
 * unknown, not failed, or whose retry BullMQ refuses is reported in `problems` and the others still
 * go ahead. Rejects with the Redis error when Redis fails; jobs retried before that stay retried.
 */
export async function retryFailed(
  producer: Producer,
  jobIds: readonly string[] | 'all',
): Promise<RetryResult> {
  const shards = shardsOf(producer);
  // With 'all', each id comes with the shard it was listed on: looked up there only.
  const targets: { id: string; on: readonly ShardJobs[] }[] =
    jobIds === 'all'
      ? (
          await Promise.all(
            shards.map(async (shard) =>
              (await shard.queue.getRanges(['failed'], 0, -1)).map((id) => ({ id, on: [shard] })),
            ),
          )
        ).flat()
      : jobIds.map((id) => ({ id, on: shards }));
  const result: RetryResult = { retried: [], messages: 0, reopened: 0, skipped: [], problems: [] };
  for (const { id, on } of targets) {
    const found = await findJob(producer, id, on);
    if (!found) {
      result.problems.push({
        jobId: id,
        problem: 'not-found',
        message: `not found on queue ${producer.queue}`,
      });
      continue;
    }
    const {
      job,
      shard: { ledger },
    } = found;
    const state = await job.getState();
    if (state !== 'failed') {
      result.problems.push({ jobId: id, problem: 'not-failed', message: `not failed (it is ${state})` });
      continue;
    }
    // Ledger first: once the job is back on the queue a worker may take it at once.
    result.reopened += await ledger.reopenExhausted(id, campaignOf(job), messagesOf(job));
    const { entries } = await ledger.load(id);
    const toSend = messagesOf(job).filter((_, index) => !FINAL_STATES.has(entries.get(index)?.state ?? 't'));
    if (toSend.length === 0) {
      result.skipped.push(id);
      continue;
    }
    try {
      await job.retry('failed');
    } catch (error) {
      result.problems.push({ jobId: id, problem: 'refused', message: coerceError(error).message });
      continue;
    }
    result.retried.push(id);
    result.messages += toSend.length;
  }
  return result;
}
