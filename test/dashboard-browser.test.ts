/**
 * The operators' dashboard (startDashboard, @mailroom/worker) in a real browser: headless Chromium
 * (test/support/browser.ts) logs in with the token form, watches a campaign that an in-process
 * worker drains into a real SMTP server update without a reload, pauses and resumes it with the
 * page's buttons, retries a dead letter; requests without credentials, with a bad CSRF field or
 * from another origin change nothing; and every page fits a phone's width.
 *
 * The campaign page during a drain is also photographed (1280x800 and 375 px wide): into
 * docs/dashboard-campaign.png and docs/dashboard-campaign-phone.png with UPDATE_SCREENSHOTS=1, into
 * a temporary directory otherwise (so that a test run leaves the tree as it was).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EmailMessage } from '@mailroom/core';
import { SuppressionList } from '@mailroom/core/protocol';
import {
  type CampaignOptions,
  type CampaignRecipient,
  type CampaignState,
  campaignStatus,
  type Producer,
  startCampaign,
} from '@mailroom/producer';
import { createWorker, type MailWorker, type PrometheusMetrics, startDashboard } from '@mailroom/worker';
import type { Browser, Page } from 'puppeteer-core';
import { describe, expect, it } from 'vitest';
import {
  clickAndWait,
  DESKTOP,
  numberIn,
  openPage,
  type PageGlobals,
  PHONE,
  type TestPage,
  textOf,
} from './support/browser.js';
import { type QueueRig, queueRig, useHarness, useTemporaryDirectory } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import type { SmtpServerOptions } from './support/smtp-server.js';
import { captureLogger, waitUntil } from './support/wait.js';

const harness = useHarness();

const TOKEN = 'browser-test-token-0123456789abcdef';

/** Where the screenshots go: docs/ with UPDATE_SCREENSHOTS=1, else a temporary directory. */
function screenshotDirectory(): string {
  if (!process.env.UPDATE_SCREENSHOTS) return useTemporaryDirectory('mailroom-dashboard-shots-');
  const docs = fileURLToPath(new URL('../docs/', import.meta.url));
  mkdirSync(docs, { recursive: true });
  return docs;
}

const SCREENSHOTS = screenshotDirectory();

/** Each hooked SMTP command waits this long: about 30 ms a message, so a drain of 150 lasts seconds. */
const REPLY_DELAY_MS = 10;

const template: CampaignOptions['template'] = {
  subject: 'The October letter for {{ email }}',
  text: 'Hello {{ email }}, here is what happened in October.',
  fromEmail: 'news@example.com',
};

async function* addresses(count: number): AsyncGenerator<CampaignRecipient> {
  for (let index = 0; index < count; index++) yield `reader${index}@example.com`;
}

/** The long reply a relay gives an unknown mailbox (the failures table must wrap it on a phone). */
const UNKNOWN_USER =
  '5.1.1 <address>: Recipient address rejected: User unknown in virtual mailbox table; see https://support.example.com/postmaster/unknown-recipient-policy';

/** Recipients `reader<n>@` with n ending in 7 are refused with a 550 (a permanent failure of the campaign). */
function refusedForGood(address: string): boolean {
  return /^reader\d*7@/.test(address);
}

interface Rig extends QueueRig {
  /** The dashboard's base URL, without a trailing slash. */
  base: string;
  /** An absolute URL of the dashboard. */
  url(path: string): string;
  /** Starts an in-process worker on the queue (one connection), closed after the test. */
  worker(options?: { attempts?: number }): MailWorker;
}

async function rig(server: SmtpServerOptions = {}, batchSize = 10): Promise<Rig> {
  const base = await queueRig(harness, {
    label: 'dashboard',
    server: { keepRawMessages: false, recordCommands: false, ...server },
    producer: { batchSize },
  });
  const dashboard = await startDashboard({
    redis: REDIS_URL,
    queue: base.queue,
    port: 0,
    token: TOKEN,
    logger: captureLogger('warn').logger,
  });
  harness.onCleanup(() => dashboard.close());
  const origin = dashboard.url.replace(/\/+$/, '');
  return {
    ...base,
    base: origin,
    url: (path) => `${origin}${path}`,
    worker({ attempts } = {}) {
      const worker = createWorker({
        redis: REDIS_URL,
        queue: base.queue,
        backend: 'smtp',
        backendOptions: { host: base.server.host, port: base.server.port },
        concurrency: 1,
        backoff: { delay: 20, maxDelay: 100 },
        logger: captureLogger('warn').logger,
        ...(attempts === undefined ? {} : { attempts }),
      });
      harness.onCleanup(() => worker.close());
      return worker;
    },
  };
}

/** Opens a browser page and logs in with the token form; the page is left on the queue overview. */
async function logIn(dashboard: Rig, viewport = DESKTOP): Promise<TestPage> {
  const opened = await openPage(harness, viewport);
  const { page } = opened;
  await page.goto(dashboard.url('/'));
  expect(new URL(page.url()).pathname).toBe('/login');
  await page.type('form#login input[name=token]', TOKEN);
  await clickAndWait(page, 'form#login button[type=submit]');
  expect(new URL(page.url()).pathname).toBe('/');
  return opened;
}

/** Starts a campaign of `count` recipients and waits until every one is enqueued. */
async function campaign(producer: Producer, id: string, count: number): Promise<void> {
  const handle = await startCampaign(producer, {
    id,
    name: 'October letter',
    template,
    recipients: addresses(count),
    // Everything on the queue at once (one chunk): no enqueueing left running when a test ends mid-campaign.
    chunkSize: count,
    maxPending: count,
  });
  expect((await handle.enqueued).stopped).toBe('done');
}

/** Waits until the page's `selector` shows `text` (the live script updates it, or a reload did). */
async function waitForText(page: Page, selector: string, text: string, timeout = 30_000): Promise<void> {
  try {
    await page.waitForFunction(
      (selector, text) => {
        const { document } = globalThis as unknown as PageGlobals;
        return document.querySelector(selector)?.textContent?.trim() === text;
      },
      { timeout, polling: 50 },
      selector,
      text,
    );
  } catch (error) {
    const shown = await page
      .$eval(selector, (element) => element.textContent)
      .catch(() => '(no such element)');
    throw new Error(`${selector} did not show ${JSON.stringify(text)} (it shows ${JSON.stringify(shown)})`, {
      cause: error,
    });
  }
}

/** Waits until the number shown by `selector` is at least `minimum`. */
async function waitForNumber(page: Page, selector: string, minimum: number, timeout = 30_000): Promise<void> {
  await page.waitForFunction(
    (selector, minimum) => {
      const { document } = globalThis as unknown as PageGlobals;
      const text = document.querySelector(selector)?.textContent ?? '';
      return Number(text.replace(/[^\d.]/g, '')) >= minimum;
    },
    { timeout, polling: 50 },
    selector,
    minimum,
  );
}

/** Leaves a marker on `window`: a reload or a navigation would wipe it. */
async function markPage(page: Page): Promise<void> {
  await page.evaluate(() => {
    (globalThis as unknown as PageGlobals).dashboardTestMarker = 'still the same page';
  });
}

async function pageMarker(page: Page): Promise<unknown> {
  return page.evaluate(() => (globalThis as unknown as PageGlobals).dashboardTestMarker);
}

/**
 * Screenshots of `url` in a second tab of the logged-in browser, freshly rendered (the tables the
 * live script leaves alone, outcomes and failures, are as current as the figures): 1280x800 and the
 * whole page at a phone's width.
 */
async function photograph(browser: Browser, url: string): Promise<void> {
  const tab = await browser.newPage();
  try {
    await tab.setViewport(DESKTOP);
    await tab.goto(url);
    await tab.screenshot({ path: join(SCREENSHOTS, 'dashboard-campaign.png') });
    await tab.setViewport(PHONE);
    await tab.screenshot({ path: join(SCREENSHOTS, 'dashboard-campaign-phone.png'), fullPage: true });
  } finally {
    await tab.close();
  }
}

async function stateOf(producer: Producer, id: string): Promise<CampaignState> {
  return (await campaignStatus(producer, id)).state;
}

function pausedBatches(worker: MailWorker): Promise<number> {
  return (worker.metrics as PrometheusMetrics).batches
    .get()
    .then((metric) => metric.values.find((value) => value.labels.outcome === 'paused')?.value ?? 0);
}

describe('logging in', () => {
  it('sends a visitor to the token form, refuses a wrong token, and lets the right one in with a strict session cookie', async () => {
    const dashboard = await rig();
    const { page, errors } = await openPage(harness);

    await page.goto(dashboard.url('/'));
    expect(new URL(page.url()).pathname).toBe('/login');
    expect(await page.$('form#login input[name=token]')).not.toBeNull();

    await page.type('form#login input[name=token]', 'not-the-token');
    const refused = await clickAndWait(page, 'form#login button[type=submit]');
    expect(refused?.status()).toBe(401);
    expect(await page.$('form#login')).not.toBeNull();
    expect(await page.cookies()).toEqual([]);

    await page.type('form#login input[name=token]', TOKEN);
    await clickAndWait(page, 'form#login button[type=submit]');

    expect(new URL(page.url()).pathname).toBe('/');
    const states = await page.$$eval('#queue-counts [data-state]', (elements) =>
      elements.map((element) => element.getAttribute('data-state')),
    );
    expect(states.sort()).toEqual(['active', 'completed', 'delayed', 'failed', 'waiting']);
    const navigation = await page.$$eval('nav a', (links) => links.map((link) => link.textContent?.trim()));
    expect(navigation).toEqual(
      expect.arrayContaining(['Queues', 'Campaigns', 'Dead letters', 'Suppression', 'Jobs']),
    );
    const [cookie, ...others] = await page.cookies();
    expect(others).toEqual([]);
    expect(cookie).toMatchObject({
      name: 'mailroom_dashboard',
      path: '/',
      httpOnly: true,
      sameSite: 'Strict',
    });
    expect(cookie?.value).not.toContain(TOKEN);
    expect(await page.content()).not.toContain(TOKEN);
    expect(errors.filter((error) => !error.includes('401'))).toEqual([]);
  });
  it('marks the session cookie Secure when the login came through an https proxy (X-Forwarded-Proto)', async () => {
    const dashboard = await rig();

    const response = await fetch(dashboard.url('/login'), {
      method: 'POST',
      body: new URLSearchParams({ token: TOKEN }),
      headers: { 'x-forwarded-proto': 'https' },
      redirect: 'manual',
    });

    expect(response.status).toBe(303);
    expect(response.headers.get('location')).toMatch(/^(\/|https?:\/\/[^/]+\/)$/);
    const cookie = response.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/^mailroom_dashboard=[^;]+/);
    expect(cookie.split(/;\s*/).map((part) => part.toLowerCase())).toEqual(
      expect.arrayContaining(['httponly', 'samesite=strict', 'path=/', 'secure']),
    );
  });
});

describe('the campaign page', () => {
  it('shows a campaign progress live, without a reload, while a worker drains it, until it is completed', async () => {
    const total = 150;
    const refused = Array.from({ length: total }, (_, index) => `reader${index}@example.com`).filter(
      refusedForGood,
    ).length;
    const dashboard = await rig({
      replyDelayMs: REPLY_DELAY_MS,
      onRcpt: (address) => (refusedForGood(address) ? { code: 550, message: UNKNOWN_USER } : undefined),
    });
    await campaign(dashboard.producer, 'october', total);
    const { page, errors, browser } = await logIn(dashboard);
    await page.goto(dashboard.url('/campaigns/october'));
    expect(await textOf(page, '#campaign-state')).toBe('running');
    expect(await numberIn(page, '#campaign-total')).toBe(total);
    expect(await numberIn(page, '#campaign-sent')).toBe(0);
    await markPage(page);
    // Every value #campaign-sent and the progress bar take, as the page's script sets them.
    await page.evaluate(() => {
      const globals = globalThis as unknown as PageGlobals;
      const seen: [string, string][] = [];
      globals.dashboardTestSeen = seen;
      const record = () => {
        const sent = globals.document.querySelector('#campaign-sent')?.textContent?.trim() ?? '';
        const progress = globals.document.querySelector('progress#campaign-progress');
        const value = String((progress as unknown as { value: number } | null)?.value ?? '');
        const last = seen.at(-1);
        if (!last || last[0] !== sent || last[1] !== value) seen.push([sent, value]);
      };
      record();
      // setInterval, not a MutationObserver: the progress bar's value property need not touch its attribute.
      setInterval(record, 20);
    });

    dashboard.worker();
    await waitForNumber(page, '#campaign-sent', Math.floor(total / 3));
    await photograph(browser, dashboard.url('/campaigns/october'));
    await waitForText(page, '#campaign-state', 'completed', 45_000);
    // The recorder samples every 20 ms: let it take the page's last values before they are read.
    await page.waitForFunction(() => {
      const globals = globalThis as unknown as PageGlobals;
      const sentNow = globals.document.querySelector('#campaign-sent')?.textContent?.trim() ?? '';
      const seen = globals.dashboardTestSeen as [string, string][] | undefined;
      return seen?.at(-1)?.[0] === sentNow;
    });

    expect(await pageMarker(page)).toBe('still the same page');
    const seen = (await page.evaluate(() => (globalThis as unknown as PageGlobals).dashboardTestSeen)) as [
      string,
      string,
    ][];
    const sentValues = seen.map(([sent]) => Number(sent.replace(/[^\d]/g, '')));
    const progressValues = seen.map(([, value]) => Number(value));
    const sent = total - refused;
    // Up step by step: never down, and seen between the start and the end more than once.
    expect(sentValues).toEqual([...sentValues].sort((a, b) => a - b));
    expect(progressValues).toEqual([...progressValues].sort((a, b) => a - b));
    expect(sentValues[0]).toBe(0);
    expect(sentValues.at(-1)).toBe(sent);
    expect(new Set(sentValues.filter((value) => value > 0 && value < sent)).size).toBeGreaterThanOrEqual(2);
    expect(new Set(progressValues.filter((value) => value > 0 && value < total)).size).toBeGreaterThanOrEqual(
      2,
    );
    expect(await numberIn(page, '#campaign-failed')).toBe(refused);
    expect(await numberIn(page, '#campaign-percent')).toBe(100);
    expect(
      await page.$eval('progress#campaign-progress', (element) => [
        Number(element.getAttribute('max') ?? (element as unknown as { max: number }).max),
        (element as unknown as { value: number }).value,
      ]),
    ).toEqual([total, total]);
    expect(errors).toEqual([]);

    // The failures, with the relay's reply, on the page as it is rendered now.
    await page.reload();
    const failures = await page.$$eval('table#failures tbody tr', (rows) =>
      rows.map((row) => row.textContent ?? ''),
    );
    expect(failures).toHaveLength(refused);
    expect(failures.find((row) => row.includes('reader7@example.com'))).toMatch(/550[\s\S]*User unknown/);
  });

  it('pauses a draining campaign with its Pause button (the SMTP server stops receiving) and resumes it with Resume', async () => {
    const total = 400;
    const dashboard = await rig({ replyDelayMs: REPLY_DELAY_MS });
    const { server, producer } = dashboard;
    await campaign(producer, 'pausable', total);
    const worker = dashboard.worker();
    const { page } = await logIn(dashboard);
    await page.goto(dashboard.url('/campaigns/pausable'));
    await waitUntil(() => server.messages.length >= 20, '20 messages', 30_000);

    await clickAndWait(page, 'form[data-action="pause"] button');

    expect(new URL(page.url()).pathname).toBe('/campaigns/pausable');
    await waitForText(page, '#campaign-state', 'paused');
    expect(await stateOf(producer, 'pausable')).toBe('paused');
    // The pause has settled once the worker parked every batch (nothing waiting or active)...
    let parked = 0;
    await waitUntil(
      async () => {
        const counts = await producer.getQueue().getJobCounts('waiting', 'active', 'prioritized', 'delayed');
        parked = counts.delayed ?? 0;
        return counts.waiting === 0 && counts.active === 0 && counts.prioritized === 0 && parked > 0;
      },
      'every batch to be parked',
      30_000,
      50,
    );
    const received = server.messages.length;
    // ...and then the server stays silent while the worker looks at every parked batch again.
    const looked = await pausedBatches(worker);
    await waitUntil(
      async () => (await pausedBatches(worker)) >= looked + parked,
      'every parked batch to be looked at again',
      30_000,
      50,
    );
    expect(server.messages.length).toBe(received);
    expect(received).toBeLessThan(total);
    const sentWhenPaused = await numberIn(page, '#campaign-sent');

    await clickAndWait(page, 'form[data-action="resume"] button');

    expect(new URL(page.url()).pathname).toBe('/campaigns/pausable');
    await waitForText(page, '#campaign-state', 'running');
    await waitUntil(() => server.messages.length >= received + 20, 'sending to go on', 30_000);
    await markPage(page);
    await waitForNumber(page, '#campaign-sent', sentWhenPaused + 20);
    expect(await pageMarker(page)).toBe('still the same page');
  });
  it('asks before cancelling: a dismissed confirmation cancels nothing, an accepted one cancels', async () => {
    const dashboard = await rig();
    const { producer } = dashboard;
    await campaign(producer, 'doomed', 20);
    const { page } = await logIn(dashboard);
    await page.goto(dashboard.url('/campaigns/doomed'));
    const forms = await page.$$eval('form[data-action]', (elements) =>
      elements.map((form) => [
        form.getAttribute('data-action'),
        form.getAttribute('method')?.toLowerCase(),
        form.getAttribute('action'),
        form.querySelector('input[name=csrf]')?.getAttribute('value')?.length ?? 0,
      ]),
    );
    for (const action of ['pause', 'resume', 'cancel', 'retry-transient'])
      expect(forms).toContainEqual([action, 'post', `/campaigns/doomed/${action}`, expect.any(Number)]);
    expect(forms.every(([, , , csrf]) => Number(csrf) > 0)).toBe(true);
    const dialogs: string[] = [];
    let answer = false;
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.type());
      void (answer ? dialog.accept() : dialog.dismiss());
    });

    await markPage(page);
    await page.click('form[data-action="cancel"] button');
    // A POST the dismissal failed to stop would be on the network (and then navigate) by now.
    await page.waitForNetworkIdle({ idleTime: 200 });

    expect(dialogs).toEqual(['confirm']);
    expect(await pageMarker(page)).toBe('still the same page');
    expect(await stateOf(producer, 'doomed')).toBe('running');

    answer = true;
    await clickAndWait(page, 'form[data-action="cancel"] button');

    expect(dialogs).toEqual(['confirm', 'confirm']);
    expect(await stateOf(producer, 'doomed')).toBe('cancelled');
    await waitForText(page, '#campaign-state', 'cancelled');
  });
});

describe('dead letters', () => {
  it('retries a dead letter with its Retry button, and the SMTP server receives it', async () => {
    let deferring = true;
    const dashboard = await rig({
      onRcpt: (address) =>
        address === 'later@example.com' && deferring
          ? { code: 451, message: '4.7.1 Greylisted, try later' }
          : undefined,
    });
    const { producer, server } = dashboard;
    dashboard.worker({ attempts: 1 });
    const failed = async () => (await producer.getQueue().getJobCounts('failed')).failed ?? 0;
    const body = 'The body of invoice 42, which no dashboard page may show';
    const [jobId] = (
      await producer.enqueue(new EmailMessage('Invoice 42', body, 'shop@example.com', ['later@example.com']))
    ).jobIds;
    await waitUntil(async () => (await failed()) === 1, 'the batch to be dead-lettered');
    const { page } = await logIn(dashboard);

    await page.goto(dashboard.url('/dead-letters'));
    const row = `table#dead-letters tr[data-job="${jobId}"]`;
    expect(await page.$(row)).not.toBeNull();
    await page.goto(dashboard.url(`/dead-letters/${encodeURIComponent(jobId as string)}`));
    const shown = await page.content();
    expect(shown).toContain('Invoice 42');
    expect(shown).toContain('later@example.com');
    expect(shown).toContain('shop@example.com');
    expect(shown).not.toContain('which no dashboard page may show');
    expect(server.messages).toHaveLength(0);

    deferring = false;
    await clickAndWait(page, 'form[data-action="retry"] button');

    await server.waitForMessages(1, 30_000);
    expect(server.messages.map((message) => message.to)).toEqual([['later@example.com']]);
    await waitUntil(async () => (await failed()) === 0, 'the job to leave the dead letters');
    await page.goto(dashboard.url('/dead-letters'));
    expect(await page.$(row)).toBeNull();
  });
});

describe('refused requests', () => {
  it('answers 401 to a mutating request without credentials, and changes nothing', async () => {
    const dashboard = await rig();
    const { producer } = dashboard;
    await campaign(producer, 'untouched', 20);
    const suppression = new SuppressionList(producer.redis, producer.keys);
    const post = (path: string, fields: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(dashboard.url(path), {
        method: 'POST',
        body: new URLSearchParams(fields),
        headers,
        redirect: 'manual',
      });

    expect((await post('/campaigns/untouched/pause', {})).status).toBe(401);
    expect((await post('/campaigns/untouched/cancel', { csrf: 'x' })).status).toBe(401);
    expect(
      (await post('/suppression/add', { address: 'intruder@example.com', reason: 'manual' })).status,
    ).toBe(401);
    expect(
      (await post('/campaigns/untouched/pause', {}, { authorization: 'Bearer not-the-token' })).status,
    ).toBe(401);

    expect(await stateOf(producer, 'untouched')).toBe('running');
    expect(await suppression.get('intruder@example.com')).toBeUndefined();
  });

  it('answers 403 to a POST from the logged-in browser with a missing or wrong csrf field, and changes nothing', async () => {
    const dashboard = await rig();
    const { producer } = dashboard;
    await campaign(producer, 'guarded', 20);
    const { page } = await logIn(dashboard);
    await page.goto(dashboard.url('/campaigns/guarded'));
    const post = (fields: Record<string, string>) =>
      page.evaluate(
        (path, fields) =>
          (globalThis as unknown as PageGlobals)
            .fetch(path, { method: 'POST', body: new URLSearchParams(fields), redirect: 'manual' })
            .then((response) => response.status),
        '/campaigns/guarded/pause',
        fields,
      );

    expect(await post({ csrf: 'bad' })).toBe(403);
    expect(await post({})).toBe(403);
    expect(await stateOf(producer, 'guarded')).toBe('running');

    // The same request with the page's own csrf field does pause it: the field was the difference.
    const csrf = await page.$eval('form[data-action="pause"] input[name=csrf]', (input) =>
      input.getAttribute('value'),
    );
    await post({ csrf: csrf ?? '' });
    expect(await stateOf(producer, 'guarded')).toBe('paused');
  });

  it('answers 403 to a POST with the session cookie and the right csrf field from another origin, and changes nothing', async () => {
    const dashboard = await rig();
    const { producer } = dashboard;
    await campaign(producer, 'elsewhere', 20);
    const { page } = await logIn(dashboard);
    await page.goto(dashboard.url('/campaigns/elsewhere'));
    const csrf = await page.$eval('form[data-action="pause"] input[name=csrf]', (input) =>
      input.getAttribute('value'),
    );
    const cookie = (await page.cookies()).map(({ name, value }) => `${name}=${value}`).join('; ');

    const response = await fetch(dashboard.url('/campaigns/elsewhere/pause'), {
      method: 'POST',
      body: new URLSearchParams({ csrf: csrf ?? '' }),
      headers: { cookie, origin: 'https://evil.example' },
      redirect: 'manual',
    });

    expect(response.status).toBe(403);
    expect(await stateOf(producer, 'elsewhere')).toBe('running');
  });
});

describe('on a phone', () => {
  it('at 375x740 shows every page, the campaign page with its failures too, without horizontal scrolling', async () => {
    const dashboard = await rig({
      onRcpt: (address) => (refusedForGood(address) ? { code: 550, message: UNKNOWN_USER } : undefined),
    });
    const { producer } = dashboard;
    await campaign(producer, 'a-campaign-with-a-rather-long-identifier-2024-10', 30);
    dashboard.worker();
    await waitUntil(
      async () =>
        (await stateOf(producer, 'a-campaign-with-a-rather-long-identifier-2024-10')) === 'completed',
      'the campaign to complete',
    );
    const { page } = await logIn(dashboard, PHONE);

    const widths: Record<string, number> = {};
    for (const path of [
      '/campaigns/a-campaign-with-a-rather-long-identifier-2024-10',
      '/',
      '/campaigns',
      '/dead-letters',
      '/suppression',
    ]) {
      await page.goto(dashboard.url(path));
      widths[path] = await page.evaluate(
        () => (globalThis as unknown as PageGlobals).document.documentElement.scrollWidth,
      );
    }

    expect(await page.$$eval('nav a', (links) => links.length)).toBeGreaterThanOrEqual(5);
    expect(Object.entries(widths).filter(([, width]) => width > 375)).toEqual([]);
  });
});
