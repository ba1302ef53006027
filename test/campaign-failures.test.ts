/**
 * A campaign's failures report and retry (campaign-failures.ts) end to end: real Redis, in-process
 * workers and a real SMTP server that refuses some recipients for good and defers others past the
 * retry limit, then accepts everyone; receipts are counted per recipient on the server.
 */
import {
  type CampaignFailure,
  campaignFailures,
  campaignStatus,
  createProducer,
  type Producer,
  retryCampaign,
  startCampaign,
} from '@mailroom/producer';
import { createWorker, type MailWorker } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { queueRig, receiptsPerRecipient, useHarness } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import type { SmtpTestServer } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';

const harness = useHarness();

const RECIPIENTS = 2000;
/** Refused at RCPT with 550 5.7.1 (policy: not a hard bounce, so not suppressed) while `refusing`. */
const PERMANENT = new Set(Array.from({ length: 20 }, (_, i) => `user${i * 100 + 7}@example.com`));
/** Deferred with 450 4.2.0 at every attempt while `refusing`. */
const TRANSIENT = new Set([3, 403, 803, 1203, 1603].map((i) => `user${i}@example.com`));

interface Rig {
  producer: Producer;
  server: SmtpTestServer;
  /** While true the server refuses PERMANENT and defers TRANSIENT; then it accepts everyone. */
  refuse: { now: boolean };
}

async function rig(): Promise<Rig> {
  const refuse = { now: true };
  const { producer, server, queue } = await queueRig(harness, {
    label: 'campaign-failures',
    server: {
      keepRawMessages: false,
      recordCommands: false,
      onRcpt(address) {
        if (!refuse.now) return undefined;
        if (PERMANENT.has(address))
          return { code: 550, message: `5.7.1 Message refused by policy for ${address}` };
        if (TRANSIENT.has(address)) return { code: 450, message: '4.2.0 Mailbox busy, try again later' };
        return undefined;
      },
    },
  });
  const workers: MailWorker[] = [];
  harness.onCleanup(() => Promise.all(workers.map((worker) => worker.close())));
  for (let i = 0; i < 2; i++) {
    workers.push(
      createWorker({
        redis: REDIS_URL,
        queue,
        backend: 'smtp',
        backendOptions: { host: server.host, port: server.port },
        attempts: 2,
        backoff: { delay: 20, maxDelay: 100 },
        logger: captureLogger('error').logger,
      }),
    );
  }
  return { producer, server, refuse };
}

/** The refused and deferred recipients among the first `count`. */
function failing(count: number): string[] {
  return [...PERMANENT, ...TRANSIENT].filter((address) => Number(/\d+/.exec(address)?.[0]) < count);
}

/** Recipients of the smaller campaigns, and how many of them the server refuses or defers. */
const SMALL = 500;
const FAILING = failing(SMALL).length;

async function* addresses(count: number): AsyncGenerator<string> {
  for (let i = 0; i < count; i++) yield `user${i}@example.com`;
}

async function completed(producer: Producer, id: string): Promise<void> {
  await waitUntil(
    async () => (await campaignStatus(producer, id)).state === 'completed',
    `campaign ${id} to complete`,
    120_000,
    100,
  );
}

async function collect(iterable: AsyncIterable<CampaignFailure>): Promise<CampaignFailure[]> {
  const all: CampaignFailure[] = [];
  for await (const failure of iterable) all.push(failure);
  return all.sort((a, b) => (a.address < b.address ? -1 : 1));
}

describe('campaign failures and retry', () => {
  it('lists exactly the 25 refused and deferred recipients, and retry --transient delivers the 5 deferred once each', async () => {
    const { producer, server, refuse } = await rig();
    const id = 'failures-2000';
    const handle = await startCampaign(producer, {
      id,
      template: { subject: 'Hi {{ email }}', text: 'Hello {{ email }}', fromEmail: 'news@example.com' },
      recipients: addresses(RECIPIENTS),
    });
    await handle.enqueued;
    await completed(producer, id);

    const failures = await collect(campaignFailures(producer, id));
    expect(failures.map((f) => f.address).sort()).toEqual([...PERMANENT, ...TRANSIENT].sort());
    for (const failure of failures) {
      if (PERMANENT.has(failure.address)) {
        expect(failure).toMatchObject({ code: 550, transient: false, attempts: 1 });
        expect(failure.reply).toContain(`5.7.1 Message refused by policy for ${failure.address}`);
      } else {
        expect(failure).toMatchObject({ code: 450, transient: true, attempts: 2 });
        expect(failure.reply).toContain('4.2.0 Mailbox busy');
      }
      expect(failure.at).toBeGreaterThan(0);
    }
    const transient = await collect(campaignFailures(producer, id, { transient: true }));
    expect(transient.map((f) => f.address).sort()).toEqual([...TRANSIENT].sort());
    const before = await campaignStatus(producer, id);
    expect(before).toMatchObject({ sent: RECIPIENTS - 25, failed: 25 });

    refuse.now = false;
    const received = server.messages.length;
    const result = await retryCampaign(producer, id, { transient: true });
    expect(result).toMatchObject({ retried: 5, resumed: 0, skipped: 0, suppressed: 0 });
    await completed(producer, id);
    await waitUntil(() => server.messages.length >= received + 5, 'the 5 retried messages');

    const receipts = receiptsPerRecipient(server);
    for (const address of TRANSIENT) expect(receipts.get(address)).toBe(1);
    for (const address of PERMANENT) expect(receipts.get(address)).toBeUndefined();
    expect(server.messages.length).toBe(received + 5);
    expect(await campaignStatus(producer, id)).toMatchObject({
      state: 'completed',
      sent: RECIPIENTS - 20,
      failed: 20,
      failedByReason: { rejected: 20 },
    });
    const left = await collect(campaignFailures(producer, id));
    expect(left.map((f) => f.address).sort()).toEqual([...PERMANENT].sort());

    expect(await retryCampaign(producer, id, { transient: true })).toMatchObject({ retried: 0 });
    expect(server.messages.length).toBe(received + 5);
  }, 240_000);

  it('retries each failed recipient once when two retries run at the same time', async () => {
    const { producer, server, refuse } = await rig();
    const id = 'concurrent';
    const handle = await startCampaign(producer, {
      id,
      template: { subject: 'Hi', text: 'Hello', fromEmail: 'news@example.com' },
      recipients: addresses(SMALL),
    });
    await handle.enqueued;
    await completed(producer, id);
    refuse.now = false;
    const received = server.messages.length;
    const other = createProducer({ redis: REDIS_URL, queue: producer.queue, logger: captureLogger().logger });
    harness.onCleanup(() => other.close());
    const [a, b] = await Promise.all([retryCampaign(producer, id), retryCampaign(other, id)]);
    expect(a.retried + b.retried).toBe(FAILING);
    await completed(producer, id);
    await waitUntil(() => server.messages.length >= received + FAILING, 'the retried messages');
    const receipts = receiptsPerRecipient(server);
    for (const address of failing(SMALL)) expect(receipts.get(address)).toBe(1);
    expect(server.messages.length).toBe(received + FAILING);
    expect(await campaignStatus(producer, id)).toMatchObject({ sent: SMALL, failed: 0 });
  }, 240_000);

  it.each([
    ['after enqueueing, before confirming', 'hdel'],
    ['after claiming, before enqueueing', 'enqueue'],
  ] as const)(
    'a retry that crashed %s is resumed: every claimed recipient gets one message',
    async (_when, step) => {
      const { producer, server, refuse } = await rig();
      const id = `crash-${step}`;
      const handle = await startCampaign(producer, {
        id,
        template: { subject: 'Hi', text: 'Hello', fromEmail: 'news@example.com' },
        recipients: addresses(SMALL),
      });
      await handle.enqueued;
      await completed(producer, id);
      refuse.now = false;
      const received = server.messages.length;
      // The crash: the step throws once, as a process killed right there would stop.
      const target = (step === 'hdel' ? producer.redis : producer) as unknown as Record<string, unknown>;
      const original = target[step];
      target[step] = () => {
        target[step] = original;
        throw new Error('crashed');
      };
      await expect(retryCampaign(producer, id)).rejects.toThrow('crashed');
      expect(await producer.redis.hlen(producer.keys.campaignRetrying(id))).toBe(FAILING);
      // A claim younger than resumeAfter belongs to a retry that may still be running: left to it.
      expect(await retryCampaign(producer, id)).toMatchObject({ retried: 0, leftToOtherRetry: FAILING });
      expect(await retryCampaign(producer, id, { resumeAfter: 0 })).toMatchObject({
        retried: FAILING,
        resumed: FAILING,
      });
      expect(await producer.redis.hlen(producer.keys.campaignRetrying(id))).toBe(0);
      await completed(producer, id);
      await waitUntil(() => server.messages.length >= received + FAILING, 'the retried messages');
      const receipts = receiptsPerRecipient(server);
      for (const address of [...PERMANENT, ...TRANSIENT]) {
        if (Number(/\d+/.exec(address)?.[0]) < 500) expect(receipts.get(address)).toBe(1);
      }
      expect(server.messages.length).toBe(received + FAILING);
      expect(await campaignStatus(producer, id)).toMatchObject({ sent: SMALL, failed: 0 });
    },
    240_000,
  );
});
