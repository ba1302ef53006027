/** Time units for readable defaults. */
export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** Every default of the producer, in one place. */
export const producerDefaults = {
  /** Queue name, shared with the worker's default (MAILROOM_QUEUE). */
  queue: 'mail',
  /** Redis key prefix; the braces are a Redis Cluster hash tag, so every key lives in one slot. */
  prefix: '{mailroom}',
  /** Messages per batch job. */
  batchSize: 50,
  /** A batch is closed early once its messages reach this many bytes of wire form. */
  maxBatchBytes: 4 * 1024 * 1024,
  /** Largest accepted message, in bytes of its wire form (base64 for binary attachments). */
  maxMessageBytes: 10 * 1024 * 1024,
  /** How long an idempotency key blocks a repeat enqueue, even after its jobs completed. */
  idempotencyTtl: 24 * HOUR,
  /** How long enqueue waits for Redis before failing (fail fast, no offline buffering). */
  connectTimeout: 1 * SECOND,
  /** Failed jobs (the dead letters) are kept this long... */
  keepFailedAge: 7 * DAY,
  /** ...and at most this many of them. */
  keepFailedCount: 10_000,
  /**
   * An enqueue looks at the queue's epoch marker (has Redis lost its data?) at most this often; the
   * first enqueue and every campaign start always look (epoch.ts).
   */
  epochCheckInterval: 5 * SECOND,
} satisfies Record<string, string | number>;
