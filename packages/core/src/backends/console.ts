/** The console backend: writes each message to a stream (stdout), as Django's does. */
import type { Writable } from 'node:stream';
import {
  type BackendOptions,
  BaseEmailBackend,
  type DeliveryOutcome,
  deliveredOutcome,
  type Envelope,
} from './base.js';

/** Options of {@link ConsoleBackend}. */
export interface ConsoleBackendOptions extends BackendOptions {
  /** Where messages are written. Default process.stdout. */
  stream?: Writable;
}

/** The text Django's console and file backends write for one message: the message, then 79 dashes. */
export function consoleRecord(bytes: Buffer): string {
  // Django writes the message with "\n" line endings (Python's default policy), not the wire's CRLF.
  return `${bytes.toString('utf8').replace(/\r\n/g, '\n')}\n${'-'.repeat(79)}\n`;
}

/** Writes a chunk and waits until the stream accepted it (or failed: the promise rejects, nothing else throws). */
export function writeAll(stream: Writable, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    // A failed write is ALSO emitted as 'error' (on a later tick); without a listener that emit
    // would crash the process, failSilently or not. The callback carries the error to the caller;
    // this listener only absorbs the emit, and is removed once that tick has passed.
    const absorb = () => {};
    stream.once('error', absorb);
    stream.write(text, (error) => {
      if (error) {
        setImmediate(() => stream.off('error', absorb));
        reject(error);
      } else {
        stream.off('error', absorb);
        resolve();
      }
    });
  });
}

/** Django's console backend: writes each message, then a line of 79 dashes, to a stream. */
export class ConsoleBackend extends BaseEmailBackend {
  stream: Writable;

  constructor(options: ConsoleBackendOptions = {}) {
    super(options);
    this.stream = options.stream ?? process.stdout;
  }

  protected override async deliverRendered(envelope: Envelope, bytes: Buffer): Promise<DeliveryOutcome> {
    await writeAll(this.stream, consoleRecord(bytes));
    return deliveredOutcome(envelope);
  }
}
