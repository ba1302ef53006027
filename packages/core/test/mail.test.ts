import {
  type BackendOptions,
  configure,
  DeliveryError,
  type EmailMessage,
  EmailMultiAlternatives,
  MemoryBackend,
  mailAdmins,
  mailManagers,
  outbox,
  registerBackend,
  resetOutbox,
  resetSettings,
  sendMail,
  sendMassMail,
} from '@mailroom/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse } from '../../../test/support/smtp-server.js';
import { closedPort } from './support/closed-port.js';

/**
 * A real memory backend that also counts what the convenience functions do with it: how many
 * backends were built, opened, and how many sendMessages() calls they made.
 */
class CountingBackend extends MemoryBackend {
  static built = 0;
  static opens = 0;
  static sendMessagesCalls = 0;

  constructor(options: BackendOptions = {}) {
    super(options);
    CountingBackend.built++;
  }

  override async open(): Promise<boolean | undefined> {
    const opened = await super.open();
    if (opened) CountingBackend.opens++;
    return opened;
  }

  override async sendMessages(messages: readonly EmailMessage[]): Promise<number> {
    CountingBackend.sendMessagesCalls++;
    return super.sendMessages(messages);
  }
}
registerBackend('counting-memory', CountingBackend);

beforeEach(() => {
  CountingBackend.built = 0;
  CountingBackend.opens = 0;
  CountingBackend.sendMessagesCalls = 0;
  configure({ EMAIL_BACKEND: 'counting-memory' });
});

afterEach(() => {
  resetOutbox();
  resetSettings();
});

describe('sendMail', () => {
  it('sends one message to the whole recipient list and returns 1', async () => {
    const sent = await sendMail('Subject', 'Body', 'from@example.com', ['a@example.com', 'b@example.com']);
    expect(sent).toBe(1);
    expect(outbox).toHaveLength(1);
    expect(outbox[0]).toMatchObject({
      subject: 'Subject',
      body: 'Body',
      fromEmail: 'from@example.com',
      to: ['a@example.com', 'b@example.com'],
    });
  });

  it('uses DEFAULT_FROM_EMAIL when fromEmail is null', async () => {
    configure({ DEFAULT_FROM_EMAIL: 'noreply@example.com' });
    await sendMail('Subject', 'Body', null, ['a@example.com']);
    expect(outbox[0]?.fromEmail).toBe('noreply@example.com');
  });

  it('adds htmlMessage as a text/html alternative', async () => {
    await sendMail('Subject', 'Plain body', 'from@example.com', ['a@example.com'], {
      htmlMessage: '<p>HTML body</p>',
    });
    const sent = outbox[0] as EmailMultiAlternatives;
    expect(sent).toBeInstanceOf(EmailMultiAlternatives);
    expect(sent.alternatives).toHaveLength(1);
    const parsed = await parse(sent.message());
    expect(parsed.headers.get('content-type')).toMatchObject({ value: 'multipart/alternative' });
    expect(parsed.text).toBe('Plain body\n');
    expect(parsed.html).toBe('<p>HTML body</p>\n');
  });

  it('rejects a recipient list given as a string with a TypeError naming it, sending nothing', async () => {
    const error = await sendMail(
      'Subject',
      'Body',
      'from@example.com',
      'a@example.com' as unknown as string[],
    ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(TypeError);
    expect((error as TypeError).message).toBe('recipientList must be an array of addresses, not a string');
    expect(outbox).toEqual([]);
    expect(CountingBackend.built).toBe(0);
  });

  it('returns 0 for an empty recipient list without connecting', async () => {
    expect(await sendMail('Subject', 'Body', 'from@example.com', [])).toBe(0);
    expect(CountingBackend.opens).toBe(0);
    expect(outbox).toEqual([]);
  });

  it('uses the given connection instead of building one', async () => {
    const connection = new CountingBackend();
    CountingBackend.built = 0;
    await sendMail('Subject', 'Body', 'from@example.com', ['a@example.com'], { connection });
    expect(CountingBackend.built).toBe(0);
    expect(CountingBackend.sendMessagesCalls).toBe(1);
  });

  it('returns 0 with failSilently when the server cannot be reached', async () => {
    configure({
      EMAIL_BACKEND: 'smtp',
      EMAIL_HOST: '127.0.0.1',
      EMAIL_PORT: await closedPort(),
      EMAIL_TIMEOUT: 5,
    });
    expect(
      await sendMail('Subject', 'Body', 'from@example.com', ['a@example.com'], { failSilently: true }),
    ).toBe(0);
  });

  it('throws a DeliveryError when the server cannot be reached without failSilently', async () => {
    configure({
      EMAIL_BACKEND: 'smtp',
      EMAIL_HOST: '127.0.0.1',
      EMAIL_PORT: await closedPort(),
      EMAIL_TIMEOUT: 5,
    });
    await expect(sendMail('Subject', 'Body', 'from@example.com', ['a@example.com'])).rejects.toThrow(
      DeliveryError,
    );
  });
});

describe('sendMassMail', () => {
  it('sends one message per tuple over one connection and one sendMessages call', async () => {
    const sent = await sendMassMail([
      ['First', 'Body 1', 'from@example.com', ['a@example.com']],
      ['Second', 'Body 2', null, ['b@example.com', 'c@example.com']],
      ['Third', 'Body 3', 'other@example.com', ['d@example.com']],
    ]);
    expect(sent).toBe(3);
    expect(outbox.map((message) => [message.subject, message.to])).toEqual([
      ['First', ['a@example.com']],
      ['Second', ['b@example.com', 'c@example.com']],
      ['Third', ['d@example.com']],
    ]);
    expect(CountingBackend.built).toBe(1);
    expect(CountingBackend.opens).toBe(1);
    expect(CountingBackend.sendMessagesCalls).toBe(1);
  });

  it('rejects a tuple whose recipient list is a string, naming it, before sending anything', async () => {
    const error = await sendMassMail([
      ['First', 'Body', 'from@example.com', ['a@example.com']],
      ['Second', 'Body', 'from@example.com', 'b@example.com' as unknown as string[]],
    ]).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(TypeError);
    expect((error as TypeError).message).toMatch(
      /^datatuple\[1\]\.recipientList must be an array of addresses/,
    );
    expect(outbox).toEqual([]);
    expect(CountingBackend.opens).toBe(0);
  });

  it('returns 0 for no tuples without connecting', async () => {
    expect(await sendMassMail([])).toBe(0);
    expect(CountingBackend.opens).toBe(0);
  });

  it('returns 0 with failSilently when the server cannot be reached', async () => {
    configure({
      EMAIL_BACKEND: 'smtp',
      EMAIL_HOST: '127.0.0.1',
      EMAIL_PORT: await closedPort(),
      EMAIL_TIMEOUT: 5,
    });
    const sent = await sendMassMail([['Subject', 'Body', 'from@example.com', ['a@example.com']]], {
      failSilently: true,
    });
    expect(sent).toBe(0);
  });
});

describe('mailAdmins and mailManagers', () => {
  it('mailAdmins sends one message from SERVER_EMAIL to every admin, subject prefixed', async () => {
    configure({ ADMINS: ['Ann <ann@example.com>', 'bob@example.com'], SERVER_EMAIL: 'server@example.com' });
    expect(await mailAdmins('Disk full', 'The disk is full.')).toBe(1);
    expect(outbox).toHaveLength(1);
    expect(outbox[0]).toMatchObject({
      subject: '[Django] Disk full',
      body: 'The disk is full.',
      fromEmail: 'server@example.com',
      to: ['Ann <ann@example.com>', 'bob@example.com'],
    });
  });

  it('mailAdmins uses EMAIL_SUBJECT_PREFIX', async () => {
    configure({ ADMINS: ['ann@example.com'], EMAIL_SUBJECT_PREFIX: '[mailroom] ' });
    await mailAdmins('Hello', 'Body');
    expect(outbox[0]?.subject).toBe('[mailroom] Hello');
  });

  it('mailAdmins adds htmlMessage as a text/html alternative', async () => {
    configure({ ADMINS: ['ann@example.com'] });
    await mailAdmins('Hello', 'Plain', { htmlMessage: '<b>HTML</b>' });
    expect((outbox[0] as EmailMultiAlternatives).alternatives).toHaveLength(1);
    expect((await parse(outbox[0]!.message())).html).toBe('<b>HTML</b>\n');
  });

  it('mailAdmins sends nothing and builds no connection when ADMINS is empty', async () => {
    configure({ ADMINS: [] });
    expect(await mailAdmins('Hello', 'Body')).toBe(0);
    expect(outbox).toEqual([]);
    expect(CountingBackend.built).toBe(0);
  });

  it('mailManagers sends one message from SERVER_EMAIL to every manager, subject prefixed', async () => {
    configure({ MANAGERS: ['mia@example.com', 'max@example.com'], SERVER_EMAIL: 'server@example.com' });
    expect(await mailManagers('Report', 'Numbers')).toBe(1);
    expect(outbox[0]).toMatchObject({
      subject: '[Django] Report',
      fromEmail: 'server@example.com',
      to: ['mia@example.com', 'max@example.com'],
    });
  });

  it('mailManagers sends nothing and builds no connection when MANAGERS is empty', async () => {
    configure({ ADMINS: ['ann@example.com'], MANAGERS: [] });
    expect(await mailManagers('Report', 'Numbers')).toBe(0);
    expect(outbox).toEqual([]);
    expect(CountingBackend.built).toBe(0);
  });

  it('mailAdmins uses the given connection', async () => {
    configure({ ADMINS: ['ann@example.com'] });
    const connection = new CountingBackend();
    CountingBackend.built = 0;
    await mailAdmins('Hello', 'Body', { connection });
    expect(CountingBackend.built).toBe(0);
    expect(CountingBackend.sendMessagesCalls).toBe(1);
  });

  it('mailAdmins returns 0 with failSilently when the server cannot be reached', async () => {
    configure({
      ADMINS: ['ann@example.com'],
      EMAIL_BACKEND: 'smtp',
      EMAIL_HOST: '127.0.0.1',
      EMAIL_PORT: await closedPort(),
      EMAIL_TIMEOUT: 5,
    });
    expect(await mailAdmins('Hello', 'Body', { failSilently: true })).toBe(0);
  });
});
