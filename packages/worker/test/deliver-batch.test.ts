/** deliverBatch against a real SMTP server and Redis: ledger entries written in groups, never more than a window behind. */
import { EmailMessage, SmtpBackend } from '@mailroom/core';
import { type LedgerEntry, queueKeys } from '@mailroom/core/protocol';
import { Ledger } from '@mailroom/worker';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { removeQueueKeys, testRedis, uniqueQueue } from '../../../test/support/redis.js';
import { type SmtpTestServer, startSmtpServer } from '../../../test/support/smtp-server.js';
import { deliverBatch, type PendingMessage } from '../src/deliver-batch.js';
import type { BatchRef, BatchStatus } from '../src/ledger.js';
import { PrometheusMetrics } from '../src/metrics.js';

const redis = testRedis();
const queue = uniqueQueue('deliver-batch');
const keys = queueKeys('{mailroom}', queue);
const servers: SmtpTestServer[] = [];

afterEach(async () => {
  await removeQueueKeys(redis, queue);
  await Promise.all(servers.splice(0).map((server) => server.close()));
});
afterAll(async () => {
  await redis.quit();
});

/**
 * The real ledger, also noting for each write how many entries it carried and how many messages the
 * server had accepted by then that no earlier write had recorded.
 */
class WatchedLedger extends Ledger {
  readonly writes: { entries: number; acceptedNotRecorded: number }[] = [];
  recorded = 0;

  constructor(readonly server: SmtpTestServer) {
    super(redis, keys, 60_000);
  }

  override async recordMany(
    batch: BatchRef,
    entries: readonly (readonly [number, LedgerEntry])[],
  ): Promise<BatchStatus> {
    this.writes.push({
      entries: entries.length,
      acceptedNotRecorded: this.server.messages.length - this.recorded,
    });
    this.recorded += entries.length;
    return super.recordMany(batch, entries);
  }
}

function pending(count: number): PendingMessage[] {
  return Array.from({ length: count }, (_, index) => ({
    index,
    message: new EmailMessage(`Issue ${index}`, 'Hello', 'news@example.com', [`reader${index}@example.com`]),
    entry: undefined,
    enqueuedAt: Date.now(),
  }));
}

async function drain(window: number, count: number) {
  const server = await startSmtpServer({ keepRawMessages: false });
  servers.push(server);
  const ledger = new WatchedLedger(server);
  const backend = new SmtpBackend({ ...server.clientOptions, pipelineWindow: window, failSilently: true });
  const batch = { jobId: `job-window-${window}`, token: undefined, campaign: undefined };
  const result = await deliverBatch({
    batch,
    messages: pending(count),
    backend,
    release: (connection) => connection.close(),
    ledger,
    rateLimiter: undefined,
    signal: new AbortController().signal,
    maxReconnects: 0,
    logger: pino({ level: 'silent' }),
    metrics: new PrometheusMetrics(),
  });
  const stored = await ledger.load(batch.jobId);
  return { server, ledger, result, stored };
}

describe('deliverBatch', () => {
  it('writes the ledger in groups (one Redis call for several messages), never more than the window behind', async () => {
    const window = 16;
    const { server, ledger, result, stored } = await drain(window, 64);
    expect(server.messages).toHaveLength(64);
    expect(result.stopped).toBeUndefined();
    expect([...stored.entries.values()].map((entry) => entry.state)).toEqual(Array(64).fill('d'));
    expect(ledger.writes.reduce((sum, write) => sum + write.entries, 0)).toBe(64);
    // Groups of up to 8: far fewer writes than messages.
    expect(ledger.writes.length).toBeLessThanOrEqual(16);
    expect(Math.max(...ledger.writes.map((write) => write.entries))).toBeGreaterThan(1);
    // The crash bound: at no write were more than a window of accepted messages unrecorded.
    for (const write of ledger.writes) expect(write.acceptedNotRecorded).toBeLessThanOrEqual(window);
  });

  it('with a window of 1 writes each message before the next goes out', async () => {
    const { server, ledger, stored } = await drain(1, 12);
    expect(server.messages).toHaveLength(12);
    expect(stored.entries.size).toBe(12);
    expect(ledger.writes.map((write) => write.entries)).toEqual(Array(12).fill(1));
    for (const write of ledger.writes) expect(write.acceptedNotRecorded).toBeLessThanOrEqual(1);
  });
});
