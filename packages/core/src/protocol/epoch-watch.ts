/** EpochWatch: how a running process notices that Redis lost its queue's data, and what it records then. */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { coerceError } from '../errors.js';
import {
  type CampaignProgress,
  type DataLoss,
  describeProgress,
  type EpochMarker,
  type KnownJobCounts,
  LOST_CAMPAIGN_RETENTION,
  type LostCampaign,
  parseEpochMarker,
  withoutUndefined,
} from './epoch-marker.js';
import type { QueueKeys } from './keys.js';
import type { RedisClient } from './redis.js';
import { registerScripts, type ScriptedRedis } from './scripts.js';

/** The logging EpochWatch needs: pino's `logger.error(object, message)`. */
export interface EpochLogger {
  error(object: object, message: string): void;
}

function pairs(flat: string[]): Record<string, string> {
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) record[flat[i] as string] = flat[i + 1] as string;
  return record;
}

/**
 * When the Redis server started, if it surely started after `since` (epoch ms): INFO's uptime is in
 * whole seconds, so only a start more than a second after `since` is sure. Undefined otherwise, and
 * when INFO is not allowed.
 */
async function redisStartedAfter(redis: RedisClient, since: number): Promise<number | undefined> {
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

/** Options of {@link EpochWatch}. */
export interface EpochWatchOptions {
  /** The queue (for logs and errors). */
  queue: string;
  /** Where a loss is reported (at error level, once per loss): a pino logger does. */
  logger: EpochLogger;
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
 * new marker for the producer's startCampaign and campaignStatus to find. Nothing remembers across a
 * restart of every process together with Redis: that is what Redis persistence is for.
 */
export class EpochWatch {
  readonly #redis: ScriptedRedis;
  readonly #keys: QueueKeys;
  readonly #options: EpochWatchOptions;
  #marker: EpochMarker | undefined;
  /** When the remembered marker was last seen (read issued at this time). */
  #seenAt = 0;
  #checkedAt = 0;
  readonly #campaigns = new Map<string, CampaignProgress>();
  readonly #losses: DataLoss[] = [];
  #checking: Promise<void> | undefined;

  constructor(redis: RedisClient, keys: QueueKeys, options: EpochWatchOptions) {
    this.#redis = registerScripts(redis);
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
