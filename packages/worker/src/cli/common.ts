/** What the CLI commands share: the queue settings, an open producer, input files, flag values, output. */
import { type FileHandle, open, readFile } from 'node:fs/promises';
import {
  ConfigError,
  coerceError,
  parseDuration,
  parsePort,
  parsePositiveInteger,
  parseRateLimit,
  type RateLimit,
  readSettings,
} from '@mailroom/core';
import type { RedisInput } from '@mailroom/core/protocol';
import { openInspector, openProducer, type Producer } from '@mailroom/producer';
import { pino } from 'pino';
import { redisOf } from '../config.js';
import { type CliContext, InputError, jsonLogStream, UsageError } from './io.js';
import { forTerminal } from './terminal.js';

/** Where the queue commands find their queue: REDIS_URL, MAILROOM_QUEUE (or --queue), MAILROOM_PREFIX. */
export interface QueueEnvironment {
  /** REDIS_CLUSTER_NODES when set, else REDIS_URL. */
  redis: RedisInput;
  /** Where it points, without credentials. */
  redisLabel: string;
  /** MAILROOM_SHARDS. */
  shards: number;
  queue: string;
  prefix: string;
}

/**
 * Reads the queue settings from the command's environment through the core settings, the way the
 * worker and the producer read them, with `--queue` overriding MAILROOM_QUEUE. A bad setting is a
 * ConfigError naming it (`MAILROOM_QUEUE="a:b"`, `EMAIL_PORT="abc" is not a port number`).
 */
export function readQueueEnvironment(env: NodeJS.ProcessEnv, queueFlag?: string): QueueEnvironment {
  if (queueFlag !== undefined && queueFlag.trim() === '') throw new UsageError('--queue must not be empty');
  const settings = readSettings(env);
  return {
    ...redisOf(settings),
    queue: queueFlag?.trim() ?? settings.MAILROOM_QUEUE,
    prefix: settings.MAILROOM_PREFIX,
  };
}

/**
 * Opens a producer on the configured queue and waits until Redis answers: Redis down is a MailError
 * EREDIS within the producer's connect timeout (1 s), which the CLI turns into exit code 4. The
 * producer's own log lines (warnings and up, or LOG_LEVEL) go to stderr so stdout stays parseable.
 * Without `enqueues`, the producer inspects: it is opened on the shard count the queue recorded and
 * never changes it; with it, MAILROOM_SHARDS is claimed as producers claim it.
 */
async function openQueueProducer(
  context: CliContext,
  options: {
    queue?: string | undefined;
    batchSize?: number | undefined;
    enqueues?: boolean | undefined;
  } = {},
): Promise<Producer> {
  const environment = readQueueEnvironment(context.env, options.queue);
  const producerOptions = {
    redis: environment.redis,
    queue: environment.queue,
    prefix: environment.prefix,
    shards: environment.shards,
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
    logger: pino(
      { name: 'mailroom-cli', level: context.env.LOG_LEVEL ?? 'warn' },
      jsonLogStream(context.stderr),
    ),
  };
  return options.enqueues === true ? openProducer(producerOptions) : openInspector(producerOptions);
}

/** Runs `work` with an open producer and closes the producer afterwards, whatever happens. */
export async function withProducer<T>(
  context: CliContext,
  options: { queue?: string | undefined; batchSize?: number | undefined; enqueues?: boolean | undefined },
  work: (producer: Producer) => Promise<T>,
): Promise<T> {
  const producer = await openQueueProducer(context, options);
  try {
    return await work(producer);
  } finally {
    // MUST release the connection even when the command failed.
    await producer.close();
  }
}

/** Reads a whole text file named by a flag (`-` is stdin); an unreadable file is an InputError. */
export async function readTextFile(path: string, flag: string): Promise<string> {
  try {
    if (path === '-') {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Buffer));
      return Buffer.concat(chunks).toString('utf8');
    }
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new InputError(`cannot read ${flag} ${JSON.stringify(path)}: ${describeFileError(error)}`);
  }
}

/** Opens a file named by a flag or argument for reading; an unreadable file is an InputError. */
export async function openInputFile(path: string, what: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (error) {
    throw new InputError(`cannot read ${what} ${JSON.stringify(path)}: ${describeFileError(error)}`);
  }
}

/**
 * Streams a text file line by line (LF or CRLF), with 1-based line numbers: one line in memory at a
 * time, however large the file.
 */
export async function* readLines(path: string, what: string): AsyncGenerator<{ line: number; text: string }> {
  const handle = await openInputFile(path, what);
  try {
    let line = 0;
    try {
      for await (const text of handle.readLines({ encoding: 'utf8' })) {
        line++;
        yield { line, text };
      }
    } catch (error) {
      // A read error (EISDIR, EIO); errors of the consumer never come back in here.
      throw new InputError(`cannot read ${what} ${JSON.stringify(path)}: ${describeFileError(error)}`);
    }
  } finally {
    await handle.close().catch(() => {});
  }
}

/** A short reason for a file system error: `no such file`, `permission denied`, or the message. */
export function describeFileError(error: unknown): string {
  const err = coerceError(error) as Error & { code?: string };
  if (err.code === 'ENOENT') return 'no such file';
  if (err.code === 'EACCES') return 'permission denied';
  if (err.code === 'EISDIR') return 'it is a directory';
  return err.message;
}

/** Runs a core value parser on a flag's value; its ConfigError becomes a UsageError (exit code 2). */
function flagValue<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof ConfigError) throw new UsageError(error.message);
    throw error;
  }
}

/** A flag value that must be a positive integer (core's parsePositiveInteger): `--limit="ten" must be a positive integer`. */
export function positiveIntegerFlag(value: string, flag: string): number {
  return flagValue(() => parsePositiveInteger(value, flag));
}

/** A flag value that must be a duration (`500ms`, `2s`, `1m`; a plain number is seconds; core's parseDuration). Returns ms. */
export function durationFlag(value: string, flag: string): number {
  return flagValue(() => parseDuration(value, flag));
}

/** A flag value that must be a port number, 0 (any free port) included (core's parsePort). */
export function portFlag(value: string, flag: string): number {
  return flagValue(() => parsePort(value, flag, { allowZero: true }));
}

/** A flag value that must be a rate limit (`200/s`, `10000/h`; core's parseRateLimit). */
export function rateLimitFlag(value: string, flag: string): RateLimit {
  return flagValue(() => parseRateLimit(value, flag));
}

/** The one value of a required flag, or a UsageError naming it. */
export function required<T>(value: T | undefined, flag: string, command: string): T {
  if (value === undefined) throw new UsageError(`${flag} is required (see "mailroom ${command} --help")`);
  return value;
}

/** Splits `Name: value` flags into a header record; a malformed or repeated name is a UsageError. */
export function parseHeaderFlags(values: readonly string[] | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  const seen = new Set<string>();
  for (const item of values ?? []) {
    const colon = item.indexOf(':');
    const name = colon > 0 ? item.slice(0, colon).trim() : '';
    if (!name) throw new UsageError(`--header must look like "Name: value" (got ${JSON.stringify(item)})`);
    if (seen.has(name.toLowerCase())) throw new UsageError(`--header ${name} is given twice`);
    seen.add(name.toLowerCase());
    // Header NAMES and values are checked by core when the message is built (BadHeaderError).
    headers[name] = item.slice(colon + 1).trim();
  }
  return headers;
}

/** `1,234`: counts as people read them. */
export function formatCount(count: number): string {
  return count.toLocaleString('en-US');
}

/** `6s`, `2m 05s`, `1h 02m`, or `--` when unknown. */
export function formatSeconds(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return '--';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * Writes a value as one line of JSON (the `--json` output of every command). JSON.stringify leaves
 * DEL, C1 controls (U+009B is a CSI), U+2028/U+2029 and bidi controls raw; they are written as
 * `\uXXXX` escapes, so the line parses to the same value and cannot act on a terminal.
 */
export function printJson(context: CliContext, value: unknown): void {
  context.stdout.write(`${forTerminal(JSON.stringify(value))}\n`);
}
