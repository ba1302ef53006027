/** Key names (keys.ts): every key of a queue, mailroom's and BullMQ's, lives under `<prefix>:<queue>:`. */
import { queueKeys } from '@mailroom/core/protocol';
import { describe, expect, it } from 'vitest';

describe('queueKeys', () => {
  const keys = queueKeys('{mailroom}', 'news');

  it('puts every key under the queue base, in the hash tag of the prefix', () => {
    const names = [
      keys.ledger('job-1'),
      keys.rate,
      keys.campaigns,
      keys.epoch,
      keys.campaign('c'),
      keys.campaignRate('c'),
      keys.campaignSeen('c'),
      keys.campaignChunks('c'),
      keys.campaignFailures('c'),
      keys.campaignInvalid('c'),
      keys.campaignFailedRecipients('c'),
      keys.campaignRetrying('c'),
      keys.jobLock('job-1'),
      keys.deduplication('key#0'),
      keys.jobSet('wait'),
    ];
    expect(keys.base).toBe('{mailroom}:news');
    for (const name of names) expect(name.startsWith('{mailroom}:news:')).toBe(true);
    expect(new Set(names).size).toBe(names.length);
  });

  it("names BullMQ's own keys as BullMQ does", () => {
    expect(keys.jobLock('job-1')).toBe('{mailroom}:news:job-1:lock');
    expect(keys.deduplication('key#0')).toBe('{mailroom}:news:de:key#0');
    expect(keys.jobSet('failed')).toBe('{mailroom}:news:failed');
  });
});
