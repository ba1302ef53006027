/**
 * The one-click unsubscribe endpoint (packages/worker/src/unsubscribe-server.ts) over real HTTP
 * against real Redis: POST suppresses, GET never does, bad tokens are 400 and write nothing, repeats
 * change nothing, and a failing Redis is a 503.
 */
import { createHmac } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type Socket } from 'node:net';
import { ConfigError, MailError } from '@mailroom/core';
import { DAY, queueKeys, SuppressionList, signUnsubscribeToken } from '@mailroom/core/protocol';
import {
  createUnsubscribeHandler,
  startUnsubscribeServer,
  type UnsubscribeServerOptions,
} from '@mailroom/worker';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { closedPort } from '../packages/core/test/support/closed-port.js';
import { freshQueue, type Harness, useHarness } from './support/harness.js';
import { PREFIX, queueKeyNames, REDIS_URL } from './support/redis.js';
import { captureLogger } from './support/wait.js';

const harness = useHarness();

const SECRET = 'endpoint-test-secret-0123456789';
const OTHER_SECRET = 'another-secret-0123456789abcdef';
const CAMPAIGN = 'spring-sale';

/** What the RFC 8058 §3.1 one-click POST carries. */
const ONE_CLICK = {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: 'List-Unsubscribe=One-Click',
};

/** The headers every answer carries. */
const SECURITY_HEADERS = {
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/**
 * A token over any payload, signed as unsubscribe-token.ts signs (base64url payload, a dot, 16 bytes
 * of HMAC-SHA256 over its context line and the payload): for claims signUnsubscribeToken refuses.
 */
function signRaw(fields: unknown[], secret = SECRET): string {
  const payload = Buffer.from(JSON.stringify(fields)).toString('base64url');
  const mac = createHmac('sha256', secret)
    .update('mailroom-unsubscribe-v1\n')
    .update(payload)
    .digest()
    .subarray(0, 16);
  return `${payload}.${mac.toString('base64url')}`;
}

/** A started endpoint on a fresh queue, closed (then the queue's keys removed) after the test. */
async function endpoint(harness: Harness, options: Partial<UnsubscribeServerOptions> = {}) {
  const queue = freshQueue(harness, 'unsubscribe');
  const capture = captureLogger();
  const server = await startUnsubscribeServer({
    redis: REDIS_URL,
    queue,
    secrets: [SECRET],
    port: 0,
    host: '127.0.0.1',
    logger: capture.logger,
    ...options,
  });
  harness.onCleanup(() => server.close());
  const list = new SuppressionList(harness.redis, queueKeys(PREFIX, queue));
  return {
    queue,
    server,
    list,
    logs: capture,
    origin: `http://127.0.0.1:${server.port}`,
    token(
      address: string,
      claim: { queue?: string; campaign?: string; expiresAt?: number } = {},
      secret = SECRET,
    ) {
      return signUnsubscribeToken(
        { queue, campaign: CAMPAIGN, address, expiresAt: Date.now() + DAY, ...claim },
        secret,
      );
    },
    url(token: string) {
      return `http://127.0.0.1:${server.port}/unsubscribe/${token}`;
    },
    /** Nothing of the queue is in Redis: no suppression list, no other key. */
    async untouched() {
      expect(await list.count()).toBe(0);
      expect(await queueKeyNames(harness.redis, queue)).toEqual([]);
    },
  };
}

/** A node HTTP server on port 0 around a handler, closed after the test. */
async function serve(harness: Harness, handler: Parameters<typeof createServer>[1]): Promise<string> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  harness.onCleanup(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  return `http://127.0.0.1:${address.port}`;
}

/** The attribute values of the first element matching `tag` in an HTML page. */
function attributes(page: string, tag: RegExp): Record<string, string> {
  const element = tag.exec(page)?.[0] ?? '';
  return Object.fromEntries([...element.matchAll(/([a-z-]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
}

/** Sends raw bytes on a new connection; resolves with everything the server sent until it closed. */
function rawRequest(port: number, write: (socket: Socket) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      received += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
    socket.on('connect', () => write(socket));
  });
}

describe('POST /unsubscribe/<token>', () => {
  it('puts the address on the suppression list and answers 200 with an empty body', async () => {
    const rig = await endpoint(harness);
    const before = Date.now();
    const response = await fetch(rig.url(rig.token('ann@example.com')), ONE_CLICK);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('');
    expect(response.headers.get('content-length')).toBe('0');
    const record = await rig.list.get('ann@example.com');
    expect(record).toMatchObject({
      address: 'ann@example.com',
      reason: 'unsubscribe',
      source: `campaign:${CAMPAIGN}`,
    });
    expect(record?.at).toBeGreaterThanOrEqual(before);
    expect(record?.at).toBeLessThanOrEqual(Date.now());
  });

  it('answers a repeated POST with 200 and keeps the first record', async () => {
    const rig = await endpoint(harness);
    const url = rig.url(rig.token('ann@example.com'));
    expect((await fetch(url, ONE_CLICK)).status).toBe(200);
    const first = await rig.list.get('ann@example.com');
    await new Promise((resolve) => setTimeout(resolve, 20));
    for (let i = 0; i < 3; i++) {
      const again = await fetch(url, ONE_CLICK);
      expect(again.status).toBe(200);
      expect(await again.text()).toBe('');
    }
    expect(await rig.list.get('ann@example.com')).toEqual(first);
    expect(await rig.list.count()).toBe(1);
  });

  it('keeps the first record when another campaign’s link of the same address is used later', async () => {
    const rig = await endpoint(harness);
    await fetch(rig.url(rig.token('ann@example.com')), ONE_CLICK);
    const first = await rig.list.get('ann@example.com');
    const later = await fetch(rig.url(rig.token('ANN@example.com', { campaign: 'autumn' })), ONE_CLICK);
    expect(later.status).toBe(200);
    expect(await rig.list.get('ann@example.com')).toEqual(first);
  });

  it('suppresses the normalised address of the token', async () => {
    const rig = await endpoint(harness);
    await fetch(rig.url(rig.token('Ann <Ann@Bücher.Example>')), ONE_CLICK);
    expect(await rig.list.get('ann@xn--bcher-kva.example')).toMatchObject({ reason: 'unsubscribe' });
  });

  it.each([
    ['no body', {}],
    [
      'a multipart body',
      {
        body: (() => {
          const form = new FormData();
          form.set('List-Unsubscribe', 'One-Click');
          return form;
        })(),
      },
    ],
    ['another body', { headers: { 'content-type': 'text/plain' }, body: 'unsubscribe me' }],
  ])(
    'takes a POST with %s too (lenient: a real provider’s unsubscribe is never dropped)',
    async (_, init) => {
      const rig = await endpoint(harness);
      const response = await fetch(rig.url(rig.token('ann@example.com')), { method: 'POST', ...init });
      expect(response.status).toBe(200);
      expect(await rig.list.get('ann@example.com')).toMatchObject({ reason: 'unsubscribe' });
    },
  );

  it('answers a browser (Accept: text/html) with a confirmation page', async () => {
    const rig = await endpoint(harness);
    const response = await fetch(rig.url(rig.token('ann@example.com')), {
      ...ONE_CLICK,
      headers: {
        ...ONE_CLICK.headers,
        accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
      },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const page = await response.text();
    expect(page).toContain('You are unsubscribed');
    expect(page).toContain('ann@example.com');
    expect(await rig.list.get('ann@example.com')).toMatchObject({ reason: 'unsubscribe' });
  });

  it('answers a client that accepts anything (*/*) with the empty body', async () => {
    const rig = await endpoint(harness);
    const response = await fetch(rig.url(rig.token('ann@example.com')), {
      ...ONE_CLICK,
      headers: { ...ONE_CLICK.headers, accept: '*/*' },
    });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('');
  });

  it('logs the campaign and the domain, never the address or the token', async () => {
    const rig = await endpoint(harness);
    const token = rig.token('ann.lee@example.com');
    await fetch(rig.url(token), ONE_CLICK);
    await fetch(rig.url(token), ONE_CLICK);
    expect(rig.logs.lines.filter((line) => line.campaign === CAMPAIGN)).toEqual([
      expect.objectContaining({ domain: 'example.com', added: true, msg: 'unsubscribed' }),
      expect.objectContaining({ domain: 'example.com', added: false }),
    ]);
    expect(rig.logs.text()).not.toContain('ann.lee');
    expect(rig.logs.text()).not.toContain(token.split('.')[1]);
  });
});

describe('a bad token', () => {
  const cases: [string, (rig: Awaited<ReturnType<typeof endpoint>>) => string, RegExp][] = [
    [
      'forged (signed with another secret)',
      (rig) => rig.token('ann@example.com', {}, OTHER_SECRET),
      /not valid/,
    ],
    [
      'altered (one character of its payload changed)',
      (rig) => {
        const token = rig.token('ann@example.com');
        const index = 10;
        return token.slice(0, index) + (token[index] === 'A' ? 'B' : 'A') + token.slice(index + 1);
      },
      /not valid/,
    ],
    [
      'altered (its last character changed)',
      (rig) => {
        const token = rig.token('ann@example.com');
        return token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
      },
      /not valid/,
    ],
    ['expired', (rig) => rig.token('ann@example.com', { expiresAt: Date.now() - 1000 }), /expired/],
    ['malformed', () => 'not-a-token', /cut short/],
    ['cut short', (rig) => rig.token('ann@example.com').slice(0, -5), /cut short/],
    [
      'for another queue',
      (rig) => rig.token('ann@example.com', { queue: 'another-queue' }),
      /not valid here/,
    ],
  ];

  it.each(cases)('%s: POST answers 400 with a reason and writes nothing', async (_, make, reason) => {
    const rig = await endpoint(harness);
    const response = await fetch(rig.url(make(rig)), ONE_CLICK);
    expect(response.status).toBe(400);
    expect(response.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(await response.text()).toMatch(reason);
    await rig.untouched();
  });

  it.each(cases)('%s: GET answers 400 too', async (_, make) => {
    const rig = await endpoint(harness);
    const response = await fetch(rig.url(make(rig)));
    expect(response.status).toBe(400);
    await rig.untouched();
  });

  it('answers with nothing of the token, the secret or Redis', async () => {
    const rig = await endpoint(harness);
    const token = rig.token('ann@example.com', {}, OTHER_SECRET);
    const text = await (await fetch(rig.url(token), ONE_CLICK)).text();
    for (const secret of [SECRET, OTHER_SECRET, token, 'ann@example.com', 'redis', '6379']) {
      expect(text).not.toContain(secret);
    }
  });

  it('signed with the secret but holding no usable address: shown escaped, refused on POST', async () => {
    const rig = await endpoint(harness);
    const address = '<script>alert(1)</script>@example.com';
    const token = signRaw([1, rig.queue, CAMPAIGN, address, Math.ceil((Date.now() + DAY) / 1000)]);
    const page = await (await fetch(rig.url(token))).text();
    expect(page).not.toContain('<script>');
    expect(page).toContain('&lt;script&gt;alert(1)&lt;/script&gt;@example.com');
    const response = await fetch(rig.url(token), ONE_CLICK);
    expect(response.status).toBe(400);
    await rig.untouched();
    expect(rig.logs.text()).not.toContain('alert(1)');
  });
});

describe('GET /unsubscribe/<token>', () => {
  it('shows a confirmation page and does not suppress', async () => {
    const rig = await endpoint(harness);
    const response = await fetch(rig.url(rig.token('ann@example.com')));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const page = await response.text();
    expect(page).toMatch(/^<!doctype html>/);
    expect(page).toContain('<meta charset="utf-8">');
    expect(page).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
    expect(page).toContain('<strong>ann@example.com</strong>');
    expect(page).toMatch(/<button type="submit">Unsubscribe<\/button>/);
    await rig.untouched();
  });

  it('has a form POSTing List-Unsubscribe=One-Click to the page’s own path, behind a path prefix too', async () => {
    const rig = await endpoint(harness);
    const url = rig.url(rig.token('ann@example.com'));
    const page = await (await fetch(url)).text();
    const form = attributes(page, /<form [^>]*>/);
    expect(form.method).toBe('post');
    expect(new URL(form.action as string, url).href).toBe(url);
    // A proxy serving the endpoint under /mail/ forwards /mail/unsubscribe/<token> as /unsubscribe/<token>.
    const public_ = `https://example.com/mail/unsubscribe/${url.split('/').pop()}`;
    expect(new URL(form.action as string, public_).href).toBe(public_);
    expect(attributes(page, /<input [^>]*>/)).toEqual({
      type: 'hidden',
      name: 'List-Unsubscribe',
      value: 'One-Click',
    });
  });

  it('loads nothing from anywhere: no scripts, no external resources', async () => {
    const rig = await endpoint(harness);
    const page = await (await fetch(rig.url(rig.token('ann@example.com')))).text();
    expect(page).not.toMatch(/<script|<img|<link|<iframe|src=|href=|url\(|@import/i);
  });

  it('sends the security headers', async () => {
    const rig = await endpoint(harness);
    const response = await fetch(rig.url(rig.token('ann@example.com')));
    expect(Object.fromEntries(response.headers)).toMatchObject(SECURITY_HEADERS);
    const policy = response.headers.get('content-security-policy') ?? '';
    expect(policy).toContain("default-src 'none'");
    expect(policy).toContain("style-src 'unsafe-inline'");
    expect(policy).toContain("form-action 'self'");
  });

  it('shows the address HTML-escaped', async () => {
    const rig = await endpoint(harness);
    const page = await (await fetch(rig.url(rig.token(`"o'neil&co"@example.com`)))).text();
    expect(page).toContain('<strong>&quot;o&#39;neil&amp;co&quot;@example.com</strong>');
    expect(page).not.toContain(`o'neil&co`);
  });

  it('submitting the page’s form unsubscribes and shows the done page', async () => {
    const rig = await endpoint(harness);
    const url = rig.url(rig.token('ann@example.com'));
    const page = await (await fetch(url)).text();
    const form = attributes(page, /<form [^>]*>/);
    const input = attributes(page, /<input [^>]*>/);
    const response = await fetch(new URL(form.action as string, url), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
      body: new URLSearchParams({ [input.name as string]: input.value as string }),
    });
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('You are unsubscribed');
    expect(await rig.list.get('ann@example.com')).toMatchObject({ reason: 'unsubscribe' });
  });

  it('HEAD answers as GET without a body, and does not suppress', async () => {
    const rig = await endpoint(harness);
    const url = rig.url(rig.token('ann@example.com'));
    const get = await fetch(url);
    const page = await get.text();
    const head = await fetch(url, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(head.headers.get('content-length')).toBe(String(Buffer.byteLength(page)));
    expect(await head.text()).toBe('');
    await rig.untouched();
  });
});

describe('other requests', () => {
  it.each(['/', '/unsubscribe', '/unsubscribe/', '/unsubscribe/a/b', '/metrics'])(
    '%s is 404',
    async (path) => {
      const rig = await endpoint(harness);
      for (const method of ['GET', 'POST']) {
        const response = await fetch(`${rig.origin}${path}`, { method });
        expect(response.status, method).toBe(404);
      }
      await rig.untouched();
    },
  );

  it('ignores a query string', async () => {
    const rig = await endpoint(harness);
    const response = await fetch(`${rig.url(rig.token('ann@example.com'))}?utm_source=x`, ONE_CLICK);
    expect(response.status).toBe(200);
    expect(await rig.list.count()).toBe(1);
  });

  it.each(['PUT', 'DELETE', 'PATCH', 'OPTIONS'])(
    '%s is 405 with Allow, and writes nothing',
    async (method) => {
      const rig = await endpoint(harness);
      const response = await fetch(rig.url(rig.token('ann@example.com')), {
        method,
        body: method === 'OPTIONS' ? null : 'x',
      });
      expect(response.status).toBe(405);
      expect(response.headers.get('allow')).toBe('GET, HEAD, POST');
      await rig.untouched();
    },
  );

  it('answers a body over the limit with 413 and writes nothing', async () => {
    const rig = await endpoint(harness);
    const response = await fetch(rig.url(rig.token('ann@example.com')), {
      ...ONE_CLICK,
      body: `List-Unsubscribe=One-Click&pad=${'x'.repeat(20 * 1024)}`,
    });
    expect(response.status).toBe(413);
    await rig.untouched();
  });

  it('answers a chunked body that grows over the limit with 413 and writes nothing', async () => {
    const rig = await endpoint(harness, { maxBodyBytes: 1024 });
    const chunk = new TextEncoder().encode('x'.repeat(512));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // A client that would go on sending for ever (8 MiB): the server stops it.
        if (sent++ < 16_384) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const response = await fetch(rig.url(rig.token('ann@example.com')), {
      method: 'POST',
      body,
      duplex: 'half',
    } as RequestInit);
    expect(response.status).toBe(413);
    expect(sent).toBeLessThan(16_384);
    await rig.untouched();
  });

  it('answers a body that does not arrive in time with 408, closes the connection and writes nothing', async () => {
    const rig = await endpoint(harness, { bodyTimeout: 200 });
    const path = new URL(rig.url(rig.token('ann@example.com'))).pathname;
    const started = Date.now();
    const answer = await rawRequest(rig.server.port, (socket) => {
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nList-Unsub`,
      );
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer).toMatch(/\r\nconnection: close\r\n/i);
    expect(Date.now() - started).toBeLessThan(5_000);
    await rig.untouched();
  });
});

describe('Redis failing', () => {
  it('answers 503 with Retry-After when Redis is unreachable, and logs without the address', async () => {
    const redis = new Redis({
      host: '127.0.0.1',
      port: await closedPort(),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      lazyConnect: true,
    });
    redis.on('error', () => {});
    harness.onCleanup(() => redis.disconnect());
    redis.connect().catch(() => {});
    const queue = freshQueue(harness, 'unsubscribe');
    const capture = captureLogger();
    const origin = await serve(
      harness,
      createUnsubscribeHandler({ redis, queue, secrets: [SECRET], logger: capture.logger }),
    );
    const token = signUnsubscribeToken(
      { queue, campaign: CAMPAIGN, address: 'ann.lee@example.com', expiresAt: Date.now() + DAY },
      SECRET,
    );
    const response = await fetch(`${origin}/unsubscribe/${token}`, ONE_CLICK);
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('60');
    const text = await response.text();
    expect(text).toMatch(/try again later/);
    expect(text).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|redis/i);
    const line = capture.lines.find((entry) => entry.campaign === CAMPAIGN);
    expect(line).toMatchObject({ domain: 'example.com', level: 40 });
    expect(capture.text()).not.toContain('ann.lee');
    expect(capture.text()).not.toContain(token.split('.')[1]);
    // The confirmation page needs no Redis.
    expect((await fetch(`${origin}/unsubscribe/${token}`)).status).toBe(200);
  });

  it('answers 503 when Redis takes the connection and never answers', async () => {
    const sockets = new Set<Socket>();
    const silent = createTcpServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    harness.onCleanup(
      () =>
        new Promise<void>((resolve) => {
          silent.close(() => resolve());
          for (const socket of sockets) socket.destroy();
        }),
    );
    const address = silent.address();
    if (!address || typeof address === 'string') throw new Error('no port');
    // A worker-style client: it queues commands until Redis answers.
    const redis = new Redis({ host: '127.0.0.1', port: address.port, maxRetriesPerRequest: null });
    redis.on('error', () => {});
    harness.onCleanup(() => redis.disconnect());
    const queue = freshQueue(harness, 'unsubscribe');
    const origin = await serve(
      harness,
      createUnsubscribeHandler({
        redis,
        queue,
        secrets: [SECRET],
        redisTimeout: 300,
        logger: captureLogger().logger,
      }),
    );
    const token = signUnsubscribeToken({ queue, campaign: CAMPAIGN, address: 'ann@example.com' }, SECRET);
    const started = Date.now();
    const response = await fetch(`${origin}/unsubscribe/${token}`, ONE_CLICK);
    expect(response.status).toBe(503);
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

describe('startUnsubscribeServer', () => {
  it('throws MailError EREDIS, without the password, when Redis is unreachable', async () => {
    const port = await closedPort();
    const error = await startUnsubscribeServer({
      redis: `redis://:hunter2-secret@127.0.0.1:${port}`,
      queue: 'mail',
      secrets: [SECRET],
      port: 0,
      connectTimeout: 500,
      logger: captureLogger().logger,
    }).catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(MailError);
    expect((error as MailError).code).toBe('EREDIS');
    expect((error as MailError).message).not.toContain('hunter2-secret');
  });

  it.each([
    ['no secret', []],
    ['a short secret', [SECRET, 'short']],
  ])('throws ConfigError for %s, without showing it', async (_, secrets) => {
    const error = await startUnsubscribeServer({
      redis: REDIS_URL,
      queue: 'mail',
      secrets,
      port: 0,
    }).catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).not.toContain(SECRET);
  });

  it('closes idempotently, and stops answering', async () => {
    const rig = await endpoint(harness);
    await Promise.all([rig.server.close(), rig.server.close()]);
    await rig.server.close();
    await expect(fetch(rig.url(rig.token('ann@example.com')), ONE_CLICK)).rejects.toThrow();
  });
});
