/**
 * Before a campaign is sent (campaign-check.ts): placeholders checked against the columns, the
 * empty-value policy, previewCampaign, dryRunCampaign; and startCampaign's sendAt and aborted read.
 * Real Redis, a fresh queue per test, no worker.
 */
import { ValidationError } from '@mailroom/core';
import {
  type CampaignRecipient,
  type CampaignTemplate,
  campaignStatus,
  checkPlaceholders,
  createProducer,
  dryRunCampaign,
  listCampaigns,
  type Producer,
  previewCampaign,
  SuppressionList,
  startCampaign,
} from '@mailroom/producer';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { useHarness } from '../../../test/support/harness.js';
import { REDIS_URL, uniqueQueue } from '../../../test/support/redis.js';
import { removeQueue, silentLogger } from './support/redis.js';

const harness = useHarness();

function setup(): Producer {
  const queue = uniqueQueue('campaign-check');
  const producer = createProducer({ redis: REDIS_URL, queue, logger: silentLogger });
  harness.onCleanup(() => removeQueue(harness.redis, queue));
  harness.onCleanup(() => producer.close());
  return producer;
}

const template: CampaignTemplate = {
  subject: 'News for {{ name }}',
  text: 'Hello {{ name }} from {{ city }}',
  fromEmail: 'news@example.com',
};

/** The ValidationError `run` throws (fails the test when it throws nothing). */
function validationError(run: () => unknown): ValidationError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError');
}

/** Nothing of the campaign in Redis: no record, no job. */
async function nothingWritten(producer: Producer): Promise<void> {
  expect(await listCampaigns(producer)).toEqual([]);
  const counts = await producer.getQueue().getJobCounts('waiting', 'delayed', 'prioritized', 'active');
  expect(Object.values(counts).every((count) => count === 0)).toBe(true);
}

describe('checkPlaceholders', () => {
  it('names the field and the placeholder of a typo, with the close column as a hint', () => {
    const error = validationError(() =>
      checkPlaceholders({ template: { ...template, text: 'Hello {{ nmae }}' } }, ['email', 'name', 'city']),
    );
    expect(error.field).toBe('template.text');
    expect(error.message).toContain(
      'template.text uses {{ nmae }}, which matches no recipient column (did you mean name?)',
    );
  });

  it('hints at a column that differs only in case', () => {
    const error = validationError(() => checkPlaceholders({ template }, ['email', 'Name', 'city']));
    expect(error.field).toBe('template.subject');
    expect(error.message).toContain('{{ name }}');
    expect(error.message).toContain('did you mean Name? placeholders are case-sensitive');
  });

  it('accepts email always, unsubscribe_url with an endpoint, and nested paths by their first segment', () => {
    const uses = checkPlaceholders(
      {
        template: {
          ...template,
          text: '{{ email }} {{ plan.name }} {{ unsubscribe_url }} {{ name }} {{ city }}',
        },
        unsubscribe: { endpoint: 'https://mail.example.com' },
      },
      ['name', 'city', 'plan'],
    );
    expect(uses.map((use) => use.placeholder)).toContain('plan.name');
  });
});

describe('startCampaign placeholder checks', () => {
  it('refuses a placeholder typo before anything is written (columns from the first recipient)', async () => {
    const producer = setup();
    await expect(
      startCampaign(producer, {
        id: 'typo',
        template: { ...template, text: 'Hello {{ nmae }}' },
        recipients: [{ email: 'a@example.com', name: 'Ann', city: 'Rome' }],
      }),
    ).rejects.toThrow(/\{\{ nmae \}\}.*did you mean name\?/);
    await nothingWritten(producer);
  });

  it('refuses a column that differs in case from the placeholder, given as columns', async () => {
    const producer = setup();
    await expect(
      startCampaign(producer, {
        id: 'case',
        template,
        columns: ['email', 'Name', 'city'],
        recipients: [{ email: 'a@example.com', Name: 'Ann', city: 'Rome' }],
      }),
    ).rejects.toThrow(/did you mean Name\?/);
    await nothingWritten(producer);
  });

  it("counts a recipient with an empty value for a used placeholder as invalid under emptyValues 'error'", async () => {
    const producer = setup();
    const handle = await startCampaign(producer, {
      id: 'empty-error',
      template,
      recipients: [
        { email: 'a@example.com', name: 'Ann', city: 'Rome' },
        { email: 'b@example.com', name: '  ', city: 'Oslo' },
        { email: 'c@example.com', name: 'Cy' },
      ],
    });
    expect(await handle.enqueued).toMatchObject({ total: 3, queued: 1, invalid: 2 });
    const status = await campaignStatus(producer, 'empty-error');
    expect(status.invalidRows).toEqual([
      {
        row: 2,
        email: 'b@example.com',
        field: 'placeholder.name',
        reason: expect.stringContaining('{{ name }}'),
      },
      {
        row: 3,
        email: 'c@example.com',
        field: 'placeholder.city',
        reason: expect.stringContaining('{{ city }}'),
      },
    ]);
  });

  it("renders an empty value as empty under emptyValues 'allow'", async () => {
    const producer = setup();
    const handle = await startCampaign(producer, {
      id: 'empty-allow',
      template,
      emptyValues: 'allow',
      recipients: [
        { email: 'a@example.com', name: 'Ann', city: 'Rome' },
        { email: 'c@example.com', name: 'Cy', city: '' },
      ],
    });
    expect(await handle.enqueued).toMatchObject({ total: 2, queued: 2, invalid: 0 });
  });
});

describe('previewCampaign', () => {
  it('renders the message of one recipient and its .eml bytes, as the campaign would', async () => {
    const { message, eml } = previewCampaign(
      {
        template: { ...template, html: '<p>{{ name }}</p>' },
        unsubscribe: { url: 'https://example.com/u?e={{ email }}' },
      },
      { email: 'ann@example.com', name: 'Ann & Co', city: 'Rome' },
    );
    expect(message.to).toEqual(['Ann & Co <ann@example.com>']);
    const parsed = await simpleParser(eml);
    expect(parsed.subject).toBe('News for Ann & Co');
    expect(parsed.text?.trim()).toBe('Hello Ann & Co from Rome');
    expect(parsed.html).toContain('<p>Ann &amp; Co</p>');
    expect(eml.toString()).toContain('List-Unsubscribe: <https://example.com/u?e=ann%40example.com>');
  });

  it('throws naming the field a recipient cannot be rendered for', () => {
    const bad = validationError(() => previewCampaign({ template }, { email: 'bad@', name: 'A', city: 'B' }));
    expect(bad.field).toBe('to');
    const empty = validationError(() =>
      previewCampaign({ template }, { email: 'a@example.com', name: 'A', city: '' }),
    );
    expect(empty.field).toBe('placeholder.city');
  });
});

describe('dryRunCampaign', () => {
  it('reads every recipient, counts valid, invalid, duplicate and suppressed ones, and writes nothing', async () => {
    const producer = setup();
    await producer.ready();
    await new SuppressionList(producer.redis, producer.keys).add({
      address: 'reader7@example.com',
      reason: 'manual',
    });
    const total = 20_000;
    let produced = 0;
    async function* recipients(): AsyncGenerator<CampaignRecipient> {
      for (let index = 0; index < total; index++) {
        produced++;
        if (index === 100) yield { email: 'bad@', name: 'Bad', city: 'X' };
        else if (index === 200) yield { email: 'READER1@example.com', name: 'Dup', city: 'X' };
        else if (index === 300) yield { email: `reader${index}@example.com`, name: '', city: 'X' };
        else yield { email: `reader${index}@example.com`, name: `R${index}`, city: 'Rome' };
      }
    }
    const summary = await dryRunCampaign({ template, recipients: recipients() }, { producer });
    expect(produced).toBe(total);
    expect(summary).toMatchObject({
      recipients: total,
      duplicates: 1,
      suppressed: 1,
      invalid: 2,
      valid: total - 4,
      columns: ['email', 'name', 'city'],
      complete: true,
    });
    expect(summary.invalidRows.map(({ row, field }) => [row, field])).toEqual([
      [101, 'to'],
      [301, 'placeholder.name'],
    ]);
    expect(new Set(summary.placeholders.map((use) => use.placeholder))).toEqual(new Set(['name', 'city']));
    await nothingWritten(producer);
  });

  it('stops at a placeholder no column fills', async () => {
    await expect(
      dryRunCampaign({ template, recipients: [{ email: 'a@example.com', Name: 'A', city: 'B' }] }),
    ).rejects.toThrow(/did you mean Name\?/);
  });
});

describe('startCampaign sendAt and an aborted read', () => {
  it('enqueues every batch delayed until sendAt and shows it in the status', async () => {
    const producer = setup();
    const sendAt = Date.now() + 3_600_000;
    const handle = await startCampaign(producer, {
      id: 'scheduled',
      template: { subject: 'Hi', text: 'Hello {{ email }}', fromEmail: 'news@example.com' },
      recipients: Array.from({ length: 120 }, (_, index) => `r${index}@example.com`),
      sendAt: new Date(sendAt),
    });
    expect(await handle.enqueued).toMatchObject({ queued: 120 });
    const delayed = await producer.getQueue().getDelayed();
    expect(delayed.length).toBeGreaterThan(1);
    expect(await producer.getQueue().getWaitingCount()).toBe(0);
    for (const job of delayed)
      expect(Math.abs(job.timestamp + (job.opts.delay ?? 0) - sendAt)).toBeLessThan(1000);
    expect((await campaignStatus(producer, 'scheduled')).sendAt).toBe(sendAt);
  });

  it('refuses a sendAt that is not a time', async () => {
    const producer = setup();
    await expect(
      startCampaign(producer, { template, recipients: [], sendAt: Number.NaN }),
    ).rejects.toMatchObject({ field: 'sendAt' });
  });

  it('records an aborted read with its reason and derives the state interrupted', async () => {
    const producer = setup();
    const reading = new AbortController();
    reading.abort(new Error('interrupted by SIGINT'));
    const handle = await startCampaign(producer, {
      id: 'aborted',
      template,
      signal: reading.signal,
      recipients: [{ email: 'a@example.com', name: 'A', city: 'B' }],
    });
    expect(await handle.enqueued).toMatchObject({ stopped: 'aborted', queued: 0 });
    expect(await campaignStatus(producer, 'aborted')).toMatchObject({
      state: 'interrupted',
      enqueueError: 'interrupted by SIGINT',
    });
  });
});
