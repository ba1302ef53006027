/**
 * `mailroom suppress add|remove|check|list|import|export` as a user runs it, against real Redis:
 * one entry per address whatever its spelling, an import that checks every row before adding any,
 * export and import that round-trip, and values from files shown escaped.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { protocolDefaults, queueKeys, type Suppression, SuppressionList } from '@mailroom/core/protocol';
import { describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT, freshQueue, useHarness, useTemporaryDirectory } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';
import { runMailroom } from './support/worker-process.js';

const harness = useHarness();
const { redis } = harness;
const dir = useTemporaryDirectory('mailroom-cli-suppress-');

/** A queue of its own, its suppression list, and the environment pointing `mailroom` at it. */
function testQueue() {
  const queue = freshQueue(harness, 'cli-suppress');
  const keys = queueKeys(protocolDefaults.prefix, queue);
  return { queue, keys, list: new SuppressionList(redis, keys), env: { REDIS_URL, MAILROOM_QUEUE: queue } };
}

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

async function everyEntry(list: SuppressionList): Promise<Suppression[]> {
  const found: Suppression[] = [];
  for await (const record of list.entries()) found.push(record);
  return found.sort((a, b) => a.address.localeCompare(b.address));
}

/** No raw character a terminal acts on: ESC, other C0 controls but LF, C1 controls, bidi overrides. */
const TERMINAL_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

describe('mailroom suppress', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('adds, checks, lists and removes addresses in any spelling', async () => {
    const { env, list } = testQueue();
    const added = await runMailroom(
      [
        'suppress',
        'add',
        'Ann <ANN@Example.com>',
        'Ünïcode@Bücher.example',
        '--reason',
        'complaint',
        '--source',
        'abuse desk #4411',
      ],
      env,
    );
    expect(added.code).toBe(0);
    expect(added.stdout).toMatch(
      /^suppressed: ann@example\.com {2}complaint since \S+Z \(abuse desk #4411\)$/m,
    );
    expect(added.stdout).toMatch(/^suppressed: ünïcode@xn--bcher-kva\.example {2}complaint/m);
    expect(await list.get('ann@example.com')).toMatchObject({
      reason: 'complaint',
      source: 'abuse desk #4411',
    });

    const again = await runMailroom(['suppress', 'add', 'ünïcode@xn--bcher-kva.example'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^already suppressed: ünïcode@xn--bcher-kva\.example {2}complaint since/m);

    const on = await runMailroom(['suppress', 'check', 'ann@EXAMPLE.COM'], env);
    expect([on.code, on.stdout]).toEqual([
      0,
      expect.stringMatching(/^suppressed: ann@example\.com {2}complaint/),
    ]);
    const off = await runMailroom(['suppress', 'check', '--json', 'zed@example.com'], env);
    expect(off.code).toBe(1);
    expect(JSON.parse(off.stdout)).toEqual({ address: 'zed@example.com', suppressed: false });

    const table = await runMailroom(['suppress', 'list'], env);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ADDRESS +REASON +SINCE \(UTC\) +SOURCE$/);
    expect(lines.slice(1).sort()).toEqual([
      expect.stringMatching(/^ann@example\.com +complaint +\d{4}-\d\d-\d\dT[\d:.]+Z {2}abuse desk #4411$/),
      expect.stringMatching(/^ünïcode@xn--bcher-kva\.example +complaint /),
    ]);
    const json = await runMailroom(['suppress', 'list', '--json', '--limit', '1'], env);
    expect(
      json.stdout
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line)),
    ).toEqual([expect.objectContaining({ reason: 'complaint', source: 'abuse desk #4411' })]);

    const removed = await runMailroom(['suppress', 'remove', 'ANN@example.com', 'zed@example.com'], env);
    // zed was not on the list: exit 1, and ann is removed all the same.
    expect(removed.code).toBe(1);
    expect(removed.stdout).toMatch(/^removed: ann@example\.com {2}complaint/m);
    expect(removed.stderr).toContain('mailroom suppress remove: zed@example.com was not on the list');
    expect((await everyEntry(list)).map((record) => record.address)).toEqual([
      'ünïcode@xn--bcher-kva.example',
    ]);
  });

  it('refuses an address without a domain or a reason it does not know, adding nothing (exit 2)', async () => {
    const { env, keys } = testQueue();
    const noDomain = await runMailroom(['suppress', 'add', 'ann@example.com', 'bob'], env);
    expect(noDomain.code).toBe(2);
    expect(noDomain.stderr).toContain('address "bob" is not an address: it has no domain');
    const badReason = await runMailroom(['suppress', 'add', 'ann@example.com', '--reason', 'bounced'], env);
    expect(badReason.code).toBe(2);
    expect(badReason.stderr).toContain(
      '--reason must be one of hard-bounce, unsubscribe, complaint, manual (got "bounced")',
    );
    expect(await redis.exists(keys.suppression)).toBe(0);
  });

  it('imports a CSV file with an email column, the reason column or --reason for each row', async () => {
    const { env, list } = testQueue();
    const path = await file(
      'subscribers.csv',
      'Email,name,Reason\r\nann@example.com,Ann,complaint\r\n"""Doe, Bob"" <bob@example.com>",Bob,\r\nANN@example.com,Ann again,\r\n',
    );
    const result = await runMailroom(['suppress', 'import', path, '--reason', 'unsubscribe'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('imported 2, already on the list 0, repeated in the file 1 (3 rows)');
    expect(await everyEntry(list)).toEqual([
      expect.objectContaining({
        address: 'ann@example.com',
        reason: 'complaint',
        source: 'import:subscribers.csv',
      }),
      expect.objectContaining({
        address: 'bob@example.com',
        reason: 'unsubscribe',
        source: 'import:subscribers.csv',
      }),
    ]);
  });

  it('imports a plain list of addresses, one per line, without a header row', async () => {
    const { env, list } = testQueue();
    const path = await file('bounces.txt', 'carol@example.com\ndave@example.com\n\n');
    const result = await runMailroom(
      ['suppress', 'import', path, '--reason', 'hard-bounce', '--source', 'old ESP'],
      env,
    );
    expect(result.code).toBe(0);
    expect((await everyEntry(list)).map(({ address, reason, source }) => [address, reason, source])).toEqual([
      ['carol@example.com', 'hard-bounce', 'old ESP'],
      ['dave@example.com', 'hard-bounce', 'old ESP'],
    ]);
  });

  it('imports nothing from a CSV file with one bad row, naming its line and value (exit 2)', async () => {
    const { env, keys } = testQueue();
    const rows = Array.from({ length: 1500 }, (_, index) => `reader${index}@example.com,manual`);
    rows[1200] = 'reader1200.example.com,manual';
    const path = await file('bad.csv', `address,reason\n${rows.join('\n')}\n`);
    const result = await runMailroom(['suppress', 'import', path], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      `${path} line 1202: address "reader1200.example.com" is not an address: it has no domain`,
    );
    expect(await redis.exists(keys.suppression)).toBe(0);

    const badReason = await file(
      'bad-reason.csv',
      'address,reason\nann@example.com,manual\nbob@example.com,bounced\n',
    );
    const second = await runMailroom(['suppress', 'import', badReason], env);
    expect(second.code).toBe(2);
    expect(second.stderr).toContain(`${badReason} line 3: reason must be one of`);
    expect(second.stderr).toContain('(got "bounced")');
    expect(await redis.exists(keys.suppression)).toBe(0);
  });

  it('imports JSON Lines with times as ISO 8601 or epoch milliseconds', async () => {
    const { env, list } = testQueue();
    const path = await file(
      'feedback.jsonl',
      [
        JSON.stringify({
          address: 'x@example.com',
          reason: 'complaint',
          at: '2024-06-01T12:00:00.250Z',
          source: 'FBL',
        }),
        '',
        JSON.stringify({ email: 'y@example.com', at: 1_700_000_000_000 }),
      ].join('\n'),
    );
    const result = await runMailroom(['suppress', 'import', path, '--json'], env);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ rows: 2, added: 2, existing: 0, repeated: 0 });
    expect(await everyEntry(list)).toEqual([
      {
        address: 'x@example.com',
        reason: 'complaint',
        at: Date.parse('2024-06-01T12:00:00.250Z'),
        source: 'FBL',
      },
      { address: 'y@example.com', reason: 'manual', at: 1_700_000_000_000, source: 'import:feedback.jsonl' },
    ]);
  });

  it('exports CSV and JSON Lines that import back to the same records', async () => {
    const { env, list } = testQueue();
    const records = [
      {
        address: 'ann@example.com',
        reason: 'hard-bounce' as const,
        at: 1_717_243_200_123,
        source: '550 5.1.1 <ann@example.com>: "User unknown", sorry',
      },
      { address: 'ünïcode@bücher.example', reason: 'unsubscribe' as const, at: 0, source: 'campaign:june' },
      { address: '"a,b"@example.com', reason: 'manual' as const, at: 1_600_000_000_000, source: '' },
    ];
    await list.add(records);
    const original = await everyEntry(list);

    const csvPath = join(dir, 'export.csv');
    const csv = await runMailroom(['suppress', 'export', '--output', csvPath], env);
    expect([csv.code, csv.stdout.trim()]).toEqual([0, expect.stringContaining('exported 3 records')]);
    const text = await readFile(csvPath, 'utf8');
    expect(text.split('\n')[0]).toBe('address,reason,at,source');
    expect(text).toContain(
      'ann@example.com,hard-bounce,2024-06-01T12:00:00.123Z,"550 5.1.1 <ann@example.com>: ""User unknown"", sorry"',
    );

    const jsonl = await runMailroom(['suppress', 'export', '--format', 'json'], env);
    expect(jsonl.code).toBe(0);
    expect(jsonl.stderr).toContain('3 records');
    const jsonPath = await file('export.jsonl', jsonl.stdout);
    expect(
      jsonl.stdout
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line)),
    ).toContainEqual({
      address: 'ünïcode@xn--bcher-kva.example',
      reason: 'unsubscribe',
      at: '1970-01-01T00:00:00.000Z',
      source: 'campaign:june',
    });

    for (const path of [csvPath, jsonPath]) {
      const copy = testQueue();
      const imported = await runMailroom(['suppress', 'import', path], copy.env);
      expect(imported.code).toBe(0);
      expect(await everyEntry(copy.list)).toEqual(original);
    }
  });

  it('shows addresses and sources from files and Redis escaped, never acting on the terminal', async () => {
    const { env, keys } = testQueue();
    const hostile = await file('hostile.csv', 'address,source\n"\u001b]0;pwned\u0007evil@example.com",x\n');
    const refused = await runMailroom(['suppress', 'import', hostile], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      'line 2: address "\\u001b]0;pwned\\u0007evil@example.com" is not an address',
    );
    expect(refused.stderr).not.toMatch(TERMINAL_CONTROL);

    // A source with escapes: stored on one line, without controls.
    const sources = await file(
      'sources.csv',
      'address,source\nann@example.com,"\u001b[2J\u202egnp.exe\u009b31m"\n',
    );
    expect((await runMailroom(['suppress', 'import', sources], env)).code).toBe(0);
    // A record written into Redis by someone else, with raw controls: shown escaped all the same.
    await redis.hset(
      keys.suppression,
      'bob@example.com',
      JSON.stringify({ r: 'manual', t: 0, s: 'ok\u001b[31mred\u0085' }),
    );
    for (const args of [['list'], ['export'], ['check', 'bob@example.com']]) {
      const shown = await runMailroom(['suppress', ...args], env);
      expect(shown.code).toBe(0);
      expect(shown.stdout).not.toMatch(TERMINAL_CONTROL);
      expect(shown.stdout).toContain('ok\\x1b[31mred\\u0085');
    }
    const listed = await runMailroom(['suppress', 'list', '--json'], env);
    expect(listed.stdout).not.toMatch(TERMINAL_CONTROL);
    // --json escapes them as \uXXXX: each line still parses to the stored values.
    expect(
      listed.stdout
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line).source),
    ).toEqual(expect.arrayContaining(['[2J gnp.exe 31m', 'ok\u001b[31mred\u0085']));
  });
});
