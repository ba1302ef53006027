/** The campaign status report (progress.ts): started, finished or scheduled times, and the ETA saying what it is based on. */
import type { CampaignStatus } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';
import { describeEta, statusReport } from '../src/cli/progress.js';

const now = Date.parse('2024-06-01T10:10:00.000Z');

function status(overrides: Partial<CampaignStatus> = {}): CampaignStatus {
  return {
    id: 'june',
    name: 'june',
    state: 'running',
    total: 100,
    expectedTotal: 100,
    queued: 100,
    sent: 40,
    failed: 0,
    failedByReason: {},
    cancelled: 0,
    duplicates: 0,
    suppressed: 0,
    remaining: 60,
    rate: 0,
    etaSeconds: null,
    etaBasis: 'unknown',
    retryAt: undefined,
    enqueueFinished: true,
    enqueueError: undefined,
    invalidRows: [],
    startedAt: Date.parse('2024-06-01T10:00:00.000Z'),
    finishedAt: undefined,
    sendAt: undefined,
    ...overrides,
  };
}

/** The value of one row of the report (`label      value`). */
function row(report: string, label: string): string | undefined {
  const line = report.split('\n').find((text) => text.startsWith(`${label} `));
  return line?.slice(13);
}

describe('describeEta', () => {
  it('gives the recent-rate ETA alone', () => {
    expect(describeEta(status({ rate: 12, etaSeconds: 5, etaBasis: 'recent' }), now)).toBe('5s');
  });

  it('says when the ETA comes from the average rate', () => {
    expect(describeEta(status({ etaSeconds: 125, etaBasis: 'average' }), now)).toBe(
      '2m 05s (at the average rate since the start: nothing sent in the last 10 s)',
    );
  });

  it('says the campaign waits for retries, and when the next is due', () => {
    expect(describeEta(status({ etaSeconds: 90, etaBasis: 'retries', retryAt: now + 12_000 }), now)).toBe(
      '1m 30s (waiting for retries; next in 12s)',
    );
    expect(describeEta(status({ etaBasis: 'retries', retryAt: now + 3_000 }), now)).toBe(
      '-- (waiting for retries; next in 3s)',
    );
  });

  it('gives no ETA for a paused or scheduled campaign', () => {
    expect(describeEta(status({ state: 'paused', etaSeconds: 5, etaBasis: 'recent' }), now)).toBe(
      '-- (paused)',
    );
    expect(describeEta(status({ etaBasis: 'scheduled' }), now)).toBe('-- (scheduled)');
  });
});

describe('statusReport times', () => {
  it('shows when a completed campaign started and finished, and how long it took', () => {
    const report = statusReport(
      status({
        state: 'completed',
        sent: 100,
        remaining: 0,
        etaSeconds: 0,
        etaBasis: 'done',
        finishedAt: Date.parse('2024-06-01T10:02:05.000Z'),
      }),
      now,
    );
    expect(row(report, 'started')).toBe('2024-06-01T10:00:00.000Z');
    expect(row(report, 'finished')).toBe('2024-06-01T10:02:05.000Z (took 2m 05s)');
    expect(row(report, 'eta')).toBe('0s');
  });

  it('shows a cancelled campaign cancel time, not a finish', () => {
    const report = statusReport(
      status({ state: 'cancelled', finishedAt: Date.parse('2024-06-01T10:01:00.000Z') }),
      now,
    );
    expect(row(report, 'cancelled at')).toBe('2024-06-01T10:01:00.000Z (took 1m 00s)');
    expect(row(report, 'finished')).toBeUndefined();
  });

  it('shows no finish while the campaign goes on, and the schedule of a scheduled one', () => {
    const report = statusReport(
      status({ sendAt: Date.parse('2024-06-01T12:00:00.000Z'), etaBasis: 'scheduled' }),
      now,
    );
    expect(row(report, 'finished')).toBeUndefined();
    expect(row(report, 'scheduled')).toBe('for 2024-06-01T12:00:00.000Z');
    expect(row(report, 'eta')).toBe('-- (scheduled)');
  });
});
