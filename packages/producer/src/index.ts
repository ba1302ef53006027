/** @mailroom/producer: enqueueing (createProducer, the queue backend) and campaigns. */

/**
 * Re-exports of the queue protocol, which lives in @mailroom/core/protocol (import it from there):
 * kept so that code importing these names from @mailroom/producer keeps working.
 */
/** The suppression list of a queue (campaigns skip it; enqueue can, with skipSuppressed). */
export {
  BATCH_JOB_NAME,
  type BatchJobData,
  batchJobSchema,
  type CampaignProgress,
  createRedis,
  DAY,
  type DataLoss,
  DataLossError,
  describeRedis,
  type EpochMarker,
  EpochWatch,
  type EpochWatchOptions,
  HOUR,
  type KnownJobCounts,
  LOST_CAMPAIGN_RETENTION,
  type LostCampaign,
  lostCampaign,
  MINUTE,
  normalizeSuppressedAddress,
  type ParsedBatchJob,
  parseBatchJob,
  parseEpochMarker,
  parseUnsubscribeSecrets,
  type QueueKeys,
  queueKeys,
  type RecordedLoss,
  type RedisInput,
  readEpochMarker,
  redactRedisUrl,
  SECOND,
  SUPPRESSION_REASONS,
  type Suppression,
  type SuppressionAddResult,
  type SuppressionInput,
  SuppressionList,
  type SuppressionReason,
  signUnsubscribeToken,
  type UnsubscribeClaim,
  type UnsubscribeTokenFault,
  type UnsubscribeVerdict,
  unsubscribeUrl,
  verifyUnsubscribeToken,
  waitForRedis,
} from '@mailroom/core/protocol';
export {
  type CampaignEnqueueProgress,
  type CampaignHandle,
  type CampaignOptions,
  type CampaignRecipient,
  type CampaignState,
  type CampaignStatus,
  type CampaignTemplate,
  type CampaignUnsubscribe,
  campaignStatus,
  cancelCampaign,
  type InvalidRow,
  listCampaigns,
  pauseCampaign,
  resumeCampaign,
  startCampaign,
} from './campaign.js';
export {
  type CampaignCheckSettings,
  type CampaignMessageOptions,
  type CampaignPreview,
  checkPlaceholders,
  type DryRunOptions,
  type DryRunSummary,
  dryRunCampaign,
  type EmptyValuePolicy,
  type PlaceholderUse,
  previewCampaign,
} from './campaign-check.js';
export { type Eta, type EtaBasis, type EtaInput, estimateEta } from './campaign-eta.js';
export {
  type CampaignFailure,
  type CampaignFailureOptions,
  campaignFailures,
  type RetryCampaignOptions,
  type RetryCampaignResult,
  retryCampaign,
} from './campaign-failures.js';
export { producerDefaults } from './defaults.js';
export {
  type CheckedMessage,
  checkMessage,
  createProducer,
  type EnqueueOptions,
  type EnqueueResult,
  isCheckedMessage,
  openInspector,
  openProducer,
  type Producer,
  type ProducerOptions,
} from './producer.js';
export { closeQueueBackends, QueueBackend, type QueueBackendOptions } from './queue-backend.js';
export {
  type CompiledTemplate,
  compileTemplate,
  type Escape,
  escapeHtml,
  type TemplateVariables,
} from './template.js';
