/**
 * The worker's opt-in HTTP endpoint (MAILROOM_METRICS_PORT), scraped from real `mailroom worker`
 * processes during and after a drain into a real SMTP server: Prometheus counters agree with what
 * the SMTP server accepted, failures and retries by reason, histograms, connections, rate-limit
 * waits; /healthz, /readyz through a SIGTERM shutdown, unknown paths.
 */
import { EmailMessage } from '@mailroom/core';
import { campaignStatus, type Producer, startCampaign } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { queueIdle, queueRig, useHarness } from './support/harness.js';
import type { SmtpServerOptions, SmtpTestServer } from './support/smtp-server.js';
import { waitUntil } from './support/wait.js';
import type { MailroomProcess } from './support/worker-process.js';

const harness = useHarness();

interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** The samples of one metric in Prometheus text format (`name{a="b"} 1`). */
function samples(text: string, name: string): Sample[] {
  const found: Sample[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1] as string] = pair[2] as string;
    }
    found.push({ labels, value: Number(match[3]) });
  }
  return found;
}

/** Sum of a metric over the given scrapes (one per worker), optionally only samples with these labels. */
function total(scrapes: string[], name: string, labels: Record<string, string> = {}): number {
  return scrapes
    .flatMap((text) => samples(text, name))
    .filter((sample) => Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
    .reduce((sum, sample) => sum + sample.value, 0);
}

/** The port a worker process reports in its start banner (`metrics=:PORT`). */
function metricsPort(worker: MailroomProcess): number {
  const match = /metrics=:(\d+)/.exec(worker.stderr());
  if (!match) throw new Error(`no metrics port in the banner: ${worker.stderr()}`);
  return Number(match[1]);
}

async function get(port: number, path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}${path}`, init);
}

async function scrape(port: number): Promise<string> {
  const response = await get(port, '/metrics');
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
  return response.text();
}

interface Rig {
  queue: string;
  server: SmtpTestServer;
  producer: Producer;
  spawn(extra?: Record<string, string>): Promise<{ worker: MailroomProcess; port: number }>;
}

async function rig(serverOptions: SmtpServerOptions): Promise<Rig> {
  const { queue, server, producer, spawn } = await queueRig(harness, {
    label: 'metrics',
    server: serverOptions,
    producer: { batchSize: 50 },
    env: {
      MAILROOM_CONCURRENCY: '2',
      MAILROOM_BACKOFF: '200ms',
      // Port 0: the worker binds a free port and reports it in its banner.
      MAILROOM_METRICS_PORT: '0',
      LOG_LEVEL: 'info',
    },
  });
  return {
    queue,
    server,
    producer,
    async spawn(extra = {}) {
      const worker = await spawn(extra);
      return { worker, port: metricsPort(worker) };
    },
  };
}

function newsletter(addresses: string[]): EmailMessage[] {
  return addresses.map(
    (address, index) => new EmailMessage(`Issue ${index}`, `Hello ${address}`, 'news@example.com', [address]),
  );
}

describe('worker metrics endpoint', () => {
  it('counts what the SMTP server accepted, failures and retries by reason, latencies, connections and rate-limit waits', async () => {
    const good = 500;
    const rejected = Array.from({ length: 20 }, (_, index) => `rejected${index}@example.com`);
    const flaky = Array.from({ length: 10 }, (_, index) => `flaky${index}@example.com`);
    const refusedOnce = new Set<string>();
    // Holds every message while the test scrapes mid-drain, so "mid-drain" does not depend on timing.
    let gate: { opened: Promise<void>; open: () => void } | undefined;
    let accepted = 0;
    const { server, producer, spawn } = await rig({
      onRcpt(address) {
        if (address.startsWith('rejected')) return { code: 550, message: 'No such user' };
        if (address.startsWith('flaky') && !refusedOnce.has(address)) {
          refusedOnce.add(address);
          return { code: 451, message: 'Try again later' };
        }
        return undefined;
      },
      async onData() {
        if (++accepted === 200) {
          let open = () => {};
          const opened = new Promise<void>((resolve) => {
            open = resolve;
          });
          gate = { opened, open };
        }
        await gate?.opened;
      },
    });
    // A global limit well under what the two workers (4 connections) manage against this server
    // even on a busy machine, so rate-limit waits happen.
    const workers = [
      await spawn({ MAILROOM_RATE_LIMIT: '100/s' }),
      await spawn({ MAILROOM_RATE_LIMIT: '100/s' }),
    ];
    const ports = workers.map((worker) => worker.port);
    expect(new Set(ports).size).toBe(2);
    const addresses = [
      ...Array.from({ length: good }, (_, index) => `reader${index}@example.com`),
      ...rejected,
      ...flaky,
    ];
    const result = await producer.enqueue(newsletter(addresses), { failSilently: true });
    const all = addresses.length;
    const batches = result.jobIds.length;

    await waitUntil(() => gate !== undefined, 'the drain to reach 200 messages', 120_000, 25);
    const during = await Promise.all(ports.map(scrape));
    const sentDuring = total(during, 'mailroom_messages_sent_total');
    const acceptedDuring = server.messages.length;
    for (const port of ports) expect((await get(port, '/readyz')).status).toBe(200);
    gate?.open();
    // A worker counts a message once the server's 250 reached it: never more than the server accepted.
    expect(sentDuring).toBeGreaterThan(0);
    expect(sentDuring).toBeLessThanOrEqual(acceptedDuring);
    expect(acceptedDuring).toBeLessThan(all);

    await waitUntil(
      () => server.messages.length >= good + flaky.length,
      'every deliverable message',
      120_000,
      100,
    );
    await queueIdle(producer, 120_000);
    const after = await Promise.all(ports.map(scrape));
    const sent = total(after, 'mailroom_messages_sent_total');
    const batchCount = total(after, 'mailroom_batches_total');
    const connections = total(after, 'mailroom_smtp_connections_opened_total');
    console.log(
      `[metrics] mid-drain sent=${sentDuring} (server had ${acceptedDuring}); end: sent=${sent} ` +
        `server=${server.messages.length} failed{rejected}=${total(after, 'mailroom_messages_failed_total', { reason: 'rejected' })} ` +
        `retried=${total(after, 'mailroom_messages_retried_total')} batches=${batchCount} (jobs ${batches}) ` +
        `connections=${connections} rate-limit waits=${total(after, 'mailroom_rate_limit_waits_total')} ` +
        `(${total(after, 'mailroom_rate_limit_wait_seconds_total').toFixed(2)} s)`,
    );
    expect(sent).toBe(server.messages.length);
    expect(sent).toBe(good + flaky.length);
    expect(total(after, 'mailroom_messages_failed_total', { reason: 'rejected' })).toBe(rejected.length);
    expect(total(after, 'mailroom_messages_failed_total')).toBe(rejected.length);
    // Each flaky message was deferred once (451) and retried with its batch.
    expect(total(after, 'mailroom_messages_retried_total', { reason: 'deferred' })).toBeGreaterThanOrEqual(
      flaky.length,
    );
    expect(total(after, 'mailroom_batches_total', { outcome: 'retry' })).toBeGreaterThanOrEqual(1);
    expect(total(after, 'mailroom_batches_total', { outcome: 'completed' })).toBe(batches);
    // Every processing of a batch is timed once; every sent message has a latency.
    expect(total(after, 'mailroom_batch_duration_seconds_count')).toBe(batchCount);
    expect(total(after, 'mailroom_batch_duration_seconds_sum')).toBeGreaterThan(0);
    expect(total(after, 'mailroom_batch_duration_seconds_bucket', { le: '+Inf' })).toBe(batchCount);
    expect(total(after, 'mailroom_message_latency_seconds_count')).toBe(sent);
    expect(total(after, 'mailroom_message_latency_seconds_bucket', { le: '+Inf' })).toBe(sent);
    expect(total(after, 'mailroom_message_latency_seconds_sum')).toBeGreaterThan(0);
    // Connections opened are what the server saw: at least one per worker connection slot in use, at
    // most one per batch processing (open connections are reused by the next batch).
    expect(connections).toBeGreaterThanOrEqual(1);
    expect(connections).toBeLessThanOrEqual(batchCount);
    expect(connections).toBe(server.connectionCount);
    expect(total(after, 'mailroom_rate_limit_waits_total')).toBeGreaterThan(0);
    expect(total(after, 'mailroom_rate_limit_wait_seconds_total')).toBeGreaterThan(0);
    expect(total(after, 'mailroom_batches_in_flight')).toBe(0);
    // Histograms carry their HELP and TYPE lines.
    expect(after[0]).toContain('# TYPE mailroom_batch_duration_seconds histogram');
    expect(after[0]).toContain('# TYPE mailroom_message_latency_seconds histogram');
  }, 240_000);

  it('answers /healthz, /readyz until SIGTERM starts the shutdown, 404 for unknown paths and 405 for POST', async () => {
    // The message to `held@` stays on the wire until released, so the shutdown is observably in progress.
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let holding = false;
    const { server, producer, spawn } = await rig({
      async onData(message) {
        if (message.to.includes('held@example.com')) {
          holding = true;
          await released;
        }
      },
    });
    harness.onCleanup(async () => release());
    // A window of 1: `after@` is not taken while `held@` is on the wire, so "nothing after the
    // shutdown starts" is exact (with a wider window the messages already in flight finish too).
    const { worker, port } = await spawn({ MAILROOM_SHUTDOWN_TIMEOUT: '60s', MAILROOM_PIPELINE_WINDOW: '1' });

    expect((await get(port, '/healthz')).status).toBe(200);
    await waitUntil(async () => (await get(port, '/readyz')).status === 200, '/readyz 200', 30_000, 100);
    const unknown = await get(port, '/nope');
    expect(unknown.status).toBe(404);
    expect(await unknown.text()).toContain('/metrics');
    expect((await get(port, '/metrics', { method: 'POST' })).status).toBe(405);
    expect((await get(port, '/readyz?verbose=1')).status).toBe(200);

    await producer.enqueue(newsletter(['held@example.com', 'after@example.com']));
    await waitUntil(() => holding, 'the held message to reach DATA', 30_000);
    worker.kill('SIGTERM');
    await worker.waitForLog((line) => line.msg === 'signal received', 30_000);
    // Shutting down (the held message is still on the wire): alive, but not ready.
    const readiness = await get(port, '/readyz');
    expect(readiness.status).toBe(503);
    expect((await get(port, '/healthz')).status).toBe(200);
    release();
    expect(await worker.exited).toEqual({ code: 0, signal: null });
    // Gone with the process.
    await expect(get(port, '/readyz')).rejects.toThrow();
    expect(server.messages.map((message) => message.to[0])).toEqual(['held@example.com']);
  }, 120_000);
});

describe('backlog gauges', () => {
  it('show the batches and messages waiting and active, and the running campaign, during a drain; zero after', async () => {
    // Every message is held at DATA until the gate opens: mid-drain is a state, not a moment.
    let open = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let holding = 0;
    const { server, producer, queue, spawn } = await rig({
      async onData() {
        holding++;
        await gate;
      },
    });
    harness.onCleanup(async () => open());
    // 300 recipients in batches of 50: 6 batches, of which the worker's 2 connections take 2.
    const campaign = await startCampaign(producer, {
      id: 'june',
      template: { subject: 'News', text: 'Hello {{ email }}', fromEmail: 'news@example.com' },
      recipients: Array.from({ length: 300 }, (_, index) => `reader${index}@example.com`),
    });
    await campaign.enqueued;
    const { port } = await spawn();
    await waitUntil(() => holding >= 2, 'both connections to hold a message at DATA');

    const during = [await scrape(port)];
    const gauge = (name: string, labels: Record<string, string>) => total(during, name, { queue, ...labels });
    expect(gauge('mailroom_queue_batches', { state: 'waiting' })).toBe(4);
    expect(gauge('mailroom_queue_batches', { state: 'active' })).toBe(2);
    expect(gauge('mailroom_queue_messages', { state: 'waiting' })).toBe(200);
    expect(gauge('mailroom_queue_messages', { state: 'active' })).toBe(100);
    expect(gauge('mailroom_queue_batches', { state: 'delayed' })).toBe(0);
    expect(gauge('mailroom_queue_batches', { state: 'failed' })).toBe(0);
    expect(gauge('mailroom_campaign_messages', { campaign: 'june', state: 'pending' })).toBe(300);
    expect(samples(during[0] as string, 'mailroom_campaign_messages')).toHaveLength(3);
    expect(during[0]).toContain('# TYPE mailroom_queue_batches gauge');

    open();
    await waitUntil(
      async () => (await campaignStatus(producer, 'june')).state === 'completed',
      'the campaign to complete',
      120_000,
      100,
    );
    await queueIdle(producer, 120_000);
    const after = [await scrape(port)];
    expect(server.messages).toHaveLength(300);
    for (const state of ['waiting', 'delayed', 'active', 'failed']) {
      expect(
        samples(after[0] as string, 'mailroom_queue_batches').filter((s) => s.labels.state === state),
      ).toEqual([{ labels: { queue, state }, value: 0 }]);
      expect(total(after, 'mailroom_queue_messages', { queue, state })).toBe(0);
    }
    // A completed campaign no longer runs: its gauges are gone, not frozen.
    expect(samples(after[0] as string, 'mailroom_campaign_messages')).toEqual([]);
  }, 240_000);
});
