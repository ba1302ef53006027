import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CsvError, CsvParser, parseCsv, parseCsvRows } from '../src/cli/csv.js';

/** Parses text pushed in the given chunk sizes (1 = one character at a time). */
function records(text: string, chunkSize = text.length || 1): { fields: string[]; line: number }[] {
  const parser = new CsvParser();
  const out = [];
  for (let i = 0; i < text.length; i += chunkSize) out.push(...parser.push(text.slice(i, i + chunkSize)));
  out.push(...parser.end());
  return out;
}

function fields(text: string, chunkSize?: number): string[][] {
  return records(text, chunkSize).map((record) => record.fields);
}

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of source) out.push(item);
  return out;
}

describe('CsvParser (RFC 4180)', () => {
  it('splits fields on commas and records on CRLF, LF or CR', () => {
    expect(fields('a,b,c\r\n1,2,3\n4,5,6\r7,8,9')).toEqual([
      ['a', 'b', 'c'],
      ['1', '2', '3'],
      ['4', '5', '6'],
      ['7', '8', '9'],
    ]);
  });

  it('keeps commas, doubled quotes and line breaks inside quoted fields', () => {
    expect(fields('"Doe, John","say ""hi""","two\r\nlines"\r\nnext,"",x\r\n')).toEqual([
      ['Doe, John', 'say "hi"', 'two\r\nlines'],
      ['next', '', 'x'],
    ]);
  });

  it('gives the same records whatever the chunk boundaries (quotes and CRLF split between chunks)', () => {
    const text = 'email,name\r\n"a@x","A ""1"", the\r\nfirst"\r\nb@x,B\r\n,\r\n';
    const whole = fields(text);
    expect(whole).toEqual([
      ['email', 'name'],
      ['a@x', 'A "1", the\r\nfirst'],
      ['b@x', 'B'],
      ['', ''],
    ]);
    for (const size of [1, 2, 3, 5, 7]) expect(fields(text, size), `chunks of ${size}`).toEqual(whole);
  });

  it('keeps an 8 MB field whole, quoted or not, across 64 KB chunks, with the lines counted (issue 9)', () => {
    const big = 'x'.repeat(8 * 1024 * 1024);
    const text = `a,${big}\r\n"${big}""\r\n${big}",b\r\nc,d\r\n`;
    const out = records(text, 64 * 1024);
    expect(out.map((record) => record.line)).toEqual([1, 2, 4]);
    expect(out[0]?.fields[1]).toBe(big);
    expect(out[1]?.fields[0]).toBe(`${big}"\r\n${big}`);
    expect(out[2]?.fields).toEqual(['c', 'd']);
  });

  it('keeps empty fields, a trailing empty field, and a last record without a line break', () => {
    expect(fields('a,,c\nd,e,\nf,g,h')).toEqual([
      ['a', '', 'c'],
      ['d', 'e', ''],
      ['f', 'g', 'h'],
    ]);
  });

  it('ignores blank lines and a UTF-8 byte order mark', () => {
    expect(fields('\uFEFFemail\r\n\r\na@x\n\n\nb@x\r\n\r\n')).toEqual([['email'], ['a@x'], ['b@x']]);
  });

  it('numbers records by the line they start on, counting line breaks inside quotes once', () => {
    expect(records('h\r\n"multi\r\nline\nfield"\r\n\r\nlast\r\n', 1).map((record) => record.line)).toEqual([
      1, 2, 6,
    ]);
  });

  it('rejects a quote inside an unquoted field, naming the line', () => {
    expect(() => fields('a,b\nc,d"e\n')).toThrow(/line 2: a quote inside an unquoted field/);
  });

  it('rejects text after a closing quote', () => {
    expect(() => fields('"a"b,c\n')).toThrow(/line 1: unexpected "b" after a closing quote/);
  });

  it('rejects a quote never closed, naming the line where the field started', () => {
    expect(() => fields('email,name\na@x,"Ann\nb@x,Bob\n', 4)).toThrow(
      /line 2: a quoted field is never closed/,
    );
  });

  it('parses a stream of UTF-8 bytes split inside a multi-byte character', async () => {
    const bytes = Buffer.from('name\nZoë\n"Ünïcødé"\n', 'utf8');
    const chunks = Array.from({ length: bytes.length }, (_, index) => bytes.subarray(index, index + 1));
    const result = await collect(parseCsv(Readable.from(chunks)));
    expect(result.map((record) => record.fields)).toEqual([['name'], ['Zoë'], ['Ünïcødé']]);
  });
});

describe('parseCsvRows', () => {
  it('keys each record by the trimmed header names', async () => {
    const rows = await collect(
      parseCsvRows(Readable.from(['email , name\na@x,Ann\n"b@x","Bob, Jr."\n']), 'email'),
    );
    expect(rows).toEqual([
      { values: { email: 'a@x', name: 'Ann' }, line: 2 },
      { values: { email: 'b@x', name: 'Bob, Jr.' }, line: 3 },
    ]);
  });

  it('finds the required column whatever its case', async () => {
    const rows = await collect(parseCsvRows(Readable.from(['Email,Name\na@x,Ann\n']), 'email'));
    expect(rows[0]?.values).toEqual({ email: 'a@x', Name: 'Ann' });
  });

  it('rejects a header without the required column, an empty or repeated name, and ragged records', async () => {
    await expect(collect(parseCsvRows(Readable.from(['address\na@x\n']), 'email'))).rejects.toThrow(
      /line 1: the header row has no "email" column \(found: address\)/,
    );
    await expect(collect(parseCsvRows(Readable.from(['email,,x\n'])))).rejects.toThrow(
      /line 1: header column 2 has no name/,
    );
    await expect(collect(parseCsvRows(Readable.from(['email,email\n'])))).rejects.toThrow(/appears twice/);
    await expect(collect(parseCsvRows(Readable.from(['email,name\na@x,A\nb@x\n'])))).rejects.toThrow(
      /line 3: expected 2 fields like the header row, got 1/,
    );
    await expect(collect(parseCsvRows(Readable.from([''])))).rejects.toThrow(/the file is empty/);
  });

  it('reports errors as CsvError with the line', async () => {
    const error = await collect(parseCsvRows(Readable.from(['email\n"a@x\n']))).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(CsvError);
    expect((error as CsvError).line).toBe(2);
  });
});
