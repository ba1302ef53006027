/**
 * The operators' dashboard (startDashboard, `mailroom dashboard`) over real HTTP against real Redis:
 * it refuses to start without credentials, refuses the unauthenticated and forged requests (and
 * changes nothing for them), does what its forms say for a logged-in operator, and never shows a
 * message body or its own token. (In a real browser: dashboard-browser.test.ts.)
 */
import { request as httpRequest } from 'node:http';
import { ConfigError, EmailMultiAlternatives } from '@mailroom/core';
import { queueKeys, SuppressionList } from '@mailroom/core/protocol';
import { campaignStatus, type Producer, startCampaign } from '@mailroom/producer';
import { createWorker, type Dashboard, startDashboard } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT, freshQueue, queueRig, useHarness } from './support/harness.js';
import { PREFIX, REDIS_URL } from './support/redis.js';
import { captureLogger, waitUntil } from './support/wait.js';
import { runMailroom, spawnMailroom } from './support/worker-process.js';

const harness = useHarness();

const TOKEN = 'dashboard-test-token-5f0c2a9e71d4';
const BODY_TEXT = 'BODY-TEXT-never-shown-7d1e';
const HTML_TEXT = 'HTML-PART-never-shown-3b9a';
const ATTACHMENT_TEXT = 'ATTACHMENT-CONTENT-never-shown-c42f';

/** What a test holds: the dashboard and a client that checks every answer for the token. */
interface Client {
  dashboard: Dashboard;
  /** `fetch` of a dashboard path, never following redirects; fails the test if the answer shows the token. */
  call(path: string, init?: RequestInit & { form?: Record<string, string> }): Promise<Answer>;
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

async function open(
  options: Partial<Parameters<typeof startDashboard>[0]> & { queue: string },
): Promise<Client> {
  const dashboard = await startDashboard({
    redis: REDIS_URL,
    port: 0,
    logger: captureLogger().logger,
    ...options,
  });
  harness.onCleanup(() => dashboard.close());
  return {
    dashboard,
    async call(path, init = {}) {
      const { form, ...rest } = init;
      const response = await fetch(new URL(path, dashboard.url), {
        redirect: 'manual',
        ...rest,
        ...(form ? { method: 'POST', body: new URLSearchParams(form) } : {}),
      });
      const text = await response.text();
      // The token must never come back: not in a page, an API answer, a header.
      expect(text).not.toContain(TOKEN);
      expect(JSON.stringify([...response.headers])).not.toContain(TOKEN);
      return { status: response.status, headers: response.headers, text };
    },
  };
}

/** A dashboard with a token on a fresh queue. */
async function tokenDashboard(label: string, queue?: string): Promise<Client & { queue: string }> {
  const name = queue ?? freshQueue(harness, label);
  return { ...(await open({ queue: name, token: TOKEN })), queue: name };
}

/** Logs in with the form; returns the Cookie header value of the session. */
async function login(client: Client): Promise<string> {
  const answer = await client.call('/login', { form: { token: TOKEN } });
  expect(answer.status).toBe(303);
  const cookie = answer.headers.get('set-cookie') ?? '';
  return cookie.split(';')[0] as string;
}

/** The csrf field's value in a page. */
function csrfOf(html: string): string {
  const value = /name="csrf" value="([^"]*)"/.exec(html)?.[1];
  expect(value).toBeTruthy();
  return value as string;
}

/** A page fetched with a session, and its csrf token. */
async function pageWithCsrf(
  client: Client,
  cookie: string,
  path: string,
): Promise<{ html: string; csrf: string }> {
  const answer = await client.call(path, { headers: { cookie } });
  expect(answer.status).toBe(200);
  return { html: answer.text, csrf: csrfOf(answer.text) };
}

/** A running campaign of two recipients that no worker sends (its batches wait on the queue). */
async function waitingCampaign(producer: Producer, id: string, name = id): Promise<void> {
  const handle = await startCampaign(producer, {
    id,
    name,
    template: { subject: 'News', text: `Hello {{ email }} ${BODY_TEXT}`, fromEmail: 'news@example.com' },
    recipients: ['ann@example.com', 'bob@example.com'],
  });
  await handle.enqueued;
}

describe('startDashboard: refusing to start', () => {
  it('refuses to start without credentials, with a ConfigError naming the settings', async () => {
    const queue = freshQueue(harness, 'dash-start');
    const starting = startDashboard({ redis: REDIS_URL, queue, port: 0 });
    await expect(starting).rejects.toBeInstanceOf(ConfigError);
    await expect(starting).rejects.toThrow(/MAILROOM_DASHBOARD_TOKEN/);
  });

  it('refuses noAuth on a host other computers can reach', async () => {
    const queue = freshQueue(harness, 'dash-start');
    for (const host of ['0.0.0.0', '::', '192.168.1.20']) {
      await expect(startDashboard({ redis: REDIS_URL, queue, port: 0, host, noAuth: true })).rejects.toThrow(
        /loopback/,
      );
    }
  });

  it('refuses a user without a password, and a token with a user', async () => {
    const queue = freshQueue(harness, 'dash-start');
    await expect(startDashboard({ redis: REDIS_URL, queue, port: 0, user: 'ops' })).rejects.toThrow(
      /MAILROOM_DASHBOARD_PASSWORD/,
    );
    await expect(
      startDashboard({
        redis: REDIS_URL,
        queue,
        port: 0,
        token: TOKEN,
        user: 'ops',
        password: 'pw-0123456789',
      }),
    ).rejects.toBeInstanceOf(ConfigError);
  });

  it('starts with noAuth on 127.0.0.1: pages open without credentials, POSTs still need the csrf field', async () => {
    const queue = freshQueue(harness, 'dash-noauth');
    const client = await open({ queue, noAuth: true, host: '127.0.0.1' });
    expect(client.dashboard.url).toBe(`http://127.0.0.1:${client.dashboard.port}/`);
    const page = await client.call('/suppression');
    expect(page.status).toBe(200);
    const cookie = (page.headers.get('set-cookie') ?? '').split(';')[0] as string;
    const list = new SuppressionList(harness.redis, queueKeys(PREFIX, queue));

    const forged = await client.call('/suppression/add', {
      form: { address: 'x@example.com', reason: 'manual' },
      headers: { origin: client.dashboard.url.slice(0, -1) },
    });
    expect(forged.status).toBe(403);
    expect(await list.count()).toBe(0);

    const added = await client.call('/suppression/add', {
      form: { address: 'x@example.com', reason: 'manual', csrf: csrfOf(page.text) },
      headers: { cookie },
    });
    expect(added.status).toBe(303);
    expect(await list.get('x@example.com')).toMatchObject({ reason: 'manual', source: 'dashboard' });
  });

  it('rejects with EREDIS when Redis cannot be reached, without its password', async () => {
    const starting = startDashboard({
      redis: 'redis://:hunter2-secret@127.0.0.1:1',
      queue: 'unreachable',
      port: 0,
      token: TOKEN,
      logger: captureLogger().logger,
    });
    await expect(starting).rejects.toMatchObject({ code: 'EREDIS' });
    await expect(starting).rejects.not.toThrow(/hunter2-secret/);
  });
});

describe('token login', () => {
  it('shows the login form', async () => {
    const client = await tokenDashboard('dash-login');
    const answer = await client.call('/login');
    expect(answer.status).toBe(200);
    expect(answer.text).toMatch(/<form id="login" method="post" action="\/login">/);
    expect(answer.text).toMatch(/<input[^>]*name="token"/);
    expect(answer.text).toMatch(/<button type="submit">/);
  });

  it('answers a wrong token with 401 and the form again, and no cookie', async () => {
    const client = await tokenDashboard('dash-login');
    const answer = await client.call('/login', { form: { token: 'not-the-token-at-all' } });
    expect(answer.status).toBe(401);
    expect(answer.text).toContain('id="login"');
    expect(answer.headers.get('set-cookie')).toBeNull();
  });

  it('logs in with the right token: 303 to / with an HttpOnly, SameSite=Strict session cookie', async () => {
    const client = await tokenDashboard('dash-login');
    const answer = await client.call('/login', { form: { token: TOKEN } });
    expect(answer.status).toBe(303);
    expect(answer.headers.get('location')).toBe('/');
    const cookie = answer.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/^mailroom_dashboard=[A-Za-z0-9_-]{40,}; /);
    expect(cookie).toContain('HttpOnly');
    expect(cookie).toContain('SameSite=Strict');
    expect(cookie).toContain('Path=/');
    expect(cookie).not.toContain('Secure');
    const page = await client.call('/', { headers: { cookie: cookie.split(';')[0] as string } });
    expect(page.status).toBe(200);
    expect(page.text).toContain('id="queue-counts"');
  });

  it('marks the cookie Secure when the request came through an https proxy', async () => {
    const client = await tokenDashboard('dash-login');
    const answer = await client.call('/login', {
      form: { token: TOKEN },
      headers: { 'x-forwarded-proto': 'https' },
    });
    expect(answer.headers.get('set-cookie')).toContain('; Secure');
  });

  it('gives each login its own session id', async () => {
    const client = await tokenDashboard('dash-login');
    expect(await login(client)).not.toBe(await login(client));
  });

  it('ends the session on POST /logout', async () => {
    const client = await tokenDashboard('dash-login');
    const cookie = await login(client);
    const { csrf } = await pageWithCsrf(client, cookie, '/');
    const out = await client.call('/logout', { form: { csrf }, headers: { cookie } });
    expect(out.status).toBe(303);
    expect(out.headers.get('location')).toBe('/login');
    const after = await client.call('/', { headers: { cookie } });
    expect(after.status).toBe(303);
    expect(after.headers.get('location')).toBe('/login');
  });

  it('accepts Authorization: Bearer on every request, and refuses a wrong one', async () => {
    const client = await tokenDashboard('dash-login');
    expect(
      (await client.call('/api/overview', { headers: { authorization: `Bearer ${TOKEN}` } })).status,
    ).toBe(200);
    expect((await client.call('/campaigns', { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(
      200,
    );
    expect(
      (await client.call('/api/overview', { headers: { authorization: 'Bearer wrong-token' } })).status,
    ).toBe(401);
  });
});

describe('unauthenticated requests', () => {
  it('sends pages to /login, answers the API and /events 401, and refuses every POST with 401', async () => {
    const client = await tokenDashboard('dash-anon');
    for (const path of ['/', '/campaigns', '/campaigns/x', '/dead-letters', '/suppression?q=a', '/jobs/']) {
      const answer = await client.call(path);
      expect([path, answer.status, answer.headers.get('location')]).toEqual([path, 303, '/login']);
    }
    for (const path of ['/api/overview', '/api/campaigns/x', '/events', '/jobs/api/queues']) {
      expect([path, (await client.call(path)).status]).toEqual([path, 401]);
    }
    const list = new SuppressionList(harness.redis, queueKeys(PREFIX, client.queue));
    for (const path of ['/suppression/add', '/campaigns/x/pause', '/dead-letters/1/delete', '/logout']) {
      const answer = await client.call(path, {
        form: { address: 'y@example.com', reason: 'manual', csrf: 'x' },
      });
      expect([path, answer.status]).toEqual([path, 401]);
    }
    expect(await list.count()).toBe(0);
  });

  it('challenges for HTTP Basic when run with a user and password', async () => {
    const queue = freshQueue(harness, 'dash-basic');
    const client = await open({ queue, user: 'ops', password: 'basic-password-42' });
    const challenged = await client.call('/');
    expect(challenged.status).toBe(401);
    expect(challenged.headers.get('www-authenticate')).toMatch(/^Basic realm="mailroom dashboard"/);
    const wrong = `Basic ${Buffer.from('ops:nope').toString('base64')}`;
    expect((await client.call('/', { headers: { authorization: wrong } })).status).toBe(401);
    const right = `Basic ${Buffer.from('ops:basic-password-42').toString('base64')}`;
    const page = await client.call('/', { headers: { authorization: right } });
    expect(page.status).toBe(200);
    expect(page.text).not.toContain('basic-password-42');
    expect((await client.call('/login', { headers: { authorization: right } })).status).toBe(303);
  });

  it('asks a Basic browser POST for the csrf field, but not a script without browser headers', async () => {
    const queue = freshQueue(harness, 'dash-basic');
    const client = await open({ queue, user: 'ops', password: 'basic-password-42' });
    const authorization = `Basic ${Buffer.from('ops:basic-password-42').toString('base64')}`;
    const list = new SuppressionList(harness.redis, queueKeys(PREFIX, queue));
    const fromBrowser = await client.call('/suppression/add', {
      form: { address: 'b@example.com', reason: 'manual' },
      headers: { authorization, 'sec-fetch-site': 'same-origin' },
    });
    expect(fromBrowser.status).toBe(403);
    expect(await list.count()).toBe(0);
    const fromScript = await client.call('/suppression/add', {
      form: { address: 'b@example.com', reason: 'manual' },
      headers: { authorization },
    });
    expect(fromScript.status).toBe(303);
    expect(await list.count()).toBe(1);
  });
});

describe('CSRF', () => {
  it('refuses a POST with a session but no csrf field, or a wrong one, with 403: the campaign stays running', async () => {
    const { producer, queue } = await queueRig(harness, { label: 'dash-csrf' });
    await waitingCampaign(producer, 'spring');
    const client = await tokenDashboard('dash-csrf', queue);
    const cookie = await login(client);
    const { csrf } = await pageWithCsrf(client, cookie, '/campaigns/spring');
    const other = await pageWithCsrf(client, await login(client), '/campaigns/spring');

    for (const form of [{}, { csrf: '' }, { csrf: 'forged' }, { csrf: `${csrf}x` }, { csrf: other.csrf }]) {
      const answer = await client.call('/campaigns/spring/pause', { form, headers: { cookie } });
      expect(answer.status).toBe(403);
    }
    expect((await campaignStatus(producer, 'spring')).state).toBe('running');
  });

  it('refuses a POST naming another origin (Origin, or Referer without it) even with the right csrf', async () => {
    const { producer, queue } = await queueRig(harness, { label: 'dash-csrf' });
    await waitingCampaign(producer, 'spring');
    const client = await tokenDashboard('dash-csrf', queue);
    const cookie = await login(client);
    const { csrf } = await pageWithCsrf(client, cookie, '/campaigns/spring');
    for (const headers of [
      { origin: 'http://evil.example' },
      { origin: 'null' },
      { referer: 'http://evil.example/page' },
    ]) {
      const answer = await client.call('/campaigns/spring/cancel', {
        form: { csrf },
        headers: { cookie, ...headers },
      });
      expect(answer.status).toBe(403);
    }
    expect((await campaignStatus(producer, 'spring')).state).toBe('running');
  });

  it('leaves the suppression list as it was after a POST without csrf', async () => {
    const client = await tokenDashboard('dash-csrf');
    const cookie = await login(client);
    const list = new SuppressionList(harness.redis, queueKeys(PREFIX, client.queue));
    await list.add({ address: 'keep@example.com', reason: 'manual' });
    const add = await client.call('/suppression/add', {
      form: { address: 'new@example.com', reason: 'manual' },
      headers: { cookie },
    });
    const remove = await client.call('/suppression/remove', {
      form: { address: 'keep@example.com' },
      headers: { cookie },
    });
    expect([add.status, remove.status]).toEqual([403, 403]);
    expect((await list.entries().next()).value?.address).toBe('keep@example.com');
    expect(await list.count()).toBe(1);
  });

  it('lets a Bearer client POST without the csrf field (a browser never adds that header by itself)', async () => {
    const { producer, queue } = await queueRig(harness, { label: 'dash-csrf' });
    await waitingCampaign(producer, 'spring');
    const client = await tokenDashboard('dash-csrf', queue);
    const answer = await client.call('/campaigns/spring/pause', {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(answer.status).toBe(303);
    expect((await campaignStatus(producer, 'spring')).state).toBe('paused');
  });
});

describe('campaigns', () => {
  it('lists the campaigns with their state, progress and counts, each linking to its page', async () => {
    const { producer, queue } = await queueRig(harness, { label: 'dash-campaigns' });
    await waitingCampaign(producer, 'spring', 'Spring <b>sale</b>');
    const client = await tokenDashboard('dash-campaigns', queue);
    const cookie = await login(client);
    const page = await client.call('/campaigns', { headers: { cookie } });
    expect(page.text).toMatch(/<table id="campaigns"/);
    const row = /<tr data-campaign="spring">(.*?)<\/tr>/s.exec(page.text)?.[1] ?? '';
    expect(row).toContain('href="/campaigns/spring"');
    expect(row).toContain('running');
    expect(row).toContain('0%');
    // The name from Redis is escaped, never markup.
    expect(row).toContain('Spring &lt;b&gt;sale&lt;/b&gt;');
    expect(page.text).not.toContain('<b>sale</b>');
  });

  it('shows a campaign page with the elements the live script updates, and its JSON status', async () => {
    const { producer, queue } = await queueRig(harness, { label: 'dash-campaigns' });
    await waitingCampaign(producer, 'spring');
    const client = await tokenDashboard('dash-campaigns', queue);
    const cookie = await login(client);
    const { html } = await pageWithCsrf(client, cookie, '/campaigns/spring');
    expect(html).toMatch(/id="campaign-state"[^>]*>running</);
    expect(html).toMatch(/<progress id="campaign-progress" value="0" max="2">/);
    for (const id of [
      'campaign-percent',
      'campaign-sent',
      'campaign-failed',
      'campaign-total',
      'campaign-rate',
      'campaign-eta',
    ]) {
      expect(html).toContain(`id="${id}"`);
    }
    for (const action of ['pause', 'resume', 'cancel', 'retry-transient']) {
      expect(html).toMatch(
        new RegExp(
          `<form method="post" action="/campaigns/spring/${action}" data-action="${action}"[^>]*><input type="hidden" name="csrf"`,
        ),
      );
    }
    expect(html).toMatch(/data-action="cancel" data-confirm="/);
    expect(html).toContain('<table id="failures"');
    expect(html).toContain('data-live="/api/campaigns/spring"');

    const api = await client.call('/api/campaigns/spring', { headers: { cookie } });
    expect(api.headers.get('content-type')).toMatch(/^application\/json/);
    expect(JSON.parse(api.text)).toMatchObject({
      id: 'spring',
      state: 'running',
      total: 2,
      sent: 0,
      failed: 0,
    });
    expect((await client.call('/api/campaigns/nope', { headers: { cookie } })).status).toBe(404);
    expect((await client.call('/campaigns/nope', { headers: { cookie } })).status).toBe(404);
  });

  it('pauses, resumes and cancels from the forms, answering 303 back to the page', async () => {
    const { producer, queue } = await queueRig(harness, { label: 'dash-campaigns' });
    await waitingCampaign(producer, 'spring');
    const client = await tokenDashboard('dash-campaigns', queue);
    const cookie = await login(client);
    const pageUrl = new URL('/campaigns/spring', client.dashboard.url).href;
    for (const [action, state] of [
      ['pause', 'paused'],
      ['resume', 'running'],
      ['cancel', 'cancelled'],
    ] as const) {
      const { csrf } = await pageWithCsrf(client, cookie, '/campaigns/spring');
      const answer = await client.call(`/campaigns/spring/${action}`, {
        form: { csrf },
        headers: { cookie, origin: client.dashboard.url.slice(0, -1), referer: pageUrl },
      });
      expect(answer.status).toBe(303);
      expect(answer.headers.get('location')).toBe('/campaigns/spring');
      expect((await campaignStatus(producer, 'spring')).state).toBe(state);
      const after = await client.call('/campaigns/spring', { headers: { cookie } });
      expect(after.text).toMatch(new RegExp(`id="campaign-state"[^>]*>${state}<`));
      expect(after.text).toContain(`Campaign spring is ${state}.`);
    }
  });

  it('retries the transient failures of a campaign from its page: the deferred recipient gets it once', async () => {
    const deferring = { now: true };
    const { producer, queue, server } = await queueRig(harness, {
      label: 'dash-retry',
      server: {
        onRcpt(address) {
          if (deferring.now && address === 'later@example.com')
            return { code: 451, message: '4.7.1 Greylisted' };
          return undefined;
        },
      },
    });
    const worker = createWorker({
      redis: REDIS_URL,
      queue,
      backend: 'smtp',
      backendOptions: { host: server.host, port: server.port },
      attempts: 1,
      logger: captureLogger().logger,
    });
    harness.onCleanup(() => worker.close());
    const handle = await startCampaign(producer, {
      id: 'greylisted',
      template: { subject: 'News', text: 'Hello', fromEmail: 'news@example.com' },
      recipients: ['now@example.com', 'later@example.com'],
    });
    await handle.enqueued;
    await waitUntil(
      async () => (await campaignStatus(producer, 'greylisted')).state === 'completed',
      'the campaign to complete',
    );
    const client = await tokenDashboard('dash-retry', queue);
    const cookie = await login(client);
    const { html, csrf } = await pageWithCsrf(client, cookie, '/campaigns/greylisted');
    const failure = /<tr data-address="later@example.com">(.*?)<\/tr>/s.exec(html)?.[1] ?? '';
    expect(failure).toContain('451');
    expect(failure).toContain('Greylisted');

    deferring.now = false;
    const answer = await client.call('/campaigns/greylisted/retry-transient', {
      form: { csrf },
      headers: { cookie },
    });
    expect(answer.status).toBe(303);
    await waitUntil(
      () => server.messages.some((message) => message.to.includes('later@example.com')),
      'the retried message',
    );
    await waitUntil(
      async () => (await campaignStatus(producer, 'greylisted')).state === 'completed',
      'the campaign to complete again',
    );
    const status = await campaignStatus(producer, 'greylisted');
    expect([status.sent, status.failed]).toEqual([2, 0]);
    expect(server.messages.filter((message) => message.to.includes('later@example.com'))).toHaveLength(1);
  });
});

describe('queue overview', () => {
  it('shows the batches per state, the rate and the live workers', async () => {
    const { producer, queue } = await queueRig(harness, { label: 'dash-overview' });
    await waitingCampaign(producer, 'spring');
    const client = await tokenDashboard('dash-overview', queue);
    const cookie = await login(client);
    const page = await client.call('/', { headers: { cookie } });
    for (const state of ['waiting', 'delayed', 'active', 'failed', 'completed']) {
      expect(page.text).toMatch(new RegExp(`data-state="${state}">\\d+<`));
    }
    expect(page.text).toMatch(/data-state="waiting">1</);
    expect(page.text).toContain('2 messages');
    expect(page.text).toContain('id="queue-rate"');
    expect(page.text).toContain('<table id="workers"');
    const api = JSON.parse((await client.call('/api/overview', { headers: { cookie } })).text);
    expect(api.states.waiting).toEqual({ batches: 1, messages: 2 });
    expect(api.workers).toEqual([]);
  });
});

describe('suppression list', () => {
  it('adds, searches (substring, case-insensitive) and removes addresses', async () => {
    const client = await tokenDashboard('dash-suppression');
    const cookie = await login(client);
    const list = new SuppressionList(harness.redis, queueKeys(PREFIX, client.queue));
    await list.add([
      { address: 'alice@example.com', reason: 'hard-bounce', source: '550 5.1.1 <no such user>' },
      { address: 'bob@other.test', reason: 'unsubscribe' },
    ]);
    const { csrf } = await pageWithCsrf(client, cookie, '/suppression');
    const added = await client.call('/suppression/add', {
      form: { csrf, address: 'Carol@Example.com', reason: 'complaint' },
      headers: { cookie },
    });
    expect(added.status).toBe(303);
    expect(added.headers.get('location')).toBe('/suppression');
    expect(await list.get('carol@example.com')).toMatchObject({ reason: 'complaint' });

    const search = await client.call('/suppression?q=EXAMPLE.com', { headers: { cookie } });
    expect(search.text).toContain('<tr data-address="alice@example.com">');
    expect(search.text).toContain('<tr data-address="carol@example.com">');
    expect(search.text).not.toContain('data-address="bob@other.test"');
    // The SMTP reply kept as the source is escaped.
    expect(search.text).toContain('550 5.1.1 &lt;no such user&gt;');
    expect(search.text).toMatch(/<form method="post" action="\/suppression\/remove" data-action="remove"/);

    const removed = await client.call('/suppression/remove', {
      form: { csrf, address: 'alice@example.com' },
      headers: { cookie },
    });
    expect(removed.status).toBe(303);
    expect(await list.get('alice@example.com')).toBeUndefined();
    expect(await list.count()).toBe(2);
  });

  it('refuses a bad address or reason with 400 and adds nothing', async () => {
    const client = await tokenDashboard('dash-suppression');
    const cookie = await login(client);
    const { csrf } = await pageWithCsrf(client, cookie, '/suppression');
    const badAddress = await client.call('/suppression/add', {
      form: { csrf, address: 'not an address', reason: 'manual' },
      headers: { cookie },
    });
    expect(badAddress.status).toBe(400);
    expect(badAddress.text).toContain('not an address');
    const badReason = await client.call('/suppression/add', {
      form: { csrf, address: 'ok@example.com', reason: 'because' },
      headers: { cookie },
    });
    expect(badReason.status).toBe(400);
    expect(await new SuppressionList(harness.redis, queueKeys(PREFIX, client.queue)).count()).toBe(0);
  });

  it('says when a search stopped at its cap', async () => {
    const client = await tokenDashboard('dash-suppression');
    const cookie = await login(client);
    const list = new SuppressionList(harness.redis, queueKeys(PREFIX, client.queue));
    await list.add(
      Array.from({ length: 150 }, (_, i) => ({ address: `user${i}@example.com`, reason: 'manual' as const })),
    );
    const page = await client.call('/suppression?q=user', { headers: { cookie } });
    expect(page.text.match(/<tr data-address=/g)).toHaveLength(100);
    expect(page.text).toContain('id="suppression-capped"');
  });
});

/** A queue whose SMTP server defers `later@` while `deferring.now`, a worker with one attempt, and a dead letter made of it. */
async function deadLetterRig(label: string) {
  const deferring = { now: true };
  const { producer, queue, server } = await queueRig(harness, {
    label,
    server: {
      onRcpt(address) {
        if (deferring.now && address === 'later@example.com')
          return { code: 451, message: '4.7.1 Greylisted, try later' };
        return undefined;
      },
    },
  });
  const worker = createWorker({
    redis: REDIS_URL,
    queue,
    backend: 'smtp',
    backendOptions: { host: server.host, port: server.port },
    attempts: 1,
    logger: captureLogger().logger,
  });
  harness.onCleanup(() => worker.close());
  const message = new EmailMultiAlternatives(
    'Your receipt 1234',
    BODY_TEXT,
    'shop@example.com',
    ['later@example.com'],
    { headers: { 'Message-ID': '<receipt-1234@example.com>' } },
  );
  message.attachAlternative(`<p>${HTML_TEXT}</p>`, 'text/html');
  message.attach('receipt.txt', ATTACHMENT_TEXT, 'text/plain');
  const { jobIds } = await producer.enqueue([message]);
  const jobId = jobIds[0] as string;
  await waitUntil(
    async () => ((await producer.getQueue().getJobCounts('failed')).failed ?? 0) === 1,
    'the batch to be dead-lettered',
  );
  const client = await tokenDashboard(label, queue);
  const cookie = await login(client);
  return { producer, server, deferring, jobId, client, cookie };
}

describe('dead letters', () => {
  it('lists a dead letter and shows its headers, never its body, HTML part or attachment', async () => {
    const { jobId, client, cookie } = await deadLetterRig('dash-dead');
    const list = await client.call('/dead-letters', { headers: { cookie } });
    expect(list.text).toContain('<table id="dead-letters"');
    const row = new RegExp(`<tr data-job="${jobId}">(.*?)</tr>`, 's').exec(list.text)?.[1] ?? '';
    expect(row).toContain(`href="/dead-letters/${jobId}"`);

    const page = await client.call(`/dead-letters/${jobId}`, { headers: { cookie } });
    expect(page.status).toBe(200);
    for (const shown of [
      'Your receipt 1234',
      'shop@example.com',
      'later@example.com',
      '&lt;receipt-1234@example.com&gt;',
      'Greylisted',
    ]) {
      expect(page.text).toContain(shown);
    }
    for (const hidden of [BODY_TEXT, HTML_TEXT, ATTACHMENT_TEXT]) expect(page.text).not.toContain(hidden);
    expect(page.text).toMatch(new RegExp(`action="/dead-letters/${jobId}/retry" data-action="retry"`));
    expect(page.text).toMatch(new RegExp(`action="/dead-letters/${jobId}/delete" data-action="delete"`));
    expect((await client.call('/dead-letters/999999', { headers: { cookie } })).status).toBe(404);
  });

  it('retries a dead letter from its page: the message is sent', async () => {
    const { jobId, client, cookie, server, deferring } = await deadLetterRig('dash-dead');
    const { csrf } = await pageWithCsrf(client, cookie, `/dead-letters/${jobId}`);
    deferring.now = false;
    const answer = await client.call(`/dead-letters/${jobId}/retry`, { form: { csrf }, headers: { cookie } });
    expect(answer.status).toBe(303);
    expect(answer.headers.get('location')).toBe(`/dead-letters/${jobId}`);
    await waitUntil(() => server.messages.length === 1, 'the retried message to arrive');
    expect(server.messages[0]?.to).toEqual(['later@example.com']);
  });

  it('deletes a dead letter (and its ledger), then answers 404 for it', async () => {
    const { jobId, client, cookie, producer } = await deadLetterRig('dash-dead');
    const { csrf } = await pageWithCsrf(client, cookie, `/dead-letters/${jobId}`);
    const answer = await client.call(`/dead-letters/${jobId}/delete`, {
      form: { csrf },
      headers: { cookie },
    });
    expect(answer.status).toBe(303);
    expect(answer.headers.get('location')).toBe('/dead-letters');
    expect(await producer.getQueue().getJob(jobId)).toBeUndefined();
    expect(await harness.redis.exists(producer.keys.ledger(jobId))).toBe(0);
    expect((await client.call(`/dead-letters/${jobId}`, { headers: { cookie } })).status).toBe(404);
  });

  it('mounts the job board at /jobs/, read-only, with the job data cut to count, campaign and enqueuedAt', async () => {
    const { jobId, client, cookie, producer } = await deadLetterRig('dash-dead');
    const board = await client.call('/jobs/', { headers: { cookie } });
    expect(board.status).toBe(200);
    expect(board.text).toContain('<base href="/jobs/"');
    const job = await client.call(`/jobs/api/queues/${encodeURIComponent(producer.queue)}/${jobId}`, {
      headers: { cookie },
    });
    expect(job.status).toBe(200);
    const data = JSON.parse(job.text).job.data;
    expect(Object.keys(data).sort()).toEqual(
      ['campaign', 'count', 'enqueuedAt'].filter((key) => data[key] !== undefined).sort(),
    );
    expect(data.count).toBe(1);
    const queues = await client.call(
      `/jobs/api/queues?activeQueue=${encodeURIComponent(producer.queue)}&status=failed`,
      { headers: { cookie } },
    );
    for (const answer of [job, queues]) {
      for (const hidden of [BODY_TEXT, HTML_TEXT, ATTACHMENT_TEXT, 'packed'])
        expect(answer.text).not.toContain(hidden);
    }
    // Read-only: nothing but GET and HEAD reaches the board.
    const retry = await client.call(`/jobs/api/queues/${encodeURIComponent(producer.queue)}/${jobId}/retry`, {
      method: 'PUT',
      headers: { cookie },
    });
    expect(retry.status).toBe(405);
    expect(await (await producer.getQueue().getJob(jobId))?.getState()).toBe('failed');
  });
});

describe('every answer', () => {
  it('carries the security headers, and pages have no inline script or style', async () => {
    const client = await tokenDashboard('dash-headers');
    const cookie = await login(client);
    for (const path of ['/', '/campaigns', '/dead-letters', '/suppression', '/login']) {
      // The login page is for browsers without a session (with one it sends them to /).
      const answer = await client.call(path, path === '/login' ? {} : { headers: { cookie } });
      expect(answer.status).toBe(200);
      expect(answer.headers.get('content-security-policy')).toMatch(/^default-src 'self'/);
      expect(answer.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      expect(answer.headers.get('x-frame-options')).toBe('DENY');
      expect(answer.headers.get('x-content-type-options')).toBe('nosniff');
      expect(answer.headers.get('cache-control')).toBe('no-store');
      expect(answer.text).not.toMatch(/<script(?![^>]*\bsrc=)/);
      expect(answer.text).not.toMatch(/<style|\sstyle=|\son[a-z]+=/);
      expect(answer.text).toContain('<meta name="viewport"');
    }
    const page = await client.call('/', { headers: { cookie } });
    for (const [label, href] of [
      ['Queues', '/'],
      ['Campaigns', '/campaigns'],
      ['Dead letters', '/dead-letters'],
      ['Suppression', '/suppression'],
      ['Jobs', '/jobs/'],
    ]) {
      expect(page.text).toMatch(new RegExp(`<a href="${href}"[^>]*>${label}</a>`));
    }
    const script = await client.call('/static/dashboard.js');
    expect(script.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(script.text).toContain("getAttribute('data-live')");
    expect((await client.call('/static/dashboard.css')).headers.get('content-type')).toMatch(/^text\/css/);
  });
});

describe('mailroom dashboard', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('exits 3 without credentials, and for --no-auth on a public host', async () => {
    const [none, publicHost] = await Promise.all([
      runMailroom(['dashboard', '--port', '0'], { REDIS_URL, MAILROOM_DASHBOARD_TOKEN: undefined }),
      runMailroom(['dashboard', '--port', '0', '--no-auth', '--host', '0.0.0.0'], { REDIS_URL }),
    ]);
    expect(none.code).toBe(3);
    expect(none.stderr).toContain('MAILROOM_DASHBOARD_TOKEN');
    expect(publicHost.code).toBe(3);
    expect(publicHost.stderr).toContain('loopback');
    expect(none.stderr + publicHost.stderr).not.toContain('listening');
  });

  it('prints one line with its URL (never the token), serves the login form, and exits 0 on SIGTERM', async () => {
    const queue = freshQueue(harness, 'cli-dashboard');
    const server = harness.track(
      spawnMailroom(['dashboard', '--port', '0'], {
        REDIS_URL,
        MAILROOM_QUEUE: queue,
        MAILROOM_DASHBOARD_TOKEN: TOKEN,
      }),
    );
    await server.waitForStderr('listening on http://');
    const banner = server.stderr();
    expect(banner.trim().split('\n')).toHaveLength(1);
    expect(banner).not.toContain(TOKEN);
    const url = /listening on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(banner)?.[1] as string;
    const page = await fetch(new URL('/login', url));
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('id="login"');
    server.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    expect(server.stdout()).not.toContain(TOKEN);
  });
});

/** A raw HTTP request (fetch cannot set Host, nor send a `//` target as it is). */
function rawRequest(
  port: number,
  path: string,
  headers: Record<string, string>,
  method = 'GET',
  body = '',
): Promise<{ status: number; location: string | undefined; text: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, path, method, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          location: response.headers.location,
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
    request.on('error', reject);
    request.end(body);
  });
}

describe('review findings', () => {
  it('answers a dashboard without credentials only under a loopback name (DNS rebinding)', async () => {
    const queue = freshQueue(harness, 'dash-rebind');
    const client = await open({ queue, noAuth: true, host: '127.0.0.1' });
    const port = client.dashboard.port;
    const list = new SuppressionList(harness.redis, queueKeys(PREFIX, queue));
    const evil = `evil.example:${port}`;
    const page = await rawRequest(port, '/suppression', { host: evil });
    expect(page.status).toBe(421);
    expect(page.text).not.toContain('csrf');
    const post = await rawRequest(
      port,
      '/suppression/add',
      { host: evil, origin: `http://${evil}`, 'content-type': 'application/x-www-form-urlencoded' },
      'POST',
      'address=x%40example.com&reason=manual',
    );
    expect(post.status).toBe(421);
    expect(await list.count()).toBe(0);
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`]) {
      expect((await rawRequest(port, '/suppression', { host })).status).toBe(200);
    }
  });

  it('serves no page at a `//host` path and never redirects to one', async () => {
    const client = await tokenDashboard('dash-redirect');
    const cookie = await login(client);
    const host = `127.0.0.1:${client.dashboard.port}`;
    expect(
      (await rawRequest(client.dashboard.port, '//evil.example/suppression', { host, cookie })).status,
    ).toBe(404);
    const { csrf } = await pageWithCsrf(client, cookie, '/suppression');
    const added = await client.call('/suppression/add', {
      form: { address: 'x@example.com', reason: 'manual', csrf },
      headers: { cookie, referer: `http://${host}//evil.example/suppression` },
    });
    expect(added.status).toBe(303);
    expect(added.headers.get('location')).toBe('/suppression');
  });

  it('refuses a job board page of more than 100 jobs (it would read them all)', async () => {
    const client = await tokenDashboard('dash-board-page');
    const cookie = await login(client);
    const queue = encodeURIComponent(client.queue);
    const big = await client.call(
      `/jobs/api/queues?activeQueue=${queue}&status=waiting&jobsPerPage=1000000`,
      {
        headers: { cookie },
      },
    );
    expect(big.status).toBe(400);
    const fine = await client.call(`/jobs/api/queues?activeQueue=${queue}&status=waiting&jobsPerPage=50`, {
      headers: { cookie },
    });
    expect(fine.status).toBe(200);
    const bad = await client.call('/jobs/queue/%E0', { headers: { cookie } });
    expect(bad.status).toBeGreaterThanOrEqual(400);
  });
});
