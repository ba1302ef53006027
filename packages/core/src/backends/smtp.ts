/** The SMTP backend: one nodemailer SMTPConnection per open(), TLS, AUTH, per-recipient outcomes. */
import { isAscii } from 'node:buffer';
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import SMTPConnection, { type SMTPConnectionSendInfo } from 'nodemailer/lib/smtp-connection';
import { classifyDeliveryError } from '../classify.js';
import { ConfigError, coerceError, DeliveryError, MailError } from '../errors.js';
import { settings } from '../settings.js';
import {
  type BackendOptions,
  BaseEmailBackend,
  type DeliveryOutcome,
  type Envelope,
  failedOutcome,
  type RecipientRefusal,
} from './base.js';

/** Options of {@link SmtpBackend}; each defaults to the EMAIL_* setting of the same meaning. */
export interface SmtpBackendOptions extends BackendOptions {
  /** Default EMAIL_HOST. */
  host?: string;
  /** Default EMAIL_PORT. */
  port?: number;
  /** Default EMAIL_HOST_USER. AUTH only when username and password are both non-empty. */
  username?: string | null;
  /** Default EMAIL_HOST_PASSWORD. */
  password?: string | null;
  /** STARTTLS, required (EMAIL_USE_TLS). */
  useTls?: boolean;
  /** Implicit TLS (EMAIL_USE_SSL). Both useTls and useSsl is a ConfigError. */
  useSsl?: boolean;
  /** Seconds for connect, greeting and socket inactivity (EMAIL_TIMEOUT). */
  timeout?: number | null;
  /** Client certificate file, PEM (EMAIL_SSL_CERTFILE). */
  sslCertfile?: string | null;
  /** Client key file, PEM (EMAIL_SSL_KEYFILE). */
  sslKeyfile?: string | null;
  /** mailroom extension: extra Node TLS options (a private CA, servername...). */
  tlsOptions?: ConnectionOptions;
  /** mailroom extension: the name sent with EHLO. Default: nodemailer's (the host name). */
  clientName?: string;
}

type SmtpError = Error & {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
};

/**
 * Runs one SMTPConnection command and settles when it completes. nodemailer reports socket, TLS and
 * timeout failures only as an 'error' event (then 'end'), never through the pending command's
 * callback (nodemailer's own SMTP transport listens the same way), so without these listeners a
 * refused connection or a greeting timeout would leave the command waiting forever.
 */
function smtpCommand<T = void>(
  connection: SMTPConnection,
  start: (callback: (error?: Error | null, result?: T) => void) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish = (error?: Error | null, result?: T) => {
      if (settled) return;
      settled = true;
      connection.off('error', finish);
      connection.off('end', onEnd);
      if (error) reject(error);
      else resolve(result as T);
    };
    const onEnd = () =>
      finish(
        new DeliveryError('SMTP connection closed unexpectedly', { code: 'ECONNECTION', command: 'CONN' }),
      );
    connection.once('error', finish);
    connection.once('end', onEnd);
    start(finish);
  });
}

/**
 * A nodemailer error as a {@link DeliveryError} (the one error family, errors.ts), keeping its code,
 * reply, command and recipient, with the original as `cause`. A message refused for its only
 * recipient names that recipient.
 */
function deliveryError(error: SmtpError, message = error.message, command = error.command): DeliveryError {
  const recipient =
    error.recipient ?? (error.rejectedErrors?.length === 1 ? error.rejectedErrors[0]?.recipient : undefined);
  return new DeliveryError(message, {
    ...(error.code ? { code: error.code } : {}),
    ...(error.responseCode ? { responseCode: error.responseCode } : {}),
    ...(error.response ? { response: error.response } : {}),
    ...(command ? { command } : {}),
    ...(recipient ? { recipient } : {}),
    cause: error,
  });
}

function refusal(error: SmtpError): RecipientRefusal {
  const classification = classifyDeliveryError(error);
  return {
    recipient: error.recipient ?? '',
    responseCode: error.responseCode,
    response: error.response,
    transient: classification.transient,
    reason: classification.reason,
  };
}

type SendStreamFactory = (this: SMTPConnection, callback: unknown) => unknown;
const createSendStream = (SMTPConnection.prototype as unknown as { _createSendStream?: SendStreamFactory })
  ._createSendStream;

/**
 * nodemailer's SMTPConnection, writing a message's body and its terminating "." in one write
 * instead of two: the socket is corked while the body streams out (the data stream pushes the body,
 * then the terminator, on later ticks) and uncorked once they are queued. One syscall less per
 * message; the benchmark's profile showed socket writes as the worker's largest cost. Without the
 * internal hook (another nodemailer version) it is plain SMTPConnection.
 */
class CorkedSMTPConnection extends SMTPConnection {}
if (typeof createSendStream === 'function') {
  Object.defineProperty(CorkedSMTPConnection.prototype, '_createSendStream', {
    value: function (this: SMTPConnection, callback: unknown) {
      const socket = this._socket || undefined;
      socket?.cork();
      try {
        return createSendStream.call(this, callback);
      } finally {
        // After the nextTick chain that pipes body and terminator into the socket.
        if (socket) setImmediate(() => socket.uncork());
      }
    },
  });
}

/**
 * Django's SMTP backend over nodemailer's SMTPConnection: ONE connection per open(), reused for every
 * message until close(). A message the server refuses (5xx/4xx on MAIL, RCPT or DATA) is reported
 * and the session is reset with RSET, so the connection goes on serving the next message; only a
 * broken connection ends it. PIPELINING is used when the server offers it.
 */
export class SmtpBackend extends BaseEmailBackend {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly useTls: boolean;
  readonly useSsl: boolean;
  readonly timeout: number | null;
  readonly sslCertfile: string | null;
  readonly sslKeyfile: string | null;
  readonly #password: string;
  readonly #tlsOptions: ConnectionOptions;
  readonly #clientName: string | undefined;
  #connection: SMTPConnection | null = null;
  /** Number of SMTP connections this backend has opened (for metrics and tests). */
  connectionsOpened = 0;

  constructor(options: SmtpBackendOptions = {}) {
    super(options);
    this.host = options.host ?? settings.EMAIL_HOST;
    this.port = options.port ?? settings.EMAIL_PORT;
    this.username = options.username ?? settings.EMAIL_HOST_USER;
    this.#password = options.password ?? settings.EMAIL_HOST_PASSWORD;
    this.useTls = options.useTls ?? settings.EMAIL_USE_TLS;
    this.useSsl = options.useSsl ?? settings.EMAIL_USE_SSL;
    this.timeout = options.timeout === undefined ? settings.EMAIL_TIMEOUT : options.timeout;
    this.sslCertfile = options.sslCertfile === undefined ? settings.EMAIL_SSL_CERTFILE : options.sslCertfile;
    this.sslKeyfile = options.sslKeyfile === undefined ? settings.EMAIL_SSL_KEYFILE : options.sslKeyfile;
    this.#tlsOptions = options.tlsOptions ?? {};
    this.#clientName = options.clientName;
    if (this.useTls && this.useSsl) {
      throw new ConfigError(
        'EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set one of those settings to true (useTls / useSsl)',
      );
    }
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) {
      throw new ConfigError(`Invalid SMTP port ${JSON.stringify(this.port)}`);
    }
  }

  /** The live nodemailer connection, or null when closed. */
  get connection(): SMTPConnection | null {
    return this.#connection;
  }

  private connectionOptions(): SMTPConnection.Options {
    const tls: ConnectionOptions = { ...this.#tlsOptions };
    if (this.sslCertfile) tls.cert = readFileSync(this.sslCertfile);
    if (this.sslKeyfile) tls.key = readFileSync(this.sslKeyfile);
    const timeoutMs = this.timeout === null ? undefined : Math.round(this.timeout * 1000);
    return {
      host: this.host,
      port: this.port,
      secure: this.useSsl,
      requireTLS: this.useTls,
      // Django only upgrades when EMAIL_USE_TLS is set; nodemailer would do so opportunistically.
      ignoreTLS: !this.useTls,
      tls,
      ...(this.#clientName ? { name: this.#clientName } : {}),
      ...(timeoutMs === undefined
        ? {}
        : { connectionTimeout: timeoutMs, greetingTimeout: timeoutMs, socketTimeout: timeoutMs }),
      logger: false,
    };
  }

  override async open(): Promise<boolean | undefined> {
    if (this.#connection) return false;
    let connection: SMTPConnection | undefined;
    try {
      connection = new CorkedSMTPConnection(this.connectionOptions());
      // SMTPConnection emits 'error' as well as failing the pending callback; without a listener
      // the emit would crash the process. The callbacks carry the error to the caller.
      connection.on('error', () => {});
      connection.once('end', () => {
        if (this.#connection === connection) this.dropConnection();
      });
      const opening = connection;
      await smtpCommand(opening, (callback) => opening.connect(callback));
      if (this.username && this.#password) {
        await smtpCommand(opening, (callback) =>
          opening.login({ user: this.username, pass: this.#password }, (error) => callback(error)),
        );
      }
    } catch (error) {
      connection?.close();
      const err = coerceError(error) as SmtpError;
      const failure = deliveryError(
        err,
        `Could not open SMTP connection to ${this.host}:${this.port}: ${err.message}`,
        err.command ?? 'CONN',
      );
      if (this.failSilently) {
        this.lastOpenError = failure;
        return undefined;
      }
      throw failure;
    }
    this.#connection = connection;
    this.connectionsOpened++;
    await super.open();
    return true;
  }

  private dropConnection(): void {
    this.#connection = null;
    void super.close();
  }

  /** Sends QUIT and closes; a connection that does not answer QUIT within a second is destroyed. */
  override async close(): Promise<void> {
    const connection = this.#connection;
    this.dropConnection();
    if (!connection || connection.destroyed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        connection.close();
        resolve();
      }, 1000);
      timer.unref();
      connection.once('end', () => {
        clearTimeout(timer);
        resolve();
      });
      try {
        connection.quit();
      } catch {
        connection.close();
      }
    });
  }

  protected override async deliverRendered(envelope: Envelope, bytes: Buffer): Promise<DeliveryOutcome> {
    const connection = this.#connection;
    if (!connection || connection.destroyed) {
      this.dropConnection();
      return failedOutcome(
        new DeliveryError('SMTP connection is closed', { code: 'ECONNECTION', command: 'CONN' }),
      );
    }
    try {
      const info = await smtpCommand<SMTPConnectionSendInfo>(connection, (callback) =>
        connection.send(
          { from: envelope.from, to: envelope.to, size: bytes.length, use8BitMime: !isAscii(bytes) },
          bytes,
          (error, result) => callback(error, result as SMTPConnectionSendInfo),
        ),
      );
      return {
        delivered: info.accepted.length > 0,
        accepted: [...info.accepted],
        refused: (info.rejectedErrors ?? []).map((error) => refusal(error as SmtpError)),
        response: info.response,
      };
    } catch (error) {
      const err = coerceError(error) as SmtpError;
      await this.resetAfterFailure(connection);
      // Callers (sendMessages without failSilently, the worker) get the error family, not nodemailer's.
      const outcome = failedOutcome(err instanceof MailError ? err : deliveryError(err));
      if (err.rejectedErrors) outcome.refused = err.rejectedErrors.map(refusal);
      return outcome;
    }
  }

  /**
   * After a refused message the SMTP transaction must be reset (RFC 5321 §4.1.1.5) before the next
   * MAIL FROM. A connection that cannot be reset is closed, never reused in an unknown state.
   */
  private async resetAfterFailure(connection: SMTPConnection): Promise<void> {
    if (connection.destroyed) {
      if (this.#connection === connection) this.dropConnection();
      return;
    }
    try {
      await smtpCommand(connection, (callback) => connection.reset((error) => callback(error)));
    } catch {
      if (this.#connection === connection) this.dropConnection();
      connection.close();
    }
  }
}
