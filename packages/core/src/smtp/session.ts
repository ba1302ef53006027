/** mailroom's SMTP client session: connect, EHLO, STARTTLS, AUTH, then messages pipelined in a window. */
import { isAscii } from 'node:buffer';
import net from 'node:net';
import { hostname } from 'node:os';
import tls, { type ConnectionOptions } from 'node:tls';
import type { DeliveryOutcome, Envelope, RecipientRefusal } from '../backends/base.js';
import { failedOutcome } from '../backends/base.js';
import { classifyDeliveryError } from '../classify.js';
import { DeliveryError } from '../errors.js';
import { framePayload, type PayloadMode, payloadLength } from './payload.js';
import { isPositive, protocolError, ReplyParser, replyText, type SmtpReply } from './reply.js';

/** Credentials for AUTH. */
export interface SmtpAuth {
  user: string;
  /** Password for PLAIN and LOGIN. Never logged, never part of an error. */
  pass?: string;
  /** Mechanism; default XOAUTH2 with an access token, else PLAIN when offered, else LOGIN. */
  method?: 'PLAIN' | 'LOGIN' | 'XOAUTH2';
  /** OAuth 2.0 bearer token for XOAUTH2 (a function is called at every connection, to refresh it). */
  accessToken?: string | (() => string | Promise<string>);
}

/** Options of {@link SmtpSession.connect}. */
export interface SmtpSessionOptions {
  host: string;
  port: number;
  /** Implicit TLS from the first byte (SMTPS, usually port 465). */
  secure?: boolean;
  /** Upgrade with STARTTLS, and fail when the server does not offer it. */
  requireStartTls?: boolean;
  /** Node TLS options; certificates are verified unless `rejectUnauthorized: false` is given. */
  tls?: ConnectionOptions;
  /** Milliseconds any wait may last (connect, greeting, every reply); undefined waits forever, as Django does. */
  timeout?: number | undefined;
  /** The name sent with EHLO. Default: the host name when it is a domain, else the local address literal. */
  clientName?: string;
  auth?: SmtpAuth;
  /** Use PIPELINING when offered. Default true. */
  pipelining?: boolean;
  /** Use CHUNKING (BDAT) when offered. Default true. */
  chunking?: boolean;
}

/** What the server offered in its EHLO reply. */
export interface SmtpExtensions {
  pipelining: boolean;
  chunking: boolean;
  eightBitMime: boolean;
  smtpUtf8: boolean;
  startTls: boolean;
  /** SIZE limit in bytes (0: no limit announced) or undefined without SIZE. */
  size: number | undefined;
  /** AUTH mechanisms, upper case. */
  auth: string[];
}

/** One message handed to {@link SmtpSession.stream}: the caller's item, its envelope and bytes. */
export interface SmtpMessageTransaction<T> {
  item: T;
  envelope: Envelope;
  bytes: Buffer;
  /** The message needs SMTPUTF8 beyond what its envelope shows (UTF-8 addresses in its headers). */
  smtpUtf8?: boolean;
}

/**
 * A message the caller already knows cannot be sent (it could not be rendered): settled in turn
 * like the others, with this outcome, without touching the connection.
 */
export interface SmtpSettledTransaction<T> {
  item: T;
  outcome: DeliveryOutcome;
}

/** What a {@link TransactionSource} hands out. */
export type SmtpTransaction<T> = SmtpMessageTransaction<T> | SmtpSettledTransaction<T>;

/** Where {@link SmtpSession.stream} takes its messages: undefined ends the stream (or stops it early). */
export type TransactionSource<T> = () =>
  | SmtpTransaction<T>
  | undefined
  | Promise<SmtpTransaction<T> | undefined>;

/**
 * Called once per message with what became of it, in the order the replies arrive. A returned
 * promise keeps the message's place in the window until it settles (the worker resolves it once the
 * outcome is in its ledger), so at most `window` messages are ever sent but not yet recorded.
 */
export type SettleTransaction<T> = (item: T, outcome: DeliveryOutcome) => void | Promise<void>;

/** How a {@link SmtpSession.stream} ended. */
export interface StreamResult<T> {
  /** The connection failure that ended it early; the session is unusable afterwards. */
  error: Error | undefined;
  /** Items taken from the source but never written to the connection: send them again elsewhere. */
  unsent: T[];
}

type ReplyHandler = (reply: SmtpReply) => void;

/** A message's framed bytes and MAIL parameters, shared by its follow-up transactions. */
interface Prepared {
  chunks: Buffer[];
  size: number;
  params: string;
}

interface Pending {
  onReply: ReplyHandler;
  /** Called instead of onReply when the connection fails first. */
  onFailure: ((error: Error) => void) | undefined;
}

/** A message on its way through one connection. */
interface Tx<T> {
  item: T;
  envelope: Envelope;
  chunks: Buffer[];
  size: number;
  params: string;
  mail: SmtpReply | undefined;
  accepted: string[];
  refused: { recipient: string; reply: SmtpReply }[];
  /** Recipients refused with 452 while others were accepted: a second transaction takes them. */
  tooMany: string[];
  /** Written while an earlier message of the window later failed with its transaction maybe open. */
  suspect: boolean;
  /** Sent again once already after a suspect 503. */
  retried: boolean;
  /** The first transaction of this message, when this is a follow-up for "too many recipients". */
  root: Tx<T> | undefined;
  /** Follow-ups still to come (on a root). */
  followUps: number;
  rounds: number;
  done: boolean;
  /** On a root with follow-ups: the outcome so far. */
  outcome: DeliveryOutcome | undefined;
}

/** Follow-up transactions for recipients refused as "too many" (RFC 5321 §4.5.3.1.10), per message. */
const MAX_FOLLOW_UPS = 50;
const FORBIDDEN_IN_PATH = /[\x00-\x1f\x7f<>]/;
const QUIT_WAIT_MS = 1000;

function replyError(
  what: string,
  reply: SmtpReply,
  command: string,
  code: string,
  recipient?: string,
): DeliveryError {
  const text = replyText(reply);
  return new DeliveryError(`${what}: ${text}`, {
    code,
    responseCode: reply.code,
    response: text,
    command,
    ...(recipient ? { recipient } : {}),
  });
}

function refusal(recipient: string, reply: SmtpReply): RecipientRefusal {
  const text = replyText(reply);
  const classification = classifyDeliveryError(
    new DeliveryError(text, { responseCode: reply.code, response: text, command: 'RCPT TO' }),
  );
  return {
    recipient,
    responseCode: reply.code,
    response: text,
    transient: classification.transient,
    reason: classification.reason,
  };
}

/** "452 4.5.3 Too many recipients" (RFC 5321 §4.5.3.1.10): send the rest in another transaction. */
function isTooMany(reply: SmtpReply): boolean {
  return (
    reply.code === 452 && (reply.enhanced === '4.5.3' || /too many recipients/i.test(reply.lines[0] ?? ''))
  );
}

const DOMAIN_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/i;

function defaultClientName(socket: net.Socket): string {
  const name = hostname();
  if (DOMAIN_NAME.test(name)) return name;
  const address = socket.localAddress ?? '127.0.0.1';
  return net.isIPv6(address) ? `[IPv6:${address}]` : `[${address}]`;
}

/**
 * One SMTP connection, mailroom's own client. After {@link SmtpSession.connect} (greeting, EHLO or
 * HELO, STARTTLS, AUTH), {@link SmtpSession.stream} sends messages with as many in flight as the
 * server allows: with PIPELINING and CHUNKING each message is `MAIL`, `RCPT`s and `BDAT n LAST` with
 * its bytes, written without waiting, up to `window` messages ahead; with PIPELINING alone the next
 * message's commands go out with the previous body, so a message costs one round trip; without
 * PIPELINING every command waits for its reply. Replies are matched to commands in order; a refusal
 * concerns only its message; a failed connection fails every message without its final reply.
 */
export class SmtpSession {
  readonly #options: SmtpSessionOptions;
  #socket: net.Socket;
  #parser = new ReplyParser();
  readonly #pending: Pending[] = [];
  #failure: Error | undefined;
  #quitting = false;
  /** A failed transaction may still be open on the server: RSET before the next MAIL (RFC 5321 §4.1.1.5). */
  #needsReset = false;
  #corked = false;
  #timer: NodeJS.Timeout | undefined;
  #lastActivity = Date.now();
  readonly #failureListeners = new Set<(error: Error) => void>();
  /** What the server offered (after STARTTLS, the second EHLO's answer). */
  extensions: SmtpExtensions = parseExtensions(undefined);
  /** The server's greeting line. */
  greeting = '';

  private constructor(options: SmtpSessionOptions, socket: net.Socket) {
    this.#options = options;
    this.#socket = socket;
  }

  /** Opens a connection and makes it ready to send: greeting, EHLO/HELO, STARTTLS, AUTH. */
  static async connect(options: SmtpSessionOptions): Promise<SmtpSession> {
    const socket = await openSocket(options);
    const session = new SmtpSession(options, socket);
    session.#attach(socket);
    try {
      await session.#handshake();
    } catch (error) {
      session.destroy();
      throw error;
    }
    return session;
  }

  /** Whether the connection is gone (failed, closed by the server, or closed by us). */
  get closed(): boolean {
    return this.#failure !== undefined || this.#quitting;
  }

  /** Calls `listener` once if the connection fails (or the server closes it) while open. */
  onFailure(listener: (error: Error) => void): () => void {
    this.#failureListeners.add(listener);
    return () => this.#failureListeners.delete(listener);
  }

  // ---- Session setup ----------------------------------------------------------------------

  async #handshake(): Promise<void> {
    const greeting = await this.#command(undefined, 'GREETING');
    if (greeting.code !== 220)
      throw replyError('The server refused the session', greeting, 'CONN', 'EPROTOCOL');
    this.greeting = greeting.lines[0] ?? '';
    await this.#hello();
    if (this.#options.requireStartTls && !(this.#socket instanceof tls.TLSSocket)) {
      if (!this.extensions.startTls) {
        throw new DeliveryError('The SMTP server does not offer STARTTLS, which EMAIL_USE_TLS requires', {
          code: 'ETLS',
          command: 'STARTTLS',
        });
      }
      const reply = await this.#command('STARTTLS', 'STARTTLS');
      if (reply.code !== 220) throw replyError('STARTTLS refused', reply, 'STARTTLS', 'ETLS');
      await this.#upgrade();
      await this.#hello();
    }
    if (this.#options.auth) await this.#authenticate(this.#options.auth);
  }

  async #hello(): Promise<void> {
    const name = this.#options.clientName ?? defaultClientName(this.#socket);
    const ehlo = await this.#command(`EHLO ${name}`, 'EHLO');
    if (isPositive(ehlo)) {
      this.extensions = parseExtensions(ehlo);
      return;
    }
    if (ehlo.code === 421) throw replyError('The server closed the session', ehlo, 'EHLO', 'ECONNECTION');
    const helo = await this.#command(`HELO ${name}`, 'HELO');
    if (!isPositive(helo)) throw replyError('HELO refused', helo, 'HELO', 'EPROTOCOL');
    this.extensions = parseExtensions(undefined);
  }

  /** STARTTLS: anything the server sent after its 220 would be injected plaintext (CVE-2011-0411). */
  async #upgrade(): Promise<void> {
    if (this.#parser.buffered > 0)
      throw protocolError('data after the STARTTLS reply, before the TLS handshake');
    const plain = this.#socket;
    this.#detach(plain);
    const options = this.#options;
    const secure = tls.connect({
      ...tlsDefaults(options),
      socket: plain,
    });
    this.#socket = secure;
    this.#parser = new ReplyParser();
    this.#attach(secure);
    await waitFor(secure, 'secureConnect', options.timeout, 'TLS handshake');
  }

  async #authenticate(auth: SmtpAuth): Promise<void> {
    const offered = this.extensions.auth;
    const method =
      auth.method ??
      (auth.accessToken
        ? 'XOAUTH2'
        : offered.includes('PLAIN') || !offered.includes('LOGIN')
          ? 'PLAIN'
          : 'LOGIN');
    if (offered.length === 0) {
      throw new DeliveryError('The SMTP server does not offer AUTH, but a user and password are set', {
        code: 'EAUTH',
        command: 'AUTH',
      });
    }
    if (!offered.includes(method)) {
      throw new DeliveryError(
        `The SMTP server does not offer AUTH ${method} (it offers ${offered.join(', ')})`,
        {
          code: 'EAUTH',
          command: `AUTH ${method}`,
        },
      );
    }
    const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
    const command = `AUTH ${method}`;
    let reply: SmtpReply;
    if (method === 'PLAIN') {
      reply = await this.#command(`AUTH PLAIN ${b64(`\0${auth.user}\0${auth.pass ?? ''}`)}`, command);
    } else if (method === 'LOGIN') {
      reply = await this.#command('AUTH LOGIN', command);
      if (reply.code === 334) reply = await this.#command(b64(auth.user), command);
      if (reply.code === 334) reply = await this.#command(b64(auth.pass ?? ''), command);
    } else {
      const token =
        typeof auth.accessToken === 'function' ? await auth.accessToken() : (auth.accessToken ?? '');
      reply = await this.#command(
        `AUTH XOAUTH2 ${b64(`user=${auth.user}\x01auth=Bearer ${token}\x01\x01`)}`,
        command,
      );
      // A 334 carries the error as a challenge; the empty answer makes the server send its final code.
      if (reply.code === 334) reply = await this.#command('', command);
    }
    if (reply.code !== 235) throw replyError(`Authentication failed (${command})`, reply, command, 'EAUTH');
  }

  // ---- Wire ---------------------------------------------------------------------------------

  #attach(socket: net.Socket): void {
    socket.on('data', this.#onData);
    socket.on('error', this.#onError);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
  }

  #detach(socket: net.Socket): void {
    socket.off('data', this.#onData);
    socket.off('error', this.#onError);
    socket.off('end', this.#onEnd);
    socket.off('close', this.#onEnd);
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#lastActivity = Date.now();
    const parser = this.#parser;
    const replies = parser.push(chunk);
    for (const reply of replies) {
      if (this.#failure) return;
      const pending = this.#pending.shift();
      if (!pending) {
        this.#fail(
          reply.code === 421
            ? replyError('The server closed the session', reply, 'CONN', 'ECONNECTION')
            : protocolError(`a reply no command asked for: ${JSON.stringify(replyText(reply).slice(0, 80))}`),
        );
        return;
      }
      pending.onReply(reply);
      // 421: the server is closing the connection (RFC 5321 §3.8); nothing after it will be answered.
      if (reply.code === 421 && !this.#failure) {
        this.#fail(replyError('The server closed the session', reply, 'CONN', 'ECONNECTION'));
        return;
      }
    }
    // Replies completed before a malformed line were matched above; nothing after it can be.
    if (parser.error) this.#fail(parser.error);
    else if (this.#pending.length === 0) this.#disarm();
  };

  readonly #onError = (error: Error & { code?: string }): void => {
    // ESOCKET, as nodemailer reports it (the Node code, e.g. ECONNRESET, stays on the cause).
    this.#fail(
      new DeliveryError(`SMTP connection error: ${error.message}`, {
        code: 'ESOCKET',
        command: 'CONN',
        cause: error,
      }),
    );
  };

  readonly #onEnd = (): void => {
    if (this.#quitting) return;
    this.#fail(
      new DeliveryError('The SMTP server closed the connection', { code: 'ECONNECTION', command: 'CONN' }),
    );
  };

  #fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    this.#disarm();
    this.#socket.destroy();
    const pending = this.#pending.splice(0);
    for (const entry of pending) entry.onFailure?.(error);
    for (const listener of [...this.#failureListeners]) listener(error);
    this.#failureListeners.clear();
  }

  /**
   * Writes now; everything written before the event loop moves on leaves in one segment: the socket
   * stays corked until setImmediate, after the promise callbacks that hand out the next message. A
   * body and the next message's commands written apart would let the server answer in two small
   * writes, and a server with Nagle's algorithm on (Postfix) then holds the second until our
   * delayed ACK, 40 ms later.
   */
  #write(data: string | Buffer, onWritten?: () => void): void {
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      setImmediate(this.#uncork);
    }
    if (onWritten) this.#socket.write(data, onWritten);
    else this.#socket.write(data);
  }

  readonly #uncork = (): void => {
    this.#corked = false;
    this.#socket.uncork();
  };

  readonly #touch = (): void => {
    this.#lastActivity = Date.now();
  };

  #expect(onReply: ReplyHandler, onFailure?: (error: Error) => void): void {
    if (this.#pending.length === 0) this.#lastActivity = Date.now();
    this.#pending.push({ onReply, onFailure });
    this.#arm();
  }

  /** One command (or, with undefined, the greeting) and its reply; rejects if the connection fails. */
  #command(line: string | undefined, name: string): Promise<SmtpReply> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#expect(resolve, (error) =>
        reject(
          error instanceof DeliveryError && error.command === 'CONN'
            ? new DeliveryError(error.message, {
                code: error.code,
                ...(error.responseCode ? { responseCode: error.responseCode } : {}),
                ...(error.response ? { response: error.response } : {}),
                command: name,
                cause: error,
              })
            : error,
        ),
      );
      if (line !== undefined) this.#write(`${line}\r\n`);
    });
  }

  /** Reply timeout: EMAIL_TIMEOUT of silence while a reply is awaited fails the connection. */
  #arm(): void {
    const timeout = this.#options.timeout;
    if (timeout === undefined || this.#timer) return;
    this.#timer = setTimeout(this.#check, timeout);
  }

  readonly #check = (): void => {
    this.#timer = undefined;
    const timeout = this.#options.timeout;
    if (timeout === undefined || this.#pending.length === 0 || this.#failure) return;
    const idle = Date.now() - this.#lastActivity;
    if (idle >= timeout) {
      this.#fail(
        new DeliveryError(`No reply from the SMTP server within ${timeout / 1000} s`, {
          code: 'ETIMEDOUT',
          command: 'CONN',
        }),
      );
      return;
    }
    this.#timer = setTimeout(this.#check, timeout - idle);
  };

  #disarm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  // ---- Messages -----------------------------------------------------------------------------

  /**
   * Sends messages from `source` over this connection. At most `window` messages are taken and not
   * yet acknowledged (a settle promise still pending) at once; of those, on the wire without their
   * final reply: `window` with PIPELINING and CHUNKING, 2 with PIPELINING alone (the next message can
   * only follow the previous body) plus a third taken in advance, 1 without PIPELINING. Each message
   * is settled exactly once; a message refused by the server settles with its refusal, and the others
   * go on. `onWaiting` is called whenever the stream can only go on once settled messages are
   * acknowledged (the window is full of them, or nothing else is on the wire): a caller that
   * acknowledges in groups must finish its group then. Resolves when the source ends and every
   * message is settled, or when the connection fails (every message without its final reply settles
   * as a connection failure, and items never written come back as `unsent`). Rejects only when
   * `settle` rejects, after the messages in flight are settled.
   */
  stream<T>(
    source: TransactionSource<T>,
    settle: SettleTransaction<T>,
    window: number,
    onWaiting?: () => void,
  ): Promise<StreamResult<T>> {
    const ext = this.extensions;
    const mode: PayloadMode = ext.chunking && this.#options.chunking !== false ? 'bdat' : 'data';
    const pipelined = ext.pipelining && this.#options.pipelining !== false;
    const capacity = Math.max(1, Math.floor(window));
    // DATA: one message waiting for its final reply, one for its 354, and one more taken in advance
    // so that its commands leave with the previous body (it is not on the wire before that).
    const wireLimit = !pipelined || capacity === 1 ? 1 : mode === 'bdat' ? capacity : Math.min(3, capacity);
    /** Taken from the source and not yet acknowledged. */
    let occupied = 0;
    /** Settled, waiting for the caller's acknowledgement. */
    let unacknowledged = 0;
    let exhausted = false;
    let fetching = false;
    let settleError: Error | undefined;
    /** DATA only: the message waiting for its 354; nothing can be written before its body. */
    let barrier: Tx<T> | undefined;
    const staged: Tx<T>[] = [];
    const written: Tx<T>[] = [];
    const unsent: T[] = [];

    return new Promise<StreamResult<T>>((resolve, reject) => {
      const finishIfDone = () => {
        const stopped = exhausted || this.#failure !== undefined || settleError !== undefined;
        if (!stopped || fetching || occupied > 0 || staged.length > 0 || written.length > 0) return;
        removeListener();
        if (settleError) reject(settleError);
        else resolve({ error: this.#failure, unsent });
      };

      const release = () => {
        occupied--;
        unacknowledged--;
        void fill();
        finishIfDone();
      };

      /** Asks for the acknowledgements when nothing else can move the stream on. */
      const nudge = () => {
        if (unacknowledged > 0 && (occupied >= capacity || occupied === unacknowledged)) onWaiting?.();
      };

      const report = (item: T, outcome: DeliveryOutcome) => {
        unacknowledged++;
        let result: void | Promise<void>;
        try {
          result = settle(item, outcome);
        } catch (error) {
          settleError ??= error as Error;
          release();
          return;
        }
        if (result && typeof result.then === 'function') {
          result.then(release, (error: unknown) => {
            settleError ??= error as Error;
            release();
          });
          // It has left the wire: room for the next message, if the window has any.
          void fill();
          nudge();
        } else release();
      };

      /** A root message is settled once it and every follow-up transaction are done. */
      const complete = (tx: Tx<T>, outcome: DeliveryOutcome | undefined) => {
        if (tx.done) return;
        tx.done = true;
        const index = written.indexOf(tx);
        if (index !== -1) written.splice(index, 1);
        const root = tx.root ?? tx;
        if (tx.root) {
          root.followUps--;
          merge(root, tx, outcome);
        } else if (outcome) {
          root.outcome = outcome;
        }
        if (root.followUps === 0 && root.outcome) {
          const final = root.outcome;
          root.outcome = undefined;
          report(root.item, final);
        }
      };

      /** A follow-up's outcome folded into its root's: its recipients' refusals replaced by what it got. */
      const merge = (root: Tx<T>, follow: Tx<T>, outcome: DeliveryOutcome | undefined) => {
        const total = root.outcome;
        if (!outcome || !total) return;
        const retried = new Set(follow.envelope.to);
        total.refused = total.refused.filter((r) => !retried.has(r.recipient)).concat(outcome.refused);
        total.accepted = total.accepted.concat(outcome.accepted);
        // Recipients the follow-up never judged (its connection failed) stay deferred as they were.
        if (!outcome.delivered && outcome.refused.length === 0) {
          const kept = [...retried].filter((r) => !outcome.accepted.includes(r));
          total.refused = total.refused.concat(
            kept.map((recipient) => failedRefusal(recipient, outcome.error)),
          );
        }
      };

      const failedRefusal = (recipient: string, error: Error | undefined): RecipientRefusal => {
        const classification = classifyDeliveryError(error);
        return {
          recipient,
          responseCode: (error as { responseCode?: number } | undefined)?.responseCode,
          response: error?.message,
          transient: classification.transient,
          reason: classification.reason,
        };
      };

      const failure = (tx: Tx<T>, last: SmtpReply | undefined, command: string): DeliveryOutcome => {
        if (tx.mail && !isPositive(tx.mail)) {
          return failedOutcome(replyError('Sender refused', tx.mail, 'MAIL FROM', 'EENVELOPE'));
        }
        if (tx.accepted.length === 0 && tx.refused.length > 0) {
          const first = tx.refused[0] as { recipient: string; reply: SmtpReply };
          const outcome = failedOutcome(
            replyError(
              tx.refused.length === 1 ? 'Recipient refused' : 'All recipients were refused',
              first.reply,
              'RCPT TO',
              'EENVELOPE',
              tx.refused.length === 1 ? first.recipient : undefined,
            ),
          );
          outcome.refused = tx.refused.map((r) => refusal(r.recipient, r.reply));
          return outcome;
        }
        const outcome = failedOutcome(
          last
            ? replyError('Message refused', last, command, 'EMESSAGE')
            : protocolError(`no reply to ${command}`),
        );
        outcome.refused = tx.refused.map((r) => refusal(r.recipient, r.reply));
        return outcome;
      };

      const delivered = (tx: Tx<T>, reply: SmtpReply): DeliveryOutcome => ({
        delivered: true,
        accepted: [...tx.accepted],
        refused: tx.refused.map((r) => refusal(r.recipient, r.reply)),
        response: replyText(reply),
      });

      /** After the final reply: done, a follow-up for "too many recipients", or a second try after a suspect 503. */
      const onFinal = (tx: Tx<T>, reply: SmtpReply, command: string) => {
        // A 354 to BDAT (or to the end of data): the server may now read dot-terminated data that
        // our framing did not stuff. Nothing it says from here on can be trusted.
        if (outOfSpec(tx, reply, command === 'DATA' ? 'the end of data' : command)) return;
        if (isPositive(reply) && tx.accepted.length > 0) {
          const root = tx.root ?? tx;
          if (tx.tooMany.length > 0 && root.rounds < MAX_FOLLOW_UPS) {
            root.rounds++;
            root.followUps++;
            staged.unshift(newTx(root.item, { from: tx.envelope.from, to: tx.tooMany }, tx, root));
          }
          complete(tx, delivered(tx, reply));
          writeStaged();
          return;
        }
        if (isPositive(reply)) {
          // Accepted with no recipient accepted: a server out of spec. Nothing shows where it went.
          this.#needsReset = true;
          complete(
            tx,
            failedOutcome(protocolError(`${command} accepted a message that has no accepted recipient`)),
          );
          return;
        }
        if (mode === 'bdat' && tx.mail && isPositive(tx.mail)) {
          // A refused BDAT LAST may leave the transaction open (a refused end of data never does,
          // RFC 5321 §4.1.1.4): RSET before the next MAIL. Messages already written behind it may
          // meet "nested MAIL" (503); they are sent once more after the RSET.
          this.#needsReset = true;
          for (const later of written) if (later !== tx) later.suspect = true;
        } else if (tx.suspect && !tx.retried && tx.mail?.code === 503) {
          const again = newTx(tx.item, tx.envelope, tx, tx.root);
          again.retried = true;
          tx.done = true;
          written.splice(written.indexOf(tx), 1);
          staged.unshift(again);
          writeStaged();
          return;
        }
        complete(tx, failure(tx, reply, command));
      };

      const newTx = (item: T, envelope: Envelope, body: Prepared, root: Tx<T> | undefined): Tx<T> => ({
        item,
        envelope,
        chunks: body.chunks,
        size: body.size,
        params: body.params,
        mail: undefined,
        accepted: [],
        refused: [],
        tooMany: [],
        suspect: false,
        retried: false,
        root,
        followUps: 0,
        rounds: 0,
        done: false,
        outcome: undefined,
      });

      /**
       * A reply no server may give to `command` fails the connection, and its message with it (true
       * then): whatever the server does next cannot be matched to our commands.
       */
      const outOfSpec = (tx: Tx<T>, reply: SmtpReply, command: string): boolean => {
        const intermediate = reply.code >= 300 && reply.code < 400;
        const expected = command === 'DATA' ? reply.code === 354 || reply.code >= 400 : !intermediate;
        if (expected) return false;
        const error = protocolError(`a ${reply.code} reply to ${command}`);
        this.#fail(error);
        complete(tx, failedOutcome(error));
        return true;
      };

      const onRcpt = (tx: Tx<T>, recipient: string, reply: SmtpReply) => {
        if (isPositive(reply)) tx.accepted.push(recipient);
        else if (!tx.mail || isPositive(tx.mail)) {
          tx.refused.push({ recipient, reply });
          if (isTooMany(reply)) tx.tooMany.push(recipient);
        }
      };

      const onConnectionLost = (tx: Tx<T>) => () => {
        if (tx.done) return;
        // A refusal already known stays what it is; otherwise the message's fate is unknown.
        if (tx.mail && !isPositive(tx.mail) && tx.mail.code !== 503) {
          complete(tx, failure(tx, undefined, 'MAIL FROM'));
        } else {
          complete(tx, failedOutcome(this.#failure));
        }
      };

      const writeReset = () => {
        this.#needsReset = false;
        this.#write('RSET\r\n');
        this.#expect((reply) => {
          if (!isPositive(reply)) this.#fail(replyError('RSET refused', reply, 'RSET', 'EPROTOCOL'));
        });
      };

      const mailLine = (tx: Tx<T>) => `MAIL FROM:<${tx.envelope.from}>${tx.params}\r\n`;

      const writeBody = (tx: Tx<T>, command: string) => {
        if (mode === 'bdat') this.#write(`BDAT ${tx.size} LAST\r\n`);
        for (const chunk of tx.chunks) this.#write(chunk, this.#touch);
        this.#expect((reply) => onFinal(tx, reply, command), onConnectionLost(tx));
      };

      const writePipelined = (tx: Tx<T>) => {
        if (this.#needsReset) writeReset();
        let commands = mailLine(tx);
        for (const recipient of tx.envelope.to) commands += `RCPT TO:<${recipient}>\r\n`;
        const lost = onConnectionLost(tx);
        this.#expect((reply) => {
          if (outOfSpec(tx, reply, 'MAIL FROM')) return;
          tx.mail = reply;
        }, lost);
        for (const recipient of tx.envelope.to) {
          this.#expect((reply) => {
            if (!outOfSpec(tx, reply, 'RCPT TO')) onRcpt(tx, recipient, reply);
          }, lost);
        }
        if (mode === 'bdat') {
          this.#write(commands);
          writeBody(tx, 'BDAT');
          return;
        }
        this.#write(`${commands}DATA\r\n`);
        barrier = tx;
        this.#expect((reply) => {
          barrier = undefined;
          if (outOfSpec(tx, reply, 'DATA')) return;
          if (reply.code === 354) {
            if (tx.accepted.length > 0 && tx.mail && isPositive(tx.mail)) {
              writeBody(tx, 'DATA');
            } else {
              // 354 with nobody to deliver to is out of spec: end the data at once, send nothing.
              this.#write('.\r\n');
              this.#expect(() => complete(tx, failure(tx, undefined, 'DATA')), lost);
              this.#needsReset = true;
            }
          } else {
            if (tx.mail && isPositive(tx.mail)) this.#needsReset = true;
            complete(tx, failure(tx, reply, 'DATA'));
          }
          writeStaged();
        }, lost);
      };

      /** Without PIPELINING: every command waits for the previous reply. */
      const writeLockstep = (tx: Tx<T>) => {
        const lost = onConnectionLost(tx);
        const step = (line: string, next: (reply: SmtpReply) => void) => {
          this.#write(line);
          this.#expect(next, lost);
        };
        const afterRecipients = () => {
          if (tx.accepted.length === 0) {
            this.#needsReset = true;
            complete(tx, failure(tx, undefined, 'RCPT TO'));
            return;
          }
          if (mode === 'bdat') {
            writeBody(tx, 'BDAT');
            return;
          }
          step('DATA\r\n', (reply) => {
            if (reply.code === 354) writeBody(tx, 'DATA');
            else {
              this.#needsReset = true;
              complete(tx, failure(tx, reply, 'DATA'));
            }
          });
        };
        const recipient = (index: number) => {
          const address = tx.envelope.to[index];
          if (address === undefined) {
            afterRecipients();
            return;
          }
          step(`RCPT TO:<${address}>\r\n`, (reply) => {
            onRcpt(tx, address, reply);
            recipient(index + 1);
          });
        };
        const mail = () =>
          step(mailLine(tx), (reply) => {
            tx.mail = reply;
            if (isPositive(reply)) recipient(0);
            else complete(tx, failure(tx, undefined, 'MAIL FROM'));
          });
        if (!this.#needsReset) {
          mail();
          return;
        }
        this.#needsReset = false;
        step('RSET\r\n', (reply) => {
          if (isPositive(reply)) mail();
          else this.#fail(replyError('RSET refused', reply, 'RSET', 'EPROTOCOL'));
        });
      };

      const writeStaged = () => {
        while (staged.length > 0 && !barrier && !this.#failure) {
          const tx = staged.shift() as Tx<T>;
          written.push(tx);
          if (pipelined) writePipelined(tx);
          else writeLockstep(tx);
        }
      };

      /** A message checked against what the server offered; an outcome instead when it cannot go. */
      const prepare = (
        next: Exclude<SmtpTransaction<T>, { outcome: DeliveryOutcome }>,
      ): Tx<T> | DeliveryOutcome => {
        const { envelope } = next;
        const paths = [envelope.from, ...envelope.to];
        const bad = paths.find((path) => FORBIDDEN_IN_PATH.test(path));
        if (bad !== undefined) {
          return failedOutcome(
            new DeliveryError(`The address ${JSON.stringify(bad)} cannot be sent in an SMTP command`, {
              code: 'EENVELOPE',
            }),
          );
        }
        const utf8 = next.smtpUtf8 === true || paths.some((path) => !isAsciiText(path));
        if (utf8 && !ext.smtpUtf8) {
          return failedOutcome(
            new DeliveryError(
              'The message has an internationalised address (SMTPUTF8), which the SMTP server does not offer',
              { code: 'EENVELOPE' },
            ),
          );
        }
        let chunks: Buffer[];
        try {
          chunks = framePayload(next.bytes, mode);
        } catch (error) {
          return failedOutcome(error);
        }
        const bytes = payloadLength(chunks);
        // RFC 1870: CRLF line endings counted, the final dot not; stuffing dots (rare) overstate it a little.
        const declared = mode === 'data' ? bytes - 3 : bytes;
        if (ext.size && declared > ext.size) {
          return failedOutcome(
            new DeliveryError(
              `The message is ${declared} bytes; the SMTP server accepts at most ${ext.size} (SIZE)`,
              { code: 'EMESSAGE' },
            ),
          );
        }
        let params = '';
        if (ext.size !== undefined) params += ` SIZE=${declared}`;
        if (ext.eightBitMime && !isAscii(next.bytes)) params += ' BODY=8BITMIME';
        if (utf8) params += ' SMTPUTF8';
        return newTx(next.item, envelope, { chunks, size: bytes, params }, undefined);
      };

      const fill = async (): Promise<void> => {
        if (fetching) return;
        fetching = true;
        try {
          while (
            !exhausted &&
            !this.#failure &&
            !settleError &&
            occupied < capacity &&
            occupied - unacknowledged < wireLimit
          ) {
            const next = await source();
            if (next === undefined) {
              exhausted = true;
              break;
            }
            if (this.#failure || settleError) {
              unsent.push(next.item);
              break;
            }
            occupied++;
            const prepared = 'outcome' in next ? next.outcome : prepare(next);
            if ('envelope' in prepared) {
              staged.push(prepared);
              writeStaged();
            } else {
              report(next.item, prepared);
            }
          }
        } catch (error) {
          settleError ??= error as Error;
        } finally {
          fetching = false;
        }
        nudge();
        finishIfDone();
      };

      const removeListener = this.onFailure(() => {
        for (const tx of staged.splice(0)) {
          if (tx.root) {
            const root = tx.root;
            tx.done = true;
            root.followUps--;
            merge(root, tx, failedOutcome(this.#failure));
            if (root.followUps === 0 && root.outcome) {
              const final = root.outcome;
              root.outcome = undefined;
              report(root.item, final);
            }
          } else {
            unsent.push(tx.item);
            occupied--;
          }
        }
        barrier = undefined;
        // Pending handlers already settled the written messages; release any fetch waiting to finish.
        nudge();
        finishIfDone();
      });

      if (this.#failure) {
        removeListener();
        resolve({ error: this.#failure, unsent });
        return;
      }
      void fill();
    });
  }

  /** Says QUIT and closes (destroying the socket if the server does not answer within a second). */
  async quit(): Promise<void> {
    if (this.closed) {
      this.destroy();
      return;
    }
    this.#quitting = true;
    const socket = this.#socket;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, QUIT_WAIT_MS);
      timer.unref();
      this.#pending.push({
        onReply: () => {
          clearTimeout(timer);
          resolve();
        },
        onFailure: () => {
          clearTimeout(timer);
          resolve();
        },
      });
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.#write('QUIT\r\n');
    });
    this.destroy();
  }

  /** Closes at once, without QUIT. */
  destroy(): void {
    this.#quitting = true;
    // Settles whatever still waits, as a failure would (a no-op once the connection has failed).
    this.#fail(new DeliveryError('The SMTP connection was closed', { code: 'ECONNECTION', command: 'CONN' }));
  }
}

function isAsciiText(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** The EHLO reply's keywords (RFC 5321 §4.1.1.1); HELO (undefined) offers none. */
export function parseExtensions(reply: SmtpReply | undefined): SmtpExtensions {
  const extensions: SmtpExtensions = {
    pipelining: false,
    chunking: false,
    eightBitMime: false,
    smtpUtf8: false,
    startTls: false,
    size: undefined,
    auth: [],
  };
  for (const line of reply?.lines.slice(1) ?? []) {
    const [keyword = '', ...args] = line.trim().split(/[\s=]+/);
    switch (keyword.toUpperCase()) {
      case 'PIPELINING':
        extensions.pipelining = true;
        break;
      case 'CHUNKING':
        extensions.chunking = true;
        break;
      case '8BITMIME':
        extensions.eightBitMime = true;
        break;
      case 'SMTPUTF8':
        extensions.smtpUtf8 = true;
        break;
      case 'STARTTLS':
        extensions.startTls = true;
        break;
      case 'SIZE': {
        const limit = Number(args[0] ?? 0);
        extensions.size = Number.isSafeInteger(limit) && limit > 0 ? limit : 0;
        break;
      }
      case 'AUTH':
        for (const mechanism of args) {
          const name = mechanism.toUpperCase();
          if (name && !extensions.auth.includes(name)) extensions.auth.push(name);
        }
        break;
    }
  }
  return extensions;
}

function tlsDefaults(options: SmtpSessionOptions): ConnectionOptions {
  const tlsOptions = options.tls ?? {};
  return {
    ...(net.isIP(options.host) ? {} : { servername: options.host }),
    ...tlsOptions,
    rejectUnauthorized: tlsOptions.rejectUnauthorized ?? true,
  };
}

async function openSocket(options: SmtpSessionOptions): Promise<net.Socket> {
  const socket = options.secure
    ? tls.connect({ ...tlsDefaults(options), host: options.host, port: options.port })
    : net.connect({ host: options.host, port: options.port });
  socket.setNoDelay(true);
  try {
    await waitFor(socket, options.secure ? 'secureConnect' : 'connect', options.timeout, 'connect');
  } catch (error) {
    socket.destroy();
    throw error;
  }
  return socket;
}

/** Waits for `event` on a socket, failing on 'error', an early close, or the timeout. */
function waitFor(
  socket: net.Socket,
  event: string,
  timeout: number | undefined,
  what: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer =
      timeout === undefined
        ? undefined
        : setTimeout(() => {
            cleanup();
            reject(
              new DeliveryError(`SMTP ${what} timed out after ${timeout / 1000} s`, {
                code: 'ETIMEDOUT',
                command: 'CONN',
              }),
            );
          }, timeout);
    const onEvent = () => {
      cleanup();
      resolve();
    };
    const onError = (error: Error & { code?: string }) => {
      cleanup();
      const tlsFailure = event === 'secureConnect' && !/^E(CONN|HOST|NET|ADDR|AI_)/.test(error.code ?? '');
      reject(
        new DeliveryError(`SMTP ${what} failed: ${error.message}`, {
          code: tlsFailure ? 'ETLS' : 'ESOCKET',
          command: 'CONN',
          cause: error,
        }),
      );
    };
    const onClose = () => onError(new Error('the connection closed'));
    const cleanup = () => {
      if (timer) clearTimeout(timer);
      socket.off(event, onEvent);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    socket.once(event, onEvent);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}
