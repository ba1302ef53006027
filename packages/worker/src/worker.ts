import {
  type BackendClass,
  type BaseEmailBackend,
  ConfigError,
  type ConnectionOptions,
  classifyDeliveryError,
  coerceError,
  decodeWire,
  getConnection,
  settings,
  ValidationError,
} from '@mailroom/core';
import {
  BATCH_JOB_NAME,
  type BatchJobData,
  createRedis,
  parseBatchJob,
  queueKeys,
  type RedisInput,
} from '@mailroom/producer';
import { DelayedError, type Job, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { type Logger, pino } from 'pino';
import { ConnectionPool } from './connection-pool.js';
import { workerDefaults } from './defaults.js';
import { deliverBatch, type PendingMessage } from './deliver-batch.js';
import { FINAL_STATES, Ledger, type LedgerEntry } from './ledger.js';
import { PrometheusMetrics, type WorkerMetrics } from './metrics.js';
import { parseRateLimit, type RateLimit, RateLimiter } from './rate-limit.js';
import { exhaust, shortDetail } from './settle.js';

/** Options of {@link createWorker}; defaults in workerDefaults. */
export interface WorkerOptions {
  /** Redis URL, ioredis options or client. Default REDIS_URL. */
  redis?: RedisInput;
  /** Default `mail`. */
  queue?: string;
  /** Default `{mailroom}`. */
  prefix?: string;
  /**
   * The backend every batch is sent with: a registered name (`smtp`, `console`, ...), a backend
   * class, or a factory. Default EMAIL_BACKEND. Never chosen by job data.
   */
  backend?: string | BackendClass | (() => BaseEmailBackend);
  /** Options for the backend (host, port... override the EMAIL_* settings). */
  backendOptions?: ConnectionOptions;
  /** Batches (= SMTP connections) in flight in this process. Default 2. */
  concurrency?: number;
  /** Global rate limit across all replicas: `200/s`, `10000/h` or {max, duration}. Default none. */
  rateLimit?: string | RateLimit | null;
  /** Delivery attempts per batch, the first included. Default 5. */
  attempts?: number;
  /** Retry delays: `delay` doubles per attempt up to `maxDelay`, with jitter. Milliseconds. */
  backoff?: { delay?: number; maxDelay?: number };
  /** Milliseconds close() may take before connections are cut. Default 10 s. */
  shutdownTimeout?: number;
  /** BullMQ lock duration, ms: how soon a dead worker's batch is taken over. Default 30 s. */
  lockDuration?: number;
  /** Milliseconds between checks for batches of dead workers. Default 30 s. */
  stalledInterval?: number;
  /** Times a batch may be taken over from dead workers. Default 5. */
  maxStalledCount?: number;
  /** Reconnects per batch attempt when the connection drops. Default 2. */
  maxReconnects?: number;
  /** Milliseconds an open connection waits for the next batch (0: close after every batch). Default 5 s. */
  connectionIdleTimeout?: number;
  /** Messages after which a connection is closed instead of reused. Default 1000. */
  maxMessagesPerConnection?: number;
  /** pino logger. Default: JSON to stdout, level LOG_LEVEL or info. */
  logger?: Logger;
  /** Metrics sink. Default: a PrometheusMetrics with its own registry. */
  metrics?: WorkerMetrics;
  /** Start taking jobs at once. Default true. */
  autorun?: boolean;
}

/** A running worker. */
export interface MailWorker {
  readonly queue: string;
  readonly bullWorker: Worker<BatchJobData>;
  readonly metrics: WorkerMetrics;
  readonly logger: Logger;
  /** Resolves when the worker is connected to Redis. */
  waitUntilReady(): Promise<void>;
  /**
   * Graceful shutdown: stop taking jobs, let each in-flight message finish, record progress, put
   * unfinished batch remainders back on the queue, close connections; cut everything after
   * shutdownTimeout. Idempotent.
   */
  close(): Promise<void>;
  /** True once close() was called. */
  readonly closing: boolean;
  /** Connected to Redis, taking jobs and not shutting down (for /readyz). */
  isReady(): boolean;
}

/** Exponential backoff with "equal jitter": half the delay fixed, half random. */
export function retryDelay(attempt: number, delay: number, maxDelay: number, random = Math.random): number {
  const base = Math.min(maxDelay, delay * 2 ** Math.max(0, attempt - 1));
  return Math.round(base / 2 + random() * (base / 2));
}

function backendFactory(options: WorkerOptions): () => BaseEmailBackend {
  const backend = options.backend;
  if (typeof backend === 'function' && !/^class[\s{]/.test(Function.prototype.toString.call(backend))) {
    return backend as () => BaseEmailBackend;
  }
  const chosen = (backend as string | BackendClass | undefined) ?? settings.EMAIL_BACKEND;
  if (chosen === 'queue') {
    throw new ConfigError(
      'The worker cannot use the queue backend (it would enqueue what it takes): set EMAIL_BACKEND=smtp',
    );
  }
  // Build one now so that a bad backend name or option fails at start-up, not on the first batch.
  getConnection(chosen, options.backendOptions ?? {});
  return () => getConnection(chosen, options.backendOptions ?? {});
}

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0)
    throw new ConfigError(`${name} must be a positive number (got ${value})`);
  return value;
}

/**
 * Starts a worker on the queue: takes batch jobs, sends each batch over ONE backend connection,
 * records every message in the ledger as it settles, retries only the undelivered messages with
 * exponential backoff, and dead-letters (fails) a batch whose messages failed for good unless they
 * were sent with failSilently.
 */
export function createWorker(options: WorkerOptions = {}): MailWorker {
  const queue = options.queue ?? workerDefaults.queue;
  const prefix = options.prefix ?? workerDefaults.prefix;
  const concurrency = Math.floor(positive(options.concurrency ?? workerDefaults.concurrency, 'concurrency'));
  const attempts = Math.floor(positive(options.attempts ?? workerDefaults.attempts, 'attempts'));
  const backoffDelay = positive(options.backoff?.delay ?? workerDefaults.backoffDelay, 'backoff.delay');
  const backoffMaxDelay = positive(
    options.backoff?.maxDelay ?? workerDefaults.backoffMaxDelay,
    'backoff.maxDelay',
  );
  const shutdownTimeout = positive(
    options.shutdownTimeout ?? workerDefaults.shutdownTimeout,
    'shutdownTimeout',
  );
  const maxReconnects = Math.max(0, Math.floor(options.maxReconnects ?? workerDefaults.maxReconnects));
  const rateLimit = options.rateLimit ? parseRateLimit(options.rateLimit) : undefined;
  const makeBackend = backendFactory(options);
  const logger = options.logger ?? pino({ name: 'mailroom-worker', level: process.env.LOG_LEVEL ?? 'info' });
  const metrics = options.metrics ?? new PrometheusMetrics();
  const keys = queueKeys(prefix, queue);

  // The worker holds on (BullMQ production guide): commands wait for a reconnect instead of failing.
  // Named so that CLIENT LIST shows which worker and queue a connection belongs to.
  const { client: redis, owned } = createRedis(options.redis ?? settings.REDIS_URL, {
    maxRetriesPerRequest: null,
    connectionName: `mailroom-worker:${queue.replace(/[^\w:{}.-]/g, '_')}`,
  });
  redis.on('error', (error) => logger.warn({ err: error.message }, 'redis connection error'));
  const ledger = new Ledger(redis, keys, workerDefaults.ledgerTtl);
  const rateLimiter = rateLimit ? new RateLimiter(redis, keys.rate, rateLimit) : undefined;
  const shutdown = new AbortController();
  const connections = new ConnectionPool(makeBackend, {
    idleTimeout: Math.max(0, options.connectionIdleTimeout ?? workerDefaults.connectionIdleTimeout),
    maxMessages: Math.max(1, options.maxMessagesPerConnection ?? workerDefaults.maxMessagesPerConnection),
    maxIdle: concurrency,
    logger,
  });

  async function processJob(job: Job<BatchJobData>, token?: string): Promise<Record<string, number>> {
    const started = Date.now();
    const jobId = job.id as string;
    const finish = (outcome: Parameters<WorkerMetrics['batchFinished']>[1]) =>
      metrics.batchFinished((Date.now() - started) / 1000, outcome);
    metrics.batchesInFlight(1);
    try {
      let data: ReturnType<typeof parseBatchJob>;
      try {
        if (job.name !== BATCH_JOB_NAME)
          throw new ValidationError(`unknown job name ${JSON.stringify(job.name)}`);
        data = parseBatchJob(job.data);
      } catch (error) {
        finish('invalid');
        logger.error({ jobId, err: coerceError(error).message }, 'invalid batch payload: job failed');
        throw new UnrecoverableError(`Invalid batch payload: ${coerceError(error).message}`);
      }
      const campaign = data.campaign;
      const batch = { jobId, token, campaign };
      // A first run has an empty ledger by construction; later runs (retry, stall, re-queue) read it.
      const snapshot =
        job.attemptsStarted > 1 || job.attemptsMade > 0
          ? await ledger.load(jobId)
          : { entries: new Map<number, LedgerEntry>(), attempts: 0 };
      const entries = snapshot.entries;
      const failSilently = new Map<number, boolean>();
      const pending: PendingMessage[] = [];

      for (const [index, raw] of data.messages.entries()) {
        const known = entries.get(index);
        failSilently.set(index, Boolean((raw as { failSilently?: unknown }).failSilently));
        if (known && FINAL_STATES.has(known.state)) continue;
        try {
          const { message, failSilently: silent } = decodeWire(raw, `job.messages[${index}]`);
          failSilently.set(index, silent);
          pending.push({ index, message, entry: known, enqueuedAt: data.enqueuedAt });
        } catch (error) {
          // One malformed message fails alone; the rest of its batch goes out.
          const entry: LedgerEntry = {
            state: 'f',
            reason: 'invalid',
            detail: shortDetail(coerceError(error).message),
          };
          entries.set(index, entry);
          await ledger.record(batch, index, entry);
          metrics.messageFailed('invalid');
          logger.error({ jobId, index, err: entry.detail }, 'invalid message in batch');
        }
      }

      let { campaignState } = campaign
        ? await ledger.check({ ...batch, token: undefined })
        : { campaignState: '' };
      let stopped: string | undefined;
      let connectionError: Error | undefined;
      if (pending.length > 0 && campaignState !== 'paused' && campaignState !== 'cancelled') {
        const result = await deliverBatch({
          batch,
          messages: pending,
          backend: connections.acquire(),
          release: (backend, sent) => connections.release(backend, sent),
          ledger,
          rateLimiter,
          signal: shutdown.signal,
          maxReconnects,
          logger,
          metrics,
        });
        for (const [index, entry] of result.settled) entries.set(index, entry);
        stopped = result.stopped;
        connectionError = result.connectionError;
        if (stopped === 'paused' || stopped === 'cancelled') campaignState = stopped;
        if (stopped === 'lock-lost') {
          // Another replica took this batch over (our lock expired): it owns the rest now.
          finish('lock-lost');
          logger.warn({ jobId }, 'lock lost: another worker took the batch over; stopped sending');
          throw new Error(`Lock lost for batch ${jobId}: taken over by another worker`);
        }
      }
      // Messages not yet final: the ones to cancel, re-queue or retry.
      const remaining = data.messages
        .map((_, index) => index)
        .filter((index) => !FINAL_STATES.has(entries.get(index)?.state ?? 't'));

      if (campaignState === 'cancelled') {
        for (const index of remaining.splice(0)) {
          const entry: LedgerEntry = { state: 'c', reason: 'cancelled' };
          entries.set(index, entry);
          await ledger.record(batch, index, entry);
        }
      } else if (remaining.length > 0 && (campaignState === 'paused' || stopped === 'shutdown')) {
        // Not a failure: put the rest back without spending an attempt.
        if (campaignState === 'paused') {
          await job.moveToDelayed(Date.now() + workerDefaults.pausePoll, token);
          finish('paused');
          throw new DelayedError();
        }
        await job.moveToWait(token);
        finish('requeued');
        logger.info({ jobId, remaining: remaining.length }, 'shutdown: batch remainder back on the queue');
        throw new WaitingError();
      }

      if (remaining.length > 0) {
        const attempt = await ledger.addAttempt(jobId);
        const connectionReason = connectionError
          ? classifyDeliveryError(connectionError).reason
          : 'connection';
        const reasonOf = (index: number) => entries.get(index)?.reason ?? connectionReason;
        if (attempt < attempts) {
          const delay = retryDelay(attempt, backoffDelay, backoffMaxDelay);
          for (const index of remaining) metrics.messageRetried(reasonOf(index));
          logger.info(
            {
              jobId,
              attempt,
              of: attempts,
              remaining: remaining.length,
              retryInMs: delay,
              err: connectionError?.message,
            },
            'batch will be retried for its undelivered messages',
          );
          await job.moveToDelayed(Date.now() + delay, token);
          finish('retry');
          throw new DelayedError();
        }
        // Messages never tried in the last attempt fail for the reason the connection failed
        // (connection, timeout, auth...), as classified everywhere else.
        const fallback = {
          reason: connectionReason,
          detail: shortDetail(connectionError?.message ?? 'not delivered'),
        };
        for (const index of remaining) {
          const entry = exhaust(entries.get(index), fallback);
          entries.set(index, entry);
          await ledger.record(batch, index, entry);
          if (entry.state === 'd') metrics.messageSent(undefined);
          else metrics.messageFailed(entry.reason ?? 'connection');
        }
      }

      const counts = { delivered: 0, failed: 0, cancelled: 0, failedSilently: 0 };
      const hardFailures: string[] = [];
      entries.forEach((entry, index) => {
        if (entry.state === 'd') counts.delivered++;
        else if (entry.state === 'c') counts.cancelled++;
        else if (entry.state === 'f' || entry.state === 'x') {
          counts.failed++;
          if (failSilently.get(index)) counts.failedSilently++;
          else
            hardFailures.push(
              `[${index}] ${entry.reason ?? 'unknown'}${entry.code ? ` ${entry.code}` : ''}: ${entry.detail ?? ''}`,
            );
        }
      });
      const summary = {
        jobId,
        campaign,
        messages: data.messages.length,
        ...counts,
        durationMs: Date.now() - started,
      };
      if (hardFailures.length > 0) {
        await ledger.finish(jobId, workerDefaults.ledgerTtl);
        finish('failed');
        logger.error({ ...summary, failures: hardFailures.slice(0, 10) }, 'batch dead-lettered');
        throw new UnrecoverableError(
          `${hardFailures.length} of ${data.messages.length} messages failed: ${hardFailures.slice(0, 20).join('; ')}`,
        );
      }
      await ledger.finish(
        jobId,
        counts.failed > 0 ? workerDefaults.ledgerTtl : workerDefaults.ledgerTtlAfterComplete,
      );
      finish('completed');
      if (counts.failedSilently > 0)
        logger.warn(summary, 'batch completed; failures recorded (failSilently)');
      else logger.info(summary, 'batch completed');
      return counts;
    } finally {
      metrics.batchesInFlight(-1);
    }
  }

  const bullWorker = new Worker<BatchJobData>(queue, processJob, {
    connection: redis,
    prefix,
    concurrency,
    autorun: options.autorun ?? true,
    lockDuration: options.lockDuration ?? workerDefaults.lockDuration,
    stalledInterval: options.stalledInterval ?? workerDefaults.stalledInterval,
    maxStalledCount: options.maxStalledCount ?? workerDefaults.maxStalledCount,
  });
  bullWorker.on('error', (error) => logger.error({ err: error.message }, 'worker error'));
  // Once BullMQ has recorded a completion the batch can never run again: a clean batch's ledger has
  // done its job. One with failures (sent with failSilently) keeps it for ledgerTtl: the record of
  // what failed and why.
  bullWorker.on('completed', (job, result: Record<string, number> | undefined) => {
    if (job.id && !result?.failed) redis.unlink(keys.ledger(job.id)).catch(() => {});
  });

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing ??= (async () => {
      logger.info({ queue }, 'shutting down: no new batches, finishing the messages on the wire');
      shutdown.abort(new Error('worker shutting down'));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), shutdownTimeout);
      });
      const result = await Promise.race([bullWorker.close().then(() => 'closed' as const), timedOut]);
      clearTimeout(timer);
      if (result === 'timeout') {
        logger.warn(
          { queue, shutdownTimeout },
          'shutdown timeout: cutting connections; unfinished batches will be taken over',
        );
        await bullWorker.close(true).catch(() => {});
      }
      await connections.closeAll();
      if (owned) await (redis as Redis).quit().catch(() => redis.disconnect());
      logger.info({ queue }, 'worker stopped');
    })();
    return closing;
  }

  return {
    queue,
    bullWorker,
    metrics,
    logger,
    waitUntilReady: async () => {
      await bullWorker.waitUntilReady();
    },
    close,
    get closing() {
      return closing !== undefined;
    },
    isReady: () => closing === undefined && redis.status === 'ready' && bullWorker.isRunning(),
  };
}
