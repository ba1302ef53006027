/**
 * A small streaming CSV reader (RFC 4180) for recipient lists: fields separated by commas, records by
 * CRLF, LF or CR; a field in double quotes may hold commas, line breaks and doubled quotes (`""`).
 * Text is pushed in chunks of any size (a quote or a CRLF may be split between chunks), so a file of a
 * million rows never sits in memory. Beyond the RFC: a UTF-8 byte order mark is skipped and blank
 * lines are ignored. Malformed input (a quote inside an unquoted field, text after a closing quote, a
 * quote left open at the end) is a {@link CsvError} naming the line.
 */
import { StringDecoder } from 'node:string_decoder';
import { ValidationError } from '@mailroom/core';

/** One record: its fields and the (1-based) line it starts on. */
export interface CsvRecord {
  fields: string[];
  line: number;
}

/** Malformed CSV; `line` is the 1-based line where the problem is. */
export class CsvError extends ValidationError {
  override name = 'CsvError';
  readonly line: number;

  constructor(line: number, reason: string) {
    super(`line ${line}: ${reason}`, { field: `line ${line}` });
    this.line = line;
  }
}

type State = 'field-start' | 'unquoted' | 'quoted' | 'quote-in-quoted';

const QUOTE = 0x22;
const COMMA = 0x2c;
const LF = 0x0a;
const CR = 0x0d;

/** The push parser under {@link parseCsv}: `push(text)` returns the records completed so far. */
export class CsvParser {
  #state: State = 'field-start';
  #field = '';
  #record: string[] = [];
  /** The current physical line. */
  #line = 1;
  #recordLine = 1;
  /** Line where the open quoted field started (for "quote never closed"). */
  #quoteLine = 1;
  /** The previous character was a CR: a LF right after it is the same line break. */
  #afterCr = false;
  #started = false;
  #ended = false;

  push(text: string): CsvRecord[] {
    if (this.#ended) throw new Error('CsvParser.push() after end()');
    const out: CsvRecord[] = [];
    let start = 0;
    if (!this.#started && text.length > 0) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) start = 1;
    }
    for (let i = start; i < text.length; i++) {
      const char = text[i] as string;
      const crLf = char === '\n' && this.#afterCr;
      this.#afterCr = char === '\r';
      if (crLf && this.#state !== 'quoted') continue; // the LF of a CRLF that already ended the record
      switch (this.#state) {
        case 'field-start':
          if (this.#record.length === 0) this.#recordLine = this.#line;
          if (char === '"') {
            this.#state = 'quoted';
            this.#quoteLine = this.#line;
          } else if (char === ',') {
            this.#record.push('');
          } else if (char === '\r' || char === '\n') {
            this.#endRecord(out, this.#record.length === 0);
          } else {
            this.#field = char;
            this.#state = 'unquoted';
          }
          break;
        case 'unquoted':
          if (char === ',') this.#endField();
          else if (char === '\r' || char === '\n') this.#endRecord(out, false);
          else if (char === '"') {
            throw new CsvError(
              this.#line,
              'a quote inside an unquoted field (quote the whole field and double the quote)',
            );
          } else i = this.#appendRun(text, i, false);
          break;
        case 'quoted':
          if (char === '"') this.#state = 'quote-in-quoted';
          else if (char === '\n' || char === '\r') {
            this.#field += char;
            if (!crLf) this.#line++;
          } else i = this.#appendRun(text, i, true);
          break;
        case 'quote-in-quoted':
          if (char === '"') {
            this.#field += '"';
            this.#state = 'quoted';
          } else if (char === ',') this.#endField();
          else if (char === '\r' || char === '\n') this.#endRecord(out, false);
          else throw new CsvError(this.#line, `unexpected ${JSON.stringify(char)} after a closing quote`);
          break;
      }
    }
    return out;
  }

  /** Ends the input: returns the last record if the text did not end with a line break. */
  end(): CsvRecord[] {
    if (this.#ended) return [];
    this.#ended = true;
    if (this.#state === 'quoted') {
      throw new CsvError(this.#quoteLine, 'a quoted field is never closed');
    }
    if (this.#state === 'field-start' && this.#record.length === 0) return [];
    const out: CsvRecord[] = [];
    this.#endRecord(out, false);
    return out;
  }

  /**
   * Appends the plain characters from `start` on to the field in one piece and returns the index of
   * the last one. One character at a time, an 8 MB field grew a rope of 8 million strings (over
   * 300 MB of heap); a slice per chunk keeps a field about its own size. Plain characters are all
   * but the quote and line breaks, and in an unquoted field the comma.
   */
  #appendRun(text: string, start: number, quoted: boolean): number {
    let end = start + 1;
    for (; end < text.length; end++) {
      const code = text.charCodeAt(end);
      if (code === QUOTE || code === LF || code === CR || (!quoted && code === COMMA)) break;
    }
    this.#field += text.slice(start, end);
    return end - 1;
  }

  #endField(): void {
    this.#record.push(this.#field);
    this.#field = '';
    this.#state = 'field-start';
  }

  #endRecord(out: CsvRecord[], blank: boolean): void {
    if (!blank) {
      this.#record.push(this.#field);
      out.push({ fields: this.#record, line: this.#recordLine });
    }
    this.#record = [];
    this.#field = '';
    this.#state = 'field-start';
    this.#line++;
  }
}

/** Parses CSV from a stream of text or UTF-8 bytes, one record at a time. */
export async function* parseCsv(source: AsyncIterable<string | Buffer>): AsyncGenerator<CsvRecord> {
  const parser = new CsvParser();
  const decoder = new StringDecoder('utf8');
  for await (const chunk of source) {
    yield* parser.push(typeof chunk === 'string' ? chunk : decoder.write(chunk));
  }
  const tail = decoder.end();
  if (tail) yield* parser.push(tail);
  yield* parser.end();
}

/** A data row keyed by the header row's names. */
export interface CsvRow {
  values: Record<string, string>;
  line: number;
}

/**
 * Reads CSV with a header row: yields each later record as an object keyed by the (trimmed) header
 * names. A record with a different number of fields than the header, an empty or repeated header
 * name, or a missing `requiredColumn` (matched case-insensitively, then keyed by its given spelling)
 * is a {@link CsvError}.
 */
export async function* parseCsvRows(
  source: AsyncIterable<string | Buffer>,
  requiredColumn?: string,
): AsyncGenerator<CsvRow> {
  let header: string[] | undefined;
  for await (const record of parseCsv(source)) {
    if (!header) {
      header = record.fields.map((name) => name.trim());
      const seen = new Set<string>();
      for (const [index, name] of header.entries()) {
        if (!name) throw new CsvError(record.line, `header column ${index + 1} has no name`);
        if (seen.has(name))
          throw new CsvError(record.line, `header column ${JSON.stringify(name)} appears twice`);
        seen.add(name);
      }
      if (requiredColumn !== undefined && !seen.has(requiredColumn)) {
        // `Email` or `EMAIL` (as spreadsheets export it) is the same column.
        const index = header.findIndex((name) => name.toLowerCase() === requiredColumn.toLowerCase());
        if (index < 0) {
          throw new CsvError(
            record.line,
            `the header row has no ${JSON.stringify(requiredColumn)} column (found: ${header.join(', ')})`,
          );
        }
        header[index] = requiredColumn;
      }
      continue;
    }
    if (record.fields.length !== header.length) {
      throw new CsvError(
        record.line,
        `expected ${header.length} fields like the header row, got ${record.fields.length}`,
      );
    }
    const values: Record<string, string> = {};
    header.forEach((name, index) => {
      values[name] = record.fields[index] as string;
    });
    yield { values, line: record.line };
  }
  if (!header) throw new CsvError(1, 'the file is empty: a header row is required');
}
