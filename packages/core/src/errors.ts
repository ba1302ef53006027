/**
 * The mailroom error family. Every error the packages throw on purpose is a {@link MailError} with a
 * stable `code`, so callers branch on `err.code` (or `instanceof`) rather than on message text.
 */

/** Fields a {@link MailError} may carry besides its message. */
export interface MailErrorDetails {
  /** Stable machine-readable code, e.g. `EINVALID`, `ECONFIG`, `ECONNECTION`, or a nodemailer code. */
  code?: string;
  /** SMTP reply code when a server answered, e.g. 550. */
  responseCode?: number;
  /** The full SMTP reply line(s), when a server answered. */
  response?: string;
  /** The SMTP command that got the reply (`MAIL FROM`, `RCPT TO`, `DATA`, `CONN`, `AUTH`...). */
  command?: string;
  /** The recipient an RCPT TO reply was about. */
  recipient?: string;
  /** The error this one wraps. */
  cause?: unknown;
}

/** Base class of every error mailroom throws on purpose. */
export class MailError extends Error {
  override name = 'MailError';
  /** Stable machine-readable code. */
  readonly code: string;
  readonly responseCode: number | undefined;
  readonly response: string | undefined;
  readonly command: string | undefined;
  readonly recipient: string | undefined;

  constructor(message: string, details: MailErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = details.code ?? 'EMAIL';
    this.responseCode = details.responseCode;
    this.response = details.response;
    this.command = details.command;
    this.recipient = details.recipient;
  }
}

/**
 * Bad input: a value that can never be sent as given (the "generic value error" of the family,
 * Python's ValueError in Django). Thrown before anything is sent or enqueued.
 */
export class ValidationError extends MailError {
  override name = 'ValidationError';
  /** Dotted path of the offending field when known, e.g. `to[2]` or `messages[7].subject`. */
  readonly field: string | undefined;

  constructor(message: string, details: MailErrorDetails & { field?: string } = {}) {
    super(message, { code: 'EINVALID', ...details });
    this.field = details.field;
  }
}

/** Header injection (CR or LF in a header value) or an illegal header name. Django's BadHeaderError. */
export class BadHeaderError extends ValidationError {
  override name = 'BadHeaderError';
  constructor(message: string, details: MailErrorDetails & { field?: string } = {}) {
    super(message, { code: 'EHEADER', ...details });
  }
}

/** An address that cannot be used in a header or the SMTP envelope. Messages start "Invalid address". */
export class InvalidAddressError extends ValidationError {
  override name = 'InvalidAddressError';
  constructor(message: string, details: MailErrorDetails & { field?: string } = {}) {
    super(message, { code: 'EADDRESS', ...details });
  }
}

/** A setting or backend option that is wrong; names the setting and the value. */
export class ConfigError extends MailError {
  override name = 'ConfigError';
  constructor(message: string, details: MailErrorDetails = {}) {
    super(message, { code: 'ECONFIG', ...details });
  }
}

/** A failure while talking to a mail server (connection, TLS, auth, or a refused command). */
export class DeliveryError extends MailError {
  override name = 'DeliveryError';
}

/** Characters a terminal or a log viewer may act on: C0 and C1 controls, DEL, line separators, bidi controls. */
const UNSAFE_IN_TEXT = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * A value quoted for an error message: JSON-style with every control, line-separator and bidi
 * character escaped (`\u0085`), and cut after `max` characters so an 8 MB value cannot flood a log.
 */
export function quoteValue(value: unknown, max = 80): string {
  const text = typeof value === 'string' ? value : safeStringify(value);
  const cut = text.length > max ? text.slice(0, max) : text;
  const quoted = JSON.stringify(cut).replace(
    UNSAFE_IN_TEXT,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return text.length > max ? `${quoted}... (${text.length} characters)` : quoted;
}

/**
 * Turns anything thrown into an Error, keeping the original as `cause` when it was not one.
 * Used at every catch boundary so that code downstream can rely on `.message` and `.code`.
 */
export function coerceError(
  thrown: unknown,
): Error & { code?: string | undefined; responseCode?: number | undefined } {
  if (thrown instanceof Error) return thrown;
  const text = typeof thrown === 'string' ? thrown : safeStringify(thrown);
  return new MailError(`Non-error thrown: ${text}`, { cause: thrown });
}

function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
