/** The files of `mailroom suppress import|export`: times, columns, quoting, and lines that read back as written. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Suppression } from '@mailroom/core/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CSV_HEADER,
  exportLine,
  type ImportRow,
  parseTime,
  readSuppressionFile,
  type SuppressionFormat,
  suppressionFormat,
} from '../src/cli/suppression-file.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mailroom-suppression-file-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const defaults = { reason: 'manual', source: 'import:test' } as const;

async function rows(name: string, text: string, format: SuppressionFormat = 'csv'): Promise<ImportRow[]> {
  const path = join(dir, name);
  await writeFile(path, text);
  const found: ImportRow[] = [];
  for await (const row of readSuppressionFile(path, format, defaults)) found.push(row);
  return found;
}

describe('parseTime', () => {
  it.each([
    ['2024-06-01T12:00:00.123Z', Date.UTC(2024, 5, 1, 12, 0, 0, 123)],
    ['2024-06-01T12:00:00+02:00', Date.UTC(2024, 5, 1, 10)],
    ['2024-06-01T12:00', Date.UTC(2024, 5, 1, 12)],
    ['2024-06-01', Date.UTC(2024, 5, 1)],
    ['1700000000000', 1_700_000_000_000],
    [1_700_000_000_000, 1_700_000_000_000],
  ])('reads %j', (value, ms) => {
    expect(parseTime(value, 'at')).toBe(ms);
  });

  it.each([['June 1, 2024'], ['2024-13-01'], [1.5], [-1], [9e15], ['']])(
    'refuses %j, naming the field',
    (value) => {
      expect(() => parseTime(value, 'at')).toThrow(/^at must be an ISO 8601 time/);
    },
  );
});

describe('suppressionFormat', () => {
  it('takes --format, else the extension, else nothing', () => {
    expect(suppressionFormat('json', 'list.csv')).toBe('json');
    expect(suppressionFormat(undefined, 'list.CSV')).toBe('csv');
    expect(suppressionFormat(undefined, 'bounces.txt')).toBe('csv');
    expect(suppressionFormat(undefined, 'feedback.ndjson')).toBe('json');
    expect(suppressionFormat(undefined, 'list.xlsx')).toBeUndefined();
    expect(() => suppressionFormat('xml', undefined)).toThrow('--format must be csv or json (got "xml")');
  });
});

describe('readSuppressionFile', () => {
  it('reads the known columns of a header row in any order and case, ignoring the others', async () => {
    const found = await rows(
      'columns.csv',
      'Name,SOURCE,at,Email,Reason\nAnn,FBL,2024-06-01T00:00:00Z,Ann@Example.com,Complaint\n',
    );
    expect(found).toEqual([
      {
        line: 2,
        entry: { address: 'ann@example.com', reason: 'complaint', source: 'FBL', at: Date.UTC(2024, 5, 1) },
      },
    ]);
  });

  it('keeps an empty source empty when the file has a source column, and defaults a missing one', async () => {
    const withColumn = await rows('empty-source.csv', 'address,source\nann@example.com,\n');
    expect(withColumn[0]?.entry.source).toBe('');
    const without = await rows('no-source.csv', 'address\nann@example.com\n');
    expect(without[0]?.entry).toEqual({
      address: 'ann@example.com',
      reason: 'manual',
      source: 'import:test',
    });
  });

  it('prefers the address column to the email column', async () => {
    const found = await rows('both.csv', 'email,address\nhome@example.com,work@example.com\n');
    expect(found[0]?.entry.address).toBe('work@example.com');
  });

  it('reads a file of bare addresses without a header row, from its first line', async () => {
    const found = await rows('plain.txt', 'carol@example.com\r\n\r\nDave <dave@example.com>\r\n');
    expect(found.map((row) => [row.line, row.entry.address])).toEqual([
      [1, 'carol@example.com'],
      [3, 'dave@example.com'],
    ]);
  });

  it.each([
    [
      'a header row without an address column',
      'name,reason\nAnn,manual\n',
      'line 1: the header row has no "address" or "email" column (found: name, reason)',
    ],
    [
      'a repeated column',
      'address,reason,Reason\na@example.com,manual,manual\n',
      'line 1: header column "reason" appears twice',
    ],
    [
      'a row with a missing field',
      'address,reason\na@example.com,manual\nb@example.com\n',
      'line 3: expected 2 fields like the header row, got 1',
    ],
    [
      'a second field in a plain list',
      'a@example.com\nb@example.com,manual\n',
      'line 2: expected one address per line',
    ],
    ['a bad time', 'address,at\na@example.com,yesterday\n', 'line 2: at must be an ISO 8601 time'],
  ])('names the line of %s', async (_name, text, message) => {
    await expect(rows('bad.csv', text)).rejects.toThrow(message);
  });

  it('reads JSON Lines with "address" or "email", naming the line of a bad one', async () => {
    const found = await rows(
      'ok.jsonl',
      '{"email":"a@example.com","reason":"unsubscribe"}\n\n{"address":"b@example.com","source":""}\n',
      'json',
    );
    expect(found.map((row) => [row.line, row.entry])).toEqual([
      [1, { address: 'a@example.com', reason: 'unsubscribe', source: 'import:test' }],
      [3, { address: 'b@example.com', reason: 'manual', source: '' }],
    ]);
    await expect(
      rows('bad.jsonl', '{"address":"a@example.com"}\n["b@example.com"]\n', 'json'),
    ).rejects.toThrow('line 2: expected an object');
    await expect(rows('bad2.jsonl', '{"name":"Ann"}\n', 'json')).rejects.toThrow(
      'line 1: an "address" (or "email") string is required',
    );
  });
});

describe('exportLine', () => {
  const record: Suppression = {
    address: '"a,b"@example.com',
    reason: 'hard-bounce',
    at: Date.UTC(2024, 5, 1, 12, 0, 0, 5),
    source: '550 5.1.1 "User unknown", sorry',
  };

  it('writes CSV fields with RFC 4180 quoting and the time in ISO 8601', () => {
    expect(CSV_HEADER).toBe('address,reason,at,source');
    expect(exportLine(record, 'csv')).toBe(
      '"""a,b""@example.com",hard-bounce,2024-06-01T12:00:00.005Z,"550 5.1.1 ""User unknown"", sorry"',
    );
  });

  it('writes one JSON object per line', () => {
    expect(JSON.parse(exportLine(record, 'json'))).toEqual({ ...record, at: '2024-06-01T12:00:00.005Z' });
  });

  it.each<SuppressionFormat>(['csv', 'json'])(
    'writes a line that %s import reads back to the same record',
    async (format) => {
      const header = format === 'csv' ? `${CSV_HEADER}\n` : '';
      const found = await rows(`round.${format}`, `${header}${exportLine(record, format)}\n`, format);
      expect(found.map((row) => row.entry)).toEqual([record]);
    },
  );
});
