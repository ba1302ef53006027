/** A producer on a sharded queue, on one Redis: where its batches go, and what it does when the queue's shard count changes under it. */
import { ConfigError, EmailMessage } from '@mailroom/core';
import { campaignShardOf, claimLayout, queueLayout } from '@mailroom/core/protocol';
import {
  createProducer,
  openInspector,
  type Producer,
  retryCampaign,
  startCampaign,
} from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { useHarness } from '../../../test/support/harness.js';
import { REDIS_URL, removeShardedQueueKeys, uniqueQueue } from '../../../test/support/redis.js';
import { silentLogger } from './support/redis.js';

const harness = useHarness();
const { redis } = harness;

/** A producer on a fresh queue of `shards` shards; it and every key of the queue go after the test. */
function producerOn(shards: number, queue = uniqueQueue('producer-shards')): Producer {
  const producer = createProducer({ redis: REDIS_URL, queue, shards, logger: silentLogger });
  harness.onCleanup(() => removeShardedQueueKeys(redis, queue));
  harness.onCleanup(() => producer.close());
  return producer;
}

const message = (to: string) => new EmailMessage('Hi', 'Hello', 'news@example.com', [to]);

async function waitingPerShard(producer: Producer): Promise<number[]> {
  return Promise.all(
    producer.getQueues().map(async (queue) => (await queue.getJobCounts('waiting')).waiting ?? 0),
  );
}

describe('a producer on 3 shards', () => {
  it('writes each call to one shard, in turn, and a repeated idempotency key to the same one', async () => {
    const producer = producerOn(3);
    for (let i = 0; i < 6; i++)
      await producer.enqueue([message(`a${i}@example.com`), message(`b${i}@example.com`)]);
    expect(await waitingPerShard(producer)).toEqual([2, 2, 2]);
    const first = await producer.enqueue(message('k@example.com'), { idempotencyKey: 'invoice-9' });
    const again = await producer.enqueue(message('k@example.com'), { idempotencyKey: 'invoice-9' });
    expect(again).toMatchObject({ duplicate: true, jobIds: first.jobIds });
    const counts = await waitingPerShard(producer);
    expect(counts[producer.layout.shardForKey('invoice-9').index]).toBe(3);
    expect(counts.reduce((sum, n) => sum + n, 0)).toBe(7);
  });

  it('stops enqueueing once the queue was taken over with another shard count, saying which', async () => {
    const queue = uniqueQueue('producer-shards');
    const producer = producerOn(1, queue);
    await producer.enqueue(message('first@example.com'));
    // Another process took the queue over with 3 shards (allowed: shard 0 is kept).
    await claimLayout(redis, queueLayout('{mailroom}', queue, 3));
    // Within epochCheckInterval (5 s) the producer notices, and refuses rather than write where it
    // no longer belongs.
    const deadline = Date.now() + 15_000;
    let refusal: unknown;
    while (Date.now() < deadline && refusal === undefined) {
      refusal = await producer.enqueue(message('later@example.com')).then(
        () => undefined,
        (error: unknown) => error,
      );
      if (refusal === undefined) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(refusal).toBeInstanceOf(ConfigError);
    expect((refusal as Error).message).toContain('restart this producer with MAILROOM_SHARDS=3');
    // And it goes on refusing: claiming the queue back would write where the new workers never read.
    await expect(producer.enqueue(message('again@example.com'))).rejects.toThrow(/MAILROOM_SHARDS=3/);
    expect(await redis.get(queueLayout('{mailroom}', queue).home.keys.layout)).toBe('3');
  }, 30_000);

  it('opens an inspector on the recorded shard count, never claiming another', async () => {
    const queue = uniqueQueue('producer-shards');
    const writer = producerOn(3, queue);
    for (let i = 0; i < 3; i++) await writer.enqueue(message(`w${i}@example.com`));
    const inspector = await openInspector({ redis: REDIS_URL, queue, shards: 1, logger: silentLogger });
    try {
      expect(inspector.layout.shards).toHaveLength(3);
      expect(await waitingPerShard(inspector)).toEqual([1, 1, 1]);
    } finally {
      await inspector.close();
    }
    expect(await redis.get(writer.keys.layout)).toBe('3');
  });

  it('refuses to resume or retry a campaign pinned to a shard the layout no longer has, before writing', async () => {
    const queue = uniqueQueue('producer-shards');
    const three = queueLayout('{mailroom}', queue, 3);
    const id = [...Array(50).keys()]
      .map((i) => `news-${i}`)
      .find((c) => three.campaignShard(c).index !== 0) as string;
    const pinned = await campaignShardOf(redis, three, id, { assign: true });
    // Its record, on its shard, with one failed recipient a retry could claim.
    await redis.hset(pinned.keys.campaign(id), 'state', 'running');
    await redis.hset(pinned.keys.campaignFailedRecipients(id), 'b@example.com', '{}');
    const one = producerOn(1, queue);
    await one.ready();
    async function* recipients() {
      yield { email: 'a@example.com' };
    }
    const started = startCampaign(one, {
      id,
      template: { subject: 'Hi', text: 'Hello', fromEmail: 'news@example.com' },
      recipients: recipients(),
    });
    await expect(started).rejects.toMatchObject({ code: 'ESHARD' });
    await expect(retryCampaign(one, id)).rejects.toMatchObject({ code: 'ESHARD' });
    // Nothing was written for it on the home shard, nothing was claimed on its own.
    expect(await redis.exists(one.keys.campaign(id))).toBe(0);
    expect(await redis.hlen(pinned.keys.campaignFailedRecipients(id))).toBe(1);
    expect(await redis.exists(pinned.keys.campaignRetrying(id))).toBe(0);
  });
});
