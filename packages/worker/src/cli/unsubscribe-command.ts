/** `mailroom unsubscribe-server`: the one-click unsubscribe endpoint (RFC 8058), until SIGTERM/SIGINT. */
import { readSettings } from '@mailroom/core';
import { parseUnsubscribeSecrets } from '@mailroom/core/protocol';
import { pino } from 'pino';
import { startUnsubscribeServer, unsubscribeDefaults } from '../unsubscribe-server.js';
import { portFlag, readQueueEnvironment } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, println, stopSignal, UsageError } from './io.js';
import { chooseLogFormat, workerLogStream } from './log-stream.js';

/** Port of the endpoint when --port is not given. */
const DEFAULT_PORT = 8090;

export const unsubscribeUsage = `Usage: mailroom unsubscribe-server [flags]

Serves the one-click unsubscribe links of campaigns started with --unsubscribe-endpoint (RFC 8058):
  POST /unsubscribe/<token>   puts the address on the queue's suppression list; 200, empty body
  GET  /unsubscribe/<token>   a confirmation page with an Unsubscribe button (never unsubscribes)
A forged, altered or expired link gets 400 and changes nothing; a repeated POST changes nothing
either. Mailbox providers only follow https links: run it behind a reverse proxy that terminates
TLS for the --unsubscribe-endpoint host and forwards /unsubscribe/ to it. Stops on SIGTERM/SIGINT.

Flags (default):
  --port <port>              port to listen on (${DEFAULT_PORT}; 0 picks a free one)
  --host <address>           address to listen on (${unsubscribeDefaults.host}: every interface, for a proxy in
                             another container; 127.0.0.1 when the proxy runs on this machine)
  --queue <name>             queue whose suppression list it writes (MAILROOM_QUEUE, default mail)
  --pretty                   LOG_FORMAT=pretty: readable log lines (default on a terminal; else JSON)

Environment: MAILROOM_UNSUBSCRIBE_SECRET (required: the secret(s) campaigns sign links with),
REDIS_URL or REDIS_CLUSTER_NODES, MAILROOM_QUEUE, MAILROOM_PREFIX, MAILROOM_SHARDS, LOG_LEVEL, LOG_FORMAT.
Exit codes: 0 stopped by a signal; 2 bad flags; 3 bad configuration (no secret); 4 Redis unreachable.

Example:
  MAILROOM_UNSUBSCRIBE_SECRET=... mailroom unsubscribe-server --host 127.0.0.1 --port 8090`;

const flags = {
  port: { type: 'string' },
  host: { type: 'string' },
  queue: { type: 'string' },
  pretty: { type: 'boolean' },
} satisfies FlagSpec;

/** `mailroom unsubscribe-server`: serves until SIGTERM/SIGINT, then closes the server and Redis. */
export async function unsubscribeCommand(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, flags, unsubscribeUsage);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const port = values.port === undefined ? DEFAULT_PORT : portFlag(values.port, '--port');
  const host = values.host?.trim() || unsubscribeDefaults.host;
  const environment = readQueueEnvironment(context.env, values.queue);
  // ConfigError (exit 3) naming the setting, never its value, before anything is opened.
  const secrets = parseUnsubscribeSecrets(readSettings(context.env).MAILROOM_UNSUBSCRIBE_SECRET);

  const logFormat = chooseLogFormat({
    pretty: values.pretty === true,
    logFormat: context.env.LOG_FORMAT,
    isTTY: context.stdout.isTTY,
  });
  const logger = pino(
    { name: 'mailroom-unsubscribe', level: context.env.LOG_LEVEL ?? 'info' },
    workerLogStream(context.stdout, logFormat, context.env),
  );
  const server = await startUnsubscribeServer({
    redis: environment.redis,
    prefix: environment.prefix,
    queue: environment.queue,
    secrets,
    port,
    host,
    logger,
  });
  // Listening before the banner goes out: whoever waits for the banner may signal at once.
  const stopped = stopSignal(context, logger);
  const shownHost = server.host.includes(':') ? `[${server.host}]` : server.host;
  println(
    context.stderr,
    `mailroom unsubscribe-server pid=${process.pid} listening on http://${shownHost}:${server.port} ` +
      `queue=${environment.queue} redis=${environment.redisLabel}`,
  );

  await stopped;
  await server.close();
  return EXIT.ok;
}
