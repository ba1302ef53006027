/**
 * @mailroom/producer against real Redis and real BullMQ: batching, all-or-nothing validation,
 * idempotency that outlives the jobs, fail-fast when Redis is down, job options and close().
 */
import {
  BadHeaderError,
  ConfigError,
  configure,
  decodeWire,
  EmailMessage,
  MailError,
  resetSettings,
  toWire,
  ValidationError,
} from '@mailroom/core';
import type { RedisClient } from '@mailroom/core/protocol';
import {
  BATCH_JOB_NAME,
  checkMessage,
  createProducer,
  type EnqueueResult,
  type Producer,
  type ProducerOptions,
  parseBatchJob,
  producerDefaults,
} from '@mailroom/producer';
import { type Job, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { useHarness } from '../../../test/support/harness.js';
import { queueKeyNames, REDIS_URL, uniqueQueue } from '../../../test/support/redis.js';
import { captureLogger } from '../../../test/support/wait.js';
import { DEAD_PASSWORD, DEAD_REDIS_URL, removeQueue, silentLogger } from './support/redis.js';

const harness = useHarness();
const { redis } = harness;

/** A producer on a fresh queue; the queue's keys and the producer go away after the test. */
function setup(options: ProducerOptions = {}): { producer: Producer; queue: string } {
  const queue = uniqueQueue();
  const producer = createProducer({ redis: REDIS_URL, queue, logger: silentLogger, ...options });
  harness.onCleanup(() => removeQueue(redis, queue));
  harness.onCleanup(() => producer.close());
  return { producer, queue };
}

function messages(count: number, make = (index: number) => [`user${index}@example.com`]): EmailMessage[] {
  return Array.from(
    { length: count },
    (_, index) => new EmailMessage(`Hello ${index}`, `Body ${index}\n`, 'news@example.com', make(index)),
  );
}

/** The batch jobs of a result, in batch order, read back from Redis. */
async function jobsOf(producer: Producer, result: EnqueueResult): Promise<Job[]> {
  const jobs = await Promise.all(result.jobIds.map((id) => producer.getQueue().getJob(id)));
  for (const job of jobs) expect(job).toBeDefined();
  return jobs as Job[];
}

/** Decodes a batch job's payload with the same schemas the worker uses. */
function decodedMessages(job: Job): ReturnType<typeof decodeWire>[] {
  return parseBatchJob(job.data).messages.map((message, index) =>
    decodeWire(message, `job.messages[${index}]`),
  );
}

async function jobCounts(producer: Producer): Promise<Record<string, number>> {
  return producer
    .getQueue()
    .getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed');
}

const totalJobs = async (producer: Producer) =>
  Object.values(await jobCounts(producer)).reduce((a, b) => a + b, 0);

/** Resolves once the client has ended (closed for good, no reconnect pending); fails after 5 s. */
async function ended(client: RedisClient): Promise<void> {
  if (client.status === 'end') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`client still ${client.status} 5 s after close()`)),
      5000,
    );
    client.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('batching', () => {
  it('lands 10,000 messages as exactly ceil(10000 / batchSize) jobs that decode back in order', async () => {
    const batchSize = 64;
    const { producer } = setup({ batchSize });
    const sent = messages(10_000);
    const result = await producer.enqueue(sent);

    const expectedJobs = Math.ceil(10_000 / batchSize);
    expect(result).toMatchObject({ messages: 10_000, duplicate: false });
    expect(result.jobIds).toHaveLength(expectedJobs);
    expect(await jobCounts(producer)).toMatchObject({ waiting: expectedJobs, delayed: 0, prioritized: 0 });

    const jobs = await jobsOf(producer, result);
    expect(jobs.map((job) => parseBatchJob(job.data).messages.length)).toEqual([
      ...Array(expectedJobs - 1).fill(batchSize),
      10_000 - (expectedJobs - 1) * batchSize,
    ]);
    const decoded = jobs.flatMap(decodedMessages);
    expect(decoded).toHaveLength(10_000);
    decoded.forEach(({ message, failSilently }, index) => {
      expect(failSilently).toBe(false);
      expect(toWire(message)).toEqual(toWire(sent[index] as EmailMessage));
    });
    for (const job of jobs) expect(job.name).toBe(BATCH_JOB_NAME);
  });

  it('chunks by batchSize', async () => {
    const { producer } = setup({ batchSize: 3 });
    const result = await producer.enqueue(messages(10));
    const jobs = await jobsOf(producer, result);
    expect(jobs.map((job) => parseBatchJob(job.data).messages.length)).toEqual([3, 3, 3, 1]);
    expect(jobs.flatMap(decodedMessages).map(({ message }) => message.subject)).toEqual(
      messages(10).map((message) => message.subject),
    );
  });

  it('closes a batch early when the next message would pass maxBatchBytes', async () => {
    const sample = messages(1)[0] as EmailMessage;
    const size = Buffer.byteLength(JSON.stringify(toWire(sample)));
    // Room for two messages of this size (they differ by at most a digit), not three.
    const { producer } = setup({ batchSize: 50, maxBatchBytes: Math.floor(size * 2.5) });
    const result = await producer.enqueue(messages(5));
    const jobs = await jobsOf(producer, result);
    expect(jobs.map((job) => parseBatchJob(job.data).messages.length)).toEqual([2, 2, 1]);
  });

  it('puts a message bigger than maxBatchBytes alone in its batch rather than rejecting it', async () => {
    const { producer } = setup({ maxBatchBytes: 10 });
    const result = await producer.enqueue(messages(3));
    expect((await jobsOf(producer, result)).map((job) => parseBatchJob(job.data).messages.length)).toEqual([
      1, 1, 1,
    ]);
  });

  it('enqueues a single message as a batch of one, ready at once', async () => {
    const { producer } = setup();
    const result = await producer.enqueue(
      new EmailMessage('One', 'Body', 'a@example.com', ['b@example.com']),
    );
    expect(result).toMatchObject({ messages: 1, duplicate: false });
    const [job] = await jobsOf(producer, result);
    expect(parseBatchJob(job?.data).messages).toHaveLength(1);
    expect(await job?.getState()).toBe('waiting');
    expect(job?.opts.delay ?? 0).toBe(0);
  });

  it('enqueues nothing for an empty list', async () => {
    const { producer, queue } = setup();
    expect(await producer.enqueue([])).toEqual({ messages: 0, jobIds: [], duplicate: false });
    expect(await queueKeyNames(redis, queue)).toEqual([]);
  });
});

describe('validation before anything is enqueued', () => {
  const INDEX = 637;

  /** 1,000 good messages with message 637 spoiled by `spoil`. */
  function thousandWithOneBad(spoil: (message: EmailMessage) => EmailMessage | unknown): unknown[] {
    const list: unknown[] = messages(1000);
    list[INDEX] = spoil(list[INDEX] as EmailMessage);
    return list;
  }

  const cases: [string, (message: EmailMessage) => unknown, RegExp, Partial<ProducerOptions>][] = [
    [
      'a CRLF in the subject',
      (message) => {
        message.subject = 'Hello\r\nBcc: victim@example.com';
        return message;
      },
      /newlines/,
      {},
    ],
    [
      'an invalid address',
      (message) => {
        message.to = ['not an address@'];
        return message;
      },
      /Invalid address/,
      {},
    ],
    [
      'a string where a list of attachments is expected',
      (message) => {
        (message as unknown as { attachments: unknown }).attachments = 'report.pdf';
        return message;
      },
      /attachments/,
      {},
    ],
    [
      'a plain object instead of an EmailMessage',
      () => ({ subject: 'x', to: 'a@example.com' }),
      /not an EmailMessage/,
      {},
    ],
    [
      'no recipients at all',
      (message) => {
        message.to = [];
        return message;
      },
      /no recipients/,
      {},
    ],
    [
      'an oversize message',
      (message) => {
        message.body = 'x'.repeat(5000);
        return message;
      },
      /bytes in wire form, over the maxMessageBytes limit of 2000/,
      { maxMessageBytes: 2000 },
    ],
  ];

  it.each(cases)(
    'rejects %s with its index and reason, and leaves the queue untouched',
    async (_label, spoil, reason, options) => {
      const { producer, queue } = setup(options);
      const error = await rejection(producer.enqueue(thousandWithOneBad(spoil) as EmailMessage[]));
      expect(error).toBeInstanceOf(ValidationError);
      const { message, field } = error as ValidationError;
      expect(message).toContain(`messages[${INDEX}]`);
      expect(message).toMatch(reason);
      expect(field).toMatch(new RegExp(`^messages\\[${INDEX}\\]`));
      // Keys first: a BullMQ Queue (used to count jobs) writes its own meta key when it starts.
      expect(await queueKeyNames(redis, queue)).toEqual([]);
      expect(await totalJobs(producer)).toBe(0);
    },
  );

  it('keeps the kind of error as its cause (BadHeaderError for header injection)', async () => {
    const { producer } = setup();
    const list = messages(3);
    (list[1] as EmailMessage).subject = 'a\nb';
    const error = (await rejection(producer.enqueue(list))) as ValidationError;
    expect(error.cause).toBeInstanceOf(BadHeaderError);
    expect(error.field).toBe('messages[1].subject');
  });

  it('turns a RangeError thrown while checking a message into a ValidationError naming its index', async () => {
    // Issue 9: an 8 MB header value once overflowed the call stack deep in header encoding, and the
    // RangeError left enqueue raw, naming no message.
    class Overflowing extends EmailMessage {
      override validate(): void {
        throw new RangeError('Maximum call stack size exceeded');
      }
    }
    const { producer, queue } = setup();
    const list = messages(3);
    list[2] = new Overflowing('Hi', 'Body', 'news@example.com', ['user2@example.com']);
    const error = (await rejection(producer.enqueue(list))) as ValidationError;
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.field).toBe('messages[2]');
    expect(error.message).toBe(
      'messages[2] rejected: it could not be checked: RangeError: Maximum call stack size exceeded',
    );
    expect(error.cause).toMatchObject({ cause: expect.any(RangeError) });
    expect(await queueKeyNames(redis, queue)).toEqual([]);
  });

  it('lets a ConfigError from a bad setting through as it is: the environment is wrong, not the message', async () => {
    class Misconfigured extends EmailMessage {
      override validate(): void {
        throw new ConfigError('Invalid setting DEFAULT_CHARSET=nope');
      }
    }
    const { producer } = setup();
    const error = await rejection(
      producer.enqueue(new Misconfigured('Hi', 'Body', 'news@example.com', ['a@example.com'])),
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect(error).not.toBeInstanceOf(ValidationError);
  });
});

describe('options', () => {
  it('puts the priority on the job', async () => {
    const { producer } = setup();
    const [job] = await jobsOf(producer, await producer.enqueue(messages(1), { priority: 5 }));
    expect(job?.opts.priority).toBe(5);
    expect(await job?.getState()).toBe('prioritized');
  });

  it('delays the job by delay milliseconds', async () => {
    const { producer } = setup();
    const [job] = await jobsOf(producer, await producer.enqueue(messages(1), { delay: 60_000 }));
    expect(job?.opts.delay).toBe(60_000);
    expect(await job?.getState()).toBe('delayed');
  });

  it('delays the job until sendAt', async () => {
    const { producer } = setup();
    const sendAt = new Date(Date.now() + 3_600_000);
    const [job] = await jobsOf(producer, await producer.enqueue(messages(1), { sendAt }));
    expect(await job?.getState()).toBe('delayed');
    // The job becomes ready at timestamp + delay: sendAt, up to the milliseconds enqueue itself took.
    const readyAt = (job?.timestamp ?? 0) + (job?.opts.delay ?? 0);
    expect(Math.abs(readyAt - sendAt.getTime())).toBeLessThan(5_000);
  });

  it('accepts sendAt as epoch milliseconds, and one in the past means now', async () => {
    const { producer } = setup();
    const [later] = await jobsOf(
      producer,
      await producer.enqueue(messages(1), { sendAt: Date.now() + 600_000 }),
    );
    const [past] = await jobsOf(
      producer,
      await producer.enqueue(messages(1), { sendAt: Date.now() - 600_000 }),
    );
    expect(await later?.getState()).toBe('delayed');
    expect(await past?.getState()).toBe('waiting');
  });

  const badOptions: [string, Record<string, unknown>, string, RegExp][] = [
    [
      'delay and sendAt together',
      { delay: 10, sendAt: Date.now() + 10 },
      'delay',
      /delay and sendAt are exclusive/,
    ],
    ['a negative delay', { delay: -1 }, 'delay', /delay must be/],
    ['a NaN delay', { delay: Number.NaN }, 'delay', /delay must be/],
    ['an infinite delay', { delay: Number.POSITIVE_INFINITY }, 'delay', /delay must be/],
    ['an invalid sendAt Date', { sendAt: new Date('not a date') }, 'sendAt', /sendAt must be/],
    ['a sendAt string', { sendAt: 'tomorrow' }, 'sendAt', /sendAt must be/],
    ['priority 0', { priority: 0 }, 'priority', /priority must be an integer from 1/],
    ['a fractional priority', { priority: 1.5 }, 'priority', /priority must be/],
    ['a priority above BullMQ’s maximum', { priority: 2_097_153 }, 'priority', /priority must be/],
    ['an empty idempotencyKey', { idempotencyKey: '' }, 'idempotencyKey', /idempotencyKey must be/],
  ];

  it.each(badOptions)(
    'rejects %s naming the option, enqueueing nothing',
    async (_label, options, field, reason) => {
      const { producer, queue } = setup();
      const error = await rejection(producer.enqueue(messages(2), options));
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).field).toBe(field);
      expect((error as ValidationError).message).toMatch(reason);
      expect(await queueKeyNames(redis, queue)).toEqual([]);
    },
  );

  it('rejects a bad producer option naming it', () => {
    for (const name of [
      'batchSize',
      'maxBatchBytes',
      'maxMessageBytes',
      'idempotencyTtl',
      'connectTimeout',
    ] as const) {
      let thrown: unknown;
      try {
        createProducer({ redis: REDIS_URL, logger: silentLogger, [name]: 0 });
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(ValidationError);
      expect((thrown as ValidationError).field).toBe(name);
    }
  });

  it('keeps Redis bounded: completed jobs removed, failed jobs kept for a while and up to a count', async () => {
    const { producer } = setup();
    const [job] = await jobsOf(producer, await producer.enqueue(messages(1)));
    expect(job?.opts.removeOnComplete).toBe(true);
    expect(job?.opts.removeOnFail).toEqual({
      age: producerDefaults.keepFailedAge / 1000,
      count: producerDefaults.keepFailedCount,
    });
    // Retries belong to the worker, which re-queues only the undelivered messages of a batch.
    expect(job?.opts.attempts).toBe(1);
  });

  it('applies keepFailed (age in ms, BullMQ wants seconds)', async () => {
    const { producer } = setup({ keepFailed: { age: 3_600_000, count: 5 } });
    const [job] = await jobsOf(producer, await producer.enqueue(messages(1)));
    expect(job?.opts.removeOnFail).toEqual({ age: 3600, count: 5 });
  });

  it('records the failSilently intent in every message and the campaign on the batch', async () => {
    const { producer } = setup({ batchSize: 2 });
    const result = await producer.enqueue(messages(3), { failSilently: true, campaign: 'spring' });
    const jobs = await jobsOf(producer, result);
    for (const job of jobs) expect(job.data.campaign).toBe('spring');
    expect(jobs.flatMap(decodedMessages).map(({ failSilently }) => failSilently)).toEqual([true, true, true]);
  });
});

describe('batch payload', () => {
  it('packs the messages (deflate + base64) with their count, and unpacks to the same wire messages', async () => {
    const { producer } = setup({ batchSize: 20 });
    const batch = messages(20);
    const result = await producer.enqueue(batch);
    const [job] = await jobsOf(producer, result);
    const data = job?.data;
    expect(data).toMatchObject({ v: 1, count: 20 });
    expect(typeof data?.packed).toBe('string');
    expect(data?.messages).toBeUndefined();
    expect(parseBatchJob(data).messages).toEqual(batch.map((message) => toWire(message)));
    // Similar messages compress: the packed batch is far smaller than its JSON.
    expect(String(data?.packed).length).toBeLessThan(JSON.stringify(batch.map((m) => toWire(m))).length / 4);
  });

  it('rejects a batch with both or neither of packed and messages, naming the field', () => {
    expect(() => parseBatchJob({ v: 1, enqueuedAt: 0 })).toThrow(
      /job\.messages: a batch has either packed or messages/,
    );
    expect(() => parseBatchJob({ v: 1, enqueuedAt: 0, packed: 'x', messages: [{}] })).toThrow(
      /either packed or messages/,
    );
    expect(() =>
      parseBatchJob({ v: 1, enqueuedAt: 0, packed: Buffer.from('[]').toString('base64') }),
    ).toThrow(/job\.packed/);
  });
});

describe('idempotency', () => {
  it('enqueues nothing for a repeated key after the first jobs completed and were removed', async () => {
    const { producer, queue } = setup({ batchSize: 50 });
    const first = await producer.enqueue(messages(120), { idempotencyKey: 'order-42' });
    expect(first).toMatchObject({ messages: 120, duplicate: false });
    expect(first.jobIds).toHaveLength(3);

    // A real BullMQ worker on the same queue and prefix completes the jobs (and removeOnComplete removes them).
    const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    const completed: string[] = [];
    const worker = new Worker(queue, async () => 'done', { connection, prefix: producerDefaults.prefix });
    await new Promise<void>((resolve, reject) => {
      worker.on('completed', (job) => {
        completed.push(job.id as string);
        if (completed.length === first.jobIds.length) resolve();
      });
      worker.on('failed', (_job, error) => reject(error));
    });
    await worker.close();
    await connection.quit();
    expect(completed.sort()).toEqual([...first.jobIds].sort());
    for (const id of first.jobIds) expect(await producer.getQueue().getJob(id)).toBeUndefined();
    expect(await totalJobs(producer)).toBe(0);

    const again = await producer.enqueue(messages(120), { idempotencyKey: 'order-42' });
    expect(again).toEqual({ messages: 0, jobIds: first.jobIds, duplicate: true });
    expect(await totalJobs(producer)).toBe(0);

    const other = await producer.enqueue(messages(120), { idempotencyKey: 'order-43' });
    expect(other).toMatchObject({ messages: 120, duplicate: false });
    expect(await jobCounts(producer)).toMatchObject({ waiting: 3 });
  });

  it('enqueues nothing for a repeated key while the first jobs still wait', async () => {
    const { producer } = setup();
    const first = await producer.enqueue(messages(2), { idempotencyKey: 'signup-7' });
    const again = await producer.enqueue(messages(2), { idempotencyKey: 'signup-7' });
    expect(again).toEqual({ messages: 0, jobIds: first.jobIds, duplicate: true });
    expect(await jobCounts(producer)).toMatchObject({ waiting: 1 });
  });

  it('enqueues nothing for a repeated key that now holds more messages (a retried request that grew)', async () => {
    const { producer } = setup({ batchSize: 10 });
    const first = await producer.enqueue(messages(5), { idempotencyKey: 'cart-9' });
    const again = await producer.enqueue(messages(35), { idempotencyKey: 'cart-9' });
    expect(again).toEqual({ messages: 0, jobIds: first.jobIds, duplicate: true });
    expect(await jobCounts(producer)).toMatchObject({ waiting: 1 });
  });

  it('enqueues again once the retention window (idempotencyTtl) has passed', async () => {
    const { producer } = setup({ idempotencyTtl: 200 });
    await producer.enqueue(messages(1), { idempotencyKey: 'short-lived' });
    // Wait for Redis to expire the key (PX 200); this is a TTL, not a speed assertion.
    await new Promise((resolve) => setTimeout(resolve, 400));
    const again = await producer.enqueue(messages(1), { idempotencyKey: 'short-lived' });
    expect(again).toMatchObject({ messages: 1, duplicate: false });
  });
});

describe('Redis unreachable', () => {
  function deadProducer(logger = silentLogger): Producer {
    const producer = createProducer({ redis: DEAD_REDIS_URL, queue: uniqueQueue(), logger });
    harness.onCleanup(() => producer.close());
    return producer;
  }

  it('fails fast with EREDIS naming the server without its password', async () => {
    const producer = deadProducer();
    const started = performance.now();
    const error = await rejection(producer.enqueue(messages(1)));
    // Loose bound: the point is "no offline buffering", not speed (connectTimeout is 1 s).
    expect(performance.now() - started).toBeLessThan(1500);
    expect(error).toBeInstanceOf(MailError);
    expect((error as MailError).code).toBe('EREDIS');
    expect((error as MailError).message).toContain('127.0.0.1:1');
    expect((error as MailError).message).not.toContain(DEAD_PASSWORD);
    expect(String((error as MailError).stack)).not.toContain(DEAD_PASSWORD);
  });

  it('fails fast again on the next call (the client keeps reconnecting in the background)', async () => {
    const producer = deadProducer();
    await rejection(producer.enqueue(messages(1)));
    const started = performance.now();
    const error = await rejection(producer.enqueue(messages(1)));
    expect(performance.now() - started).toBeLessThan(1500);
    expect((error as MailError).code).toBe('EREDIS');
  });

  it('with failSilently returns 0 messages and logs the failure without the password', async () => {
    const logs = captureLogger();
    const producer = deadProducer(logs.logger);
    const result = await producer.enqueue(messages(3), { failSilently: true });
    expect(result).toEqual({ messages: 0, jobIds: [], duplicate: false });
    const line = logs.lines.find((entry) => entry.msg === 'enqueue failed silently');
    expect(line).toMatchObject({ level: 50, messages: 3, queue: producer.queue });
    expect(String(line?.err)).toContain('127.0.0.1:1');
    expect(logs.text()).not.toContain(DEAD_PASSWORD);
  });

  it('still validates first: a bad message is a ValidationError, not EREDIS', async () => {
    const producer = deadProducer();
    const list = messages(2);
    (list[1] as EmailMessage).to = ['bad address@'];
    expect(await rejection(producer.enqueue(list, { failSilently: true }))).toBeInstanceOf(ValidationError);
  });
});

describe('close()', () => {
  it('is idempotent, and enqueue after close is an error', async () => {
    const { producer } = setup();
    await producer.enqueue(messages(1));
    await producer.close();
    await producer.close();
    await ended(producer.redis);
    const error = await rejection(producer.enqueue(messages(1)));
    expect(error).toBeInstanceOf(MailError);
    expect((error as MailError).code).toBe('ECLOSED');
    expect((error as MailError).message).toMatch(/after close/);
  });

  it('closes a producer that never reached Redis without hanging', async () => {
    const producer = createProducer({ redis: DEAD_REDIS_URL, queue: uniqueQueue(), logger: silentLogger });
    await rejection(producer.enqueue(messages(1)));
    await producer.close();
    await producer.close();
    await ended(producer.redis);
  });

  it('leaves a client it was given open', async () => {
    const client = new Redis(REDIS_URL);
    const { producer } = setup({ redis: client });
    await producer.enqueue(messages(1));
    await producer.close();
    expect(await client.ping()).toBe('PONG');
    await client.quit();
  });
});

describe('settings', () => {
  const environmentQueue = process.env.MAILROOM_QUEUE;
  afterEach(() => {
    if (environmentQueue === undefined) delete process.env.MAILROOM_QUEUE;
    else process.env.MAILROOM_QUEUE = environmentQueue;
    resetSettings();
  });

  it("takes its queue and prefix from MAILROOM_QUEUE and MAILROOM_PREFIX, the worker's settings", async () => {
    const queue = uniqueQueue();
    configure({ MAILROOM_QUEUE: queue, MAILROOM_PREFIX: '{mailroom-settings}' });
    const producer = createProducer({ redis: DEAD_REDIS_URL, logger: silentLogger });
    harness.onCleanup(() => producer.close());
    expect(producer.queue).toBe(queue);
    expect(producer.prefix).toBe('{mailroom-settings}');
    expect(producer.keys.base).toBe(`{mailroom-settings}:${queue}`);
  });

  it('lets its options win over the settings', async () => {
    configure({ MAILROOM_QUEUE: 'from-settings' });
    const producer = createProducer({ redis: DEAD_REDIS_URL, queue: 'from-options', logger: silentLogger });
    harness.onCleanup(() => producer.close());
    expect(producer.queue).toBe('from-options');
  });

  it('refuses a bad MAILROOM_QUEUE naming it, before connecting', () => {
    process.env.MAILROOM_QUEUE = 'a:b';
    resetSettings();
    expect(() => createProducer({ redis: DEAD_REDIS_URL, logger: silentLogger })).toThrow(
      'Invalid MAILROOM_QUEUE="a:b"',
    );
  });
});

describe('validate once (checkMessage then enqueue)', () => {
  it('enqueues the checked wire form as it is, without validating or serializing again', async () => {
    const { producer } = setup();
    const checked = messages(3).map((message) => checkMessage(message));
    const validate = vi.spyOn(EmailMessage.prototype, 'validate');
    try {
      const result = await producer.enqueue(checked, { failSilently: true });
      expect(validate).not.toHaveBeenCalled();
      const [job] = await jobsOf(producer, result);
      const wires = parseBatchJob((job as Job).data).messages;
      expect(wires).toEqual(checked.map(({ wire }) => ({ ...wire, failSilently: true })));
    } finally {
      validate.mockRestore();
    }
  });

  it('checks again anything checkMessage did not return, or checked against a larger cap', async () => {
    const { producer } = setup({ maxMessageBytes: 1000 });
    const forged = {
      ...checkMessage(messages(1)[0]),
      wire: { ...toWire(messages(1)[0] as EmailMessage), to: ['x\r\nBcc: y'] },
    };
    // A hand-made { wire } is not taken as checked: it is not an EmailMessage either, so it is refused.
    await expect(producer.enqueue(forged as never)).rejects.toThrow(
      /messages\[0\] rejected: not an EmailMessage/,
    );
    const big = new EmailMessage('Big', 'x'.repeat(5000), 'news@example.com', ['a@example.com']);
    await expect(producer.enqueue(checkMessage(big))).rejects.toThrow(
      /over the maxMessageBytes limit of 1000/,
    );
  });
});
