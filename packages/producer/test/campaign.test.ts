/**
 * startCampaign's enqueueing side against real Redis, without workers: what happens to a recipient
 * whose message cannot be built (issue 9). Each is an invalid row named by its position, address,
 * field and reason, counted, and the campaign goes on; the sending side is in test/campaign.test.ts.
 */
import { EmailMessage, ValidationError } from '@mailroom/core';
import {
  type CampaignHandle,
  type CampaignOptions,
  type CampaignRecipient,
  type CampaignTemplate,
  campaignStatus,
  createProducer,
  type InvalidRow,
  type Producer,
  type ProducerOptions,
  startCampaign,
} from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { useHarness } from '../../../test/support/harness.js';
import { REDIS_URL, uniqueQueue } from '../../../test/support/redis.js';
import { removeQueue, silentLogger } from './support/redis.js';

const harness = useHarness();

/** A producer on a fresh queue; the queue's keys and the producer go away after the test. */
function setup(options: ProducerOptions = {}): Producer {
  const queue = uniqueQueue('campaign-rows');
  const producer = createProducer({ redis: REDIS_URL, queue, logger: silentLogger, ...options });
  harness.onCleanup(() => removeQueue(harness.redis, queue));
  harness.onCleanup(() => producer.close());
  return producer;
}

const template: CampaignTemplate = {
  subject: 'News for {{ name }}',
  text: 'Hello {{ name }}',
  fromEmail: 'news@example.com',
};

/** Starts a campaign and waits until every recipient is read; collects what onInvalid reports. */
async function run(
  producer: Producer,
  options: Omit<CampaignOptions, 'onInvalid'>,
): Promise<{ progress: Awaited<CampaignHandle['enqueued']>; reported: InvalidRow[] }> {
  const reported: InvalidRow[] = [];
  const handle = await startCampaign(producer, { ...options, onInvalid: (row) => reported.push(row) });
  return { progress: await handle.enqueued, reported };
}

describe('a recipient whose message cannot be built', () => {
  const LIMIT = 2000;
  const long = 'x'.repeat(LIMIT + 1);

  it.each<[string, Partial<CampaignTemplate> & { unsubscribeUrl?: string }, string]>([
    ['subject', { subject: 'News for {{ long }}' }, 'subject'],
    ['text', { text: 'Hello {{ long }}' }, 'text'],
    ['html', { html: '<p>{{ long }}</p>' }, 'html'],
    ['a header value', { headers: { 'X-Ref': 'ref-{{ long }}' } }, 'headers.X-Ref'],
    ['the unsubscribe URL', { unsubscribeUrl: 'https://example.com/u?r={{ long }}' }, 'unsubscribe.url'],
  ])(
    'is an invalid row naming %s when it renders past maxMessageBytes, and the others go on',
    async (_label, change, field) => {
      const producer = setup({ maxMessageBytes: LIMIT });
      const { unsubscribeUrl, ...templateChange } = change;
      const { progress, reported } = await run(producer, {
        id: 'capped',
        template: { ...template, ...templateChange },
        ...(unsubscribeUrl ? { unsubscribe: { url: unsubscribeUrl } } : {}),
        recipients: [
          { email: 'a@example.com', name: 'A', long: 'short' },
          { email: 'b@example.com', name: 'B', long },
          { email: 'c@example.com', name: 'C', long: 'short' },
        ],
      });
      expect(progress).toMatchObject({ total: 3, queued: 2, invalid: 1, stopped: 'done' });
      // The reason names the template's own field (`template.text`, `unsubscribe.url`).
      const named = field.startsWith('unsubscribe.') ? field : `template.${field}`;
      const expected = {
        row: 2,
        email: 'b@example.com',
        field,
        reason: `${named} renders to more than ${LIMIT} characters`,
      };
      expect(reported).toEqual([expected]);
      const status = await campaignStatus(producer, 'capped');
      expect(status).toMatchObject({ total: 3, queued: 2, failed: 1, failedByReason: { invalid: 1 } });
      expect(status.invalidRows).toEqual([expected]);
    },
  );

  it('is an invalid row naming no field when checking its message throws a RangeError', async () => {
    const producer = setup();
    class Overflowing extends EmailMessage {
      override validate(): void {
        throw new RangeError('Maximum call stack size exceeded');
      }
    }
    const { progress, reported } = await run(producer, {
      id: 'overflow',
      template,
      recipients: ['a@example.com', 'boom@example.com', 'c@example.com'],
      render: ({ email }) =>
        email.startsWith('boom')
          ? new Overflowing('Hi', 'Body', 'news@example.com', [email])
          : new EmailMessage('Hi', 'Body', 'news@example.com', [email]),
    });
    expect(progress).toMatchObject({ total: 3, queued: 2, invalid: 1, stopped: 'done' });
    expect(reported).toEqual([
      {
        row: 2,
        email: 'boom@example.com',
        field: 'message',
        reason: 'it could not be checked: RangeError: Maximum call stack size exceeded',
      },
    ]);
  });

  it('is an invalid row when render() throws a RangeError or a ValidationError', async () => {
    const producer = setup();
    const { progress, reported } = await run(producer, {
      id: 'render-errors',
      template,
      recipients: ['a@example.com', 'range@example.com', 'invalid@example.com'],
      render: ({ email }) => {
        if (email.startsWith('range')) throw new RangeError('Invalid string length');
        if (email.startsWith('invalid')) throw new ValidationError('no such plan', { field: 'plan' });
        return new EmailMessage('Hi', 'Body', 'news@example.com', [email]);
      },
    });
    expect(progress).toMatchObject({ total: 3, queued: 1, invalid: 2 });
    expect(reported).toEqual([
      { row: 2, email: 'range@example.com', field: 'message', reason: 'RangeError: Invalid string length' },
      { row: 3, email: 'invalid@example.com', field: 'plan', reason: 'no such plan' },
    ]);
  });

  it('stops the enqueueing, resumably, when render() fails for a reason that is not the recipient’s', async () => {
    const producer = setup({ batchSize: 1 });
    const recipients = ['a@example.com', 'b@example.com', 'c@example.com'];
    let databaseUp = false;
    const options: CampaignOptions = {
      id: 'database-down',
      template,
      recipients,
      chunkSize: 1,
      render: ({ email }) => {
        if (!databaseUp && email.startsWith('b')) throw new Error('database down');
        return new EmailMessage('Hi', 'Body', 'news@example.com', [email]);
      },
    };
    const first = await startCampaign(producer, options);
    await expect(first.enqueued).rejects.toThrow('database down');
    // Not marked invalid (nor seen): the restart sends b and c.
    expect(await campaignStatus(producer, 'database-down')).toMatchObject({
      total: 1,
      failed: 0,
      enqueueError: 'database down',
      invalidRows: [],
    });
    databaseUp = true;
    const second = await startCampaign(producer, options);
    expect(await second.enqueued).toMatchObject({ total: 2, queued: 2, invalid: 0, stopped: 'done' });
  });

  it('records an 8 MB address cut to 254 characters and the reason to 300, each on one line', async () => {
    const producer = setup();
    const email = `a\r\nb${'a'.repeat(8 * 1024 * 1024)}@example.com`;
    const { reported } = await run(producer, { id: 'huge-address', template, recipients: [email] });
    const [row] = reported;
    expect(row?.email.startsWith('a b')).toBe(true);
    expect(row?.email.length).toBeLessThanOrEqual(254);
    expect(row?.email.endsWith('…')).toBe(true);
    expect(row?.reason.length).toBeLessThanOrEqual(300);
    expect(`${row?.email}${row?.reason}`).not.toMatch(/[\r\n]/);
  });
});

describe('invalid rows across the campaign', () => {
  it('keeps the first 100 with their reasons, in order, and counts all of them', async () => {
    const producer = setup();
    const recipients: CampaignRecipient[] = Array.from({ length: 150 }, (_, index) => `bad${index}@`);
    recipients.splice(75, 0, 'good@example.com');
    const { progress, reported } = await run(producer, { id: 'many', template, recipients, chunkSize: 40 });
    expect(progress).toMatchObject({ total: 151, queued: 1, invalid: 150 });
    expect(reported).toHaveLength(150);
    const status = await campaignStatus(producer, 'many');
    expect(status.failedByReason).toEqual({ invalid: 150 });
    expect(status.invalidRows).toHaveLength(100);
    expect(status.invalidRows.map((row) => row.row)).toEqual(
      Array.from({ length: 101 }, (_, index) => index + 1).filter((row) => row !== 76),
    );
    expect(status.invalidRows[0]).toMatchObject({ email: 'bad0@', field: 'to' });
  });

  it('passes onInvalid the recipient as given, and a restart neither fails nor reports or counts it again', async () => {
    const producer = setup({ maxMessageBytes: 4096 });
    const bad = { email: 'b@example.com', name: 'B', long: 'x'.repeat(20_000) };
    // Every recipient has the columns the template uses: the first one's keys are the columns.
    const recipients = [{ email: 'a@example.com', name: 'A', long: 'short' }, bad];
    const options: CampaignOptions = {
      id: 'again',
      template: { ...template, text: '{{ long }}' },
      recipients,
    };
    const seen: CampaignRecipient[] = [];
    const first = await startCampaign(producer, { ...options, onInvalid: (_row, item) => seen.push(item) });
    expect(await first.enqueued).toMatchObject({ total: 2, queued: 1, invalid: 1 });
    expect(seen).toEqual([bad]);
    expect(seen[0]).toBe(bad);

    const second = await startCampaign(producer, { ...options, onInvalid: (_row, item) => seen.push(item) });
    expect(await second.enqueued).toMatchObject({ total: 0, queued: 0, invalid: 0, stopped: 'done' });
    expect(seen).toHaveLength(1);
    const status = await campaignStatus(producer, 'again');
    expect(status).toMatchObject({ total: 2, queued: 1, failedByReason: { invalid: 1 } });
    expect(status.invalidRows).toHaveLength(1);
    expect(status.enqueueError).toBeUndefined();
  });
});
