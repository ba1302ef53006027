/**
 * Re-exports of what moved to @mailroom/core (the duration and rate limit parsers, beside the
 * settings) and @mailroom/core/protocol (the ledger record's format): import them from there; kept so
 * that code importing these names from @mailroom/worker keeps working.
 */
export { parseDuration, parseRateLimit, type RateLimit } from '@mailroom/core';
export {
  decodeEntry,
  encodeEntry,
  FINAL_STATES,
  type LedgerEntry,
  type LedgerState,
} from '@mailroom/core/protocol';
export { progressLine, statusReport, type WatchOptions, watchCampaign } from './cli/progress.js';
export {
  type ResolvedWorkerOptions,
  readWorkerEnvironment,
  resolveWorkerOptions,
  type SettingsBackedOptions,
  type WorkerEnvironment,
} from './config.js';
export { ConnectionPool, type ConnectionPoolOptions } from './connection-pool.js';
export {
  type Dashboard,
  type DashboardOptions,
  dashboardDefaults,
  startDashboard,
} from './dashboard/server.js';
export {
  type FailedJob,
  type FailedJobList,
  type FailedMessage,
  listFailed,
  type RetryProblem,
  type RetryResult,
  retryFailed,
} from './dead-letters.js';
export { workerDefaults } from './defaults.js';
export {
  type DeliverBatchInput,
  type DeliverBatchResult,
  deliverBatch,
  type PendingMessage,
  type StopReason,
} from './deliver-batch.js';
export { type HealthSource, type MetricsServer, startMetricsServer } from './http.js';
export { Ledger, type LedgerSnapshot } from './ledger.js';
export { PrometheusMetrics, type WorkerMetrics } from './metrics.js';
export { RateLimiter } from './rate-limit.js';
export {
  checkRedisDurability,
  type RedisDurabilityProblem,
  type RedisDurabilityReport,
  type RedisDurabilitySettings,
  warnAboutRedisDurability,
} from './redis-checks.js';
export { exhaust, settle, shortDetail, truncateRecipients } from './settle.js';
export {
  createUnsubscribeHandler,
  startUnsubscribeServer,
  type UnsubscribeHandler,
  type UnsubscribeHandlerOptions,
  type UnsubscribeServer,
  type UnsubscribeServerOptions,
  unsubscribeDefaults,
} from './unsubscribe-server.js';
export { createWorker, type MailWorker, retryDelay, type WorkerOptions } from './worker.js';
