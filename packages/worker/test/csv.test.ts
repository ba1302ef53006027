import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { CsvError, type CsvRecord, parseCsv, parseCsvRows } from '../src/cli/csv.js';

/**
 * A `gc()` for this process, to measure retained memory rather than garbage not yet collected.
 * (V8 allows exposing it at run time; vitest starts the test process without --expose-gc.)
 */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of source) out.push(item);
  return out;
}

/** Parses text streamed in chunks of the given size (1 = one character at a time). */
function records(text: string, chunkSize = text.length || 1): Promise<CsvRecord[]> {
  const chunks: string[] = [];
  for (let i = 0; i < text.length; i += chunkSize) chunks.push(text.slice(i, i + chunkSize));
  return collect(parseCsv(Readable.from(chunks)));
}

async function fields(text: string, chunkSize?: number): Promise<string[][]> {
  return (await records(text, chunkSize)).map((record) => record.fields);
}

describe('parseCsv (RFC 4180)', () => {
  it('splits fields on commas and records on CRLF, LF or CR', async () => {
    expect(await fields('a,b,c\r\n1,2,3\n4,5,6\r7,8,9')).toEqual([
      ['a', 'b', 'c'],
      ['1', '2', '3'],
      ['4', '5', '6'],
      ['7', '8', '9'],
    ]);
  });

  it('keeps commas, doubled quotes and line breaks inside quoted fields', async () => {
    expect(await fields('"Doe, John","say ""hi""","two\r\nlines"\r\nnext,"",x\r\n')).toEqual([
      ['Doe, John', 'say "hi"', 'two\r\nlines'],
      ['next', '', 'x'],
    ]);
  });

  it('gives the same records whatever the chunk boundaries (quotes and CRLF split between chunks)', async () => {
    const text = 'email,name\r\n"a@x","A ""1"", the\r\nfirst"\r\nb@x,B\r\n,\r\n';
    const whole = await records(text);
    expect(whole).toEqual([
      { fields: ['email', 'name'], line: 1 },
      { fields: ['a@x', 'A "1", the\r\nfirst'], line: 2 },
      { fields: ['b@x', 'B'], line: 4 },
      { fields: ['', ''], line: 5 },
    ]);
    for (const size of [1, 2, 3, 5, 7]) {
      expect(await records(text, size), `chunks of ${size}`).toEqual(whole);
    }
  });

  it('keeps an 8 MB field whole, quoted or not, across 64 KB chunks, with the lines counted (issue 9)', async () => {
    const big = 'x'.repeat(8 * 1024 * 1024);
    const text = `a,${big}\r\n"${big}""\r\n${big}",b\r\nc,d\r\n`;
    const out = await records(text, 64 * 1024);
    expect(out.map((record) => record.line)).toEqual([1, 2, 4]);
    expect(out[0]?.fields[1]).toBe(big);
    expect(out[1]?.fields[0]).toBe(`${big}"\r\n${big}`);
    expect(out[2]?.fields).toEqual(['c', 'd']);
  });

  it('keeps empty fields, a trailing empty field, and a last record without a line break', async () => {
    expect(await fields('a,,c\nd,e,\nf,g,h')).toEqual([
      ['a', '', 'c'],
      ['d', 'e', ''],
      ['f', 'g', 'h'],
    ]);
  });

  it('ignores blank lines and a UTF-8 byte order mark', async () => {
    expect(await fields('\uFEFFemail\r\n\r\na@x\n\n\nb@x\r\n\r\n')).toEqual([['email'], ['a@x'], ['b@x']]);
  });

  it('numbers records by the line they start on, counting line breaks inside quotes once', async () => {
    const text = 'h\r\n"multi\r\nline\nfield"\r\n\r\nlast\r\n';
    expect((await records(text, 1)).map((record) => record.line)).toEqual([1, 2, 6]);
  });

  it('rejects a quote inside an unquoted field, naming the line', async () => {
    await expect(fields('a,b\nc,d"e\n')).rejects.toThrow(/line 2: a quote inside an unquoted field/);
  });

  it('rejects text after a closing quote, naming the line', async () => {
    await expect(fields('"a"b,c\n')).rejects.toThrow(/line 1: text after a closing quote/);
    await expect(fields('a\n"a"b,c\n')).rejects.toThrow(/line 2: text after a closing quote/);
  });

  it('names the right line after CRLFs inside quoted fields', async () => {
    // csv-parse itself counts a CRLF inside quotes as two lines.
    await expect(fields('"a\r\nb","c\r\nd"\r\ne,f"g\r\n')).rejects.toThrow(
      /line 4: a quote inside an unquoted field/,
    );
  });

  it('rejects a quote never closed, naming the line where the field started', async () => {
    await expect(fields('email,name\na@x,"Ann\nb@x,Bob\n', 4)).rejects.toThrow(
      /line 2: a quoted field is never closed/,
    );
    // After a blank line and a quoted field over two lines.
    await expect(fields('email,name\r\n\r\n"a\r\nb",x\r\na@x,"Ann\nb@x,Bob\n', 4)).rejects.toThrow(
      /line 5: a quoted field is never closed/,
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
  it('streams a million rows: the first comes before the input is read, and rows are never all held', async () => {
    const ROWS = 1_000_000;
    const PER_CHUNK = 1000;
    let chunksRead = 0;
    async function* subscribers(): AsyncGenerator<string> {
      yield 'email,name\n';
      for (let chunk = 0; chunk < ROWS / PER_CHUNK; chunk++) {
        let text = '';
        for (let i = 0; i < PER_CHUNK; i++) text += `reader${chunk * PER_CHUNK + i}@example.com,Reader\n`;
        chunksRead++;
        yield text;
      }
    }
    const gc = exposeGc();
    gc();
    const baseline = process.memoryUsage().heapUsed;
    const rows = parseCsvRows(subscribers(), 'email');
    const first = await rows.next();
    expect(first.value).toEqual({ values: { email: 'reader0@example.com', name: 'Reader' }, line: 2 });
    // Backpressure: a handful of chunks parsed ahead, not the file.
    expect(chunksRead).toBeLessThan(10);
    let count = 1;
    let last = first.value as { line: number };
    let retained = 0;
    for await (const row of rows) {
      count++;
      last = row;
      if (count % 100_000 === 0) {
        gc();
        retained = Math.max(retained, process.memoryUsage().heapUsed - baseline);
      }
    }
    expect(count).toBe(ROWS);
    expect(last.line).toBe(ROWS + 1);
    // What survives a full collection: a million rows held would be over 100 MB.
    expect(retained).toBeLessThan(16 * 1024 * 1024);
  });

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
