/** The campaign record: the field names and states of a campaign's Redis hash, and its failure and invalid-row records. */
import type { FailureReason } from '../classify.js';

/**
 * The fields of a campaign's hash (`keys.campaign(id)`): the one place their names are written. The
 * producer's campaign code, the worker's ledger and the Lua scripts (which get them interpolated) all
 * use these.
 */
export const CAMPAIGN_FIELDS = {
  /** Stored state, one of {@link CAMPAIGN_STATES}. */
  state: 'state',
  /** Human name shown by status. */
  name: 'name',
  /** Epoch ms of the first start. */
  startedAt: 'startedAt',
  /** Expected number of recipients, for the ETA while they are being read. */
  expectedTotal: 'expectedTotal',
  /** `1` once reading the recipients stopped (for any reason), `0` while it goes on. */
  enqueueFinished: 'enqueueFinished',
  /** Why reading stopped: `done`, `cancelled`, `aborted` or `error`. */
  enqueueStoppedBy: 'enqueueStoppedBy',
  /** The error that stopped reading the recipients, or why it was aborted (`interrupted by SIGINT`), on one line. */
  enqueueError: 'enqueueError',
  /** Distinct recipients counted (enqueued + invalid). */
  total: 'total',
  /** Messages enqueued. */
  queued: 'queued',
  /** Messages delivered (counted by the worker's ledger, once per message). */
  sent: 'sent',
  /** Messages failed for good, invalid recipients included. */
  failed: 'failed',
  /** Messages cancelled with the campaign before they were sent. */
  cancelled: 'cancelled',
  /** Recipients skipped because they were seen before. */
  duplicates: 'duplicates',
  /** Recipients skipped because their address is on the queue's suppression list. */
  suppressed: 'suppressed',
  /** Epoch ms of the cancel. */
  cancelledAt: 'cancelledAt',
  /** Epoch ms before which the campaign's batches are not sent (a scheduled campaign), if set. */
  sendAt: 'sendAt',
  /** Epoch ms of the last message the worker counted (sent, failed or cancelled): a completed campaign's finish time. */
  lastSettledAt: 'lastSettledAt',
} as const;

/** A field of a campaign's hash. */
export type CampaignField = (typeof CAMPAIGN_FIELDS)[keyof typeof CAMPAIGN_FIELDS];

/** The states stored in a campaign's `state` field. */
export const CAMPAIGN_STATES = {
  running: 'running',
  /** Workers put its batches back and look again later; nothing is sent. */
  paused: 'paused',
  /** Nothing more is enqueued or sent; unsent messages are counted as cancelled. */
  cancelled: 'cancelled',
} as const;

/** A state stored in a campaign's `state` field. */
export type StoredCampaignState = (typeof CAMPAIGN_STATES)[keyof typeof CAMPAIGN_STATES];

/**
 * The failure reason under which invalid recipients (messages that could not be built) are counted
 * in a campaign's failures hash (`keys.campaignFailures(id)`, reason → count).
 */
export const INVALID_REASON = 'invalid' satisfies FailureReason;

/** Invalid recipients kept with their reasons per campaign (`keys.campaignInvalid(id)`); beyond, they are only counted. */
export const INVALID_ROWS_KEPT = 100;
