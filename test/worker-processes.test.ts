/**
 * Real worker processes (the `mailroom worker` CLI) against real Redis and a real SMTP server:
 * SIGKILL mid-drain, SIGTERM mid-drain, a killed Redis connection, the global rate limit, an SMTP
 * outage. Counts of what the SMTP server received are printed for the record.
 */
import { describe, expect, it } from 'vitest';
import {
  duplicateSends,
  FAST_RECOVERY_ENV,
  numberedNewsletter,
  type QueueRig,
  queueIdle,
  queueRig,
  receiptsPerRecipient,
  useHarness,
} from './support/harness.js';
import type { SmtpServerOptions, SmtpTestServer } from './support/smtp-server.js';
import { waitUntil } from './support/wait.js';
import type { MailroomProcess } from './support/worker-process.js';

const harness = useHarness();
const { redis } = harness;

/** A queue drained by worker processes that recover fast from a crash, into an SMTP server. */
function drain(serverOptions: SmtpServerOptions, env: Record<string, string> = {}): Promise<QueueRig> {
  return queueRig(harness, {
    label: 'proc',
    server: serverOptions,
    env: { ...FAST_RECOVERY_ENV, LOG_LEVEL: 'info', ...env },
  });
}

function receipts(server: SmtpTestServer): { unique: number; duplicates: number; total: number } {
  const counts = receiptsPerRecipient(server);
  return { unique: counts.size, duplicates: duplicateSends(counts), total: server.messages.length };
}

describe('worker processes', () => {
  it('survives SIGKILL of one of three workers three times: everyone gets the message, duplicates bounded', async () => {
    const total = 3000;
    const window = 4;
    const { server, producer, spawn } = await drain(
      { replyDelayMs: 8 },
      { MAILROOM_PIPELINE_WINDOW: String(window) },
    );
    await producer.enqueue(numberedNewsletter(total));
    const workers = [await spawn(), await spawn(), await spawn()];
    let victim = workers[0] as MailroomProcess;
    const kills = 3;
    for (let kill = 1; kill <= kills; kill++) {
      await waitUntil(
        () => server.messages.length >= (kill * total) / 5,
        `${(kill * total) / 5} messages`,
        120_000,
      );
      victim.kill('SIGKILL');
      await victim.exited;
      victim = await spawn();
    }
    await waitUntil(() => receipts(server).unique >= total, 'every recipient', 180_000, 100);
    await queueIdle(producer);
    const counts = receipts(server);
    // The record the issue asks for: what arrived, and how many were sent twice.
    console.log(
      `[crash] recipients=${counts.unique}/${total} messages=${counts.total} duplicates=${counts.duplicates} kills=${kills}`,
    );
    expect(counts.unique).toBe(total);
    // Only what was sent but not yet recorded at each kill may go twice: at most the pipeline window
    // per connection, and each worker has 2 (test/worker-crash-window.test.ts shows the bound is tight).
    expect(counts.duplicates).toBeLessThanOrEqual(kills * 2 * window);
    expect(await producer.getQueue().getJobCounts('failed')).toEqual({ failed: 0 });
  }, 300_000);

  it('on SIGTERM mid-drain exits within its timeout; another worker finishes; nothing lost or duplicated', async () => {
    const total = 1000;
    const { server, producer, spawn } = await drain({ replyDelayMs: 8 }, { MAILROOM_SHUTDOWN_TIMEOUT: '5s' });
    await producer.enqueue(numberedNewsletter(total));
    const leaving = await spawn();
    const staying = await spawn();
    await waitUntil(() => server.messages.length >= 300, '300 messages', 60_000);
    const asked = Date.now();
    leaving.kill('SIGTERM');
    const exit = await leaving.exited;
    const tookMs = Date.now() - asked;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(tookMs).toBeLessThan(5000 + 2000);
    expect(leaving.logs.some((line) => line.msg === 'worker stopped')).toBe(true);
    await waitUntil(() => receipts(server).unique >= total, 'every recipient', 120_000, 100);
    await queueIdle(producer);
    const counts = receipts(server);
    console.log(
      `[sigterm] exit after ${tookMs} ms; recipients=${counts.unique}/${total} duplicates=${counts.duplicates}`,
    );
    expect(counts.unique).toBe(total);
    expect(counts.duplicates).toBe(0);
    expect(staying.logs.some((line) => line.msg === 'batch completed')).toBe(true);
  }, 180_000);

  it('reconnects after its Redis connections are killed (CLIENT KILL) and finishes; nothing lost', async () => {
    const total = 1000;
    const { server, producer, spawn, queue } = await drain({ replyDelayMs: 5 });
    await producer.enqueue(numberedNewsletter(total));
    await spawn();
    await spawn();
    await waitUntil(() => server.messages.length >= 300, '300 messages', 60_000);
    // Kill only this test's worker connections (named after the queue: mailroom-worker:<queue> by
    // mailroom, {mailroom}:<base64 queue> by BullMQ), so tests running alongside keep theirs.
    const markers = [`mailroom-worker:${queue}`, Buffer.from(queue).toString('base64')];
    const clients = (await redis.client('LIST')) as string;
    const ids = clients
      .split('\n')
      .filter((line) => markers.some((marker) => line.includes(`name=${marker}`) || line.includes(marker)))
      .map((line) => /id=(\d+)/.exec(line)?.[1])
      .filter((id): id is string => id !== undefined);
    // Each worker: its command connection and BullMQ's blocking one.
    expect(ids.length).toBeGreaterThanOrEqual(4);
    for (const id of ids) await redis.client('KILL', 'ID', id);
    await waitUntil(() => receipts(server).unique >= total, 'every recipient', 120_000, 100);
    await queueIdle(producer);
    const counts = receipts(server);
    console.log(
      `[redis-kill] killed ${ids.length} connections; recipients=${counts.unique}/${total} duplicates=${counts.duplicates}`,
    );
    expect(counts.unique).toBe(total);
    expect(counts.duplicates).toBe(0);
    expect(await producer.getQueue().getJobCounts('failed')).toEqual({ failed: 0 });
  }, 180_000);

  it('rides out an SMTP outage of 3 s mid-drain: all delivered after it returns, no duplicates, no dead letters', async () => {
    const total = 1000;
    let down = false;
    // The server goes down cleanly: it stops accepting connections, and open sessions get 421
    // ("closing transmission channel") at their next transaction instead of losing a reply mid-DATA.
    const serviceDown = () =>
      down ? { code: 421, message: 'Service not available, closing channel' } : undefined;
    const { server, producer, spawn } = await drain(
      { replyDelayMs: 5, onConnect: serviceDown, onMailFrom: serviceDown },
      // Backoff 0.5 s doubling over 5 attempts: at least 3.75 s of retries, more than the outage.
      { MAILROOM_BACKOFF: '500ms' },
    );
    await producer.enqueue(numberedNewsletter(total));
    await spawn();
    await spawn();
    await waitUntil(() => server.messages.length >= 300, '300 messages', 60_000);
    down = true;
    await server.stopListening();
    const during = server.messages.length;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const acceptedWhileDown = server.messages.length - during;
    down = false;
    await server.listenAgain();
    await waitUntil(() => receipts(server).unique >= total, 'every recipient', 120_000, 100);
    await queueIdle(producer);
    const counts = receipts(server);
    const refused = server.refusals.filter((refusal) => refusal.code === 421).length;
    console.log(
      `[outage] 3 s down, ${refused} sessions refused with 421, ${acceptedWhileDown} accepted while down (in flight); recipients=${counts.unique}/${total} duplicates=${counts.duplicates}`,
    );
    expect(counts.unique).toBe(total);
    expect(counts.duplicates).toBe(0);
    // Only messages already on the wire when the server went down may complete during the outage.
    expect(acceptedWhileDown).toBeLessThanOrEqual(4);
    expect(await producer.getQueue().getJobCounts('failed')).toEqual({ failed: 0 });
  }, 180_000);

  it('holds two workers to a global rate limit of 200 messages/s', async () => {
    const total = 1200;
    const arrivals: number[] = [];
    const { producer, spawn } = await drain(
      { onData: () => void arrivals.push(Date.now()) },
      { MAILROOM_RATE_LIMIT: '200/s', MAILROOM_CONCURRENCY: '5' },
    );
    await spawn();
    await spawn();
    await producer.enqueue(numberedNewsletter(total));
    await waitUntil(() => arrivals.length >= total, 'every message', 60_000, 100);
    // The steady part of the drain: without the start-up and the tail, where fewer batches remain
    // in flight than there are connections.
    const window = arrivals.slice(100, total - 100);
    const seconds = ((window.at(-1) as number) - (window[0] as number)) / 1000;
    const rate = (window.length - 1) / seconds;
    console.log(
      `[rate-limit] ${window.length} messages in ${seconds.toFixed(2)} s = ${rate.toFixed(1)} messages/s (limit 200/s)`,
    );
    expect(rate).toBeGreaterThan(200 * 0.85);
    expect(rate).toBeLessThan(200 * 1.15);
  }, 120_000);
});
