/**
 * Recipient lists in CSV (RFC 4180), read with csv-parse as a stream: a file of a million rows never
 * sits in memory. Fields are separated by commas, records by CRLF, LF or CR; a field in double quotes
 * may hold commas, line breaks and doubled quotes (`""`). Beyond the RFC: a UTF-8 byte order mark is
 * skipped and blank lines are ignored. Malformed input is a {@link CsvError} naming the line.
 */
import { pipeline } from 'node:stream';
import { ValidationError } from '@mailroom/core';
import { type CsvError as CsvParseError, parse } from 'csv-parse';

/** One record: its fields and the (1-based) line it starts on. */
export interface CsvRecord {
  fields: string[];
  line: number;
}

/** Malformed CSV; `line` is the 1-based line where the problem is. */
export class CsvError extends ValidationError {
  override name = 'CsvError';
  readonly line: number;

  constructor(line: number, reason: string, options: { cause?: unknown } = {}) {
    super(`line ${line}: ${reason}`, { field: `line ${line}`, ...options });
    this.line = line;
  }
}

/**
 * Numbers records by the line they start on, from the records themselves: a record spans one line
 * plus the line breaks inside its quoted fields (a CRLF is one). csv-parse's own count is not used
 * for records: it tells where a record ends, and counts a CRLF inside quotes as two lines.
 */
class LineCounter {
  /** The line the next record starts on. */
  next = 1;
  /** CRLFs inside quoted fields so far: lines csv-parse counted twice. */
  #doubled = 0;

  /** Takes the next record (a blank line included): returns the line it starts on. */
  take(fields: readonly string[]): number {
    const line = this.next;
    let breaks = 0;
    for (const field of fields) {
      if (!field.includes('\n') && !field.includes('\r')) continue;
      breaks += field.match(LINE_BREAK)?.length ?? 0;
      this.#doubled += field.match(CRLF)?.length ?? 0;
    }
    this.next = line + breaks + 1;
    return line;
  }

  /**
   * The line of csv-parse's error, whose `lines` counts each CRLF inside quotes twice: exact, but for
   * CRLFs inside quotes earlier in the same record (csv-parse does not tell which were).
   */
  corrected(lines: number | undefined): number {
    return Math.max(this.next, (lines ?? this.next) - this.#doubled);
  }
}

const LINE_BREAK = /\r\n|\r|\n/g;
const CRLF = /\r\n/g;

/** csv-parse's error, in mailroom's words, at its line. */
function toCsvError(error: CsvParseError, lines: LineCounter): CsvError {
  const at = lines.corrected(error.lines as number | undefined);
  switch (error.code) {
    case 'INVALID_OPENING_QUOTE':
      return new CsvError(
        at,
        'a quote inside an unquoted field (quote the whole field and double the quote)',
        {
          cause: error,
        },
      );
    case 'CSV_INVALID_CLOSING_QUOTE':
      return new CsvError(at, 'text after a closing quote (a quote inside a quoted field must be doubled)', {
        cause: error,
      });
    case 'CSV_QUOTE_NOT_CLOSED':
      // Found at the end of the file; what matters is where the record with the open quote starts.
      return new CsvError(lines.next, 'a quoted field is never closed', { cause: error });
    default:
      return new CsvError(at, error.message, { cause: error });
  }
}

/**
 * Parses CSV from a stream of text or bytes (UTF-8), one record at a time, pulling more input only
 * as records are consumed. Throws {@link CsvError} for malformed CSV, after every record before the
 * error; an error of `source` (a read error) comes through unchanged. Stopping early releases `source`.
 */
export async function* parseCsv(source: AsyncIterable<string | Buffer>): AsyncGenerator<CsvRecord> {
  // A malformed record is reported to on_skip and parsing goes on, so the stream (and the records
  // parsed before the error, waiting in its buffer) is not destroyed: the loop below stops at the
  // error's place (`records`: how many records csv-parse had parsed before it) and throws it.
  let malformed: CsvParseError | undefined;
  const parser = parse({
    bom: true,
    // Blank lines come through as [''] and are skipped below, where they are counted as lines (a
    // line holding only "" looks the same, and is skipped too: a record with nothing in it).
    skip_empty_lines: false,
    // Checked against the header by parseCsvRows, with its own message.
    relax_column_count: true,
    // Mixed line breaks in one file (a CRLF export appended to by a Unix tool) all end records;
    // CRLF first, or its CR would end a record on its own.
    record_delimiter: ['\r\n', '\n', '\r'],
    skip_records_with_error: true,
    on_skip: (error) => {
      if (error) malformed ??= error;
    },
  });
  // pipeline: an error of the source destroys the parser with it (the loop below throws it), and a
  // consumer that stops early destroys the parser, which destroys the source (closing its file).
  pipeline(source, parser, () => {});
  const lines = new LineCounter();
  let parsed = 0;
  for await (const fields of parser as AsyncIterable<string[]>) {
    if (malformed !== undefined && parsed >= (malformed.records as number)) break;
    parsed++;
    const line = lines.take(fields);
    if (fields.length === 1 && fields[0] === '') continue; // a blank line
    yield { fields, line };
  }
  if (malformed !== undefined) throw toCsvError(malformed, lines);
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
