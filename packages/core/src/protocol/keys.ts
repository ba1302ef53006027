/** Every Redis key name of a queue: mailroom's own and the BullMQ ones mailroom reads or writes. */

/** BullMQ's lists and sorted sets of a queue's jobs, by state (QueueGetters.commandByType). */
export type BullJobSet = 'wait' | 'active' | 'prioritized' | 'delayed' | 'failed' | 'completed';

/**
 * Names of a queue's Redis keys. All of them start with `<prefix>:<queue>:`, the same namespace as
 * BullMQ's keys for the queue, so one hash tag (`{mailroom}`) covers everything (Redis Cluster,
 * Valkey, Dragonfly) and one pattern finds everything a queue owns.
 */
export interface QueueKeys {
  /** `<prefix>:<queue>`, BullMQ's own base. */
  readonly base: string;
  /** Per-job delivery ledger: hash of message index → outcome, written as each message settles (worker). */
  ledger(jobId: string): string;
  /** Global rate-limit state (GCRA theoretical arrival time), shared by all replicas (worker). */
  readonly rate: string;
  /** Set of campaign ids known on this queue. */
  readonly campaigns: string;
  /**
   * The epoch marker (hash: random `id`, `createdAt`; after a data loss also `lostAt`,
   * `previousEpoch`... and `lost:<campaign id>` entries): lives exactly as long as the queue's data,
   * so a process that finds it gone or changed knows Redis lost its data (epoch.ts).
   */
  readonly epoch: string;
  /** Campaign state and counters (hash; fields in campaign-record.ts). */
  campaign(id: string): string;
  /** Per-second sent counters of a campaign (hash), for the rate and ETA. */
  campaignRate(id: string): string;
  /**
   * Prefix of the addresses a campaign has already enqueued: 16,384 small hashes `<prefix>:<bucket>`,
   * field = 8 bytes of the SHA-1 of the lowercased address (compact listpacks, ~12 bytes/recipient).
   */
  campaignSeen(id: string): string;
  /** Set of the chunk keys a campaign has counted, so a chunk read again is not counted twice. */
  campaignChunks(id: string): string;
  /**
   * Which recipients of each chunk were skipped as suppressed (hash: chunk key → JSON list of
   * positions in the chunk's new recipients), decided once: a chunk read again after a crash is built
   * from the same recipients as the batches already enqueued for it, whatever the list says by then.
   */
  campaignChunkSuppressed(id: string): string;
  /** Failure reasons of a campaign (hash reason → count). */
  campaignFailures(id: string): string;
  /** The first invalid recipients of a campaign with their reasons (list of JSON records). */
  campaignInvalid(id: string): string;
  /**
   * The recipients of a campaign whose message failed for good (hash: normalised address → JSON
   * failure record with the packed message, failed-recipients.ts), written by the worker's ledger in
   * the same step that counts the failure; `campaign retry` takes records out of it.
   */
  campaignFailedRecipients(id: string): string;
  /**
   * Failure records a `campaign retry` claimed and has not yet seen enqueued (hash: address → JSON
   * claim): what a retry that crashed in between resumes (failed-recipients.ts).
   */
  campaignRetrying(id: string): string;
  /**
   * The suppression list (hash: normalised address → JSON record of reason, time and source):
   * addresses nothing on this queue sends campaign mail to (suppression.ts).
   */
  readonly suppression: string;
  /**
   * The workers of this queue (sorted set: worker id → epoch ms of its last heartbeat), an index of
   * the {@link QueueKeys.worker} keys; readers drop members whose key expired (workers.ts).
   */
  readonly workers: string;
  /** One worker's announcement (JSON string, expires 3 heartbeats after the last one: workers.ts). */
  worker(id: string): string;
  /**
   * The shard count the queue was laid out with (string, home shard): what producers and workers
   * started with another MAILROOM_SHARDS check against (layout-record.ts).
   */
  readonly layout: string;
  /**
   * Which shard each campaign lives on (hash, home shard: campaign id → the shard's prefix), fixed
   * when the campaign starts, so its record stays readable whatever MAILROOM_SHARDS says later.
   */
  readonly campaignShards: string;
  /** BullMQ's lock of a job being processed (value: the worker's token). */
  jobLock(jobId: string): string;
  /** BullMQ's deduplication key (value: the job id), which carries idempotency keys. */
  deduplication(id: string): string;
  /** BullMQ's list or sorted set of the jobs in one state. */
  jobSet(state: BullJobSet): string;
}

/** Key names for a queue under a prefix. */
export function queueKeys(prefix: string, queue: string): QueueKeys {
  const base = `${prefix}:${queue}`;
  return {
    base,
    ledger: (jobId) => `${base}:ledger:${jobId}`,
    rate: `${base}:rate`,
    campaigns: `${base}:campaigns`,
    epoch: `${base}:epoch`,
    campaign: (id) => `${base}:campaign:${id}`,
    campaignRate: (id) => `${base}:campaign:${id}:rate`,
    campaignSeen: (id) => `${base}:campaign:${id}:seen`,
    campaignChunks: (id) => `${base}:campaign:${id}:chunks`,
    campaignChunkSuppressed: (id) => `${base}:campaign:${id}:chunk-suppressed`,
    campaignFailures: (id) => `${base}:campaign:${id}:failures`,
    campaignInvalid: (id) => `${base}:campaign:${id}:invalid`,
    campaignFailedRecipients: (id) => `${base}:campaign:${id}:failed`,
    campaignRetrying: (id) => `${base}:campaign:${id}:retrying`,
    suppression: `${base}:suppression`,
    workers: `${base}:workers`,
    worker: (id) => `${base}:workers:${id}`,
    layout: `${base}:layout`,
    campaignShards: `${base}:campaign-shards`,
    jobLock: (jobId) => `${base}:${jobId}:lock`,
    deduplication: (id) => `${base}:de:${id}`,
    jobSet: (state) => `${base}:${state}`,
  };
}
