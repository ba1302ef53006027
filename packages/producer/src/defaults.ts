/** Every default of the producer, in one place; those the worker shares come from the queue protocol (@mailroom/core/protocol). */
import { protocolDefaults, SECOND } from '@mailroom/core/protocol';

/** Every default of the producer (ProducerOptions documents each). */
export const producerDefaults = {
  /** Queue name when neither the option nor MAILROOM_QUEUE gives one: the protocol's, shared with the worker. */
  queue: protocolDefaults.queue,
  /** Redis key prefix when neither the option nor MAILROOM_PREFIX gives one: the protocol's. */
  prefix: protocolDefaults.prefix,
  /** Messages per batch job. */
  batchSize: 50,
  /** A batch is closed early once its messages reach this many bytes of wire form (the protocol's 4 MiB). */
  maxBatchBytes: protocolDefaults.maxBatchBytes,
  /** Largest accepted message, in bytes of its wire form (the protocol's 10 MiB). */
  maxMessageBytes: protocolDefaults.maxMessageBytes,
  /** How long an idempotency key blocks a repeat enqueue, even after its jobs completed (24 h). */
  idempotencyTtl: protocolDefaults.idempotencyTtl,
  /** How long enqueue waits for Redis before failing (fail fast, no offline buffering). */
  connectTimeout: 1 * SECOND,
  /** Failed jobs (the dead letters) are kept this long (7 days)... */
  keepFailedAge: protocolDefaults.keepFailedAge,
  /** ...and at most this many of them (10,000). */
  keepFailedCount: protocolDefaults.keepFailedCount,
  /**
   * An enqueue looks at the queue's epoch marker (has Redis lost its data?) at most this often; the
   * first enqueue and every campaign start always look (EpochWatch).
   */
  epochCheckInterval: 5 * SECOND,
} satisfies Record<string, string | number>;
