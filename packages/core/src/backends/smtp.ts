/** The SMTP backend: one pipelining SMTP session per open(), TLS, AUTH, per-recipient outcomes. */
import { isAscii } from 'node:buffer';
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { createDkimSigner, type DkimOptions, type DkimSigner } from '../dkim.js';
import { ConfigError, coerceError, DeliveryError } from '../errors.js';
import { defaultSettings, settings } from '../settings.js';
import {
  type SmtpAuth,
  SmtpSession,
  type SmtpSessionOptions,
  type SmtpTransaction,
} from '../smtp/session.js';
import {
  type BackendOptions,
  BaseEmailBackend,
  type DeliverStreamOptions,
  type DeliverStreamResult,
  type DeliveryOutcome,
  type Envelope,
  failedOutcome,
  type SettleItem,
  type StreamItem,
  type StreamSource,
} from './base.js';

/** Messages in flight per connection when MAILROOM_PIPELINE_WINDOW is not set. */
export const DEFAULT_PIPELINE_WINDOW = defaultSettings.MAILROOM_PIPELINE_WINDOW;

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
  /** mailroom extension: the name sent with EHLO. Default: the host name when it is a domain, else `[address]`. */
  clientName?: string;
  /** mailroom extension: AUTH mechanism (default XOAUTH2 with accessToken, else PLAIN, else LOGIN). */
  authMethod?: 'PLAIN' | 'LOGIN' | 'XOAUTH2';
  /** mailroom extension: OAuth 2.0 bearer token for XOAUTH2 with `username` (a function is asked at each connection). */
  accessToken?: string | (() => string | Promise<string>);
  /**
   * mailroom extension: messages in flight per connection (MAILROOM_PIPELINE_WINDOW, default 32).
   * Used by deliverStream() and by sendMessages() with failSilently; without failSilently,
   * sendMessages() sends one message at a time, so that it stops at the first failure as Django does.
   */
  pipelineWindow?: number;
  /** mailroom extension: use PIPELINING / CHUNKING when the server offers them. Default true. */
  pipelining?: boolean;
  /** See `pipelining`. */
  chunking?: boolean;
  /**
   * mailroom extension: DKIM-sign every message sent with this domain, selector and RSA key. Default:
   * the EMAIL_DKIM_* settings (no signing when they are unset); null: never sign. A bad key is a
   * ConfigError from the constructor. A DkimSigner (another backend's `dkimSigner`) is used as it is:
   * the key is then not read and checked again for every connection.
   */
  dkim?: DkimOptions | DkimSigner | null;
}

/**
 * Django's SMTP backend over mailroom's own SMTP session (smtp/session.ts): ONE connection per
 * open(), reused for every message until close(). With PIPELINING the messages of
 * {@link SmtpBackend.deliverStream} follow each other without waiting (with CHUNKING up to
 * `pipelineWindow` at once); a message the server refuses is reported and the connection goes on
 * serving the next one; only a broken connection ends it.
 *
 * With the EMAIL_DKIM_* settings (or the `dkim` option) every message it sends is DKIM-signed
 * (dkim.ts), by deliverStream(), sendMessages() and deliver() alike; a message that cannot be signed
 * fails for good and is never sent unsigned. The SMTP backend is the only one that signs: the
 * console, file and memory backends show or keep messages unsigned.
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
  /** Messages in flight per connection (MAILROOM_PIPELINE_WINDOW). */
  readonly pipelineWindow: number;
  /** The DKIM signer of every message this backend sends (EMAIL_DKIM_*), or null: sent unsigned. */
  readonly dkimSigner: DkimSigner | null;
  readonly #password: string;
  readonly #options: SmtpBackendOptions;
  #session: SmtpSession | null = null;
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
    this.pipelineWindow = options.pipelineWindow ?? settings.MAILROOM_PIPELINE_WINDOW;
    this.#options = options;
    if (this.useTls && this.useSsl) {
      throw new ConfigError(
        'EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set one of those settings to true (useTls / useSsl)',
      );
    }
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) {
      throw new ConfigError(`Invalid SMTP port ${JSON.stringify(this.port)}`);
    }
    if (!Number.isInteger(this.pipelineWindow) || this.pipelineWindow < 1) {
      throw new ConfigError(
        `Invalid pipelineWindow ${JSON.stringify(this.pipelineWindow)}: a positive integer`,
      );
    }
    // The key is read and checked here, so that a worker refuses to start with a bad one.
    const dkim = options.dkim === undefined ? dkimSettings() : options.dkim;
    this.dkimSigner = !dkim ? null : 'sign' in dkim ? dkim : createDkimSigner(dkim);
  }

  /** The live SMTP session, or null when closed. */
  get session(): SmtpSession | null {
    return this.#session;
  }

  private sessionOptions(): SmtpSessionOptions {
    const tls: ConnectionOptions = { ...this.#options.tlsOptions };
    if (this.sslCertfile) tls.cert = readFileSync(this.sslCertfile);
    if (this.sslKeyfile) tls.key = readFileSync(this.sslKeyfile);
    const { clientName, authMethod, accessToken, pipelining, chunking } = this.#options;
    let auth: SmtpAuth | undefined;
    // Django: AUTH only when both user and password are set; XOAUTH2 needs the user and a token.
    if (this.username && (this.#password || accessToken)) {
      auth = { user: this.username, pass: this.#password };
      if (authMethod) auth.method = authMethod;
      if (accessToken) auth.accessToken = accessToken;
    }
    return {
      host: this.host,
      port: this.port,
      secure: this.useSsl,
      // Django only upgrades when EMAIL_USE_TLS is set, and then requires it.
      requireStartTls: this.useTls,
      tls,
      timeout: this.timeout === null ? undefined : Math.round(this.timeout * 1000),
      ...(clientName ? { clientName } : {}),
      ...(auth ? { auth } : {}),
      ...(pipelining === false ? { pipelining } : {}),
      ...(chunking === false ? { chunking } : {}),
    };
  }

  override async open(): Promise<boolean | undefined> {
    if (this.#session) return false;
    let session: SmtpSession;
    try {
      session = await SmtpSession.connect(this.sessionOptions());
    } catch (error) {
      const err = coerceError(error);
      const failure = new DeliveryError(
        `Could not open SMTP connection to ${this.host}:${this.port}: ${err.message}`,
        {
          ...(err.code ? { code: err.code } : {}),
          ...(err.responseCode ? { responseCode: err.responseCode } : {}),
          ...((err as { response?: string }).response
            ? { response: (err as { response?: string }).response }
            : {}),
          command: (err as { command?: string }).command ?? 'CONN',
          cause: err,
        },
      );
      if (this.failSilently) {
        this.lastOpenError = failure;
        return undefined;
      }
      throw failure;
    }
    this.#session = session;
    session.onFailure(() => {
      if (this.#session === session) this.dropConnection();
    });
    this.connectionsOpened++;
    await super.open();
    return true;
  }

  private dropConnection(): void {
    this.#session = null;
    void super.close();
  }

  /** Sends QUIT and closes; a connection that does not answer QUIT within a second is destroyed. */
  override async close(): Promise<void> {
    const session = this.#session;
    this.dropConnection();
    if (session) await session.quit();
  }

  /**
   * Sends the messages `next()` hands out over this connection with up to `window` (default
   * {@link SmtpBackend.pipelineWindow}) in flight, calling `settled` once per message. Messages that
   * cannot be rendered settle at once without touching the connection. When the connection fails,
   * the messages in flight settle as connection failures and the ones taken but never written come
   * back in `unsent`; the backend is closed then.
   */
  override async deliverStream<I extends StreamItem>(
    next: StreamSource<I>,
    settled: SettleItem<I>,
    options: DeliverStreamOptions = {},
  ): Promise<DeliverStreamResult<I>> {
    if (!this.#session && (await this.open()) === undefined) {
      return { error: this.lastOpenError, unsent: [] };
    }
    const session = this.#session;
    if (!session) {
      return {
        error: new DeliveryError('SMTP connection is closed', { code: 'ECONNECTION', command: 'CONN' }),
        unsent: [],
      };
    }
    const source = async (): Promise<SmtpTransaction<I> | undefined> => {
      const item = await next();
      if (item === undefined) return undefined;
      try {
        const envelope = this.envelope(item.message, item.recipients ? { recipients: item.recipients } : {});
        // Django skips a message without recipients: not sent, not an error.
        if (envelope.to.length === 0)
          return { item, outcome: { delivered: false, accepted: [], refused: [] } };
        const bytes = item.message.message();
        // Signed last: nothing may change a byte between the signature and the wire (dot-stuffing,
        // which the receiver undoes, comes after).
        const signed = this.dkimSigner ? await this.dkimSigner.sign(bytes) : bytes;
        return { item, envelope, bytes: signed, smtpUtf8: hasUtf8Headers(bytes) };
      } catch (error) {
        return { item, outcome: failedOutcome(error) };
      }
    };
    const result = await session.stream(
      source,
      settled,
      options.window ?? this.pipelineWindow,
      options.onWaiting,
    );
    if (result.error && this.#session === session) this.dropConnection();
    return result;
  }

  protected override async deliverRendered(envelope: Envelope, rendered: Buffer): Promise<DeliveryOutcome> {
    const session = this.#session;
    if (!session || session.closed) {
      this.dropConnection();
      return failedOutcome(
        new DeliveryError('SMTP connection is closed', { code: 'ECONNECTION', command: 'CONN' }),
      );
    }
    // A signing failure throws: deliver() reports it as this message's (permanent) failure.
    const bytes = this.dkimSigner ? await this.dkimSigner.sign(rendered) : rendered;
    let outcome: DeliveryOutcome | undefined;
    let given = false;
    const result = await session.stream(
      () => {
        if (given) return undefined;
        given = true;
        return { item: undefined, envelope, bytes, smtpUtf8: hasUtf8Headers(bytes) };
      },
      (_item, settledOutcome) => {
        outcome = settledOutcome;
      },
      1,
    );
    if (result.error && this.#session === session) this.dropConnection();
    return outcome ?? failedOutcome(result.error);
  }
}

/** The EMAIL_DKIM_* settings as signer options, or null when they are unset (the settings check that the three go together). */
function dkimSettings(): DkimOptions | null {
  const domain = settings.EMAIL_DKIM_DOMAIN;
  const selector = settings.EMAIL_DKIM_SELECTOR;
  const privateKey = settings.EMAIL_DKIM_PRIVATE_KEY;
  return domain !== null && selector !== null && privateKey !== null
    ? { domain, selector, privateKey }
    : null;
}

const HEADER_END = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Whether rendered bytes carry UTF-8 in their header block: core writes non-ASCII there only for an
 * internationalised address (RFC 6532), the same verdict as EmailMessage#needsSmtpUtf8() without
 * rendering the headers a second time. (The envelope is checked by the session itself.)
 */
function hasUtf8Headers(bytes: Buffer): boolean {
  const end = bytes.indexOf(HEADER_END);
  return !isAscii(end === -1 ? bytes : bytes.subarray(0, end));
}
