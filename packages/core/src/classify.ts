/** The one decision of transient versus permanent for every delivery failure (classifyDeliveryError). */
import { coerceError, ValidationError } from './errors.js';

/** Why a delivery failed, as a small fixed set of labels (used in ledgers, logs and metrics). */
export type FailureReason =
  | 'rejected' // 5xx reply: the server refused the message or recipient for good
  | 'deferred' // 4xx reply: try again later
  | 'invalid' // the message or an address can never be sent (validation, header injection)
  | 'too-large' // over the server's SIZE limit (or 552)
  | 'connection' // could not connect, connection dropped, DNS, TLS
  | 'timeout' // connect, greeting or socket timeout
  | 'auth' // the server refused our credentials
  | 'unknown';

/** Verdict of {@link classifyDeliveryError}. */
export interface Classification {
  /** Whether sending the same message again later can succeed. */
  transient: boolean;
  reason: FailureReason;
}

const CONNECTION_CODES = new Set([
  'ECONNECTION',
  'ESOCKET',
  'EDNS',
  'ETLS',
  'EPROTOCOL',
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EADDRNOTAVAIL',
  'EPROXY',
]);
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ETIMEOUT', 'ESOCKETTIMEDOUT', 'ECONNTIMEOUT']);
const AUTH_CODES = new Set(['EAUTH', 'ENOAUTH', 'EOAUTH2']);
/** Commands of the session rather than of a message (nodemailer's `command` of the reply). */
const SESSION_COMMANDS = /^(CONN|EHLO|HELO|LHLO|STARTTLS|GREETING)$/i;
const INVALID_CODES = new Set(['EINVALID', 'EHEADER', 'EADDRESS']);

/**
 * The one place that decides transient vs permanent (RFC 5321 §4.2.1 reply classes, nodemailer error
 * codes, Node socket errors). Everything that retries or records failures calls this.
 *
 * - a reply to a session command (greeting, EHLO, STARTTLS) is transient `connection`, 5yz included:
 *   the server refused the session, not a message;
 * - a 5yz reply to a message command is permanent (`rejected`; 552 or a SIZE refusal is `too-large`),
 *   except 503 "bad sequence", which says the session was confused, not the message refused;
 * - a 4yz reply is transient (`deferred`);
 * - connection, DNS, TLS, socket and timeout errors are transient: the message was never judged;
 * - authentication failures are transient: they concern the account, not the message, and must not
 *   burn messages as permanently failed (they dead-letter after the attempts and can be retried);
 * - validation errors (bad header, bad address, bad payload) are permanent (`invalid`);
 * - anything unrecognised is transient, so bounded retries decide.
 */
export function classifyDeliveryError(error: unknown): Classification {
  if (error instanceof ValidationError) return { transient: false, reason: 'invalid' };
  const err = coerceError(error) as Error & { code?: unknown; responseCode?: unknown; command?: unknown };
  const code = typeof err.code === 'string' ? err.code.toUpperCase() : undefined;
  const responseCode = typeof err.responseCode === 'number' ? err.responseCode : undefined;

  if (code && AUTH_CODES.has(code)) return { transient: true, reason: 'auth' };
  const command = typeof err.command === 'string' ? err.command : '';
  if (responseCode !== undefined && SESSION_COMMANDS.test(command)) {
    // A refusal of the session itself (554 greeting, "IP blocklisted", a failed EHLO or STARTTLS)
    // says nothing about any message: retry later, never fail messages for good because of it.
    return { transient: true, reason: 'connection' };
  }
  if (responseCode !== undefined && responseCode >= 400 && responseCode < 600) {
    if (responseCode === 503) return { transient: true, reason: 'deferred' };
    if (responseCode === 552 || (responseCode >= 500 && /size|too (large|big)/i.test(err.message))) {
      return { transient: false, reason: 'too-large' };
    }
    if (responseCode === 535 || responseCode === 530 || responseCode === 534)
      return { transient: true, reason: 'auth' };
    return responseCode >= 500
      ? { transient: false, reason: 'rejected' }
      : { transient: true, reason: 'deferred' };
  }
  if (code === 'EMESSAGE' && /size/i.test(err.message)) return { transient: false, reason: 'too-large' };
  if (code && INVALID_CODES.has(code)) return { transient: false, reason: 'invalid' };
  if (code === 'EENVELOPE') return { transient: false, reason: 'invalid' };
  if (code && TIMEOUT_CODES.has(code)) return { transient: true, reason: 'timeout' };
  if (code && CONNECTION_CODES.has(code)) return { transient: true, reason: 'connection' };
  if (/timed? ?out/i.test(err.message)) return { transient: true, reason: 'timeout' };
  return { transient: true, reason: 'unknown' };
}

/**
 * Enhanced status codes (RFC 3463 §3.2) that say the recipient's mailbox or domain does not exist,
 * for good: 5.1.1 bad destination mailbox, 5.1.2 bad destination system (no such domain), 5.1.3 bad
 * destination mailbox address syntax, 5.1.6 mailbox has moved, 5.1.10 the domain publishes a null MX
 * (RFC 7505). Not 5.1.0 (unspecified), 5.1.4 (ambiguous), 5.1.7 / 5.1.8 (about OUR sender address) or
 * any other class: 5.2.x is the mailbox being full or disabled, 5.7.x policy (spam, reputation,
 * DMARC), none of which says the address is dead.
 */
const MAILBOX_GONE = /^5\.1\.(?:1|2|3|6|10)$/;
// RFC 3463 §2: an enhanced status code leads the reply text (after the basic code, which the reply
// carries separately or at the start of the text).
const ENHANCED_STATUS = /^(?:[245]\d\d[ -])?\s*([245]\.\d{1,3}\.\d{1,3})\b/;
// Replies without an enhanced code (old servers) that still say "no such mailbox".
const NO_SUCH_MAILBOX =
  /\b(?:user(?: name)?|mailbox|recipient|address|account)\b[^.;]{0,40}\b(?:unknown|not found|does ?n[o']t exist|no longer exists|not exist)\b|\bno such (?:user|mailbox|recipient|address|account)\b|\bunknown (?:user|mailbox|recipient)\b/i;

/**
 * Whether a refusal of one recipient is a hard bounce: a permanent (5yz) reply that says the mailbox
 * or its domain does not exist, so that sending to it again can only hurt the sender's reputation.
 * The rule: the reply's enhanced status code decides when it has one (5.1.1, 5.1.2, 5.1.3, 5.1.6,
 * 5.1.10 are hard bounces; every other code, 5.7.x policy refusals included, is not); a 550, 551 or
 * 553 reply without an enhanced code is a hard bounce only when its text says the user or mailbox is
 * unknown. A 4yz reply never is. `response` is the server's reply text, with or without its basic code.
 */
export function isHardBounce(code: number | undefined, response: string | undefined): boolean {
  if (code === undefined || code < 500 || code > 599) return false;
  const text = (response ?? '').trim();
  const enhanced = ENHANCED_STATUS.exec(text)?.[1];
  if (enhanced !== undefined) return MAILBOX_GONE.test(enhanced);
  return (code === 550 || code === 551 || code === 553) && NO_SUCH_MAILBOX.test(text);
}
