/**
 * The operators' dashboard (`mailroom dashboard`): a small node http server of server-rendered pages
 * over one queue (queues, campaigns, dead letters, suppression list) with bull-board under /jobs/.
 * Secure by default: it will not start without credentials unless bound to loopback with `noAuth`,
 * and every change is a POST with a CSRF token bound to the session.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { coerceError, MailError, ValidationError } from '@mailroom/core';
import { type RedisInput, SECOND, SUPPRESSION_REASONS, SuppressionList } from '@mailroom/core/protocol';
import {
  campaignStatus,
  cancelCampaign,
  openInspector,
  type Producer,
  pauseCampaign,
  resumeCampaign,
  retryCampaign,
} from '@mailroom/producer';
import { type Logger, pino } from 'pino';
import { listFailed, retryFailed } from '../dead-letters.js';
import { listenHttp } from '../http.js';
import {
  basicCredentials,
  bearerToken,
  type Credentials,
  clearedSessionCookie,
  foreignOrigin,
  fromBrowser,
  overHttps,
  parseCookies,
  resolveCredentials,
  SESSION_COOKIE,
  type Session,
  SessionStore,
  sameSecret,
  sessionCookie,
} from './auth.js';
import {
  deleteDeadLetter,
  JOB_ID,
  readCampaignRows,
  readDeadLetter,
  readFailures,
  readOverview,
  searchSuppression,
} from './data.js';
import { createJobsBoard, JOBS_PATH } from './jobs-board.js';
import {
  campaignPage,
  campaignsPage,
  deadLetterPage,
  deadLettersPage,
  loginPage,
  messagePage,
  overviewPage,
  type PageContext,
  suppressionPage,
} from './pages.js';
import { DASHBOARD_CSS, DASHBOARD_JS } from './static.js';

/** The defaults of the dashboard. */
export const dashboardDefaults = {
  /** Address it listens on: this machine only. Put a TLS proxy in front to reach it from elsewhere. */
  host: '127.0.0.1',
  /** Failed recipients a campaign page lists. */
  failuresShown: 200,
  /** Dead letters the list shows (the newest). */
  deadLettersShown: 50,
  /** Results a suppression search shows at most. */
  suppressionResults: 100,
  /** Suppression list entries a search looks at, at most (HSCAN), before it says it stopped. */
  suppressionScanLimit: 10_000,
  /** Largest form body read, in bytes. */
  maxBodyBytes: 16 * 1024,
  /** Time a client has to send a form body. */
  bodyTimeout: 10 * SECOND,
} satisfies Record<string, string | number>;

/** Options of {@link startDashboard}. */
export interface DashboardOptions {
  /** A `redis://` URL or ioredis options (a connection of its own, closed by close()), or a client the caller owns. */
  redis: RedisInput;
  /** The queue shown. Default MAILROOM_QUEUE, else `mail`. */
  queue?: string;
  /** Key prefix of the queue. Default MAILROOM_PREFIX, else `{mailroom}`. */
  prefix?: string;
  /** Shards of the queue. Default MAILROOM_SHARDS, else 1. */
  shards?: number;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Address to listen on. Default `127.0.0.1`. */
  host?: string;
  /** The access token (MAILROOM_DASHBOARD_TOKEN): the login form's, and `Authorization: Bearer`. */
  token?: string | undefined;
  /** HTTP Basic user (MAILROOM_DASHBOARD_USER), with `password`; instead of a token. */
  user?: string | undefined;
  /** HTTP Basic password (MAILROOM_DASHBOARD_PASSWORD). */
  password?: string | undefined;
  /** No credentials at all: only allowed when `host` is loopback (127.0.0.1, ::1, localhost). */
  noAuth?: boolean | undefined;
  /** pino logger. Default: JSON to stdout, level LOG_LEVEL or info. */
  logger?: Logger;
}

/** A running dashboard. */
export interface Dashboard {
  /** The port it listens on (the one picked when asked for 0). */
  readonly port: number;
  /** The address it listens on. */
  readonly host: string;
  /** `http://host:port/` (never a credential). */
  readonly url: string;
  /** Stops listening, cuts open connections, closes the Redis connection it opened. Idempotent. */
  close(): Promise<void>;
}

/** Who a request is: how it proved it may look, and its browser session if it has one. */
interface Caller {
  /** `bearer`/`basic`: the header; `session`: the login cookie; `anonymous`: noAuth. */
  via: 'bearer' | 'basic' | 'session' | 'anonymous';
  session: Session | undefined;
}

/** What a handler answers. */
interface Answer {
  status: number;
  type?: string;
  body?: string;
  headers?: Record<string, string | string[]>;
}

/**
 * Headers of every answer of the dashboard's own pages: scripts, styles, forms and fetches from
 * itself only (no inline script or style at all), never framed, never cached, the Referer kept
 * within the dashboard (it is how an action finds its way back to its page).
 */
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

/**
 * bull-board's page sets inline styles and a `<base href>`, and asks for web fonts elsewhere (left
 * blocked: it falls back to system fonts). Scripts still come only from the dashboard.
 */
const JOBS_CSP =
  "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

const CAMPAIGN_ID = /^[A-Za-z0-9_.-]{1,128}$/;
const CAMPAIGN_ACTIONS = ['pause', 'resume', 'cancel', 'retry-transient'] as const;
type CampaignAction = (typeof CAMPAIGN_ACTIONS)[number];

/** A request the handler refuses with a status and a one-line reason. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Starts the dashboard on `host:port` (default 127.0.0.1; port 0 picks a free one) once Redis
 * answers. Throws ConfigError (before opening anything) without credentials, for `noAuth` on a host
 * that is not loopback, or for half or conflicting credentials (see resolveCredentials); MailError
 * EREDIS when Redis cannot be reached; the listen error (EADDRINUSE...) when the port cannot be had.
 *
 * Auth: with `token`, a login form (`/login`) sets a session cookie (HttpOnly, SameSite=Strict,
 * Secure over https, 12 h idle), and `Authorization: Bearer <token>` is accepted on every request;
 * with `user` and `password`, HTTP Basic. CSRF: a POST that carries a cookie, or comes from a
 * browser (Origin, Referer or Sec-Fetch-Site), needs the form's `csrf` field (HMAC of its session id)
 * and an Origin/Referer of this host; only a Bearer request, or a Basic one with no cookie and no
 * browser header (curl, a script: nothing a browser sends by itself), goes without.
 */
export async function startDashboard(options: DashboardOptions): Promise<Dashboard> {
  const host = options.host ?? dashboardDefaults.host;
  const credentials = resolveCredentials({ ...options, host });
  const logger =
    options.logger ?? pino({ name: 'mailroom-dashboard', level: process.env.LOG_LEVEL ?? 'info' });
  if (credentials.kind === 'token' && credentials.token.length < 16) {
    logger.warn(
      'MAILROOM_DASHBOARD_TOKEN is shorter than 16 characters: use a long random one (openssl rand -hex 32)',
    );
  }
  // On the shard count the queue recorded: the dashboard shows every shard and never claims one.
  const producer = await openInspector({
    redis: options.redis,
    ...(options.queue === undefined ? {} : { queue: options.queue }),
    ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
    ...(options.shards === undefined ? {} : { shards: options.shards }),
    logger,
  });
  let server: Server;
  try {
    server = await listenHttp(createDashboardHandler(producer, credentials, logger), options.port, host);
  } catch (error) {
    await producer.close();
    throw error;
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    port,
    host,
    url: `http://${shownHost}:${port}/`,
    close() {
      closing ??= (async () => {
        try {
          await new Promise<void>((resolve) => {
            server.close(() => resolve());
            // Open keep-alive connections (a browser's, a poll's) must not hold up a shutdown.
            server.closeAllConnections();
          });
        } finally {
          // MUST release the Redis connection it opened, even if closing the server failed.
          await producer.close();
        }
      })();
      return closing;
    },
  };
}

/** The request handler of the dashboard over an open producer. Never throws: every request gets an answer. */
function createDashboardHandler(
  producer: Producer,
  credentials: Credentials,
  logger: Logger,
): (request: IncomingMessage, response: ServerResponse) => void {
  const sessions = new SessionStore();
  const suppression = new SuppressionList(producer.redis, producer.keys);
  const jobsBoard = createJobsBoard(producer.getQueues());

  /** Who the request is, or undefined when it did not prove anything (a wrong Bearer or Basic one is logged). */
  function identify(request: IncomingMessage): Caller | undefined {
    const caller = identifyCaller(request);
    if (!caller && request.headers.authorization !== undefined) {
      logger.warn(
        { remote: request.socket.remoteAddress, scheme: request.headers.authorization.split(' ')[0] },
        'dashboard request refused: wrong credentials',
      );
    }
    return caller;
  }

  function identifyCaller(request: IncomingMessage): Caller | undefined {
    const session = sessions.touch(parseCookies(request).get(SESSION_COOKIE));
    switch (credentials.kind) {
      case 'none':
        return { via: 'anonymous', session };
      case 'basic': {
        const given = basicCredentials(request);
        // Both compared, always: the time taken says nothing about which one was wrong.
        const userOk = given ? sameSecret(given.user, credentials.user) : false;
        const passwordOk = given ? sameSecret(given.password, credentials.password) : false;
        return userOk && passwordOk ? { via: 'basic', session } : undefined;
      }
      case 'token': {
        const bearer = bearerToken(request);
        if (bearer !== undefined)
          return sameSecret(bearer, credentials.token) ? { via: 'bearer', session } : undefined;
        return session ? { via: 'session', session } : undefined;
      }
    }
  }

  /**
   * Whether a POST must carry the csrf field. A browser sends cookies and Basic credentials on its
   * own, even for a form another site submits; it never adds a Bearer header by itself.
   */
  function needsCsrf(caller: Caller, request: IncomingMessage): boolean {
    if (caller.via === 'bearer') return false;
    if (caller.via === 'session') return true;
    return caller.session !== undefined || request.headers.cookie !== undefined || fromBrowser(request);
  }

  /** The page context; a browser without a session (Basic, noAuth) is given one, so its forms can carry a csrf token. */
  function pageContext(
    request: IncomingMessage,
    caller: Caller,
    headers: Record<string, string | string[]>,
  ): PageContext {
    let session = caller.session;
    if (!session && caller.via !== 'bearer') {
      session = sessions.create();
      headers['set-cookie'] = sessionCookie(session, overHttps(request));
    }
    const flash = session?.flash;
    if (session) session.flash = undefined;
    return {
      csrf: session ? sessions.csrfToken(session) : '',
      canLogout: caller.via === 'session',
      flash,
    };
  }

  function unauthenticated(path: string, method: string): Answer {
    const api = path.startsWith('/api/') || path === '/events' || path.startsWith(`${JOBS_PATH}/api/`);
    if (credentials.kind === 'basic') {
      return {
        status: 401,
        type: 'text/plain; charset=utf-8',
        body: 'Authentication required.\n',
        headers: { 'www-authenticate': 'Basic realm="mailroom dashboard", charset="UTF-8"' },
      };
    }
    if (method === 'POST' || api || (method !== 'GET' && method !== 'HEAD')) {
      return api
        ? {
            status: 401,
            type: 'application/json; charset=utf-8',
            body: '{"error":"authentication required"}\n',
          }
        : {
            status: 401,
            type: 'text/plain; charset=utf-8',
            body: 'Authentication required: log in at /login.\n',
          };
    }
    return { status: 303, headers: { location: '/login' } };
  }

  /** Where a mutation sends the browser back: the page it came from (same host), else `fallback`. */
  function backTo(request: IncomingMessage, fallback: string): string {
    const referer = request.headers.referer;
    if (referer && !foreignOrigin(request)) {
      try {
        const url = new URL(referer);
        if (
          url.host.toLowerCase() === request.headers.host?.toLowerCase() &&
          url.pathname !== '/login' &&
          !url.pathname.startsWith('//')
        )
          return `${url.pathname}${url.search}`;
      } catch {
        // Not a URL: the object's page.
      }
    }
    return fallback;
  }

  function html(status: number, body: string, headers: Record<string, string | string[]> = {}): Answer {
    return { status, type: 'text/html; charset=utf-8', body, headers };
  }

  function json(value: unknown): Answer {
    return { status: 200, type: 'application/json; charset=utf-8', body: `${JSON.stringify(value)}\n` };
  }

  async function login(request: IncomingMessage, method: string): Promise<Answer> {
    if (credentials.kind !== 'token') {
      return method === 'POST'
        ? { status: 404, type: 'text/plain; charset=utf-8', body: 'Not found.\n' }
        : { status: 303, headers: { location: '/' } };
    }
    if (method === 'GET' || method === 'HEAD') {
      if (sessions.touch(parseCookies(request).get(SESSION_COOKIE)))
        return { status: 303, headers: { location: '/' } };
      return html(200, loginPage(undefined));
    }
    if (method !== 'POST')
      return {
        status: 405,
        type: 'text/plain; charset=utf-8',
        body: 'Method not allowed.\n',
        headers: { allow: 'GET, HEAD, POST' },
      };
    // Login CSRF: another site must not log a browser into a session of its choosing.
    if (foreignOrigin(request)) throw new Refusal(403, 'Refused: this form was sent from another site.');
    const form = await readForm(request);
    const token = form.get('token') ?? '';
    if (!sameSecret(token, credentials.token)) {
      logger.warn({ remote: request.socket.remoteAddress }, 'dashboard login refused: wrong token');
      return html(401, loginPage('Wrong token.'));
    }
    const session = sessions.create();
    logger.info({ remote: request.socket.remoteAddress }, 'dashboard login');
    return {
      status: 303,
      headers: { location: '/', 'set-cookie': sessionCookie(session, overHttps(request)) },
    };
  }

  async function get(
    request: IncomingMessage,
    caller: Caller,
    path: string,
    query: URLSearchParams,
  ): Promise<Answer> {
    const headers: Record<string, string | string[]> = {};
    const page = (status: number, render: (context: PageContext) => string) =>
      html(status, render(pageContext(request, caller, headers)), headers);
    if (path === '/') {
      const overview = await readOverview(producer);
      return page(200, (context) => overviewPage(context, overview));
    }
    if (path === '/api/overview') return json(await readOverview(producer));
    if (path === '/campaigns') {
      const rows = await readCampaignRows(producer);
      return page(200, (context) => campaignsPage(context, rows));
    }
    if (path === '/api/campaigns') return json(await readCampaignRows(producer));
    let match = /^\/(api\/)?campaigns\/([^/]+)$/.exec(path);
    if (match) {
      const id = decodeSegment(match[2] as string);
      if (!CAMPAIGN_ID.test(id)) throw new Refusal(404, 'No such campaign.');
      const status = await campaignOrRefusal(() => campaignStatus(producer, id));
      if (match[1]) return json(status);
      const failures = await readFailures(producer, id, dashboardDefaults.failuresShown);
      return page(200, (context) => campaignPage(context, status, failures));
    }
    if (path === '/dead-letters') {
      const list = await listFailed(producer, { limit: dashboardDefaults.deadLettersShown });
      return page(200, (context) => deadLettersPage(context, list));
    }
    match = /^\/dead-letters\/([^/]+)$/.exec(path);
    if (match) {
      const id = decodeSegment(match[1] as string);
      const job = JOB_ID.test(id) ? await readDeadLetter(producer, id) : undefined;
      if (!job) throw new Refusal(404, `No job ${id} on queue ${producer.queue}.`);
      return page(200, (context) => deadLetterPage(context, job));
    }
    if (path === '/suppression') {
      const q = (query.get('q') ?? '').slice(0, 254);
      const search = await searchSuppression(suppression, producer.redis, producer.keys.suppression, q, {
        limit: dashboardDefaults.suppressionResults,
        scanLimit: dashboardDefaults.suppressionScanLimit,
      });
      return page(200, (context) => suppressionPage(context, q, search));
    }
    throw new Refusal(404, 'Not found.');
  }

  async function post(request: IncomingMessage, caller: Caller, path: string): Promise<Answer> {
    if (foreignOrigin(request)) throw new Refusal(403, 'Refused: this form was sent from another site.');
    const form = await readForm(request);
    if (
      needsCsrf(caller, request) &&
      !(caller.session && sessions.checkCsrf(caller.session, form.get('csrf') ?? undefined))
    ) {
      logger.warn(
        { path, remote: request.socket.remoteAddress },
        'dashboard POST refused: missing or wrong csrf token',
      );
      throw new Refusal(
        403,
        'Refused: the form is stale or was not sent by this dashboard. Reload the page and try again.',
      );
    }
    const flash = (kind: 'ok' | 'error', text: string) => {
      if (caller.session) caller.session.flash = { kind, text };
    };
    const redirect = (location: string): Answer => ({ status: 303, headers: { location } });

    if (path === '/logout') {
      if (caller.session) sessions.end(caller.session.id);
      return {
        status: 303,
        headers: {
          location: credentials.kind === 'token' ? '/login' : '/',
          'set-cookie': clearedSessionCookie(overHttps(request)),
        },
      };
    }
    let match = /^\/campaigns\/([^/]+)\/([a-z-]+)$/.exec(path);
    if (match && (CAMPAIGN_ACTIONS as readonly string[]).includes(match[2] as string)) {
      const id = decodeSegment(match[1] as string);
      if (!CAMPAIGN_ID.test(id)) throw new Refusal(404, 'No such campaign.');
      const action = match[2] as CampaignAction;
      const [kind, text] = await campaignAction(id, action);
      logger.info({ campaign: id, action, via: caller.via }, `dashboard: campaign ${action}`);
      flash(kind, text);
      return redirect(backTo(request, `/campaigns/${encodeURIComponent(id)}`));
    }
    match = /^\/dead-letters\/([^/]+)\/(retry|delete)$/.exec(path);
    if (match) {
      const id = decodeSegment(match[1] as string);
      if (!JOB_ID.test(id)) throw new Refusal(404, 'No such job.');
      if (match[2] === 'retry') {
        const result = await retryFailed(producer, [id]);
        const problem = result.problems[0];
        if (problem?.problem === 'not-found')
          throw new Refusal(404, `No job ${id} on queue ${producer.queue}.`);
        logger.info(
          { job: id, via: caller.via, retried: result.retried.length },
          'dashboard: dead letter retry',
        );
        if (problem) flash('error', `Job ${id} not retried: ${problem.message}.`);
        else if (result.skipped.length > 0)
          flash('error', `Job ${id} has nothing left to send (every message delivered or refused for good).`);
        else flash('ok', `Job ${id} is back on the queue: ${result.messages} message(s) to send.`);
        return redirect(backTo(request, `/dead-letters/${encodeURIComponent(id)}`));
      }
      let deleted: boolean;
      try {
        deleted = await deleteDeadLetter(producer, id);
      } catch (error) {
        if (error instanceof MailError && error.code === 'ENOTFAILED') {
          flash('error', error.message);
          return redirect(backTo(request, `/dead-letters/${encodeURIComponent(id)}`));
        }
        throw error;
      }
      if (!deleted) throw new Refusal(404, `No job ${id} on queue ${producer.queue}.`);
      logger.info({ job: id, via: caller.via }, 'dashboard: dead letter deleted');
      flash('ok', `Job ${id} deleted.`);
      // Not back to its own page: it is gone.
      return redirect('/dead-letters');
    }
    if (path === '/suppression/add') {
      const address = (form.get('address') ?? '').trim();
      const reason = form.get('reason') || 'manual';
      if (!(SUPPRESSION_REASONS as readonly string[]).includes(reason)) {
        throw new Refusal(
          400,
          `reason must be one of ${SUPPRESSION_REASONS.join(', ')} (got ${JSON.stringify(reason)}).`,
        );
      }
      const result = await invalidAs400(() =>
        suppression.add({
          address,
          reason: reason as (typeof SUPPRESSION_REASONS)[number],
          source: 'dashboard',
        }),
      );
      logger.info({ domain: domainOf(address), reason, via: caller.via }, 'dashboard: address suppressed');
      flash(
        'ok',
        result.added === 1 ? `${address} is on the suppression list.` : `${address} was on the list already.`,
      );
      return redirect(backTo(request, '/suppression'));
    }
    if (path === '/suppression/remove') {
      const address = (form.get('address') ?? '').trim();
      const removed = await invalidAs400(() => suppression.remove(address));
      logger.info({ domain: domainOf(address), removed, via: caller.via }, 'dashboard: address unsuppressed');
      flash(
        removed > 0 ? 'ok' : 'error',
        removed > 0 ? `${address} removed from the suppression list.` : `${address} was not on the list.`,
      );
      return redirect(backTo(request, '/suppression'));
    }
    throw new Refusal(404, 'Not found.');
  }

  async function campaignAction(id: string, action: CampaignAction): Promise<['ok' | 'error', string]> {
    if (action === 'retry-transient') {
      try {
        const result = await retryCampaign(producer, id, { transient: true });
        return [
          'ok',
          `${result.retried} transient failure(s) enqueued again${result.skipped > 0 ? `, ${result.skipped} skipped (${result.suppressed} suppressed)` : ''}${result.leftToOtherRetry > 0 ? `, ${result.leftToOtherRetry} left to a retry already running` : ''}.`,
        ];
      } catch (error) {
        if (error instanceof MailError && error.code === 'ECANCELLED') return ['error', error.message];
        return campaignOrRefusal(() => Promise.reject(error));
      }
    }
    const change = { pause: pauseCampaign, resume: resumeCampaign, cancel: cancelCampaign }[action];
    const wanted = { pause: 'paused', resume: 'running', cancel: 'cancelled' }[action];
    const state = await campaignOrRefusal(() => change(producer, id));
    return state === wanted
      ? ['ok', `Campaign ${id} is ${state}.`]
      : [
          'error',
          `Campaign ${id} is ${state}: it cannot be ${{ pause: 'paused', resume: 'resumed', cancel: 'cancelled' }[action]}.`,
        ];
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const method = request.method ?? 'GET';
    // DNS rebinding: without credentials, a page of any site the operator visits could reach this
    // loopback server under its own hostname (same-origin for the browser, so Origin checks pass).
    // Only loopback names are answered then.
    if (credentials.kind === 'none' && !loopbackHost(request.headers.host)) {
      return send(response, {
        status: 421,
        type: 'text/plain; charset=utf-8',
        body: 'This dashboard runs without credentials: open it as localhost, 127.0.0.1 or [::1].\n',
      });
    }
    // `//host/path` would read as another host's URL wherever the path is echoed (a Back link, a 303).
    if (request.url?.startsWith('//') || !request.url?.startsWith('/')) {
      return send(response, { status: 404, type: 'text/plain; charset=utf-8', body: 'Not found.\n' });
    }
    const { path, query } = parseTarget(request.url);
    if (path === '/static/dashboard.css' || path === '/static/dashboard.js') {
      // Public: no secret in them, and the login page needs the stylesheet.
      const css = path.endsWith('.css');
      return send(response, {
        status: 200,
        type: css ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8',
        body: css ? DASHBOARD_CSS : DASHBOARD_JS,
        headers: { 'cache-control': 'no-cache' },
      });
    }
    // Browsers ask for it on every page: an empty answer instead of a logged 404.
    if (path === '/favicon.ico') return send(response, { status: 204 });
    if (path === '/login') return send(response, await login(request, method));
    const caller = identify(request);
    if (!caller) return send(response, unauthenticated(path, method));
    if (path === JOBS_PATH || path.startsWith(`${JOBS_PATH}/`)) {
      if (method !== 'GET' && method !== 'HEAD') {
        // The board is read-only; a change to jobs goes through the dashboard's own forms.
        return send(response, {
          status: 405,
          type: 'text/plain; charset=utf-8',
          body: 'The job board is read-only.\n',
          headers: { allow: 'GET, HEAD' },
        });
      }
      if (path === JOBS_PATH) return send(response, { status: 301, headers: { location: `${JOBS_PATH}/` } });
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) response.setHeader(name, value);
      response.setHeader('content-security-policy', JOBS_CSP);
      return jobsBoard(request, response, () =>
        send(response, { status: 404, type: 'text/plain; charset=utf-8', body: 'Not found.\n' }),
      );
    }
    if (method === 'POST') return send(response, await post(request, caller, path));
    if (method === 'GET' || method === 'HEAD') return send(response, await get(request, caller, path, query));
    return send(response, {
      status: 405,
      type: 'text/plain; charset=utf-8',
      body: 'Method not allowed.\n',
      headers: { allow: 'GET, HEAD, POST' },
    });
  }

  function refusalAnswer(request: IncomingMessage, refusal: Refusal): Answer {
    const { path } = parseTarget(request.url);
    if (path.startsWith('/api/')) {
      return {
        status: refusal.status,
        type: 'application/json; charset=utf-8',
        body: `${JSON.stringify({ error: refusal.message })}\n`,
      };
    }
    const caller = identify(request);
    const context: PageContext = caller?.session
      ? { csrf: sessions.csrfToken(caller.session), canLogout: caller.via === 'session' }
      : { csrf: '', canLogout: false };
    const titles: Record<number, string> = {
      400: 'Not done',
      403: 'Refused',
      404: 'Not found',
      503: 'Unavailable',
    };
    return html(
      refusal.status,
      messagePage(
        context,
        titles[refusal.status] ?? 'Error',
        refusal.message,
        request.headers.referer && !foreignOrigin(request) ? backTo(request, '/') : '/',
      ),
    );
  }

  return (request, response) => {
    // MUST answer (or close): a request left hanging holds a browser's connection and ours.
    handle(request, response).catch((error: unknown) => {
      if (response.headersSent) {
        response.destroy();
        return;
      }
      if (error instanceof Refusal) return send(response, refusalAnswer(request, error));
      const err = coerceError(error);
      if (err instanceof MailError && err.code === 'EREDIS') {
        logger.warn({ err: err.message }, 'dashboard request failed: Redis unreachable');
        return send(
          response,
          refusalAnswer(request, new Refusal(503, 'Redis is not answering. Try again in a moment.')),
        );
      }
      logger.error({ err: err.message, path: parseTarget(request.url).path }, 'dashboard request failed');
      send(response, {
        status: 500,
        type: 'text/plain; charset=utf-8',
        body: 'Something went wrong; the dashboard log says what.\n',
        headers: { connection: 'close' },
      });
    });
  };
}

/** Runs a campaign read or change; an unknown or lost campaign is a 404 saying so. */
async function campaignOrRefusal<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof MailError && (error.code === 'ENOTFOUND' || error.code === 'EDATALOST')) {
      throw new Refusal(404, error.message);
    }
    throw error;
  }
}

/** Runs a suppression list change; a bad address or reason is a 400 saying what was wrong. */
async function invalidAs400<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof ValidationError) throw new Refusal(400, error.message);
    throw error;
  }
}

/** The domain of an address, for logs (never the whole address). */
function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}

/** A percent-decoded path segment; one that does not decode is kept as it is (and matches no id). */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The path and query of a request target; `/` for one that does not parse. */
function parseTarget(url: string | undefined): { path: string; query: URLSearchParams } {
  try {
    const parsed = new URL(url ?? '/', 'http://dashboard.invalid');
    return { path: parsed.pathname, query: parsed.searchParams };
  } catch {
    return { path: '/', query: new URLSearchParams() };
  }
}

/** Reads a form body (application/x-www-form-urlencoded), at most maxBodyBytes within bodyTimeout. */
async function readForm(request: IncomingMessage): Promise<URLSearchParams> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > dashboardDefaults.maxBodyBytes) {
    throw new Refusal(413, 'Request body too large.');
  }
  const chunks: Buffer[] = [];
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => finish(new Refusal(408, 'Request body too slow.')),
      dashboardDefaults.bodyTimeout,
    );
    const finish = (error?: Error) => {
      clearTimeout(timer);
      request.off('data', onData);
      request.off('end', onEnd);
      request.off('error', onError);
      if (error) reject(error);
      else resolve();
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > dashboardDefaults.maxBodyBytes) finish(new Refusal(413, 'Request body too large.'));
      else chunks.push(chunk);
    };
    const onEnd = () => finish();
    const onError = (error: Error) => finish(error);
    request.on('data', onData);
    request.on('end', onEnd);
    request.on('error', onError);
  });
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** Writes a whole answer with the security headers (node leaves the body out for HEAD by itself). */
function send(response: ServerResponse, answer: Answer): void {
  const body = answer.body ?? '';
  const closeAfter = answer.status === 413 || answer.status === 408;
  response.writeHead(answer.status, {
    ...SECURITY_HEADERS,
    ...(answer.type ? { 'content-type': answer.type } : {}),
    'content-length': String(Buffer.byteLength(body)),
    ...(closeAfter ? { connection: 'close' } : {}),
    ...answer.headers,
  });
  response.end(body);
}

/** Whether a Host header names this machine's loopback: localhost, 127.0.0.1 or [::1], any port. */
function loopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    return ['localhost', '127.0.0.1', '[::1]'].includes(new URL(`http://${host}`).hostname.toLowerCase());
  } catch {
    return false;
  }
}
