/** `mailroom enqueue <file.jsonl>`: check every line, then enqueue them in idempotent chunks. */
import {
  decodeWire,
  type EmailMessage,
  EmailMultiAlternatives,
  MailError,
  parseWith,
  ValidationError,
} from '@mailroom/core';
import { type CheckedMessage, checkMessage, type Producer } from '@mailroom/producer';
import { z } from 'zod';
import { formatCount, positiveIntegerFlag, printJson, readLines, withProducer } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, InputError, println, UsageError } from './io.js';

export const enqueueUsage = `Usage: mailroom enqueue <file.jsonl> [flags]

Enqueues the messages of a JSON Lines file, one message per line. Every line is checked first
(the file is read twice, streamed, never held in memory): one bad line stops everything with its
line number and reason, and nothing is enqueued. Then the messages go out in batch jobs. Blank lines
are ignored.

A line is either a plain message:
  {"from": "shop@example.com", "to": ["ann@example.com"], "subject": "Hi", "body": "Hello",
   "cc": [], "bcc": [], "replyTo": [], "headers": {"X-Tag": "a"}, "html": "<p>Hello</p>"}
  (from, to, subject and body required; the others optional)
or a message in the wire format (an object with "v", as written by toWire()).

Flags:
  --batch-size <n>           messages per batch job (default 50)
  --idempotency-key <key>    a second run with the same key (within 24 h) enqueues nothing again;
                             after an interruption it enqueues only what the first run did not
  --fail-silently            failures of these messages are recorded, not dead-lettered
  --queue <name>             queue (MAILROOM_QUEUE, default mail)
  --json                     print the counts as JSON

Environment: REDIS_URL or REDIS_CLUSTER_NODES, MAILROOM_QUEUE, MAILROOM_PREFIX, MAILROOM_SHARDS.
Exit codes: 0 enqueued; 2 bad flags or a bad line; 3 bad configuration; 4 Redis unreachable.

Examples:
  mailroom enqueue receipts.jsonl
  mailroom enqueue --idempotency-key import-2024-06-01 --batch-size 100 newsletter.jsonl`;

const flags = {
  'batch-size': { type: 'string' },
  'idempotency-key': { type: 'string' },
  'fail-silently': { type: 'boolean' },
  queue: { type: 'string' },
  json: { type: 'boolean' },
} satisfies FlagSpec;

/** A plain message line (strict: a misspelt field is an error, not silently dropped). */
const plainMessageSchema = z.strictObject({
  from: z.string().min(1),
  to: z.array(z.string()),
  subject: z.string(),
  body: z.string(),
  cc: z.array(z.string()).optional(),
  bcc: z.array(z.string()).optional(),
  replyTo: z.array(z.string()).optional(),
  headers: z.record(z.string(), z.string()).optional(),
  html: z.string().optional(),
});

/** Enqueue calls hold this many batches each: bounded memory, few round trips. */
const BATCHES_PER_CALL = 20;

interface LineMessage {
  message: EmailMessage;
  /** Its checked wire form: what gets enqueued (validated and serialized once). */
  checked: CheckedMessage;
  /** The wire message's own failSilently intent (false for plain lines). */
  failSilently: boolean;
}

/** Parses and checks one line the way the producer will; errors are InputErrors naming the line. */
function messageFromLine(text: string, line: number): LineMessage {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new InputError(`line ${line}: invalid JSON (${(error as Error).message})`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new InputError(
      `line ${line}: expected a JSON object, got ${Array.isArray(data) ? 'an array' : data === null ? 'null' : typeof data}`,
    );
  }
  try {
    let result: Omit<LineMessage, 'checked'>;
    if ('v' in data) {
      result = decodeWire(data, 'message');
    } else {
      const plain = parseWith(plainMessageSchema, data, 'message');
      const message = new EmailMultiAlternatives({
        subject: plain.subject,
        body: plain.body,
        fromEmail: plain.from,
        to: plain.to,
        cc: plain.cc ?? [],
        bcc: plain.bcc ?? [],
        replyTo: plain.replyTo ?? [],
        headers: plain.headers ?? {},
      });
      if (plain.html !== undefined) message.attachAlternative(plain.html, 'text/html');
      result = { message, failSilently: false };
    }
    return { ...result, checked: checkMessage(result.message) };
  } catch (error) {
    if (error instanceof ValidationError || error instanceof TypeError) {
      throw new InputError(`line ${line}: ${error.message}`);
    }
    throw error;
  }
}

/** Every non-blank line of the file as a checked message, streamed. */
async function* messages(path: string): AsyncGenerator<LineMessage & { line: number }> {
  for await (const { line, text } of readLines(path, 'file')) {
    if (text.trim() === '') continue;
    yield { ...messageFromLine(text, line), line };
  }
}

interface Totals {
  messages: number;
  jobs: number;
  /** Messages not enqueued again because the idempotency key had been used for their chunk. */
  duplicates: number;
}

async function enqueueAll(
  producer: Producer,
  path: string,
  options: { idempotencyKey: string | undefined; failSilently: boolean | undefined },
  context: CliContext,
): Promise<Totals> {
  const totals: Totals = { messages: 0, jobs: 0, duplicates: 0 };
  const callSize = producer.options.batchSize * BATCHES_PER_CALL;
  let chunk: CheckedMessage[] = [];
  let chunkSilently = false;
  let chunkIndex = 0;
  let firstLine = 0;
  let lastLine = 0;

  const flush = async () => {
    if (chunk.length === 0) return;
    const failSilently = options.failSilently ?? chunkSilently;
    // Chunks are cut the same way on every run, so `key:n` names the same messages each time.
    const idempotencyKey =
      options.idempotencyKey === undefined ? undefined : `${options.idempotencyKey}:${chunkIndex}`;
    try {
      const result = await producer.enqueue(chunk, {
        ...(failSilently ? { failSilently } : {}),
        ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
      });
      // failSilently also hides Redis errors (0 messages): the command must not claim success.
      if (result.messages === 0 && !result.duplicate) {
        throw new MailError(`Could not enqueue lines ${firstLine}-${lastLine}: Redis did not take them`, {
          code: 'EREDIS',
        });
      }
      if (result.duplicate) totals.duplicates += chunk.length;
      else {
        totals.messages += result.messages;
        totals.jobs += result.jobIds.length;
      }
    } catch (error) {
      if (totals.messages > 0) {
        println(
          context.stderr,
          `mailroom enqueue: ${formatCount(totals.messages)} messages (up to line ${firstLine - 1}) were enqueued before this failure` +
            (options.idempotencyKey === undefined
              ? ''
              : '; run the same command again to enqueue the rest without duplicates'),
        );
      }
      throw error;
    }
    chunk = [];
    chunkIndex++;
  };

  for await (const item of messages(path)) {
    const silently = item.failSilently;
    if (chunk.length >= callSize || (chunk.length > 0 && silently !== chunkSilently)) await flush();
    if (chunk.length === 0) {
      chunkSilently = silently;
      firstLine = item.line;
    }
    chunk.push(item.checked);
    lastLine = item.line;
  }
  await flush();
  return totals;
}

/** `mailroom enqueue <file.jsonl>`: validates every line, then enqueues them in batch jobs. */
export async function enqueueCommand(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, flags, enqueueUsage);
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? 'a file is required: mailroom enqueue <file.jsonl> (see "mailroom enqueue --help")'
        : `one file at a time (got ${positionals.length} arguments)`,
    );
  }
  const path = positionals[0] as string;
  const batchSize = values['batch-size']
    ? positiveIntegerFlag(values['batch-size'], '--batch-size')
    : undefined;
  const idempotencyKey = values['idempotency-key'];
  if (idempotencyKey !== undefined && (idempotencyKey.length === 0 || idempotencyKey.length > 400)) {
    throw new UsageError('--idempotency-key must be 1 to 400 characters');
  }

  // Pass 1: every line, before anything touches Redis.
  let lines = 0;
  for await (const _ of messages(path)) lines++;
  if (lines === 0) {
    if (values.json) printJson(context, { lines: 0, messages: 0, jobs: 0, duplicates: 0 });
    else println(context.stderr, `mailroom enqueue: nothing to enqueue: no messages in ${path}`);
    return EXIT.ok;
  }

  // Pass 2: enqueue in chunks.
  return withProducer(context, { queue: values.queue, batchSize, enqueues: true }, async (producer) => {
    const totals = await enqueueAll(
      producer,
      path,
      { idempotencyKey, failSilently: values['fail-silently'] ? true : undefined },
      context,
    );
    if (values.json) {
      printJson(context, { lines, queue: producer.queue, ...totals });
      return EXIT.ok;
    }
    println(
      context.stdout,
      `enqueued ${formatCount(totals.messages)} messages in ${formatCount(totals.jobs)} jobs on queue ${producer.queue}`,
    );
    if (totals.duplicates > 0) {
      println(
        context.stdout,
        `skipped ${formatCount(totals.duplicates)} messages already enqueued with idempotency key ${JSON.stringify(idempotencyKey)}`,
      );
    }
    return EXIT.ok;
  });
}
