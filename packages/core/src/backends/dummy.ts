/** The dummy backend: counts messages and sends nothing. */
import type { EmailMessage } from '../message.js';
import { BaseEmailBackend, type DeliveryOutcome, deliveredOutcome, type Envelope } from './base.js';

/** Django's dummy backend: sends nothing, checks nothing, and reports every message as sent. */
export class DummyBackend extends BaseEmailBackend {
  override async sendMessages(messages: readonly EmailMessage[]): Promise<number> {
    return messages.length;
  }

  protected override async deliverRendered(envelope: Envelope): Promise<DeliveryOutcome> {
    return deliveredOutcome(envelope);
  }
}
