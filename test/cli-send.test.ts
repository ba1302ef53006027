/**
 * `mailroom send` as a user runs it: one message from flags, enqueued on real Redis (and read back
 * from the job), or sent at once (`--now`) to a real SMTP server.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeWire, type EmailMessage } from '@mailroom/core';
import { parseBatchJob } from '@mailroom/producer';
import type { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import {
  bullmqQueue,
  CLI_TEST_TIMEOUT,
  freshQueue,
  smtpEnvironment,
  smtpServer,
  useHarness,
  useTemporaryDirectory,
} from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import { parse, type SmtpServerOptions } from './support/smtp-server.js';
import { runMailroom } from './support/worker-process.js';

const harness = useHarness();
const dir = useTemporaryDirectory('mailroom-cli-send-');

function testQueue(): { queue: string; jobs: Queue } {
  const queue = freshQueue(harness, 'cli-send');
  return { queue, jobs: bullmqQueue(harness, queue) };
}

/** The messages of a batch job, decoded as a worker would. */
async function messagesOfJob(jobs: Queue, id: string): Promise<EmailMessage[]> {
  const job = await jobs.getJob(id);
  expect(job, `job ${id}`).toBeDefined();
  return parseBatchJob(job?.data).messages.map(
    (wire, index) => decodeWire(wire, `messages[${index}]`).message,
  );
}

async function smtp(options: SmtpServerOptions = {}) {
  const server = await smtpServer(harness, options);
  return { server, env: smtpEnvironment(server) };
}

describe('mailroom send (enqueue)', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('enqueues the message built from every flag and prints its job id', async () => {
    const { queue, jobs } = testQueue();
    await writeFile(join(dir, 'body.txt'), 'Thanks for your order.\n');
    await writeFile(join(dir, 'body.html'), '<p>Thanks for your <b>order</b>.</p>');
    await writeFile(join(dir, 'receipt.pdf'), Buffer.from([0x25, 0x50, 0x44, 0x46, 0x00, 0xff]));
    const result = await runMailroom(
      [
        'send',
        '--from',
        'Shop <shop@example.com>',
        '--to',
        'ann@example.com',
        '--to',
        '"Doe, John" <john@example.com>',
        '--cc',
        'boss@example.com',
        '--bcc',
        'audit@example.com',
        '--reply-to',
        'help@example.com',
        '--subject',
        'Your receipt',
        '--body-file',
        join(dir, 'body.txt'),
        '--html-file',
        join(dir, 'body.html'),
        '--header',
        'X-Order: 1234',
        '--attach',
        join(dir, 'receipt.pdf'),
        '--queue',
        queue,
      ],
      { REDIS_URL },
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const jobId = result.stdout.trim();
    expect(jobId).toMatch(/^[0-9a-f-]{36}$/);

    const [message] = await messagesOfJob(jobs, jobId);
    expect(message?.bcc).toEqual(['audit@example.com']);
    const parsed = await parse((message as EmailMessage).message());
    expect(parsed.from?.text).toBe('"Shop" <shop@example.com>');
    expect((Array.isArray(parsed.to) ? parsed.to[0] : parsed.to)?.value.map((a) => a.address)).toEqual([
      'ann@example.com',
      'john@example.com',
    ]);
    expect((Array.isArray(parsed.cc) ? parsed.cc[0] : parsed.cc)?.text).toBe('boss@example.com');
    expect(parsed.replyTo?.text).toBe('help@example.com');
    expect(parsed.subject).toBe('Your receipt');
    expect(parsed.text).toBe('Thanks for your order.\n');
    // Text parts always end with a newline (SPEC §2.2).
    expect(parsed.html).toBe('<p>Thanks for your <b>order</b>.</p>\n');
    expect(parsed.headers.get('x-order')).toBe('1234');
    expect(parsed.attachments).toHaveLength(1);
    expect(parsed.attachments[0]?.filename).toBe('receipt.pdf');
    expect(parsed.attachments[0]?.contentType).toBe('application/pdf');
    expect(parsed.attachments[0]?.content).toEqual(Buffer.from([0x25, 0x50, 0x44, 0x46, 0x00, 0xff]));
  });

  it('reads the body from stdin with --body-file - and prints JSON with --json', async () => {
    const { queue, jobs } = testQueue();
    const result = await runMailroom(
      [
        'send',
        '--from',
        'a@example.com',
        '--to',
        'b@example.com',
        '--subject',
        'Piped',
        '--body-file',
        '-',
        '--json',
      ],
      { REDIS_URL, MAILROOM_QUEUE: queue },
      { input: 'from a pipe\n' },
    );
    expect(result.code).toBe(0);
    const output = JSON.parse(result.stdout) as { jobId: string; queue: string; messages: number };
    expect(output).toMatchObject({ queue, messages: 1, duplicate: false });
    const [message] = await messagesOfJob(jobs, output.jobId);
    expect(message?.body).toBe('from a pipe\n');
  });

  it('enqueues nothing again for a repeated --idempotency-key', async () => {
    const { queue, jobs } = testQueue();
    const args = [
      'send',
      '--from',
      'a@example.com',
      '--to',
      'b@example.com',
      '--subject',
      'Once',
      '--body',
      'x',
    ];
    const first = await runMailroom([...args, '--idempotency-key', 'order-77'], {
      REDIS_URL,
      MAILROOM_QUEUE: queue,
    });
    const second = await runMailroom([...args, '--idempotency-key', 'order-77'], {
      REDIS_URL,
      MAILROOM_QUEUE: queue,
    });
    expect(first.code).toBe(0);
    expect(second.code).toBe(0);
    expect(second.stderr).toContain('idempotency key "order-77" was already used');
    expect(second.stdout.trim()).toBe(first.stdout.trim());
    expect(await jobs.getJobCounts('waiting')).toEqual({ waiting: 1 });
  });

  it('rejects a bad message with exit 2 and enqueues nothing', async () => {
    const { queue, jobs } = testQueue();
    const base = ['--from', 'a@example.com', '--subject', 'Hi', '--body', 'x'];
    const [injected, noRecipient, badAddress, missingFile, badHeader, bothBodies] = await Promise.all([
      runMailroom(
        ['send', ...base, '--to', 'b@example.com', '--header', 'X-A: 1\r\nBcc: victim@example.com'],
        {
          REDIS_URL,
          MAILROOM_QUEUE: queue,
        },
      ),
      runMailroom(['send', ...base], { REDIS_URL, MAILROOM_QUEUE: queue }),
      runMailroom(['send', ...base, '--to', 'not an address@'], { REDIS_URL, MAILROOM_QUEUE: queue }),
      runMailroom(['send', ...base, '--to', 'b@example.com', '--attach', join(dir, 'missing.pdf')], {
        REDIS_URL,
        MAILROOM_QUEUE: queue,
      }),
      runMailroom(['send', ...base, '--to', 'b@example.com', '--header', 'no colon'], {
        REDIS_URL,
        MAILROOM_QUEUE: queue,
      }),
      runMailroom(['send', ...base, '--to', 'b@example.com', '--body-file', join(dir, 'body.txt')], {
        REDIS_URL,
        MAILROOM_QUEUE: queue,
      }),
    ]);
    for (const result of [injected, noRecipient, badAddress, missingFile, badHeader, bothBodies]) {
      expect(result.code).toBe(2);
      expect(result.stdout).toBe('');
    }
    expect(injected.stderr).toMatch(/invalid message: .*X-A/);
    expect(noRecipient.stderr).toContain('--to is required');
    expect(badAddress.stderr).toContain('Invalid address');
    expect(missingFile.stderr).toContain(`cannot read --attach "${join(dir, 'missing.pdf')}": no such file`);
    expect(badHeader.stderr).toContain('--header must look like "Name: value"');
    expect(bothBodies.stderr).toContain('--body and --body-file are exclusive');
    expect(Object.values(await jobs.getJobCounts()).every((count) => count === 0)).toBe(true);
  });

  it('refuses an address without a domain in any address flag with exit 2 naming the flag, and enqueues nothing', async () => {
    // Core accepts a bare local part (Django does: "root" for local delivery); the CLI does not.
    const { queue, jobs } = testQueue();
    const env = { REDIS_URL, MAILROOM_QUEUE: queue };
    const from = ['--from', 'a@example.com'];
    const to = ['--to', 'b@example.com'];
    const cases: [string, string[]][] = [
      ['--to', [...from, '--to', 'bob']],
      ['--to', [...from, ...to, '--to', 'Bob <bob>']],
      ['--cc', [...from, ...to, '--cc', 'carol']],
      ['--bcc', [...from, ...to, '--bcc', '"dave@example.com"']],
      ['--reply-to', [...from, ...to, '--reply-to', 'help']],
      ['--from', ['--from', 'root', ...to]],
    ];
    const results = await Promise.all(
      cases.map(([, flags]) => runMailroom(['send', '--subject', 'Hi', '--body', 'x', ...flags], env)),
    );
    results.forEach((result, index) => {
      const [flag, flags] = cases[index] as [string, string[]];
      const label = flags.join(' ');
      expect(result.code, label).toBe(2);
      expect(result.stdout, label).toBe('');
      expect(result.stderr, label).toMatch(new RegExp(`mailroom send: ${flag} ".*" has no domain`));
    });
    expect(results[0]?.stderr).toContain('give a full address such as bob@example.com');
    expect(Object.values(await jobs.getJobCounts()).every((count) => count === 0)).toBe(true);
  });
});

describe('mailroom send --now', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('sends through the SMTP backend and prints the server reply', async () => {
    const { server, env } = await smtp();
    const result = await runMailroom(
      [
        'send',
        '--now',
        '--from',
        'a@example.com',
        '--to',
        'b@example.com',
        '--subject',
        'Now',
        '--body',
        'Hello',
      ],
      { ...env, REDIS_URL: 'redis://127.0.0.1:1' },
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^250 /);
    expect(server.messages).toHaveLength(1);
    expect(server.messages[0]?.to).toEqual(['b@example.com']);
    expect((await parse(server.messages[0]?.raw as Buffer)).subject).toBe('Now');
  });

  it('exits 1 with the reply when the server refuses the message', async () => {
    const { server, env } = await smtp({ onRcpt: () => ({ code: 550, message: 'No such user here' }) });
    const result = await runMailroom(
      [
        'send',
        '--now',
        '--from',
        'a@example.com',
        '--to',
        'b@example.com',
        '--subject',
        'x',
        '--body',
        'x',
        '--json',
      ],
      env,
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('refused by the server');
    expect(result.stderr).toContain('No such user here');
    expect(JSON.parse(result.stdout)).toMatchObject({
      sent: false,
      error: { reason: 'rejected', code: 550 },
    });
    expect(server.messages).toHaveLength(0);
  });

  it('sends to the accepted recipients, reports the refused ones and exits 0', async () => {
    const { server, env } = await smtp({
      onRcpt: (address) => (address.startsWith('gone') ? { code: 550, message: 'Mailbox gone' } : undefined),
    });
    const result = await runMailroom(
      [
        'send',
        '--now',
        '--from',
        'a@example.com',
        '--to',
        'b@example.com',
        '--to',
        'gone@example.com',
      ].concat(['--subject', 'x', '--body', 'x']),
      env,
    );
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('gone@example.com refused (550)');
    expect(server.messages.map((message) => message.to)).toEqual([['b@example.com']]);
  });

  it('exits 4 when the mail server cannot be reached', async () => {
    const result = await runMailroom(
      ['send', '--now', '--from', 'a@example.com', '--to', 'b@example.com', '--subject', 'x', '--body', 'x'],
      { EMAIL_BACKEND: 'smtp', EMAIL_HOST: '127.0.0.1', EMAIL_PORT: '1' },
    );
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('the mail server is unreachable');
  });
});
