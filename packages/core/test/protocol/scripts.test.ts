/** The protocol's Lua scripts: they compile with their constants interpolated, register once, and act on the campaign record. */
import {
  CAMPAIGN_FIELDS,
  CAMPAIGN_STATES,
  protocolDefaults,
  queueKeys,
  registerScripts,
} from '@mailroom/core/protocol';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { removeQueueKeys, testRedis, uniqueQueue } from '../../../../test/support/redis.js';
import { COMMIT_CHUNK, SEEN, TRANSITION } from '../../src/protocol/campaign-scripts.js';
import { ENSURE_EPOCH, RECORD_LOSS } from '../../src/protocol/epoch-scripts.js';
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
