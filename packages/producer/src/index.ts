export {
  type CampaignEnqueueProgress,
  type CampaignHandle,
  type CampaignOptions,
  type CampaignRecipient,
  type CampaignState,
  type CampaignStatus,
  type CampaignTemplate,
  campaignStatus,
  cancelCampaign,
  type InvalidRow,
  listCampaigns,
  pauseCampaign,
  resumeCampaign,
  startCampaign,
} from './campaign.js';
export { DAY, HOUR, MINUTE, producerDefaults, SECOND } from './defaults.js';
export {
  type CampaignProgress,
  type DataLoss,
  DataLossError,
  type EpochMarker,
  EpochWatch,
  type EpochWatchOptions,
  type KnownJobCounts,
  LOST_CAMPAIGN_RETENTION,
  type LostCampaign,
  lostCampaign,
  parseEpochMarker,
  type RecordedLoss,
  readEpochMarker,
} from './epoch.js';
export {
  BATCH_JOB_NAME,
  type BatchJobData,
  batchJobSchema,
  type ParsedBatchJob,
  parseBatchJob,
} from './job.js';
export { type QueueKeys, queueKeys } from './keys.js';
export {
  checkMessage,
  createProducer,
  type EnqueueOptions,
  type EnqueueResult,
  type Producer,
  type ProducerOptions,
} from './producer.js';
export { closeQueueBackends, QueueBackend, type QueueBackendOptions } from './queue-backend.js';
export { createRedis, describeRedis, type RedisInput, redactRedisUrl, waitForRedis } from './redis.js';
export {
  type CompiledTemplate,
  compileTemplate,
  type Escape,
  escapeHtml,
  type TemplateVariables,
} from './template.js';
