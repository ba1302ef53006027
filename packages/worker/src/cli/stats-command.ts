/** `mailroom stats`: queue job counts, live workers and campaigns. */
import { MailError } from '@mailroom/core';
import { liveWorkers } from '@mailroom/core/protocol';
import { type CampaignStatus, campaignStatus, listCampaigns } from '@mailroom/producer';
import { formatCount, printJson, readQueueEnvironment, withProducer } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, println, UsageError } from './io.js';
import { formatRate, percentDone } from './progress.js';
import { forTerminal } from './terminal.js';
import { workerLines } from './workers.js';

export const statsUsage = `Usage: mailroom stats [--queue name] [--json]

Shows the queue at a glance: batch jobs waiting, active, delayed (retries, scheduled), prioritized,
failed (dead letters) and completed (completed jobs are removed at once, so usually 0), the live
workers (host, pid, concurrency, version, up since, last seen: each worker announces itself every 5 s
and is listed until 15 s after its last announcement), and every campaign of the queue with its
state and counts. --json: {queue, prefix, jobs, workers: [{id, host, pid, queue, concurrency,
version, startedAt, lastSeenAt, heartbeatInterval}], campaigns}.

Flags:
  --queue <name>             queue (MAILROOM_QUEUE, default mail)
  --json                     machine-readable output

Environment: REDIS_URL or REDIS_CLUSTER_NODES, MAILROOM_QUEUE, MAILROOM_PREFIX, MAILROOM_SHARDS.
Exit codes: 0 ok; 2 bad flags; 3 bad configuration; 4 Redis unreachable.

Example:
  watch -n 5 mailroom stats`;

const flags = {
  queue: { type: 'string' },
  json: { type: 'boolean' },
} satisfies FlagSpec;

/** Job states counted, in the order shown. */
const JOB_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'failed', 'completed'] as const;

/** `mailroom stats`: queue job counts and campaigns. */
export async function statsCommand(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, flags, statsUsage);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const environment = readQueueEnvironment(context.env, values.queue);
  return withProducer(context, { queue: values.queue }, async (producer) => {
    // Summed over the queue's shards (one on an unsharded queue).
    const perShard = await Promise.all(
      producer.getQueues().map((queue) => queue.getJobCounts(...JOB_STATES)),
    );
    const jobs = Object.fromEntries(
      JOB_STATES.map((state) => [state, perShard.reduce((sum, counts) => sum + (counts[state] ?? 0), 0)]),
    );
    const workers = await liveWorkers(producer.redis, producer.keys);
    const campaigns: CampaignStatus[] = [];
    for (const id of await listCampaigns(producer)) {
      try {
        campaigns.push(await campaignStatus(producer, id));
      } catch (error) {
        // A campaign whose data expired (30 days) is still in the set; it has nothing to show.
        if (!(error instanceof MailError && error.code === 'ENOTFOUND')) throw error;
      }
    }
    if (values.json) {
      printJson(context, { queue: producer.queue, prefix: producer.prefix, jobs, workers, campaigns });
      return EXIT.ok;
    }
    println(
      context.stdout,
      `queue ${producer.queue} (prefix ${producer.prefix}${producer.layout.shards.length > 1 ? `, ${producer.layout.shards.length} shards` : ''}) on ${environment.redisLabel}`,
    );
    println(
      context.stdout,
      `jobs: ${JOB_STATES.map((state) => `${state} ${formatCount(jobs[state] ?? 0)}`).join(' · ')}`,
    );
    // Escaped cell by cell (workerLines): the padding must measure what is printed.
    for (const line of workerLines(workers)) println(context.stdout, line);
    if (campaigns.length === 0) {
      println(context.stdout, 'campaigns: none');
      return EXIT.ok;
    }
    println(context.stdout, 'campaigns:');
    const header = ['ID', 'STATE', 'DONE', 'TOTAL', 'SENT', 'FAILED', 'CANCELLED', 'REMAINING', 'RATE'];
    // Cells escaped before the widths are measured, so the columns line up with what is printed.
    const rows = campaigns.map((status) => [
      forTerminal(status.id),
      forTerminal(status.state),
      `${percentDone(status)}%`,
      formatCount(status.total),
      formatCount(status.sent),
      formatCount(status.failed),
      formatCount(status.cancelled),
      formatCount(status.remaining),
      formatRate(status.rate),
    ]);
    const widths = header.map((title, column) =>
      Math.max(title.length, ...rows.map((row) => (row[column] as string).length)),
    );
    for (const row of [header, ...rows]) {
      println(
        context.stdout,
        `  ${row
          .map((cell, column) => cell.padEnd(widths[column] as number))
          .join('  ')
          .trimEnd()}`,
      );
    }
    return EXIT.ok;
  });
}
