/** One-click unsubscribe tokens (RFC 8058): queue, campaign, address and expiry, signed with HMAC-SHA256. */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { ConfigError, ValidationError } from '../errors.js';
import { DAY } from './defaults.js';
import { normalizeSuppressedAddress } from './suppression.js';

/** What a valid token says: whose unsubscribe it is, and from what. */
export interface UnsubscribeClaim {
  /** The queue whose suppression list the address goes on. */
  queue: string;
  /** The campaign the message belonged to. */
  campaign: string;
  /** The recipient, normalised as the suppression list keys it. */
  address: string;
  /** Epoch ms after which the token is refused. */
  expiresAt: number;
}

/** Why {@link verifyUnsubscribeToken} refused a token. */
export type UnsubscribeTokenFault = 'malformed' | 'forged' | 'expired';

/** The verdict on a token: the claim, or why it was refused. */
export type UnsubscribeVerdict =
  | ({ ok: true } & UnsubscribeClaim)
  | { ok: false; fault: UnsubscribeTokenFault };

/** How long a token works by default: a year (people unsubscribe from old newsletters too). */
export const UNSUBSCRIBE_TOKEN_LIFETIME = 365 * DAY;

/** A secret shorter than this is refused: it would make tokens guessable. */
export const MIN_SECRET_LENGTH = 16;

/** Bytes of the HMAC-SHA256 kept in a token (128 bits: a forgery needs 2^128 tries on average). */
const MAC_BYTES = 16;
/** Domain separation: the same secret used elsewhere cannot produce a valid unsubscribe token. */
const CONTEXT = 'mailroom-unsubscribe-v1\n';
/** A token longer than this is malformed before anything is decoded (a header, a URL path). */
const MAX_TOKEN_LENGTH = 1024;
const TOKEN = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{22})$/;

/**
 * The secrets of MAILROOM_UNSUBSCRIBE_SECRET: one, or several separated by whitespace (the first
 * signs, every one verifies, so a secret can be rotated without breaking the links already sent).
 * Throws ConfigError naming the setting (never a value) when it is empty or a secret is shorter than
 * {@link MIN_SECRET_LENGTH} characters.
 */
export function parseUnsubscribeSecrets(
  value: string | null | undefined,
  setting = 'MAILROOM_UNSUBSCRIBE_SECRET',
): string[] {
  const secrets = (value ?? '').split(/\s+/).filter((secret) => secret !== '');
  if (secrets.length === 0) {
    throw new ConfigError(`${setting} is not set: one-click unsubscribe links need a secret to sign them`);
  }
  if (secrets.some((secret) => secret.length < MIN_SECRET_LENGTH)) {
    throw new ConfigError(
      `${setting} holds a secret shorter than ${MIN_SECRET_LENGTH} characters (use e.g. \`openssl rand -hex 32\`)`,
    );
  }
  return secrets;
}

function mac(secret: string, payload: string): Buffer {
  return createHmac('sha256', secret).update(CONTEXT).update(payload).digest().subarray(0, MAC_BYTES);
}

/**
 * Signs a token for one recipient of one campaign: URL-safe (base64url, a dot), about 100 characters
 * for a usual address. `secret` is one secret (the first of MAILROOM_UNSUBSCRIBE_SECRET). Throws
 * ValidationError for an address that is not one.
 */
export function signUnsubscribeToken(
  claim: { queue: string; campaign: string; address: string; expiresAt?: number },
  secret: string,
): string {
  const address = normalizeSuppressedAddress(claim.address);
  const expiresAt = claim.expiresAt ?? Date.now() + UNSUBSCRIBE_TOKEN_LIFETIME;
  // NaN or Infinity would be signed as JSON null: a link that never works, found out only when clicked.
  if (!Number.isFinite(expiresAt)) {
    throw new ValidationError(`expiresAt must be a finite epoch ms (got ${expiresAt})`, {
      field: 'expiresAt',
    });
  }
  const payload = Buffer.from(
    JSON.stringify([1, claim.queue, claim.campaign, address, Math.ceil(expiresAt / 1000)]),
  ).toString('base64url');
  return `${payload}.${mac(secret, payload).toString('base64url')}`;
}

/**
 * Checks a token: its signature against every secret (constant-time), then its expiry. A token that
 * does not parse is `malformed`, one whose signature matches no secret (altered, forged, signed with
 * another secret) is `forged`, one past its expiry `expired`. Never throws for a bad token.
 */
export function verifyUnsubscribeToken(
  token: string,
  secrets: readonly string[],
  now = Date.now(),
): UnsubscribeVerdict {
  if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH) return { ok: false, fault: 'malformed' };
  const match = TOKEN.exec(token);
  if (!match) return { ok: false, fault: 'malformed' };
  const [, payload, signature] = match as unknown as [string, string, string];
  // Compared in its encoded form: 22 base64url characters carry 132 bits for the 128 of the MAC, so
  // decoding would accept 16 spellings of every signature (the last character's low bits are
  // ignored), and a token altered there would still verify.
  const given = Buffer.from(signature, 'latin1');
  // Every secret is tried, so the time taken does not say which one matched.
  let valid = false;
  for (const secret of secrets) {
    valid =
      timingSafeEqual(Buffer.from(mac(secret, payload).toString('base64url'), 'latin1'), given) || valid;
  }
  if (!valid) return { ok: false, fault: 'forged' };
  let fields: unknown;
  try {
    fields = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return { ok: false, fault: 'malformed' };
  }
  if (
    !Array.isArray(fields) ||
    fields.length !== 5 ||
    fields[0] !== 1 ||
    typeof fields[1] !== 'string' ||
    typeof fields[2] !== 'string' ||
    typeof fields[3] !== 'string' ||
    !Number.isSafeInteger(fields[4])
  ) {
    return { ok: false, fault: 'malformed' };
  }
  const expiresAt = (fields[4] as number) * 1000;
  if (expiresAt <= now) return { ok: false, fault: 'expired' };
  return { ok: true, queue: fields[1], campaign: fields[2], address: fields[3], expiresAt };
}

/**
 * The one-click URL of a token: `<endpoint>/unsubscribe/<token>`, where `endpoint` is the https base
 * URL the unsubscribe server is reachable at (a path prefix is kept). Throws ValidationError naming
 * `field` for an endpoint that is not an https URL (RFC 8058 §3 requires HTTPS), has a query or a fragment.
 */
export function unsubscribeUrl(endpoint: string, token: string, field = 'unsubscribe.endpoint'): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new ValidationError(`${field} must be an https:// URL (got ${JSON.stringify(endpoint)})`, {
      field,
    });
  }
  if (url.protocol !== 'https:' || url.search !== '' || url.hash !== '' || url.username || url.password) {
    // The message must not repeat a password given in the URL (it ends up in logs and terminals).
    if (url.password) url.password = '***';
    const shown = url.password ? url.href : endpoint;
    throw new ValidationError(
      `${field} must be an https:// URL without query, fragment or credentials (got ${JSON.stringify(shown)})`,
      { field },
    );
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}/unsubscribe/${token}`;
}
