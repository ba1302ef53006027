/**
 * hardBounces(): which refusals in a delivery outcome are hard bounces, checked on the outcomes the
 * SMTP backend really reports when a real smtp-server refuses RCPT TO.
 */
import {
  DeliveryError,
  type DeliveryOutcome,
  EmailMessage,
  failedOutcome,
  SmtpBackend,
} from '@mailroom/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type SmtpRefusal, type SmtpTestServer, startSmtpServer } from '../../../test/support/smtp-server.js';
import { hardBounces } from '../src/auto-suppress.js';

const servers: SmtpTestServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

/** The refusal the server gives each local part: `gone` 5.1.1, `spam` 5.7.1, `grey` 4.2.0. */
function refuse(address: string): SmtpRefusal | undefined {
  const local = address.slice(0, address.indexOf('@'));
  if (local.startsWith('gone'))
    return { code: 550, message: `5.1.1 <${address}>: Recipient address rejected: User unknown` };
  if (local.startsWith('spam')) return { code: 550, message: '5.7.1 Message rejected as spam' };
  if (local.startsWith('grey')) return { code: 450, message: '4.2.0 Greylisted, try again later' };
  return undefined;
}

/** What the SMTP backend reports for one message to `to`, sent to a server that refuses as {@link refuse}. */
async function outcomeFor(to: string[]): Promise<DeliveryOutcome> {
  const server = await startSmtpServer({ onRcpt: refuse });
  servers.push(server);
  const backend = new SmtpBackend({ ...server.clientOptions });
  try {
    await backend.open();
    return await backend.deliver(new EmailMessage('Hello', 'Body', 'news@example.com', to));
  } finally {
    await backend.close();
  }
}

describe('hardBounces', () => {
  it('finds a sole recipient refused with 550 5.1.1: the backend lists it in refused, beside the error', async () => {
    const outcome = await outcomeFor(['gone@example.com']);
    // How a sole refused recipient surfaces: the message failed (error of RCPT TO) AND the refusal is listed.
    expect(outcome.delivered).toBe(false);
    expect(outcome.error).toMatchObject({
      command: 'RCPT TO',
      recipient: 'gone@example.com',
      responseCode: 550,
    });
    expect(outcome.refused).toEqual([
      expect.objectContaining({ recipient: 'gone@example.com', transient: false }),
    ]);
    expect(hardBounces(outcome)).toEqual([
      {
        address: 'gone@example.com',
        reason: 'hard-bounce',
        source: '550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown',
      },
    ]);
  });

  it('finds only the 5.1.1 refusals of a message delivered to others', async () => {
    const outcome = await outcomeFor([
      'ok@example.com',
      'gone1@example.com',
      'spam@example.com',
      'grey@example.com',
      'gone2@example.com',
    ]);
    expect(outcome.delivered).toBe(true);
    expect(hardBounces(outcome).map((bounce) => bounce.address)).toEqual([
      'gone1@example.com',
      'gone2@example.com',
    ]);
  });

  it('finds nothing when every recipient is refused for policy or deferred', async () => {
    const outcome = await outcomeFor(['spam@example.com', 'grey@example.com']);
    expect(outcome.refused).toHaveLength(2);
    expect(hardBounces(outcome)).toEqual([]);
  });

  it('finds a sole recipient a backend reports only as a permanent RCPT TO error naming it', () => {
    const outcome = failedOutcome(
      new DeliveryError('Recipient refused: 550 5.1.1 No such user', {
        responseCode: 550,
        response: '550 5.1.1 No such user',
        command: 'RCPT TO',
        recipient: 'gone@example.com',
      }),
    );
    expect(outcome.refused).toEqual([]);
    expect(hardBounces(outcome)).toEqual([
      { address: 'gone@example.com', reason: 'hard-bounce', source: '550 5.1.1 No such user' },
    ]);
  });

  it('finds nothing in a message refused after DATA, even with 5.1.1', () => {
    const outcome = failedOutcome(
      new DeliveryError('Message refused: 550 5.1.1 No such user', {
        responseCode: 550,
        response: '550 5.1.1 No such user',
        command: 'DATA',
      }),
    );
    expect(hardBounces(outcome)).toEqual([]);
  });
});
