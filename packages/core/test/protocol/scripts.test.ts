/** The protocol's Lua scripts: they compile with their constants interpolated, register once, and act on the campaign record. */
import {
  CAMPAIGN_FIELDS,
  CAMPAIGN_STATES,
  protocolDefaults,
  queueKeys,
  registerScripts,
} from '@mailroom/core/protocol';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { removeQueueKeys, testRedis, uniqueQueue } from '../../../../test/support/redis.js';
import { COMMIT_CHUNK, SEEN, TRANSITION } from '../../src/protocol/campaign-scripts.js';
import { ENSURE_EPOCH, RECORD_LOSS } from '../../src/protocol/epoch-scripts.js';
import { CLAIM_RETRY } from '../../src/protocol/failed-recipients.js';
import { CHECK, RECORD, REOPEN_EXHAUSTED } from '../../src/protocol/ledger-scripts.js';

const redis = testRedis();
const queue = uniqueQueue('protocol-scripts');
const keys = queueKeys(protocolDefaults.prefix, queue);

afterEach(async () => {
  await removeQueueKeys(redis, queue);
});

afterAll(async () => {
  await redis.quit();
});

describe('the Lua scripts', () => {
  it.each(
    Object.entries({
      COMMIT_CHUNK,
      SEEN,
      TRANSITION,
      RECORD,
      CHECK,
      REOPEN_EXHAUSTED,
      ENSURE_EPOCH,
      RECORD_LOSS,
      CLAIM_RETRY,
    }),
  )('%s compiles with its constants interpolated', async (_name, lua) => {
    expect(lua).not.toContain('${');
    await expect(redis.script('LOAD', lua)).resolves.toMatch(/^[0-9a-f]{40}$/);
  });

  it('registers each command once on a client, however often it is asked', () => {
    const client = registerScripts(redis);
    const record = client.mailroomRecord;
    expect(registerScripts(redis)).toBe(client);
    expect(client.mailroomRecord).toBe(record);
  });

  it('writes the campaign hash under the field names of CAMPAIGN_FIELDS', async () => {
    const client = registerScripts(redis);
    const campaign = keys.campaign('fields');
    await redis.hset(campaign, CAMPAIGN_FIELDS.state, CAMPAIGN_STATES.running);
    const committed = await client.mailroomCommitChunk(
      keys.campaignChunks('fields'),
      campaign,
      keys.campaignFailures('fields'),
      keys.campaignInvalid('fields'),
      'chunk-1',
      3,
      2,
      1,
      0,
      2,
      1,
      JSON.stringify({ row: 2, email: 'bad', field: 'to', reason: 'no domain' }),
    );
    expect(committed).toBe(1);
    expect(
      await client.mailroomTransition(campaign, CAMPAIGN_STATES.cancelled, CAMPAIGN_STATES.running, '1234'),
    ).toBe(CAMPAIGN_STATES.running);
    expect(await redis.hgetall(campaign)).toEqual({
      [CAMPAIGN_FIELDS.state]: CAMPAIGN_STATES.cancelled,
      [CAMPAIGN_FIELDS.total]: '3',
      [CAMPAIGN_FIELDS.queued]: '2',
      [CAMPAIGN_FIELDS.failed]: '1',
      [CAMPAIGN_FIELDS.duplicates]: '0',
      [CAMPAIGN_FIELDS.suppressed]: '2',
      [CAMPAIGN_FIELDS.cancelledAt]: '1234',
    });
    const ttl = await redis.pttl(keys.campaignChunks('fields'));
    expect(ttl).toBeGreaterThan(protocolDefaults.campaignTtl - 60_000);
    expect(ttl).toBeLessThanOrEqual(protocolDefaults.campaignTtl);
  });

  it('counts a chunk once however often it is committed', async () => {
    const client = registerScripts(redis);
    const commit = () =>
      client.mailroomCommitChunk(
        keys.campaignChunks('once'),
        keys.campaign('once'),
        keys.campaignFailures('once'),
        keys.campaignInvalid('once'),
        'chunk-1',
        5,
        5,
        0,
        0,
        0,
        0,
      );
    expect(await commit()).toBe(1);
    expect(await commit()).toBe(0);
    expect(await redis.hget(keys.campaign('once'), CAMPAIGN_FIELDS.total)).toBe('5');
  });
});

describe('CLAIM_RETRY', () => {
  const id = 'retry';
  // What retryCampaign looked up on the suppression list just before the claim.
  const suppressed = new Set<string>();
  beforeEach(() => suppressed.clear());
  const record = (state: 'f' | 'x', reason: string, extra: Record<string, unknown> = {}) =>
    JSON.stringify({ reason, attempts: 1, at: 1000, state, message: 'packed', ...extra });
  const claim = (claimId: string, transientOnly: boolean, ...addresses: string[]) =>
    registerScripts(redis).mailroomClaimRetry(
      keys.campaignFailedRecipients(id),
      keys.campaignRetrying(id),
      keys.campaign(id),
      keys.campaignFailures(id),
      claimId,
      '5000',
      transientOnly ? '1' : '0',
      '2000',
      ...addresses.flatMap((address) => [
        address,
        keys.ledger('job'),
        `m${address.charCodeAt(0)}`,
        suppressed.has(address) ? '1' : '0',
      ]),
    );

  it('moves each record to the retrying hash once, taking it out of the failed counts', async () => {
    await redis.hset(keys.campaign(id), CAMPAIGN_FIELDS.failed, '2');
    await redis.hset(keys.campaignFailures(id), 'rejected', '1', 'deferred', '1');
    await redis.hset(
      keys.campaignFailedRecipients(id),
      'a@x',
      record('f', 'rejected'),
      'b@x',
      record('x', 'deferred'),
    );
    const [suppressed, inFlight, stale, claimed] = await claim('c1', false, 'a@x', 'b@x');
    expect([suppressed, inFlight, stale]).toEqual([0, 0, 0]);
    expect(claimed).toEqual(['a@x', record('f', 'rejected'), 'b@x', record('x', 'deferred')]);
    expect(await claim('c2', false, 'a@x', 'b@x')).toEqual([0, 0, 0, []]);
    expect(await redis.hget(keys.campaignRetrying(id), 'a@x')).toBe(`c1|5000|${record('f', 'rejected')}`);
    expect(await redis.hget(keys.campaign(id), CAMPAIGN_FIELDS.failed)).toBe('0');
    expect(await redis.hgetall(keys.campaignFailures(id))).toEqual({});
    expect(await redis.exists(keys.campaignFailedRecipients(id))).toBe(0);
  });

  it('leaves permanent failures with transient only, new failures, suppressed and in-flight recipients', async () => {
    await redis.hset(
      keys.campaignFailedRecipients(id),
      'a@x',
      record('f', 'rejected'),
      'n@x',
      record('x', 'deferred', { at: 3000 }),
      's@x',
      record('x', 'deferred'),
      't@x',
      record('x', 'deferred'),
      'd@x',
      record('x', 'deferred'),
    );
    suppressed.add('s@x');
    await redis.hset(keys.ledger('job'), `m${'t'.charCodeAt(0)}`, 't{}', `m${'d'.charCodeAt(0)}`, 'd{}');
    expect(await claim('c1', true, 'a@x', 'n@x', 's@x', 't@x', 'd@x')).toEqual([1, 1, 1, []]);
    // The delivered one was stale: dropped; the others stay failed.
    expect((await redis.hkeys(keys.campaignFailedRecipients(id))).sort()).toEqual([
      'a@x',
      'n@x',
      's@x',
      't@x',
    ]);
  });
});
