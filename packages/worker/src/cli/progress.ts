/** Campaign progress for people: the status report, the one-line progress bar and `--watch`. */
import { setTimeout as sleep } from 'node:timers/promises';
import { type CampaignStatus, campaignStatus, type Producer } from '@mailroom/producer';
import { formatCount, formatSeconds, printJson } from './common.js';
import { type CliContext, println } from './io.js';
import { forTerminal } from './terminal.js';

/** States after which a campaign sends nothing more: `status --watch` stops there. */
const FINISHED_STATES: ReadonlySet<string> = new Set(['completed', 'cancelled', 'interrupted']);

const BAR_WIDTH = 20;

/** `210/s`, `2.5/s`: messages per second, one decimal below 10. */
export function formatRate(rate: number): string {
  return `${rate > 0 && rate < 10 ? rate.toFixed(1) : formatCount(Math.round(rate))}/s`;
}

/**
 * The share of the campaign that is settled (sent, failed or cancelled), 0-100, rounded down so that
 * 100 % means done. While recipients are still being read, the expected total counts.
 */
export function percentDone(status: CampaignStatus): number {
  if (status.state === 'completed') return 100;
  const settled = status.sent + status.failed + status.cancelled;
  const total = Math.max(status.total, status.enqueueFinished ? 0 : (status.expectedTotal ?? 0));
  if (total === 0) return status.state === 'cancelled' ? 100 : 0;
  return Math.min(100, Math.floor((settled * 100) / total));
}

/**
 * One line of progress:
 * `[#####---------------] 25% 1,234/4,800 sent · 0 failed · 210/s · ETA 17s · running`.
 */
export function progressLine(status: CampaignStatus): string {
  const percent = percentDone(status);
  const filled = Math.floor((percent * BAR_WIDTH) / 100);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
  const total = Math.max(status.total, status.enqueueFinished ? 0 : (status.expectedTotal ?? 0));
  const parts = [
    `${bar} ${percent}% ${formatCount(status.sent)}/${formatCount(total)} sent`,
    `${formatCount(status.failed)} failed`,
    ...(status.cancelled > 0 ? [`${formatCount(status.cancelled)} cancelled`] : []),
    formatRate(status.rate),
    `ETA ${formatSeconds(status.state === 'paused' || status.state === 'cancelled' ? null : status.etaSeconds)}`,
    status.state,
  ];
  return parts.join(' · ');
}

/**
 * The ETA of the status report, saying what it is based on: `17s` at the recent rate; at the
 * average rate since the start when nothing was sent in the last 10 s; `waiting for retries; next in
 * 12s` while the queue only holds batches waiting for a retry; `-- (scheduled)` before sendAt;
 * `-- (paused)`; `--` when nothing tells.
 */
export function describeEta(status: CampaignStatus, now = Date.now()): string {
  if (status.state === 'paused') return '-- (paused)';
  if (status.state === 'cancelled') return '--';
  const eta = formatSeconds(status.etaSeconds);
  switch (status.etaBasis) {
    case 'scheduled':
      return '-- (scheduled)';
    case 'average':
      return `${eta} (at the average rate since the start: nothing sent in the last 10 s)`;
    case 'retries': {
      const next =
        status.retryAt === undefined ? '' : `; next in ${formatSeconds((status.retryAt - now) / 1000)}`;
      return status.etaSeconds === null
        ? `-- (waiting for retries${next})`
        : `${eta} (waiting for retries${next})`;
    }
    default:
      return eta;
  }
}

/** `2024-06-01T10:00:00.000Z`, or `--` for no time. */
function isoTime(at: number | undefined): string {
  return at ? new Date(at).toISOString() : '--';
}

/**
 * The multi-line report of `mailroom campaign status`, for `printLines`: each value is escaped
 * with {@link forTerminal} (a campaign name or an enqueue error is data), the line breaks are the
 * report's own. Times are ISO 8601 in UTC; `now` (epoch ms) for the retry wait.
 */
export function statusReport(status: CampaignStatus, now = Date.now()): string {
  const reasons = Object.entries(status.failedByReason)
    .filter(([, count]) => count > 0)
    .sort(([, a], [, b]) => b - a)
    .map(([reason, count]) => `${reason || 'unknown'} ${formatCount(count)}`);
  const rows: [string, string][] = [
    ['campaign', status.name === status.id ? status.id : `${status.id} (${status.name})`],
    ['state', status.state],
    [
      'total',
      `${formatCount(status.total)}${
        !status.enqueueFinished && status.expectedTotal !== undefined
          ? ` of ${formatCount(status.expectedTotal)} expected (still enqueueing)`
          : !status.enqueueFinished
            ? ' (still enqueueing)'
            : ''
      }`,
    ],
    ['queued', formatCount(status.queued)],
    ['sent', formatCount(status.sent)],
    ['failed', `${formatCount(status.failed)}${reasons.length > 0 ? ` (${reasons.join(', ')})` : ''}`],
    ['cancelled', formatCount(status.cancelled)],
    ['duplicates', formatCount(status.duplicates)],
    ['suppressed', formatCount(status.suppressed)],
    ['remaining', formatCount(status.remaining)],
    ['rate', formatRate(status.rate)],
    ['eta', describeEta(status, now)],
  ];
  if (status.sendAt !== undefined) rows.push(['scheduled', `for ${isoTime(status.sendAt)}`]);
  rows.push(['started', isoTime(status.startedAt)]);
  if (status.finishedAt !== undefined) {
    const took =
      status.startedAt && status.finishedAt >= status.startedAt
        ? ` (took ${formatSeconds((status.finishedAt - status.startedAt) / 1000)})`
        : '';
    rows.push([
      status.state === 'cancelled' ? 'cancelled at' : 'finished',
      `${isoTime(status.finishedAt)}${took}`,
    ]);
  }
  if (status.enqueueError !== undefined)
    rows.push(['interrupted', `${status.enqueueError} (start it again to resume)`]);
  return rows.map(([label, value]) => `${label.padEnd(12)} ${forTerminal(value)}`).join('\n');
}

/** Sleeps, waking early (without an error) when the signal aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return sleep(ms, undefined, signal ? { signal } : {}).catch(() => {});
}

/** Options of {@link watchCampaign}. */
export interface WatchOptions {
  /** Print each status as a line of JSON instead of the progress line. */
  json: boolean;
  /** Milliseconds between two reads of the status. */
  intervalMs: number;
  /** Stops watching early (the last status read is returned). */
  signal?: AbortSignal;
}

/**
 * Follows a campaign until it is completed or cancelled and returns its last status. On a terminal
 * the progress line is redrawn in place (`\r`, then erase to the end of the line) and ends with a
 * newline; anywhere else (a pipe, a file, a CI log) one plain line is printed per interval. With
 * `json`, one JSON object per interval (JSON Lines). Throws MailError ENOTFOUND for an unknown id.
 */
export async function watchCampaign(
  producer: Producer,
  id: string,
  context: CliContext,
  options: WatchOptions,
): Promise<CampaignStatus> {
  const tty = Boolean(context.stdout.isTTY) && !options.json;
  let drawn = false;
  try {
    for (;;) {
      const status = await campaignStatus(producer, id);
      const finished = FINISHED_STATES.has(status.state) || options.signal?.aborted === true;
      if (options.json) printJson(context, status);
      else if (tty) {
        const columns = context.stdout.columns ?? 0;
        // Escaped before the bar's own control sequences are added: those must work, the data's must not.
        const line = forTerminal(progressLine(status));
        context.stdout.write(`\r${columns > 1 ? line.slice(0, columns - 1) : line}\x1b[K`);
        drawn = true;
      } else println(context.stdout, progressLine(status));
      if (finished) return status;
      await pause(options.intervalMs, options.signal);
    }
  } finally {
    // The cursor MUST leave the redrawn line, also when reading the status failed.
    if (drawn) context.stdout.write('\n');
  }
}
