/**
 * The producer's side of the suppression list against real Redis, without workers: campaigns skip
 * suppressed recipients and count them, enqueue leaves them out when asked, and campaigns sign a
 * one-click unsubscribe link per recipient.
 */
import { ConfigError, decodeWire, EmailMessage, ValidationError } from '@mailroom/core';
import { parseBatchJob, verifyUnsubscribeToken } from '@mailroom/core/protocol';
import {
  type CampaignOptions,
  type CampaignTemplate,
  type CampaignUnsubscribe,
  campaignStatus,
  createProducer,
  type Producer,
  SuppressionList,
  startCampaign,
} from '@mailroom/producer';
import type { Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { useHarness } from '../../../test/support/harness.js';
import { REDIS_URL, uniqueQueue } from '../../../test/support/redis.js';
import { removeQueue, silentLogger } from './support/redis.js';

const harness = useHarness();
const SECRET = 'test-secret-0123456789abcdef';

async function setup(): Promise<{ producer: Producer; suppression: SuppressionList }> {
  const queue = uniqueQueue('suppression');
  const producer = createProducer({ redis: REDIS_URL, queue, logger: silentLogger, batchSize: 10 });
  harness.onCleanup(() => removeQueue(harness.redis, queue));
  harness.onCleanup(() => producer.close());
  await producer.ready();
  return { producer, suppression: new SuppressionList(producer.redis, producer.keys) };
}

const template: CampaignTemplate = {
  subject: 'News for {{ name }}',
  text: 'Hello {{ name }}',
  fromEmail: 'news@example.com',
};

/** Every message enqueued on the producer's queue, decoded as the worker decodes it. */
async function enqueuedMessages(producer: Producer): Promise<EmailMessage[]> {
  const jobs = (await producer.getQueue().getJobs(['waiting', 'delayed', 'prioritized'])) as Job[];
  return jobs.flatMap((job) => parseBatchJob(job.data).messages.map((wire) => decodeWire(wire).message));
}

async function runCampaign(producer: Producer, options: Omit<CampaignOptions, 'template'>) {
  const handle = await startCampaign(producer, { template, ...options });
  return { id: handle.id, progress: await handle.enqueued };
}

describe('a campaign and the suppression list', () => {
  it('skips suppressed recipients, whatever case or IDN spelling the list uses, and counts them apart', async () => {
    const { producer, suppression } = await setup();
    await suppression.add([
      { address: 'BOUNCED@example.com', reason: 'hard-bounce', source: '550 5.1.1 user unknown' },
      { address: 'gone@bücher.example', reason: 'unsubscribe' },
    ]);
    const recipients = [
      'ok1@example.com',
      'bounced@EXAMPLE.com',
      'ok2@example.com',
      'gone@xn--bcher-kva.example',
      'ok1@example.com',
    ];
    const { id, progress } = await runCampaign(producer, { id: 'skip', recipients });
    expect(progress).toMatchObject({ total: 2, queued: 2, suppressed: 2, duplicates: 1, invalid: 0 });
    const sentTo = (await enqueuedMessages(producer)).flatMap((message) => message.to);
    expect(sentTo.sort()).toEqual(['ok1@example.com', 'ok2@example.com']);
    const status = await campaignStatus(producer, id);
    expect(status).toMatchObject({ total: 2, queued: 2, suppressed: 2, duplicates: 1, remaining: 2 });
  });

  it('counts suppressed recipients once when the campaign is started again', async () => {
    const { producer, suppression } = await setup();
    await suppression.add({ address: 'manual@example.com', reason: 'manual' });
    const recipients = ['a@example.com', 'manual@example.com', 'b@example.com'];
    await runCampaign(producer, { id: 'again', recipients });
    const second = await runCampaign(producer, { id: 'again', recipients });
    // The same chunks again: already counted, so nothing is counted twice.
    expect(second.progress).toMatchObject({ total: 0, queued: 0, suppressed: 0 });
    expect(await campaignStatus(producer, 'again')).toMatchObject({ total: 2, suppressed: 1, queued: 2 });
  });
});

describe('one-click unsubscribe links of a campaign', () => {
  it('gives each recipient its own signed link in List-Unsubscribe and {{ unsubscribe_url }}', async () => {
    const { producer } = await setup();
    const { id } = await runCampaign(producer, {
      id: 'links',
      recipients: [{ email: 'Ann@Example.com', name: 'Ann' }, 'bob@example.com'],
      template: { ...template, text: 'Hello {{ name }}\nUnsubscribe: {{ unsubscribe_url }}\n' },
      unsubscribe: { endpoint: 'https://mail.example.com/base/', secret: SECRET, mailto: 'u@example.com' },
    } as Omit<CampaignOptions, 'template'>);
    const messages = await enqueuedMessages(producer);
    expect(messages).toHaveLength(2);
    const seen = new Set<string>();
    for (const message of messages) {
      const header = String(message.extraHeaders['List-Unsubscribe']);
      const match =
        /^<mailto:u@example\.com>, <(https:\/\/mail\.example\.com\/base\/unsubscribe\/([^>]+))>$/.exec(
          header,
        );
      expect(match, header).not.toBeNull();
      const [, url, token] = match as unknown as [string, string, string];
      expect(message.extraHeaders['List-Unsubscribe-Post']).toBe('List-Unsubscribe=One-Click');
      expect(message.body).toContain(`Unsubscribe: ${url}\n`);
      const verdict = verifyUnsubscribeToken(token, [SECRET]);
      expect(verdict).toMatchObject({ ok: true, queue: producer.queue, campaign: id });
      if (verdict.ok) seen.add(verdict.address);
    }
    expect([...seen].sort()).toEqual(['ann@example.com', 'bob@example.com']);
  });

  it('refuses, before writing anything, an endpoint without a secret, a non-https endpoint and endpoint with url', async () => {
    const { producer } = await setup();
    const start = (unsubscribe: CampaignUnsubscribe) =>
      startCampaign(producer, { id: 'refused', template, recipients: ['a@example.com'], unsubscribe });
    await expect(start({ endpoint: 'https://mail.example.com' })).rejects.toThrow(ConfigError);
    await expect(start({ endpoint: 'https://mail.example.com' })).rejects.toThrow(
      /MAILROOM_UNSUBSCRIBE_SECRET/,
    );
    await expect(start({ endpoint: 'http://mail.example.com', secret: SECRET })).rejects.toThrow(
      ValidationError,
    );
    await expect(start({ endpoint: 'https://mail.example.com', secret: 'short' })).rejects.toThrow(
      /unsubscribe\.secret.*16 characters/,
    );
    await expect(
      start({ endpoint: 'https://mail.example.com', url: 'https://example.com/u', secret: SECRET }),
    ).rejects.toThrow(/exclusive/);
    expect(await producer.redis.exists(producer.keys.campaign('refused'))).toBe(0);
  });
});

describe('enqueue with skipSuppressed', () => {
  const message = (to: string[], cc: string[] = []) =>
    new EmailMessage({ subject: 'Receipt', body: 'Thanks', fromEmail: 'shop@example.com', to, cc });

  it('leaves out suppressed recipients, drops messages left with none, and says which', async () => {
    const { producer, suppression } = await setup();
    await suppression.add([
      { address: 'gone@example.com', reason: 'hard-bounce' },
      { address: 'quit@example.com', reason: 'unsubscribe' },
    ]);
    const result = await producer.enqueue(
      [
        message(['Gone <GONE@example.com>']),
        message(['keep@example.com'], ['quit@example.com']),
        message(['fine@example.com']),
      ],
      { skipSuppressed: true },
    );
    expect(result.messages).toBe(2);
    expect(result.skippedMessages).toEqual([0]);
    expect(result.suppressed?.sort()).toEqual(['gone@example.com', 'quit@example.com']);
    const enqueued = await enqueuedMessages(producer);
    expect(enqueued.map((m) => [m.to, m.cc])).toEqual([
      [['keep@example.com'], []],
      [['fine@example.com'], []],
    ]);
  });

  it('enqueues nothing and no job when every recipient is suppressed', async () => {
    const { producer, suppression } = await setup();
    await suppression.add({ address: 'gone@example.com', reason: 'complaint' });
    const result = await producer.enqueue(message(['gone@example.com']), { skipSuppressed: true });
    expect(result).toEqual({
      messages: 0,
      jobIds: [],
      duplicate: false,
      suppressed: ['gone@example.com'],
      skippedMessages: [0],
    });
    expect(await enqueuedMessages(producer)).toEqual([]);
  });

  it('sends to suppressed addresses by default (transactional mail)', async () => {
    const { producer, suppression } = await setup();
    await suppression.add({ address: 'gone@example.com', reason: 'hard-bounce' });
    const result = await producer.enqueue(message(['gone@example.com']));
    expect(result.messages).toBe(1);
    expect(result.suppressed).toBeUndefined();
  });
});

describe('a scheduled campaign started again', () => {
  it('keeps the time first given when the resume does not give one', async () => {
    const { producer } = await setup();
    const sendAt = Date.now() + 60_000;
    await runCampaign(producer, { id: 'later', recipients: ['a@example.com'], sendAt });
    await runCampaign(producer, { id: 'later', recipients: ['a@example.com', 'b@example.com'] });
    const delayed = await producer.getQueue().getJobs(['delayed']);
    expect(delayed).toHaveLength(2);
    for (const job of delayed)
      expect(job.timestamp + (job.opts.delay ?? 0)).toBeGreaterThanOrEqual(sendAt - 1000);
    expect((await campaignStatus(producer, 'later')).sendAt).toBe(sendAt);
  });
});

describe('a chunk read again after a crash', () => {
  it('skips the recipients it skipped the first time, whatever the list says by then', async () => {
    const { producer, suppression } = await setup();
    await suppression.add({ address: 'gone@example.com', reason: 'manual' });
    const recipients = ['a@example.com', 'gone@example.com', 'b@example.com'];
    await runCampaign(producer, { id: 'crash', recipients });
    const jobs = await producer.getQueue().getJobCountByTypes('waiting');
    // As if the process died after enqueueing the chunk, before counting it: the chunk is not counted.
    const keys = producer.keys;
    const seen = await producer.redis.keys(`${keys.campaignSeen('crash')}:*`);
    await producer.redis.del(keys.campaignChunks('crash'), ...seen);
    await producer.redis.hdel(keys.campaign('crash'), 'total', 'queued', 'suppressed', 'duplicates');
    // Meanwhile `gone` was taken off the list: its message was never enqueued, and counting it queued
    // would leave the campaign waiting for it forever.
    await suppression.remove('gone@example.com');
    await runCampaign(producer, { id: 'crash', recipients });
    // Counted as enqueued the first time: a and b queued, gone suppressed; nothing enqueued again.
    expect(await campaignStatus(producer, 'crash')).toMatchObject({ total: 2, queued: 2, suppressed: 1 });
    expect(await producer.getQueue().getJobCountByTypes('waiting')).toBe(jobs);
  });
});
