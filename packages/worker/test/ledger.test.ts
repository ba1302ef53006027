import { EmailMessage, toWire } from '@mailroom/core';
import { parseFailedRecipient, protocolDefaults, queueKeys, unpackMessages } from '@mailroom/core/protocol';
import { decodeEntry, encodeEntry, Ledger } from '@mailroom/worker';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { removeQueueKeys, testRedis, uniqueQueue } from '../../../test/support/redis.js';

const redis = testRedis();
const queue = uniqueQueue('ledger');
const keys = queueKeys('{mailroom}', queue);
const ledger = new Ledger(redis, keys, 60_000);

afterEach(async () => {
  await removeQueueKeys(redis, queue);
});
afterAll(async () => {
  await redis.quit();
});

describe('ledger entries', () => {
  it('round-trip through their compact encoding', () => {
    const entry = {
      state: 't' as const,
      pending: ['b@x'],
      accepted: ['a@x'],
      reason: 'deferred' as const,
      code: 451,
    };
    expect(encodeEntry(entry).startsWith('t{')).toBe(true);
    expect(decodeEntry(encodeEntry(entry))).toEqual(entry);
  });
});

describe('Ledger', () => {
  it('loads what was recorded, per message, with the attempt count', async () => {
    const batch = { jobId: 'job-1', token: undefined, campaign: undefined };
    await ledger.record(batch, 0, { state: 'd', accepted: ['a@x'] });
    await ledger.record(batch, 3, { state: 'f', reason: 'rejected', code: 550 });
    expect(await ledger.addAttempt('job-1')).toBe(1);
    expect(await ledger.addAttempt('job-1')).toBe(2);
    const snapshot = await ledger.load('job-1');
    expect(snapshot.attempts).toBe(2);
    expect([...snapshot.entries.keys()].sort()).toEqual([0, 3]);
    expect(snapshot.entries.get(3)).toEqual({ state: 'f', reason: 'rejected', code: 550 });
    expect(await redis.pttl(keys.ledger('job-1'))).toBeGreaterThan(50_000);
  });

  it('counts a message on its campaign once, however often its final state is written', async () => {
    const batch = { jobId: 'job-2', token: undefined, campaign: 'c1' };
    await redis.hset(keys.campaign('c1'), 'state', 'running');
    await ledger.record(batch, 0, { state: 't', reason: 'deferred' });
    await ledger.record(batch, 0, { state: 'd' });
    await ledger.record(batch, 0, { state: 'd' });
    await ledger.record(batch, 1, { state: 'f', reason: 'rejected' });
    await ledger.record(batch, 1, { state: 'f', reason: 'rejected' });
    await ledger.record(batch, 2, { state: 'c', reason: 'cancelled' });
    const counters = await redis.hgetall(keys.campaign('c1'));
    expect(counters).toMatchObject({ sent: '1', failed: '1', cancelled: '1' });
    expect(await redis.hgetall(keys.campaignFailures('c1'))).toEqual({ rejected: '1' });
  });

  it("reports the campaign's state with every write", async () => {
    await redis.hset(keys.campaign('c2'), 'state', 'paused');
    const status = await ledger.record({ jobId: 'job-3', token: undefined, campaign: 'c2' }, 0, {
      state: 'd',
    });
    expect(status).toEqual({ lockHeld: true, campaignState: 'paused' });
  });

  it('tells when the job lock is no longer ours', async () => {
    const lock = `${keys.base}:job-4:lock`;
    await redis.set(lock, 'token-a');
    expect((await ledger.check({ jobId: 'job-4', token: 'token-a', campaign: undefined })).lockHeld).toBe(
      true,
    );
    await redis.set(lock, 'token-b');
    expect(
      (await ledger.record({ jobId: 'job-4', token: 'token-a', campaign: undefined }, 0, { state: 'd' }))
        .lockHeld,
    ).toBe(false);
    await redis.del(lock);
    expect((await ledger.check({ jobId: 'job-4', token: 'token-a', campaign: undefined })).lockHeld).toBe(
      false,
    );
  });

  it('shortens the life of a finished batch', async () => {
    await ledger.record({ jobId: 'job-5', token: undefined, campaign: undefined }, 0, { state: 'd' });
    await ledger.finish('job-5', 2000);
    expect(await redis.pttl(keys.ledger('job-5'))).toBeLessThanOrEqual(2000);
  });
});

describe('Ledger.reopenExhausted', () => {
  it('turns exhausted entries back into transient ones and resets the attempt count', async () => {
    const batch = { jobId: 'job-6', token: undefined, campaign: undefined };
    await ledger.record(batch, 0, { state: 'd', accepted: ['a@x'] });
    await ledger.record(batch, 1, { state: 'x', reason: 'deferred', code: 451, detail: '451 try later' });
    await ledger.record(batch, 2, { state: 'x', reason: 'connection', pending: ['c@x'] });
    await ledger.addAttempt('job-6');
    await ledger.addAttempt('job-6');
    expect(await ledger.reopenExhausted('job-6')).toBe(2);
    const snapshot = await ledger.load('job-6');
    expect(snapshot.attempts).toBe(0);
    expect(snapshot.entries.get(1)).toEqual({
      state: 't',
      reason: 'deferred',
      code: 451,
      detail: '451 try later',
    });
    expect(snapshot.entries.get(2)).toEqual({ state: 't', reason: 'connection', pending: ['c@x'] });
  });

  it('leaves delivered, permanently failed and cancelled messages final', async () => {
    const batch = { jobId: 'job-7', token: undefined, campaign: undefined };
    await ledger.record(batch, 0, { state: 'd' });
    await ledger.record(batch, 1, { state: 'f', reason: 'rejected', code: 550 });
    await ledger.record(batch, 2, { state: 'c', reason: 'cancelled' });
    expect(await ledger.reopenExhausted('job-7')).toBe(0);
    const { entries } = await ledger.load('job-7');
    expect([...entries.values()].map((entry) => entry.state)).toEqual(['d', 'f', 'c']);
  });

  it("takes reopened messages back out of their campaign's failed counters, per reason", async () => {
    const batch = { jobId: 'job-8', token: undefined, campaign: 'c3' };
    await redis.hset(keys.campaign('c3'), 'state', 'running');
    await ledger.record(batch, 0, { state: 'x', reason: 'deferred', code: 451 });
    await ledger.record(batch, 1, { state: 'x', reason: 'timeout' });
    await ledger.record(batch, 2, { state: 'f', reason: 'rejected', code: 550 });
    await ledger.record(batch, 3, { state: 'x', reason: 'deferred', code: 421 });
    expect(await redis.hget(keys.campaign('c3'), 'failed')).toBe('4');
    expect(await ledger.reopenExhausted('job-8', 'c3')).toBe(3);
    expect(await redis.hget(keys.campaign('c3'), 'failed')).toBe('1');
    expect(await redis.hgetall(keys.campaignFailures('c3'))).toEqual({ rejected: '1' });
    // The retry settles them again and counts them once more: the totals stay consistent.
    await ledger.record(batch, 0, { state: 'd' });
    await ledger.record(batch, 1, { state: 'x', reason: 'timeout' });
    expect(await redis.hgetall(keys.campaign('c3'))).toMatchObject({ sent: '1', failed: '2' });
    expect(await redis.hgetall(keys.campaignFailures('c3'))).toEqual({ rejected: '1', timeout: '1' });
  });

  it('writes nothing for a batch without a ledger', async () => {
    expect(await ledger.reopenExhausted('job-9', 'c4')).toBe(0);
    const written = [keys.ledger('job-9'), keys.campaign('c4'), keys.campaignFailures('c4')];
    expect(await redis.exists(...written)).toBe(0);
  });
});

describe('campaign failure records', () => {
  const wire = (to: string) => toWire(new EmailMessage('Hi', 'Hello', 'news@example.com', [to]));
  const messages = [wire('Ann <Ann@Example.com>'), wire('bob@example.com'), wire('cy@example.com')];
  const batch = { jobId: 'job-r', token: undefined, campaign: 'cr', messages, attempt: 2 };

  it('keeps a failed message with its reply, once, in the step that counts it', async () => {
    await redis.hset(keys.campaign('cr'), 'state', 'running');
    const refused = {
      state: 'f' as const,
      reason: 'rejected' as const,
      code: 550,
      detail: 'Recipient refused',
    };
    const entry = {
      ...refused,
      refused: [{ recipient: 'Ann@Example.com', code: 550, response: '550 5.7.1 policy' }],
    };
    await ledger.recordMany(batch, [
      [0, entry],
      [1, { state: 'd' }],
    ]);
    const records = await redis.hgetall(keys.campaignFailedRecipients('cr'));
    expect(Object.keys(records)).toEqual(['ann@example.com']);
    const record = parseFailedRecipient(records['ann@example.com'] as string);
    expect(record).toMatchObject({
      reason: 'rejected',
      code: 550,
      reply: '550 5.7.1 policy',
      attempts: 2,
      state: 'f',
    });
    expect(record?.job).toBe('job-r');
    expect(record?.field).toBe('m0');
    expect(unpackMessages(record?.message as string)).toEqual([JSON.parse(JSON.stringify(messages[0]))]);
    // Written again (a re-run): neither counted nor recorded a second time.
    await redis.hdel(keys.campaignFailedRecipients('cr'), 'ann@example.com');
    await ledger.record(batch, 0, entry);
    expect(await redis.hlen(keys.campaignFailedRecipients('cr'))).toBe(0);
    expect(await redis.hget(keys.campaign('cr'), 'failed')).toBe('1');
    const ttl = await redis.pttl(keys.campaignFailures('cr'));
    expect(ttl).toBeGreaterThan(protocolDefaults.campaignTtl - 60_000);
  });

  it('records exhausted transient failures, and nothing for delivered or cancelled messages', async () => {
    await ledger.recordMany(batch, [
      [1, { state: 'd' }],
      [2, { state: 'c', reason: 'cancelled' }],
    ]);
    expect(await redis.exists(keys.campaignFailedRecipients('cr'))).toBe(0);
    await ledger.record(batch, 2, { state: 'x', reason: 'deferred', code: 450, detail: '450 busy' });
    expect(await redis.exists(keys.campaignFailedRecipients('cr'))).toBe(0);
    await ledger.record({ ...batch, jobId: 'job-s' }, 2, {
      state: 'x',
      reason: 'deferred',
      code: 450,
      detail: '450 busy',
    });
    const record = parseFailedRecipient(
      (await redis.hget(keys.campaignFailedRecipients('cr'), 'cy@example.com')) ?? '',
    );
    expect(record).toMatchObject({ state: 'x', reason: 'deferred', code: 450, reply: '450 busy' });
  });

  it("sets the campaign's lastSettledAt whenever it counts a message", async () => {
    const before = Date.now();
    await ledger.record(batch, 1, { state: 'd' });
    expect(Number(await redis.hget(keys.campaign('cr'), 'lastSettledAt'))).toBeGreaterThanOrEqual(before);
    await redis.hdel(keys.campaign('cr'), 'lastSettledAt');
    await ledger.record(batch, 1, { state: 'd' });
    expect(await redis.hget(keys.campaign('cr'), 'lastSettledAt')).toBeNull();
  });
});
