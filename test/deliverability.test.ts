/**
 * What bulk senders need end to end, through real Redis, real workers (in-process) and a real SMTP
 * server: recipients refused as nonexistent (5.1.1) are suppressed and skipped by the next campaign
 * while policy refusals (5.7.1) are not; the one-click unsubscribe link of a real received message
 * (read with mailparser) works over real HTTP, and the next campaign skips the address.
 */
import {
  type CampaignOptions,
  campaignStatus,
  type Producer,
  SuppressionList,
  startCampaign,
} from '@mailroom/producer';
import { createWorker, type MailWorker, startUnsubscribeServer } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { FAST_RECOVERY_ENV, queueIdle, queueRig, useHarness } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import { parse, type SmtpServerOptions, type SmtpTestServer } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';

const harness = useHarness();
const SECRET = 'deliverability-secret-0123456789';

const template: CampaignOptions['template'] = {
  subject: 'News for {{ email }}',
  text: 'Hello {{ email }}\n\nUnsubscribe: {{ unsubscribe_url }}\n',
  fromEmail: 'news@example.com',
};

async function rig(server: SmtpServerOptions = {}) {
  const base = await queueRig(harness, { label: 'deliverability', server, env: FAST_RECOVERY_ENV });
  const workers: MailWorker[] = [];
  harness.onCleanup(() => Promise.all(workers.map((worker) => worker.close())));
  const worker = createWorker({
    redis: REDIS_URL,
    queue: base.queue,
    backend: 'smtp',
    backendOptions: { host: base.server.host, port: base.server.port },
    backoff: { delay: 20, maxDelay: 200 },
    logger: captureLogger('warn').logger,
  });
  workers.push(worker);
  await base.producer.ready();
  return { ...base, suppression: new SuppressionList(base.producer.redis, base.producer.keys) };
}

/** Runs a campaign to the end: every recipient read and every message settled. */
async function drain(producer: Producer, options: Omit<CampaignOptions, 'template'>) {
  const handle = await startCampaign(producer, { template, ...options });
  const progress = await handle.enqueued;
  await queueIdle(producer);
  await waitUntil(
    async () => (await campaignStatus(producer, handle.id)).state === 'completed',
    `campaign ${handle.id} completed`,
  );
  return { progress, status: await campaignStatus(producer, handle.id) };
}

/** Addresses the server accepted, lowercased, sorted. */
function delivered(server: SmtpTestServer): string[] {
  return server.messages.flatMap((message) => message.to.map((to) => to.toLowerCase())).sort();
}

describe('hard bounces', () => {
  it('suppresses recipients refused with 5.1.1, not those refused with 5.7.1, and the next campaign skips exactly the first', async () => {
    const list = Array.from({ length: 30 }, (_, index) => `user${index}@example.com`);
    const gone = new Set(list.filter((_, index) => index % 5 === 0)); // 6 nonexistent mailboxes
    const blocked = new Set(list.filter((_, index) => index % 5 === 1)); // 6 policy refusals
    const { producer, server, suppression } = await rig({
      onRcpt(address) {
        if (gone.has(address))
          return { code: 550, message: `5.1.1 <${address}>: Recipient address rejected: User unknown` };
        if (blocked.has(address))
          return { code: 550, message: '5.7.1 Message rejected due to content policy' };
        return undefined;
      },
    });
    const first = await drain(producer, { id: 'first', recipients: list });
    expect(first.status).toMatchObject({ total: 30, sent: 18, failed: 12, suppressed: 0 });

    const suppressed = [];
    for await (const entry of suppression.entries()) suppressed.push(entry);
    expect(suppressed.map((entry) => entry.address).sort()).toEqual([...gone].sort());
    for (const entry of suppressed) {
      expect(entry.reason).toBe('hard-bounce');
      expect(entry.source).toMatch(/550.*5\.1\.1.*User unknown/);
    }

    server.clear();
    const second = await drain(producer, { id: 'second', recipients: list });
    expect(second.status).toMatchObject({ total: 24, suppressed: 6, sent: 18, failed: 6 });
    const reached = new Set(list.filter((address) => !gone.has(address) && !blocked.has(address)));
    expect(delivered(server)).toEqual([...reached].sort());
    // The policy refusals were tried again (and refused again): they are not on the list.
    expect((await suppression.lookup([...blocked])).every((entry) => entry === undefined)).toBe(true);
  });
});

describe('one-click unsubscribe, end to end', () => {
  it('the link in a received message unsubscribes over HTTP, once, and the next campaign skips the address', async () => {
    const { producer, server, suppression, queue } = await rig();
    const endpoint = await startUnsubscribeServer({
      port: 0,
      host: '127.0.0.1',
      redis: REDIS_URL,
      queue,
      secrets: [SECRET],
      logger: captureLogger('warn').logger,
    });
    harness.onCleanup(() => endpoint.close());
    const list = ['ann@example.com', 'bob@example.com', 'cat@example.com'];
    await drain(producer, {
      id: 'june',
      recipients: list,
      unsubscribe: { endpoint: 'https://mail.example.com/lists', secret: SECRET },
    });
    const received = server.messages.find((message) => message.to.includes('bob@example.com'));
    expect(received).toBeDefined();
    const mail = await parse((received as { raw: Buffer }).raw);
    const post = mail.headerLines.find((header) => header.key === 'list-unsubscribe-post');
    expect(post?.line).toBe('List-Unsubscribe-Post: List-Unsubscribe=One-Click');
    // mailparser gathers the List-* fields under `list`.
    const listHeaders = mail.headers.get('list') as { unsubscribe?: { url?: string } } | undefined;
    const unsubscribe = listHeaders?.unsubscribe?.url ?? '';
    expect(unsubscribe).toMatch(/^https:\/\/mail\.example\.com\/lists\/unsubscribe\/[A-Za-z0-9_.-]+$/);
    // The body shows the same link.
    expect(mail.text).toContain(unsubscribe);

    // The mailbox provider's POST, sent to the local endpoint (the reverse proxy strips /lists).
    const path = new URL(unsubscribe).pathname.replace(/^\/lists/, '');
    const local = `http://127.0.0.1:${endpoint.port}${path}`;
    const click = () =>
      fetch(local, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'List-Unsubscribe=One-Click',
      });
    const answer = await click();
    expect(answer.status).toBe(200);
    const first = await suppression.get('bob@example.com');
    expect(first).toMatchObject({ reason: 'unsubscribe', source: 'campaign:june' });
    expect((await click()).status).toBe(200);
    expect(await suppression.get('bob@example.com')).toEqual(first);
    expect(await suppression.count()).toBe(1);

    // An altered token (another recipient's address cannot be forged from this one) changes nothing.
    const altered = `${local.slice(0, -1)}${local.endsWith('A') ? 'B' : 'A'}`;
    expect((await fetch(altered, { method: 'POST', body: 'List-Unsubscribe=One-Click' })).status).toBe(400);
    expect(await suppression.count()).toBe(1);

    server.clear();
    const next = await drain(producer, { id: 'july', recipients: list });
    expect(next.status).toMatchObject({ total: 2, suppressed: 1, sent: 2 });
    expect(delivered(server)).toEqual(['ann@example.com', 'cat@example.com']);
  });
});

describe('a recipient suppressed after its message was queued', () => {
  it('is not sent: the worker checks the list per campaign batch and counts it cancelled', async () => {
    const { producer, server, suppression } = await rig();
    const list = ['ann@example.com', 'bob@example.com', 'cat@example.com'];
    // Scheduled a little ahead, so that the messages wait in the queue as a long campaign's would.
    const handle = await startCampaign(producer, {
      id: 'late',
      template: { ...template, text: 'Hello {{ email }}' },
      recipients: list,
      sendAt: Date.now() + 1500,
    });
    expect(await handle.enqueued).toMatchObject({ queued: 3, suppressed: 0 });
    await suppression.add({ address: 'Bob@Example.com', reason: 'unsubscribe', source: 'test' });
    await waitUntil(async () => (await campaignStatus(producer, 'late')).state === 'completed', 'late done');
    expect(delivered(server)).toEqual(['ann@example.com', 'cat@example.com']);
    expect(await campaignStatus(producer, 'late')).toMatchObject({ total: 3, sent: 2, cancelled: 1 });
  });
});
