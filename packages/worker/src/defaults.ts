import { DAY, MINUTE, producerDefaults, SECOND } from '@mailroom/producer';

/** Every default of the worker, in one place. */
export const workerDefaults = {
  /** Queue name (MAILROOM_QUEUE), shared with the producer's default. */
  queue: 'mail',
  /** Redis key prefix, shared with the producer's default. */
  prefix: '{mailroom}',
  /** Batches (= SMTP connections) in flight per process (MAILROOM_CONCURRENCY). */
  concurrency: 2,
  /** Delivery attempts per batch, the first one included (MAILROOM_ATTEMPTS). */
  attempts: 5,
  /** First retry delay; doubles each attempt, with jitter (MAILROOM_BACKOFF). */
  backoffDelay: 1 * SECOND,
  /** Cap of the retry delay. */
  backoffMaxDelay: 5 * MINUTE,
  /** How long shutdown may take before connections are cut (MAILROOM_SHUTDOWN_TIMEOUT). */
  shutdownTimeout: 10 * SECOND,
  /** BullMQ job lock: a killed worker's batch is picked up by another replica after about this long. */
  lockDuration: 30 * SECOND,
  /** How often replicas look for batches of dead workers. */
  stalledInterval: 30 * SECOND,
  /** A batch may be recovered from dead workers this many times (the ledger makes it safe) before it fails. */
  maxStalledCount: 5,
  /** Reconnects per batch attempt after the SMTP connection drops mid-batch. */
  maxReconnects: 2,
  /** While a campaign is paused its batches are looked at again after this delay. */
  pausePoll: 1 * SECOND,
  /** Ledger of a batch in progress or dead-lettered: kept as long as failed jobs are. */
  ledgerTtl: 7 * DAY,
  /**
   * Ledger of a batch whose processing ended well: deleted once BullMQ has recorded the completion,
   * and until then kept this long (longer than a takeover takes: lock duration + stalled interval),
   * for a worker that dies between the two.
   */
  ledgerTtlAfterComplete: 2 * MINUTE,
  /** An open SMTP connection waits this long for the next batch before it is closed (MAILROOM_CONNECTION_IDLE). */
  connectionIdleTimeout: 5 * SECOND,
  /** A connection is closed instead of reused after this many messages. */
  maxMessagesPerConnection: 1000,
  /**
   * How often a worker looks at its queue's epoch marker to notice Redis losing its data (also at
   * every reconnect and every lost lock: data-loss.ts).
   */
  dataLossCheckInterval: 5 * SECOND,
  /** How often a worker reads the queue's campaigns and job counts, to report what a data loss took. */
  dataLossSnapshotInterval: 10 * SECOND,
  /**
   * Bytes a batch's packed messages may inflate to (MAILROOM_MAX_UNPACKED_BYTES); past it the batch is
   * dead-lettered as invalid before it can take the memory (a deflate bomb, issue #9). The most a
   * default producer writes, as job.ts's unpackedBatchLimit reckons it: a batch is closed at
   * maxBatchBytes (4 MiB) counted in UTF-16 units of JSON, up to 6 bytes each (`\u0001`), and one
   * message alone may be maxMessageBytes (10 MiB); plus the array's brackets. 24 MiB + 2 bytes.
   */
  maxUnpackedBytes: Math.max(6 * producerDefaults.maxBatchBytes, producerDefaults.maxMessageBytes) + 2,
} satisfies Record<string, string | number>;
