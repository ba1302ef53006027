/**
 * Campaigns end to end (issue 5): recipients streamed from an async generator through real Redis and
 * real workers (in-process, or `mailroom worker` processes where memory or crashes matter) into a
 * real SMTP server. Proves bounded memory and bounded waiting jobs on a 100,000-recipient drain,
 * case-insensitive deduplication, pause/resume/cancel, progress readable from another process,
 * per-recipient rendering and unsubscribe headers, restart-as-resume, and a worker SIGKILL.
 * The figures the issue asks for (peak memory, peak waiting jobs, duplicates) are printed.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { EmailMultiAlternatives, toWire, ValidationError } from '@mailroom/core';
import {
  type CampaignOptions,
  type CampaignRecipient,
  type CampaignStatus,
  campaignStatus,
  cancelCampaign,
  createProducer,
  listCampaigns,
  type Producer,
  type ProducerOptions,
  pauseCampaign,
  resumeCampaign,
  startCampaign,
} from '@mailroom/producer';
import { createWorker, type MailWorker, type PrometheusMetrics, type WorkerOptions } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import {
  duplicateSends,
  FAST_RECOVERY_ENV,
  type QueueRig,
  queueIdle,
  queueRig,
  receiptsPerRecipient,
  useHarness,
} from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import { parse, type SmtpServerOptions, type SmtpTestServer } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';

const harness = useHarness();

const MB = 1024 * 1024;

interface Rig extends QueueRig {
  /** A second producer, as another process would have: it only reads status. */
  observer: Producer;
  /** Accept times of every message, in order (ms epoch). */
  arrivals: number[];
  /** Starts an in-process worker on the queue. */
  worker(options?: Partial<WorkerOptions>): MailWorker;
}

async function rig(
  serverOptions: SmtpServerOptions = {},
  batchSize = 50,
  producerOptions: Partial<ProducerOptions> = {},
): Promise<Rig> {
  const arrivals: number[] = [];
  const onData = serverOptions.onData;
  const base = await queueRig(harness, {
    label: 'campaign',
    server: {
      ...serverOptions,
      async onData(message, session) {
        const refusal = await onData?.(message, session);
        if (!refusal) arrivals.push(Date.now());
        return refusal;
      },
    },
    producer: { batchSize, ...producerOptions },
    env: { ...FAST_RECOVERY_ENV, LOG_LEVEL: 'warn' },
  });
  const { queue, server } = base;
  const observer = createProducer({ redis: REDIS_URL, queue, logger: captureLogger().logger });
  const workers: MailWorker[] = [];
  harness.onCleanup(() => observer.close());
  harness.onCleanup(() => Promise.all(workers.map((worker) => worker.close())));
  return {
    ...base,
    observer,
    arrivals,
    worker(options = {}) {
      const worker = createWorker({
        redis: REDIS_URL,
        queue,
        backend: 'smtp',
        backendOptions: { host: server.host, port: server.port },
        backoff: { delay: 20, maxDelay: 200 },
        logger: captureLogger('warn').logger,
        ...options,
      });
      workers.push(worker);
      return worker;
    },
  };
}

const template: CampaignOptions['template'] = {
  subject: 'Issue 7 for {{ email }}',
  text: 'Hello {{ email }}, here is issue 7.',
  fromEmail: 'news@example.com',
};

async function* addresses(count: number, prefix = 'user'): AsyncGenerator<CampaignRecipient> {
  for (let index = 0; index < count; index++) yield `${prefix}${index}@example.com`;
}

/** Messages received per recipient, case-insensitively (as campaigns deduplicate). */
function receipts(server: SmtpTestServer): Map<string, number> {
  return receiptsPerRecipient(server, { ignoreCase: true });
}

async function waitForState(
  observer: Producer,
  id: string,
  state: CampaignStatus['state'],
  timeoutMs = 60_000,
): Promise<CampaignStatus> {
  let last: CampaignStatus | undefined;
  await waitUntil(
    async () => {
      last = await campaignStatus(observer, id);
      return last.state === state;
    },
    `campaign ${id} to be ${state}`,
    timeoutMs,
    100,
  );
  return last as CampaignStatus;
}

const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);

function pausedBatches(worker: MailWorker): Promise<number> {
  return (worker.metrics as PrometheusMetrics).batches
    .get()
    .then((metric) => metric.values.find((value) => value.labels.outcome === 'paused')?.value ?? 0);
}

/**
 * A `gc()` for this process, to measure retained memory rather than garbage not yet collected.
 * (V8 allows exposing it at run time; vitest starts the test process without --expose-gc.)
 */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** Heap a process needs to hold `count` rendered campaign messages (and their wire form), measured on 10,000. */
function holdingCost(gc: () => void, count: number): number {
  const sample = 10_000;
  gc();
  const before = process.memoryUsage().heapUsed;
  const held: unknown[] = [];
  for (let index = 0; index < sample; index++) {
    const email = `user${index}@example.com`;
    const message = new EmailMultiAlternatives({
      subject: `Issue 7 for ${email}`,
      body: `Hello ${email}, here is issue 7.`,
      fromEmail: template.fromEmail,
      to: [email],
    });
    held.push([message, toWire(message)]);
  }
  gc();
  const cost = ((process.memoryUsage().heapUsed - before) * count) / sample;
  held.length = 0;
  return cost;
}

describe('a 100,000-recipient campaign', () => {
  it('drains to one message per distinct recipient with bounded producer memory and bounded waiting jobs', async () => {
    const total = 100_000;
    const batchSize = 50;
    const maxPending = 1000;
    const gc = exposeGc();
    // Count in the hook and forget what the server recorded: the SMTP peer runs in this process, and
    // 100k raw messages kept by it would hide the producer's own memory.
    const perRecipient = new Uint8Array(total);
    let strays = 0;
    let variantSends = 0;
    const { server, producer, observer, spawn } = await rig(
      {
        onData(message) {
          for (const to of message.to) {
            const match = /^user(\d+)@example\.com$/i.exec(to);
            const index = match ? Number(match[1]) : -1;
            if (index < 0 || index >= total) strays++;
            else perRecipient[index] = Math.min(255, (perRecipient[index] as number) + 1);
            if (to !== to.toLowerCase()) variantSends++;
          }
        },
      },
      batchSize,
    );
    // The workers are processes of their own, so that this process's memory is the producer's
    // (plus the SMTP peer's, which forgets every message as it is counted).
    await spawn();
    await spawn();

    // Case-variant duplicates: one right after its original (same chunk), one ~1000 recipients later
    // (another chunk, so only the Redis-side seen set can catch it).
    let injected = 0;
    async function* recipients(): AsyncGenerator<CampaignRecipient> {
      for (let index = 0; index < total; index++) {
        yield `user${index}@example.com`;
        if (index % 1000 === 5) {
          injected++;
          yield `User${index}@Example.com`;
        }
        if (index >= 1000 && index % 1000 === 500) {
          injected++;
          yield { email: `  USER${index - 1000}@EXAMPLE.COM `, name: 'Shouting Twin' };
        }
      }
    }

    const queue = producer.getQueue();
    gc();
    const baseline = process.memoryUsage();
    let peakHeap = baseline.heapUsed;
    let peakRetained = baseline.heapUsed;
    let peakRss = baseline.rss;
    let peakWaiting = 0;
    let sampling = false;
    let tick = 0;
    const sampler = setInterval(() => {
      server.clear();
      // Every 2 s, what survives a full collection: the memory the producer actually holds.
      if (++tick % 20 === 0) {
        gc();
        peakRetained = Math.max(peakRetained, process.memoryUsage().heapUsed);
      }
      const memory = process.memoryUsage();
      peakHeap = Math.max(peakHeap, memory.heapUsed);
      peakRss = Math.max(peakRss, memory.rss);
      if (sampling) return;
      sampling = true;
      queue
        .getJobCounts('waiting', 'prioritized', 'delayed')
        .then((counts) => {
          peakWaiting = Math.max(
            peakWaiting,
            (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0),
          );
        })
        .catch(() => {})
        .finally(() => {
          sampling = false;
        });
    }, 100);
    harness.onCleanup(async () => clearInterval(sampler));

    const started = Date.now();
    const handle = await startCampaign(producer, {
      id: 'big',
      template,
      recipients: recipients(),
      maxPending,
      expectedTotal: total,
    });
    const enqueued = await handle.enqueued;
    const enqueueSeconds = (Date.now() - started) / 1000;
    const status = await waitForState(observer, 'big', 'completed', 240_000);
    const seconds = (Date.now() - started) / 1000;
    clearInterval(sampler);
    const holding = holdingCost(gc, total);

    let once = 0;
    let extra = 0;
    let never = 0;
    for (const count of perRecipient) {
      if (count === 1) once++;
      else if (count === 0) never++;
      else extra += count - 1;
    }
    const bound = maxPending / batchSize;
    const mb = (bytes: number) => `${(bytes / MB).toFixed(1)} MB`;
    console.log(
      `[campaign-100k] ${total} recipients + ${injected} case-variant duplicates in ${seconds.toFixed(1)} s ` +
        `(enqueueing done at ${enqueueSeconds.toFixed(1)} s): one message=${once} none=${never} extra=${extra} ` +
        `to-duplicates=${variantSends} strays=${strays}\n` +
        `[campaign-100k] producer process: retained heap +${mb(peakRetained - baseline.heapUsed)} ` +
        `(peak heapUsed +${mb(peakHeap - baseline.heapUsed)} incl. garbage, baseline ${mb(baseline.heapUsed)}; ` +
        `peak rss +${mb(peakRss - baseline.rss)}, baseline ${mb(baseline.rss)}); ` +
        `holding ${total} rendered messages would take ~${mb(holding)}\n` +
        `[campaign-100k] peak waiting jobs ${peakWaiting} (maxPending/batchSize = ${bound})`,
    );
    expect(enqueued).toMatchObject({
      total,
      queued: total,
      invalid: 0,
      duplicates: injected,
      stopped: 'done',
    });
    expect(once).toBe(total);
    expect(variantSends).toBe(0);
    expect(strays).toBe(0);
    expect(status).toMatchObject({ total, sent: total, failed: 0, duplicates: injected, remaining: 0 });
    // Backpressure: never more than maxPending messages (maxPending / batchSize jobs) waiting, plus
    // the partial batches a chunk can end with.
    expect(peakWaiting).toBeLessThanOrEqual(bound + 2);
    // What the producer holds stays a small fraction of the whole list.
    expect(peakRetained - baseline.heapUsed).toBeLessThan(holding / 4);
    expect(peakHeap - baseline.heapUsed).toBeLessThan(150 * MB);
  }, 300_000);
});

describe('campaign pause, resume and cancel', () => {
  it('sends nothing while paused (after the messages on the wire), then completes on resume with one message each', async () => {
    const total = 1500;
    const { server, producer, observer, arrivals, worker } = await rig({ replyDelayMs: 2 });
    const workers = [worker({ concurrency: 2 }), worker({ concurrency: 2 })];
    const handle = await startCampaign(producer, { id: 'pausable', template, recipients: addresses(total) });
    await waitUntil(() => arrivals.length >= 200, '200 messages', 60_000);

    expect(await pauseCampaign(observer, 'pausable')).toBe('paused');
    const pausedAt = Date.now();
    // Settling: each connection may finish the message it has on the wire.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const settled = Date.now();
    // The workers park every batch of the paused campaign (delayed, nothing waiting or active)...
    let parked = 0;
    await waitUntil(
      async () => {
        const counts = await producer.getQueue().getJobCounts('waiting', 'active', 'prioritized', 'delayed');
        parked = counts.delayed ?? 0;
        return counts.waiting === 0 && counts.active === 0 && counts.prioritized === 0 && parked > 0;
      },
      'every batch to be parked',
      30_000,
      100,
    );
    // ...and then look at each parked batch again at least once (pausePoll), still without sending.
    const before = sum(await Promise.all(workers.map(pausedBatches)));
    await waitUntil(
      async () => sum(await Promise.all(workers.map(pausedBatches))) >= before + parked,
      'every parked batch to be looked at again',
      30_000,
      100,
    );
    expect((await campaignStatus(observer, 'pausable')).state).toBe('paused');
    const resumedAt = Date.now();
    const sentWhilePaused = arrivals.filter((at) => at >= settled && at < resumedAt).length;
    const sentWhileSettling = arrivals.filter((at) => at >= pausedAt && at < settled).length;
    const receivedAtResume = arrivals.filter((at) => at < resumedAt).length;
    expect(await resumeCampaign(observer, 'pausable')).toBe('running');

    const status = await waitForState(observer, 'pausable', 'completed', 120_000);
    const counts = receipts(server);
    console.log(
      `[pause] paused after ${receivedAtResume - sentWhileSettling - sentWhilePaused} messages; ` +
        `${sentWhileSettling} finished while settling, ${sentWhilePaused} during the pause (${resumedAt - settled} ms, ` +
        `${parked} batches parked); ` +
        `${counts.size}/${total} recipients, duplicates=${duplicateSends(counts)}`,
    );
    expect(sentWhilePaused).toBe(0);
    // The pause held back real work.
    expect(receivedAtResume).toBeLessThan(total);
    expect((await handle.enqueued).stopped).toBe('done');
    expect(counts.size).toBe(total);
    expect(duplicateSends(counts)).toBe(0);
    expect(status).toMatchObject({ total, sent: total, failed: 0, cancelled: 0, remaining: 0 });
  }, 180_000);

  it('on cancel sends nothing more, stops reading recipients, and accounts for every recipient', async () => {
    const total = 3000;
    const { server, producer, observer, arrivals, worker } = await rig({ replyDelayMs: 2 });
    worker({ concurrency: 2 });
    worker({ concurrency: 2 });
    const handle = await startCampaign(producer, { id: 'doomed', template, recipients: addresses(total) });
    await waitUntil(() => arrivals.length >= 200, '200 messages', 60_000);

    expect(await cancelCampaign(observer, 'doomed')).toBe('cancelled');
    const cancelledAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const settled = Date.now();
    const enqueued = await handle.enqueued;
    // The workers take what is left on the queue and settle it as cancelled.
    await queueIdle(producer);
    const status = await campaignStatus(observer, 'doomed');
    const counts = receipts(server);
    console.log(
      `[cancel] read ${enqueued.total}/${total} recipients; sent=${status.sent} cancelled=${status.cancelled} ` +
        `failed=${status.failed}; ${arrivals.filter((at) => at >= cancelledAt && at < settled).length} finished while settling`,
    );
    expect(enqueued.stopped).toBe('cancelled');
    expect(arrivals.filter((at) => at >= settled)).toEqual([]);
    expect(status.state).toBe('cancelled');
    expect(status.total).toBe(enqueued.total);
    expect(status.total).toBeLessThan(total);
    expect(status.sent + status.cancelled + status.failed).toBe(status.total);
    expect(status.cancelled).toBeGreaterThan(0);
    expect(status.remaining).toBe(0);
    expect(status.sent).toBe(server.messages.length);
    expect(duplicateSends(counts)).toBe(0);
    // Cancelled stays cancelled: resume does not bring it back.
    expect(await resumeCampaign(observer, 'doomed')).toBe('cancelled');
  }, 180_000);
});

describe('campaign progress', () => {
  it('is readable from another producer during and after the drain: counts, failures by reason, rate, ETA, state', async () => {
    const good = 800;
    const rejected = ['reject1@example.com', 'reject2@example.com', 'reject3@example.com'];
    const invalid = ['broken@', 'two words@example.com', 'injected@example.com\r\nBcc: victim@example.com'];
    const { server, producer, observer, worker } = await rig({
      replyDelayMs: 3,
      onRcpt: (address) =>
        address.startsWith('reject') ? { code: 550, message: 'No such user' } : undefined,
    });
    worker({ concurrency: 2 });
    async function* recipients(): AsyncGenerator<CampaignRecipient> {
      for (let index = 0; index < good; index++) {
        yield `reader${index}@example.com`;
        if (index === 10) yield* rejected;
        if (index === 20) yield* invalid;
      }
    }
    const total = good + rejected.length + invalid.length;
    await startCampaign(producer, {
      id: 'watched',
      name: 'Issue 7',
      template,
      recipients: recipients(),
      expectedTotal: total,
    });

    // Mid-drain, as `mailroom campaign status` in another process would see it.
    let during: CampaignStatus | undefined;
    await waitUntil(
      async () => {
        const status = await campaignStatus(observer, 'watched');
        if (status.state === 'completed')
          throw new Error('the campaign finished before a mid-drain status was read');
        if (status.sent > 0 && status.remaining > 0 && status.rate > 0) during = status;
        return during !== undefined;
      },
      'a mid-drain status with a rate',
      60_000,
      100,
    );
    const mid = during as CampaignStatus;
    expect(mid.state).toBe('running');
    expect(mid.name).toBe('Issue 7');
    expect(mid.expectedTotal).toBe(total);
    expect(mid.sent).toBeLessThan(good);
    expect(mid.remaining).toBe(Math.max(mid.total, total) - mid.sent - mid.failed - mid.cancelled);
    expect(mid.etaSeconds).toBeGreaterThan(0);
    expect(mid.etaSeconds).toBe(Math.ceil(mid.remaining / mid.rate));

    const after = await waitForState(observer, 'watched', 'completed', 120_000);
    expect(after).toMatchObject({
      total,
      queued: good + rejected.length,
      sent: good,
      failed: rejected.length + invalid.length,
      failedByReason: { rejected: rejected.length, invalid: invalid.length },
      cancelled: 0,
      remaining: 0,
      etaSeconds: 0,
      enqueueFinished: true,
    });
    const counts = receipts(server);
    expect(counts.size).toBe(good);
    for (const address of rejected) expect(counts.has(address)).toBe(false);
    expect(
      [...counts.keys()].some((address) => address.includes('broken') || address.includes('victim')),
    ).toBe(false);
    expect(duplicateSends(counts)).toBe(0);
    expect(await listCampaigns(observer)).toEqual(['watched']);
  }, 180_000);
});

describe('campaign validation', () => {
  it('counts a recipient whose personalised message is over maxMessageBytes as invalid and sends the others', async () => {
    const { server, producer, observer, worker } = await rig({}, 50, { maxMessageBytes: 4096 });
    worker();
    const handle = await startCampaign(producer, {
      id: 'oversized',
      template: { ...template, text: 'Hello {{ email }}. {{ bio }}' },
      recipients: [
        { email: 'short@example.com', bio: 'Short.' },
        { email: 'long@example.com', bio: 'x'.repeat(10_000) },
        { email: 'also-short@example.com', bio: 'Also short.' },
      ],
    });
    expect(await handle.enqueued).toMatchObject({ total: 3, queued: 2, invalid: 1, stopped: 'done' });
    const status = await waitForState(observer, 'oversized', 'completed');
    expect(status).toMatchObject({ total: 3, sent: 2, failed: 1, failedByReason: { invalid: 1 } });
    expect(server.messages.map((message) => message.to[0]).sort()).toEqual([
      'also-short@example.com',
      'short@example.com',
    ]);
  }, 60_000);

  it.each([
    ['fromEmail', { fromEmail: 'not an address' }, 'template.fromEmail'],
    ['replyTo', { replyTo: ['reply@@example.com'] }, 'template.replyTo'],
    ['a header name', { headers: { 'Bad Header': 'x' } }, 'template.headers'],
    [
      'a fixed header value',
      { headers: { 'X-Campaign': 'a\r\nBcc: victim@example.com' } },
      'template.headers',
    ],
  ])('rejects a template with an invalid %s before registering anything', async (_label, change, field) => {
    const { producer } = await rig();
    const started = startCampaign(producer, {
      id: 'bad-template',
      template: { ...template, ...change },
      recipients: ['a@example.com'],
    });
    await expect(started).rejects.toBeInstanceOf(ValidationError);
    await expect(started).rejects.toMatchObject({ field: expect.stringContaining(field) });
    expect(await listCampaigns(producer)).toEqual([]);
  });
});

describe('campaign rendering', () => {
  function header(lines: readonly { key: string; line: string }[], name: string): string | undefined {
    const found = lines.find((line) => line.key === name.toLowerCase());
    // Unfold (RFC 5322 §2.2.3) and drop the field name.
    return found?.line.replace(/\r?\n[ \t]/g, ' ').replace(/^[^:]*:\s*/, '');
  }

  it('personalises subject, text and html per recipient, escaping values in html, with unsubscribe headers', async () => {
    const { server, producer, observer, worker } = await rig();
    worker();
    // `footer` is trusted HTML ({{{ }}}); everything else is the recipient's own data.
    const footer = '<hr>';
    const recipients: CampaignRecipient[] = [
      { email: 'ada@example.com', name: 'Ada', plan: { name: 'Gold', renews: '2025-01-01' }, footer },
      { email: 'tom+news@example.com', name: 'Tom <b>& "Jerry"</b>', plan: { name: "O'Brien & Co" }, footer },
      { email: 'eve@example.com', footer },
    ];
    await startCampaign(producer, {
      id: 'personal',
      template: {
        subject: 'Your {{ plan.name }} plan, {{ name }}',
        text: 'Dear {{ name }},\nyour {{ plan.name }} plan renews on {{ plan.renews }}.',
        html: '<p>Dear {{ name }}, your <b>{{ plan.name }}</b> plan.</p>{{{ footer }}}',
        fromEmail: 'News <news@example.com>',
        headers: { 'X-Plan': '{{ plan.name }}' },
      },
      recipients,
      // Tom has no plan.renews and Eve no name or plan: rendered empty, as Django templates do, under
      // the explicit policy (the default, 'error', counts them invalid: campaign-check.test.ts).
      emptyValues: 'allow',
      unsubscribe: {
        url: 'https://example.com/unsubscribe?email={{ email }}&list=7',
        mailto: 'unsubscribe@example.com?subject=unsubscribe%20{{ email }}',
      },
    });
    await waitForState(observer, 'personal', 'completed');
    expect(server.messages).toHaveLength(3);
    const byRecipient = new Map(server.messages.map((message) => [message.to[0], message]));

    const tom = await parse((byRecipient.get('tom+news@example.com') as { raw: Buffer }).raw);
    expect(tom.subject).toBe(`Your O'Brien & Co plan, Tom <b>& "Jerry"</b>`);
    expect(tom.text?.trim()).toBe(`Dear Tom <b>& "Jerry"</b>,\nyour O'Brien & Co plan renews on .`);
    expect(String(tom.html).trimEnd()).toBe(
      '<p>Dear Tom &lt;b&gt;&amp; &quot;Jerry&quot;&lt;/b&gt;, your <b>O&#39;Brien &amp; Co</b> plan.</p><hr>',
    );
    expect(tom.to && !Array.isArray(tom.to) ? tom.to.value[0] : undefined).toMatchObject({
      address: 'tom+news@example.com',
      name: 'Tom <b>& "Jerry"</b>',
    });
    expect(header(tom.headerLines, 'X-Plan')).toBe("O'Brien & Co");
    expect(header(tom.headerLines, 'List-Unsubscribe')).toBe(
      '<mailto:unsubscribe@example.com?subject=unsubscribe%20tom%2Bnews%40example.com>, ' +
        '<https://example.com/unsubscribe?email=tom%2Bnews%40example.com&list=7>',
    );
    // RFC 8058 §3.1: one-click needs exactly this header next to an https List-Unsubscribe.
    expect(header(tom.headerLines, 'List-Unsubscribe-Post')).toBe('List-Unsubscribe=One-Click');

    const ada = await parse(byRecipient.get('ada@example.com')?.raw ?? '');
    expect(ada.subject).toBe('Your Gold plan, Ada');
    expect(ada.text?.trim()).toBe('Dear Ada,\nyour Gold plan renews on 2025-01-01.');
    const eve = await parse(byRecipient.get('eve@example.com')?.raw ?? '');
    expect(eve.subject?.trim()).toBe('Your  plan,');
    expect(String(eve.html).trimEnd()).toBe('<p>Dear , your <b></b> plan.</p><hr>');
    expect(header(eve.headerLines, 'List-Unsubscribe')).toContain('email=eve%40example.com&list=7');
  }, 60_000);

  it('adds no List-Unsubscribe without an unsubscribe option, and no one-click header with a mailto only', async () => {
    const { server, producer, observer, worker } = await rig();
    worker();
    await startCampaign(producer, { id: 'plain', template, recipients: ['plain@example.com'] });
    await startCampaign(producer, {
      id: 'mailto',
      template,
      recipients: ['mailto@example.com'],
      unsubscribe: { mailto: 'leave@example.com' },
    });
    await waitForState(observer, 'plain', 'completed');
    await waitForState(observer, 'mailto', 'completed');
    const plain = await parse(
      server.messages.find((message) => message.to[0] === 'plain@example.com')?.raw ?? '',
    );
    expect(plain.headerLines.map((line) => line.key)).not.toContain('list-unsubscribe');
    expect(plain.headerLines.map((line) => line.key)).not.toContain('list-unsubscribe-post');
    const mailto = await parse(
      server.messages.find((message) => message.to[0] === 'mailto@example.com')?.raw ?? '',
    );
    expect(header(mailto.headerLines, 'List-Unsubscribe')).toBe('<mailto:leave@example.com>');
    expect(mailto.headerLines.map((line) => line.key)).not.toContain('list-unsubscribe-post');
  }, 60_000);

  it.each(['http://example.com/unsubscribe', 'javascript:alert(1)', '//example.com/unsubscribe'])(
    'rejects the non-https unsubscribe URL %s before registering anything',
    async (url) => {
      const { producer } = await rig();
      const started = startCampaign(producer, {
        id: 'insecure',
        template,
        recipients: ['a@example.com'],
        unsubscribe: { url },
      });
      await expect(started).rejects.toBeInstanceOf(ValidationError);
      await expect(started).rejects.toMatchObject({ field: 'unsubscribe.url' });
      expect(await listCampaigns(producer)).toEqual([]);
    },
  );

  it('rejects a malformed placeholder in the template with a ValidationError naming the template field', async () => {
    const { producer } = await rig();
    const started = startCampaign(producer, {
      template: { ...template, html: '<p>{{ name </p>' },
      recipients: ['a@example.com'],
    });
    await expect(started).rejects.toMatchObject({ name: 'ValidationError', field: 'template.html' });
  });
});

describe('campaign restart', () => {
  it('sends nothing again when a finished campaign is started again with the same id, and only the new recipients of a longer list', async () => {
    const total = 300;
    const { server, producer, observer, worker } = await rig();
    worker({ concurrency: 2 });
    await startCampaign(producer, { id: 'weekly', template, recipients: addresses(total), chunkSize: 100 });
    const first = await waitForState(observer, 'weekly', 'completed');
    expect(server.messages).toHaveLength(total);

    const again = await startCampaign(producer, {
      id: 'weekly',
      template,
      recipients: addresses(total),
      chunkSize: 100,
    });
    expect(await again.enqueued).toMatchObject({ queued: 0, stopped: 'done' });
    await queueIdle(producer);
    const second = await waitForState(observer, 'weekly', 'completed');
    expect(server.messages).toHaveLength(total);
    expect(second).toMatchObject({
      total: first.total,
      queued: first.queued,
      sent: first.sent,
      duplicates: first.duplicates,
    });

    // The same list with 50 more at the end (a resumed import): only the 50 go out.
    const longer = await startCampaign(producer, {
      id: 'weekly',
      template,
      recipients: addresses(total + 50),
      chunkSize: 100,
    });
    expect(await longer.enqueued).toMatchObject({ queued: 50 });
    const third = await waitForState(observer, 'weekly', 'completed');
    const counts = receipts(server);
    expect(counts.size).toBe(total + 50);
    expect(duplicateSends(counts)).toBe(0);
    expect(third).toMatchObject({ total: total + 50, sent: total + 50 });
  }, 120_000);

  it('records why reading the recipients failed, shows the campaign interrupted, and resumes on a restart', async () => {
    const { server, producer, observer, worker } = await rig();
    worker();
    async function* brokenImport(): AsyncGenerator<CampaignRecipient> {
      yield* addresses(200);
      throw new Error('lost the connection to the CRM export');
    }
    const handle = await startCampaign(producer, {
      id: 'crm',
      template,
      recipients: brokenImport(),
      chunkSize: 100,
    });
    await expect(handle.enqueued).rejects.toThrow('lost the connection to the CRM export');
    const interrupted = await waitForState(observer, 'crm', 'interrupted');
    expect(interrupted).toMatchObject({ sent: 200, enqueueError: 'lost the connection to the CRM export' });

    const resumed = await startCampaign(producer, {
      id: 'crm',
      template,
      recipients: addresses(300),
      chunkSize: 100,
    });
    expect(await resumed.enqueued).toMatchObject({ queued: 100, stopped: 'done' });
    const done = await waitForState(observer, 'crm', 'completed');
    expect(done).toMatchObject({ total: 300, sent: 300, enqueueError: undefined });
    expect(duplicateSends(receipts(server))).toBe(0);
  }, 60_000);

  it('counts every duplicate of a list that repeats itself, chunk after chunk', async () => {
    const { producer, observer, worker } = await rig();
    worker();
    async function* twice(): AsyncGenerator<CampaignRecipient> {
      yield* addresses(300);
      for await (const address of addresses(300)) yield (address as string).toUpperCase();
    }
    const handle = await startCampaign(producer, {
      id: 'echo',
      template,
      recipients: twice(),
      chunkSize: 100,
    });
    expect(await handle.enqueued).toMatchObject({ total: 300, queued: 300, duplicates: 300 });
    expect(await waitForState(observer, 'echo', 'completed')).toMatchObject({
      total: 300,
      sent: 300,
      duplicates: 300,
    });
  }, 60_000);
});

describe('campaign across a worker crash', () => {
  it('survives SIGKILL of a worker process mid-drain: everyone gets one message, at most a pipeline window per connection twice', async () => {
    const total = 3000;
    const concurrency = 2;
    const window = 4;
    const env = { MAILROOM_CONCURRENCY: String(concurrency), MAILROOM_PIPELINE_WINDOW: String(window) };
    const { server, producer, observer, spawn } = await rig({ replyDelayMs: 8 });
    const victim = await spawn(env);
    await spawn(env);
    await startCampaign(producer, { id: 'crash', template, recipients: addresses(total) });
    await waitUntil(() => server.messages.length >= 1000, '1000 messages', 120_000);
    victim.kill('SIGKILL');
    await victim.exited;
    await spawn(env);
    const status = await waitForState(observer, 'crash', 'completed', 180_000);
    const counts = receipts(server);
    const duplicates = duplicateSends(counts);
    console.log(
      `[campaign-crash] recipients=${counts.size}/${total} messages=${server.messages.length} duplicates=${duplicates} ` +
        `status.sent=${status.sent}`,
    );
    expect(counts.size).toBe(total);
    // Sent but not yet recorded at the kill: at most the window on each of the victim's connections.
    expect(duplicates).toBeLessThanOrEqual(concurrency * window);
    // The ledger counts each message once, whatever the SMTP server saw twice.
    expect(status).toMatchObject({ total, sent: total, failed: 0, remaining: 0 });
    expect(server.messages.length).toBe(total + duplicates);
  }, 240_000);
});
