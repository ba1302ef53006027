import { ConfigError, settings, validateQueueName } from '@mailroom/core';
import { workerDefaults } from './defaults.js';
import { parseRateLimit, type RateLimit } from './rate-limit.js';

/** Worker settings read from the environment (MAILROOM_*), before flags override them. */
export interface WorkerEnvironment {
  redisUrl: string;
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
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `10s`, `2m`, `1h`, or a plain number of SECONDS (as Docker's stop timeout). Returns ms. */
export function parseDuration(value: string, name: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!match)
    throw new ConfigError(`Invalid ${name}=${JSON.stringify(value)}: write a duration like 10s, 500ms or 2m`);
  return Math.round(Number(match[1]) * (DURATION_UNITS[match[2] ?? 's'] as number));
}

function integer(value: string, name: string, min: number): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < min) {
    throw new ConfigError(`Invalid ${name}=${JSON.stringify(value)}: must be an integer >= ${min}`);
  }
  return number;
}

/** Reads MAILROOM_* (and REDIS_URL through the core settings) from `env`; errors name the variable. */
export function readWorkerEnvironment(env: NodeJS.ProcessEnv = process.env): WorkerEnvironment {
  const get = (name: string) => {
    const value = env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  };
  const withName = <T>(name: string, parse: (value: string) => T, fallback: T): T => {
    const value = get(name);
    if (value === undefined) return fallback;
    try {
      return parse(value);
    } catch (error) {
      if (error instanceof ConfigError && !error.message.includes(name)) {
        throw new ConfigError(`Invalid ${name}=${JSON.stringify(value)}: ${error.message}`);
      }
      throw error;
    }
  };
  return {
    redisUrl: settings.REDIS_URL,
    // The producer's rule, so that a queue one side accepts is never refused by the other.
    queue: withName('MAILROOM_QUEUE', (v) => validateQueueName(v, 'MAILROOM_QUEUE'), workerDefaults.queue),
    prefix: get('MAILROOM_PREFIX') ?? workerDefaults.prefix,
    concurrency: withName(
      'MAILROOM_CONCURRENCY',
      (v) => integer(v, 'MAILROOM_CONCURRENCY', 1),
      workerDefaults.concurrency,
    ),
    rateLimit: withName('MAILROOM_RATE_LIMIT', (v) => parseRateLimit(v), undefined as RateLimit | undefined),
    attempts: withName(
      'MAILROOM_ATTEMPTS',
      (v) => integer(v, 'MAILROOM_ATTEMPTS', 1),
      workerDefaults.attempts,
    ),
    backoffDelay: withName(
      'MAILROOM_BACKOFF',
      (v) => parseDuration(v, 'MAILROOM_BACKOFF'),
      workerDefaults.backoffDelay,
    ),
    shutdownTimeout: withName(
      'MAILROOM_SHUTDOWN_TIMEOUT',
      (v) => parseDuration(v, 'MAILROOM_SHUTDOWN_TIMEOUT'),
      workerDefaults.shutdownTimeout,
    ),
    lockDuration: withName(
      'MAILROOM_LOCK_DURATION',
      (v) => parseDuration(v, 'MAILROOM_LOCK_DURATION'),
      workerDefaults.lockDuration,
    ),
    stalledInterval: withName(
      'MAILROOM_STALLED_INTERVAL',
      (v) => parseDuration(v, 'MAILROOM_STALLED_INTERVAL'),
      workerDefaults.stalledInterval,
    ),
    maxStalledCount: withName(
      'MAILROOM_MAX_STALLED_COUNT',
      (v) => integer(v, 'MAILROOM_MAX_STALLED_COUNT', 0),
      workerDefaults.maxStalledCount,
    ),
    connectionIdleTimeout: withName(
      'MAILROOM_CONNECTION_IDLE',
      (v) => parseDuration(v, 'MAILROOM_CONNECTION_IDLE'),
      workerDefaults.connectionIdleTimeout,
    ),
    maxUnpackedBytes: withName(
      'MAILROOM_MAX_UNPACKED_BYTES',
      (v) => integer(v, 'MAILROOM_MAX_UNPACKED_BYTES', 1),
      workerDefaults.maxUnpackedBytes,
    ),
    metricsPort: withName(
      'MAILROOM_METRICS_PORT',
      (v) => integer(v, 'MAILROOM_METRICS_PORT', 0),
      undefined as number | undefined,
    ),
  };
}
