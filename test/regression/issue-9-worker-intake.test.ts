/**
 * Issue 9, what a worker takes in. A packed field of 680 KB inflated to 2.7 GB in a worker (a deflate
 * bomb): now a batch that inflates past maxUnpackedBytes is dead-lettered as invalid as soon as it
 * does. A job whose Redis hash held invalid JSON (`HSET … data '{not json'`) stayed active forever,
 * stalling again and again, and the worker logged an error naming no job every time: now every job
 * the worker cannot read is a dead letter with the reason, logged with its id, and the worker goes on.
 * The producer accepted queue names the worker refused (`x:y`, ''): now both apply one rule.
 */
import { inflateRawSync } from 'node:zlib';
import { ConfigError, EmailMessage, QUEUE_NAME_RULE, toWire } from '@mailroom/core';
import { createProducer } from '@mailroom/producer';
import { createWorker, type MailWorker, workerDefaults } from '@mailroom/worker';
import type { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { bullmqQueue, type QueueRig, queueIdle, queueRig, useHarness } from '../support/harness.js';
import { deflateBomb } from '../support/hostile.js';
import { PREFIX, REDIS_URL } from '../support/redis.js';
import { captureLogger, waitUntil } from '../support/wait.js';

const harness = useHarness();
const { redis } = harness;

const MiB = 1024 * 1024;

interface Intake extends QueueRig {
  /** BullMQ's own Queue on the rig's queue, to write jobs the producer never would. */
  raw: Queue;
  logs: ReturnType<typeof captureLogger>;
  /** Starts the in-process worker (after the test has put its jobs in place). */
  start(): MailWorker;
}

async function intake(): Promise<Intake> {
  const rig = await queueRig(harness, { label: 'issue-9-intake' });
  const logs = captureLogger();
  return {
    ...rig,
    raw: bullmqQueue(harness, rig.queue),
    logs,
    start() {
      const worker = createWorker({
        redis: REDIS_URL,
        queue: rig.queue,
        backend: 'smtp',
        backendOptions: { host: rig.server.host, port: rig.server.port },
        logger: logs.logger,
      });
      harness.onCleanup(() => worker.close());
      return worker;
    },
  };
}

function message(to: string, body = 'Hello'): EmailMessage {
  return new EmailMessage('Hello', body, 'news@example.com', [to]);
}

/** A well-formed batch job, added with BullMQ's own Queue; returns its id. */
async function addBatch(raw: Queue, data: Record<string, unknown> = {}): Promise<string> {
  const job = await raw.add(
    'batch',
    { v: 1, messages: [toWire(message('poison@example.com'))], enqueuedAt: Date.now(), ...data },
    { attempts: 1 },
  );
  return job.id as string;
}

function jobKey(queue: string, id: string): string {
  return `${PREFIX}:${queue}:${id}`;
}

/** Waits for the job to be in the failed set (read from Redis: BullMQ's own reader is what broke). */
async function failedReason(rig: Intake, id: string): Promise<string> {
  await waitUntil(
    async () => (await redis.zscore(`${PREFIX}:${rig.queue}:failed`, id)) !== null,
    `job ${id} to fail`,
  );
  return (await redis.hget(jobKey(rig.queue, id), 'failedReason')) ?? '';
}

/** Enqueues a good message after the bad job and waits until it is delivered. */
async function goodMessageDelivered(rig: Intake): Promise<void> {
  await rig.producer.enqueue(message('good@example.com'));
  await rig.server.waitForMessages(1);
  await queueIdle(rig.producer, 30_000);
  expect(rig.server.messages.map((received) => received.to)).toEqual([['good@example.com']]);
}

/** Peak resident memory of this process so far (a high-water mark: it catches a spike already over). */
function peakMemory(): number {
  return process.resourceUsage().maxRSS * 1024;
}

describe('issue 9: a packed field inflates at most maxUnpackedBytes', () => {
  it('dead-letters a deflate bomb as invalid without its memory, and goes on with the next job', async () => {
    const rig = await intake();
    const packed = await deflateBomb(256 * MiB);
    expect(packed.length).toBeLessThan(400_000);
    const bomb = await rig.raw.add(
      'batch',
      { v: 1, packed, count: 1, enqueuedAt: Date.now() },
      { attempts: 1 },
    );
    const before = peakMemory();
    rig.start();
    expect(await failedReason(rig, bomb.id as string)).toBe(
      `Invalid batch payload: Invalid job.packed: it inflates past ${workerDefaults.maxUnpackedBytes} bytes ` +
        '(maxUnpackedBytes), more than a producer writes',
    );
    // Inflated in full, these 256 MiB of zeros took the worker about 770 MiB more; capped, about 24 MiB.
    expect(peakMemory() - before).toBeLessThan(128 * MiB);
    await goodMessageDelivered(rig);
  });

  it('delivers a batch of non-ASCII messages that inflates past maxMessageBytes (10 MiB)', async () => {
    const rig = await intake();
    // 50 messages of 80,000 CJK characters: one batch to the producer, which counts about 4 MiB of
    // JSON characters, but 3 bytes each in UTF-8. A 10 MiB cap dead-letters this legitimate batch.
    const line = `${'日本語のニュースレター'.repeat(6)}\n`;
    const body = line.repeat(Math.floor(80_000 / line.length));
    const batch = Array.from({ length: 50 }, (_, index) => message(`reader${index}@example.com`, body));
    const { jobIds } = await rig.producer.enqueue(batch);
    expect(jobIds).toHaveLength(1);
    const job = await rig.raw.getJob(jobIds[0] as string);
    const inflated = inflateRawSync(Buffer.from(job?.data.packed as string, 'base64')).length;
    expect(inflated).toBeGreaterThan(10 * MiB);
    rig.start();
    await queueIdle(rig.producer, 60_000);
    expect(await rig.producer.getQueue().getJobCounts('failed')).toEqual({ failed: 0 });
    expect(rig.server.messages).toHaveLength(50);
  });
});

describe('issue 9: a job the worker cannot read is a dead letter', () => {
  it('fails a job whose data is not JSON with the reason, logs its id, and delivers the next job', async () => {
    const rig = await intake();
    const id = await addBatch(rig.raw);
    await redis.hset(jobKey(rig.queue, id), 'data', '{not json');
    rig.start();
    expect(await failedReason(rig, id)).toMatch(
      /^Invalid batch payload: unreadable job: data is not JSON \(.*position 1.*\)$/,
    );
    expect(
      rig.logs.lines.filter((line) => line.msg === 'invalid batch payload: job failed' && line.jobId === id),
    ).toHaveLength(1);
    // Nothing logged without a job id: the old "worker error" on every try.
    expect(rig.logs.lines.filter((line) => line.msg === 'worker error')).toEqual([]);
    await goodMessageDelivered(rig);
  });

  it('leaves a dead letter BullMQ can read, with the unreadable bytes kept beside it', async () => {
    const rig = await intake();
    const id = await addBatch(rig.raw);
    await redis.hset(jobKey(rig.queue, id), 'data', '{not json', 'opts', '[1,', 'progress', '{x');
    rig.start();
    expect(await failedReason(rig, id)).toMatch(
      /unreadable job: opts is not JSON .*; progress is not JSON .*; data is not JSON/,
    );
    const failed = await rig.producer.getQueue().getFailed();
    expect(failed.map((job) => job.id)).toEqual([id]);
    expect(
      await redis.hmget(jobKey(rig.queue, id), 'unreadable:data', 'unreadable:opts', 'unreadable:progress'),
    ).toEqual(['{not json', '[1,', '{x']);
    // Kept as long as every dead letter (producer keepFailed), not forever.
    expect(failed[0]?.opts.removeOnFail).toEqual({ age: 7 * 24 * 3600, count: 10_000 });
  });

  it.each([
    ['opts', '{not json', /unreadable job: opts is not JSON/],
    ['opts', 'null', /unreadable job: opts is not a JSON object/],
    // BullMQ's finishing script compares these as numbers: it stopped half-way, with "worker error".
    ['opts', '{"attempts":"x"}', /unreadable job: opts\.attempts is not an integer/],
    ['opts', '{"removeOnFail":{"count":"x"}}', /unreadable job: opts\.removeOnFail is not a boolean/],
    ['progress', '{x', /unreadable job: progress is not JSON/],
    // BullMQ's finishing script decodes parent and follows parentKey: a broken one stopped it, and a
    // parentKey one even after the job had left the active list (neither active nor failed).
    ['parent', '{x', /unreadable job: it has a parent \(a mailroom batch is never part of a BullMQ flow\)/],
    ['parentKey', 'nonsense', /unreadable job: it has a parentKey/],
    // BullMQ schedules a job scheduler's next run before the processor: a broken key left it active.
    ['rjk', 'nonsense', /unreadable job: it has a job scheduler key/],
    ['data', '', /unreadable job: it has no data/],
    ['data', '42', /Invalid batch payload: Invalid job: .*expected object, received number/],
    ['data', '[]', /Invalid batch payload: Invalid job: .*expected object, received array/],
    ['name', 'resize-image', /Invalid batch payload: unknown job name "resize-image"/],
  ])('fails a job whose %s is %j as such, and delivers the next job', async (field, value, reason) => {
    const rig = await intake();
    const id = await addBatch(rig.raw);
    if (value === '') await redis.hdel(jobKey(rig.queue, id), field);
    else await redis.hset(jobKey(rig.queue, id), field, value);
    rig.start();
    expect(await failedReason(rig, id)).toMatch(reason);
    expect(
      rig.logs.lines.some((line) => line.jobId === id && line.msg === 'invalid batch payload: job failed'),
    ).toBe(true);
    await goodMessageDelivered(rig);
    expect(rig.logs.lines.filter((line) => line.msg === 'worker error')).toEqual([]);
  });

  it('takes unreadable jobs between good ones, as the next job of a finished one too', async () => {
    const rig = await intake();
    const unreadable: string[] = [];
    for (let index = 0; index < 4; index++) {
      await rig.producer.enqueue(message(`reader${index}@example.com`));
      const id = await addBatch(rig.raw);
      await redis.hset(jobKey(rig.queue, id), index % 2 ? 'opts' : 'data', '{not json');
      unreadable.push(id);
    }
    rig.start();
    for (const id of unreadable) expect(await failedReason(rig, id)).toMatch(/unreadable job/);
    await queueIdle(rig.producer, 30_000);
    expect(rig.server.messages).toHaveLength(4);
    expect(rig.logs.lines.filter((line) => line.msg === 'worker error')).toEqual([]);
  });

  it('gives the reason for an unreadable job that has already stalled past the limit', async () => {
    const rig = await intake();
    const id = await addBatch(rig.raw);
    // What the stalled checker left on the job of the report: it had stalled 12 times.
    await redis.hset(
      jobKey(rig.queue, id),
      'data',
      '{not json',
      'stc',
      '12',
      'defa',
      'job stalled more than allowable limit',
    );
    rig.start();
    expect(await failedReason(rig, id)).toMatch(/unreadable job: data is not JSON/);
    await goodMessageDelivered(rig);
  });
});

describe('issue 9: one rule for queue names', () => {
  it.each(['x:y', '', 'mail queue', 'mail*', '{mail}', 'é', 'q'.repeat(101)])(
    'the producer and the worker both refuse %j with the same ConfigError',
    (queue) => {
      const refusal = (create: () => unknown): Error => {
        try {
          create();
        } catch (error) {
          return error as Error;
        }
        throw new Error(`queue ${JSON.stringify(queue)} was accepted`);
      };
      const producer = refusal(() => createProducer({ redis: REDIS_URL, queue }));
      const worker = refusal(() => createWorker({ redis: REDIS_URL, queue, backend: 'memory' }));
      expect(producer).toBeInstanceOf(ConfigError);
      expect(worker).toBeInstanceOf(ConfigError);
      expect(worker.message).toBe(producer.message);
      expect(producer.message).toBe(`Invalid queue name ${JSON.stringify(queue)}: ${QUEUE_NAME_RULE}`);
    },
  );
});
