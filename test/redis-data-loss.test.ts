/**
 * Redis losing its data (restarted without persistence) under a running worker. Before: the queue came
 * back empty without a word, the worker logged "lock lost: another worker took the batch over",
 * `campaign status` said the campaign did not exist, and starting it again with the same id (a
 * "resume") resent it to everyone already delivered. Now the worker says loudly what was lost, a lost
 * campaign is refused unless started over, and its status says it was lost. Also: workers warn at
 * start-up about a Redis that would lose data.
 *
 * Every test runs its own redis-server on a free port (never the shared Redis); the loss is a SIGKILL
 * and a restart of that server.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_PIPELINE_WINDOW, ValidationError } from '@mailroom/core';
import {
  type CampaignRecipient,
  campaignStatus,
  createProducer,
  DataLossError,
  type Producer,
  readEpochMarker,
  startCampaign,
} from '@mailroom/producer';
import { createWorker } from '@mailroom/worker';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT, runCleanups, useTemporaryDirectory } from './support/harness.js';
import { uniqueQueue } from './support/redis.js';
import { type PrivateRedis, startRedisServer } from './support/redis-server.js';
import { type SmtpServerOptions, type SmtpTestServer, startSmtpServer } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';
import { killAll, type MailroomProcess, runMailroom, startWorker } from './support/worker-process.js';

const dir = useTemporaryDirectory('mailroom-data-loss-');
const cleanups: (() => unknown)[] = [];
const processes: MailroomProcess[] = [];
afterEach(async () => {
  const tracked = processes.splice(0);
  await runCleanups([...cleanups.splice(0), () => killAll(tracked)]);
});

async function redisServer(args?: readonly string[]): Promise<PrivateRedis> {
  const server = await startRedisServer(args);
  cleanups.push(() => server.stop());
  return server;
}

async function smtpServer(options: SmtpServerOptions = {}): Promise<SmtpTestServer> {
  const server = await startSmtpServer(options);
  cleanups.push(() => server.close());
  return server;
}

function producerOn(redis: PrivateRedis, queue: string, logger = captureLogger().logger): Producer {
  const producer = createProducer({ redis: redis.url, queue, batchSize: 5, logger });
  cleanups.push(() => producer.close());
  return producer;
}

/** FLUSHALL on the test's own redis-server: a loss without a restart. */
async function flushAll(redis: PrivateRedis): Promise<void> {
  const client = new Redis(redis.url);
  try {
    await client.flushall();
  } finally {
    await client.quit();
  }
}

const rejectionOf = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

const template = {
  subject: 'June news for {{ email }}',
  text: 'Hello {{ email }}',
  fromEmail: 'news@example.com',
};
const RECIPIENTS = 200;
const addresses = (): CampaignRecipient[] =>
  Array.from({ length: RECIPIENTS }, (_, index) => `reader${index}@example.com`);

async function jobsWaiting(producer: Producer): Promise<number> {
  const counts = await producer.getQueue().getJobCounts('waiting', 'active', 'delayed', 'prioritized');
  return Object.values(counts).reduce((sum, count) => sum + count, 0);
}

describe('Redis restarted without its data under a running worker', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('is reported by the worker with the campaign it took; the campaign is refused, reported lost, and sent again only with --start-over', async () => {
    const redis = await redisServer();
    // After 40 messages the mail server holds the next ones until Redis is back, so that both of the
    // worker's batches are in flight (a message each on the wire) when Redis loses its data.
    const held: (() => void)[] = [];
    let holding = true;
    let passed = 0;
    const server = await smtpServer({
      async onData() {
        if (passed >= 40 && holding) await new Promise<void>((resolve) => held.push(resolve));
        passed++;
      },
    });
    const queue = uniqueQueue('data-loss');
    const env = {
      REDIS_URL: redis.url,
      MAILROOM_QUEUE: queue,
      MAILROOM_CONCURRENCY: '2',
      EMAIL_BACKEND: 'smtp',
      EMAIL_HOST: server.host,
      EMAIL_PORT: String(server.port),
    };
    const worker = await startWorker(env);
    processes.push(worker);
    const producer = producerOn(redis, queue);
    const handle = await startCampaign(producer, {
      id: 'june',
      template,
      recipients: addresses(),
      maxPending: RECIPIENTS,
    });
    await handle.enqueued;
    await waitUntil(() => held.length === 2, 'both batches to be in flight after 40 messages', 60_000);

    await redis.restart();
    const deliveredAtLoss = server.messages.length;
    holding = false;
    for (const release of held) release();

    const report = await worker.waitForLog((line) => String(line.msg).startsWith('Redis lost its data'));
    expect(report.level).toBe(50);
    expect(report).toMatchObject({ queue, dataLoss: true, campaigns: ['june'] });
    // Whether it can tell a restart (INFO uptime, whole seconds) depends on when it last looked.
    expect(report.msg).toMatch(
      /^Redis lost its data at \S+: it (restarted at \S+ without it|was flushed, .*restarted)/,
    );
    expect(report.msg).toContain('1 campaign record with progress and sent-to list (june:');
    // The batches in flight lost their locks with the data: said so, and never called a takeover.
    const lockLost = (prefix: string) => worker.logs.filter((line) => String(line.msg).startsWith(prefix));
    await waitUntil(
      () => lockLost('lock lost because Redis lost its data').length === 2,
      'both batches to report their lock lost with the data',
    );
    expect(lockLost('lock lost: another worker')).toEqual([]);

    // Starting the same id again (what the docs call a resume) would resend to everyone: refused.
    const later = producerOn(redis, queue);
    const refusal = await rejectionOf(
      startCampaign(later, { id: 'june', template, recipients: addresses() }),
    );
    expect(refusal).toBeInstanceOf(DataLossError);
    expect((refusal as DataLossError).code).toBe('EDATALOST');
    expect((refusal as DataLossError).message).toMatch(
      /^Campaign "june" on queue ".+" was lost with Redis's data at \d{4}-\d\d-\d\dT.*Nothing was enqueued.*startOver: true/s,
    );
    await expect(campaignStatus(later, 'june')).rejects.toThrow(/was lost with Redis's data at \d{4}-/);

    const files = {
      text: join(dir, 'june.txt'),
      recipients: join(dir, 'june.csv'),
    };
    await writeFile(files.text, 'Hello {{ email }}\n');
    await writeFile(files.recipients, `email\n${addresses().join('\n')}\n`);
    const start = (...extra: string[]) =>
      runMailroom(
        [
          'campaign',
          'start',
          '--id',
          'june',
          '--from',
          template.fromEmail,
          '--subject',
          template.subject,
          '--text-file',
          files.text,
          '--recipients',
          files.recipients,
          '--batch-size',
          '5',
          ...extra,
        ],
        { REDIS_URL: redis.url, MAILROOM_QUEUE: queue },
      );

    const status = await runMailroom(['campaign', 'status', 'june'], {
      REDIS_URL: redis.url,
      MAILROOM_QUEUE: queue,
    });
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/Campaign "june" on queue ".+" was lost with Redis's data at \d{4}-/);
    expect(status.stderr).not.toMatch(/No campaign/);

    const resumed = await start();
    expect(resumed.code).toBe(1);
    expect(resumed.stderr).toMatch(/was lost with Redis's data at .*Nothing was enqueued.*--start-over/s);
    expect(resumed.stdout).toBe('');

    // Nothing of the refused starts reached the queue or the mail server.
    expect(await jobsWaiting(later)).toBe(0);
    expect(await later.redis.hget(later.keys.campaign('june'), 'state')).toBeNull();
    // The messages each batch had in flight when it learned the lock was gone (at the next ledger
    // write): at least the held one, at most a pipeline window per batch, and nothing after.
    expect(server.messages.length).toBeGreaterThanOrEqual(deliveredAtLoss + 2);
    expect(server.messages.length).toBeLessThanOrEqual(deliveredAtLoss + 2 * DEFAULT_PIPELINE_WINDOW);

    // Told to start over, it sends the campaign anew: to everyone.
    const startedOver = await start('--start-over');
    expect(startedOver.code).toBe(0);
    await waitUntil(
      async () => (await campaignStatus(later, 'june')).state === 'completed',
      'the started-over campaign to complete',
      90_000,
      100,
    );
    expect(await campaignStatus(later, 'june')).toMatchObject({
      total: RECIPIENTS,
      sent: RECIPIENTS,
      failed: 0,
    });
    expect((await readEpochMarker(later.redis, later.keys))?.lostCampaigns.has('june')).toBe(false);
  });
});

describe('Redis settings checked when a worker starts', () => {
  /** Starts an in-process worker on `redis` and returns its log once the settings were checked. */
  async function startUpLog(redis: PrivateRedis): Promise<Record<string, unknown>[]> {
    const { logger, lines } = captureLogger('info');
    const worker = createWorker({
      redis: redis.url,
      queue: uniqueQueue('redis-checks'),
      backend: 'dummy',
      logger,
    });
    cleanups.push(() => worker.close());
    await waitUntil(
      () =>
        lines.some(
          (line) => typeof line.setting === 'string' || String(line.msg).startsWith('Redis persistence:'),
        ),
      'the Redis settings check',
    );
    return lines;
  }

  const warnings = (lines: Record<string, unknown>[]) =>
    lines.filter((line) => line.level === 40 && typeof line.setting === 'string');

  it('warns about a Redis without AOF or RDB persistence, saying what a restart loses', async () => {
    const lines = await startUpLog(await redisServer(['--save', '', '--appendonly', 'no']));
    expect(warnings(lines)).toEqual([
      expect.objectContaining({
        setting: 'persistence',
        msg: expect.stringMatching(/^Redis has no persistence.*restart empties the queue/),
      }),
    ]);
  });

  it('warns about a maxmemory-policy that evicts keys', async () => {
    const lines = await startUpLog(
      await redisServer(['--appendonly', 'yes', '--maxmemory-policy', 'allkeys-lru']),
    );
    expect(warnings(lines)).toEqual([
      expect.objectContaining({
        setting: 'maxmemory-policy',
        msg: expect.stringMatching(/allkeys-lru, not noeviction/),
      }),
    ]);
  });

  it('says nothing alarming about a Redis with AOF and noeviction', async () => {
    const lines = await startUpLog(
      await redisServer(['--appendonly', 'yes', '--maxmemory-policy', 'noeviction']),
    );
    expect(warnings(lines)).toEqual([]);
    expect(lines.map((line) => line.msg)).toContain('Redis persistence: AOF on, maxmemory-policy noeviction');
  });

  it('warns that it could not check when CONFIG is disabled (managed Redis)', async () => {
    const lines = await startUpLog(
      await redisServer(['--appendonly', 'yes', '--rename-command', 'CONFIG', '']),
    );
    expect(warnings(lines)).toEqual([
      expect.objectContaining({
        setting: 'unchecked',
        msg: expect.stringMatching(/^could not check Redis persistence and eviction policy/),
      }),
    ]);
  });
});

describe('a producer and Redis losing its data', () => {
  it('stops enqueueing a campaign whose record vanished with a DataLossError instead of calling it cancelled', async () => {
    const redis = await redisServer();
    const queue = uniqueQueue('data-loss');
    const log = captureLogger();
    const producer = producerOn(redis, queue, log.logger);
    // No worker: after the first chunk the campaign waits for room, reading its record every 100 ms.
    const handle = await startCampaign(producer, {
      id: 'july',
      template,
      recipients: addresses(),
      chunkSize: 10,
      maxPending: 10,
    });
    await waitUntil(async () => (await jobsWaiting(producer)) > 0, 'the first chunk to be enqueued');

    await flushAll(redis);

    const error = await rejectionOf(handle.enqueued);
    expect(error).toBeInstanceOf(DataLossError);
    expect((error as DataLossError).message).toMatch(
      /^Redis lost its data at .* while campaign "july" on queue ".+" was being enqueued/,
    );
    const marker = await readEpochMarker(producer.redis, producer.keys);
    expect(marker?.lostCampaigns.get('july')).toMatchObject({ state: 'running', total: 10 });
    const reports = log.lines.filter((line) => String(line.msg).startsWith('Redis lost its data'));
    expect(reports).toEqual([
      expect.objectContaining({
        level: 50,
        campaigns: ['july'],
        msg: expect.stringMatching(/flushed, evicted or deleted/),
      }),
    ]);
  });

  it('carries a lost campaign over to the marker of a second loss', async () => {
    const redis = await redisServer();
    const queue = uniqueQueue('data-loss');
    const producer = producerOn(redis, queue);
    await (await startCampaign(producer, { id: 'august', template, recipients: addresses().slice(0, 5) }))
      .enqueued;

    await flushAll(redis);
    await producer.epoch.check(true);
    await flushAll(redis);
    await producer.epoch.check(true);

    const marker = await readEpochMarker(producer.redis, producer.keys);
    expect(marker?.loss).toBeDefined();
    expect([...(marker?.lostCampaigns.keys() ?? [])]).toEqual(['august']);
    const refusal = await rejectionOf(
      startCampaign(producerOn(redis, queue), { id: 'august', template, recipients: addresses() }),
    );
    expect(refusal).toBeInstanceOf(DataLossError);
  });

  it('refuses startOver for a campaign that was not lost', async () => {
    const redis = await redisServer();
    const queue = uniqueQueue('data-loss');
    const producer = producerOn(redis, queue);
    await (await startCampaign(producer, { id: 'september', template, recipients: addresses().slice(0, 5) }))
      .enqueued;

    const error = await rejectionOf(
      startCampaign(producer, { id: 'september', template, recipients: addresses(), startOver: true }),
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).message).toMatch(
      /exists \(running\): startOver is only for a campaign lost/,
    );
    expect(await jobsWaiting(producer)).toBe(1);
  });
});
