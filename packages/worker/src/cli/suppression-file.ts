/**
 * The files of `mailroom suppress import|export`: CSV (RFC 4180, header `address,reason,at,source`)
 * or JSON Lines, read and written one record at a time. What export writes, import reads back
 * unchanged: the same addresses, reasons, times (ISO 8601, to the millisecond) and sources.
 */
import { basename, extname } from 'node:path';
import { quoteValue, ValidationError } from '@mailroom/core';
import {
  normalizeSuppressedAddress,
  SUPPRESSION_REASONS,
  type Suppression,
  type SuppressionInput,
  type SuppressionReason,
} from '@mailroom/core/protocol';
import { describeFileError, openInputFile, readLines } from './common.js';
import { CsvError, parseCsv } from './csv.js';
import { InputError, UsageError } from './io.js';
import { forTerminal } from './terminal.js';

/** How a suppression file is written: CSV or JSON Lines (one object per line). */
export type SuppressionFormat = 'csv' | 'json';

const EXTENSIONS: Readonly<Record<string, SuppressionFormat>> = {
  '.csv': 'csv',
  '.txt': 'csv',
  '.jsonl': 'json',
  '.ndjson': 'json',
  '.json': 'json',
};

/** The value of --format (`csv` or `json`), else what the file's extension says, else undefined. */
export function suppressionFormat(
  flag: string | undefined,
  path: string | undefined,
): SuppressionFormat | undefined {
  if (flag !== undefined) {
    if (flag === 'csv' || flag === 'json') return flag;
    throw new UsageError(`--format must be csv or json (got ${quoteValue(flag)})`);
  }
  return path === undefined ? undefined : EXTENSIONS[extname(path).toLowerCase()];
}

/** A reason as typed (`Hard-Bounce ` is hard-bounce); anything else is a ValidationError naming `field`. */
export function parseReason(value: string, field: string): SuppressionReason {
  const reason = value.trim().toLowerCase();
  if (!SUPPRESSION_REASONS.includes(reason as SuppressionReason)) {
    throw new ValidationError(
      `${field} must be one of ${SUPPRESSION_REASONS.join(', ')} (got ${quoteValue(value)})`,
      { field },
    );
  }
  return reason as SuppressionReason;
}

// RFC 3339 / ISO 8601 extended form: a date, optionally a time, optionally its offset.
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * A time as an import file gives it: ISO 8601 (`2024-06-01T12:00:00.000Z`, as export writes it; a
 * time without an offset is UTC) or epoch milliseconds (a number, or digits). Returns epoch ms; a
 * ValidationError naming `field` otherwise.
 */
export function parseTime(value: unknown, field: string): number {
  let ms = Number.NaN;
  if (typeof value === 'number' || (typeof value === 'string' && /^\d{1,16}$/.test(value.trim()))) {
    ms = Number(value);
  } else if (typeof value === 'string') {
    const text = value.trim();
    const match = ISO_TIME.exec(text);
    // Date.parse reads a date-time without an offset as local time: the same file must mean the
    // same instant on every machine.
    if (match) ms = Date.parse(match[1] === undefined && text.length > 10 ? `${text}Z` : text);
  }
  // ECMA-262 §21.4.1.22: a Date holds at most 8.64e15 ms.
  if (Number.isInteger(ms) && ms >= 0 && ms <= 8.64e15) return ms;
  throw new ValidationError(
    `${field} must be an ISO 8601 time such as 2024-06-01T12:00:00Z or epoch milliseconds (got ${quoteValue(String(value))})`,
    { field },
  );
}

/** One record of an import file, checked, with the line it starts on. */
export interface ImportRow {
  line: number;
  entry: SuppressionInput;
}

/** What a row without a reason or source column (or field) gets. */
export interface ImportDefaults {
  reason: SuppressionReason;
  source: string;
}

/** A row's values as the file has them; undefined: the file has no such column or field. */
interface RawRow {
  address: unknown;
  reason: unknown;
  source: unknown;
  at: unknown;
}

/** Checks one row; a bad value is a ValidationError naming its column and value. */
function checkRow(raw: RawRow, defaults: ImportDefaults): SuppressionInput {
  if (typeof raw.address !== 'string') {
    throw new ValidationError('an "address" (or "email") string is required');
  }
  const address = normalizeSuppressedAddress(raw.address, 'address');
  if (raw.reason !== undefined && typeof raw.reason !== 'string') {
    throw new ValidationError('the "reason" field must be a string');
  }
  const reason = raw.reason?.trim() ? parseReason(raw.reason, 'reason') : defaults.reason;
  if (raw.source !== undefined && typeof raw.source !== 'string') {
    throw new ValidationError('the "source" field must be a string');
  }
  // An empty source stays empty (export writes one): only a row WITHOUT a source gets the default.
  const source = raw.source ?? defaults.source;
  const blank =
    raw.at === undefined || raw.at === null || (typeof raw.at === 'string' && raw.at.trim() === '');
  return { address, reason, source, ...(blank ? {} : { at: parseTime(raw.at, 'at') }) };
}

/** The columns of a CSV file: the index of each known one, or the file is a plain list of addresses. */
type CsvColumns = { plain: true } | { plain: false; count: number; index: Record<keyof RawRow, number> };

/** Reads the header row, or sees that there is none (one field that is not a column name). */
function csvColumns(fields: readonly string[], line: number): CsvColumns {
  const names = fields.map((name) => name.trim().toLowerCase());
  if (!names.includes('address') && !names.includes('email')) {
    if (fields.length === 1) return { plain: true };
    throw new CsvError(
      line,
      `the header row has no "address" or "email" column (found: ${fields.join(', ')})`,
    );
  }
  const index = { address: -1, reason: -1, source: -1, at: -1 };
  for (const column of ['address', 'reason', 'source', 'at', 'email'] as const) {
    const found = names.indexOf(column);
    if (found !== -1 && names.indexOf(column, found + 1) !== -1) {
      throw new CsvError(line, `header column ${JSON.stringify(column)} appears twice`);
    }
    // "address" wins over "email" when a file has both (a subscriber export with a work address).
    if (column === 'email') {
      if (index.address === -1) index.address = found;
    } else index[column] = found;
  }
  return { plain: false, count: fields.length, index };
}

async function* csvRows(path: string): AsyncGenerator<{ line: number; raw: RawRow }> {
  const handle = await openInputFile(path, 'file');
  // Bytes, not text: csv-parse decodes UTF-8 itself (a character split between chunks included).
  const stream = handle.createReadStream();
  try {
    let columns: CsvColumns | undefined;
    for await (const { fields, line } of parseCsv(stream)) {
      if (columns === undefined) {
        columns = csvColumns(fields, line);
        if (!columns.plain) continue;
      }
      if (columns.plain) {
        if (fields.length !== 1) {
          throw new CsvError(
            line,
            `expected one address per line (a file without a header row), got ${fields.length} fields`,
          );
        }
        yield { line, raw: { address: fields[0], reason: undefined, source: undefined, at: undefined } };
        continue;
      }
      if (fields.length !== columns.count) {
        throw new CsvError(
          line,
          `expected ${columns.count} fields like the header row, got ${fields.length}`,
        );
      }
      const { index } = columns;
      const cell = (at: number) => (at === -1 ? undefined : fields[at]);
      yield {
        line,
        raw: {
          address: cell(index.address),
          reason: cell(index.reason),
          source: cell(index.source),
          at: cell(index.at),
        },
      };
    }
  } catch (error) {
    if (error instanceof CsvError) throw new InputError(`${path} ${error.message}`);
    if (error instanceof InputError) throw error;
    // Anything else here is a read error: the consumer's own errors never come back in.
    throw new InputError(`cannot read file ${JSON.stringify(path)}: ${describeFileError(error)}`);
  } finally {
    stream.destroy();
  }
}

async function* jsonRows(path: string): AsyncGenerator<{ line: number; raw: RawRow }> {
  for await (const { line, text } of readLines(path, 'file')) {
    if (text.trim() === '') continue;
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (error) {
      throw new InputError(`${path} line ${line}: invalid JSON (${(error as Error).message})`);
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw new InputError(`${path} line ${line}: expected an object with an "address" (or "email") string`);
    }
    const record = data as Record<string, unknown>;
    yield {
      line,
      raw: {
        address: record.address ?? record.email,
        reason: record.reason ?? undefined,
        source: record.source ?? undefined,
        at: record.at,
      },
    };
  }
}

/**
 * Streams the rows of a suppression file, each checked: CSV with a header row holding an `address`
 * (or `email`) column and optional `reason`, `source` and `at` columns (others are ignored), or a
 * plain list of addresses one per line; or JSON Lines, one object per line with the same fields
 * (blank lines are ignored). A bad row is an InputError naming the file, the line and the value.
 */
export async function* readSuppressionFile(
  path: string,
  format: SuppressionFormat,
  defaults: ImportDefaults,
): AsyncGenerator<ImportRow> {
  for await (const { line, raw } of format === 'csv' ? csvRows(path) : jsonRows(path)) {
    let entry: SuppressionInput;
    try {
      entry = checkRow(raw, defaults);
    } catch (error) {
      if (error instanceof ValidationError) throw new InputError(`${path} line ${line}: ${error.message}`);
      throw error;
    }
    yield { line, entry };
  }
}

/** The default source of imported rows: `import:<file name>`. */
export function importSource(path: string): string {
  return `import:${basename(path)}`;
}

/** The header row of an exported CSV file. */
export const CSV_HEADER = 'address,reason,at,source';

/** RFC 4180: a field with a comma, a quote or a line break goes in quotes, its quotes doubled. */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/** A record as the files hold it. */
export interface ExportedRecord {
  address: string;
  reason: SuppressionReason;
  /** ISO 8601, UTC, to the millisecond. */
  at: string;
  source: string;
}

/** The record as export writes it (and list --json prints it): `at` in ISO 8601, UTC. */
export function exportedRecord({ address, reason, at, source }: Suppression): ExportedRecord {
  return { address, reason, at: new Date(at).toISOString(), source };
}

/**
 * One record as a line of the file, without its line break. Escaped with forTerminal like all the
 * CLI writes (a no-op for what the list stores: checked addresses, one-line sources), so that even a
 * record written into Redis by hand cannot act on a terminal.
 */
export function exportLine(record: Suppression, format: SuppressionFormat): string {
  const fields = exportedRecord(record);
  const line =
    format === 'json'
      ? JSON.stringify(fields)
      : [fields.address, fields.reason, fields.at, fields.source].map(csvField).join(',');
  return forTerminal(line);
}
