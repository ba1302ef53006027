/** `mailroom dashboard`: the operators' web dashboard over one queue, until SIGTERM/SIGINT. */
import { pino } from 'pino';
import { dashboardDefaults, startDashboard } from '../dashboard/server.js';
import { portFlag, readQueueEnvironment } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, println, stopSignal, UsageError } from './io.js';
import { chooseLogFormat, workerLogStream } from './log-stream.js';

/** Port of the dashboard when --port is not given: next to the unsubscribe endpoint's 8090, never the same. */
const DEFAULT_PORT = 8091;

export const dashboardUsage = `Usage: mailroom dashboard [flags]

Serves a web dashboard of the queue: job counts, send rate and live workers; campaigns with live
progress, failures and pause / resume / cancel / retry buttons; dead letters (headers only, never a
body) to retry or delete; the suppression list to search, add to and remove from; and a read-only
job board under /jobs/. It listens on its own port, never the unsubscribe endpoint's.

It refuses to start without credentials: set MAILROOM_DASHBOARD_TOKEN (a login form, and
"Authorization: Bearer <token>" for scripts) or MAILROOM_DASHBOARD_USER and
MAILROOM_DASHBOARD_PASSWORD (HTTP Basic). --no-auth goes without, on a loopback host only.
To reach it from elsewhere, keep it on 127.0.0.1 and put a reverse proxy that terminates TLS in
front of it (passing Host and X-Forwarded-Proto). Stops on SIGTERM/SIGINT.

Flags (default):
  --port <port>              port to listen on (${DEFAULT_PORT}; 0 picks a free one)
  --host <address>           address to listen on (${dashboardDefaults.host})
  --no-auth                  no credentials (only with a loopback --host: 127.0.0.1, ::1, localhost)
  --queue <name>             queue shown (MAILROOM_QUEUE, default mail)
  --pretty                   LOG_FORMAT=pretty: readable log lines (default on a terminal; else JSON)

Environment: MAILROOM_DASHBOARD_TOKEN, or MAILROOM_DASHBOARD_USER + MAILROOM_DASHBOARD_PASSWORD;
REDIS_URL or REDIS_CLUSTER_NODES, MAILROOM_QUEUE, MAILROOM_PREFIX, MAILROOM_SHARDS, LOG_LEVEL, LOG_FORMAT.
Exit codes: 0 stopped by a signal; 2 bad flags; 3 bad configuration (no credentials, --no-auth on a
public host); 4 Redis unreachable.

Example:
  MAILROOM_DASHBOARD_TOKEN=$(openssl rand -hex 32) mailroom dashboard`;

const flags = {
  port: { type: 'string' },
  host: { type: 'string' },
  'no-auth': { type: 'boolean' },
  queue: { type: 'string' },
  pretty: { type: 'boolean' },
} satisfies FlagSpec;

/** `mailroom dashboard`: serves until SIGTERM/SIGINT, then closes the server and Redis. */
export async function dashboardCommand(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, flags, dashboardUsage);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const port = values.port === undefined ? DEFAULT_PORT : portFlag(values.port, '--port');
  const host = values.host?.trim() || dashboardDefaults.host;
  const environment = readQueueEnvironment(context.env, values.queue);

  const logFormat = chooseLogFormat({
    pretty: values.pretty === true,
    logFormat: context.env.LOG_FORMAT,
    isTTY: context.stdout.isTTY,
  });
  const logger = pino(
    { name: 'mailroom-dashboard', level: context.env.LOG_LEVEL ?? 'info' },
    workerLogStream(context.stdout, logFormat, context.env),
  );
  // ConfigError (exit 3) for missing or conflicting credentials, before Redis is opened.
  const dashboard = await startDashboard({
    redis: environment.redis,
    shards: environment.shards,
    prefix: environment.prefix,
    queue: environment.queue,
    port,
    host,
    token: context.env.MAILROOM_DASHBOARD_TOKEN,
    user: context.env.MAILROOM_DASHBOARD_USER,
    password: context.env.MAILROOM_DASHBOARD_PASSWORD,
    noAuth: values['no-auth'] === true,
    logger,
  });
  // Listening before the banner goes out: whoever waits for the banner may signal at once.
  const stopped = stopSignal(context, logger);
  // One line, the URL and never a credential.
  println(
    context.stderr,
    `mailroom dashboard pid=${process.pid} listening on ${dashboard.url} queue=${environment.queue} ` +
      `redis=${environment.redisLabel}${values['no-auth'] ? ' (no auth)' : ''}`,
  );

  await stopped;
  await dashboard.close();
  return EXIT.ok;
}
