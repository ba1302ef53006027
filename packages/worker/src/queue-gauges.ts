/** What the /metrics backlog gauges show: a queue's batches and messages by state, and its running campaigns' counters, read at scrape time. */
import {
  CAMPAIGN_FIELDS,
  CAMPAIGN_STATES,
  campaignShardsOf,
  type QueueLayout,
  type RedisClient,
  readPerShard,
} from '@mailroom/core/protocol';

/** The job states the backlog gauges report (BullMQ's `prioritized` counts as waiting). */
export const BACKLOG_STATES = ['waiting', 'delayed', 'active', 'failed'] as const;

/** A state of {@link BACKLOG_STATES}. */
export type BacklogState = (typeof BACKLOG_STATES)[number];

/** Batches of one state and the messages they hold. */
export interface StateBacklog {
  batches: number;
  /**
   * Messages of those batches (each batch's `count`, a whole batch even when part of it was already
   * delivered); exact up to `sampleJobs` batches, estimated past it (see {@link readQueueBacklog}).
   */
  messages: number;
}

/** A running campaign's counters. */
export interface CampaignBacklog {
  id: string;
  sent: number;
  failed: number;
  /** Not settled yet, recipients not read yet included (as campaignStatus's `remaining`). */
  pending: number;
}

/** One reading of a queue's backlog. */
export interface QueueBacklog {
  states: Record<BacklogState, StateBacklog>;
  /** Campaigns whose stored state is `running` and that are not completed yet. */
  campaigns: CampaignBacklog[];
}

/**
 * Per job list, in the order of its KEYS: the number of jobs, how many were read, and the messages
 * of those read. Reads the `count` field of the first ARGV[2] jobs of each list from their data (JSON
 * in the job hash, `<base>:<id>`, field `data`) with a pattern match instead of a JSON decode: the
 * packed messages before it are base64, which holds no quote. A job without a count (hand-made)
 * counts as one message. One round trip, and at most 5 x ARGV[2] small reads inside Redis, however
 * long the lists are.
 *
 * KEYS: wait (list), active (list), prioritized, delayed, failed (sorted sets). ARGV: base, jobs to
 * read per list (at least 1).
 */
const BACKLOG = `
local base, cap = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local jobs, ids
  if i <= 2 then
    jobs = redis.call('LLEN', KEYS[i])
    ids = redis.call('LRANGE', KEYS[i], 0, cap - 1)
  else
    jobs = redis.call('ZCARD', KEYS[i])
    ids = redis.call('ZRANGE', KEYS[i], 0, cap - 1)
  end
  local read, messages = 0, 0
  for _, id in ipairs(ids) do
    local data = redis.call('HGET', base .. ':' .. id, 'data')
    if data then
      read = read + 1
      messages = messages + (tonumber(string.match(data, '"count":(%d+)')) or 1)
    end
  end
  table.insert(out, jobs)
  table.insert(out, read)
  table.insert(out, messages)
end
return out
`;

type BacklogRedis = RedisClient & {
  mailroomBacklog(...keysAndArgs: (string | number)[]): Promise<number[]>;
};

// The order of BACKLOG's KEYS, and the state each list counts in.
const LISTS = [
  ['wait', 'waiting'],
  ['active', 'active'],
  ['prioritized', 'waiting'],
  ['delayed', 'delayed'],
  ['failed', 'failed'],
] as const;

const CAMPAIGN_COUNTERS = [
  CAMPAIGN_FIELDS.state,
  CAMPAIGN_FIELDS.total,
  CAMPAIGN_FIELDS.sent,
  CAMPAIGN_FIELDS.failed,
  CAMPAIGN_FIELDS.cancelled,
  CAMPAIGN_FIELDS.enqueueFinished,
  CAMPAIGN_FIELDS.expectedTotal,
  CAMPAIGN_FIELDS.duplicates,
  CAMPAIGN_FIELDS.suppressed,
] as const;

/** Messages of `jobs` batches from `read` of them holding `messages`: exact when all were read. */
export function estimateMessages(jobs: number, read: number, messages: number): number {
  if (read >= jobs) return messages;
  if (read === 0) return jobs;
  return Math.round((messages / read) * jobs);
}

/**
 * Reads the queue's batches and messages per state and its running campaigns' counters: two round
 * trips. A scrape stays cheap on a backlog of millions: job counts are LLEN/ZCARD; messages are the
 * `count` of at most `sampleJobs` batches per list, the rest estimated at their average (batches of a
 * queue are mostly the producer's batchSize); campaigns are one HMGET each of the queue's campaigns
 * set, whose ids of expired campaign records (30 days) are removed as they are met. Reading a batch's
 * `count` copies its whole payload inside Redis (about 100 KB for 50 newsletter messages), so few
 * are read: a scrape stays within a few milliseconds of Redis time. Rejects with the Redis error.
 */
export async function readQueueBacklog(
  redis: RedisClient,
  layout: QueueLayout,
  options: { sampleJobs: number },
): Promise<QueueBacklog> {
  const scripted = redis as BacklogRedis;
  if (!('mailroomBacklog' in scripted))
    redis.defineCommand('mailroomBacklog', { numberOfKeys: 5, lua: BACKLOG });
  const sample = Math.max(1, Math.floor(options.sampleJobs / layout.shards.length));
  const [perShard, ids] = await Promise.all([
    Promise.all(
      layout.shards.map(({ keys }) =>
        scripted.mailroomBacklog(...LISTS.map(([list]) => keys.jobSet(list)), keys.base, sample),
      ),
    ),
    redis.smembers(layout.home.keys.campaigns),
  ]);
  const states = Object.fromEntries(
    BACKLOG_STATES.map((state) => [state, { batches: 0, messages: 0 }]),
  ) as Record<BacklogState, StateBacklog>;
  for (const replies of perShard) {
    LISTS.forEach(([, state], index) => {
      const [jobs = 0, read = 0, messages = 0] = replies.slice(index * 3, index * 3 + 3).map(Number);
      states[state].batches += jobs;
      states[state].messages += estimateMessages(jobs, read, messages);
    });
  }
  return { states, campaigns: await readRunningCampaigns(redis, layout, ids.sort()) };
}

async function readRunningCampaigns(
  redis: RedisClient,
  layout: QueueLayout,
  ids: string[],
): Promise<CampaignBacklog[]> {
  if (ids.length === 0) return [];
  // One pipeline per shard: a cluster pipeline holds keys of one node only.
  const replies = await readPerShard(
    await campaignShardsOf(redis, layout, ids),
    async ({ keys }, positions) => {
      const pipeline = redis.pipeline();
      for (const position of positions)
        pipeline.hmget(keys.campaign(ids[position] as string), ...CAMPAIGN_COUNTERS);
      return (await pipeline.exec()) ?? [];
    },
  );
  // Campaigns whose record expired (30 days) leave the set, so that scrapes do not read them forever.
  const gone = ids.filter((_, index) => {
    const fields = replies[index]?.[1];
    return Array.isArray(fields) && fields[0] === null;
  });
  if (gone.length > 0) {
    await redis.srem(layout.home.keys.campaigns, ...gone);
    await redis.hdel(layout.home.keys.campaignShards, ...gone);
  }
  return ids.flatMap((id, index) => {
    const [error, fields] = replies[index] ?? [null, undefined];
    if (error || !Array.isArray(fields)) return [];
    const [state, total, sent, failed, cancelled, enqueueFinished, expectedTotal, duplicates, suppressed] = (
      fields as (string | null)[]
    ).map((value) => (value === null ? undefined : value));
    if (state !== CAMPAIGN_STATES.running) return [];
    const number = (value: string | undefined) => Number(value ?? 0);
    const finishedReading = enqueueFinished === '1';
    // As campaignStatus's `remaining`: recipients not read yet count (the expected total counts every
    // line, skipped ones too).
    const unread =
      !finishedReading && expectedTotal !== undefined
        ? Math.max(0, number(expectedTotal) - number(total) - number(duplicates) - number(suppressed))
        : 0;
    const pending = Math.max(0, number(total) - number(sent) - number(failed) - number(cancelled)) + unread;
    // Completed: every recipient read and settled. No longer running, so no longer reported.
    if (finishedReading && pending === 0) return [];
    return [{ id, sent: number(sent), failed: number(failed), pending }];
  });
}
