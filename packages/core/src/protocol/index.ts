/** The queue protocol (`@mailroom/core/protocol`): everything the producer and the worker must agree on. */
export {
  BATCH_JOB_NAME,
  type BatchJobData,
  batchJobSchema,
  type ParsedBatchJob,
  packMessages,
  parseBatchJob,
  unpackMessages,
} from './batch-job.js';
export {
  CAMPAIGN_FIELDS,
  CAMPAIGN_STATES,
  type CampaignField,
  INVALID_REASON,
  INVALID_ROWS_KEPT,
  type StoredCampaignState,
} from './campaign-record.js';
export { type ClusterSeed, type ClusterSpec, describeCluster, parseClusterNodes } from './cluster-nodes.js';
export {
  DAY,
  HOUR,
  MAX_BATCH_MESSAGES,
  MINUTE,
  protocolDefaults,
  SECOND,
  unpackedBatchLimit,
} from './defaults.js';
export {
  type CampaignProgress,
  type DataLoss,
  DataLossError,
  describeProgress,
  EPOCH_FIELDS,
  type EpochMarker,
  type KnownJobCounts,
  LOST_CAMPAIGN_RETENTION,
  type LostCampaign,
  lostCampaign,
  lostCampaignField,
  parseEpochMarker,
  type RecordedLoss,
  readEpochMarker,
} from './epoch-marker.js';
export { type EpochLogger, EpochWatch, type EpochWatchOptions } from './epoch-watch.js';
export {
  CLAIM_ARGS_PER_ADDRESS,
  CLAIM_FIXED_ARGS,
  encodeFailedRecipient,
  type FailedRecipientRecord,
  failedRecipientSchema,
  parseFailedRecipient,
  parseRetryClaim,
} from './failed-recipients.js';
export { type BullJobSet, type QueueKeys, queueKeys } from './keys.js';
export {
  campaignShardOf,
  campaignShardsOf,
  claimLayout,
  readPerShard,
  unfinishedJobs,
} from './layout-record.js';
export {
  decodeEntry,
  encodeEntry,
  FINAL_STATES,
  LEDGER_ATTEMPT_FIELD,
  LEDGER_MESSAGE_PREFIX,
  LEDGER_STATES,
  type LedgerEntry,
  type LedgerState,
  ledgerMessageField,
  type RefusedRecipient,
} from './ledger-entry.js';
export {
  createRedis,
  describeRedis,
  type RedisClient,
  type RedisInput,
  redactRedisUrl,
  redisInputFrom,
  waitForRedis,
} from './redis.js';
export { type MailroomCommands, registerScripts, type ScriptedRedis } from './scripts.js';
export {
  checkShardCount,
  hashTag,
  MAX_SHARDS,
  type QueueLayout,
  type QueueShard,
  queueLayout,
  shardPrefix,
} from './shards.js';
export {
  normalizeSuppressedAddress,
  SOURCE_LENGTH,
  SUPPRESSION_REASONS,
  type Suppression,
  type SuppressionAddResult,
  type SuppressionInput,
  SuppressionList,
  type SuppressionReason,
} from './suppression.js';
export {
  MIN_SECRET_LENGTH,
  parseUnsubscribeSecrets,
  signUnsubscribeToken,
  UNSUBSCRIBE_TOKEN_LIFETIME,
  type UnsubscribeClaim,
  type UnsubscribeTokenFault,
  type UnsubscribeVerdict,
  unsubscribeUrl,
  verifyUnsubscribeToken,
} from './unsubscribe-token.js';
export {
  announceWorker,
  liveWorkers,
  WORKER_LIVE_INTERVALS,
  WORKER_LIVE_WINDOW,
  type WorkerInfo,
  withdrawWorker,
  workerInfoSchema,
} from './workers.js';
