/** `mailroom suppress add|remove|check|list|export|import`: the queue's suppression list from the command line. */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ValidationError } from '@mailroom/core';
import {
  normalizeSuppressedAddress,
  type Suppression,
  type SuppressionInput,
  SuppressionList,
  type SuppressionReason,
} from '@mailroom/core/protocol';
import type { Producer } from '@mailroom/producer';
import { describeFileError, formatCount, positiveIntegerFlag, printJson, withProducer } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, InputError, println, UsageError } from './io.js';
import { didYouMean } from './suggest.js';
import {
  CSV_HEADER,
  exportedRecord,
  exportLine,
  importSource,
  parseReason,
  readSuppressionFile,
  type SuppressionFormat,
  suppressionFormat,
} from './suppression-file.js';

export const suppressUsage = `Usage: mailroom suppress <add|remove|check|list|export|import> [flags]

The queue's suppression list: addresses campaigns never mail again, each with a reason
(hard-bounce, unsubscribe, complaint, manual), when it was added and its source (the SMTP reply
of a bounce, the campaign of an unsubscribe, the file of an import). One address is one entry
whatever its case or the form of its domain: Ann@Bücher.example is ann@xn--bcher-kva.example.
Workers add hard bounces themselves (recipients refused because the mailbox does not exist:
5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10); policy and content refusals (5.7.x) never.

  mailroom suppress add <address>... [--reason R] [--source TEXT]
    Puts the addresses on the list. One already there keeps its first record, which is shown.
    --reason <reason>          manual (default), unsubscribe, complaint or hard-bounce
    --source <text>            where it comes from (default "cli")

  mailroom suppress remove <address>...
    Takes the addresses off the list: campaigns mail them again.

  mailroom suppress check <address>
    Whether the address is on the list, with its record.

  mailroom suppress list [--reason R] [--limit n]
    The records, in no particular order: address, reason, when (UTC), source.
    --reason <reason>          only this reason
    --limit <n>                records to show (default 100; export shows them all)

  mailroom suppress export [--output FILE] [--format csv|json] [--reason R]
    Every record, streamed (a million addresses never sit in memory): CSV with the header row
    address,reason,at,source (at: ISO 8601, UTC; RFC 4180 quoting), or JSON Lines, one
    {"address", "reason", "at", "source"} object per line. A file is written whole or not at all.
    --output <file>            write to this file (default: stdout)
    --format <csv|json>        default: json for an --output ending in .jsonl, .ndjson or .json, else csv

  mailroom suppress import <file> [--format csv|json] [--reason R] [--source TEXT] [--replace]
    Adds the records of a file, read twice as a stream: first every row is checked, and one
    bad row stops everything with its line and value (nothing is imported); then they are added.
    What export writes imports unchanged. CSV: a header row with an "address" (or "email") column
    and optional "reason", "source" and "at" columns (others are ignored), or just addresses, one
    per line. JSON Lines: one {"address": ...} object per line with the same optional fields.
    --format <csv|json>        default from the extension: .csv and .txt csv; .jsonl, .ndjson, .json json
    --reason <reason>          for rows without one (default manual)
    --source <text>            for rows without a source column or field (default "import:<file name>")
    --replace                  overwrite the record of an address already on the list (default: keep it)

Flags of every subcommand:
  --queue <name>             queue (MAILROOM_QUEUE, default mail)
  --json                     machine-readable output (list: one JSON object per line; not export)

Environment: REDIS_URL or REDIS_CLUSTER_NODES, MAILROOM_QUEUE, MAILROOM_PREFIX, MAILROOM_SHARDS.
Exit codes: 0 ok (check: on the list); 1 check: not on the list, remove: an address was not on
the list (the others are removed); 2 bad flags, a bad address or a bad import file; 3 bad
configuration; 4 Redis unreachable.

Examples:
  mailroom suppress add bob@example.com --reason complaint --source 'abuse desk #4411'
  mailroom suppress check bob@example.com && echo 'not mailed'
  mailroom suppress list --reason hard-bounce --limit 20
  mailroom suppress export --output list.csv
  mailroom suppress import old-provider-bounces.csv --reason hard-bounce`;

const common = {
  queue: { type: 'string' },
  json: { type: 'boolean' },
} satisfies FlagSpec;

const addFlags = { ...common, reason: { type: 'string' }, source: { type: 'string' } } satisfies FlagSpec;
const listFlags = { ...common, reason: { type: 'string' }, limit: { type: 'string' } } satisfies FlagSpec;
const exportFlags = {
  queue: { type: 'string' },
  output: { type: 'string' },
  format: { type: 'string' },
  reason: { type: 'string' },
} satisfies FlagSpec;
const importFlags = {
  ...common,
  format: { type: 'string' },
  reason: { type: 'string' },
  source: { type: 'string' },
  replace: { type: 'boolean' },
} satisfies FlagSpec;

const DEFAULT_LIST_LIMIT = 100;
/** Rows per add() while importing: one Redis pipeline each, bounded memory. */
const IMPORT_CHUNK = 1000;
/** Characters of export output gathered before each write. */
const EXPORT_CHUNK = 64 * 1024;

/** Runs `work` on the suppression list of the queue (--queue or MAILROOM_QUEUE), Redis closed afterwards. */
function withList<T>(
  context: CliContext,
  queue: string | undefined,
  work: (list: SuppressionList, producer: Producer) => Promise<T>,
): Promise<T> {
  return withProducer(context, { queue }, (producer) =>
    work(new SuppressionList(producer.redis, producer.keys), producer),
  );
}

function reasonFlag(value: string | undefined): SuppressionReason | undefined {
  return value === undefined ? undefined : parseReason(value, '--reason');
}

/** The address arguments, checked and normalised, each once (in the order given). */
function addressArguments(positionals: string[], subcommand: string): string[] {
  if (positionals.length === 0) {
    throw new UsageError(`an address is required: mailroom suppress ${subcommand} <address>...`);
  }
  return [...new Set(positionals.map((address) => normalizeSuppressedAddress(address, 'address')))];
}

function noArguments(positionals: string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
}

/** `bob@example.com  complaint since 2024-06-01T12:00:00.000Z (abuse desk #4411)` */
function describeRecord(record: Suppression): string {
  const source = record.source ? ` (${record.source})` : '';
  return `${record.address}  ${record.reason} since ${new Date(record.at).toISOString()}${source}`;
}

async function addAddresses(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, addFlags, suppressUsage);
  const addresses = addressArguments(positionals, 'add');
  const reason = reasonFlag(values.reason) ?? 'manual';
  const source = values.source ?? 'cli';
  return withList(context, values.queue, async (list, producer) => {
    const before = await list.lookup(addresses);
    const at = Date.now();
    await list.add(addresses.map((address) => ({ address, reason, source, at })));
    const records = addresses.map((address, index) => before[index] ?? { address, reason, at, source });
    const added = before.filter((record) => record === undefined).length;
    if (values.json) {
      printJson(context, {
        queue: producer.queue,
        added,
        existing: addresses.length - added,
        records: records.map((record, index) => ({ ...exportedRecord(record), added: !before[index] })),
      });
      return EXIT.ok;
    }
    records.forEach((record, index) => {
      println(
        context.stdout,
        `${before[index] ? 'already suppressed' : 'suppressed'}: ${describeRecord(record)}`,
      );
    });
    return EXIT.ok;
  });
}

async function removeAddresses(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, common, suppressUsage);
  const addresses = addressArguments(positionals, 'remove');
  return withList(context, values.queue, async (list, producer) => {
    const before = await list.lookup(addresses);
    const removed = await list.remove(addresses);
    const missing = addresses.filter((_, index) => before[index] === undefined);
    if (values.json) {
      printJson(context, { queue: producer.queue, removed, notOnList: missing });
    } else {
      for (const record of before) if (record) println(context.stdout, `removed: ${describeRecord(record)}`);
      for (const address of missing) {
        println(context.stderr, `mailroom suppress remove: ${address} was not on the list`);
      }
    }
    return missing.length > 0 ? EXIT.failure : EXIT.ok;
  });
}

async function checkAddress(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, common, suppressUsage);
  if (positionals.length > 1) throw new UsageError(`one address at a time (got ${positionals.length})`);
  const [address] = addressArguments(positionals, 'check') as [string];
  return withList(context, values.queue, async (list) => {
    const record = await list.get(address);
    if (values.json) {
      printJson(
        context,
        record ? { ...exportedRecord(record), suppressed: true } : { address, suppressed: false },
      );
    } else {
      println(
        context.stdout,
        record ? `suppressed: ${describeRecord(record)}` : `not suppressed: ${address}`,
      );
    }
    return record ? EXIT.ok : EXIT.failure;
  });
}

async function listRecords(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, listFlags, suppressUsage);
  noArguments(positionals);
  const reason = reasonFlag(values.reason);
  const limit =
    values.limit === undefined ? DEFAULT_LIST_LIMIT : positiveIntegerFlag(values.limit, '--limit');
  return withList(context, values.queue, async (list, producer) => {
    let shown = 0;
    let more = false;
    for await (const record of list.entries(reason === undefined ? {} : { reason })) {
      if (shown === limit) {
        more = true;
        break;
      }
      if (values.json) {
        printJson(context, exportedRecord(record));
      } else {
        if (shown === 0) println(context.stdout, row('ADDRESS', 'REASON', 'SINCE (UTC)', 'SOURCE'));
        println(
          context.stdout,
          row(record.address, record.reason, new Date(record.at).toISOString(), record.source),
        );
      }
      shown++;
    }
    if (values.json) return EXIT.ok;
    const kind = reason === undefined ? '' : `${reason} `;
    if (shown === 0) println(context.stdout, `no ${kind}addresses suppressed on queue ${producer.queue}`);
    else if (more) {
      const total = reason === undefined ? ` of ${formatCount(await list.count())}` : '';
      println(
        context.stdout,
        `${formatCount(shown)}${total} ${kind}records shown (--limit for more, export for all)`,
      );
    }
    return EXIT.ok;
  });
}

/** A line of the list table: address, reason and time in columns (a longer address pushes the rest). */
function row(address: string, reason: string, at: string, source: string): string {
  return `${address.padEnd(32)}  ${reason.padEnd(11)}  ${at.padEnd(24)}  ${source}`.trimEnd();
}

/** The export, in chunks of lines; `counted` is told the number of records as they go. */
async function* exportChunks(
  list: SuppressionList,
  format: SuppressionFormat,
  reason: SuppressionReason | undefined,
  counted: (records: number) => void,
): AsyncGenerator<string> {
  let chunk = format === 'csv' ? `${CSV_HEADER}\n` : '';
  let records = 0;
  for await (const record of list.entries(reason === undefined ? {} : { reason })) {
    chunk += `${exportLine(record, format)}\n`;
    counted(++records);
    if (chunk.length >= EXPORT_CHUNK) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk) yield chunk;
}

/**
 * Writes the chunks to `path` through a temporary file renamed into place at the end: a failed
 * export (Redis gone halfway) leaves no half file that looks whole.
 */
async function writeFileWhole(path: string, chunks: AsyncIterable<string>): Promise<void> {
  const partial = `${path}.${process.pid}.partial`;
  const cannotWrite = (error: unknown) =>
    new InputError(`cannot write --output ${JSON.stringify(path)}: ${describeFileError(error)}`);
  const file = createWriteStream(partial, { flags: 'wx' });
  try {
    await once(file, 'open');
  } catch (error) {
    throw cannotWrite(error);
  }
  try {
    await pipeline(Readable.from(chunks), file);
    await rename(partial, path).catch((error: unknown) => {
      throw cannotWrite(error);
    });
  } finally {
    // MUST NOT leave the partial file behind, whatever failed (after the rename there is none).
    await rm(partial, { force: true });
  }
}

async function exportRecords(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, exportFlags, suppressUsage);
  noArguments(positionals);
  const output = values.output;
  if (output !== undefined && output.trim() === '') throw new UsageError('--output must not be empty');
  const format = suppressionFormat(values.format, output) ?? 'csv';
  const reason = reasonFlag(values.reason);
  return withList(context, values.queue, async (list, producer) => {
    let records = 0;
    const chunks = exportChunks(list, format, reason, (count) => {
      records = count;
    });
    if (output === undefined) {
      for await (const chunk of chunks) {
        if (!context.stdout.write(chunk)) await once(context.stdout, 'drain');
      }
      println(
        context.stderr,
        `mailroom suppress export: ${formatCount(records)} records from queue ${producer.queue}`,
      );
    } else {
      await writeFileWhole(output, chunks);
      println(
        context.stdout,
        `exported ${formatCount(records)} records from queue ${producer.queue} to ${output}`,
      );
    }
    return EXIT.ok;
  });
}

interface ImportTotals {
  rows: number;
  /** Addresses newly on the list. */
  added: number;
  /** Addresses already on it: kept, or with --replace overwritten. */
  existing: number;
}

async function importRecords(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, importFlags, suppressUsage);
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? 'a file is required: mailroom suppress import <file> (see "mailroom suppress --help")'
        : `one file at a time (got ${positionals.length} arguments)`,
    );
  }
  const path = positionals[0] as string;
  const format = suppressionFormat(values.format, path);
  if (format === undefined) {
    throw new UsageError(
      `cannot tell the format of ${JSON.stringify(path)} from its extension: give --format csv or --format json`,
    );
  }
  const defaults = {
    reason: reasonFlag(values.reason) ?? 'manual',
    source: values.source ?? importSource(path),
  };
  const replace = Boolean(values.replace);

  // Pass 1: every row, before anything touches Redis.
  let rows = 0;
  for await (const _ of readSuppressionFile(path, format, defaults)) rows++;

  // Pass 2: add them in chunks.
  return withList(context, values.queue, async (list, producer) => {
    const totals: ImportTotals = { rows, added: 0, existing: 0 };
    let chunk: SuppressionInput[] = [];
    let chunkLine = 0;
    const flush = async () => {
      const result = await list.add(chunk, { replace });
      totals.added += result.added;
      totals.existing += result.existing;
      chunk = [];
    };
    try {
      for await (const { line, entry } of readSuppressionFile(path, format, defaults)) {
        if (chunk.length === 0) chunkLine = line;
        chunk.push(entry);
        if (chunk.length >= IMPORT_CHUNK) await flush();
      }
      if (chunk.length > 0) await flush();
    } catch (error) {
      // Redis went away, or the file changed since pass 1.
      if (totals.added + totals.existing > 0) {
        println(
          context.stderr,
          `mailroom suppress import: the rows before line ${chunkLine} were imported before this failure; ` +
            'importing the file again adds the rest (rows already on the list are kept)',
        );
      }
      throw error;
    }
    const repeated = totals.rows - totals.added - totals.existing;
    if (values.json) {
      printJson(context, { queue: producer.queue, ...totals, repeated, replace });
      return EXIT.ok;
    }
    println(
      context.stdout,
      `imported ${formatCount(totals.added)}, ${replace ? 'replaced' : 'already on the list'} ${formatCount(totals.existing)}` +
        `${repeated > 0 ? `, repeated in the file ${formatCount(repeated)}` : ''}` +
        ` (${formatCount(totals.rows)} rows) on queue ${producer.queue}`,
    );
    return EXIT.ok;
  });
}

const SUBCOMMANDS = ['add', 'remove', 'check', 'list', 'export', 'import'];

/** `mailroom suppress add|remove|check|list|export|import`. */
export async function suppressCommand(argv: string[], context: CliContext): Promise<number> {
  const [subcommand, ...rest] = argv;
  try {
    switch (subcommand) {
      case 'add':
        return await addAddresses(rest, context);
      case 'remove':
        return await removeAddresses(rest, context);
      case 'check':
        return await checkAddress(rest, context);
      case 'list':
        return await listRecords(rest, context);
      case 'export':
        return await exportRecords(rest, context);
      case 'import':
        return await importRecords(rest, context);
      default:
        throw new UsageError(
          `${subcommand === undefined ? 'a subcommand is required' : `unknown subcommand ${JSON.stringify(subcommand)}${didYouMean(subcommand, SUBCOMMANDS)}`}: add, remove, check, list, export or import`,
          { usage: suppressUsage },
        );
    }
  } catch (error) {
    // A bad address or reason: one line naming it, not the whole usage.
    if (error instanceof ValidationError) throw new InputError(error.message);
    throw error;
  }
}
