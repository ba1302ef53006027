import { randomUUID } from 'node:crypto';
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
  validateQueueName,
} from '@mailroom/core';
import {
  BATCH_JOB_NAME,
  type BatchJobData,
  createRedis,
  parseBatchJob,
  producerDefaults,
  queueKeys,
  type RedisInput,
  SECOND,
} from '@mailroom/producer';
import { DelayedError, type Job, type JobJson, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { type Logger, pino } from 'pino';
import { ConnectionPool } from './connection-pool.js';
import { startDataLossMonitor } from './data-loss.js';
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
  /** Default `mail`; checked by validateQueueName (ConfigError), as the producer's. */
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
  /**
   * Bytes a batch's packed messages may inflate to; a batch past it fails as invalid (a deflate
   * bomb). Default 24 MiB + 2 bytes: the most a producer with default limits writes (workerDefaults).
   */
  maxUnpackedBytes?: number;
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
 * Options an unreadable job is failed with, whatever its own say: no retry, and kept as long as the
 * other dead letters (the producer's keepFailed defaults). Its own may be what is unreadable, and
 * BullMQ's failure script compares some of them as numbers.
 */
const UNREADABLE_JOB_OPTIONS = {
  attempts: 1,
  removeOnFail: {
    age: Math.ceil(producerDefaults.keepFailedAge / SECOND),
    count: producerDefaults.keepFailedCount,
  },
};

/**
 * What stands in for each job hash field that the worker may find unusable ('' removes it); the
 * original is kept beside it, as `unreadable:<field>`.
 */
const STAND_INS: Record<string, string> = {
  data: '{}',
  opts: JSON.stringify(UNREADABLE_JOB_OPTIONS),
  progress: '0',
  parent: '',
  parentKey: '',
  rjk: '',
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function jsonError(text: string): string | undefined {
  try {
    JSON.parse(text);
    return undefined;
  } catch (error) {
    return coerceError(error).message;
  }
}

function optsProblem(text: string): string | undefined {
  let opts: unknown;
  try {
    opts = JSON.parse(text);
  } catch (error) {
    return `opts is not JSON (${coerceError(error).message})`;
  }
  if (!isRecord(opts)) return 'opts is not a JSON object';
  // BullMQ's finishing script compares these as numbers: a string stops it half-way, and the job is
  // neither active nor failed.
  if (opts.attempts !== undefined && !Number.isInteger(opts.attempts))
    return 'opts.attempts is not an integer';
  for (const name of ['removeOnComplete', 'removeOnFail']) {
    const keep = opts[name];
    if (keep === undefined || typeof keep === 'boolean' || typeof keep === 'number') continue;
    if (
      !isRecord(keep) ||
      !['age', 'count', 'limit'].every((key) => ['undefined', 'number'].includes(typeof keep[key]))
    ) {
      return `opts.${name} is not a boolean, a number or { age, count, limit }`;
    }
  }
  return undefined;
}

const NOT_IN_A_FLOW = 'a mailroom batch is never part of a BullMQ flow';

/**
 * Why a field of a fetched job hash cannot be taken as it is (undefined: it can), for each field that
 * stops BullMQ. Issue #9: one that is not JSON made BullMQ throw while it read the job (bullmq 6.7,
 * the fetch commands' `rawToJobJson`), before the job had an id, so the job was never failed: it
 * stalled forever and every try logged an error naming no job. A flow's parent link (which BullMQ's
 * finishing script follows, and drops a job that has a broken one) or a job scheduler's key (whose
 * next run BullMQ schedules before the job reaches the processor) are never in a batch either.
 * `data` is parsed once, by createJob.
 */
const FIELD_PROBLEMS: Record<string, (value: string) => string | undefined> = {
  opts: optsProblem,
  progress: (value) => {
    const error = jsonError(value);
    return error === undefined ? undefined : `progress is not JSON (${error})`;
  },
  parent: () => `it has a parent (${NOT_IN_A_FLOW})`,
  parentKey: () => `it has a parentKey (${NOT_IN_A_FLOW})`,
  rjk: () => 'it has a job scheduler key, rjk (a mailroom batch never comes from one)',
};

/** Why a job cannot be read, and which of its hash fields get stand-ins. */
interface Unreadable {
  reasons: string[];
  fields: string[];
}

/**
 * Key of the stand-in opts under which the fetch command's reply hands an {@link Unreadable} on to
 * createJob. Random per process, so that no job's own opts can pass for it.
 */
const UNREADABLE_KEY = `mailroom:unreadable:${randomUUID()}`;

/** Unreadable jobs, as MailroomWorker.createJob found them; the processor dead-letters them. */
const unreadableJobs = new WeakMap<Job, Unreadable>();

/** Commands whose reply carries the next job's hash: `[[field, value, ...], id, ...]` (raw2NextJobData). */
const FETCH_COMMANDS = new Set(['moveToActive', 'moveToFinished', 'moveToDelayed']);

/**
 * Keeps each unreadable field under `unreadable:<field>` and puts its stand-in in its place, while
 * the lock is still ours. KEYS: the job hash, its lock; ARGV: our lock token, then field, stand-in.
 */
const STAND_IN_SCRIPT = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    redis.call('HSET', KEYS[1], 'unreadable:' .. ARGV[i], value)
    if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
    else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  end
end
return 1
`;

function valueIndex(hash: unknown[], field: string): number {
  for (let index = 0; index < hash.length; index += 2) if (hash[index] === field) return index + 1;
  return -1;
}

/**
 * Makes a fetched job hash one BullMQ can take, in place: each field {@link FIELD_PROBLEMS} finds
 * fault with gets its stand-in, and the reasons ride on to createJob in the stand-in opts. A hash
 * without data is unreadable too (BullMQ would take it for `{}`).
 */
function standInForUnreadableFields(hash: unknown[]): void {
  const found: Unreadable = { reasons: [], fields: [] };
  const data = valueIndex(hash, 'data');
  if (data === -1 || hash[data] === '') found.reasons.push('it has no data');
  for (const [field, problem] of Object.entries(FIELD_PROBLEMS)) {
    const at = valueIndex(hash, field);
    const reason = at === -1 ? undefined : problem(String(hash[at]));
    if (reason === undefined) continue;
    found.reasons.push(reason);
    found.fields.push(field);
    if (STAND_INS[field] === '') hash.splice(at - 1, 2);
    else hash[at] = STAND_INS[field];
  }
  if (found.reasons.length === 0) return;
  const opts = JSON.stringify({ ...UNREADABLE_JOB_OPTIONS, [UNREADABLE_KEY]: found });
  const at = valueIndex(hash, 'opts');
  if (at === -1) hash.push('opts', opts);
  else hash[at] = opts;
}

/**
 * BullMQ's Worker, except that it takes every job however corrupt its Redis hash: what BullMQ
 * cannot parse gets a stand-in, and the job goes to the processor marked in {@link unreadableJobs},
 * to be dead-lettered with the reason under its id (issue #9).
 */
class MailroomWorker extends Worker<BatchJobData> {
  protected override createBackend(): void {
    super.createBackend();
    // BullMQ's constructor calls this before any job is fetched (and before this class has fields).
    const backend = this.backend;
    const execCommand = backend.execCommand.bind(backend);
    backend.execCommand = (client, name, args) => {
      const reply = execCommand(client, name, args);
      if (!FETCH_COMMANDS.has(name)) return reply;
      return Promise.resolve(reply).then((next: unknown) => {
        if (Array.isArray(next) && Array.isArray(next[0])) standInForUnreadableFields(next[0]);
        return next;
      });
    };
  }

  protected override createJob(json: JobJson, jobId: string): Job<BatchJobData> {
    const opts = (json.opts ?? {}) as Record<string, unknown>;
    const found = (opts[UNREADABLE_KEY] as Unreadable | undefined) ?? { reasons: [], fields: [] };
    let data: unknown;
    try {
      data = JSON.parse(json.data);
    } catch (error) {
      found.reasons.push(`data is not JSON (${coerceError(error).message})`);
      found.fields.push('data');
    }
    let job: Job<BatchJobData>;
    try {
      // A placeholder for the data, which BullMQ would parse a second time.
      job = super.createJob({ ...json, data: 'null' }, jobId);
    } catch (error) {
      // Whatever else BullMQ's Job refuses (an option of a type it does not expect).
      found.reasons.push(`BullMQ cannot take it (${coerceError(error).message})`);
      job = super.createJob({ ...json, data: 'null', opts: {} }, jobId);
    }
    job.data = data as BatchJobData;
    if (found.reasons.length > 0) {
      job.opts = { ...UNREADABLE_JOB_OPTIONS };
      // Once it has stalled too often BullMQ fails it itself, before the processor, as "stalled more
      // than allowable limit"; the processor gives the reason instead.
      job.deferredFailure = '';
      unreadableJobs.set(job, found);
    }
    return job;
  }
}

/**
 * Starts a worker on the queue: takes batch jobs, sends each batch over ONE backend connection,
 * records every message in the ledger as it settles, retries only the undelivered messages with
 * exponential backoff, and dead-letters (fails) a batch whose messages failed for good unless they
 * were sent with failSilently.
 */
export function createWorker(options: WorkerOptions = {}): MailWorker {
  const queue = validateQueueName(options.queue ?? workerDefaults.queue);
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
  const maxUnpackedBytes = Math.floor(
    positive(options.maxUnpackedBytes ?? workerDefaults.maxUnpackedBytes, 'maxUnpackedBytes'),
  );
  const rateLimit = options.rateLimit ? parseRateLimit(options.rateLimit) : undefined;
  const makeBackend = backendFactory(options);
  const logger = options.logger ?? pino({ name: 'mailroom-worker', level: process.env.LOG_LEVEL ?? 'info' });
  const metrics = options.metrics ?? new PrometheusMetrics();
  const keys = queueKeys(prefix, queue);

  // The worker holds on (BullMQ production guide): commands wait for a reconnect instead of failing.
  // Named so that CLIENT LIST shows which worker and queue a connection belongs to.
  const { client: redis, owned } = createRedis(options.redis ?? settings.REDIS_URL, {
    maxRetriesPerRequest: null,
    // validateQueueName allows only characters CLIENT SETNAME takes.
    connectionName: `mailroom-worker:${queue}`,
  });
  redis.on('error', (error) => logger.warn({ err: error.message }, 'redis connection error'));
  const ledger = new Ledger(redis, keys, workerDefaults.ledgerTtl);
  const rateLimiter = rateLimit ? new RateLimiter(redis, keys.rate, rateLimit) : undefined;
  // Notices Redis losing its data, and warns at start-up when Redis is set up to lose it.
  const dataLoss = startDataLossMonitor(redis, keys, { queue, logger });
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
        const unreadable = unreadableJobs.get(job);
        if (unreadable) {
          // Leave a dead letter that BullMQ's finishing script can fail and that tools can list.
          const fields = unreadable.fields.flatMap((field) => [field, STAND_INS[field] ?? '']);
          if (fields.length > 0) {
            const key = `${keys.base}:${jobId}`;
            await redis.eval(STAND_IN_SCRIPT, 2, key, `${key}:lock`, token ?? '', ...fields);
          }
          throw new ValidationError(`unreadable job: ${unreadable.reasons.join('; ')}`);
        }
        if (job.name !== BATCH_JOB_NAME)
          throw new ValidationError(`unknown job name ${JSON.stringify(job.name)}`);
        data = parseBatchJob(job.data, { maxUnpackedBytes });
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
          // Another replica took this batch over (our lock expired): it owns the rest now. Unless
          // the lock went with the rest of Redis's data: then nobody owns it, and that is the news.
          finish('lock-lost');
          if (await dataLoss.explainLockLoss({ jobId, campaign, startedAt: started }))
            throw new Error(`Batch ${jobId} was lost with Redis's data`);
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

  const bullWorker = new MailroomWorker(queue, processJob, {
    connection: redis,
    prefix,
    concurrency,
    autorun: options.autorun ?? true,
    lockDuration: options.lockDuration ?? workerDefaults.lockDuration,
    stalledInterval: options.stalledInterval ?? workerDefaults.stalledInterval,
    maxStalledCount: options.maxStalledCount ?? workerDefaults.maxStalledCount,
  });
  bullWorker.on('error', (error) => logger.error({ err: error.message }, 'worker error'));
  bullWorker.on('active', (job) => dataLoss.noteCampaign(job.data?.campaign));
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
      dataLoss.stop();
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
