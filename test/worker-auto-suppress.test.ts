/**
 * Auto-suppression by an in-process worker against a real SMTP server and real Redis: recipients
 * refused because their mailbox does not exist end on the queue's suppression list; policy refusals
 * and deferrals do not; a suppression list Redis refuses to write fails nothing.
 */
import { EmailMessage } from '@mailroom/core';
import { queueKeys, type Suppression, SuppressionList } from '@mailroom/core/protocol';
import { createWorker, Ledger, PrometheusMetrics } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { queueIdle, queueRig, useHarness } from './support/harness.js';
import { PREFIX, REDIS_URL } from './support/redis.js';
import type { SmtpRefusal, SmtpTestServer } from './support/smtp-server.js';
import { captureLogger } from './support/wait.js';

const harness = useHarness();
const { redis } = harness;

/** The server's answer to RCPT TO by local part: `gone` 5.1.1, `spam` 5.7.1, `grey` 4.2.0, others accepted. */
function refuse(address: string): SmtpRefusal | undefined {
  const local = address.toLowerCase();
  if (local.startsWith('gone')) {
    return { code: 550, message: `5.1.1 <${address}>: Recipient address rejected: User unknown` };
  }
  if (local.startsWith('spam')) return { code: 550, message: '5.7.1 Message rejected as spam' };
  if (local.startsWith('grey')) return { code: 450, message: '4.2.0 Greylisted, try again later' };
  return undefined;
}

/** A queue whose server refuses as {@link refuse}, and an in-process worker on it (2 attempts, fast retries). */
async function setup() {
  const { queue, server, producer } = await queueRig(harness, {
    label: 'auto-suppress',
    server: { onRcpt: refuse },
  });
  const logs = captureLogger();
  const metrics = new PrometheusMetrics();
  const worker = createWorker({
    redis: REDIS_URL,
    queue,
    backend: 'smtp',
    backendOptions: { host: server.host, port: server.port },
    attempts: 2,
    backoff: { delay: 20, maxDelay: 50 },
    logger: logs.logger,
    metrics,
  });
  harness.onCleanup(() => worker.close());
  const keys = queueKeys(PREFIX, queue);
  return { queue, keys, server, producer, logs, metrics, list: new SuppressionList(redis, keys) };
}

function message(to: string[]): EmailMessage {
  return new EmailMessage('June news', 'Hello', 'news@example.com', to);
}

async function everyEntry(list: SuppressionList): Promise<Suppression[]> {
  const found: Suppression[] = [];
  for await (const record of list.entries()) found.push(record);
  return found.sort((a, b) => a.address.localeCompare(b.address));
}

function rcptCount(server: SmtpTestServer, address: string): number {
  return server.commands.filter(
    (command) => command.command === 'RCPT' && command.line.includes(`<${address}>`),
  ).length;
}

describe('worker auto-suppression', () => {
  it('puts recipients refused with 5.1.1 on the list as hard bounces, with the reply as source', async () => {
    const { producer, list, logs, metrics, server } = await setup();
    const startedAt = Date.now();
    await producer.enqueue(
      [
        message(['gone1@example.com']), // the sole recipient: the whole message fails
        message(['ok1@example.com', 'Gone2@Example.com', 'spam1@example.com']),
        message(['ok2@example.com']),
        message(['grey1@example.com', 'spam2@example.com']),
        message(['gone3@example.com', 'grey2@example.com']),
      ],
      { failSilently: true },
    );
    await queueIdle(producer, 30_000);

    const entries = await everyEntry(list);
    expect(entries.map((entry) => entry.address)).toEqual([
      'gone1@example.com',
      'gone2@example.com',
      'gone3@example.com',
    ]);
    for (const entry of entries) {
      expect(entry.reason).toBe('hard-bounce');
      expect(entry.at).toBeGreaterThanOrEqual(startedAt);
    }
    expect(entries[0]?.source).toBe(
      '550 5.1.1 <gone1@example.com>: Recipient address rejected: User unknown',
    );
    // The reply names the envelope address (its local part as written); the list keys it lowercased.
    expect(entries[1]?.source).toBe(
      '550 5.1.1 <Gone2@example.com>: Recipient address rejected: User unknown',
    );
    // Deferred recipients are retried, a hard bounce never.
    expect(rcptCount(server, 'grey1@example.com')).toBe(2);
    expect(rcptCount(server, 'gone3@example.com')).toBe(1);

    const suppressed = logs.lines.filter((line) => line.msg === 'hard bounces suppressed');
    expect(suppressed.reduce((sum, line) => sum + (line.added as number), 0)).toBe(3);
    expect(suppressed.every((line) => line.domains === 'example.com')).toBe(true);
    const counter = await metrics.suppressed.get();
    expect(counter.values).toEqual([
      expect.objectContaining({ labels: { reason: 'hard-bounce' }, value: 3 }),
    ]);
  });

  it('writes nothing to the list for policy refusals, deferrals and delivered messages', async () => {
    const { producer, keys } = await setup();
    await producer.enqueue(
      [message(['spam@example.com']), message(['grey@example.com']), message(['ok@example.com'])],
      {
        failSilently: true,
      },
    );
    await queueIdle(producer, 30_000);
    expect(await redis.exists(keys.suppression)).toBe(0);
  });

  it('goes on when Redis refuses the suppression write: the batch completes, nothing is sent again', async () => {
    const { producer, keys, logs, server, queue } = await setup();
    // A string where the hash should be: every HSETNX on it fails with WRONGTYPE.
    await redis.set(keys.suppression, 'not a hash');
    const { jobIds } = await producer.enqueue(
      [message(['gone@example.com']), message(['ok@example.com']), message(['gone4@example.com'])],
      { failSilently: true },
    );
    await queueIdle(producer, 30_000);

    expect(server.messages.map((received) => received.to)).toEqual([['ok@example.com']]);
    expect(rcptCount(server, 'gone@example.com')).toBe(1);
    expect(await producer.getQueue().getJobCounts('failed')).toEqual({ failed: 0 });
    const snapshot = await new Ledger(redis, queueKeys(PREFIX, queue), 1000).load(jobIds[0] as string);
    expect(snapshot.entries.get(0)).toMatchObject({ state: 'f', code: 550 });
    const warnings = logs.lines.filter(
      (line) => line.msg === 'could not put hard bounces on the suppression list; the batch goes on',
    );
    expect(warnings.length).toBeGreaterThanOrEqual(1);
    expect(warnings[0]?.err).toMatch(/WRONGTYPE/);
    expect(await redis.get(keys.suppression)).toBe('not a hash');
  });
});
