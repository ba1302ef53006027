/** The `queue` email backend: plain sendMail() and send() enqueue through a shared producer. */
import {
  type BackendOptions,
  BaseEmailBackend,
  type DeliverOptions,
  type DeliveryOutcome,
  type EmailMessage,
  failedOutcome,
  registerBackend,
  settings,
} from '@mailroom/core';
import { createProducer, type EnqueueOptions, type Producer, type ProducerOptions } from './producer.js';

/** Options of {@link QueueBackend}: where to enqueue, and enqueue options applied to every message. */
export interface QueueBackendOptions extends BackendOptions, ProducerOptions {
  /** Use this producer instead of the shared one (not closed by the backend). */
  producer?: Producer;
  /** Applied to every enqueue of this backend (priority, delay...). failSilently comes from the backend. */
  enqueueOptions?: Omit<EnqueueOptions, 'failSilently'>;
}

/** Milliseconds a shared producer stays connected after its last backend closed. */
const IDLE_CLOSE_MS = 2000;

interface SharedProducer {
  producer: Producer;
  users: number;
  idleTimer: NodeJS.Timeout | undefined;
}

const shared = new Map<string, SharedProducer>();

function sharedKey(options: ProducerOptions): string {
  const { redis, queue, prefix, shards, logger: _logger, ...rest } = options;
  // createProducer falls back to REDIS_CLUSTER_NODES or REDIS_URL, MAILROOM_QUEUE, MAILROOM_PREFIX and
  // MAILROOM_SHARDS: key on the values in
  // effect now, or a producer made for another Redis or queue would be reused after configure()
  // changed them. The key never leaves this process, so the whole URL (password included) may tell
  // servers apart.
  return JSON.stringify([
    redis ?? settings.REDIS_CLUSTER_NODES ?? settings.REDIS_URL,
    queue ?? settings.MAILROOM_QUEUE,
    prefix ?? settings.MAILROOM_PREFIX,
    shards ?? settings.MAILROOM_SHARDS,
    rest,
  ]);
}

/**
 * Closes every producer the queue backends share (they otherwise close themselves 2 s after their
 * last use). Call it at shutdown for an immediate exit.
 */
export async function closeQueueBackends(): Promise<void> {
  const entries = [...shared.values()];
  shared.clear();
  for (const entry of entries) {
    clearTimeout(entry.idleTimer);
    await entry.producer.close();
  }
}

/**
 * The `queue` email backend (`getConnection('queue')`, EMAIL_BACKEND=queue): sendMessages enqueues
 * instead of sending, so an unchanged `sendMail()` in a web app becomes an enqueue, and returns the
 * number enqueued. Connections are shared per Redis/queue and kept for 2 s after use, so a request
 * handler does not pay a Redis handshake per call. Registered when @mailroom/producer is imported.
 */
export class QueueBackend extends BaseEmailBackend {
  readonly #options: ProducerOptions;
  readonly #enqueueOptions: Omit<EnqueueOptions, 'failSilently'>;
  readonly #ownProducer: Producer | undefined;
  #entry: SharedProducer | undefined;

  constructor(options: QueueBackendOptions = {}) {
    super(options);
    const { producer, enqueueOptions, failSilently: _failSilently, ...producerOptions } = options;
    this.#ownProducer = producer;
    this.#enqueueOptions = enqueueOptions ?? {};
    this.#options = producerOptions;
  }

  /** The producer in use while open. */
  get producer(): Producer | undefined {
    return this.#ownProducer ?? this.#entry?.producer;
  }

  override async open(): Promise<boolean | undefined> {
    if (this.isOpen) return false;
    try {
      if (!this.#ownProducer) {
        const key = sharedKey(this.#options);
        let entry = shared.get(key);
        if (!entry) {
          entry = { producer: createProducer(this.#options), users: 0, idleTimer: undefined };
          shared.set(key, entry);
        }
        clearTimeout(entry.idleTimer);
        entry.users++;
        this.#entry = entry;
      }
      await (this.producer as Producer).ready();
    } catch (error) {
      await this.release();
      if (this.failSilently) return undefined;
      throw error;
    }
    return super.open();
  }

  private async release(): Promise<void> {
    const entry = this.#entry;
    this.#entry = undefined;
    if (!entry) return;
    entry.users--;
    if (entry.users === 0) {
      entry.idleTimer = setTimeout(() => {
        if (entry.users === 0 && [...shared.values()].includes(entry)) {
          for (const [key, value] of shared) if (value === entry) shared.delete(key);
          void entry.producer.close();
        }
      }, IDLE_CLOSE_MS);
    }
  }

  override async close(): Promise<void> {
    await super.close();
    await this.release();
  }

  /** Enqueues the messages that have recipients (Django skips the others) and returns how many were enqueued. */
  override async sendMessages(messages: readonly EmailMessage[]): Promise<number> {
    const sendable = messages.filter((message) => message.recipients().length > 0);
    if (sendable.length === 0) return 0;
    const opened = await this.open();
    if (opened === undefined) return 0;
    try {
      const result = await (this.producer as Producer).enqueue(sendable, {
        ...this.#enqueueOptions,
        failSilently: this.failSilently,
      });
      return result.messages;
    } finally {
      if (opened) await this.close();
    }
  }

  /** Enqueues one message; "delivered" here means accepted by the queue. */
  override async deliver(message: EmailMessage, options: DeliverOptions = {}): Promise<DeliveryOutcome> {
    if (options.recipients)
      return failedOutcome(new Error('The queue backend cannot send to a subset of recipients'));
    try {
      const envelope = this.envelope(message);
      if (envelope.to.length === 0) return { delivered: false, accepted: [], refused: [] };
      if (!this.isOpen) await this.open();
      const result = await (this.producer as Producer).enqueue(message, {
        ...this.#enqueueOptions,
        failSilently: this.failSilently,
      });
      if (result.messages === 0) return failedOutcome(new Error('The message was not enqueued'));
      return {
        delivered: true,
        accepted: envelope.to,
        refused: [],
        response: `queued as ${result.jobIds[0]}`,
      };
    } catch (error) {
      return failedOutcome(error);
    }
  }

  protected override deliverRendered(): Promise<DeliveryOutcome> {
    throw new Error('unreachable: QueueBackend overrides deliver()');
  }
}

registerBackend('queue', (options) => new QueueBackend(options as QueueBackendOptions));
