import { coerceError } from '@mailroom/core';
import { type Producer, parseBatchJob } from '@mailroom/producer';
import type { Job } from 'bullmq';
import { workerDefaults } from '../defaults.js';
import { FINAL_STATES, Ledger, type LedgerEntry } from '../ledger.js';
import { truncateRecipients } from '../settle.js';
import { formatCount, positiveIntegerFlag, printJson, withProducer } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, println, UsageError } from './io.js';

export const failedUsage = `Usage: mailroom failed <list|retry> [flags]

Dead letters: batch jobs that failed for good (a message refused with 5xx, transient failures that
ran out of attempts, an invalid payload). Failed jobs are kept 7 days (at most 10,000).

  mailroom failed list [--limit n] [--json]
    The newest failed jobs: id, when, why, and for each failed message its state (permanent, or
    exhausted = transient failures until the attempts ran out), reason, SMTP code, server reply
    and recipients.
    --limit <n>                jobs to show (default 20)

  mailroom failed retry (<jobId>... | --all) [--json]
    Sends again what can still be delivered: in each job's ledger the exhausted messages are
    reopened (with fresh attempts and their campaign counts corrected), then the job goes back
    to the queue. Delivered messages and permanent failures (5xx, invalid) are never sent again;
    a job with nothing left to send is not retried.
    --all                      every failed job of the queue

Flags of both:
  --queue <name>             queue (MAILROOM_QUEUE, default mail)
  --json                     machine-readable output

Environment: REDIS_URL, MAILROOM_QUEUE, MAILROOM_PREFIX.
Exit codes: 0 ok; 1 a named job is unknown or not failed; 2 bad flags; 3 bad configuration;
4 Redis unreachable.

Examples:
  mailroom failed list --limit 5
  mailroom failed retry --all
  mailroom failed retry 0b7f9c9e-5d0c-4d55-9b61-4c5f3a0e2f4a`;

const common = {
  queue: { type: 'string' },
  json: { type: 'boolean' },
} satisfies FlagSpec;

const listFlags = { ...common, limit: { type: 'string' } } satisfies FlagSpec;
const retryFlags = { ...common, all: { type: 'boolean' } } satisfies FlagSpec;

const STATE_NAMES: Partial<Record<LedgerEntry['state'], string>> = { f: 'permanent', x: 'exhausted' };

/** One failed message of a dead-lettered job, as listed. */
interface FailedMessage {
  index: number;
  state: 'permanent' | 'exhausted';
  reason: string;
  code: number | null;
  detail: string | null;
  recipients: string;
}

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

function ledgerOf(producer: Producer): Ledger {
  return new Ledger(producer.redis, producer.keys, workerDefaults.ledgerTtl);
}

async function list(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, listFlags, failedUsage);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const limit = values.limit ? positiveIntegerFlag(values.limit, '--limit') : 20;
  return withProducer(context, { queue: values.queue }, async (producer) => {
    const queue = producer.getQueue();
    const ledger = ledgerOf(producer);
    const total = await queue.getFailedCount();
    const jobs = (await queue.getFailed(0, limit - 1)).filter((job): job is Job => Boolean(job));
    const described = [];
    for (const job of jobs) {
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
      const delivered = [...entries.values()].filter((entry) => entry.state === 'd').length;
      described.push({
        id: jobId,
        failedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
        failedReason: job.failedReason ?? '',
        campaign: campaignOf(job) ?? null,
        messages: messages.length,
        delivered,
        unsettled: messages.filter((_, index) => !FINAL_STATES.has(entries.get(index)?.state ?? 't')).length,
        failures,
      });
    }
    if (values.json) {
      printJson(context, { queue: producer.queue, total, jobs: described });
      return EXIT.ok;
    }
    println(
      context.stdout,
      total === 0
        ? `no failed jobs on queue ${producer.queue}`
        : `${formatCount(total)} failed job${total === 1 ? '' : 's'} on queue ${producer.queue}${total > described.length ? ` (newest ${described.length} shown)` : ''}`,
    );
    for (const job of described) {
      println(context.stdout);
      println(
        context.stdout,
        `job ${job.id} · failed ${job.failedAt ?? '?'} · ${job.messages} message${job.messages === 1 ? '' : 's'}, ` +
          `${job.delivered} delivered${job.unsettled > 0 ? `, ${job.unsettled} unsettled` : ''}` +
          `${job.campaign ? ` · campaign ${job.campaign}` : ''}`,
      );
      const reason = job.failedReason.length > 200 ? `${job.failedReason.slice(0, 200)}…` : job.failedReason;
      println(context.stdout, `  reason: ${reason}`);
      for (const failure of job.failures) {
        println(
          context.stdout,
          `  [${failure.index}] ${failure.state} ${failure.reason}${failure.code ? ` ${failure.code}` : ''}` +
            ` · ${failure.recipients || '(no recipients)'}${failure.detail ? ` · ${failure.detail}` : ''}`,
        );
      }
    }
    return EXIT.ok;
  });
}

async function retry(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, retryFlags, failedUsage);
  if (values.all && positionals.length > 0) throw new UsageError('give job ids or --all, not both');
  if (!values.all && positionals.length === 0) {
    throw new UsageError('give the ids of the jobs to retry, or --all (see "mailroom failed --help")');
  }
  return withProducer(context, { queue: values.queue }, async (producer) => {
    const queue = producer.getQueue();
    const ledger = ledgerOf(producer);
    const ids = values.all ? await queue.getRanges(['failed'], 0, -1) : positionals;
    const retried: string[] = [];
    const skipped: string[] = [];
    const errors: string[] = [];
    let messages = 0;
    let reopened = 0;
    for (const id of ids) {
      const job = (await queue.getJob(id)) as Job | undefined;
      if (!job) {
        errors.push(`job ${id}: not found on queue ${producer.queue}`);
        continue;
      }
      const state = await job.getState();
      if (state !== 'failed') {
        errors.push(`job ${id}: not failed (it is ${state})`);
        continue;
      }
      // Ledger first: once the job is back on the queue a worker may take it at once.
      reopened += await ledger.reopenExhausted(id, campaignOf(job));
      const { entries } = await ledger.load(id);
      const toSend = messagesOf(job).filter(
        (_, index) => !FINAL_STATES.has(entries.get(index)?.state ?? 't'),
      );
      if (toSend.length === 0) {
        skipped.push(id);
        continue;
      }
      try {
        await job.retry('failed');
      } catch (error) {
        errors.push(`job ${id}: ${coerceError(error).message}`);
        continue;
      }
      retried.push(id);
      messages += toSend.length;
    }
    if (values.json) {
      printJson(context, { queue: producer.queue, retried, messages, reopened, skipped, errors });
    } else {
      println(
        context.stdout,
        `retried ${formatCount(retried.length)} job${retried.length === 1 ? '' : 's'}: ` +
          `${formatCount(messages)} message${messages === 1 ? '' : 's'} will be sent again`,
      );
      if (skipped.length > 0) {
        println(
          context.stdout,
          `skipped ${formatCount(skipped.length)} job${skipped.length === 1 ? '' : 's'} with nothing left to send ` +
            `(delivered or failed permanently): ${skipped.join(' ')}`,
        );
      }
    }
    for (const error of errors) println(context.stderr, `mailroom failed retry: ${error}`);
    return errors.length > 0 ? EXIT.failure : EXIT.ok;
  });
}

/** `mailroom failed list|retry`. */
export async function failedCommand(argv: string[], context: CliContext): Promise<number> {
  const [subcommand, ...rest] = argv;
  if (subcommand === 'list') return list(rest, context);
  if (subcommand === 'retry') return retry(rest, context);
  throw new UsageError(
    `${subcommand === undefined ? 'a subcommand is required' : `unknown subcommand ${JSON.stringify(subcommand)}`}: list or retry`,
    { usage: failedUsage },
  );
}
