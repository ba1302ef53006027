/**
 * A real browser for tests: Debian's Chromium, headless, driven by puppeteer-core (which never
 * downloads a browser of its own).
 *
 * ```ts
 * const harness = useHarness();
 *
 * it('shows the page', async () => {
 *   const { page, errors } = await openPage(harness, { width: 375, height: 740 });
 *   await page.goto(url);
 *   expect(errors).toEqual([]);
 * });
 * ```
 *
 * Each openPage launches a browser of its own (a fresh profile: no cookie from another test) and
 * closes it after the test. Chromium missing is an error that says how to install it, never a skip.
 */
import { existsSync } from 'node:fs';
import puppeteer, { type Browser, type HTTPResponse, type Page } from 'puppeteer-core';

/** Where Chromium is: MAILROOM_CHROMIUM, else Debian's package (`apt-get install chromium`). */
export const CHROMIUM_PATH = process.env.MAILROOM_CHROMIUM ?? '/usr/bin/chromium';

/**
 * Chromium's flags: no sandbox (containers and CI run as root, where the sandbox refuses to start),
 * no GPU, and /tmp instead of /dev/shm (64 MB in Docker, too small for a renderer). puppeteer adds
 * `--headless=new` itself for `headless: true`.
 */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] as const;

/** Viewport of a page: CSS pixels. */
export interface Viewport {
  width: number;
  height: number;
}

/** The desktop viewport pages open with unless told otherwise. */
export const DESKTOP: Viewport = { width: 1280, height: 800 };

/** A phone's viewport (an iPhone's CSS width). */
export const PHONE: Viewport = { width: 375, height: 740 };

/** A page of a browser of its own; see {@link openPage}. */
export interface TestPage {
  readonly browser: Browser;
  readonly page: Page;
  /**
   * What went wrong in the page so far, one line each: uncaught exceptions (`pageerror: ...`) and
   * console errors (`console: ...`), which include Content-Security-Policy violations and failed
   * loads (a 4xx or 5xx answer to a request the page made, but for /favicon.ico), with the URL.
   */
  readonly errors: string[];
}

/**
 * Launches headless Chromium at `executablePath` (default {@link CHROMIUM_PATH}). Throws an Error
 * that names the path and the package to install when there is no browser there, and one that names
 * the path, with the launch failure as cause, when it does not start. The caller closes it.
 */
export async function launchBrowser(executablePath = CHROMIUM_PATH): Promise<Browser> {
  if (!existsSync(executablePath)) {
    throw new Error(
      `No Chromium at ${executablePath}: install Debian's package (apt-get install -y chromium, as .ci/run ` +
        'does) or point MAILROOM_CHROMIUM at a Chromium binary',
    );
  }
  try {
    return await puppeteer.launch({
      executablePath,
      headless: true,
      args: [...CHROMIUM_ARGS],
      defaultViewport: DESKTOP,
      // The tests own the process: no signal handlers of puppeteer's in the test worker.
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
  } catch (error) {
    throw new Error(`Chromium at ${executablePath} did not start: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Launches a browser and opens a page at `viewport` (default {@link DESKTOP}) that records its
 * {@link TestPage.errors}. The browser is closed after the current test (a cleanup of `harness`,
 * so it runs before the cleanups registered earlier, such as the server the page talks to).
 */
export async function openPage(
  harness: { onCleanup(cleanup: () => unknown): void },
  viewport: Viewport = DESKTOP,
): Promise<TestPage> {
  const browser = await launchBrowser();
  harness.onCleanup(() => browser.close());
  const page = await browser.newPage();
  await page.setViewport(viewport);
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(`pageerror: ${(error as Error).message ?? String(error)}`));
  page.on('console', (message) => {
    // The favicon Chromium asks every site for is not the page's doing.
    if (message.type() !== 'error' || message.location().url?.endsWith('/favicon.ico')) return;
    errors.push(`console: ${message.text()}${message.location().url ? ` (${message.location().url})` : ''}`);
  });
  return { browser, page, errors };
}

/** An element, as far as the functions that run in a page use it. */
export interface PageElement {
  readonly textContent: string | null;
  readonly outerHTML: string;
  getAttribute(name: string): string | null;
  getBoundingClientRect(): { left: number; right: number; width: number };
}

/**
 * The page's globals, as far as the functions the tests run in it (page.evaluate, waitForFunction)
 * use them: the project compiles without lib.dom, so such a function starts with
 * `const { document } = globalThis as unknown as PageGlobals;` (a cast, erased before it is sent).
 */
export interface PageGlobals {
  document: {
    querySelector(selector: string): PageElement | null;
    querySelectorAll(selector: string): ArrayLike<PageElement>;
    documentElement: PageElement & { scrollWidth: number; clientWidth: number };
    body: PageElement;
  };
  location: { href: string; pathname: string };
  innerWidth: number;
  innerHeight: number;
  fetch: typeof fetch;
  /** Anything a test leaves on `window` (a marker that a reload would wipe). */
  [name: string]: unknown;
}

/** The text of the first element matching `selector`, trimmed; throws when there is none. */
export function textOf(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (element) => (element.textContent ?? '').trim());
}

/** The number an element shows (`1,234`, `56 %`, `7.5/s`): its text without anything but digits and `.`. */
export async function numberIn(page: Page, selector: string): Promise<number> {
  return Number((await textOf(page, selector)).replace(/[^\d.]/g, ''));
}

/**
 * Clicks `selector` and waits for the navigation it starts (a form's POST and its redirect);
 * resolves with the final response.
 */
export async function clickAndWait(page: Page, selector: string): Promise<HTTPResponse | null> {
  const [response] = await Promise.all([page.waitForNavigation(), page.click(selector)]);
  return response;
}
