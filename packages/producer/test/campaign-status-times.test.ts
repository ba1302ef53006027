/** campaignStatus's times and ETA basis against real Redis: finishedAt from lastSettledAt, cancelledAt, and a queue that only waits for retries. */
import { CAMPAIGN_FIELDS } from '@mailroom/core/protocol';
import { type CampaignStatus, campaignStatus, createProducer, startCampaign } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { freshQueue, useHarness } from '../../../test/support/harness.js';
import { REDIS_URL } from '../../../test/support/redis.js';
import { captureLogger } from '../../../test/support/wait.js';

const harness = useHarness();

async function campaign(recipients: string[]) {
  const queue = freshQueue(harness, 'status-times');
  const producer = createProducer({ redis: REDIS_URL, queue, logger: captureLogger().logger });
  harness.onCleanup(() => producer.close());
  const handle = await startCampaign(producer, {
    id: 'june',
    template: { subject: 'News', text: 'Hello', fromEmail: 'news@example.com' },
    recipients,
  });
  await handle.enqueued;
  return { producer, key: producer.keys.campaign('june') };
}

describe('campaignStatus times', () => {
  it('gives a completed campaign the time its last message settled as finishedAt', async () => {
    const { producer, key } = await campaign(['a@example.com', 'b@example.com']);
    const running = await campaignStatus(producer, 'june');
    expect(running.finishedAt).toBeUndefined();
    // As the worker's RECORD script leaves it after the last message.
    const settledAt = running.startedAt + 65_000;
    await harness.redis.hset(key, CAMPAIGN_FIELDS.sent, 2, CAMPAIGN_FIELDS.lastSettledAt, settledAt);
    const done = await campaignStatus(producer, 'june');
    expect(done).toMatchObject({
      state: 'completed',
      finishedAt: settledAt,
      etaSeconds: 0,
      etaBasis: 'done',
    });
  });

  it('gives no finish time to a campaign that goes on, however long ago its last message settled', async () => {
    const { producer, key } = await campaign(['a@example.com', 'b@example.com']);
    await harness.redis.hset(
      key,
      CAMPAIGN_FIELDS.sent,
      1,
      CAMPAIGN_FIELDS.lastSettledAt,
      Date.now() - 60_000,
    );
    const status = await campaignStatus(producer, 'june');
    expect(status.state).toBe('running');
    expect(status.finishedAt).toBeUndefined();
  });

  it('says the campaign waits for retries when the queue only holds delayed batches, with when the next is due', async () => {
    const { producer } = await campaign(['a@example.com', 'b@example.com']);
    const keys = producer.keys;
    // The batch as a retry leaves it: moved from wait to delayed, due in a minute (BullMQ's score).
    const dueAt = Date.now() + 60_000;
    const [jobId] = await harness.redis.lrange(keys.jobSet('wait'), 0, -1);
    await harness.redis
      .multi()
      .lrem(keys.jobSet('wait'), 0, jobId as string)
      .zadd(keys.jobSet('delayed'), dueAt * 0x1000, jobId as string)
      .exec();
    const status: CampaignStatus = await campaignStatus(producer, 'june');
    expect(status).toMatchObject({ state: 'running', rate: 0, etaBasis: 'retries', retryAt: dueAt });
    // Nothing settled yet: no rate to estimate the sending from.
    expect(status.etaSeconds).toBeNull();
  });

  it('does not claim retries while batches are ready to send', async () => {
    const { producer } = await campaign(['a@example.com']);
    const status = await campaignStatus(producer, 'june');
    expect(status).toMatchObject({ etaBasis: 'unknown', retryAt: undefined, etaSeconds: null });
  });
});
