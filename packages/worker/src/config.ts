/** The worker's settings: MAILROOM_* from the core settings over workerDefaults, and createWorker's options over both. */
import { ConfigError, parseRateLimit, type RateLimit, readSettings, validateQueueName } from '@mailroom/core';
import { describeRedis, type RedisInput, redisInputFrom } from '@mailroom/core/protocol';
import { workerDefaults } from './defaults.js';
import type { WorkerOptions } from './worker.js';

/** Worker settings read from the environment (MAILROOM_*, REDIS_URL), defaults applied, before flags or options override them. */
export interface WorkerEnvironment {
  /** REDIS_CLUSTER_NODES when set, else REDIS_URL. */
  redis: RedisInput;
  /** Where {@link WorkerEnvironment.redis} points, without credentials. */
  redisLabel: string;
  /** MAILROOM_SHARDS. */
  shards: number;
  queue: string;
  prefix: string;
  concurrency: number;
  rateLimit: RateLimit | undefined;
  attempts: number;
  backoffDelay: number;
  shutdownTimeout: number;
  lockDuration: number;
  stalledInterval: number;
  maxStalledCount: number;
  metricsPort: number | undefined;
  connectionIdleTimeout: number;
  maxUnpackedBytes: number;
  /** MAILROOM_SMTP_TIMEOUT, ms: the SMTP timeout when EMAIL_TIMEOUT is not set. */
  smtpTimeout: number;
}

/** The Redis of the settings (REDIS_CLUSTER_NODES over REDIS_URL), its description and MAILROOM_SHARDS. */
export function redisOf(settings: ReturnType<typeof readSettings>): {
  redis: RedisInput;
  redisLabel: string;
  shards: number;
} {
  const redis = redisInputFrom(settings.REDIS_URL, settings.REDIS_CLUSTER_NODES);
  return { redis, redisLabel: describeRedis(redis), shards: settings.MAILROOM_SHARDS };
}

/**
 * The worker's settings: each MAILROOM_* setting that is set, else its workerDefaults value, and
 * REDIS_URL. Read through the core settings, so the environment and configure() count the same way
 * and a bad value is a ConfigError in the user's words (`MAILROOM_CONCURRENCY="0" must be a positive
 * integer`). `env` defaults to the process environment; a command given its own passes that.
 */
export function readWorkerEnvironment(env: NodeJS.ProcessEnv = process.env): WorkerEnvironment {
  const settings = readSettings(env);
  return {
    ...redisOf(settings),
    queue: settings.MAILROOM_QUEUE,
    prefix: settings.MAILROOM_PREFIX,
    concurrency: settings.MAILROOM_CONCURRENCY ?? workerDefaults.concurrency,
    rateLimit: settings.MAILROOM_RATE_LIMIT ?? undefined,
    attempts: settings.MAILROOM_ATTEMPTS ?? workerDefaults.attempts,
    backoffDelay: settings.MAILROOM_BACKOFF ?? workerDefaults.backoffDelay,
    shutdownTimeout: settings.MAILROOM_SHUTDOWN_TIMEOUT ?? workerDefaults.shutdownTimeout,
    lockDuration: settings.MAILROOM_LOCK_DURATION ?? workerDefaults.lockDuration,
    stalledInterval: settings.MAILROOM_STALLED_INTERVAL ?? workerDefaults.stalledInterval,
    maxStalledCount: settings.MAILROOM_MAX_STALLED_COUNT ?? workerDefaults.maxStalledCount,
    metricsPort: settings.MAILROOM_METRICS_PORT ?? undefined,
    connectionIdleTimeout: settings.MAILROOM_CONNECTION_IDLE ?? workerDefaults.connectionIdleTimeout,
    maxUnpackedBytes: settings.MAILROOM_MAX_UNPACKED_BYTES,
    smtpTimeout: settings.MAILROOM_SMTP_TIMEOUT ?? workerDefaults.smtpTimeout,
  };
}

/** The createWorker options whose defaults come from the settings (WorkerOptions documents each). */
export type SettingsBackedOptions = Pick<
  WorkerOptions,
  | 'queue'
  | 'prefix'
  | 'concurrency'
  | 'rateLimit'
  | 'attempts'
  | 'backoff'
  | 'shutdownTimeout'
  | 'lockDuration'
  | 'stalledInterval'
  | 'maxStalledCount'
  | 'maxReconnects'
  | 'connectionIdleTimeout'
  | 'maxMessagesPerConnection'
  | 'maxUnpackedBytes'
  | 'smtpTimeout'
>;

/** What {@link resolveWorkerOptions} returns: every option with its value in effect. */
export interface ResolvedWorkerOptions {
  queue: string;
  prefix: string;
  concurrency: number;
  rateLimit: RateLimit | undefined;
  attempts: number;
  backoffDelay: number;
  backoffMaxDelay: number;
  shutdownTimeout: number;
  lockDuration: number;
  stalledInterval: number;
  maxStalledCount: number;
  maxReconnects: number;
  connectionIdleTimeout: number;
  maxMessagesPerConnection: number;
  maxUnpackedBytes: number;
  smtpTimeout: number | null;
}

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0)
    throw new ConfigError(`${name} must be a positive number (got ${value})`);
  return value;
}

/**
 * createWorker's options in effect: each option given, else its MAILROOM_* setting
 * ({@link readWorkerEnvironment}: environment or configure()), else its workerDefaults value; the
 * same settings, read the same way, as createProducer's queue and prefix. Throws ConfigError for a
 * bad setting (naming it) or option (`concurrency must be a positive number (got 0)`), before
 * anything connects.
 */
export function resolveWorkerOptions(
  options: SettingsBackedOptions,
  environment: WorkerEnvironment = readWorkerEnvironment(),
): ResolvedWorkerOptions {
  return {
    queue: validateQueueName(options.queue ?? environment.queue),
    prefix: options.prefix ?? environment.prefix,
    concurrency: Math.floor(positive(options.concurrency ?? environment.concurrency, 'concurrency')),
    rateLimit:
      options.rateLimit === undefined
        ? environment.rateLimit
        : options.rateLimit === null
          ? undefined
          : parseRateLimit(options.rateLimit),
    attempts: Math.floor(positive(options.attempts ?? environment.attempts, 'attempts')),
    backoffDelay: positive(options.backoff?.delay ?? environment.backoffDelay, 'backoff.delay'),
    backoffMaxDelay: positive(
      options.backoff?.maxDelay ?? workerDefaults.backoffMaxDelay,
      'backoff.maxDelay',
    ),
    shutdownTimeout: positive(options.shutdownTimeout ?? environment.shutdownTimeout, 'shutdownTimeout'),
    lockDuration: options.lockDuration ?? environment.lockDuration,
    stalledInterval: options.stalledInterval ?? environment.stalledInterval,
    maxStalledCount: options.maxStalledCount ?? environment.maxStalledCount,
    maxReconnects: Math.max(0, Math.floor(options.maxReconnects ?? workerDefaults.maxReconnects)),
    connectionIdleTimeout: Math.max(0, options.connectionIdleTimeout ?? environment.connectionIdleTimeout),
    maxMessagesPerConnection: Math.max(
      1,
      options.maxMessagesPerConnection ?? workerDefaults.maxMessagesPerConnection,
    ),
    maxUnpackedBytes: Math.floor(
      positive(options.maxUnpackedBytes ?? environment.maxUnpackedBytes, 'maxUnpackedBytes'),
    ),
    smtpTimeout:
      options.smtpTimeout === null
        ? null
        : positive(options.smtpTimeout ?? environment.smtpTimeout, 'smtpTimeout'),
  };
}
