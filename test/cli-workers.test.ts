/**
 * Live workers as a user sees them, each command a child process: `mailroom stats` lists the
 * `mailroom worker` processes of the queue (and --json gives them), a worker stopped with SIGTERM
 * leaves the list at once; `campaign start` and `campaign status` warn on stderr when no worker
 * consumes the queue, with exit codes unchanged, and say nothing when one does; `campaign status`
 * of a drained campaign shows when it started and finished.
 */
import { writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { campaignStatus, startCampaign } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT, queueRig, useHarness, useTemporaryDirectory } from './support/harness.js';
import { waitUntil } from './support/wait.js';
import { runMailroom } from './support/worker-process.js';

const harness = useHarness();
const dir = useTemporaryDirectory('mailroom-cli-workers-');

const warning = (queue: string) =>
  `warning: no worker is consuming queue ${queue} (none seen in the last 15 s): start one with \`mailroom worker\`\n`;

describe('mailroom stats: live workers', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('lists each running worker with host, pid and concurrency, and drops one stopped with SIGTERM', async () => {
    const { env, spawn } = await queueRig(harness, { label: 'cli-workers' });
    const none = await runMailroom(['stats'], env);
    expect(none.code).toBe(0);
    expect(none.stdout).toContain('workers: none seen in the last 15 s (start one with `mailroom worker`)\n');
    expect(JSON.parse((await runMailroom(['stats', '--json'], env)).stdout).workers).toEqual([]);

    const first = await spawn({ MAILROOM_CONCURRENCY: '3' });
    const second = await spawn({ MAILROOM_CONCURRENCY: '1' });
    const text = await runMailroom(['stats'], env);
    expect(text.code).toBe(0);
    expect(text.stderr).toBe('');
    const lines = text.stdout.split('\n');
    const header = lines.indexOf('workers: 2 live');
    expect(header).toBeGreaterThan(0);
    expect(lines[header + 1]).toMatch(/^ {2}HOST +PID +CONCURRENCY +VERSION +UP SINCE +LAST SEEN$/);
    const row = (pid: number) => lines.find((line) => new RegExp(`^  \\S+ +${pid} `).test(line));
    expect(row(first.pid)).toMatch(
      new RegExp(
        `^  ${hostname()} +${first.pid} +3 +0\\.1\\.0 +\\d{4}-\\d\\d-\\d\\dT\\S+Z \\(\\d+s\\) +\\d+s ago$`,
      ),
    );
    expect(row(second.pid)).toMatch(new RegExp(`^  ${hostname()} +${second.pid} +1 `));

    const json = await runMailroom(['stats', '--json'], env);
    const { workers } = JSON.parse(json.stdout) as { workers: Record<string, unknown>[] };
    expect(workers.map((worker) => worker.pid).sort()).toEqual([first.pid, second.pid].sort());
    expect(workers.find((worker) => worker.pid === first.pid)).toMatchObject({
      host: hostname(),
      queue: env.MAILROOM_QUEUE,
      concurrency: 3,
      version: '0.1.0',
      heartbeatInterval: 5000,
    });

    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    const after = JSON.parse((await runMailroom(['stats', '--json'], env)).stdout) as {
      workers: { pid: number }[];
    };
    expect(after.workers.map((worker) => worker.pid)).toEqual([second.pid]);
  });
});

describe('no-worker warnings', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('campaign status warns while a campaign waits on a queue nobody consumes, and not once a worker runs', async () => {
    const { env, producer, spawn } = await queueRig(harness, { label: 'cli-no-worker' });
    const queue = env.MAILROOM_QUEUE as string;
    const handle = await startCampaign(producer, {
      id: 'june',
      template: { subject: 'News', text: 'Hello', fromEmail: 'news@example.com' },
      recipients: ['a@example.com', 'b@example.com'],
    });
    await handle.enqueued;

    const status = await runMailroom(['campaign', 'status', 'june'], env);
    expect(status.code).toBe(0);
    expect(status.stderr).toBe(warning(queue));
    expect(status.stdout).toMatch(/^state {8}running$/m);
    const json = await runMailroom(['campaign', 'status', 'june', '--json'], env);
    expect([json.code, json.stderr]).toEqual([0, warning(queue)]);
    expect(JSON.parse(json.stdout)).toMatchObject({ id: 'june', state: 'running', workers: 0 });

    await spawn();
    const served = await runMailroom(['campaign', 'status', 'june', '--json'], env);
    expect([served.code, served.stderr]).toEqual([0, '']);
    expect(JSON.parse(served.stdout)).toMatchObject({ id: 'june', workers: 1 });
  });

  it('campaign status of a finished campaign does not warn', async () => {
    const { env, producer } = await queueRig(harness, { label: 'cli-no-worker-done' });
    const handle = await startCampaign(producer, {
      id: 'done',
      template: { subject: 'News', text: 'Hello', fromEmail: 'news@example.com' },
      recipients: ['a@example.com'],
    });
    await handle.enqueued;
    await runMailroom(['campaign', 'cancel', 'done'], env);
    const status = await runMailroom(['campaign', 'status', 'done', '--json'], env);
    expect([status.code, status.stderr]).toEqual([0, '']);
    expect(JSON.parse(status.stdout)).toMatchObject({ state: 'cancelled', workers: 0 });
  });

  it('campaign start warns without a worker and still enqueues and exits 0; with one it does not warn', async () => {
    const { env, spawn } = await queueRig(harness, { label: 'cli-no-worker-start' });
    const queue = env.MAILROOM_QUEUE as string;
    const text = join(dir, 'body.txt');
    const recipients = join(dir, 'recipients.csv');
    await writeFile(text, 'Hello {{ email }}\n');
    await writeFile(recipients, 'email\na@example.com\nb@example.com\n');
    const start = (id: string) =>
      runMailroom(
        [
          'campaign',
          'start',
          '--id',
          id,
          '--from',
          'news@example.com',
          '--subject',
          'News',
          '--text-file',
          text,
          '--recipients',
          recipients,
        ],
        env,
      );

    const alone = await start('alone');
    expect(alone.code).toBe(0);
    expect(alone.stdout).toBe('alone\n');
    expect(alone.stderr.split('\n')[0]).toBe(warning(queue).trimEnd());
    expect(alone.stderr).toContain('2 of 2 recipient lines enqueued');

    await spawn();
    const served = await start('served');
    expect(served.code).toBe(0);
    expect(served.stderr).not.toContain('warning');
  });
});

describe('mailroom campaign status: times', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('shows when a drained campaign started and finished, and --json gives finishedAt', async () => {
    const { env, producer, spawn } = await queueRig(harness, { label: 'cli-status-times' });
    await spawn();
    const handle = await startCampaign(producer, {
      id: 'june',
      template: { subject: 'News', text: 'Hello', fromEmail: 'news@example.com' },
      recipients: ['a@example.com', 'b@example.com', 'c@example.com'],
    });
    await handle.enqueued;
    await waitUntil(
      async () => (await campaignStatus(producer, 'june')).state === 'completed',
      'the campaign to complete',
    );
    const status = await runMailroom(['campaign', 'status', 'june'], env);
    expect([status.code, status.stderr]).toEqual([0, '']);
    expect(status.stdout).toMatch(/^started {6}\d{4}-\d\d-\d\dT[\d:.]+Z$/m);
    expect(status.stdout).toMatch(/^finished {5}\d{4}-\d\d-\d\dT[\d:.]+Z \(took \d+s\)$/m);
    expect(status.stdout).toMatch(/^eta {10}0s$/m);
    const json = JSON.parse((await runMailroom(['campaign', 'status', 'june', '--json'], env)).stdout) as {
      startedAt: number;
      finishedAt: number;
    };
    expect(json.finishedAt).toBeGreaterThanOrEqual(json.startedAt);
    expect(json.finishedAt).toBeLessThanOrEqual(Date.now());
  });
});
