/** A worker's watch for Redis losing its data: when to look, what to remember for the report, how to read a lost lock. */
import { coerceError } from '@mailroom/core';
import {
  CAMPAIGN_FIELDS,
  campaignShardsOf,
  EPOCH_FIELDS,
  EpochWatch,
  type KnownJobCounts,
  type QueueLayout,
  type RedisClient,
} from '@mailroom/core/protocol';
import type { Logger } from 'pino';
import { workerDefaults } from './defaults.js';
import { warnAboutRedisDurability } from './redis-checks.js';

/** Options of {@link startDataLossMonitor}. */
export interface DataLossMonitorOptions {
  queue: string;
  logger: Logger;
  /** Milliseconds between two looks at the epoch marker. Default workerDefaults.dataLossCheckInterval. */
  checkInterval?: number;
  /** Milliseconds between two readings of the campaigns and job counts. Default workerDefaults.dataLossSnapshotInterval. */
  snapshotInterval?: number;
}

/** A running {@link startDataLossMonitor}. */
export interface DataLossMonitor {
  /** The worker's view of the epoch marker. */
  readonly watch: EpochWatch;
  /**
   * Remembers the campaign of a batch taken (so a loss can name it even between snapshots). Takes the
   * raw job data's field: anything but a non-empty string is ignored.
   */
  noteCampaign(id: unknown): void;
  /**
   * For a batch whose lock vanished: looks at the marker again and, when Redis lost its data after the
   * batch started (`startedAt`, epoch ms), logs that at error level and resolves true; false means
   * an ordinary takeover by another worker. Never throws.
   */
  explainLockLoss(batch: {
    jobId: string;
    campaign: string | undefined;
    startedAt: number;
  }): Promise<boolean>;
  /** Stops the timers and listeners. Idempotent. */
  stop(): void;
}

// BullMQ's job lists (QueueGetters.commandByType): lists `wait`, `active`; sorted sets
// `prioritized`, `delayed`, `failed`.
const LISTS = ['wait', 'active'] as const;
const SORTED_SETS = ['prioritized', 'delayed', 'failed'] as const;
// The campaign fields a loss report gives, in the order the snapshot reads them.
const PROGRESS_FIELDS = [
  CAMPAIGN_FIELDS.state,
  CAMPAIGN_FIELDS.name,
  CAMPAIGN_FIELDS.total,
  CAMPAIGN_FIELDS.sent,
  CAMPAIGN_FIELDS.failed,
  CAMPAIGN_FIELDS.cancelled,
] as const;

/**
 * Watches the queue's epoch marker for a worker: creates it (and warns about Redis settings that lose
 * data: redis-checks.ts) when the connection is first ready, looks again after every reconnect (a
 * Redis restart shows up there first), at every lost lock, and every `checkInterval`. Every
 * `snapshotInterval` it reads the queue's campaigns and job counts, so that a loss is reported with
 * what it took; a snapshot is kept only if the marker was still the same after the reads (reads
 * taken after the loss would report nothing lost).
 */
export function startDataLossMonitor(
  redis: RedisClient,
  layout: QueueLayout,
  options: DataLossMonitorOptions,
): DataLossMonitor {
  const { keys } = layout.home;
  const { queue, logger } = options;
  const checkInterval = options.checkInterval ?? workerDefaults.dataLossCheckInterval;
  const snapshotInterval = options.snapshotInterval ?? workerDefaults.dataLossSnapshotInterval;
  let jobCounts: KnownJobCounts | undefined;
  const watch = new EpochWatch(redis, keys, {
    queue,
    logger,
    role: 'worker',
    minInterval: checkInterval,
    knownJobCounts: () => jobCounts,
  });
  let started = false;
  let stopped = false;
  let busy = false;
  let snapshotAt = 0;
  let snapshotDue = true;

  const warn = (what: string) => (error: unknown) => {
    if (!stopped) logger.warn({ queue, err: coerceError(error).message }, what);
  };

  async function snapshot(): Promise<void> {
    const epoch = watch.marker?.id;
    if (epoch === undefined) return;
    snapshotAt = Date.now();
    snapshotDue = false;
    // The campaigns on the home shard, whose keys share the marker's node: one pipeline. (On a
    // sharded queue, the marker watches the home shard's node; see the README's "Scaling out".)
    const all = await redis.smembers(keys.campaigns);
    const shards = await campaignShardsOf(redis, layout, all);
    const ids = all.filter((_, index) => shards[index]?.prefix === layout.home.prefix);
    const pipeline = redis.pipeline();
    for (const list of LISTS) pipeline.llen(keys.jobSet(list));
    for (const set of SORTED_SETS) pipeline.zcard(keys.jobSet(set));
    for (const id of ids) pipeline.hmget(keys.campaign(id), ...PROGRESS_FIELDS);
    // Last, on the same connection: the reads above happened before it.
    pipeline.hget(keys.epoch, EPOCH_FIELDS.id);
    const replies = ((await pipeline.exec()) ?? []).map(([error, value]) => (error ? undefined : value));
    if (replies.at(-1) !== epoch) {
      await watch.check(true);
      return;
    }
    const at = Date.now();
    const [waiting, active, prioritized, delayed, failed] = replies
      .slice(0, 5)
      .map((value) => Number(value ?? 0)) as [number, number, number, number, number];
    jobCounts = { waiting: waiting + prioritized, active, delayed, failed, at };
    ids.forEach((id, index) => {
      const fields = replies[5 + index] as (string | null)[] | undefined;
      if (!fields) return;
      const [state, name, total, sent, failedCount, cancelled] = fields;
      // A member whose record expired (30 days) is not a campaign a restart could resend.
      if (state === null || state === undefined) {
        watch.forgetCampaign(id);
        return;
      }
      watch.noteCampaign(id, {
        state,
        name: name ?? undefined,
        total: Number(total ?? 0),
        sent: Number(sent ?? 0),
        failed: Number(failedCount ?? 0),
        cancelled: Number(cancelled ?? 0),
        seenAt: at,
      });
    });
  }

  async function tick(): Promise<void> {
    if (busy || stopped || !started || redis.status !== 'ready') return;
    busy = true;
    try {
      await watch.check();
      if (snapshotDue || Date.now() - snapshotAt >= snapshotInterval) await snapshot();
    } catch (error) {
      warn('data-loss watch: could not read the epoch marker')(error);
    } finally {
      busy = false;
    }
  }

  async function startUp(): Promise<void> {
    await watch.check(true);
    await warnAboutRedisDurability(redis, logger, queue);
    await snapshot();
  }

  const onReady = () => {
    if (stopped) return;
    if (!started) {
      started = true;
      startUp().catch(warn('data-loss watch: could not create the epoch marker'));
    } else {
      // A reconnect: the first moment a Redis restarted without its data can be noticed.
      watch.check(true).catch(warn('data-loss watch: could not read the epoch marker'));
    }
  };
  redis.on('ready', onReady);
  if (redis.status === 'ready') onReady();
  const timer = setInterval(() => void tick(), checkInterval);
  timer.unref();

  return {
    watch,
    noteCampaign(id) {
      if (typeof id !== 'string' || id === '' || watch.knowsCampaign(id)) return;
      watch.noteCampaign(id);
      // A new campaign: read its progress (and the job counts) now rather than at the next interval.
      snapshotDue = true;
      void tick();
    },
    async explainLockLoss({ jobId, campaign, startedAt }) {
      try {
        await watch.check(true);
      } catch (error) {
        warn('data-loss watch: could not read the epoch marker')(error);
      }
      const loss = watch.lossSince(startedAt);
      if (!loss) return false;
      logger.error(
        { queue, jobId, campaign, dataLoss: true, lostAt: new Date(loss.recorded.lostAt).toISOString() },
        'lock lost because Redis lost its data (not a takeover): this batch, its ledger and its lock are gone; stopped sending',
      );
      return true;
    },
    stop() {
      stopped = true;
      clearInterval(timer);
      redis.off('ready', onReady);
    },
  };
}
