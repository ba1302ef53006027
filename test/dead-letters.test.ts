/**
 * listFailed and retryFailed (@mailroom/worker) called directly, against batches dead-lettered by an
 * in-process worker talking to a real SMTP server and real Redis: what a dead letter lists, and a
 * retry that sends the exhausted message again but never the delivered or the refused one.
 * (`mailroom failed list|retry` on top of them: cli-failed.test.ts.)
 */
import { EmailMessage } from '@mailroom/core';
import type { Producer } from '@mailroom/producer';
import { createWorker, listFailed, retryFailed } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { queueRig, useHarness } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import type { SmtpTestServer } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';

const harness = useHarness();

interface Setup {
  producer: Producer;
  server: SmtpTestServer;
  /** How many more times `later@` is deferred with 451 (Infinity: for ever). `bad@` always gets 550. */
  setDeferrals(count: number): void;
  failedCount(): Promise<number>;
  /** Enqueues one batch of `ok@` (delivered), `later@` (deferred) and `bad@` (refused) and waits until it is dead-lettered. */
  deadLetter(): Promise<string>;
}

async function setup(): Promise<Setup> {
  let deferrals = Number.POSITIVE_INFINITY;
  const { queue, server, producer } = await queueRig(harness, {
    label: 'dead-letters',
    server: {
      onRcpt(address) {
        if (address.startsWith('bad@')) return { code: 550, message: '5.1.1 No such user' };
        if (address.startsWith('later@') && deferrals > 0) {
          deferrals--;
          return { code: 451, message: '4.7.1 Greylisted, try later' };
        }
        return undefined;
      },
    },
  });
  const worker = createWorker({
    redis: REDIS_URL,
    queue,
    backend: 'smtp',
    backendOptions: { host: server.host, port: server.port },
    attempts: 2,
    backoff: { delay: 20, maxDelay: 100 },
    logger: captureLogger().logger,
  });
  harness.onCleanup(() => worker.close());
  const failedCount = async () => (await producer.getQueue().getJobCounts('failed')).failed ?? 0;
  return {
    producer,
    server,
    setDeferrals(count) {
      deferrals = count;
    },
    failedCount,
    async deadLetter() {
      const before = await failedCount();
      const { jobIds } = await producer.enqueue(
        ['ok', 'later', 'bad'].map(
          (name) => new EmailMessage('Receipt', 'Thanks', 'shop@example.com', [`${name}@example.com`]),
        ),
      );
      await waitUntil(async () => (await failedCount()) === before + 1, 'the batch to be dead-lettered');
      return jobIds[0] as string;
    },
  };
}

describe('listFailed', () => {
  it('lists a dead-lettered batch with each failed message, its state, reason, code and recipients', async () => {
    const { producer, deadLetter } = await setup();
    const jobId = await deadLetter();

    const { total, jobs } = await listFailed(producer);

    expect(total).toBe(1);
    expect(jobs).toHaveLength(1);
    const [job] = jobs;
    expect(job).toMatchObject({ id: jobId, campaign: null, messages: 3, delivered: 1, unsettled: 0 });
    expect(Date.parse(job?.failedAt ?? '')).toBeGreaterThan(Date.now() - 60_000);
    expect(job?.failedReason).toMatch(/2 of 3 messages failed/);
    expect(job?.failures).toEqual([
      {
        index: 1,
        state: 'exhausted',
        reason: 'deferred',
        code: 451,
        detail: expect.stringContaining('Greylisted'),
        recipients: 'later@example.com',
      },
      {
        index: 2,
        state: 'permanent',
        reason: 'rejected',
        code: 550,
        detail: expect.stringContaining('No such user'),
        recipients: 'bad@example.com',
      },
    ]);
  });

  it('lists the newest `limit` jobs and counts them all', async () => {
    const { producer, deadLetter } = await setup();
    await deadLetter();
    const newest = await deadLetter();

    const { total, jobs } = await listFailed(producer, { limit: 1 });

    expect(total).toBe(2);
    expect(jobs.map((job) => job.id)).toEqual([newest]);
  });

  it('refuses a limit that is not a positive integer', async () => {
    const { producer } = await setup();
    await expect(listFailed(producer, { limit: 0 })).rejects.toThrow(RangeError);
    await expect(listFailed(producer, { limit: 1.5 })).rejects.toThrow(/positive integer/);
  });
});

describe('retryFailed', () => {
  it('sends the exhausted message again, never the delivered or the refused one', async () => {
    const { producer, server, setDeferrals, failedCount, deadLetter } = await setup();
    const jobId = await deadLetter();
    expect(server.messages.map((message) => message.to)).toEqual([['ok@example.com']]);
    setDeferrals(0);

    const result = await retryFailed(producer, [jobId]);

    expect(result).toEqual({ retried: [jobId], messages: 1, reopened: 1, skipped: [], problems: [] });
    await server.waitForMessages(2, 30_000);
    // Delivered, then dead-lettered again for the 550 that stays.
    await waitUntil(async () => (await failedCount()) === 1, 'the batch to fail again for its 550');
    expect(server.messages.map((message) => message.to)).toEqual([['ok@example.com'], ['later@example.com']]);
    const [job] = (await listFailed(producer)).jobs;
    expect(job).toMatchObject({ id: jobId, delivered: 2 });
    expect(job?.failures.map((failure) => [failure.index, failure.state])).toEqual([[2, 'permanent']]);
  });

  it("skips a job with nothing left to send and leaves it failed ('all')", async () => {
    const { producer, server, setDeferrals, failedCount, deadLetter } = await setup();
    const jobId = await deadLetter();
    setDeferrals(0);
    await retryFailed(producer, 'all');
    await server.waitForMessages(2, 30_000);
    await waitUntil(async () => (await failedCount()) === 1, 'the batch to fail again for its 550');

    const again = await retryFailed(producer, 'all');

    expect(again).toEqual({ retried: [], messages: 0, reopened: 0, skipped: [jobId], problems: [] });
    expect(await failedCount()).toBe(1);
    expect(server.messages).toHaveLength(2);
  });

  it('reports an unknown job and a job that is not failed, and still retries the others', async () => {
    const { producer, setDeferrals, deadLetter } = await setup();
    const failed = await deadLetter();
    const delayed = (
      await producer.enqueue(new EmailMessage('Later', 'x', 'shop@example.com', ['ok@example.com']), {
        delay: 60_000,
      })
    ).jobIds[0] as string;
    setDeferrals(0);

    const result = await retryFailed(producer, ['no-such-job', delayed, failed]);

    expect(result.retried).toEqual([failed]);
    expect(result.problems).toEqual([
      { jobId: 'no-such-job', problem: 'not-found', message: `not found on queue ${producer.queue}` },
      { jobId: delayed, problem: 'not-failed', message: 'not failed (it is delayed)' },
    ]);
  });
});
