/**
 * The one-click unsubscribe endpoint (RFC 8058): a node request handler apps can mount, and a server
 * around it (`mailroom unsubscribe-server`). `POST /unsubscribe/<token>` puts the token's address on
 * the queue's suppression list; `GET` shows a confirmation page and never writes anything.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { ConfigError, coerceError, ValidationError } from '@mailroom/core';
import type { RedisClient } from '@mailroom/core/protocol';
import {
  createRedis,
  describeRedis,
  MIN_SECRET_LENGTH,
  protocolDefaults,
  queueKeys,
  type RedisInput,
  SECOND,
  SuppressionList,
  verifyUnsubscribeToken,
  waitForRedis,
} from '@mailroom/core/protocol';
import { escapeHtml } from '@mailroom/producer';
import { type Logger, pino } from 'pino';
import { listenHttp } from './http.js';

/** The defaults of the endpoint. */
export const unsubscribeDefaults = {
  /** Address `startUnsubscribeServer` listens on: every interface, for a reverse proxy in another container. */
  host: '0.0.0.0',
  /** Largest POST body read (RFC 8058's is 26 bytes; a browser's form a few more): past it, 413. */
  maxBodyBytes: 16 * 1024,
  /** Time a client has to send its whole POST body: past it, 408 and the connection is closed. */
  bodyTimeout: 10 * SECOND,
  /** Time Redis has to answer the write: past it, 503 (the mailbox provider retries). */
  redisTimeout: 5 * SECOND,
  /** How long `startUnsubscribeServer` waits for Redis before it gives up (MailError EREDIS). */
  connectTimeout: 5 * SECOND,
} satisfies Record<string, string | number>;

/** Options of {@link createUnsubscribeHandler}. */
export interface UnsubscribeHandlerOptions {
  /** The queue's Redis, an ioredis client the caller owns (never closed here). */
  redis: RedisClient;
  /** Key prefix of the queue (MAILROOM_PREFIX). Default `{mailroom}`. */
  prefix?: string;
  /** The queue whose suppression list unsubscribes go on; a token signed for another queue is refused. */
  queue: string;
  /** Secrets that verify tokens (parseUnsubscribeSecrets of MAILROOM_UNSUBSCRIBE_SECRET): any one may have signed. */
  secrets: readonly string[];
  /** pino logger. Default: JSON to stdout, level LOG_LEVEL or info. */
  logger?: Logger;
  /** Largest POST body accepted, in bytes. Default 16 KiB. */
  maxBodyBytes?: number;
  /** Time to receive a POST body, in ms. Default 10 s. */
  bodyTimeout?: number;
  /** Time Redis has to answer a write, in ms. Default 5 s. */
  redisTimeout?: number;
}

/** Options of {@link startUnsubscribeServer}: the handler's, with Redis as a URL, options or a client. */
export interface UnsubscribeServerOptions extends Omit<UnsubscribeHandlerOptions, 'redis'> {
  /** A `redis://` URL or ioredis options (a connection of its own, closed by close()), or a client the caller owns. */
  redis: RedisInput;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Address to listen on. Default `0.0.0.0`. */
  host?: string;
  /** How long to wait for Redis at start, in ms. Default 5 s. */
  connectTimeout?: number;
}

/** A running unsubscribe endpoint. */
export interface UnsubscribeServer {
  /** The port it listens on (the one picked when asked for 0). */
  readonly port: number;
  /** The address it listens on. */
  readonly host: string;
  /** Stops listening, cuts open connections and closes the Redis connection it opened. Idempotent. */
  close(): Promise<void>;
}

/** A node request handler: `http.createServer(handler)`, or `app.use(handler)` in express. */
export type UnsubscribeHandler = (request: IncomingMessage, response: ServerResponse) => void;

const ROUTE = /^\/unsubscribe\/([^/]+)$/;
const ALLOW = 'GET, HEAD, POST';

/**
 * Headers of every answer. The token in the URL is a credential for one person's subscription:
 * `no-referrer` and no external resources keep it from leaking to anyone else, `no-store` keeps it
 * out of shared caches. The page needs nothing but its inline style and a form posting to itself.
 */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
} as const;

/** What a refused token is told, by fault; short, plain text, nothing about the token's contents. */
const REFUSALS = {
  malformed: 'This unsubscribe link is not valid: it may have been cut short. Please copy the whole link.\n',
  forged: 'This unsubscribe link is not valid.\n',
  expired: 'This unsubscribe link has expired. Please use the link in a more recent email.\n',
  'other-queue': 'This unsubscribe link is not valid here.\n',
} as const;

type Refusal = keyof typeof REFUSALS;

const UNAVAILABLE = 'Unsubscribing is not possible right now. Please try again later.\n';

/**
 * The one-click unsubscribe endpoint as a node request handler, to serve from an app's own HTTP
 * server (apps that want their own page call verifyUnsubscribeToken instead). Routes:
 *
 * - `POST /unsubscribe/<token>`: a valid token of this queue puts its address on the suppression list
 *   (reason `unsubscribe`, source `campaign:<id>`; a repeat keeps the first record) and answers 200
 *   with an empty body, or a short HTML page when the client asks for `text/html` (a browser).
 * - `GET` / `HEAD /unsubscribe/<token>`: a confirmation page whose button makes that POST. Never writes.
 * - A bad token (malformed, altered, forged, expired, another queue's): 400, plain text, nothing written.
 * - Redis failing or slow: 503 with Retry-After. A body over `maxBodyBytes`: 413; not sent within
 *   `bodyTimeout`: 408. Another path: 404; another method: 405 with Allow.
 *
 * Throws ConfigError when `secrets` is empty or holds a secret shorter than 16 characters. The
 * handler itself never throws: every request gets an answer or, when the client went away, nothing.
 */
export function createUnsubscribeHandler(options: UnsubscribeHandlerOptions): UnsubscribeHandler {
  const secrets = checkSecrets(options.secrets);
  const queue = options.queue;
  const logger =
    options.logger ?? pino({ name: 'mailroom-unsubscribe', level: process.env.LOG_LEVEL ?? 'info' });
  const list = new SuppressionList(
    options.redis,
    queueKeys(options.prefix ?? protocolDefaults.prefix, queue),
  );
  const maxBodyBytes = options.maxBodyBytes ?? unsubscribeDefaults.maxBodyBytes;
  const bodyTimeout = options.bodyTimeout ?? unsubscribeDefaults.bodyTimeout;
  const redisTimeout = options.redisTimeout ?? unsubscribeDefaults.redisTimeout;

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const token = ROUTE.exec(pathOf(request.url))?.[1];
    if (token === undefined) return send(response, 404, plainText('Not found.\n'));
    const method = request.method ?? '';
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') {
      return send(response, 405, plainText('Method not allowed.\n'), { allow: ALLOW });
    }
    if (method === 'POST') {
      // The whole request is in before anything is decided: a client that never finishes it changes nothing.
      const body = await readBody(request, maxBodyBytes, bodyTimeout);
      if (body === 'gone') return;
      if (body === 'too-large') return sendAndClose(response, 413, plainText('Request body too large.\n'));
      if (body === 'timeout') return sendAndClose(response, 408, plainText('Request body too slow.\n'));
    }
    const verdict = verifyUnsubscribeToken(token, secrets);
    if (!verdict.ok || verdict.queue !== queue) {
      const refusal: Refusal = verdict.ok ? 'other-queue' : verdict.fault;
      // Never the token: it unsubscribes someone, and it carries their address.
      logger.debug({ method, fault: refusal }, 'unsubscribe link refused');
      return send(response, 400, plainText(REFUSALS[refusal]));
    }
    const { address, campaign } = verdict;
    // RFC 8058 §3.1: only a POST unsubscribes. Link scanners and prefetchers follow every GET.
    if (method !== 'POST') return send(response, 200, html(confirmationPage(address, token)));

    // Logs name the campaign and the address's domain, never the address: logs are kept longer and
    // read by more people than the suppression list, which already records who unsubscribed.
    const where = { campaign, domain: address.slice(address.lastIndexOf('@') + 1) };
    let added: boolean;
    try {
      const result = await withTimeout(
        list.add({ address, reason: 'unsubscribe', source: `campaign:${campaign}` }),
        redisTimeout,
      );
      added = result.added === 1;
    } catch (error) {
      const err = coerceError(error);
      if (err instanceof ValidationError) {
        // Only a token signed by a holder of the secret for something that is not an address gets
        // here. Without err: its message quotes the address.
        logger.warn(where, 'unsubscribe link with an unusable address refused');
        return send(response, 400, plainText(REFUSALS.forged));
      }
      logger.warn({ ...where, err: err.message }, 'unsubscribe not recorded: Redis failed; answered 503');
      // The mailbox provider retries a 5xx later; the person at a browser is told to.
      return send(response, 503, plainText(UNAVAILABLE), { 'retry-after': '60' });
    }
    logger.info({ ...where, added }, added ? 'unsubscribed' : 'unsubscribed again (already on the list)');
    // RFC 8058 does not say what the answer carries, and the mailbox provider shows none of it: empty
    // is enough, and has nothing to translate or leak. A browser (the confirmation page's button)
    // gets a page.
    if (prefersHtml(request.headers.accept)) return send(response, 200, html(donePage(address)));
    return send(response, 200, { type: undefined, body: '' });
  }

  return (request, response) => {
    // MUST answer (or close): a request left hanging holds a provider's connection and ours.
    handle(request, response).catch((error: unknown) => {
      logger.error({ err: coerceError(error).message }, 'unsubscribe request failed');
      if (response.headersSent) response.destroy();
      else sendAndClose(response, 500, plainText('Something went wrong. Please try again later.\n'));
    });
  };
}

/**
 * Starts the endpoint of {@link createUnsubscribeHandler} on `host:port` (0 picks a free port), once
 * Redis answers: Redis unreachable for `connectTimeout` throws MailError EREDIS naming it (without a
 * password). Its own Redis connection fails fast (no offline queue), so a request during an outage
 * gets its 503 at once; it reconnects by itself. Throws ConfigError for bad `secrets`, and the
 * listen error (EADDRINUSE...) when the port cannot be had.
 */
export async function startUnsubscribeServer(options: UnsubscribeServerOptions): Promise<UnsubscribeServer> {
  checkSecrets(options.secrets);
  const logger =
    options.logger ?? pino({ name: 'mailroom-unsubscribe', level: process.env.LOG_LEVEL ?? 'info' });
  const connectTimeout = options.connectTimeout ?? unsubscribeDefaults.connectTimeout;
  const host = options.host ?? unsubscribeDefaults.host;
  const { client: redis, owned } = createRedis(options.redis, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout,
    lazyConnect: true,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  });
  let lastError: Error | undefined;
  let lost = false;
  const onError = (error: Error) => {
    lastError = error;
    if (!lost)
      logger.warn(
        { err: error.message },
        'Redis connection failing: unsubscribes answer 503 until it is back',
      );
    lost = true;
  };
  const onReady = () => {
    if (lost) logger.info('Redis connection back');
    lastError = undefined;
    lost = false;
  };
  redis.on('error', onError);
  redis.on('ready', onReady);
  const releaseRedis = async () => {
    redis.off('error', onError);
    redis.off('ready', onReady);
    if (owned) await redis.quit().catch(() => redis.disconnect());
  };

  let server: Server;
  try {
    if (redis.status === 'wait') redis.connect().catch(() => {});
    await waitForRedis(redis, describeRedis(options.redis), connectTimeout, () => lastError);
    server = await listenHttp(createUnsubscribeHandler({ ...options, redis, logger }), options.port, host);
  } catch (error) {
    await releaseRedis();
    throw error;
  }
  const address = server.address();
  let closing: Promise<void> | undefined;
  return {
    port: typeof address === 'object' && address ? address.port : options.port,
    host,
    close() {
      closing ??= (async () => {
        try {
          await new Promise<void>((resolve) => {
            server.close(() => resolve());
            // An open keep-alive connection (a provider's, a browser's) must not hold up a shutdown.
            server.closeAllConnections();
          });
        } finally {
          // MUST release the Redis connection it opened, even if closing the server failed.
          await releaseRedis();
        }
      })();
      return closing;
    },
  };
}

/** The secrets, checked; ConfigError naming `secrets` (never a value) when there is none or one is short. */
function checkSecrets(secrets: readonly string[]): readonly string[] {
  if (!Array.isArray(secrets) || secrets.length === 0) {
    throw new ConfigError(
      'secrets: the unsubscribe endpoint needs at least one secret (MAILROOM_UNSUBSCRIBE_SECRET)',
    );
  }
  if (secrets.some((secret) => typeof secret !== 'string' || secret.length < MIN_SECRET_LENGTH)) {
    throw new ConfigError(
      `secrets: every secret must be a string of at least ${MIN_SECRET_LENGTH} characters`,
    );
  }
  return [...secrets];
}

/** The path of a request target without its query; `/` for one that does not parse. */
function pathOf(url: string | undefined): string {
  try {
    return new URL(url ?? '/', 'http://unsubscribe.invalid').pathname;
  } catch {
    return '/';
  }
}

/**
 * Reads and discards a request body, at most `limit` bytes within `timeoutMs`. `gone`: the client
 * went away (nothing can be answered). A body a framework has read already counts as read.
 */
function readBody(
  request: IncomingMessage,
  limit: number,
  timeoutMs: number,
): Promise<'read' | 'too-large' | 'timeout' | 'gone'> {
  if (request.readableEnded) return Promise.resolve('read');
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve('too-large');
  return new Promise((resolve) => {
    let received = 0;
    const finish = (outcome: 'read' | 'too-large' | 'timeout' | 'gone') => {
      clearTimeout(timer);
      request.off('data', onData);
      request.off('end', onEnd);
      request.off('close', onClose);
      request.off('error', onClose);
      resolve(outcome);
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) finish('too-large');
    };
    const onEnd = () => finish('read');
    const onClose = () => finish('gone');
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    request.on('data', onData);
    request.on('end', onEnd);
    request.on('close', onClose);
    request.on('error', onClose);
  });
}

/**
 * Whether an Accept header asks for HTML (a browser submitting the confirmation form). Mailbox
 * providers' one-click POSTs send none or `*\/*`, so they get the empty answer.
 */
function prefersHtml(accept: string | undefined): boolean {
  if (!accept) return false;
  return accept.split(',').some((range) => {
    const [type, ...parameters] = range.split(';').map((part) => part.trim().toLowerCase());
    if (type !== 'text/html') return false;
    const quality = parameters.find((parameter) => parameter.startsWith('q='));
    return quality === undefined || Number(quality.slice(2)) > 0;
  });
}

/** Settles with `work`, or rejects after `ms` (a Redis that accepts the connection and never answers). */
async function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not answer within ${ms} ms`)), ms);
  });
  // A failure after the timeout has nobody left to tell.
  work.catch(() => {});
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface Content {
  type: string | undefined;
  body: string;
}

function plainText(body: string): Content {
  return { type: 'text/plain; charset=utf-8', body };
}

function html(body: string): Content {
  return { type: 'text/html; charset=utf-8', body };
}

/** Writes a whole answer (node leaves the body out for HEAD by itself, keeping Content-Length). */
function send(
  response: ServerResponse,
  status: number,
  content: Content,
  headers: Record<string, string> = {},
): void {
  response.writeHead(status, {
    ...SECURITY_HEADERS,
    ...(content.type === undefined ? {} : { 'content-type': content.type }),
    'content-length': String(Buffer.byteLength(content.body)),
    ...headers,
  });
  response.end(content.body);
}

/**
 * Answers and closes the connection: the request's body was not (entirely) read, so the connection
 * cannot carry another request, and a client still sending is not waited for.
 */
function sendAndClose(response: ServerResponse, status: number, content: Content): void {
  // Node ends the connection after an answer with `Connection: close`, unread body or not.
  send(response, status, content, { connection: 'close' });
}

const STYLE =
  'body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:32rem;margin:12vh auto;' +
  'padding:0 1.25rem;color:#1f2328;background:#fff}h1{font-size:1.5rem;margin:0 0 1rem}' +
  'strong{overflow-wrap:anywhere}button{font:inherit;padding:.65rem 1.4rem;border:0;border-radius:.4rem;' +
  'background:#1f2328;color:#fff;cursor:pointer}button:focus-visible{outline:3px solid #0969da;outline-offset:2px}';

function page(title: string, content: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>${title}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
${content}
</main>
</body>
</html>
`;
}

/**
 * The GET page: the address (escaped) and a button POSTing the one-click body to the same URL. The
 * address is shown in full, as every ESP does: it is no secret from whoever holds the link, since the
 * token carries it readable (signed, not encrypted). The form's action is the token alone, relative to
 * this page's URL, so it stays right behind a proxy that serves the endpoint under a path prefix.
 */
function confirmationPage(address: string, token: string): string {
  return page(
    'Unsubscribe',
    `<h1>Unsubscribe</h1>
<p>Stop sending these emails to <strong>${escapeHtml(address)}</strong>?</p>
<form method="post" action="${escapeHtml(token)}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>`,
  );
}

/** The page a browser gets after the POST (the first or a repeated one). */
function donePage(address: string): string {
  return page(
    'Unsubscribed',
    `<h1>You are unsubscribed</h1>
<p><strong>${escapeHtml(address)}</strong> will not receive these emails any more.</p>`,
  );
}
