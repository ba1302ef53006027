/**
 * Regression (issue 13 review): `mailroom campaign retry` and `mailroom failed retry` on the same
 * dead-lettered campaign message mailed its recipient twice and left the campaign at sent 11 of 10,
 * failed -1, in either order. Each retry now takes the message from the other: a campaign retry makes
 * the old ledger entry permanent, a dead-letter retry removes the failure record it reopens.
 */
import { campaignFailures, campaignStatus, retryCampaign, startCampaign } from '@mailroom/producer';
import { createWorker, retryFailed } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { queueRig, useHarness } from '../support/harness.js';
import { REDIS_URL } from '../support/redis.js';
import { captureLogger, waitUntil } from '../support/wait.js';

const harness = useHarness();
const DEFERRED = 'user3@example.com';

async function deadLetteredCampaign() {
  const refuse = { now: true };
  const rig = await queueRig(harness, {
    label: 'retry-both-ways',
    server: {
      onRcpt: (address) =>
        refuse.now && address === DEFERRED ? { code: 450, message: '4.2.0 Mailbox busy' } : undefined,
    },
  });
  const worker = createWorker({
    redis: REDIS_URL,
    queue: rig.queue,
    backend: 'smtp',
    backendOptions: { host: rig.server.host, port: rig.server.port },
    attempts: 2,
    backoff: { delay: 20, maxDelay: 50 },
    logger: captureLogger('warn').logger,
  });
  harness.onCleanup(() => worker.close());
  // Without failSilently the batch with the exhausted message is dead-lettered.
  const handle = await startCampaign(rig.producer, {
    id: 'both',
    failSilently: false,
    template: { subject: 'Hi', text: 'Hello {{ email }}', fromEmail: 'news@example.com' },
    recipients: Array.from({ length: 10 }, (_, i) => `user${i}@example.com`),
  });
  await handle.enqueued;
  await waitUntil(async () => (await campaignStatus(rig.producer, 'both')).state === 'completed', 'sent');
  expect(await rig.producer.getQueue().getJobCountByTypes('failed')).toBe(1);
  refuse.now = false;
  return rig;
}

const copiesTo = (messages: readonly { to: string[] }[], address: string) =>
  messages.filter((message) => message.to.includes(address)).length;

async function settled(rig: Awaited<ReturnType<typeof deadLetteredCampaign>>) {
  await waitUntil(async () => copiesTo(rig.server.messages, DEFERRED) >= 1, 'the retried message');
  await waitUntil(async () => (await campaignStatus(rig.producer, 'both')).state === 'completed', 'settled');
  // Time for a second copy, had one been enqueued (the backoff is 20 ms).
  await new Promise((resolve) => setTimeout(resolve, 500));
  return campaignStatus(rig.producer, 'both');
}

describe('a campaign message retried by both retries', () => {
  it('campaign retry first: the dead-letter retry has nothing left to send', async () => {
    const rig = await deadLetteredCampaign();
    expect((await retryCampaign(rig.producer, 'both', { transient: true })).retried).toBe(1);
    const deadLetters = await retryFailed(rig.producer, 'all');
    expect(deadLetters.reopened).toBe(0);
    const status = await settled(rig);
    expect(copiesTo(rig.server.messages, DEFERRED)).toBe(1);
    expect(status).toMatchObject({ total: 10, sent: 10, failed: 0 });
  });

  it('dead-letter retry first: the failure is no longer listed and the campaign retry sends nothing', async () => {
    const rig = await deadLetteredCampaign();
    expect((await retryFailed(rig.producer, 'all')).reopened).toBe(1);
    await settled(rig);
    const listed = [];
    for await (const failure of campaignFailures(rig.producer, 'both')) listed.push(failure.address);
    expect(listed).toEqual([]);
    // As once the delivered batch's ledger has expired: nothing tells the retry it was delivered.
    const ledgers = await rig.producer.redis.keys(`${rig.producer.keys.base}:ledger:*`);
    if (ledgers.length > 0) await rig.producer.redis.del(...ledgers);
    expect((await retryCampaign(rig.producer, 'both', { transient: true })).retried).toBe(0);
    const status = await settled(rig);
    expect(copiesTo(rig.server.messages, DEFERRED)).toBe(1);
    expect(status).toMatchObject({ total: 10, sent: 10, failed: 0 });
  });
});
