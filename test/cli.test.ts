/**
 * The `mailroom` CLI as a user runs it (a child process, stdout and stderr as pipes): help of every
 * command, strict flags, configuration errors, fail-fast on an unreachable Redis, and `stats`
 * against real Redis.
 */
import { readFileSync } from 'node:fs';
import { EmailMessage } from '@mailroom/core';
import { createProducer, startCampaign } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT, freshQueue, queueRig, useHarness } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import { captureLogger } from './support/wait.js';
import { runMailroom, runMailroomIntoPipe } from './support/worker-process.js';

const harness = useHarness();

const UNREACHABLE = 'redis://:hunter2-secret@127.0.0.1:1';

describe('mailroom --help', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('lists every command and exits 0', async () => {
    const result = await runMailroom(['--help']);
    expect(result.code).toBe(0);
    for (const command of ['worker', 'send', 'enqueue', 'campaign', 'failed', 'stats']) {
      expect(result.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    }
  });

  it('prints the usage of every command, with its flags, environment and examples, and exits 0', async () => {
    const expectations: [string[], RegExp[]][] = [
      [
        ['worker', '--help'],
        [/^Usage: mailroom worker/, /MAILROOM_CONCURRENCY/],
      ],
      [
        ['send', '--help'],
        [/^Usage: mailroom send/, /--body-file/, /--now/, /EMAIL_HOST/, /Examples:/],
      ],
      [
        ['enqueue', '--help'],
        [/^Usage: mailroom enqueue/, /--batch-size/, /line number/, /Examples:/],
      ],
      [
        ['campaign', 'start', '--help'],
        [/^Usage: mailroom campaign/, /--recipients/, /--unsubscribe-url/],
      ],
      [
        ['campaign', 'status', 'x', '--help'],
        [/campaign status <id>/, /--watch/, /Examples:/],
      ],
      [
        ['failed', '--help'],
        [/^Usage: mailroom failed/, /failed retry/, /--all/, /Examples:/],
      ],
      [
        ['stats', '-h'],
        [/^Usage: mailroom stats/, /--json/, /REDIS_URL/],
      ],
    ];
    const results = await Promise.all(expectations.map(([args]) => runMailroom(args)));
    results.forEach((result, index) => {
      const [args, patterns] = expectations[index] as [string[], RegExp[]];
      expect(result.code, args.join(' ')).toBe(0);
      expect(result.stderr, args.join(' ')).toBe('');
      for (const pattern of patterns) expect(result.stdout, args.join(' ')).toMatch(pattern);
    });
  });

  it('without a command prints the usage on stderr and exits 2; an unknown command exits 2', async () => {
    const [none, unknown] = await Promise.all([runMailroom([]), runMailroom(['sned'])]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('Usage: mailroom <command>');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "sned"');
  });
});

describe('mailroom --version', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('prints the version of @mailroom/worker (--version or -V) and exits 0', async () => {
    const { version } = JSON.parse(
      readFileSync(new URL('../packages/worker/package.json', import.meta.url), 'utf8'),
    ) as { version: string };
    const results = await Promise.all([runMailroom(['--version']), runMailroom(['-V'])]);
    for (const result of results) {
      expect(result.code).toBe(0);
      expect(result.stdout).toBe(`${version}\n`);
      expect(result.stderr).toBe('');
    }
  });
});

describe('did you mean', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('an unknown command close to a known one names it, and exits 2', async () => {
    const [stat, version, far] = await Promise.all([
      runMailroom(['stat']),
      runMailroom(['--verison']),
      runMailroom(['deploy']),
    ]);
    expect(stat.code).toBe(2);
    expect(stat.stderr).toContain('unknown command "stat" (did you mean stats?)');
    expect(version.code).toBe(2);
    expect(version.stderr).toContain('unknown command "--verison" (did you mean --version?)');
    expect(far.code).toBe(2);
    expect(far.stderr).toContain('unknown command "deploy"');
    expect(far.stderr).not.toContain('did you mean');
  });

  it('an unknown flag close to a known one names it, before anything is enqueued', async () => {
    const [send, stats] = await Promise.all([
      runMailroom(['send', '--form', 'a@example.com', '--to', 'b@example.com'], { REDIS_URL: UNREACHABLE }),
      runMailroom(['stats', '--jsn'], { REDIS_URL: UNREACHABLE }),
    ]);
    expect(send.code).toBe(2);
    expect(send.stderr).toContain("Unknown option '--form' (did you mean --from?)");
    expect(send.stderr).toContain('Usage: mailroom send');
    expect(stats.code).toBe(2);
    expect(stats.stderr).toContain("Unknown option '--jsn' (did you mean --json?)");
  });

  it('an unknown subcommand close to a known one names it', async () => {
    const [failed, campaign] = await Promise.all([
      runMailroom(['failed', 'lsit']),
      runMailroom(['campaign', 'stauts', 'june']),
    ]);
    expect(failed.code).toBe(2);
    expect(failed.stderr).toContain('unknown subcommand "lsit" (did you mean list?)');
    expect(campaign.code).toBe(2);
    expect(campaign.stderr).toContain('unknown subcommand "stauts" (did you mean status?)');
  });
});

describe('output into a pipe closed early', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('mailroom stats | head -1 exits 0, quietly, when head has gone', async () => {
    const queue = freshQueue(harness, 'cli-pipe');
    const producer = createProducer({ redis: REDIS_URL, queue, logger: captureLogger().logger });
    harness.onCleanup(() => producer.close());
    // 1,000 campaign rows of about 170 bytes: far more than a pipe holds (64 KB), so stats is still
    // writing when head has read its line and closed the pipe.
    for (let index = 0; index < 1000; index++) {
      const campaign = await startCampaign(producer, {
        id: `campaign-${index}-${'x'.repeat(100)}`,
        template: { subject: 'News', text: 'Hello', fromEmail: 'news@example.com' },
        recipients: [],
      });
      await campaign.enqueued;
    }
    const result = await runMailroomIntoPipe(['stats'], 'head -n 1', { REDIS_URL, MAILROOM_QUEUE: queue });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(`queue ${queue} (prefix {mailroom}) on ${REDIS_URL}\n`);
  });

  it('campaign status --watch | head -1 stops at the next line, with 0 and only the no-worker warning on stderr', async () => {
    const queue = freshQueue(harness, 'cli-pipe');
    const producer = createProducer({ redis: REDIS_URL, queue, logger: captureLogger().logger });
    harness.onCleanup(() => producer.close());
    // No worker: the campaign stays running, so --watch would print a line every 50 ms for ever.
    const campaign = await startCampaign(producer, {
      id: 'june',
      template: { subject: 'News', text: 'Hello', fromEmail: 'news@example.com' },
      recipients: ['a@example.com'],
    });
    await campaign.enqueued;
    const result = await runMailroomIntoPipe(
      ['campaign', 'status', 'june', '--watch', '--interval', '50ms'],
      'head -n 1',
      { REDIS_URL, MAILROOM_QUEUE: queue },
    );
    // No worker consumes the queue: the one warning of that, and nothing about the closed pipe.
    expect(result.stderr).toBe(
      `warning: no worker is consuming queue ${queue} (none seen in the last 15 s): start one with \`mailroom worker\`\n`,
    );
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^\[-+\] 0% 0\/1 sent · .* · running\n$/);
  });

  it('a worker whose log pipe closes exits 1 (for its supervisor to restart it), without a stack trace', async () => {
    const { env, producer } = await queueRig(harness, { label: 'cli-pipe' });
    let exited = false;
    const worker = runMailroomIntoPipe(['worker'], 'head -n 1', { ...env, LOG_LEVEL: 'info' }).finally(() => {
      exited = true;
    });
    // Each batch is a log line on stdout: one every 200 ms until one hits the pipe head has closed.
    for (let index = 0; !exited && index < 150; index++) {
      await producer.enqueue(new EmailMessage('Hi', 'Hello', 'shop@example.com', [`r${index}@example.com`]));
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const result = await worker;
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('mailroom worker pid=');
    expect(result.stderr).not.toMatch(/EPIPE|Error/);
  });
});

describe('strict flags', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('an unknown flag exits 2 with the reason and the usage, for every command', async () => {
    const commands = [
      ['send', '--from', 'a@example.com', '--bogus'],
      ['enqueue', 'x.jsonl', '--bogus'],
      ['campaign', 'status', 'some-id', '--bogus'],
      ['campaign', 'start', '--bogus'],
      ['failed', 'list', '--bogus'],
      ['stats', '--bogus'],
      ['worker', '--bogus'],
    ];
    const results = await Promise.all(commands.map((args) => runMailroom(args, { REDIS_URL: UNREACHABLE })));
    results.forEach((result, index) => {
      const name = (commands[index] as string[]).join(' ');
      expect(result.code, name).toBe(2);
      expect(result.stderr, name).toContain("Unknown option '--bogus'");
      expect(result.stderr, name).toContain(`Usage: mailroom ${(commands[index] as string[])[0]}`);
      expect(result.stdout, name).toBe('');
    });
  });

  it('an unknown subcommand or a missing argument exits 2 naming what is missing', async () => {
    const [subcommand, noId, noFile, noTarget] = await Promise.all([
      runMailroom(['campaign', 'launch']),
      runMailroom(['campaign', 'pause']),
      runMailroom(['enqueue']),
      runMailroom(['failed', 'retry']),
    ]);
    expect(subcommand.code).toBe(2);
    expect(subcommand.stderr).toContain('unknown subcommand "launch"');
    expect(noId.code).toBe(2);
    expect(noId.stderr).toContain('a campaign id is required');
    expect(noFile.code).toBe(2);
    expect(noFile.stderr).toContain('a file is required');
    expect(noTarget.code).toBe(2);
    expect(noTarget.stderr).toContain('--all');
  });

  it('a malformed flag value exits 2 naming the flag', async () => {
    const result = await runMailroom(['failed', 'list', '--limit', 'ten']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--limit="ten" must be a positive integer');
  });
});

describe('configuration errors exit 3', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('MAILROOM_CONCURRENCY=x stops the worker before it starts, naming the variable', async () => {
    const result = await runMailroom(['worker'], { MAILROOM_CONCURRENCY: 'x', REDIS_URL });
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('MAILROOM_CONCURRENCY');
    expect(result.stderr).not.toContain('mailroom worker pid=');
  });

  it('EMAIL_PORT=abc is a configuration error for send --now and for the queue commands', async () => {
    const [now, stats] = await Promise.all([
      runMailroom(
        [
          'send',
          '--now',
          '--from',
          'a@example.com',
          '--to',
          'b@example.com',
          '--subject',
          'Hi',
          '--body',
          'x',
        ],
        { EMAIL_PORT: 'abc', EMAIL_BACKEND: 'smtp' },
      ),
      runMailroom(['stats'], { EMAIL_PORT: 'abc', REDIS_URL }),
    ]);
    expect(now.code).toBe(3);
    expect(now.stderr).toContain('EMAIL_PORT');
    expect(stats.code).toBe(3);
    expect(stats.stderr).toContain('EMAIL_PORT');
  });

  it('a REDIS_URL that is not a redis:// URL exits 3', async () => {
    const result = await runMailroom(['stats'], { REDIS_URL: 'http://127.0.0.1:6379' });
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('REDIS_URL');
  });
});

describe('Redis unreachable', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('every queue command exits 4 within a few seconds, without printing the password', async () => {
    const commands = [
      ['stats'],
      ['send', '--from', 'a@example.com', '--to', 'b@example.com', '--subject', 'Hi', '--body', 'Hello'],
      ['campaign', 'status', 'june'],
      ['campaign', 'pause', 'june'],
      ['failed', 'list'],
      ['failed', 'retry', '--all'],
    ];
    const results = await Promise.all(commands.map((args) => runMailroom(args, { REDIS_URL: UNREACHABLE })));
    results.forEach((result, index) => {
      const name = (commands[index] as string[]).join(' ');
      expect(result.code, name).toBe(4);
      expect(result.stderr, name).toContain('Redis is unreachable at redis://:***@127.0.0.1:1');
      expect(result.stderr, name).not.toContain('hunter2');
      // Fail fast: the 1 s connect limit on top of the start-up of node + tsx, which takes seconds
      // when six start at once on a busy 2-core machine; a command that hangs on Redis never ends.
      expect(result.durationMs, name).toBeLessThan(30_000);
    });
  });
});

describe('mailroom stats', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('shows the job counts of the queue and its campaigns, as text and as JSON', async () => {
    const queue = freshQueue(harness, 'cli');
    const producer = createProducer({
      redis: REDIS_URL,
      queue,
      batchSize: 1,
      logger: captureLogger().logger,
    });
    harness.onCleanup(() => producer.close());
    await producer.enqueue(
      ['a', 'b', 'c'].map(
        (name) => new EmailMessage('Hi', 'Hello', 'shop@example.com', [`${name}@example.com`]),
      ),
    );
    await producer.enqueue(new EmailMessage('Later', 'Hello', 'shop@example.com', ['d@example.com']), {
      delay: 60_000,
    });
    const campaign = await startCampaign(producer, {
      id: 'spring',
      template: { subject: 'Spring', text: 'Hello {{ email }}', fromEmail: 'news@example.com' },
      recipients: ['x@example.com', 'y@example.com', 'X@example.com'],
    });
    await campaign.enqueued;

    const [text, json] = await Promise.all([
      runMailroom(['stats', '--queue', queue], { REDIS_URL }),
      runMailroom(['stats', '--json'], { REDIS_URL, MAILROOM_QUEUE: queue }),
    ]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`queue ${queue}`);
    // 3 single messages and the campaign's 2 batches (of one) waiting, 1 delayed.
    expect(text.stdout).toContain(
      'waiting 5 · active 0 · delayed 1 · prioritized 0 · failed 0 · completed 0',
    );
    expect(text.stdout).toMatch(/^ {2}spring +running +0% +2 +0 +0 +0 +2 /m);

    expect(json.code).toBe(0);
    const stats = JSON.parse(json.stdout) as {
      queue: string;
      jobs: Record<string, number>;
      campaigns: { id: string; state: string; total: number; duplicates: number }[];
    };
    expect(stats.queue).toBe(queue);
    expect(stats.jobs).toEqual({
      waiting: 5,
      active: 0,
      delayed: 1,
      prioritized: 0,
      failed: 0,
      completed: 0,
    });
    expect(stats.campaigns).toHaveLength(1);
    expect(stats.campaigns[0]).toMatchObject({ id: 'spring', state: 'running', total: 2, duplicates: 1 });
  });

  it('on an empty queue says there are no campaigns', async () => {
    const queue = freshQueue(harness, 'cli');
    const result = await runMailroom(['stats'], { REDIS_URL, MAILROOM_QUEUE: queue });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('waiting 0 · active 0 · delayed 0');
    expect(result.stdout).toContain('campaigns: none');
  });
});
