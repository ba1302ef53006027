/**
 * `mailroom unsubscribe-server` as a user runs it (a child process): refuses to start without a
 * valid secret, serves one-click POSTs against real Redis, and stops cleanly on SIGTERM.
 */
import { DAY, queueKeys, SuppressionList, signUnsubscribeToken } from '@mailroom/core/protocol';
import { describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT, freshQueue, useHarness } from './support/harness.js';
import { PREFIX, REDIS_URL } from './support/redis.js';
import { runMailroom, spawnMailroom } from './support/worker-process.js';

const harness = useHarness();

const SECRET = 'cli-test-secret-0123456789abcdef';

describe('mailroom unsubscribe-server', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('is listed by mailroom --help and has its own usage', async () => {
    const [main, own] = await Promise.all([
      runMailroom(['--help']),
      runMailroom(['unsubscribe-server', '--help']),
    ]);
    expect(main.stdout).toMatch(/^ {2}unsubscribe-server /m);
    expect(own.code).toBe(0);
    expect(own.stdout).toMatch(/^Usage: mailroom unsubscribe-server/);
    expect(own.stdout).toContain('MAILROOM_UNSUBSCRIBE_SECRET');
  });

  it('refuses to start without a secret: exit 3 naming MAILROOM_UNSUBSCRIBE_SECRET', async () => {
    const result = await runMailroom(['unsubscribe-server', '--port', '0'], {
      REDIS_URL,
      MAILROOM_UNSUBSCRIBE_SECRET: undefined,
    });
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('MAILROOM_UNSUBSCRIBE_SECRET');
    expect(result.stderr).not.toContain('listening');
  });

  it('refuses a short secret with exit 3, without showing it', async () => {
    const result = await runMailroom(['unsubscribe-server', '--port', '0'], {
      REDIS_URL,
      MAILROOM_UNSUBSCRIBE_SECRET: 'Short-Secret-9',
    });
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('MAILROOM_UNSUBSCRIBE_SECRET');
    expect(result.stderr + result.stdout).not.toContain('Short-Secret-9');
  });

  it('exits 2 for a bad --port', async () => {
    const result = await runMailroom(['unsubscribe-server', '--port', 'http'], {
      MAILROOM_UNSUBSCRIBE_SECRET: SECRET,
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--port');
  });

  it('exits 4 when Redis is unreachable, without its password', async () => {
    const result = await runMailroom(['unsubscribe-server', '--port', '0'], {
      REDIS_URL: 'redis://:hunter2-secret@127.0.0.1:1',
      MAILROOM_UNSUBSCRIBE_SECRET: SECRET,
    });
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('Redis is unreachable');
    expect(result.stderr).not.toContain('hunter2-secret');
  });

  it('serves one-click POSTs on the port it prints, and exits 0 on SIGTERM', async () => {
    const queue = freshQueue(harness, 'cli-unsubscribe');
    const server = harness.track(
      spawnMailroom(['unsubscribe-server', '--port', '0', '--host', '127.0.0.1'], {
        REDIS_URL,
        MAILROOM_QUEUE: queue,
        MAILROOM_UNSUBSCRIBE_SECRET: `${SECRET} older-secret-0123456789`,
      }),
    );
    await server.waitForStderr('listening on http://');
    const banner = server.stderr();
    expect(banner.trim().split('\n')).toHaveLength(1);
    expect(banner).toContain(`queue=${queue}`);
    const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(banner)?.[1]);
    expect(port).toBeGreaterThan(0);

    const token = signUnsubscribeToken(
      { queue, campaign: 'launch', address: 'ann@example.com', expiresAt: Date.now() + DAY },
      SECRET,
    );
    const response = await fetch(`http://127.0.0.1:${port}/unsubscribe/${token}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'List-Unsubscribe=One-Click',
    });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('');
    const list = new SuppressionList(harness.redis, queueKeys(PREFIX, queue));
    expect(await list.get('ann@example.com')).toMatchObject({
      reason: 'unsubscribe',
      source: 'campaign:launch',
    });

    server.kill('SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(server.logs.some((line) => line.msg === 'unsubscribed' && line.campaign === 'launch')).toBe(true);
    expect(server.stdout() + server.stderr()).not.toContain(SECRET);
  });
});
