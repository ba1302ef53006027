/**
 * Batch delivery by an in-process worker against a real SMTP server and real Redis: one connection
 * per batch, refusals, retries of only what was not delivered, failSilently, invalid payloads.
 * (Crash, shutdown, outage and replica tests with worker processes are in worker-processes.test.ts.)
 */
import { EmailMessage } from '@mailroom/core';
import { campaignStatus, type Producer, queueKeys, startCampaign } from '@mailroom/producer';
import { createWorker, Ledger, type MailWorker, type WorkerOptions } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { bullmqQueue, queueIdle, queueRig, receiptsPerRecipient, useHarness } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import type { SmtpServerOptions, SmtpTestServer } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';

const harness = useHarness();
const { redis } = harness;

interface Setup {
  queue: string;
  server: SmtpTestServer;
  producer: Producer;
  worker: MailWorker;
  logs: ReturnType<typeof captureLogger>;
}

/** A queue, its SMTP server and producer, and an in-process worker whose logs are kept. */
async function setup(
  serverOptions: SmtpServerOptions = {},
  workerOptions: Partial<WorkerOptions> = {},
  backendExtras: Record<string, unknown> = {},
): Promise<Setup> {
  const { queue, server, producer } = await queueRig(harness, { label: 'batch', server: serverOptions });
  const logs = captureLogger();
  const worker = createWorker({
    redis: REDIS_URL,
    queue,
    backend: 'smtp',
    backendOptions: { host: server.host, port: server.port, ...backendExtras },
    backoff: { delay: 20, maxDelay: 200 },
    logger: logs.logger,
    ...workerOptions,
  });
  harness.onCleanup(() => worker.close());
  return { queue, server, producer, worker, logs };
}

function messages(
  count: number,
  to: (index: number) => string[] = (index) => [`user${index}@example.com`],
): EmailMessage[] {
  return Array.from(
    { length: count },
    (_, index) => new EmailMessage(`Hello ${index}`, `Body ${index}`, 'news@example.com', to(index)),
  );
}

function rcptCount(server: SmtpTestServer, address: string): number {
  return server.commands.filter(
    (command) => command.command === 'RCPT' && command.line.includes(`<${address}>`),
  ).length;
}

describe('worker batch delivery', () => {
  it('sends a batch of 50 messages over exactly one SMTP connection', async () => {
    const { server, producer } = await setup();
    const result = await producer.enqueue(messages(50));
    expect(result.jobIds).toHaveLength(1);
    await server.waitForMessages(50);
    await queueIdle(producer, 30_000);
    expect(server.messages).toHaveLength(50);
    expect(server.connectionCount).toBe(1);
    expect(new Set(server.messages.map((message) => message.connectionId)).size).toBe(1);
    // Completed batches are removed: nothing piles up in Redis.
    expect(await producer.getQueue().getJobCounts('completed', 'failed')).toEqual({
      completed: 0,
      failed: 0,
    });
  });

  it('attempts a 550-refused recipient exactly once and records it as permanent (failSilently: job completes)', async () => {
    const { server, producer, logs, queue } = await setup({
      onRcpt: (address) => (address.startsWith('bad') ? { code: 550, message: 'No such user' } : undefined),
    });
    const batch = messages(20, (index) => [
      index % 7 === 3 ? `bad${index}@example.com` : `user${index}@example.com`,
    ]);
    const { jobIds } = await producer.enqueue(batch, { failSilently: true });
    await queueIdle(producer, 30_000);
    const bad = ['bad3@example.com', 'bad10@example.com', 'bad17@example.com'];
    for (const address of bad) expect(rcptCount(server, address)).toBe(1);
    expect(server.messages).toHaveLength(17);
    expect(await producer.getQueue().getJobCounts('failed')).toEqual({ failed: 0 });
    const snapshot = await new Ledger(redis, queueKeys('{mailroom}', queue), 1000).load(jobIds[0] as string);
    expect(snapshot.entries.get(3)).toMatchObject({ state: 'f', reason: 'rejected', code: 550 });
    expect(snapshot.attempts).toBe(0);
    const failures = logs.lines.filter((line) => line.msg === 'message failed permanently');
    expect(failures.map((line) => line.to)).toEqual(bad);
    expect(failures[0]).toMatchObject({ reason: 'rejected', code: 550 });
    expect(
      logs.lines.some(
        (line) => line.msg === 'batch completed; failures recorded (failSilently)' && line.failed === 3,
      ),
    ).toBe(true);
  });

  it('without failSilently, dead-letters the batch with per-message reasons after sending the rest', async () => {
    const { server, producer, logs } = await setup({
      onRcpt: (address) => (address.startsWith('bad') ? { code: 550, message: 'No such user' } : undefined),
    });
    const batch = messages(10, (index) => [index === 4 ? 'bad4@example.com' : `user${index}@example.com`]);
    const { jobIds } = await producer.enqueue(batch);
    await queueIdle(producer, 30_000);
    expect(server.messages).toHaveLength(9);
    const failed = await producer.getQueue().getFailed();
    expect(failed.map((job) => job.id)).toEqual(jobIds);
    expect(failed[0]?.failedReason).toMatch(/1 of 10 messages failed: \[4\] rejected 550/);
    expect(rcptCount(server, 'bad4@example.com')).toBe(1);
    expect(logs.lines.some((line) => line.msg === 'batch dead-lettered')).toBe(true);
  });

  it('retries recipients deferred with 451 (every 7th RCPT) until all are delivered, without duplicates', async () => {
    let rcpts = 0;
    const { server, producer } = await setup(
      { onRcpt: () => (++rcpts % 7 === 0 ? { code: 451, message: 'Try again later' } : undefined) },
      { attempts: 10 },
    );
    await producer.enqueue(messages(100));
    await queueIdle(producer, 30_000);
    const received = receiptsPerRecipient(server);
    expect(received.size).toBe(100);
    expect([...received.values()].every((count) => count === 1)).toBe(true);
    expect(server.refusals.filter((refusal) => refusal.code === 451).length).toBeGreaterThanOrEqual(14);
    expect(await producer.getQueue().getJobCounts('failed')).toEqual({ failed: 0 });
  });

  it('retries only the undelivered message of a batch', async () => {
    let deferredOnce = false;
    const { server, producer } = await setup({
      onRcpt: (address) => {
        if (address === 'user3@example.com' && !deferredOnce) {
          deferredOnce = true;
          return { code: 451, message: 'Greylisted' };
        }
        return undefined;
      },
    });
    await producer.enqueue(messages(10));
    await queueIdle(producer, 30_000);
    expect(server.messages).toHaveLength(10);
    // The retry is the 11th transaction and carries message 3 alone.
    expect(server.messages.at(-1)?.to).toEqual(['user3@example.com']);
    expect(rcptCount(server, 'user3@example.com')).toBe(2);
    expect(rcptCount(server, 'user4@example.com')).toBe(1);
  });

  it('keeps the connection open for the next batch, and closes it after an idle timeout of 0', async () => {
    const reused = await setup();
    await reused.producer.enqueue(messages(3));
    await queueIdle(reused.producer, 30_000);
    await reused.producer.enqueue(messages(3));
    await queueIdle(reused.producer, 30_000);
    expect(reused.server.messages).toHaveLength(6);
    expect(reused.server.connectionCount).toBe(1);

    const closing = await setup({}, { connectionIdleTimeout: 0 });
    await closing.producer.enqueue(messages(3));
    await queueIdle(closing.producer, 30_000);
    await closing.producer.enqueue(messages(3));
    await queueIdle(closing.producer, 30_000);
    expect(closing.server.connectionCount).toBe(2);
    expect(closing.server.commandCount('QUIT')).toBeGreaterThanOrEqual(1);
  });

  it('deletes the ledger of a completed batch without failures', async () => {
    const { producer, queue } = await setup();
    const { jobIds } = await producer.enqueue(messages(2));
    await queueIdle(producer, 30_000);
    const key = queueKeys('{mailroom}', queue).ledger(jobIds[0] as string);
    await waitUntil(async () => (await harness.redis.exists(key)) === 0, 'the ledger to be deleted', 10_000);
  });

  it('sends a partly deferred message again only to the deferred recipient', async () => {
    let deferredOnce = false;
    const { server, producer } = await setup({
      onRcpt: (address) => {
        if (address === 'b@example.com' && !deferredOnce) {
          deferredOnce = true;
          return { code: 452, message: 'Mailbox busy' };
        }
        return undefined;
      },
    });
    await producer.enqueue(
      new EmailMessage('Hi', 'Both of you', 'news@example.com', ['a@example.com', 'b@example.com']),
    );
    await queueIdle(producer, 30_000);
    expect(server.messages.map((message) => message.to)).toEqual([['a@example.com'], ['b@example.com']]);
  });

  it('never logs or records the SMTP password or a message body, even when AUTH fails', async () => {
    const password = 'Sm7p-Pa55word-never-printed';
    const body = 'Body text that must never reach a log line';
    const { producer, logs } = await setup(
      { auth: { username: 'mailer', password: 'the-right-one' }, authRequired: true },
      { attempts: 2 },
      { username: 'mailer', password },
    );
    await producer.enqueue(new EmailMessage('Hi', body, 'news@example.com', ['someone@example.com']));
    await queueIdle(producer, 30_000);
    const [failed] = await producer.getQueue().getFailed();
    // Refused credentials concern the account: retried, then dead-lettered, never "rejected".
    expect(failed?.failedReason).toMatch(/\[0\] auth/);
    for (const text of [logs.text(), failed?.failedReason ?? '', JSON.stringify(failed?.stacktrace ?? [])]) {
      expect(text).not.toContain(password);
      expect(text).not.toContain(body);
    }
  });

  it('keeps every Redis key under the hash-tagged prefix of its queue (Redis Cluster safe)', async () => {
    const { producer, queue } = await setup(
      { onRcpt: (address) => (address.startsWith('bad') ? { code: 550 } : undefined) },
      { rateLimit: '1000/s' },
    );
    // Touch every kind of key: batches, idempotency, ledgers kept for failures, the rate limiter,
    // a campaign with its counters, seen-addresses and failures.
    await producer.enqueue(messages(3), { idempotencyKey: 'signup-1', failSilently: true });
    await producer.enqueue(new EmailMessage('x', 'y', 'news@example.com', ['bad@example.com']), {
      failSilently: true,
    });
    await startCampaign(producer, {
      id: 'prefix-check',
      template: { subject: 'Hi', text: 'Hello {{ name }}', fromEmail: 'news@example.com' },
      recipients: ['a@example.com', 'A@example.com', 'bad2@example.com'],
    });
    await waitUntil(
      async () => (await campaignStatus(producer, 'prefix-check')).state === 'completed',
      'the campaign',
    );
    await queueIdle(producer, 30_000);
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `*${queue}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    expect(keys.length).toBeGreaterThan(5);
    for (const key of keys) expect(key.startsWith(`{mailroom}:${queue}:`), key).toBe(true);
  });

  it('never takes a backend (or anything else) from job data: a job naming one is refused as invalid', async () => {
    const { server, producer, queue } = await setup();
    const raw = bullmqQueue(harness, queue);
    const good = (await import('@mailroom/core')).toWire(messages(1)[0] as EmailMessage);
    const job = await raw.add(
      'batch',
      { v: 1, messages: [good], enqueuedAt: Date.now(), backend: 'console' },
      { attempts: 1 },
    );
    await queueIdle(producer, 30_000);
    expect(server.messages).toHaveLength(0);
    expect((await raw.getJob(job.id as string))?.failedReason).toMatch(/Invalid batch payload.*backend/);
  });

  it('fails a corrupted job as invalid and goes on with the next job', async () => {
    const { server, producer, queue, logs } = await setup();
    const raw = bullmqQueue(harness, queue);
    const corrupted = await raw.add(
      'batch',
      { v: 1, messages: 'not a list', enqueuedAt: 0 },
      { attempts: 1 },
    );
    const garbled = await raw.add(
      'batch',
      { v: 1, packed: Buffer.from('not deflated').toString('base64'), enqueuedAt: 0 },
      { attempts: 1 },
    );
    const foreign = await raw.add('resize-image', { path: '/tmp/x.png' }, { attempts: 1 });
    await producer.enqueue(messages(3));
    await queueIdle(producer, 30_000);
    expect(server.messages).toHaveLength(3);
    const failed = await producer.getQueue().getFailed();
    const reasons = new Map(failed.map((job) => [job.id, job.failedReason]));
    expect(reasons.get(corrupted.id)).toMatch(/Invalid batch payload: Invalid job\.messages/);
    expect(reasons.get(garbled.id)).toMatch(
      /Invalid batch payload: Invalid job\.packed: not base64 deflated JSON/,
    );
    expect(reasons.get(foreign.id)).toMatch(/unknown job name "resize-image"/);
    expect(logs.lines.filter((line) => line.msg === 'invalid batch payload: job failed')).toHaveLength(3);
  });

  it('fails a malformed message alone and sends the rest of its batch', async () => {
    const { server, producer, queue } = await setup();
    const raw = bullmqQueue(harness, queue);
    const good = (await import('@mailroom/core')).toWire(messages(1)[0] as EmailMessage);
    const job = await raw.add(
      'batch',
      { v: 1, messages: [good, { ...good, to: 'not-a-list' }, { ...good, v: 99 }], enqueuedAt: Date.now() },
      { attempts: 1 },
    );
    await queueIdle(producer, 30_000);
    expect(server.messages).toHaveLength(1);
    const failedJob = await raw.getJob(job.id as string);
    expect(failedJob?.failedReason).toMatch(
      /2 of 3 messages failed: \[1\] invalid: Invalid job\.messages\[1\]\.to.*\[2\] invalid: Unsupported/,
    );
  });
});
