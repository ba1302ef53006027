/**
 * Issue 9: one bad row must not stop a campaign. A recipient with an 8 MB field used in the subject
 * ("RangeError: Maximum call stack size exceeded" deep in header encoding) or whose template
 * expansion passed V8's string limit (a 1 MB value used 600 times: "RangeError: Invalid string
 * length") aborted the whole campaign, naming nothing, and a restart failed the same way. Now each is
 * an invalid row named by its row, address and field; the good rows are sent, the campaign completes,
 * and a restart neither fails nor counts anything twice. enqueue() names the field of an 8 MB subject.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { EmailMessage, ValidationError } from '@mailroom/core';
import {
  type CampaignRecipient,
  type CampaignStatus,
  campaignStatus,
  type Producer,
  producerDefaults,
  startCampaign,
} from '@mailroom/producer';
import { createWorker } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { campaignCommand } from '../../packages/worker/src/cli/campaign-command.js';
import { queueIdle, queueRig, useHarness, useTemporaryDirectory } from '../support/harness.js';
import { REDIS_URL } from '../support/redis.js';
import { captureLogger, waitUntil } from '../support/wait.js';

const harness = useHarness();
const directory = useTemporaryDirectory('issue-9-');

const MB = 1024 * 1024;

/** A queue, an SMTP server, a producer and an in-process worker, all gone after the test. */
async function rig() {
  const base = await queueRig(harness, { label: 'issue-9' });
  const worker = createWorker({
    redis: REDIS_URL,
    queue: base.queue,
    backend: 'smtp',
    backendOptions: { host: base.server.host, port: base.server.port },
    logger: captureLogger('warn').logger,
  });
  harness.onCleanup(() => worker.close());
  return base;
}

async function completed(producer: Producer, id: string): Promise<CampaignStatus> {
  let status: CampaignStatus | undefined;
  await waitUntil(
    async () => {
      status = await campaignStatus(producer, id);
      return status.state === 'completed';
    },
    `campaign ${id} to complete`,
    60_000,
    100,
  );
  return status as CampaignStatus;
}

function sink(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  });
  return { stream, text: () => chunks.join('') };
}

describe('issue 9: one bad row does not stop a campaign', () => {
  it('sends the good rows, counts an 8 MB field and a template explosion as named invalid rows, completes, and restarts cleanly', async () => {
    const setup = await rig();
    const recipients: CampaignRecipient[] = [
      { email: 'ann@example.com', name: 'Ann', bio: 'Reads.' },
      { email: 'huge@example.com', name: 'x'.repeat(8 * MB), bio: 'Big.' },
      { email: 'bob@example.com', name: 'Bob', bio: 'Writes.' },
      { email: 'boom@example.com', name: 'Boom', bio: 'y'.repeat(MB) },
      { email: 'cy@example.com', name: 'Cy', bio: 'Sings.' },
    ];
    const options = {
      id: 'issue-9',
      template: {
        subject: 'News for {{ name }}',
        // 600 MB for the 1 MB bio: past V8's longest string (2^29 - 24 characters).
        text: `Hello {{ name }}\n${'{{ bio }} '.repeat(600)}`,
        fromEmail: 'news@example.com',
      },
      recipients,
    };
    const first = await startCampaign(setup.producer, options);
    expect(await first.enqueued).toMatchObject({ total: 5, queued: 3, invalid: 2, stopped: 'done' });

    const status = await completed(setup.producer, 'issue-9');
    expect(status).toMatchObject({
      total: 5,
      sent: 3,
      failed: 2,
      failedByReason: { invalid: 2 },
      enqueueError: undefined,
    });
    expect(status.invalidRows).toEqual([
      {
        row: 2,
        email: 'huge@example.com',
        field: 'subject',
        reason: expect.stringMatching(/subject/i),
      },
      {
        row: 4,
        email: 'boom@example.com',
        field: 'text',
        reason: `template.text renders to more than ${producerDefaults.maxMessageBytes} characters`,
      },
    ]);
    expect(setup.server.messages.map((message) => message.to[0]).sort()).toEqual([
      'ann@example.com',
      'bob@example.com',
      'cy@example.com',
    ]);

    // The restart reads the same list: nothing fails, nothing is counted or sent again.
    const second = await startCampaign(setup.producer, options);
    expect(await second.enqueued).toMatchObject({ total: 0, queued: 0, invalid: 0, stopped: 'done' });
    await queueIdle(setup.producer);
    const again = await campaignStatus(setup.producer, 'issue-9');
    expect(again).toMatchObject({
      state: 'completed',
      total: 5,
      sent: 3,
      failed: 2,
      enqueueError: undefined,
    });
    expect(again.invalidRows).toEqual(status.invalidRows);
    expect(setup.server.messages).toHaveLength(3);
  });

  it('`mailroom campaign start` reads an 8 MB CSV field, names its line, and enqueues the other rows', async () => {
    const setup = await rig();
    const csv = join(directory, 'recipients.csv');
    // A note over two lines first: the huge row is data row 2 but line 4 of the file.
    await writeFile(
      csv,
      'email,name,note\r\nann@example.com,Ann,"two\r\nlines"\r\n' +
        `huge@example.com,"${'x'.repeat(8 * MB)}",\r\n` +
        'bob@example.com,Bob,\r\ncy@example.com,Cy,\r\n',
    );
    const text = join(directory, 'text.txt');
    await writeFile(text, 'Hello {{ name }}');
    const stdout = sink();
    const stderr = sink();
    const code = await campaignCommand(
      [
        'start',
        '--id',
        'issue-9-cli',
        '--from',
        'news@example.com',
        '--subject',
        'News for {{ name }}',
        '--text-file',
        text,
        '--recipients',
        csv,
      ],
      { stdout: stdout.stream, stderr: stderr.stream, env: { REDIS_URL, MAILROOM_QUEUE: setup.queue } },
    );
    expect(code).toBe(0);
    expect(stdout.text()).toBe('issue-9-cli\n');
    expect(stderr.text()).toContain('3 of 4 recipient lines enqueued (1 invalid)');
    expect(stderr.text()).toMatch(/mailroom campaign: invalid: line 4 \(huge@example\.com\): subject: /);
    const status = await completed(setup.producer, 'issue-9-cli');
    expect(status).toMatchObject({ total: 4, sent: 3, failedByReason: { invalid: 1 } });
    expect(status.invalidRows).toMatchObject([{ row: 2, email: 'huge@example.com', field: 'subject' }]);
  });

  it('enqueue() refuses an 8 MB subject with a ValidationError naming messages[0].subject', async () => {
    const { producer } = await queueRig(harness, { label: 'issue-9-enqueue' });
    const message = new EmailMessage('x'.repeat(8 * MB), 'Body', 'news@example.com', ['ann@example.com']);
    const enqueueing = producer.enqueue(message);
    await expect(enqueueing).rejects.toBeInstanceOf(ValidationError);
    await expect(enqueueing).rejects.toMatchObject({ field: 'messages[0].subject' });
  });
});
