/**
 * `mailroom campaign failures|retry` as a user runs them: child processes against a campaign drained
 * by a real `mailroom worker` process into a real SMTP server that refuses one recipient for good and
 * defers another until the attempts run out; table, --json, --csv, exit codes.
 */
import { campaignStatus, type Producer, startCampaign } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import {
  CLI_TEST_TIMEOUT,
  type QueueRig,
  queueRig,
  receiptsPerRecipient,
  useHarness,
} from './support/harness.js';
import { waitUntil } from './support/wait.js';
import { runMailroom } from './support/worker-process.js';

const harness = useHarness();

const REFUSED = 'refused@example.com';
const DEFERRED = 'deferred@example.com';
/** A reply with a comma and quotes: CSV must quote it. */
const REFUSED_REPLY = '5.7.1 Refused by policy, see "https://example.com/policy"';

interface Rig extends QueueRig {
  /** While true the server refuses REFUSED and defers DEFERRED; then it accepts everyone. */
  refuse: { now: boolean };
}

/** A campaign of 10 recipients, drained by a worker process (2 attempts), with 2 failures recorded. */
async function failedCampaign(id: string): Promise<Rig> {
  const refuse = { now: true };
  const rig = await queueRig(harness, {
    label: 'cli-campaign-failures',
    producer: { batchSize: 5 },
    server: {
      onRcpt(address) {
        if (!refuse.now) return undefined;
        if (address === REFUSED) return { code: 554, message: REFUSED_REPLY };
        if (address === DEFERRED) return { code: 450, message: '4.2.0 Mailbox busy' };
        return undefined;
      },
    },
    env: { MAILROOM_ATTEMPTS: '2', MAILROOM_BACKOFF: '50ms', LOG_LEVEL: 'warn' },
  });
  await rig.spawn();
  const recipients = [REFUSED, DEFERRED, ...Array.from({ length: 8 }, (_, i) => `reader${i}@example.com`)];
  const handle = await startCampaign(rig.producer, {
    id,
    template: { subject: 'Hello', text: 'Hi {{ email }}', fromEmail: 'news@example.com' },
    recipients,
  });
  await handle.enqueued;
  await completed(rig.producer, id);
  return { ...rig, refuse };
}

async function completed(producer: Producer, id: string): Promise<void> {
  await waitUntil(
    async () => (await campaignStatus(producer, id)).state === 'completed',
    `campaign ${id} to complete`,
    60_000,
    100,
  );
}

describe('mailroom campaign failures', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('prints the failed recipients as a table, JSON Lines and CSV', async () => {
    const { env } = await failedCampaign('report');

    const table = await runMailroom(['campaign', 'failures', 'report'], env);
    expect(table.stderr).toBe('');
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ADDRESS\s+REASON\s+CODE\s+ATTEMPTS\s+WHEN \(UTC\)\s+REPLY$/);
    expect(lines.slice(1, 3).sort()).toEqual([
      expect.stringMatching(
        /^deferred@example\.com\s+deferred\s+450\s+2\s+\d{4}-\d\d-\d\dT\S+Z\s+450 4\.2\.0 Mailbox busy/,
      ),
      expect.stringMatching(
        /^refused@example\.com\s+rejected\s+554\s+1\s+\S+Z\s+554 5\.7\.1 Refused by policy/,
      ),
    ]);
    expect(lines[3]).toBe('2 failed recipients');

    const json = await runMailroom(['campaign', 'failures', 'report', '--json'], env);
    expect(json.code).toBe(0);
    const records = json.stdout
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .sort((a, b) => String(a.address).localeCompare(String(b.address)));
    expect(records).toEqual([
      {
        address: DEFERRED,
        reason: 'deferred',
        code: 450,
        reply: expect.stringContaining('4.2.0 Mailbox busy'),
        attempts: 2,
        at: expect.stringMatching(/Z$/),
        transient: true,
      },
      {
        address: REFUSED,
        reason: 'rejected',
        code: 554,
        reply: expect.stringContaining(REFUSED_REPLY),
        attempts: 1,
        at: expect.stringMatching(/Z$/),
        transient: false,
      },
    ]);

    const csv = await runMailroom(['campaign', 'failures', 'report', '--csv', '--transient'], env);
    expect(csv.code).toBe(0);
    expect(csv.stdout.split('\n')[0]).toBe('address,reason,code,attempts,at,transient,reply');
    expect(csv.stdout.trimEnd().split('\n')).toHaveLength(2);
    expect(csv.stdout).toMatch(/\ndeferred@example\.com,deferred,450,2,\S+Z,true,[^\n]*4\.2\.0 Mailbox busy/);

    const all = await runMailroom(['campaign', 'failures', 'report', '--csv'], env);
    // RFC 4180: the reply with a comma and quotes is quoted, its quotes doubled.
    expect(all.stdout).toContain(`"554 ${REFUSED_REPLY.replace(/"/g, '""')}"`);
  });

  it('refuses a missing id, --json with --csv, and an unknown campaign', async () => {
    const { env } = await failedCampaign('usage');
    const missing = await runMailroom(['campaign', 'failures'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('a campaign id is required');
    const both = await runMailroom(['campaign', 'failures', 'usage', '--json', '--csv'], env);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--json and --csv are exclusive');
    const unknown = await runMailroom(['campaign', 'failures', 'nope'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('No campaign "nope"');
  });
});

describe('mailroom campaign retry', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('re-enqueues the transient failure once, then has nothing to retry', async () => {
    const { env, producer, server, refuse } = await failedCampaign('again');
    refuse.now = false;
    const retried = await runMailroom(['campaign', 'retry', 'again', '--transient', '--json'], env);
    expect(retried.stderr).toBe('');
    expect(retried.code).toBe(0);
    expect(JSON.parse(retried.stdout)).toEqual({
      id: 'again',
      retried: 1,
      resumed: 0,
      skipped: 0,
      suppressed: 0,
      leftToOtherRetry: 0,
    });
    await completed(producer, 'again');
    await waitUntil(
      () => receiptsPerRecipient(server).get(DEFERRED) === 1,
      'the deferred recipient to get it',
    );

    const nothing = await runMailroom(['campaign', 'retry', 'again', '--transient'], env);
    expect(nothing.code).toBe(0);
    expect(nothing.stdout).toBe('nothing to retry in campaign again\n');

    const permanent = await runMailroom(['campaign', 'retry', 'again'], env);
    expect(permanent.code).toBe(0);
    expect(permanent.stdout).toMatch(/^1 re-enqueued; follow them with: mailroom campaign status again\n$/);
    await completed(producer, 'again');
    await waitUntil(() => receiptsPerRecipient(server).get(REFUSED) === 1, 'the refused recipient to get it');
    expect(receiptsPerRecipient(server).get(DEFERRED)).toBe(1);
    expect(await campaignStatus(producer, 'again')).toMatchObject({ sent: 10, failed: 0 });
  });

  it('exits 1 for an unknown campaign', async () => {
    const { env } = await failedCampaign('known');
    const unknown = await runMailroom(['campaign', 'retry', 'nope'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('No campaign "nope"');
  });
});
