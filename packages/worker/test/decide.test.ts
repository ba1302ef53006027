/** The decide step of a batch on its own: every combination of outcomes, attempts, pause, cancel, shutdown. */

import type { LedgerEntry } from '@mailroom/core/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type BatchOutcome, decideBatch } from '../src/decide.js';

const delivered: LedgerEntry = { state: 'd', accepted: ['a@example.com'] };
const refused: LedgerEntry = { state: 'f', reason: 'rejected', code: 550, detail: 'No such user' };
const deferred: LedgerEntry = { state: 't', reason: 'deferred', code: 451, detail: 'Try later' };
const partly: LedgerEntry = {
  state: 't',
  reason: 'deferred',
  code: 452,
  accepted: ['a@example.com'],
  pending: ['b@example.com'],
};

function outcome(entries: (LedgerEntry | undefined)[], overrides: Partial<BatchOutcome> = {}): BatchOutcome {
  const map = new Map<number, LedgerEntry>();
  entries.forEach((entry, index) => {
    if (entry) map.set(index, entry);
  });
  return {
    messageCount: entries.length,
    entries: map,
    failSilently: new Map(),
    campaignState: '',
    stopped: undefined,
    attemptsUsed: 0,
    attempts: 5,
    connectionFailure: undefined,
    ...overrides,
  };
}

describe('decideBatch', () => {
  it('completes a batch whose every message was delivered', () => {
    const decision = decideBatch(outcome([delivered, delivered]));
    expect(decision).toMatchObject({ kind: 'finish', outcome: 'completed', exhausted: false });
    expect(decision.kind === 'finish' && decision.counts).toEqual({
      delivered: 2,
      failed: 0,
      cancelled: 0,
      failedSilently: 0,
    });
    expect(decision.kind === 'finish' && decision.updates.size).toBe(0);
  });

  it('dead-letters a permanent failure sent without failSilently, naming index, reason, code and reply', () => {
    const decision = decideBatch(outcome([delivered, refused]));
    expect(decision).toMatchObject({
      kind: 'finish',
      outcome: 'dead-letter',
      hardFailures: ['[1] rejected 550: No such user'],
    });
  });

  it('completes with the failure counted when it was sent with failSilently', () => {
    const decision = decideBatch(outcome([delivered, refused], { failSilently: new Map([[1, true]]) }));
    expect(decision).toMatchObject({ kind: 'finish', outcome: 'completed', hardFailures: [] });
    expect(decision.kind === 'finish' && decision.counts).toEqual({
      delivered: 1,
      failed: 1,
      cancelled: 0,
      failedSilently: 1,
    });
  });

  it('retries only the undelivered messages while attempts are left, counting this attempt', () => {
    const decision = decideBatch(outcome([delivered, deferred, undefined, refused], { attemptsUsed: 2 }));
    expect(decision).toEqual({ kind: 'retry', remaining: [1, 2], attempt: 3 });
  });

  it('fails the undelivered for good on the last attempt, keeping each message its own reason', () => {
    const decision = decideBatch(
      outcome([deferred, undefined], {
        attemptsUsed: 4,
        connectionFailure: { reason: 'timeout', detail: 'Greeting never received' },
      }),
    );
    expect(decision.kind).toBe('finish');
    if (decision.kind !== 'finish') return;
    expect(decision.exhausted).toBe(true);
    expect(decision.updates.get(0)).toMatchObject({ state: 'x', reason: 'deferred', code: 451 });
    // Never tried in the last attempt: it fails for the connection's classified reason.
    expect(decision.updates.get(1)).toMatchObject({
      state: 'x',
      reason: 'timeout',
      detail: 'Greeting never received',
    });
    expect(decision.outcome).toBe('dead-letter');
  });

  it('counts a message with accepted recipients as delivered when the rest ran out of attempts', () => {
    const decision = decideBatch(outcome([partly], { attemptsUsed: 4 }));
    expect(decision.kind === 'finish' && decision.updates.get(0)?.state).toBe('d');
    expect(decision).toMatchObject({ kind: 'finish', outcome: 'completed' });
  });

  it('with attempts: 1 fails at once instead of retrying', () => {
    expect(decideBatch(outcome([deferred], { attempts: 1 })).kind).toBe('finish');
  });

  it('parks the batch of a paused campaign without spending an attempt, whatever is left', () => {
    expect(
      decideBatch(outcome([delivered, undefined, deferred], { campaignState: 'paused', attemptsUsed: 4 })),
    ).toEqual({
      kind: 'park',
      remaining: [1, 2],
    });
  });

  it('puts the rest back on shutdown without spending an attempt, even on the last one', () => {
    expect(decideBatch(outcome([delivered, undefined], { stopped: 'shutdown', attemptsUsed: 4 }))).toEqual({
      kind: 'requeue',
      remaining: [1],
    });
  });

  it('cancels what is left of a cancelled campaign and completes, even when shutting down', () => {
    const decision = decideBatch(
      outcome([delivered, undefined, deferred], { campaignState: 'cancelled', stopped: 'shutdown' }),
    );
    expect(decision.kind).toBe('finish');
    if (decision.kind !== 'finish') return;
    expect([...decision.updates]).toEqual([
      [1, { state: 'c', reason: 'cancelled' }],
      [2, { state: 'c', reason: 'cancelled' }],
    ]);
    expect(decision).toMatchObject({ outcome: 'completed', exhausted: false });
    expect(decision.counts).toEqual({ delivered: 1, failed: 0, cancelled: 2, failedSilently: 0 });
  });

  it('finishes a paused or shutting-down batch that has nothing left (no park, no requeue)', () => {
    expect(decideBatch(outcome([delivered], { campaignState: 'paused' })).kind).toBe('finish');
    expect(decideBatch(outcome([delivered], { stopped: 'shutdown' })).kind).toBe('finish');
  });

  it('holds for every combination: nothing final is touched, and every message ends accounted for', () => {
    const entry = fc.constantFrom<LedgerEntry | undefined>(undefined, delivered, refused, deferred, partly, {
      state: 'c',
      reason: 'cancelled',
    });
    fc.assert(
      fc.property(
        fc.array(entry, { minLength: 1, maxLength: 8 }),
        fc.array(fc.boolean(), { maxLength: 8 }),
        fc.constantFrom('', 'running', 'paused', 'cancelled'),
        fc.constantFrom(undefined, 'shutdown', 'connection', 'paused', 'cancelled'),
        fc.integer({ min: 0, max: 6 }),
        fc.integer({ min: 1, max: 6 }),
        (entries, silent, campaignState, stopped, attemptsUsed, attempts) => {
          const input = outcome(entries, {
            failSilently: new Map(silent.map((value, index) => [index, value])),
            campaignState,
            stopped: stopped as BatchOutcome['stopped'],
            attemptsUsed,
            attempts,
          });
          const decision = decideBatch(input);
          const open = entries.flatMap((value, index) =>
            value === undefined || value.state === 't' ? [index] : [],
          );
          if (decision.kind !== 'finish') {
            expect(decision.remaining).toEqual(open);
            expect(campaignState).not.toBe('cancelled');
            return;
          }
          for (const index of decision.updates.keys()) expect(open).toContain(index);
          const { delivered: d, failed, cancelled } = decision.counts;
          expect(d + failed + cancelled).toBe(entries.length);
          expect(decision.outcome === 'dead-letter').toBe(decision.hardFailures.length > 0);
        },
      ),
    );
  });
});
