export { progressLine, statusReport, type WatchOptions, watchCampaign } from './cli/progress.js';
export { parseDuration, readWorkerEnvironment, type WorkerEnvironment } from './config.js';
export { ConnectionPool, type ConnectionPoolOptions } from './connection-pool.js';
export { workerDefaults } from './defaults.js';
export {
  type DeliverBatchInput,
  type DeliverBatchResult,
  deliverBatch,
  type PendingMessage,
  type StopReason,
} from './deliver-batch.js';
export { type HealthSource, type MetricsServer, startMetricsServer } from './http.js';
export {
  decodeEntry,
  encodeEntry,
  FINAL_STATES,
  Ledger,
  type LedgerEntry,
  type LedgerSnapshot,
  type LedgerState,
} from './ledger.js';
export { PrometheusMetrics, type WorkerMetrics } from './metrics.js';
export { parseRateLimit, type RateLimit, RateLimiter, sleep } from './rate-limit.js';
export {
  checkRedisDurability,
  type RedisDurabilityProblem,
  type RedisDurabilityReport,
  type RedisDurabilitySettings,
  warnAboutRedisDurability,
} from './redis-checks.js';
export { exhaust, settle, shortDetail, truncateRecipients } from './settle.js';
export { createWorker, type MailWorker, retryDelay, type WorkerOptions } from './worker.js';
