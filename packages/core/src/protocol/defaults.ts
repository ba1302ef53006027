/** The defaults producer and worker must agree on: time units, queue name and prefix, size limits, TTLs. */

/** One second, in milliseconds: durations are written `30 * SECOND`. */
export const SECOND = 1000;
/** One minute, in milliseconds. */
export const MINUTE = 60 * SECOND;
/** One hour, in milliseconds. */
export const HOUR = 60 * MINUTE;
/** One day, in milliseconds. */
export const DAY = 24 * HOUR;

const MiB = 1024 * 1024;

/**
 * Most messages one batch job may hold (the producer's batchSize can go up to it). A worker refuses a
 * batch of more: it records each message that fails to decode, so a few bytes of deflated
 * `[0,0,0,...]` would otherwise cost millions of ledger writes and log lines.
 */
export const MAX_BATCH_MESSAGES = 1000;
const maxBatchBytes = 4 * MiB;
const maxMessageBytes = 10 * MiB;

/**
 * UTF-8 bytes one UTF-16 unit of a JSON string can take: 3 for most non-ASCII characters, 6 for a
 * control character or lone surrogate, which JSON.stringify escapes as `\u0001`.
 */
const MAX_JSON_BYTES_PER_UNIT = 6;

/**
 * The most bytes a batch written by a producer with these limits (default: the protocol's) inflates
 * to, the cap the worker puts on what it inflates (parseBatchJob). The producer closes a batch once
 * its messages reach `maxBatchBytes` counted in UTF-16 units of JSON, not bytes (checkMessage's cheap
 * estimate), so a batch of several messages may hold up to 6 bytes per unit counted; a message alone
 * may be up to `maxMessageBytes` real bytes. The 2 bytes are the array's brackets (each message is
 * estimated at more bytes than its comma costs). Defaults: 24 MiB + 2 bytes.
 */
export function unpackedBatchLimit(
  limits: { maxBatchBytes: number; maxMessageBytes: number } = { maxBatchBytes, maxMessageBytes },
): number {
  return Math.max(MAX_JSON_BYTES_PER_UNIT * limits.maxBatchBytes, limits.maxMessageBytes) + 2;
}

/**
 * Every default both sides of the queue rely on, in one place: the producer's and the worker's
 * defaults, the tests and the Lua scripts (which get these numbers interpolated) all read them here.
 */
export const protocolDefaults = {
  /** Queue name (MAILROOM_QUEUE). */
  queue: 'mail',
  /** Redis key prefix (MAILROOM_PREFIX); the braces are a Redis Cluster hash tag: every key of a queue lives in one slot. */
  prefix: '{mailroom}',
  /** A batch is closed early once its messages reach this many bytes of wire form (4 MiB). */
  maxBatchBytes,
  /** Largest accepted message, in bytes of its wire form, base64 for binary attachments (10 MiB). */
  maxMessageBytes,
  /**
   * Bytes a batch's packed messages may inflate to (MAILROOM_MAX_UNPACKED_BYTES): the most a producer
   * with the default limits writes, {@link unpackedBatchLimit} (24 MiB + 2 bytes). Past it a batch is
   * dead-lettered as invalid before it can take the memory (a deflate bomb, issue #9).
   */
  maxUnpackedBytes: unpackedBatchLimit(),
  /** How long an idempotency key blocks a repeat enqueue, even after its jobs completed. */
  idempotencyTtl: 24 * HOUR,
  /** Failed jobs (the dead letters) are kept this long... */
  keepFailedAge: 7 * DAY,
  /** ...and at most this many of them. */
  keepFailedCount: 10_000,
  /** Ledger of a batch in progress or dead-lettered: kept as long as failed jobs are. */
  ledgerTtl: 7 * DAY,
  /**
   * Ledger of a batch whose processing ended well: deleted once BullMQ has recorded the completion,
   * and until then kept this long (longer than a takeover takes: lock duration + stalled interval),
   * for a worker that dies between the two.
   */
  ledgerTtlAfterComplete: 2 * MINUTE,
  /**
   * A campaign's record, failures and seen-list outlive the campaign this long (status stays
   * readable, a restart stays a resume); a campaign lost with Redis's data is remembered as long.
   */
  campaignTtl: 30 * DAY,
  /** A campaign's per-second sent counters (for its rate and ETA) are kept this long. */
  campaignRateTtl: 1 * HOUR,
  /**
   * How often a worker announces itself on its queue (workers.ts); it counts as live for 3 of these
   * (15 s), so one late heartbeat on a busy machine does not make it look gone.
   */
  workerHeartbeatInterval: 5 * SECOND,
} satisfies Record<string, string | number>;
