/** The live workers of a queue for the CLI: the "no worker" warning of `campaign start|status` and the table of `mailroom stats`. */
import { liveWorkers, WORKER_LIVE_WINDOW, type WorkerInfo } from '@mailroom/core/protocol';
import type { Producer } from '@mailroom/producer';
import { formatSeconds } from './common.js';
import { type CliContext, println } from './io.js';
import { forTerminal } from './terminal.js';

/** The warning printed when no live worker consumes `queue`. */
export function noWorkerWarning(queue: string): string {
  return (
    `warning: no worker is consuming queue ${queue} (none seen in the last ${WORKER_LIVE_WINDOW / 1000} s): ` +
    'start one with `mailroom worker`'
  );
}

/**
 * Prints {@link noWorkerWarning} on stderr when no worker of the producer's queue is live (unless
 * `warn` is false), and returns the number of live workers. A warning, never an error: the campaign waits on the queue
 * until a worker comes, so exit codes stay as they are. Never rejects: when the workers cannot be
 * read it warns of nothing and returns undefined (the command's own Redis calls report Redis).
 */
export async function warnWithoutWorkers(
  producer: Producer,
  context: CliContext,
  warn = true,
): Promise<number | undefined> {
  let workers: WorkerInfo[];
  try {
    workers = await liveWorkers(producer.redis, producer.keys);
  } catch {
    return undefined;
  }
  if (warn && workers.length === 0) println(context.stderr, noWorkerWarning(producer.queue));
  return workers.length;
}

/** Campaign states in which the campaign still needs a worker: `status` warns only for those. */
export const STATES_NEEDING_WORKERS: ReadonlySet<string> = new Set(['running', 'paused']);

/** `2m 05s ago`, from an epoch ms. */
function ago(at: number, now: number): string {
  return `${formatSeconds((now - at) / 1000)} ago`;
}

/**
 * The lines of the workers table of `mailroom stats` (each cell escaped for the terminal: a host name
 * is data): host, pid, concurrency, version, up since (ISO time and how long), last seen.
 */
export function workerLines(workers: readonly WorkerInfo[], now = Date.now()): string[] {
  if (workers.length === 0) {
    return [
      `workers: none seen in the last ${WORKER_LIVE_WINDOW / 1000} s (start one with \`mailroom worker\`)`,
    ];
  }
  const header = ['HOST', 'PID', 'CONCURRENCY', 'VERSION', 'UP SINCE', 'LAST SEEN'];
  const rows = workers.map((worker) => [
    forTerminal(worker.host),
    String(worker.pid),
    String(worker.concurrency),
    forTerminal(worker.version),
    `${new Date(worker.startedAt).toISOString()} (${formatSeconds((now - worker.startedAt) / 1000)})`,
    ago(worker.lastSeenAt, now),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] as string).length)),
  );
  const table = [header, ...rows].map(
    (row) =>
      `  ${row
        .map((cell, column) => cell.padEnd(widths[column] as number))
        .join('  ')
        .trimEnd()}`,
  );
  return [`workers: ${workers.length} live`, ...table];
}
