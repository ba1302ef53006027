/**
 * A worker's presence and the queue's backlog as the worker reads them: createWorker announces itself
 * until close() (heartbeat.ts); a heartbeat that fails is logged once, throttled; readQueueBacklog
 * (queue-gauges.ts) counts batches and messages per state and the running campaigns.
 */
import { EmailMessage } from '@mailroom/core';
import { liveWorkers, protocolDefaults, queueKeys, queueLayout } from '@mailroom/core/protocol';
import { cancelCampaign, createProducer, startCampaign } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { freshQueue, useHarness } from '../../../test/support/harness.js';
import { REDIS_URL } from '../../../test/support/redis.js';
import { captureLogger, waitUntil } from '../../../test/support/wait.js';
import { startHeartbeat } from '../src/heartbeat.js';
import { LogThrottle } from '../src/log-throttle.js';
import { estimateMessages, readQueueBacklog } from '../src/queue-gauges.js';
import { createWorker } from '../src/worker.js';

const harness = useHarness();

describe('worker heartbeat', () => {
  it('announces the worker while it runs and withdraws it on close', async () => {
    const queue = freshQueue(harness, 'heartbeat');
    const keys = queueKeys(protocolDefaults.prefix, queue);
    const { logger } = captureLogger();
    const worker = createWorker({ redis: REDIS_URL, queue, backend: 'memory', concurrency: 3, logger });
    harness.onCleanup(() => worker.close());
    await worker.heartbeat.first;
    const [announced, ...others] = await liveWorkers(harness.redis, keys);
    expect(others).toEqual([]);
    expect(announced).toMatchObject({ id: worker.heartbeat.id, pid: process.pid, queue, concurrency: 3 });
    expect(announced?.id).toMatch(new RegExp(`:${process.pid}:[0-9a-f]{8}$`));

    await worker.close();
    expect(await liveWorkers(harness.redis, keys)).toEqual([]);
    expect(await harness.redis.exists(keys.workers, keys.worker(worker.heartbeat.id))).toBe(0);
  });

  it('logs a heartbeat Redis refuses once, not once per beat, and stops cleanly', async () => {
    const queue = freshQueue(harness, 'heartbeat-refused');
    const keys = queueKeys(protocolDefaults.prefix, queue);
    // A string where the index should be: every ZADD fails with WRONGTYPE.
    await harness.redis.set(keys.workers, 'not a sorted set');
    const { logger, lines } = captureLogger();
    const errorLog = new LogThrottle(logger, { initialInterval: 60_000, maxInterval: 60_000 });
    let beats = 0;
    const counting = harness.redis.duplicate();
    harness.onCleanup(() => counting.quit());
    const multi = counting.multi.bind(counting);
    counting.multi = ((...args: Parameters<typeof multi>) => {
      beats++;
      return multi(...args);
    }) as typeof counting.multi;
    const heartbeat = startHeartbeat(counting, keys, { queue, concurrency: 1, interval: 10, errorLog });
    await waitUntil(() => beats >= 10, 'ten heartbeats');
    await heartbeat.stop();
    const failures = lines.filter((line) => line.msg === 'worker heartbeat failed');
    expect(failures).toHaveLength(1);
    expect(String(failures[0]?.err)).toContain('WRONGTYPE');
    const stoppedAt = beats;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(beats).toBe(stoppedAt);
  });
});

describe('readQueueBacklog', () => {
  it('counts batches and their messages per state, and the pending messages of running campaigns', async () => {
    const queue = freshQueue(harness, 'backlog');
    const layout = queueLayout(protocolDefaults.prefix, queue);
    const { logger } = captureLogger();
    const producer = createProducer({ redis: REDIS_URL, queue, batchSize: 5, logger });
    harness.onCleanup(() => producer.close());
    const messages = (count: number, label: string) =>
      Array.from(
        { length: count },
        (_, index) => new EmailMessage('Hi', 'Hello', 'news@example.com', [`${label}${index}@example.com`]),
      );
    await producer.enqueue(messages(12, 'now'));
    await producer.enqueue(messages(3, 'later'), { delay: 3_600_000 });
    const campaign = await startCampaign(producer, {
      id: 'june',
      template: { subject: 'News', text: 'Hello', fromEmail: 'news@example.com' },
      recipients: Array.from({ length: 7 }, (_, index) => `reader${index}@example.com`),
    });
    await campaign.enqueued;

    const backlog = await readQueueBacklog(harness.redis, layout, {
      sampleJobs: 100,
    });
    // 12 in batches of 5, 5, 2; the campaign's 7 in 5, 2.
    expect(backlog.states).toEqual({
      waiting: { batches: 5, messages: 19 },
      delayed: { batches: 1, messages: 3 },
      active: { batches: 0, messages: 0 },
      failed: { batches: 0, messages: 0 },
    });
    expect(backlog.campaigns).toEqual([{ id: 'june', sent: 0, failed: 0, pending: 7 }]);

    // Past the sample, the rest of a state is estimated from the batches read.
    const sampled = await readQueueBacklog(harness.redis, layout, {
      sampleJobs: 1,
    });
    expect(sampled.states.waiting.batches).toBe(5);
    expect([10, 25]).toContain(sampled.states.waiting.messages);

    // A cancelled campaign no longer runs: it is left out.
    await cancelCampaign(producer, 'june');
    expect(
      (
        await readQueueBacklog(harness.redis, layout, {
          sampleJobs: 100,
        })
      ).campaigns,
    ).toEqual([]);
  });

  it('estimates at the average of the batches read, exactly when all were read', () => {
    expect(estimateMessages(3, 3, 12)).toBe(12);
    expect(estimateMessages(1000, 200, 10_000)).toBe(50_000);
    expect(estimateMessages(4, 0, 0)).toBe(4);
    expect(estimateMessages(0, 0, 0)).toBe(0);
  });
});
