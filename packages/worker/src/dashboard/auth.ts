/** The dashboard's credentials, sessions and CSRF tokens: who may look, and proof that a POST came from its own pages. */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { ConfigError } from '@mailroom/core';
import { HOUR } from '@mailroom/core/protocol';

/** Name of the session cookie. */
export const SESSION_COOKIE = 'mailroom_dashboard';

/** A session ends after this long without a request (in ms). */
export const SESSION_IDLE_TIMEOUT = 12 * HOUR;

/**
 * A session ends this long after its login however busy it is: an open page polls every second, so
 * without it a stolen cookie would work as long as some tab stays open.
 */
export const SESSION_MAX_AGE = 24 * HOUR;

/** Sessions kept at most: past it the least recently used goes (a login needs the token, so this is a backstop). */
const MAX_SESSIONS = 10_000;

/** How requests are authenticated. */
export type Credentials =
  | { kind: 'token'; token: string }
  | { kind: 'basic'; user: string; password: string }
  | { kind: 'none' };

/** Hosts `noAuth` may be used on: reachable from this machine only. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

/** Whether `host` is a loopback address or name (`127.0.0.1`, `::1`, `localhost`). */
export function isLoopback(host: string): boolean {
  return LOOPBACK_HOSTS.has(
    host
      .trim()
      .toLowerCase()
      .replace(/^\[(.*)\]$/, '$1'),
  );
}

/**
 * The credentials of the options, checked: a token, or a user and a password (HTTP Basic), or none
 * with `noAuth` on a loopback host. Throws ConfigError naming the setting (never its value) for no
 * credentials, a user without a password (or the reverse), a token and a user together, `noAuth`
 * with credentials, or `noAuth` on a host other computers can reach.
 */
export function resolveCredentials(options: {
  token?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  noAuth?: boolean | undefined;
  host: string;
}): Credentials {
  const token = options.token || undefined;
  const user = options.user || undefined;
  const password = options.password || undefined;
  const given = token !== undefined || user !== undefined || password !== undefined;
  if (options.noAuth) {
    if (given) {
      throw new ConfigError(
        'noAuth (--no-auth) and credentials (MAILROOM_DASHBOARD_TOKEN / MAILROOM_DASHBOARD_USER / MAILROOM_DASHBOARD_PASSWORD) are exclusive: give one of them',
      );
    }
    if (!isLoopback(options.host)) {
      throw new ConfigError(
        `noAuth (--no-auth) is only allowed on a loopback host (127.0.0.1, ::1, localhost), not ${JSON.stringify(options.host)}: anyone who can reach it could pause or cancel campaigns. Set MAILROOM_DASHBOARD_TOKEN instead`,
      );
    }
    return { kind: 'none' };
  }
  if (token !== undefined && (user !== undefined || password !== undefined)) {
    throw new ConfigError(
      'MAILROOM_DASHBOARD_TOKEN and MAILROOM_DASHBOARD_USER/MAILROOM_DASHBOARD_PASSWORD are exclusive: give a token or a user and password',
    );
  }
  if (token !== undefined) return { kind: 'token', token };
  if (user !== undefined && password !== undefined) {
    if (user.includes(':'))
      throw new ConfigError('MAILROOM_DASHBOARD_USER must not contain ":" (HTTP Basic, RFC 7617 §2)');
    return { kind: 'basic', user, password };
  }
  if (user !== undefined || password !== undefined) {
    throw new ConfigError(
      `${user === undefined ? 'MAILROOM_DASHBOARD_USER' : 'MAILROOM_DASHBOARD_PASSWORD'} is missing: HTTP Basic needs both MAILROOM_DASHBOARD_USER and MAILROOM_DASHBOARD_PASSWORD`,
    );
  }
  throw new ConfigError(
    'the dashboard refuses to start without credentials: set MAILROOM_DASHBOARD_TOKEN (or MAILROOM_DASHBOARD_USER and MAILROOM_DASHBOARD_PASSWORD), or use --no-auth on 127.0.0.1',
  );
}

/**
 * Compares a secret in constant time: both sides are hashed first, so neither the length nor the
 * first differing byte shows in the time taken.
 */
export function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The `Bearer` token of an Authorization header, if it has one. */
export function bearerToken(request: IncomingMessage): string | undefined {
  const header = request.headers.authorization;
  const match = header ? /^Bearer[ ]+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}

/** The user and password of a `Basic` Authorization header (RFC 7617), if it has them. */
export function basicCredentials(request: IncomingMessage): { user: string; password: string } | undefined {
  const header = request.headers.authorization;
  const match = header ? /^Basic[ ]+([A-Za-z0-9+/=]+)\s*$/i.exec(header) : null;
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** The cookies of a request by name (the first of a repeated name). */
export function parseCookies(request: IncomingMessage): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const equals = part.indexOf('=');
    if (equals < 0) continue;
    const name = part.slice(0, equals).trim();
    if (name && !cookies.has(name)) cookies.set(name, part.slice(equals + 1).trim());
  }
  return cookies;
}

/** Whether the request reached us over https: directly, or through a proxy that says so (X-Forwarded-Proto). */
export function overHttps(request: IncomingMessage): boolean {
  if ((request.socket as { encrypted?: boolean }).encrypted) return true;
  const forwarded = request.headers['x-forwarded-proto'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim().toLowerCase();
  return first === 'https';
}

/** One browser session: a random id the cookie carries, and a message to show on the next page. */
export interface Session {
  readonly id: string;
  /** Epoch ms of its creation (the login): it ends SESSION_MAX_AGE later. */
  readonly createdAt: number;
  lastSeen: number;
  /** A one-line result of the last action (`Campaign paused.`), shown once. */
  flash?: { kind: 'ok' | 'error'; text: string } | undefined;
}

/**
 * Sessions in this process's memory (a restart logs everyone out) and the CSRF tokens bound to
 * them. A CSRF token is the HMAC-SHA256 of the session id under a key drawn at start: a page of
 * another origin can neither read it nor compute it, and it dies with its session.
 */
export class SessionStore {
  readonly #sessions = new Map<string, Session>();
  readonly #csrfKey = randomBytes(32);
  readonly #idleTimeout: number;
  readonly #now: () => number;

  readonly #maxAge: number;

  constructor(options: { idleTimeout?: number; maxAge?: number; now?: () => number } = {}) {
    this.#idleTimeout = options.idleTimeout ?? SESSION_IDLE_TIMEOUT;
    this.#maxAge = options.maxAge ?? SESSION_MAX_AGE;
    this.#now = options.now ?? Date.now;
  }

  /** A new session (256 random bits). */
  create(): Session {
    this.#prune();
    const now = this.#now();
    const session: Session = { id: randomBytes(32).toString('base64url'), createdAt: now, lastSeen: now };
    this.#sessions.set(session.id, session);
    return session;
  }

  /**
   * The live session of an id (and marks it used), or undefined: unknown, idle past the timeout, or
   * older than the maximum age.
   */
  touch(id: string | undefined): Session | undefined {
    if (!id) return undefined;
    const session = this.#sessions.get(id);
    if (!session) return undefined;
    const now = this.#now();
    if (now - session.lastSeen > this.#idleTimeout || now - session.createdAt > this.#maxAge) {
      this.#sessions.delete(id);
      return undefined;
    }
    session.lastSeen = now;
    // Re-inserted: the Map's order is then least recently used first, for #prune.
    this.#sessions.delete(id);
    this.#sessions.set(id, session);
    return session;
  }

  /** Ends a session (logout). */
  end(id: string): void {
    this.#sessions.delete(id);
  }

  /** The CSRF token of a session. */
  csrfToken(session: Session): string {
    return createHmac('sha256', this.#csrfKey).update(session.id).digest('base64url');
  }

  /** Whether `token` is the CSRF token of `session` (constant time). */
  checkCsrf(session: Session, token: string | undefined): boolean {
    if (!token) return false;
    return sameSecret(token, this.csrfToken(session));
  }

  #prune(): void {
    const now = this.#now();
    for (const [id, session] of this.#sessions) {
      if (now - session.lastSeen > this.#idleTimeout || now - session.createdAt > this.#maxAge)
        this.#sessions.delete(id);
    }
    while (this.#sessions.size >= MAX_SESSIONS) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest === undefined) break;
      this.#sessions.delete(oldest);
    }
  }
}

/** The Set-Cookie value of a session: HttpOnly, SameSite=Strict, Path=/, Secure over https. */
export function sessionCookie(session: Session, secure: boolean): string {
  return `${SESSION_COOKIE}=${session.id}; HttpOnly; SameSite=Strict; Path=/${secure ? '; Secure' : ''}`;
}

/** The Set-Cookie value that removes the session cookie. */
export function clearedSessionCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0${secure ? '; Secure' : ''}`;
}

/**
 * Whether the request names another origin than the one it was sent to: its Origin header (or,
 * without one, its Referer) has another host than its Host header. `Origin: null` (a sandboxed
 * frame, a redirect across origins) counts as foreign. Only the host and port are compared, not the
 * scheme: behind a TLS-terminating proxy the browser's `https://` origin reaches us over http.
 */
export function foreignOrigin(request: IncomingMessage): boolean {
  const host = request.headers.host?.toLowerCase();
  const origin = request.headers.origin;
  const referer = request.headers.referer;
  const claimed = origin ?? referer;
  if (claimed === undefined) return false;
  if (claimed === 'null') return true;
  try {
    return new URL(claimed).host.toLowerCase() !== host;
  } catch {
    return true;
  }
}

/**
 * Whether a request looks like it came from a browser, which sends credentials on its own (HTTP
 * Basic, cookies): it carries an Origin, a Referer or Fetch Metadata (Sec-Fetch-Site, sent by every
 * current browser). curl and scripts send none of them.
 */
export function fromBrowser(request: IncomingMessage): boolean {
  return (
    request.headers.origin !== undefined ||
    request.headers.referer !== undefined ||
    request.headers['sec-fetch-site'] !== undefined
  );
}
