/** The memory backend and its outbox (Django's locmem backend and mail.outbox), for tests. */
import type { EmailMessage } from '../message.js';
import { BaseEmailBackend, type DeliveryOutcome, deliveredOutcome, type Envelope } from './base.js';

/**
 * Django's `mail.outbox`: every message sent through a memory backend, as a deep copy, in order.
 * Shared by all memory backends of the process; cleared by {@link resetOutbox}.
 */
export const outbox: EmailMessage[] = [];

/** Empties {@link outbox} in place (the exported array keeps its identity). */
export function resetOutbox(): void {
  outbox.length = 0;
}

/**
 * Django's locmem backend: renders each message (so invalid messages fail as they would over SMTP)
 * and appends a deep copy to {@link outbox}. The default backend for tests.
 */
export class MemoryBackend extends BaseEmailBackend {
  protected override async deliverRendered(
    envelope: Envelope,
    _bytes: Buffer,
    message: EmailMessage,
  ): Promise<DeliveryOutcome> {
    outbox.push(message.clone());
    return deliveredOutcome(envelope);
  }
}
