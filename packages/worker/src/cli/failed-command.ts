/** `mailroom failed list|retry`: flags in, dead letters out; the work is done by ../dead-letters.ts. */
import { type FailedJobList, listFailed, type RetryResult, retryFailed } from '../dead-letters.js';
import { formatCount, positiveIntegerFlag, printJson, withProducer } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, println, UsageError } from './io.js';
import { didYouMean } from './suggest.js';

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

Environment: REDIS_URL or REDIS_CLUSTER_NODES, MAILROOM_QUEUE, MAILROOM_PREFIX, MAILROOM_SHARDS.
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

function printList(context: CliContext, queue: string, { total, jobs }: FailedJobList): void {
  println(
    context.stdout,
    total === 0
      ? `no failed jobs on queue ${queue}`
      : `${formatCount(total)} failed job${total === 1 ? '' : 's'} on queue ${queue}${total > jobs.length ? ` (newest ${jobs.length} shown)` : ''}`,
  );
  for (const job of jobs) {
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
}

async function list(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, listFlags, failedUsage);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const limit = values.limit ? positiveIntegerFlag(values.limit, '--limit') : 20;
  return withProducer(context, { queue: values.queue }, async (producer) => {
    const found = await listFailed(producer, { limit });
    if (values.json) printJson(context, { queue: producer.queue, ...found });
    else printList(context, producer.queue, found);
    return EXIT.ok;
  });
}

function printRetry(context: CliContext, { retried, messages, skipped }: RetryResult): void {
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

async function retry(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, retryFlags, failedUsage);
  if (values.all && positionals.length > 0) throw new UsageError('give job ids or --all, not both');
  if (!values.all && positionals.length === 0) {
    throw new UsageError('give the ids of the jobs to retry, or --all (see "mailroom failed --help")');
  }
  return withProducer(context, { queue: values.queue }, async (producer) => {
    const result = await retryFailed(producer, values.all ? 'all' : positionals);
    const errors = result.problems.map((problem) => `job ${problem.jobId}: ${problem.message}`);
    if (values.json) {
      const { retried, messages, reopened, skipped } = result;
      printJson(context, { queue: producer.queue, retried, messages, reopened, skipped, errors });
    } else {
      printRetry(context, result);
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
    `${subcommand === undefined ? 'a subcommand is required' : `unknown subcommand ${JSON.stringify(subcommand)}${didYouMean(subcommand, ['list', 'retry'])}`}: list or retry`,
    { usage: failedUsage },
  );
}
