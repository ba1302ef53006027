/** The queue's epoch marker: its fields, what a loss recorded on it looks like, and how to read it. */

import { z } from 'zod';
import { MailError, type MailErrorDetails } from '../errors.js';
import { protocolDefaults } from './defaults.js';
import type { QueueKeys } from './keys.js';
import type { RedisClient } from './redis.js';

/**
 * The fields of the marker hash (`keys.epoch`), for the code and the Lua scripts (epoch-scripts.ts)
 * alike. Each lost campaign has a field of its own, {@link lostCampaignField}.
 */
export const EPOCH_FIELDS = {
  /** Random id of this epoch: lives exactly as long as the queue's data. */
  id: 'id',
  /** Epoch ms the marker was created. */
  createdAt: 'createdAt',
  /** After a loss: the best estimate of when the data went (see {@link RecordedLoss}). */
  lostAt: 'lostAt',
  detectedAt: 'detectedAt',
  previousEpoch: 'previousEpoch',
  previousSeenAt: 'previousSeenAt',
  restartedAt: 'restartedAt',
  detectedBy: 'detectedBy',
  /** Prefix of the `lost:<campaign id>` fields. */
  lostCampaignPrefix: 'lost:',
} as const;

/** The marker's field recording a lost campaign: `lost:<campaign id>` (JSON of its last known progress). */
export function lostCampaignField(campaignId: string): string {
  return `${EPOCH_FIELDS.lostCampaignPrefix}${campaignId}`;
}

/**
 * A loss is remembered for a campaign as long as its record would have lived
 * (protocolDefaults.campaignTtl): after that, starting the id again would have started afresh anyway.
 */
export const LOST_CAMPAIGN_RETENTION = protocolDefaults.campaignTtl;

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
  /** Epoch ms at which this process finished noticing (see EpochWatch.lossSince). */
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

/** Drops the properties whose value is undefined (records compared and stored as JSON). */
export function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as T;
}

/** Parses the marker hash (HGETALL); undefined when there is none. Unreadable campaign entries are skipped. */
export function parseEpochMarker(hash: Record<string, string>): EpochMarker | undefined {
  const id = hash[EPOCH_FIELDS.id];
  if (!id) return undefined;
  const lostCampaigns = new Map<string, LostCampaign>();
  for (const [field, value] of Object.entries(hash)) {
    if (!field.startsWith(EPOCH_FIELDS.lostCampaignPrefix)) continue;
    let parsed: ReturnType<typeof lostCampaignSchema.safeParse>;
    try {
      parsed = lostCampaignSchema.safeParse(JSON.parse(value));
    } catch {
      continue;
    }
    if (parsed.success) {
      const campaignId = field.slice(EPOCH_FIELDS.lostCampaignPrefix.length);
      lostCampaigns.set(campaignId, withoutUndefined({ id: campaignId, ...parsed.data }));
    }
  }
  const number = (name: string) => (hash[name] === undefined ? undefined : Number(hash[name]));
  const lostAt = number(EPOCH_FIELDS.lostAt);
  return {
    id,
    createdAt: number(EPOCH_FIELDS.createdAt) ?? 0,
    loss:
      lostAt === undefined
        ? undefined
        : {
            lostAt,
            detectedAt: number(EPOCH_FIELDS.detectedAt) ?? lostAt,
            previousEpoch: hash[EPOCH_FIELDS.previousEpoch] ?? '',
            previousSeenAt: number(EPOCH_FIELDS.previousSeenAt) ?? 0,
            restartedAt: number(EPOCH_FIELDS.restartedAt),
            detectedBy: hash[EPOCH_FIELDS.detectedBy] ?? 'unknown',
          },
    lostCampaigns,
  };
}

/** Reads the queue's marker; undefined when there is none. Throws what Redis throws. */
export async function readEpochMarker(redis: RedisClient, keys: QueueKeys): Promise<EpochMarker | undefined> {
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
