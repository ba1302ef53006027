/** The queue's epoch marker: how a running process notices that Redis lost its data, and what it records then. */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { coerceError, MailError, type MailErrorDetails } from '@mailroom/core';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { z } from 'zod';
import { DAY } from './defaults.js';
import type { QueueKeys } from './keys.js';

/**
 * A loss is remembered for a campaign as long as its record would have lived (campaign.ts keeps a
 * campaign 30 days): after that, starting the id again would have started afresh anyway.
 */
export const LOST_CAMPAIGN_RETENTION = 30 * DAY;

/** What a process last knew of a campaign: any of its counters, and when it read them. */
export interface CampaignProgress {
  name?: string | undefined;
  state?: string | undefined;
  total?: number | undefined;
  sent?: number | undefined;
  failed?: number | undefined;
  cancelled?: number | undefined;
  /** Epoch ms at which these counters were read; absent when only the id was known. */
  seenAt?: number | undefined;
}

// The JSON of one `lost:<campaign id>` field of the marker (written by RECORD_LOSS, read back here).
const lostCampaignSchema = z.object({
  lostAt: z.number(),
  name: z.string().optional(),
  state: z.string().optional(),
  total: z.number().optional(),
  sent: z.number().optional(),
  failed: z.number().optional(),
  cancelled: z.number().optional(),
  seenAt: z.number().optional(),
});

/** A campaign whose record went with Redis's data, and the last progress known of it. */
export interface LostCampaign extends CampaignProgress {
  id: string;
  /** Epoch ms of the loss (the Redis restart when known, else when it was noticed). */
  lostAt: number;
}

/** How a loss was recorded on the marker created after it. */
export interface RecordedLoss {
  /** Best estimate of when the data went: the Redis restart when it came after `previousSeenAt`, else `detectedAt`. */
  lostAt: number;
  /** When a process noticed. */
  detectedAt: number;
  /** Id of the marker that disappeared (or was replaced). */
  previousEpoch: string;
  /** The last time the detecting process saw the old data intact. */
  previousSeenAt: number;
  /** When Redis last started, if that was after `previousSeenAt` (a restart without its data). */
  restartedAt: number | undefined;
  /** Which process noticed first: `worker host pid 123`. */
  detectedBy: string;
}

/**
 * The marker: a hash `<prefix>:<queue>:epoch` with a random `id` that lives exactly as long as the
 * queue's data. When a process that remembers an id finds the marker gone or with another id, Redis
 * lost the data it remembered.
 */
export interface EpochMarker {
  id: string;
  createdAt: number;
  /** Set when the marker was created after a loss. */
  loss: RecordedLoss | undefined;
  /** Campaigns lost (this loss or earlier ones carried forward), by id. */
  lostCampaigns: Map<string, LostCampaign>;
}

/** One loss as a process saw it. */
export interface DataLoss {
  /** The marker now in Redis (with the loss recorded on it). */
  marker: EpochMarker;
  /** The loss as recorded (by this process or by the first one that noticed). */
  recorded: RecordedLoss;
  /** Epoch ms at which this process finished noticing (see {@link EpochWatch.lossSince}). */
  noticedAt: number;
  /** The last time this process saw the old data intact. */
  lastSeenIntactAt: number;
  /** The campaigns this process knew of, now lost. */
  campaigns: LostCampaign[];
}

/** Batch counts a worker last read before a loss (for the report of what went). */
export interface KnownJobCounts {
  waiting: number;
  active: number;
  delayed: number;
  failed: number;
  /** Epoch ms of the reading. */
  at: number;
}

/**
 * Redis lost data mailroom needed: thrown instead of resending to a lost campaign's recipients, and
 * instead of "no such campaign" for a campaign whose record was lost. Code `EDATALOST`.
 */
export class DataLossError extends MailError {
  override name = 'DataLossError';
  /** Epoch ms of the loss. */
  readonly lostAt: number;
  /** The lost campaign this is about, with its last known progress. */
  readonly campaign: LostCampaign | undefined;

  constructor(message: string, details: MailErrorDetails & { lostAt: number; campaign?: LostCampaign }) {
    super(message, { code: 'EDATALOST', ...details });
    this.lostAt = details.lostAt;
    this.campaign = details.campaign;
  }
}

// Creates the marker unless it exists; returns it (HGETALL).
// KEYS: marker; ARGV: new id, now ms.
const ENSURE = `
if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 1 then redis.call('HSET', KEYS[1], 'createdAt', ARGV[2]) end
return redis.call('HGETALL', KEYS[1])
`;

// Records a loss noticed by a process that remembered marker ARGV[1]: creates the new marker if no
// one did yet, records the loss on it once (the first process to notice wins; a marker created by a
// process that knew nothing gets it too), and merges the campaigns this process knew (for each, the
// entry with the most recent progress wins). Returns {1, HGETALL} after a loss, {0, HGETALL} when
// the marker is the remembered one after all.
// KEYS: marker; ARGV: remembered id, new id, now, lostAt, previousSeenAt, restartedAt ('' unknown),
// detectedBy, then pairs of (campaign id, JSON of the lost campaign).
const RECORD_LOSS = `
local id = redis.call('HGET', KEYS[1], 'id')
if id == ARGV[1] then return {0, redis.call('HGETALL', KEYS[1])} end
if not id then redis.call('HSET', KEYS[1], 'id', ARGV[2], 'createdAt', ARGV[3]) end
if redis.call('HEXISTS', KEYS[1], 'lostAt') == 0 then
  redis.call('HSET', KEYS[1], 'lostAt', ARGV[4], 'detectedAt', ARGV[3], 'previousEpoch', ARGV[1],
    'previousSeenAt', ARGV[5], 'detectedBy', ARGV[7])
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'restartedAt', ARGV[6]) end
end
for i = 8, #ARGV, 2 do
  local field = 'lost:' .. ARGV[i]
  local old = redis.call('HGET', KEYS[1], field)
  local keep = false
  if old then
    local ok, known = pcall(cjson.decode, old)
    local new = cjson.decode(ARGV[i + 1])
    keep = ok and type(known) == 'table' and (tonumber(known.seenAt) or 0) >= (tonumber(new.seenAt) or 0)
  end
  if not keep then redis.call('HSET', KEYS[1], field, ARGV[i + 1]) end
end
return {1, redis.call('HGETALL', KEYS[1])}
`;

type EpochRedis = Redis & {
  mailroomEnsureEpoch(key: string, id: string, now: string): Promise<string[]>;
  mailroomRecordLoss(...keysAndArgs: string[]): Promise<[number, string[]]>;
};

function epochRedis(redis: Redis): EpochRedis {
  if (!('mailroomEnsureEpoch' in redis)) {
    redis.defineCommand('mailroomEnsureEpoch', { numberOfKeys: 1, lua: ENSURE });
    redis.defineCommand('mailroomRecordLoss', { numberOfKeys: 1, lua: RECORD_LOSS });
  }
  return redis as EpochRedis;
}

function pairs(flat: string[]): Record<string, string> {
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) record[flat[i] as string] = flat[i + 1] as string;
  return record;
}

/** Parses the marker hash (HGETALL); undefined when there is none. Unreadable campaign entries are skipped. */
export function parseEpochMarker(hash: Record<string, string>): EpochMarker | undefined {
  if (!hash.id) return undefined;
  const lostCampaigns = new Map<string, LostCampaign>();
  for (const [field, value] of Object.entries(hash)) {
    if (!field.startsWith('lost:')) continue;
    let parsed: ReturnType<typeof lostCampaignSchema.safeParse>;
    try {
      parsed = lostCampaignSchema.safeParse(JSON.parse(value));
    } catch {
      continue;
    }
    if (parsed.success) {
      const id = field.slice('lost:'.length);
      lostCampaigns.set(id, withoutUndefined({ id, ...parsed.data }));
    }
  }
  const number = (name: string) => (hash[name] === undefined ? undefined : Number(hash[name]));
  const lostAt = number('lostAt');
  return {
    id: hash.id,
    createdAt: number('createdAt') ?? 0,
    loss:
      lostAt === undefined
        ? undefined
        : {
            lostAt,
            detectedAt: number('detectedAt') ?? lostAt,
            previousEpoch: hash.previousEpoch ?? '',
            previousSeenAt: number('previousSeenAt') ?? 0,
            restartedAt: number('restartedAt'),
            detectedBy: hash.detectedBy ?? 'unknown',
          },
    lostCampaigns,
  };
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as T;
}

/** Reads the queue's marker; undefined when there is none. */
export async function readEpochMarker(redis: Redis, keys: QueueKeys): Promise<EpochMarker | undefined> {
  return parseEpochMarker(await redis.hgetall(keys.epoch));
}

/**
 * The campaign's entry in the marker, if it was lost less than {@link LOST_CAMPAIGN_RETENTION} ago
 * (`now`, epoch ms).
 */
export function lostCampaign(
  marker: EpochMarker | undefined,
  id: string,
  now = Date.now(),
): LostCampaign | undefined {
  const lost = marker?.lostCampaigns.get(id);
  return lost && now - lost.lostAt < LOST_CAMPAIGN_RETENTION ? lost : undefined;
}

/**
 * When the Redis server started, if it surely started after `since` (epoch ms): INFO's uptime is in
 * whole seconds, so only a start more than a second after `since` is sure. Undefined otherwise, and
 * when INFO is not allowed.
 */
async function redisStartedAfter(redis: Redis, since: number): Promise<number | undefined> {
  try {
    const uptime = /uptime_in_seconds:(\d+)/.exec(await redis.info('server'))?.[1];
    if (uptime === undefined) return undefined;
    const now = Date.now();
    return now - (Number(uptime) + 1) * 1000 > since ? now - Number(uptime) * 1000 : undefined;
  } catch {
    return undefined;
  }
}

const iso = (ms: number) => new Date(ms).toISOString();
const count = (value: number) => value.toLocaleString('en-US');

/** `running, 955 of 2,000 sent`, or `progress unknown`: a campaign's last known progress in words. */
export function describeProgress(campaign: CampaignProgress): string {
  const parts: string[] = [];
  if (campaign.state) parts.push(campaign.state);
  if (campaign.sent !== undefined)
    parts.push(`${count(campaign.sent)}${campaign.total ? ` of ${count(campaign.total)}` : ''} sent`);
  if (campaign.failed) parts.push(`${count(campaign.failed)} failed`);
  if (campaign.cancelled) parts.push(`${count(campaign.cancelled)} cancelled`);
  if (parts.length === 0) return 'progress unknown';
  return `${parts.join(', ')}${campaign.seenAt ? ` as of ${iso(campaign.seenAt)}` : ''}`;
}

/** Options of {@link EpochWatch}. */
export interface EpochWatchOptions {
  /** The queue (for logs and errors). */
  queue: string;
  logger: Logger;
  /** What this process is, for the marker's `detectedBy` and the log: `worker`, `producer`. */
  role: string;
  /** A check without `force` is skipped when the last one is more recent than this (ms). */
  minInterval: number;
  /** The batch counts last read before a loss, for the report (workers read them). */
  knownJobCounts?: () => KnownJobCounts | undefined;
}

/**
 * What one process knows of its queue's epoch: the marker it saw last and the campaigns it knew, so
 * that when the marker vanishes (Redis restarted without persistence, was flushed, evicted the key)
 * it can say so at once, loudly, with what was lost, and record the loss (the campaigns by id) on a
 * new marker for {@link startCampaign} and {@link campaignStatus} to find. Nothing remembers across a
 * restart of every process together with Redis: that is what Redis persistence is for.
 */
export class EpochWatch {
  readonly #redis: EpochRedis;
  readonly #keys: QueueKeys;
  readonly #options: EpochWatchOptions;
  #marker: EpochMarker | undefined;
  /** When the remembered marker was last seen (read issued at this time). */
  #seenAt = 0;
  #checkedAt = 0;
  readonly #campaigns = new Map<string, CampaignProgress>();
  readonly #losses: DataLoss[] = [];
  #checking: Promise<void> | undefined;

  constructor(redis: Redis, keys: QueueKeys, options: EpochWatchOptions) {
    this.#redis = epochRedis(redis);
    this.#keys = keys;
    this.#options = options;
  }

  /** The marker seen last (undefined before the first check). */
  get marker(): EpochMarker | undefined {
    return this.#marker;
  }

  /** Remembers a campaign this process works on, with what it knows of its progress (newer wins). */
  noteCampaign(id: string, progress: CampaignProgress = {}): void {
    const known = this.#campaigns.get(id);
    if (known && (known.seenAt ?? 0) > (progress.seenAt ?? 0)) return;
    this.#campaigns.set(id, withoutUndefined({ ...known, ...progress }));
  }

  /** Whether a campaign is known (noted and not forgotten). */
  knowsCampaign(id: string): boolean {
    return this.#campaigns.has(id);
  }

  /** Forgets a campaign whose record is gone for a reason of its own (it expired). */
  forgetCampaign(id: string): void {
    this.#campaigns.delete(id);
  }

  /**
   * Looks at the marker: creates it if this process has none yet (first enqueue, worker start),
   * otherwise compares it with the one remembered and, when it is gone or different, records and logs
   * the loss (at error level, once per loss). Without `force`, does nothing when the last check was
   * less than `minInterval` ago. Concurrent calls share one look (a forced one looks again after).
   * Throws what Redis throws.
   */
  async check(force = false): Promise<void> {
    if (this.#checking) {
      await this.#checking.catch(() => {});
      if (!force) return;
    }
    if (!force && this.#marker && Date.now() - this.#checkedAt < this.#options.minInterval) return;
    const run = this.#look();
    this.#checking = run;
    try {
      await run;
    } finally {
      if (this.#checking === run) this.#checking = undefined;
    }
  }

  /** The latest loss this process noticed at or after `time` (epoch ms), if any. */
  lossSince(time: number): DataLoss | undefined {
    for (let i = this.#losses.length - 1; i >= 0; i--) {
      const loss = this.#losses[i] as DataLoss;
      if (loss.noticedAt >= time) return loss;
    }
    return undefined;
  }

  async #look(): Promise<void> {
    const remembered = this.#marker;
    const readAt = Date.now();
    if (!remembered) {
      this.#accept(
        parseEpochMarker(
          pairs(await this.#redis.mailroomEnsureEpoch(this.#keys.epoch, randomUUID(), String(readAt))),
        ),
        readAt,
      );
      return;
    }
    const current = parseEpochMarker(await this.#redis.hgetall(this.#keys.epoch));
    if (current?.id === remembered.id) {
      this.#accept(current, readAt);
      return;
    }
    // A restart after the data was last seen is when it went; otherwise (FLUSHALL, eviction, keys
    // deleted, or a restart too close to tell) the best we know is now.
    const restarted = await redisStartedAfter(this.#redis, this.#seenAt);
    const lostAt = restarted ?? readAt;
    const campaigns = this.#lostCampaigns(remembered, lostAt, readAt);
    const [changed, raw] = await this.#redis.mailroomRecordLoss(
      this.#keys.epoch,
      remembered.id,
      randomUUID(),
      String(readAt),
      String(lostAt),
      String(this.#seenAt),
      restarted === undefined ? '' : String(restarted),
      `${this.#options.role} ${hostname()} pid ${process.pid}`,
      ...campaigns.flatMap(({ id, ...rest }) => [id, JSON.stringify(rest)]),
    );
    const marker = parseEpochMarker(pairs(raw));
    // Another look of this process got there first (and logged), or the marker was there after all.
    if (this.#marker !== remembered || changed === 0 || !marker) {
      if (this.#marker === remembered) this.#accept(marker, readAt);
      return;
    }
    const loss: DataLoss = {
      marker,
      recorded: marker.loss ?? {
        lostAt,
        detectedAt: readAt,
        previousEpoch: remembered.id,
        previousSeenAt: this.#seenAt,
        restartedAt: restarted,
        detectedBy: 'unknown',
      },
      noticedAt: Date.now(),
      lastSeenIntactAt: this.#seenAt,
      campaigns,
    };
    this.#losses.push(loss);
    if (this.#losses.length > 10) this.#losses.shift();
    this.#campaigns.clear();
    this.#accept(marker, readAt);
    this.#report(loss);
  }

  #accept(marker: EpochMarker | undefined, readAt: number): void {
    this.#marker = marker;
    this.#seenAt = readAt;
    this.#checkedAt = Date.now();
  }

  /** The campaigns known before the loss, plus those an earlier loss had already taken (carried forward). */
  #lostCampaigns(remembered: EpochMarker, lostAt: number, now: number): LostCampaign[] {
    const lost = new Map<string, LostCampaign>();
    for (const [id, entry] of remembered.lostCampaigns) {
      if (now - entry.lostAt < LOST_CAMPAIGN_RETENTION) lost.set(id, entry);
    }
    for (const [id, progress] of this.#campaigns) lost.set(id, { ...progress, id, lostAt });
    return [...lost.values()];
  }

  // MUST NOT throw: it runs after the loss was recorded.
  #report(loss: DataLoss): void {
    try {
      const { recorded, campaigns } = loss;
      const jobs = this.#options.knownJobCounts?.();
      const cause =
        recorded.restartedAt !== undefined
          ? `it restarted at ${iso(recorded.restartedAt)} without it (no persistence, or its files were lost)`
          : 'it was flushed, evicted or deleted, or restarted without persistence';
      const batches = jobs
        ? `every batch of queue "${this.#options.queue}" (as of ${iso(jobs.at)}: ${count(jobs.waiting)} ` +
          `waiting, ${count(jobs.active)} in progress, ${count(jobs.delayed)} delayed for retry, ` +
          `${count(jobs.failed)} dead letters) with its delivery ledger`
        : `every waiting, delayed and failed batch of queue "${this.#options.queue}" with its delivery ledger`;
      const campaignText =
        campaigns.length === 0
          ? 'no campaign this process knew of'
          : `${campaigns.length} campaign record${campaigns.length === 1 ? '' : 's'} with progress and sent-to list ` +
            `(${campaigns
              .slice(0, 10)
              .map((campaign) => `${campaign.id}: ${describeProgress(campaign)}`)
              .join('; ')}${campaigns.length > 10 ? `; and ${campaigns.length - 10} more` : ''})`;
      this.#options.logger.error(
        {
          queue: this.#options.queue,
          dataLoss: true,
          lostAt: iso(recorded.lostAt),
          lastSeenIntactAt: iso(loss.lastSeenIntactAt),
          redisRestartedAt: recorded.restartedAt === undefined ? undefined : iso(recorded.restartedAt),
          previousEpoch: recorded.previousEpoch,
          epoch: loss.marker.id,
          detectedBy: recorded.detectedBy,
          campaigns: campaigns.map((campaign) => campaign.id),
          lostCampaigns: campaigns,
          lastKnownJobs: jobs ? { ...jobs, at: iso(jobs.at) } : undefined,
        },
        `Redis lost its data at ${iso(recorded.lostAt)}: ${cause}. Gone: ${batches} ` +
          '(those messages will not be sent), idempotency keys (a repeated enqueue sends again), ' +
          `the rate-limit state, and ${campaignText}. ` +
          'A lost campaign started again with the same id is refused (it would resend to everyone ' +
          'already delivered) unless it is started over. Give Redis AOF persistence (appendonly yes) ' +
          'so that a restart keeps the queue.',
      );
    } catch (error) {
      this.#options.logger.error(
        { queue: this.#options.queue, dataLoss: true, err: coerceError(error).message },
        'Redis lost its data',
      );
    }
  }
}
