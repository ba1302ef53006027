/** createWorker: a worker process's BullMQ worker, its connections, ledger, limiter and shutdown. */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BackendClass,
  type BaseEmailBackend,
  ConfigError,
  type ConnectionOptions,
  classifyDeliveryError,
  coerceError,
  getConnection,
  type RateLimit,
  SmtpBackend,
  settings,
} from '@mailroom/core';
import {
  type BatchJobData,
  CAMPAIGN_STATES,
  checkShardCount,
  claimLayout,
  createRedis,
  type LedgerEntry,
  queueLayout,
  type RedisClient,
  type RedisInput,
  redisInputFrom,
  SuppressionList,
} from '@mailroom/core/protocol';
import { type Job, UnrecoverableError, type Worker } from 'bullmq';
import { type Logger, pino } from 'pino';
import { applyDecision } from './apply-decision.js';
import { AutoSuppress } from './auto-suppress.js';
import { BullWorker } from './bull-worker.js';
import { resolveWorkerOptions } from './config.js';
import { ConnectionPool } from './connection-pool.js';
import { startDataLossMonitor } from './data-loss.js';
import { type BatchCounts, decideBatch } from './decide.js';
import { type DecodedBatch, decodeJob } from './decode-job.js';
import { workerDefaults } from './defaults.js';
import { deliverBatch, type PendingMessage, type StopReason } from './deliver-batch.js';
import { type Heartbeat, startHeartbeat } from './heartbeat.js';
import { type BatchRef, Ledger } from './ledger.js';
import { LogThrottle } from './log-throttle.js';
import { PrometheusMetrics, type WorkerMetrics } from './metrics.js';
import { readQueueBacklog } from './queue-gauges.js';
import { RateLimiter } from './rate-limit.js';

export { retryDelay } from './apply-decision.js';

/** Options of {@link createWorker}; defaults in workerDefaults. */
export interface WorkerOptions {
  /**
   * Redis URL, ioredis options, `{ cluster: 'host:port,...' }` seed nodes, or a client (one node or
   * an ioredis Cluster). Default REDIS_CLUSTER_NODES when set, else REDIS_URL.
   */
  redis?: RedisInput;
  /**
   * Shards of the queue, as the producers have it (1 to 64): the worker takes batches from every
   * shard, its concurrency split over them (at least one each). Default MAILROOM_SHARDS, else 1.
   */
  shards?: number;
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
  /**
   * Milliseconds the SMTP backend waits to connect and for each reply when neither EMAIL_TIMEOUT nor
   * backendOptions.timeout says (Django's default there is none). Default MAILROOM_SMTP_TIMEOUT, or
   * 60 s; null: none.
   */
  smtpTimeout?: number | null;
  /** Batches (= SMTP connections) in flight in this process. Default 2. */
  concurrency?: number;
  /** Global rate limit across all replicas: `200/s`, `10000/h` or {max, duration}. Default none. */
  rateLimit?: string | RateLimit | null;
  /** Delivery attempts per batch, the first included. Default 5. */
  attempts?: number;
  /** Retry delays: `delay` doubles per attempt up to `maxDelay`, with jitter. Milliseconds. */
  backoff?: { delay?: number; maxDelay?: number };
  /**
   * Milliseconds close() may wait for in-flight messages before connections are cut. Default 10 s;
   * close() ends within this + 2 s whatever Redis and the mail server do.
   */
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
  /** The BullMQ worker of the home shard (shard 0). */
  readonly bullWorker: Worker<BatchJobData>;
  /** One BullMQ worker per shard (index = shard index). */
  readonly bullWorkers: readonly Worker<BatchJobData>[];
  readonly metrics: WorkerMetrics;
  readonly logger: Logger;
  /**
   * Resolves when the worker is connected to Redis and taking jobs; rejects with a ConfigError when
   * the queue is laid out over another number of shards that still hold jobs (layout-record.ts).
   */
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
  /** Its announcement on the queue (`mailroom stats` lists it): its id, and when the first one was written. */
  readonly heartbeat: Pick<Heartbeat, 'id' | 'first'>;
}

function backendFactory(options: WorkerOptions, smtpTimeout: number | null): () => BaseEmailBackend {
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
  let backendOptions = options.backendOptions ?? {};
  // Build one now so that a bad backend name or option fails at start-up, not on the first batch.
  const probe = getConnection(chosen, backendOptions);
  // A worker must never wait forever on a socket: without a timeout, a server that stops answering
  // after DATA holds the batch (and its renewed lock) for nodemailer's 10 minutes per reply.
  if (
    probe instanceof SmtpBackend &&
    probe.timeout === null &&
    backendOptions.timeout === undefined &&
    smtpTimeout !== null
  ) {
    backendOptions = { ...backendOptions, timeout: smtpTimeout / 1000 };
    getConnection(chosen, backendOptions);
  }
  // The DKIM key is read and checked once, here, at start-up: every connection signs with the same
  // signer (a key file changed or gone later cannot fail a batch halfway).
  if (probe instanceof SmtpBackend && backendOptions.dkim === undefined) {
    backendOptions = { ...backendOptions, dkim: probe.dkimSigner };
  }
  return () => getConnection(chosen, backendOptions);
}

/**
 * True when `promise` settles (resolved or rejected) before `deadline` (epoch ms), false when the
 * deadline comes first; the promise is left to settle on its own.
 */
async function settlesBy(promise: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts a worker on the queue: takes batch jobs, sends each batch over ONE backend connection,
 * records every message in the ledger as it settles, retries only the undelivered messages with
 * exponential backoff, and dead-letters (fails) a batch whose messages failed for good unless they
 * were sent with failSilently.
 */
export function createWorker(options: WorkerOptions = {}): MailWorker {
  // Each option, else its MAILROOM_* setting (environment or configure()), else workerDefaults.
  const {
    queue,
    prefix,
    concurrency,
    attempts,
    backoffDelay,
    backoffMaxDelay,
    shutdownTimeout,
    maxReconnects,
    maxUnpackedBytes,
    rateLimit,
    smtpTimeout,
    connectionIdleTimeout,
    maxMessagesPerConnection,
    lockDuration,
    stalledInterval,
    maxStalledCount,
  } = resolveWorkerOptions(options);
  const makeBackend = backendFactory(options, smtpTimeout);
  const logger = options.logger ?? pino({ name: 'mailroom-worker', level: process.env.LOG_LEVEL ?? 'info' });
  const metrics = options.metrics ?? new PrometheusMetrics();
  const layout = queueLayout(
    prefix,
    queue,
    checkShardCount(options.shards ?? settings.MAILROOM_SHARDS, 'shards'),
  );
  // Queue-wide keys (rate limit, suppression list, epoch, worker registry) are the home shard's.
  const keys = layout.home.keys;

  // The worker holds on (BullMQ production guide): commands wait for a reconnect instead of failing.
  // Named so that CLIENT LIST shows which worker and queue a connection belongs to.
  const redisInput = options.redis ?? redisInputFrom(settings.REDIS_URL, settings.REDIS_CLUSTER_NODES);
  const { client: redis, owned } = createRedis(redisInput, {
    maxRetriesPerRequest: null,
    // validateQueueName allows only characters CLIENT SETNAME takes.
    connectionName: `mailroom-worker:${queue}`,
  });
  // A Redis that is down, refuses the password or answers MOVED fails every try for as long as it
  // lasts: each error is written once, then counted at growing intervals, never once per try.
  const errorLog = new LogThrottle(logger, {
    initialInterval: workerDefaults.logRepeatInterval,
    maxInterval: workerDefaults.logRepeatMaxInterval,
  });
  redis.on('error', (error) => errorLog.log('warn', { err: error.message }, 'redis connection error'));
  const rateLimiter = rateLimit ? new RateLimiter(redis, keys.rate, rateLimit) : undefined;
  // The same client as the ledger's: a batch's hard bounces reach Redis ahead of its ledger write.
  const suppression = new SuppressionList(redis, keys);
  const autoSuppress = new AutoSuppress(suppression, logger, metrics);
  // Notices Redis losing its data, and warns at start-up when Redis is set up to lose it.
  const dataLoss = startDataLossMonitor(redis, layout, { queue, logger });
  const shutdown = new AbortController();
  // Announces this process on the queue until close(): `mailroom stats` lists it, and the CLI warns
  // when nobody is consuming a queue a campaign waits on.
  const heartbeat = startHeartbeat(redis, keys, {
    queue,
    concurrency,
    interval: workerDefaults.heartbeatInterval,
    errorLog,
  });
  // The queue's backlog for /metrics, read when scraped. Skipped while Redis is away: the worker's
  // connection would hold the command (and the scrape) until it is back.
  const untrackQueue = metrics.trackQueue?.(queue, async () => {
    if (redis.status !== 'ready') return undefined;
    const reading = readQueueBacklog(redis, layout, { sampleJobs: workerDefaults.backlogSampleJobs });
    reading.catch((error: unknown) =>
      errorLog.log(
        'warn',
        { err: coerceError(error).message },
        'reading the queue backlog for /metrics failed',
      ),
    );
    const deadline = Date.now() + workerDefaults.backlogReadTimeout;
    return (await settlesBy(reading, deadline)) ? await reading.catch(() => undefined) : undefined;
  });
  const connections = new ConnectionPool(makeBackend, {
    idleTimeout: connectionIdleTimeout,
    maxMessages: maxMessagesPerConnection,
    maxIdle: concurrency,
    logger,
  });

  /**
   * A campaign batch's messages whose recipient went on the suppression list after they were queued
   * (an unsubscribe while they waited, a scheduled campaign, a retry): recorded as cancelled, never
   * sent; returns the others. One HMGET per campaign batch. Campaign messages have one recipient.
   */
  async function dropSuppressed(
    ledger: Ledger,
    batch: BatchRef,
    pending: PendingMessage[],
    entries: Map<number, LedgerEntry>,
  ): Promise<PendingMessage[]> {
    const found = await suppression.lookup(pending.map(({ message }) => message.recipients()[0] ?? ''));
    const dropped = pending.filter((_, index) => found[index] !== undefined);
    if (dropped.length === 0) return pending;
    const cancelled: [number, LedgerEntry][] = dropped.map(({ index }) => [
      index,
      { state: 'c', reason: 'cancelled', detail: 'suppressed after it was queued' },
    ]);
    await ledger.recordMany(batch, cancelled);
    for (const [index, entry] of cancelled) entries.set(index, entry);
    logger.info(
      { jobId: batch.jobId, campaign: batch.campaign, messages: dropped.length },
      'suppressed recipients skipped',
    );
    return pending.filter((_, index) => found[index] === undefined);
  }

  /**
   * One batch of `shard`, as steps: decode the job, deliver what is pending over one connection,
   * decide what happens to the job, carry that out. Each step lives in its own module.
   */
  async function processJob(shard: ShardParts, job: Job<BatchJobData>, token?: string): Promise<BatchCounts> {
    const { ledger, decodeContext } = shard;
    const startedAt = Date.now();
    const jobId = job.id as string;
    const finish = (outcome: Parameters<WorkerMetrics['batchFinished']>[1]) =>
      metrics.batchFinished((Date.now() - startedAt) / 1000, outcome);
    metrics.batchesInFlight(1);
    try {
      let decoded: DecodedBatch;
      try {
        decoded = await decodeJob(job, token, decodeContext);
      } catch (error) {
        finish('invalid');
        logger.error({ jobId, err: coerceError(error).message }, 'invalid batch payload: job failed');
        throw new UnrecoverableError(`Invalid batch payload: ${coerceError(error).message}`);
      }
      const { batch, entries } = decoded;
      let { campaignState } = batch.campaign
        ? await ledger.check({ ...batch, token: undefined })
        : { campaignState: '' };
      let pending = decoded.pending;
      if (batch.campaign && pending.length > 0 && campaignState === CAMPAIGN_STATES.running) {
        pending = await dropSuppressed(ledger, batch, pending, entries);
      }
      let stopped: StopReason | undefined;
      let connectionError: Error | undefined;
      if (
        pending.length > 0 &&
        campaignState !== CAMPAIGN_STATES.paused &&
        campaignState !== CAMPAIGN_STATES.cancelled
      ) {
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
          autoSuppress,
        });
        for (const [index, entry] of result.settled) entries.set(index, entry);
        ({ stopped, connectionError } = result);
        if (stopped === CAMPAIGN_STATES.paused || stopped === CAMPAIGN_STATES.cancelled)
          campaignState = stopped;
        if (stopped === 'lock-lost') {
          // Another replica took this batch over (our lock expired): it owns the rest now. Unless
          // the lock went with the rest of Redis's data: then nobody owns it, and that is the news.
          finish('lock-lost');
          if (await dataLoss.explainLockLoss({ jobId, campaign: batch.campaign, startedAt }))
            throw new Error(`Batch ${jobId} was lost with Redis's data`);
          logger.warn({ jobId }, 'lock lost: another worker took the batch over; stopped sending');
          throw new Error(`Lock lost for batch ${jobId}: taken over by another worker`);
        }
      }
      const connectionFailure = connectionError
        ? { reason: classifyDeliveryError(connectionError).reason, detail: connectionError.message }
        : undefined;
      const decision = decideBatch({
        messageCount: decoded.data.messages.length,
        entries,
        failSilently: decoded.failSilently,
        campaignState,
        stopped,
        attemptsUsed: decoded.attemptsUsed,
        attempts,
        connectionFailure,
      });
      return await applyDecision(decision, {
        job,
        token,
        batch,
        messageCount: decoded.data.messages.length,
        entries,
        connectionReason: connectionFailure?.reason ?? 'connection',
        connectionError,
        ledger,
        backoff: { delay: backoffDelay, maxDelay: backoffMaxDelay, attempts },
        startedAt,
        logger,
        metrics,
        finish,
      });
    } finally {
      metrics.batchesInFlight(-1);
    }
  }

  /** A shard's own parts: the ledger on its keys and what decoding its jobs needs. */
  interface ShardParts {
    readonly ledger: Ledger;
    readonly decodeContext: Parameters<typeof decodeJob>[2];
  }

  // Concurrency split over the shards, at least one batch each; the shards that get one more start at
  // a random one, so that across replicas no shard is always the short one.
  const count = layout.shards.length;
  const offset = Math.floor(Math.random() * count);
  const shares = layout.shards.map(({ index }) =>
    Math.max(
      1,
      Math.floor(concurrency / count) + ((index - offset + count) % count < concurrency % count ? 1 : 0),
    ),
  );
  const bullWorkers = layout.shards.map((shard) => {
    const ledger = new Ledger(redis, shard.keys, workerDefaults.ledgerTtl);
    const parts: ShardParts = {
      ledger,
      decodeContext: { redis, base: shard.keys.base, ledger, maxUnpackedBytes, logger, metrics },
    };
    const worker = new BullWorker(queue, (job, token) => processJob(parts, job, token), {
      connection: redis,
      prefix: shard.prefix,
      concurrency: shares[shard.index] as number,
      // Started once the layout is claimed (below): never on a layout the producers do not write.
      autorun: false,
      lockDuration,
      stalledInterval,
      maxStalledCount,
    });
    worker.on('error', (error) => errorLog.log('error', { err: error.message }, 'worker error'));
    worker.onCounterRepair = ({ jobId, field, value, standIn }) =>
      logger.error({ jobId, field, value, standIn }, 'job counter is not an integer: repaired, job goes on');
    worker.on('active', (job) => dataLoss.noteCampaign(job.data?.campaign));
    // Once BullMQ has recorded a completion the batch can never run again: a clean batch's ledger has
    // done its job. One with failures (sent with failSilently) keeps it for ledgerTtl: the record of
    // what failed and why.
    worker.on('completed', (job, result: Record<string, number> | undefined) => {
      if (job.id && !result?.failed) redis.unlink(shard.keys.ledger(job.id)).catch(() => {});
    });
    return worker;
  });
  const bullWorker = bullWorkers[0] as BullWorker;
  // The layout first: a worker started with another MAILROOM_SHARDS than the queue's refuses to start
  // while the shards it would not read hold jobs (and records its count once they are drained).
  const started = (async () => {
    // A Redis that is away or failing over (CLUSTERDOWN, READONLY...) is waited out, as BullMQ waits
    // out a failing fetch; only a layout that does not fit (ConfigError) or close() ends the wait.
    for (let failures = 0; ; failures++) {
      try {
        await claimLayout(redis, layout);
        break;
      } catch (error) {
        if (error instanceof ConfigError || shutdown.signal.aborted) throw error;
        errorLog.log(
          'warn',
          { err: coerceError(error).message },
          'could not read the queue layout; trying again',
        );
        const delay = Math.min(
          workerDefaults.fetchRetryDelay * 2 ** failures,
          workerDefaults.fetchRetryMaxDelay,
        );
        await sleep(delay, undefined, { signal: shutdown.signal }).catch(() => {});
        if (shutdown.signal.aborted) throw error;
      }
    }
    if (options.autorun === false) return;
    for (const worker of bullWorkers) {
      worker
        .run()
        .catch((error: unknown) =>
          errorLog.log('error', { err: coerceError(error).message }, 'worker stopped taking jobs'),
        );
    }
  })();
  started.catch((error: unknown) => {
    // Closed while starting: the connection went with it, nothing to report.
    if (closing === undefined)
      logger.error({ queue, err: coerceError(error).message }, 'worker cannot start');
  });

  let closing: Promise<void> | undefined;
  /**
   * MUST end within shutdownTimeout + shutdownForceTimeout whatever Redis and the mail server do (down,
   * refusing the password, silent after DATA): each step is raced against what is left of that time,
   * then cut. Every step runs even when an earlier one failed or was cut.
   */
  async function close(): Promise<void> {
    closing ??= (async () => {
      const startedAt = Date.now();
      const gracefulUntil = startedAt + shutdownTimeout;
      const cutUntil = gracefulUntil + workerDefaults.shutdownForceTimeout;
      logger.info({ queue }, 'shutting down: no new batches, finishing the messages on the wire');
      shutdown.abort(new Error('worker shutting down'));
      dataLoss.stop();
      untrackQueue?.();
      // A worker shutting down takes no new batch: it stops counting as one consuming the queue.
      const withdrawn = heartbeat.stop();
      // Waits for the batches in flight, each of which stops after the messages on the wire (a window at most).
      const bullClosed = Promise.all(
        bullWorkers.map((worker) =>
          worker.close().catch((error: unknown) => {
            logger.warn({ err: coerceError(error).message }, 'closing the BullMQ worker failed');
          }),
        ),
      );
      if (!(await settlesBy(bullClosed, gracefulUntil))) {
        logger.warn(
          { queue, shutdownTimeout },
          'shutdown timeout: cutting connections; unfinished batches will be taken over',
        );
        // The messages on the wire fail as connection errors; while Redis answers, the rest of their
        // batch still goes back on the queue, and then BullMQ's close ends. Without Redis it never will.
        await settlesBy(connections.closeInUse(), cutUntil);
        if (redis.status !== 'ready' || !(await settlesBy(bullClosed, cutUntil)))
          for (const worker of bullWorkers) worker.forceClose();
      }
      await settlesBy(connections.closeAll(), cutUntil);
      await settlesBy(withdrawn, cutUntil);
      if (owned) {
        const client = redis as RedisClient;
        if (client.status === 'ready') await settlesBy(client.quit(), cutUntil);
        // Unanswered, refused or never sent, QUIT must leave no reconnect timer behind.
        if (client.status !== 'end') client.disconnect();
      }
      errorLog.flush();
      logger.info({ queue, tookMs: Date.now() - startedAt }, 'worker stopped');
    })();
    return closing;
  }

  return {
    queue,
    bullWorker,
    bullWorkers,
    metrics,
    logger,
    waitUntilReady: async () => {
      await started;
      await Promise.all(bullWorkers.map((worker) => worker.waitUntilReady()));
    },
    close,
    get closing() {
      return closing !== undefined;
    },
    isReady: () =>
      closing === undefined && redis.status === 'ready' && bullWorkers.every((worker) => worker.isRunning()),
    heartbeat,
  };
}
