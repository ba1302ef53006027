/** The recipients file of `mailroom campaign start`, CSV or JSON Lines, streamed with line numbers. */
import { extname } from 'node:path';
import type { CampaignRecipient } from '@mailroom/producer';
import { describeFileError, openInputFile, readLines } from './common.js';
import { CsvError, parseCsvRows } from './csv.js';
import { InputError, UsageError } from './io.js';

/** How a recipients file is read, from its extension. */
export type RecipientFormat = 'csv' | 'jsonl';

/** `.csv` → csv; `.jsonl`/`.ndjson` → jsonl; anything else is a UsageError. */
export function recipientFormat(path: string): RecipientFormat {
  const extension = extname(path).toLowerCase();
  if (extension === '.csv') return 'csv';
  if (extension === '.jsonl' || extension === '.ndjson') return 'jsonl';
  throw new UsageError(
    `--recipients must be a .csv file (with an "email" column) or a .jsonl file (one {"email": ...} per line); got ${JSON.stringify(path)}`,
  );
}

/** A recipient and the line of the file it comes from. */
export interface RecipientLine {
  line: number;
  recipient: CampaignRecipient;
}

async function* fromCsv(path: string): AsyncGenerator<RecipientLine> {
  const handle = await openInputFile(path, '--recipients');
  // Bytes, not text: csv-parse decodes UTF-8 itself (a character split between chunks included).
  const stream = handle.createReadStream();
  try {
    // Every column is a template variable: {{ name }}, {{ city }}...
    for await (const row of parseCsvRows(stream, 'email')) {
      yield { line: row.line, recipient: { ...row.values, email: row.values.email as string } };
    }
  } catch (error) {
    if (error instanceof CsvError) throw new InputError(`${path} ${error.message}`);
    // Anything else here is a read error: the consumer's own errors never come back in.
    throw new InputError(`cannot read --recipients ${JSON.stringify(path)}: ${describeFileError(error)}`);
  } finally {
    stream.destroy();
  }
}

async function* fromJsonLines(path: string): AsyncGenerator<RecipientLine> {
  for await (const { line, text } of readLines(path, '--recipients')) {
    if (text.trim() === '') continue;
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (error) {
      throw new InputError(`${path} line ${line}: invalid JSON (${(error as Error).message})`);
    }
    if (
      typeof data !== 'object' ||
      data === null ||
      Array.isArray(data) ||
      typeof (data as { email?: unknown }).email !== 'string'
    ) {
      throw new InputError(`${path} line ${line}: expected an object with an "email" string`);
    }
    yield { line, recipient: data as CampaignRecipient };
  }
}

/**
 * Streams the recipients of a CSV (RFC 4180, header row with an `email` column; every column is a
 * template variable) or JSON Lines file (one object with `email` per line, blank lines ignored).
 * Malformed files are InputErrors naming the file and line. Addresses themselves are judged by the
 * campaign (an unusable one is counted as failed `invalid`).
 */
export function readRecipients(path: string, format: RecipientFormat): AsyncGenerator<RecipientLine> {
  return format === 'csv' ? fromCsv(path) : fromJsonLines(path);
}
