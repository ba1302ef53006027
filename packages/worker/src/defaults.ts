/** Every default of the worker, in one place; those the producer shares come from the queue protocol (@mailroom/core/protocol). */
import { MINUTE, protocolDefaults, SECOND } from '@mailroom/core/protocol';

/**
 * Every default of the worker. A MAILROOM_* setting that is set (core settings: environment or
 * configure()) replaces its default, and createWorker's options replace both.
 */
export const workerDefaults = {
  /** Queue name (MAILROOM_QUEUE): the protocol's, shared with the producer. */
  queue: protocolDefaults.queue,
  /** Redis key prefix (MAILROOM_PREFIX): the protocol's, shared with the producer. */
  prefix: protocolDefaults.prefix,
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
  /** Ledger of a batch in progress or dead-lettered: the protocol's, as long as failed jobs are kept (7 days). */
  ledgerTtl: protocolDefaults.ledgerTtl,
  /** Ledger of a batch whose processing ended well, until it is deleted: the protocol's 2 minutes. */
  ledgerTtlAfterComplete: protocolDefaults.ledgerTtlAfterComplete,
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
   * dead-lettered as invalid before it can take the memory (a deflate bomb, issue #9). The protocol's:
   * the most a producer with the default limits writes, 24 MiB + 2 bytes (unpackedBatchLimit).
   */
  maxUnpackedBytes: protocolDefaults.maxUnpackedBytes,
  /**
   * SMTP timeout of the worker's connections when EMAIL_TIMEOUT is not set (MAILROOM_SMTP_TIMEOUT):
   * connect, greeting, and every reply, the one after DATA included. Django's default is no timeout
   * (the SMTP client then waits forever for a reply); a worker holding a batch's lock must never wait
   * that long on one socket. RFC 5321 §4.5.3.2 suggests longer waits, for relays far away; set it
   * higher for a server known to take its time.
   */
  smtpTimeout: 60 * SECOND,
  /**
   * After shutdownTimeout, how long cutting connections may take: a batch cut mid-message is put back
   * on the queue meanwhile if Redis answers. close() always ends within shutdownTimeout + this.
   */
  shutdownForceTimeout: 2 * SECOND,
  /** First pause of BullMQ's job fetch after Redis answers it with an error (MOVED, NOAUTH...); doubles per failure. */
  fetchRetryDelay: SECOND / 4,
  /** Longest such pause: BullMQ's own for a lost connection (runRetryDelay). */
  fetchRetryMaxDelay: 15 * SECOND,
  /** An error logged again within this long is counted, not written; the window doubles per summary (log-throttle.ts). */
  logRepeatInterval: 1 * SECOND,
  /** Longest window of the log throttle: a persistent error is written about once a minute. */
  logRepeatMaxInterval: 1 * MINUTE,
  /**
   * How often a worker announces itself on its queue (heartbeat.ts): the protocol's 5 s; it is listed
   * as live (mailroom stats) for 3 intervals after the last one.
   */
  heartbeatInterval: protocolDefaults.workerHeartbeatInterval,
  /**
   * Batch jobs per state whose `count` a /metrics scrape reads for mailroom_queue_messages; past it
   * the rest of the state is estimated at the average of those read (queue-gauges.ts). Reading one
   * copies its payload inside Redis (about 100 KB for 50 newsletter messages; 200 per state cost 415 ms
   * of Redis time per scrape, blocking every worker): 8 keep a scrape to a few milliseconds.
   */
  backlogSampleJobs: 8,
  /** A /metrics scrape waits this long for the queue and campaign gauges, then serves the rest without them. */
  backlogReadTimeout: 2 * SECOND,
} satisfies Record<string, string | number>;
