/** Open backend connections kept between batches (each batch still uses exactly one). */
import { type BaseEmailBackend, coerceError } from '@mailroom/core';
import type { Logger } from 'pino';

/** Options of {@link ConnectionPool}. */
export interface ConnectionPoolOptions {
  /** Milliseconds an open connection may wait for the next batch; 0 closes after every batch. */
  idleTimeout: number;
  /** Messages after which a connection is closed rather than reused (servers limit sessions too). */
  maxMessages: number;
  /** Idle connections kept at most (the worker's concurrency). */
  maxIdle: number;
  logger: Logger;
}

/**
 * Open backend connections between batches. Every batch still uses exactly ONE connection; when the
 * next batch starts while the previous one's connection is open and fresh, it goes on over that
 * connection instead of paying connect + greeting + EHLO (+ TLS + AUTH) again. Idle connections are
 * closed after `idleTimeout` (well under the idle limits of SMTP servers: Postfix waits 300 s).
 */
export class ConnectionPool {
  readonly #make: () => BaseEmailBackend;
  readonly #options: ConnectionPoolOptions;
  readonly #idle: { backend: BaseEmailBackend; timer: NodeJS.Timeout }[] = [];
  readonly #sent = new WeakMap<BaseEmailBackend, number>();
  /** Connections handed out and not yet released: the ones a shutdown that timed out must cut. */
  readonly #inUse = new Set<BaseEmailBackend>();
  #closed = false;

  constructor(make: () => BaseEmailBackend, options: ConnectionPoolOptions) {
    this.#make = make;
    this.#options = options;
  }

  /** An idle open connection, or a new (not yet opened) backend. */
  acquire(): BaseEmailBackend {
    const backend = this.#reuse() ?? this.#make();
    this.#inUse.add(backend);
    return backend;
  }

  #reuse(): BaseEmailBackend | undefined {
    while (this.#idle.length > 0) {
      const entry = this.#idle.pop() as { backend: BaseEmailBackend; timer: NodeJS.Timeout };
      clearTimeout(entry.timer);
      // A server may have closed it while it waited: then it is of no use.
      if (entry.backend.isOpen) return entry.backend;
    }
    return undefined;
  }

  /** Takes a connection back after a batch that sent `messages` over it; keeps it or closes it. */
  async release(backend: BaseEmailBackend, messages: number): Promise<void> {
    this.#inUse.delete(backend);
    const sent = (this.#sent.get(backend) ?? 0) + messages;
    this.#sent.set(backend, sent);
    const keep =
      !this.#closed &&
      backend.isOpen &&
      this.#options.idleTimeout > 0 &&
      sent < this.#options.maxMessages &&
      this.#idle.length < this.#options.maxIdle;
    if (!keep) {
      await this.#close(backend);
      return;
    }
    const timer = setTimeout(() => {
      const index = this.#idle.findIndex((entry) => entry.backend === backend);
      if (index !== -1) this.#idle.splice(index, 1);
      void this.#close(backend);
    }, this.#options.idleTimeout);
    timer.unref();
    this.#idle.push({ backend, timer });
  }

  /** Closes every idle connection; later releases close at once. */
  async closeAll(): Promise<void> {
    this.#closed = true;
    const idle = this.#idle.splice(0);
    await Promise.all(
      idle.map(({ backend, timer }) => {
        clearTimeout(timer);
        return this.#close(backend);
      }),
    );
  }

  /**
   * Closes the connections batches are using right now, for a shutdown that ran out of time (a mail
   * server that stopped answering mid-message): the messages on the wire settle as connection
   * failures, and their batch stops. Later releases close at once, as after closeAll().
   */
  async closeInUse(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#inUse].map((backend) => this.#close(backend)));
  }

  // MUST never throw: closing is cleanup.
  async #close(backend: BaseEmailBackend): Promise<void> {
    try {
      await backend.close();
    } catch (error) {
      this.#options.logger.warn({ err: coerceError(error).message }, 'closing the backend connection failed');
    }
  }
}
