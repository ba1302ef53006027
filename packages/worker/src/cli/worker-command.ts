/** `mailroom worker`: a worker process configured from the environment and flags, until SIGTERM/SIGINT. */
import { ConfigError, settings } from '@mailroom/core';
import { pino } from 'pino';
import { readWorkerEnvironment } from '../config.js';
import { startMetricsServer } from '../http.js';
import { PrometheusMetrics } from '../metrics.js';
import { createWorker } from '../worker.js';
import { durationFlag, portFlag, positiveIntegerFlag, rateLimitFlag } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, println, stopSignal } from './io.js';
import { chooseLogFormat, workerLogStream } from './log-stream.js';

export const workerUsage = `Usage: mailroom worker [flags]

Takes batch jobs from the queue and sends them with the EMAIL_* backend. Configured by the
environment; flags override it. Stops cleanly on SIGTERM/SIGINT.

Flags (environment variable, default):
  --queue <name>             MAILROOM_QUEUE (mail)
  --concurrency <n>          MAILROOM_CONCURRENCY (2): batches = SMTP connections in flight
  --rate-limit <n/unit>      MAILROOM_RATE_LIMIT (none): global across replicas, e.g. 200/s, 10000/h
  --attempts <n>             MAILROOM_ATTEMPTS (5): delivery attempts per batch
  --shutdown-timeout <dur>   MAILROOM_SHUTDOWN_TIMEOUT (10s)
  --metrics-port <port>      MAILROOM_METRICS_PORT (off): serves /metrics, /healthz, /readyz
  --pretty                   LOG_FORMAT=pretty: readable log lines (default on a terminal; else JSON)
Also read: REDIS_URL (REDIS_CLUSTER_NODES, seed nodes of a Redis Cluster, over it), MAILROOM_SHARDS
(1: the shards of the queue, as the producers have them; a worker takes from every shard), MAILROOM_PREFIX, MAILROOM_BACKOFF, MAILROOM_LOCK_DURATION,
MAILROOM_STALLED_INTERVAL, MAILROOM_MAX_STALLED_COUNT, MAILROOM_CONNECTION_IDLE (5s: how long an open
SMTP connection waits for the next batch; 0 closes it after every batch), MAILROOM_MAX_UNPACKED_BYTES
(24 MiB: a batch inflating past it is dead-lettered as invalid), MAILROOM_SMTP_TIMEOUT (60s: the
SMTP timeout when EMAIL_TIMEOUT is not set), LOG_LEVEL, LOG_FORMAT (json or pretty), and EMAIL_* for
the backend.`;

const flags = {
  queue: { type: 'string' },
  concurrency: { type: 'string' },
  'rate-limit': { type: 'string' },
  attempts: { type: 'string' },
  'shutdown-timeout': { type: 'string' },
  'metrics-port': { type: 'string' },
  pretty: { type: 'boolean' },
} satisfies FlagSpec;

function describeBackend(): string {
  const name = settings.EMAIL_BACKEND;
  if (name !== 'smtp') return name;
  const security = settings.EMAIL_USE_SSL ? ' ssl' : settings.EMAIL_USE_TLS ? ' starttls' : '';
  const auth = settings.EMAIL_HOST_USER && settings.EMAIL_HOST_PASSWORD ? ' auth' : '';
  return `smtp(${settings.EMAIL_HOST}:${settings.EMAIL_PORT}${security}${auth})`;
}

/** How long the banner waits for the worker's first announcement on the queue, in ms. */
const BANNER_WAIT = 1000;

/** `mailroom worker`: runs until SIGTERM/SIGINT, then shuts down gracefully. */
export async function workerCommand(argv: string[], context: CliContext): Promise<number> {
  const { values } = parseFlags(argv, flags, workerUsage);
  const env = readWorkerEnvironment(context.env);
  const queue = values.queue ?? env.queue;
  const concurrency = values.concurrency
    ? positiveIntegerFlag(values.concurrency, '--concurrency')
    : env.concurrency;
  const attempts = values.attempts ? positiveIntegerFlag(values.attempts, '--attempts') : env.attempts;
  const rateLimit = values['rate-limit']
    ? rateLimitFlag(values['rate-limit'], '--rate-limit')
    : env.rateLimit;
  const shutdownTimeout = values['shutdown-timeout']
    ? durationFlag(values['shutdown-timeout'], '--shutdown-timeout')
    : env.shutdownTimeout;
  const metricsPort =
    values['metrics-port'] !== undefined
      ? portFlag(values['metrics-port'], '--metrics-port')
      : env.metricsPort;

  // The logs quote SMTP replies and addresses; a worker is often watched on a terminal: both formats
  // are escaped for it (log-stream.ts).
  const logFormat = chooseLogFormat({
    pretty: values.pretty === true,
    logFormat: context.env.LOG_FORMAT,
    isTTY: context.stdout.isTTY,
  });
  const logger = pino(
    { name: 'mailroom-worker', level: context.env.LOG_LEVEL ?? 'info' },
    workerLogStream(context.stdout, logFormat, context.env),
  );
  const metrics = new PrometheusMetrics();
  const worker = createWorker({
    redis: env.redis,
    shards: env.shards,
    queue,
    prefix: env.prefix,
    concurrency,
    attempts,
    rateLimit: rateLimit ?? null,
    backoff: { delay: env.backoffDelay },
    shutdownTimeout,
    lockDuration: env.lockDuration,
    stalledInterval: env.stalledInterval,
    maxStalledCount: env.maxStalledCount,
    connectionIdleTimeout: env.connectionIdleTimeout,
    maxUnpackedBytes: env.maxUnpackedBytes,
    logger,
    metrics,
  });
  const server =
    metricsPort === undefined
      ? undefined
      : await startMetricsServer(metricsPort, metrics.registry, {
          live: () => true,
          ready: () => worker.isReady(),
        });
  // Listening before the banner goes out: whoever waits for the banner may signal at once.
  const stopped = stopSignal(context, logger);
  // Whoever waits for the banner then finds the worker in `mailroom stats`; bounded, so that a Redis
  // that is away does not hold the banner back.
  let announcing: NodeJS.Timeout | undefined;
  await Promise.race([
    worker.heartbeat.first,
    new Promise((resolve) => {
      announcing = setTimeout(resolve, BANNER_WAIT);
    }),
  ]);
  clearTimeout(announcing);
  const rate = rateLimit ? `${rateLimit.max}/${rateLimit.duration}ms` : 'none';
  println(
    context.stderr,
    `mailroom worker pid=${process.pid} queue=${queue} redis=${env.redisLabel}${env.shards > 1 ? ` shards=${env.shards}` : ''} backend=${describeBackend()} ` +
      `concurrency=${concurrency} rate=${rate} attempts=${attempts} metrics=${server ? `:${server.port}` : 'off'}`,
  );

  // A queue laid out over another MAILROOM_SHARDS with jobs left on the shards this worker would not
  // read: the worker never takes a job; the command ends with that configuration error (exit 3).
  const refused = worker.waitUntilReady().then(
    () => new Promise<never>(() => {}),
    (error: unknown) => (error instanceof ConfigError ? error : new Promise<never>(() => {})),
  );
  const outcome = await Promise.race([stopped.then(() => undefined), refused]);
  await worker.close();
  await server?.close();
  if (outcome instanceof ConfigError) throw outcome;
  return EXIT.ok;
}
