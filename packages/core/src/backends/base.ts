/** The backend contract every email backend implements (Django's BaseEmailBackend), and deliver() outcomes. */
import { envelopeAddress } from '../address.js';
import { type Classification, classifyDeliveryError, type FailureReason } from '../classify.js';
import { coerceError, InvalidAddressError, MailError, ValidationError } from '../errors.js';
import type { EmailMessage } from '../message.js';

/** MAIL FROM and RCPT TO of one message: addr-specs with punycoded domains. */
export interface Envelope {
  from: string;
  to: string[];
}

/** A recipient the server refused while others may have been accepted. */
export interface RecipientRefusal {
  /** Envelope address (addr-spec). */
  recipient: string;
  responseCode: number | undefined;
  /** The server's reply line. */
  response: string | undefined;
  /** Whether retrying this recipient can help (4xx) or not (5xx). */
  transient: boolean;
  reason: FailureReason;
}

/**
 * What happened to one message. `delivered` means the server accepted it for at least one
 * recipient; `refused` lists recipients refused one by one (partial acceptance), while `error`
 * explains a message that was not delivered at all.
 */
export interface DeliveryOutcome {
  delivered: boolean;
  /** Envelope recipients accepted. */
  accepted: string[];
  /** Envelope recipients refused, each with its reply. */
  refused: RecipientRefusal[];
  /** The server's final reply for the message (e.g. `250 2.0.0 OK queued`). */
  response?: string;
  /** Why the message was not delivered (absent when delivered or skipped for lack of recipients). */
  error?: Error & { code?: string | undefined; responseCode?: number | undefined };
  /** Verdict on `error` (see classifyDeliveryError). */
  classification?: Classification;
}

/** Options of {@link BaseEmailBackend.deliver}. */
export interface DeliverOptions {
  /** Send only to these envelope addresses (e.g. retrying the recipients a server deferred). */
  recipients?: readonly string[];
}

/** One message for {@link BaseEmailBackend.deliverStream}, with what the caller needs to know it again. */
export interface StreamItem {
  message: EmailMessage;
  /** Send only to these envelope addresses (see {@link DeliverOptions.recipients}). */
  recipients?: readonly string[];
}

/** Hands out the next message, or undefined to end (or stop) the stream; it may wait (a rate limit). */
export type StreamSource<I extends StreamItem> = () => I | undefined | Promise<I | undefined>;

/**
 * Receives each message's outcome, once. A returned promise holds the message's place in the
 * pipeline window until it settles (the worker resolves it once the outcome is recorded).
 */
export type SettleItem<I extends StreamItem> = (item: I, outcome: DeliveryOutcome) => void | Promise<void>;

/** How {@link BaseEmailBackend.deliverStream} ended. */
export interface DeliverStreamResult<I extends StreamItem> {
  /** The connection failure that ended the stream early (the backend is closed then). */
  error: Error | undefined;
  /** Messages taken from the source but never sent: the caller sends them again. */
  unsent: I[];
}

/** Options of {@link BaseEmailBackend.deliverStream}. */
export interface DeliverStreamOptions {
  /** Messages in flight at once (the SMTP backend's pipeline window; others send one at a time). */
  window?: number;
  /**
   * Called when the stream can only go on once settled messages are acknowledged (their `settled`
   * promises resolve): a caller that acknowledges in groups (the worker's ledger writes) must
   * finish its group then.
   */
  onWaiting?: () => void;
}

/** Options every backend accepts. */
export interface BackendOptions {
  /** Swallow delivery errors (connection failures, refused messages); validation errors still throw. */
  failSilently?: boolean;
}

/**
 * Django's BaseEmailBackend. `open()` returns true when it opened a connection now, false when one
 * was already open, undefined when opening failed silently. `sendMessages()` opens if needed, closes
 * only what it opened, and returns the number of messages sent. `await using` closes on scope exit.
 *
 * Beyond Django, {@link BaseEmailBackend.deliver} sends ONE message over the open connection and
 * reports its {@link DeliveryOutcome} instead of throwing: the worker's per-message path.
 */
export abstract class BaseEmailBackend implements AsyncDisposable {
  failSilently: boolean;
  private openState = false;
  /** Why the last open() failed silently (so deliver() can report the real reason). */
  protected lastOpenError: Error | undefined;

  constructor(options: BackendOptions = {}) {
    this.failSilently = options.failSilently ?? false;
  }

  /** Whether a connection (or stream) is currently open. */
  get isOpen(): boolean {
    return this.openState;
  }

  /**
   * Opens the connection. True: opened now; false: it was already open; undefined: opening failed
   * and `failSilently` is set. Throws otherwise. Backends with nothing to open just track the state.
   */
  async open(): Promise<boolean | undefined> {
    if (this.openState) return false;
    this.openState = true;
    return true;
  }

  /** Closes the connection if open. Safe to call twice. */
  async close(): Promise<void> {
    this.openState = false;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * The envelope of a message: MAIL FROM from fromEmail, RCPT TO from recipients(), IDN punycoded.
   * Throws InvalidAddressError ("Invalid address ...") for an unusable address.
   */
  envelope(message: EmailMessage, options: DeliverOptions = {}): Envelope {
    return {
      from: envelopeAddress(message.fromEmail, 'fromEmail'),
      to: (options.recipients ?? message.recipients()).map((address, index) =>
        envelopeAddress(address, `recipients[${index}]`),
      ),
    };
  }

  /**
   * Sends the messages (Django's send_messages): empty list → 0 without connecting; every envelope
   * is validated before anything is sent (InvalidAddressError even with failSilently); opens if
   * needed and closes only what it opened. Returns the number sent. A failed message throws unless
   * failSilently (then it is not counted and the rest go on).
   */
  async sendMessages(messages: readonly EmailMessage[]): Promise<number> {
    if (messages.length === 0) return 0;
    messages.forEach((message, index) => {
      try {
        this.envelope(message);
      } catch (error) {
        if (error instanceof InvalidAddressError) {
          throw new InvalidAddressError(`${error.message} (message ${index})`, {
            field: `messages[${index}].${error.field}`,
          });
        }
        throw error;
      }
    });
    const opened = await this.open();
    if (opened === undefined) return 0;
    try {
      let sent = 0;
      let failure: Error | undefined;
      // Messages not yet sent; a connection that fails hands back the ones it never wrote.
      let queue: EmailMessage[] = [...messages];
      const settle = (_item: StreamItem, outcome: DeliveryOutcome) => {
        if (outcome.delivered) sent++;
        else if (outcome.error && (!this.failSilently || outcome.error instanceof ValidationError)) {
          failure ??= outcome.error;
        }
      };
      while (queue.length > 0 && !failure) {
        const pending = queue;
        let next = 0;
        const result = await this.deliverStream(
          () =>
            failure || next >= pending.length ? undefined : { message: pending[next++] as EmailMessage },
          settle,
          // Django stops at the first failure: without failSilently, nothing may be in flight behind it.
          this.failSilently ? {} : { window: 1 },
        );
        queue = [...result.unsent.map((item) => item.message), ...pending.slice(next)];
        if (!result.error || queue.length === 0 || failure) break;
        // The connection failed: the rest go over a new one, as deliver() would reopen for each.
        if (!this.isOpen && (await this.open()) === undefined) {
          if (!this.failSilently) throw result.error;
          break;
        }
      }
      if (failure) throw failure;
      return sent;
    } finally {
      if (opened) await this.close();
    }
  }

  /**
   * Sends messages one after the other over the open connection (opening it if needed), calling
   * `settled` once per message with its outcome. The SMTP backend overrides this to pipeline up to
   * `window` messages at once; every other backend sends one at a time through deliver().
   */
  async deliverStream<I extends StreamItem>(
    next: StreamSource<I>,
    settled: SettleItem<I>,
    options: DeliverStreamOptions = {},
  ): Promise<DeliverStreamResult<I>> {
    for (let item = await next(); item !== undefined; item = await next()) {
      const outcome = await this.deliver(
        item.message,
        item.recipients ? { recipients: item.recipients } : {},
      );
      const acknowledged = settled(item, outcome);
      // One message at a time: nothing moves on until this one is acknowledged.
      options.onWaiting?.();
      await acknowledged;
    }
    return { error: undefined, unsent: [] };
  }

  /**
   * Sends one message over the open connection (opening it if needed; the caller closes) and reports
   * what happened. Never throws for a message-level problem: rendering errors, refusals and
   * connection failures come back as `error` with a classification. A message without recipients is
   * skipped (not delivered, no error), as in Django.
   */
  async deliver(message: EmailMessage, options: DeliverOptions = {}): Promise<DeliveryOutcome> {
    let envelope: Envelope;
    let bytes: Buffer;
    try {
      envelope = this.envelope(message, options);
      if (envelope.to.length === 0) return { delivered: false, accepted: [], refused: [] };
      bytes = message.message();
    } catch (error) {
      return failedOutcome(error);
    }
    try {
      if (!this.isOpen) {
        const opened = await this.open();
        if (opened === undefined) {
          return failedOutcome(
            this.lastOpenError ?? new MailError('Connection could not be opened', { code: 'ECONNECTION' }),
          );
        }
      }
      return await this.deliverRendered(envelope, bytes, message);
    } catch (error) {
      return failedOutcome(error);
    }
  }

  /** Sends rendered bytes with the given envelope. Implementations may throw; deliver() turns that into an outcome. */
  protected abstract deliverRendered(
    envelope: Envelope,
    bytes: Buffer,
    message: EmailMessage,
  ): Promise<DeliveryOutcome>;
}

/** An outcome for a message that was not delivered at all. */
export function failedOutcome(error: unknown): DeliveryOutcome {
  const err = coerceError(error);
  return {
    delivered: false,
    accepted: [],
    refused: [],
    error: err,
    classification: classifyDeliveryError(err),
  };
}

/** An outcome for a message every recipient of which was accepted. */
export function deliveredOutcome(envelope: Envelope, response?: string): DeliveryOutcome {
  return { delivered: true, accepted: [...envelope.to], refused: [], ...(response ? { response } : {}) };
}
