/**
 * The browser helper (browser.ts) against a tiny HTTP server of its own: a page whose script runs
 * under a strict Content-Security-Policy, errors recorded, the browser closed after the test, and
 * a clear error when there is no Chromium.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser } from 'puppeteer-core';
import { describe, expect, it } from 'vitest';
import { CHROMIUM_PATH, launchBrowser, openPage, type PageGlobals, PHONE, textOf } from './browser.js';
import { useHarness } from './harness.js';

const harness = useHarness();

const CSP = "default-src 'self'";

/** Serves `/` (a page with an external script), `/app.js`, `/count` and `/inline` (an inline script). */
async function tinyServer(): Promise<{ url: string; server: Server }> {
  let count = 0;
  const server = createServer((request, response) => {
    const send = (type: string, body: string) => {
      response.writeHead(200, { 'content-type': type, 'content-security-policy': CSP });
      response.end(body);
    };
    if (request.url === '/')
      send('text/html', '<!doctype html><p id="out">waiting</p><script src="/app.js"></script>');
    else if (request.url === '/app.js')
      send(
        'text/javascript',
        "fetch('/count').then((r) => r.text()).then((t) => { document.getElementById('out').textContent = t; });",
      );
    else if (request.url === '/count') send('text/plain', `count ${++count}`);
    else if (request.url === '/inline')
      send('text/html', '<!doctype html><p id="out">waiting</p><script>document.body.remove()</script>');
    else {
      response.writeHead(404);
      response.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  harness.onCleanup(() => new Promise((resolve) => server.close(resolve)));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

let previous: Browser | undefined;

describe('openPage', () => {
  it("runs the page's own script, which changes the DOM the test reads", async () => {
    const { url } = await tinyServer();
    const { page, errors, browser } = await openPage(harness);
    previous = browser;

    await page.goto(`${url}/`);
    await page.waitForFunction(() => {
      const { document } = globalThis as unknown as PageGlobals;
      return document.querySelector('#out')?.textContent === 'count 1';
    });

    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).innerWidth)).toBe(1280);
    expect(errors).toEqual([]);
  });

  it('closed the browser of the previous test', () => {
    expect(previous?.connected).toBe(false);
  });

  it('opens at the viewport asked for', async () => {
    const { url } = await tinyServer();
    const { page } = await openPage(harness, PHONE);

    await page.goto(`${url}/`);

    const size = await page.evaluate(() => {
      const { innerWidth, innerHeight } = globalThis as unknown as PageGlobals;
      return [innerWidth, innerHeight];
    });

    expect(size).toEqual([375, 740]);
  });

  it('records a Content-Security-Policy violation as an error of the page', async () => {
    const { url } = await tinyServer();
    const { page, errors } = await openPage(harness);

    await page.goto(`${url}/inline`);

    // The inline script was refused: the body is still there.
    expect(await textOf(page, '#out')).toBe('waiting');
    expect(errors.join('\n')).toMatch(/Content Security Policy/);
  });
});

describe('launchBrowser', () => {
  it('fails naming the path and the package when there is no Chromium there', async () => {
    await expect(launchBrowser('/nonexistent/chromium')).rejects.toThrow(
      /No Chromium at \/nonexistent\/chromium: install Debian's package \(apt-get install -y chromium/,
    );
  });

  it('launches the Chromium at CHROMIUM_PATH', async () => {
    const browser = await launchBrowser();
    harness.onCleanup(() => browser.close());

    expect(await browser.version()).toMatch(/Chrom/);
    expect(browser.process()?.spawnfile).toBe(CHROMIUM_PATH);
  });
});
