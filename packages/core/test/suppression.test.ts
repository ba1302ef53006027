/** SuppressionList against real Redis: one entry per address whatever its spelling, first record kept, streamed reads. */
import {
  normalizeSuppressedAddress,
  protocolDefaults,
  queueKeys,
  SOURCE_LENGTH,
  type Suppression,
  SuppressionList,
} from '@mailroom/core/protocol';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { removeQueueKeys, testRedis, uniqueQueue } from '../../../test/support/redis.js';

const redis = testRedis();
const queues: string[] = [];

/** A list on a queue of its own, removed after the test. */
function freshList(): { list: SuppressionList; key: string } {
  const queue = uniqueQueue('suppression');
  queues.push(queue);
  const keys = queueKeys(protocolDefaults.prefix, queue);
  return { list: new SuppressionList(redis, keys), key: keys.suppression };
}

async function all(list: SuppressionList, options: Parameters<SuppressionList['entries']>[0] = {}) {
  const found: Suppression[] = [];
  for await (const record of list.entries(options)) found.push(record);
  return found.sort((a, b) => a.address.localeCompare(b.address));
}

afterEach(async () => {
  await Promise.all(queues.splice(0).map((queue) => removeQueueKeys(redis, queue)));
});

afterAll(async () => {
  await redis.quit();
});

describe('normalizeSuppressedAddress', () => {
  it.each([
    ['USER@Example.COM', 'user@example.com'],
    ['Ünïcode@Bücher.example', 'ünïcode@xn--bcher-kva.example'],
    ['ünïcode@xn--bcher-kva.example', 'ünïcode@xn--bcher-kva.example'],
    ['Ann Example <Ann@Example.com>', 'ann@example.com'],
    ['  bob@example.com  ', 'bob@example.com'],
  ])('keys %j as %j', (address, key) => {
    expect(normalizeSuppressedAddress(address)).toBe(key);
  });

  it('refuses a bare local part: nothing to it can bounce or be unsubscribed', () => {
    expect(() => normalizeSuppressedAddress('root')).toThrow(
      'address "root" is not an address: it has no domain',
    );
  });

  it('refuses an @ that is only inside a quoted local part', () => {
    expect(() => normalizeSuppressedAddress('"a@b"')).toThrow(/has no domain/);
  });
});

describe('SuppressionList', () => {
  it('adds an address and gets its record back, with reason, time and source', async () => {
    const { list } = freshList();
    const result = await list.add({
      address: 'bob@example.com',
      reason: 'complaint',
      at: 1_700_000_000_000,
      source: 'abuse desk #4411',
    });
    expect(result).toEqual({ added: 1, existing: 0 });
    expect(await list.get('bob@example.com')).toEqual({
      address: 'bob@example.com',
      reason: 'complaint',
      at: 1_700_000_000_000,
      source: 'abuse desk #4411',
    });
    expect(await list.count()).toBe(1);
  });

  it('stamps an entry without a time with now and an empty source', async () => {
    const { list } = freshList();
    const before = Date.now();
    await list.add({ address: 'bob@example.com', reason: 'manual' });
    const record = await list.get('bob@example.com');
    expect(record?.source).toBe('');
    expect(record?.at).toBeGreaterThanOrEqual(before);
    expect(record?.at).toBeLessThanOrEqual(Date.now());
  });

  it('treats an address in any case as one entry', async () => {
    const { list } = freshList();
    await list.add({ address: 'USER@Example.COM', reason: 'manual' });
    expect(await list.add({ address: 'user@example.com', reason: 'manual' })).toEqual({
      added: 0,
      existing: 1,
    });
    expect((await list.get('User@EXAMPLE.com'))?.address).toBe('user@example.com');
    expect(await list.count()).toBe(1);
  });

  it('treats an IDN domain and its punycode form as one entry', async () => {
    const { list } = freshList();
    await list.add({ address: 'Ünïcode@Bücher.example', reason: 'unsubscribe' });
    expect(await list.add({ address: 'ünïcode@xn--bcher-kva.example', reason: 'manual' })).toEqual({
      added: 0,
      existing: 1,
    });
    expect(await list.get('ÜNÏCODE@BÜCHER.EXAMPLE')).toMatchObject({
      address: 'ünïcode@xn--bcher-kva.example',
      reason: 'unsubscribe',
    });
    expect(await list.count()).toBe(1);
  });

  it('keys an address given with a display name by its addr-spec', async () => {
    const { list } = freshList();
    await list.add({ address: '"Doe, Ann" <Ann@Example.com>', reason: 'manual' });
    expect((await list.get('ann@example.com'))?.address).toBe('ann@example.com');
    expect((await all(list)).map((record) => record.address)).toEqual(['ann@example.com']);
  });

  it('keeps the first record when an address is added again', async () => {
    const { list } = freshList();
    await list.add({ address: 'ann@example.com', reason: 'unsubscribe', at: 1000, source: 'campaign:june' });
    await list.add({ address: 'ann@example.com', reason: 'hard-bounce', at: 2000, source: '550 5.1.1' });
    expect(await list.get('ann@example.com')).toEqual({
      address: 'ann@example.com',
      reason: 'unsubscribe',
      at: 1000,
      source: 'campaign:june',
    });
  });

  it('overwrites the record with replace', async () => {
    const { list } = freshList();
    await list.add({ address: 'ann@example.com', reason: 'unsubscribe', at: 1000 });
    const result = await list.add(
      { address: 'ann@example.com', reason: 'complaint', at: 2000, source: 'feedback loop' },
      { replace: true },
    );
    expect(result).toEqual({ added: 0, existing: 1 });
    expect(await list.get('ann@example.com')).toMatchObject({ reason: 'complaint', at: 2000 });
  });

  it('adds nothing when one address of many is bad, and names it', async () => {
    const { list, key } = freshList();
    const entries = Array.from({ length: 50 }, (_, index) => ({
      address: index === 37 ? 'not an address' : `reader${index}@example.com`,
      reason: 'manual' as const,
    }));
    await expect(list.add(entries)).rejects.toMatchObject({
      name: 'ValidationError',
      field: 'entries[37].address',
      message: expect.stringContaining('entries[37].address "not an address" is not an address'),
    });
    expect(await redis.exists(key)).toBe(0);
  });

  it('adds nothing for a bad reason or time, and names the entry', async () => {
    const { list, key } = freshList();
    await expect(
      list.add([
        { address: 'a@example.com', reason: 'manual' },
        // biome-ignore lint/suspicious/noExplicitAny: a caller without types
        { address: 'b@example.com', reason: 'bounced' as any },
      ]),
    ).rejects.toMatchObject({ field: 'entries[1].reason' });
    await expect(list.add([{ address: 'a@example.com', reason: 'manual', at: 1.5 }])).rejects.toMatchObject({
      field: 'entries[0].at',
    });
    expect(await redis.exists(key)).toBe(0);
  });

  it('stores a source on one line, without controls, cut to SOURCE_LENGTH', async () => {
    const { list } = freshList();
    await list.add([
      {
        address: 'a@example.com',
        reason: 'hard-bounce',
        source: '550-5.1.1 No such\r\n550 5.1.1 user\u001b[31m \u202eok',
      },
      { address: 'b@example.com', reason: 'manual', source: 'x'.repeat(1000) },
    ]);
    expect((await list.get('a@example.com'))?.source).toBe('550-5.1.1 No such 550 5.1.1 user [31m ok');
    const long = (await list.get('b@example.com'))?.source ?? '';
    expect(long).toHaveLength(SOURCE_LENGTH);
    expect(long.endsWith('…')).toBe(true);
  });

  it('looks up many addresses at once, in order, in any spelling', async () => {
    const { list } = freshList();
    await list.add([
      { address: 'ann@example.com', reason: 'manual' },
      { address: 'ünïcode@bücher.example', reason: 'complaint' },
    ]);
    const found = await list.lookup([
      'nobody@example.com',
      'ANN@example.com',
      'not an address',
      'Ünïcode@xn--bcher-kva.example',
    ]);
    expect(found.map((record) => record?.reason)).toEqual([undefined, 'manual', undefined, 'complaint']);
  });

  it('removes addresses in any spelling and says how many were on the list', async () => {
    const { list } = freshList();
    await list.add([
      { address: 'ann@example.com', reason: 'manual' },
      { address: 'bob@example.com', reason: 'manual' },
    ]);
    expect(await list.remove(['ANN@example.com', 'zed@example.com'])).toBe(1);
    expect(await list.get('ann@example.com')).toBeUndefined();
    expect(await list.remove('Bob <bob@EXAMPLE.com>')).toBe(1);
    expect(await list.count()).toBe(0);
  });

  it('refuses to remove a bad address, naming it', async () => {
    const { list } = freshList();
    await expect(list.remove(['ann@example.com', 'nope'])).rejects.toMatchObject({ field: 'addresses[1]' });
  });

  it('streams every entry of a list of more than 1000, each once, and filters by reason', async () => {
    const { list } = freshList();
    const entries = Array.from({ length: 2500 }, (_, index) => ({
      address: `reader${index}@example.com`,
      reason: index % 5 === 0 ? ('hard-bounce' as const) : ('manual' as const),
      at: index,
    }));
    expect(await list.add(entries)).toEqual({ added: 2500, existing: 0 });
    const seen = new Map<string, number>();
    for await (const record of list.entries()) seen.set(record.address, (seen.get(record.address) ?? 0) + 1);
    // HSCAN may return an entry twice if the hash is rehashed meanwhile; here nothing writes.
    expect(seen.size).toBe(2500);
    expect([...seen.values()].every((count) => count === 1)).toBe(true);
    const bounces = await all(list, { reason: 'hard-bounce' });
    expect(bounces).toHaveLength(500);
    expect(bounces.every((record) => record.reason === 'hard-bounce')).toBe(true);
  });

  it('skips a stored record that does not parse, in entries, get and lookup', async () => {
    const { list, key } = freshList();
    await list.add({ address: 'good@example.com', reason: 'manual', at: 5 });
    await redis.hset(
      key,
      'corrupt@example.com',
      '{"r":"bounced","t":1,"s":""}',
      'garbage@example.com',
      'not json',
    );
    expect(await all(list)).toEqual([{ address: 'good@example.com', reason: 'manual', at: 5, source: '' }]);
    expect(await list.get('corrupt@example.com')).toBeUndefined();
    expect(await list.lookup(['garbage@example.com', 'good@example.com'])).toEqual([
      undefined,
      { address: 'good@example.com', reason: 'manual', at: 5, source: '' },
    ]);
  });
});
