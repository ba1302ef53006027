/** What the dashboard's pages read from Redis, each read bounded by what one page shows. */
import { MailError } from '@mailroom/core';
import {
  CAMPAIGN_FIELDS,
  CAMPAIGN_STATES,
  campaignShardsOf,
  FINAL_STATES,
  type LedgerEntry,
  liveWorkers,
  parseBatchJob,
  type QueueKeys,
  readPerShard,
  type Suppression,
  type SuppressionList,
  type WorkerInfo,
} from '@mailroom/core/protocol';
import {
  type CampaignFailure,
  type CampaignState,
  campaignFailures,
  type Producer,
} from '@mailroom/producer';
import type { ChainableCommander } from 'ioredis';
import { findJob } from '../dead-letters.js';
import { readQueueBacklog } from '../queue-gauges.js';

/** The job states the overview counts, in the order shown. */
export const OVERVIEW_STATES = ['waiting', 'delayed', 'active', 'failed', 'completed'] as const;

/** One of {@link OVERVIEW_STATES}. */
export type OverviewState = (typeof OVERVIEW_STATES)[number];

/** The queue at a glance (`GET /`, `GET /api/overview`). */
export interface Overview {
  queue: string;
  /** Batches per state, and the messages they hold (estimated past 100 batches per list; completed: batches only). */
  states: Record<OverviewState, { batches: number; messages: number | null }>;
  /** Campaign messages sent per second over the last 10 s, all campaigns of the queue together. */
  rate: number;
  /** Campaigns whose stored state is running and that are not completed. */
  runningCampaigns: number;
  workers: WorkerInfo[];
}

/** Seconds the rate is averaged over, as campaignStatus's. */
const RATE_WINDOW_SECONDS = 10;

/** Batches per list whose `count` the overview reads; the rest are estimated at their average. */
const SAMPLE_JOBS = 100;

/**
 * Reads the overview: batches and messages per state (readQueueBacklog, the /metrics gauges' reader),
 * the completed count, the live workers, and the send rate. The rate is the sum of the campaigns'
 * per-second sent counters (the only queue-wide record of sends in Redis; the worker's Prometheus
 * counters live in each worker process): messages sent outside campaigns are not in it. One HMGET
 * per campaign of the queue's set (its last 30 days).
 */
export async function readOverview(producer: Producer): Promise<Overview> {
  await producer.ready();
  const [backlog, completed, workers, rate] = await Promise.all([
    readQueueBacklog(producer.redis, producer.layout, { sampleJobs: SAMPLE_JOBS }),
    Promise.all(
      producer.layout.shards.map(({ keys }) => producer.redis.zcard(keys.jobSet('completed'))),
    ).then((counts) => counts.reduce((sum, count) => sum + count, 0)),
    liveWorkers(producer.redis, producer.keys),
    queueRate(producer),
  ]);
  return {
    queue: producer.queue,
    states: {
      waiting: backlog.states.waiting,
      delayed: backlog.states.delayed,
      active: backlog.states.active,
      failed: backlog.states.failed,
      completed: { batches: completed, messages: null },
    },
    rate,
    runningCampaigns: backlog.campaigns.length,
    workers,
  };
}

/**
 * One command per campaign, each on the shard the campaign lives on: one pipeline per shard (a
 * cluster pipeline holds keys of one node only). Replies in the order of `ids`.
 */
async function readCampaigns(
  producer: Producer,
  ids: readonly string[],
  add: (pipeline: ChainableCommander, keys: QueueKeys, id: string) => void,
): Promise<[Error | null, unknown][]> {
  const shards = await campaignShardsOf(producer.redis, producer.layout, ids);
  return readPerShard(shards, async ({ keys }, positions) => {
    const pipeline = producer.redis.pipeline();
    for (const position of positions) add(pipeline, keys, ids[position] as string);
    return (await pipeline.exec()) ?? [];
  });
}

/** Messages per second over the last 10 whole seconds, summed over the queue's campaigns. */
async function queueRate(producer: Producer): Promise<number> {
  const ids = await producer.redis.smembers(producer.keys.campaigns);
  if (ids.length === 0) return 0;
  const nowSecond = Math.floor(Date.now() / 1000);
  const seconds = Array.from({ length: RATE_WINDOW_SECONDS }, (_, i) => String(nowSecond - 1 - i));
  const replies = await readCampaigns(producer, ids, (pipeline, keys, id) =>
    pipeline.hmget(keys.campaignRate(id), ...seconds),
  );
  let sent = 0;
  for (const [error, values] of replies) {
    if (error || !Array.isArray(values)) continue;
    for (const value of values as (string | null)[]) sent += Number(value ?? 0);
  }
  return sent / RATE_WINDOW_SECONDS;
}

/** One row of the campaign list. */
export interface CampaignRow {
  id: string;
  name: string;
  state: CampaignState;
  total: number;
  sent: number;
  failed: number;
  cancelled: number;
  /** Settled share, 0-100, rounded down (as the CLI's percentDone). */
  percent: number;
  startedAt: number;
}

const ROW_FIELDS = [
  CAMPAIGN_FIELDS.state,
  CAMPAIGN_FIELDS.name,
  CAMPAIGN_FIELDS.total,
  CAMPAIGN_FIELDS.sent,
  CAMPAIGN_FIELDS.failed,
  CAMPAIGN_FIELDS.cancelled,
  CAMPAIGN_FIELDS.enqueueFinished,
  CAMPAIGN_FIELDS.enqueueError,
  CAMPAIGN_FIELDS.expectedTotal,
  CAMPAIGN_FIELDS.duplicates,
  CAMPAIGN_FIELDS.suppressed,
  CAMPAIGN_FIELDS.startedAt,
] as const;

/**
 * The queue's campaigns, newest first: the campaigns set and one HMGET each (one pipeline). A
 * campaign whose record expired (30 days) or was lost is left out. The state is derived as
 * campaignStatus derives it (completed, interrupted).
 */
export async function readCampaignRows(producer: Producer): Promise<CampaignRow[]> {
  await producer.ready();
  const ids = await producer.redis.smembers(producer.keys.campaigns);
  if (ids.length === 0) return [];
  const replies = await readCampaigns(producer, ids, (pipeline, keys, id) =>
    pipeline.hmget(keys.campaign(id), ...ROW_FIELDS),
  );
  const rows = ids.flatMap((id, index): CampaignRow[] => {
    const [error, fields] = replies[index] ?? [null, undefined];
    if (error || !Array.isArray(fields)) return [];
    const [
      stored,
      name,
      total,
      sent,
      failed,
      cancelled,
      enqueueFinished,
      enqueueError,
      expectedTotal,
      duplicates,
      suppressed,
      startedAt,
    ] = fields as (string | null)[];
    if (!stored) return [];
    const number = (value: string | null | undefined) => Number(value ?? 0) || 0;
    const finishedReading = enqueueFinished === '1';
    const unread =
      !finishedReading && expectedTotal
        ? Math.max(0, number(expectedTotal) - number(total) - number(duplicates) - number(suppressed))
        : 0;
    const settled = number(sent) + number(failed) + number(cancelled);
    const remaining = number(total) - settled + unread;
    let state = stored as CampaignState;
    if (state !== CAMPAIGN_STATES.cancelled && finishedReading && remaining <= 0)
      state = enqueueError ? 'interrupted' : 'completed';
    const denominator = Math.max(number(total), finishedReading ? 0 : number(expectedTotal));
    const percent =
      state === 'completed'
        ? 100
        : denominator === 0
          ? state === 'cancelled'
            ? 100
            : 0
          : Math.min(100, Math.floor((settled * 100) / denominator));
    return [
      {
        id,
        name: name || id,
        state,
        total: number(total),
        sent: number(sent),
        failed: number(failed),
        cancelled: number(cancelled),
        percent,
        startedAt: number(startedAt),
      },
    ];
  });
  return rows.sort((a, b) => b.startedAt - a.startedAt || a.id.localeCompare(b.id));
}

/**
 * The first `limit` failed recipients of a campaign (campaignFailures, which stops reading when the
 * loop stops), and whether there are more. Throws what campaignFailures throws (ENOTFOUND...).
 */
export async function readFailures(
  producer: Producer,
  id: string,
  limit: number,
): Promise<{ failures: CampaignFailure[]; more: boolean }> {
  const failures: CampaignFailure[] = [];
  let more = false;
  for await (const failure of campaignFailures(producer, id)) {
    if (failures.length === limit) {
      more = true;
      break;
    }
    failures.push(failure);
  }
  failures.sort((a, b) => b.at - a.at || a.address.localeCompare(b.address));
  return { failures, more };
}

/** One message of a dead letter: its headers and outcome, never its body, alternatives or attachments' contents. */
export interface DeadLetterMessage {
  index: number;
  /** `[name, value]` in the order of a message: From, To, Cc, Bcc, Reply-To, Subject, then its own headers (Date, Message-ID...). */
  headers: [string, string][];
  /** Number of attachments (contents never shown). */
  attachments: number;
  /** Number of alternative bodies (an HTML part...), never shown. */
  alternatives: number;
  /** What the ledger says: `delivered`, `failed`, `exhausted`, `cancelled` or `pending`. */
  outcome: string;
  reason: string | null;
  code: number | null;
  detail: string | null;
}

/** A dead-lettered job as its page shows it. */
export interface DeadLetter {
  id: string;
  /** BullMQ's state of the job (`failed` for a dead letter). */
  state: string;
  failedAt: number | null;
  failedReason: string;
  campaign: string | null;
  attempts: number;
  /** Messages in no final state (what a retry sends again). */
  unsettled: number;
  /** null when the payload cannot be read. */
  messages: DeadLetterMessage[] | null;
}

const OUTCOMES: Record<LedgerEntry['state'], string> = {
  d: 'delivered',
  f: 'failed',
  x: 'exhausted',
  c: 'cancelled',
  t: 'pending',
} as Record<LedgerEntry['state'], string>;

/** A header value of the wire form as text (a date, a number, a string). */
function headerText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    const { date, number } = value as { date?: unknown; number?: unknown };
    if (typeof date === 'string') return date;
    if (typeof number === 'string') return number;
  }
  return '';
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}

/**
 * The headers of a wire message, read field by field from what the producer wrote (tolerant of a
 * malformed one). The body, the alternatives and the attachments are never read into the result:
 * only their number.
 */
function messageHeaders(
  message: unknown,
): Omit<DeadLetterMessage, 'index' | 'outcome' | 'reason' | 'code' | 'detail'> {
  const fields = (typeof message === 'object' && message !== null ? message : {}) as Record<string, unknown>;
  const headers: [string, string][] = [];
  const add = (name: string, value: string) => {
    if (value !== '') headers.push([name, value]);
  };
  add('From', typeof fields.fromEmail === 'string' ? fields.fromEmail : '');
  add('To', stringList(fields.to).join(', '));
  add('Cc', stringList(fields.cc).join(', '));
  add('Bcc', stringList(fields.bcc).join(', '));
  add('Reply-To', stringList(fields.replyTo).join(', '));
  add('Subject', typeof fields.subject === 'string' ? fields.subject : '');
  if (Array.isArray(fields.headers)) {
    for (const pair of fields.headers) {
      if (Array.isArray(pair) && typeof pair[0] === 'string') add(pair[0], headerText(pair[1]));
    }
  }
  return {
    headers,
    attachments: Array.isArray(fields.attachments) ? fields.attachments.length : 0,
    alternatives: Array.isArray(fields.alternatives) ? fields.alternatives.length : 0,
  };
}

/** Job ids the dashboard takes in a URL: BullMQ's numeric ids and custom ids of safe characters. */
export const JOB_ID = /^[A-Za-z0-9_.:-]{1,200}$/;

/**
 * A job of the queue with each message's headers and ledger outcome, or undefined when there is no
 * such job. Reads the job and its ledger: O(batch size).
 */
export async function readDeadLetter(producer: Producer, id: string): Promise<DeadLetter | undefined> {
  const found = await findJob(producer, id);
  if (!found) return undefined;
  const { job, shard } = found;
  const [state, { entries }] = await Promise.all([job.getState(), shard.ledger.load(id)]);
  let messages: unknown[] | null;
  try {
    messages = parseBatchJob(job.data).messages;
  } catch {
    messages = null;
  }
  const campaign = (job.data as { campaign?: unknown } | undefined)?.campaign;
  return {
    id,
    state,
    failedAt: job.finishedOn ?? null,
    failedReason: job.failedReason ?? '',
    campaign: typeof campaign === 'string' && campaign ? campaign : null,
    attempts: job.attemptsMade,
    unsettled: (messages ?? []).filter((_, index) => !FINAL_STATES.has(entries.get(index)?.state ?? 't'))
      .length,
    messages:
      messages?.map((message, index) => {
        const entry = entries.get(index);
        return {
          index,
          ...messageHeaders(message),
          outcome: OUTCOMES[entry?.state ?? 't'] ?? 'pending',
          reason: entry?.reason ?? null,
          code: entry?.code ?? null,
          detail: entry?.detail ?? null,
        };
      }) ?? null,
  };
}

/**
 * Deletes a failed job and its delivery ledger. Returns false when there is no such job; throws
 * MailError ENOTFAILED for a job in another state (a job being sent must not vanish under its worker).
 */
export async function deleteDeadLetter(producer: Producer, id: string): Promise<boolean> {
  const found = await findJob(producer, id);
  if (!found) return false;
  const { job, shard } = found;
  const state = await job.getState();
  if (state !== 'failed') {
    throw new MailError(`job ${id} is not failed (it is ${state}): only dead letters can be deleted`, {
      code: 'ENOTFAILED',
    });
  }
  await job.remove();
  await producer.redis.del(shard.keys.ledger(id));
  return true;
}

/** What a suppression search found. */
export interface SuppressionSearch {
  entries: Suppression[];
  /** Addresses on the list in all. */
  total: number;
  /** True when the search stopped early: `limit` results, or `scanLimit` entries looked at. */
  capped: boolean;
  /** Entries looked at. */
  scanned: number;
}

/** Escapes the glob characters of Redis's MATCH (`*?[]\`). */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/**
 * Searches the suppression list for addresses containing `query` (case-insensitive: the list keys
 * are lowercase), with HSCAN MATCH `*query*` so Redis filters: at most `limit` results, looking at
 * about `scanLimit` entries at most. An exact address is also looked up directly, so it is found
 * however long the list is. An empty query lists the first `limit` entries.
 */
export async function searchSuppression(
  list: SuppressionList,
  redis: Producer['redis'],
  key: string,
  query: string,
  options: { limit: number; scanLimit: number },
): Promise<SuppressionSearch> {
  const needle = query.trim().toLowerCase();
  const found = new Map<string, Suppression>();
  if (needle.includes('@')) {
    try {
      const exact = await list.get(needle);
      if (exact) found.set(exact.address, exact);
    } catch {
      // Not a whole address: the scan below finds it as part of addresses.
    }
  }
  const pattern = needle ? `*${escapeGlob(needle)}*` : '*';
  const batch = 1000;
  let cursor = '0';
  let scanned = 0;
  let capped = false;
  do {
    const [next, flat] = await redis.hscan(key, cursor, 'MATCH', pattern, 'COUNT', batch);
    cursor = next;
    scanned += batch;
    const addresses: string[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const address = flat[i] as string;
      if (!found.has(address)) addresses.push(address);
    }
    if (addresses.length > 0) {
      for (const entry of await list.lookup(addresses)) {
        if (entry && found.size < options.limit) found.set(entry.address, entry);
      }
    }
    if (found.size >= options.limit || (cursor !== '0' && scanned >= options.scanLimit)) {
      capped = cursor !== '0' || found.size >= options.limit;
      break;
    }
  } while (cursor !== '0');
  const total = await list.count();
  const entries = [...found.values()].sort((a, b) => a.address.localeCompare(b.address));
  return { entries, total, capped, scanned: Math.min(scanned, total) };
}
