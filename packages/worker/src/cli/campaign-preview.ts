/** Before a campaign is sent, from the command line: `campaign preview`, `start --dry-run`, `start --test-to`, `--send-at`, and what Ctrl-C during `start` does. */
import { writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import { ConfigError, type EmailMessage, ValidationError } from '@mailroom/core';
import {
  type CampaignMessageOptions,
  type CampaignRecipient,
  type CampaignTemplate,
  type CampaignUnsubscribe,
  type DryRunSummary,
  dryRunCampaign,
  type EmptyValuePolicy,
  type InvalidRow,
  type Producer,
  previewCampaign,
} from '@mailroom/producer';
import {
  describeFileError,
  durationFlag,
  formatCount,
  parseHeaderFlags,
  printJson,
  readQueueEnvironment,
  readTextFile,
  required,
} from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, InputError, printLines, println, UsageError } from './io.js';
import { type RecipientFormat, readRecipients, recipientFormat } from './recipients.js';
import { forTerminal } from './terminal.js';

/** The flags that make a campaign's message, shared by `start` and `preview`. */
export const messageFlags = {
  from: { type: 'string' },
  subject: { type: 'string' },
  'text-file': { type: 'string' },
  'html-file': { type: 'string' },
  recipients: { type: 'string' },
  id: { type: 'string' },
  'unsubscribe-endpoint': { type: 'string' },
  'unsubscribe-url': { type: 'string' },
  'unsubscribe-mailto': { type: 'string' },
  header: { type: 'string', multiple: true },
  'reply-to': { type: 'string', multiple: true },
  'empty-values': { type: 'string' },
} satisfies FlagSpec;

type MessageFlagValues = {
  [K in keyof typeof messageFlags]?: (typeof messageFlags)[K] extends { multiple: true } ? string[] : string;
};

/** The template, unsubscribe settings and empty-value policy the flags give; files are read here. */
export async function messageFromFlags(
  values: MessageFlagValues,
  command: string,
): Promise<{
  template: CampaignTemplate;
  unsubscribe: CampaignUnsubscribe | undefined;
  emptyValues: EmptyValuePolicy;
}> {
  const fromEmail = required(values.from, '--from', command);
  const subject = required(values.subject, '--subject', command);
  const textFile = required(values['text-file'], '--text-file', command);
  const template: CampaignTemplate = {
    subject,
    fromEmail,
    text: await readTextFile(textFile, '--text-file'),
    headers: parseHeaderFlags(values.header),
    ...(values['reply-to'] ? { replyTo: values['reply-to'] } : {}),
  };
  const htmlFile = values['html-file'];
  if (htmlFile !== undefined) template.html = await readTextFile(htmlFile, '--html-file');
  const unsubscribe = {
    ...(values['unsubscribe-endpoint'] ? { endpoint: values['unsubscribe-endpoint'] } : {}),
    ...(values['unsubscribe-url'] ? { url: values['unsubscribe-url'] } : {}),
    ...(values['unsubscribe-mailto'] ? { mailto: values['unsubscribe-mailto'] } : {}),
  };
  const emptyValues = values['empty-values'] ?? 'error';
  if (emptyValues !== 'error' && emptyValues !== 'allow') {
    throw new UsageError(`--empty-values must be error or allow (got ${JSON.stringify(emptyValues)})`);
  }
  return {
    template,
    unsubscribe: Object.keys(unsubscribe).length > 0 ? unsubscribe : undefined,
    emptyValues,
  };
}

/** The recipients file looked at once, whole: how many recipients, and every column/field they have. */
export interface RecipientScan {
  count: number;
  columns: string[];
}

/** Columns beyond this many are not collected (a JSON Lines file of arbitrary keys must not fill the memory). */
const MAX_COLUMNS = 1000;

/**
 * Reads the whole recipients file once (a malformed line stops everything, with its line number):
 * the count gives the ETA, the columns (the CSV header; for JSON Lines every key of every line) are
 * what the placeholders are checked against. An empty file is an InputError.
 */
export async function scanRecipients(path: string, format: RecipientFormat): Promise<RecipientScan> {
  let count = 0;
  const columns = new Set<string>();
  for await (const { recipient } of readRecipients(path, format)) {
    count++;
    if (typeof recipient === 'object' && (format === 'jsonl' || count === 1) && columns.size < MAX_COLUMNS) {
      for (const key of Object.keys(recipient)) columns.add(key);
    }
  }
  if (count === 0) throw new InputError(`no recipients in ${path}`);
  return { count, columns: [...columns] };
}

/** `--recipient N` (the Nth recipient, 1-based, as invalid rows count) or `--recipient ADDRESS`. */
type RecipientChoice = { row: number } | { address: string };

function recipientChoice(value: string | undefined): RecipientChoice {
  if (value === undefined) return { row: 1 };
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) {
    const row = Number(trimmed);
    if (row < 1 || !Number.isSafeInteger(row))
      throw new UsageError(`--recipient must be 1 or more (got ${JSON.stringify(value)})`);
    return { row };
  }
  if (!trimmed.includes('@')) {
    throw new UsageError(
      `--recipient must be a recipient number or an address in the file (got ${JSON.stringify(value)})`,
    );
  }
  return { address: trimmed.toLowerCase() };
}

/** The chosen recipient of the file with its row and line, or an InputError saying it is not there. */
async function findRecipient(
  path: string,
  format: RecipientFormat,
  choice: RecipientChoice,
): Promise<{ recipient: CampaignRecipient; row: number; line: number }> {
  let row = 0;
  for await (const { line, recipient } of readRecipients(path, format)) {
    row++;
    const email = typeof recipient === 'string' ? recipient : recipient.email;
    const found = 'row' in choice ? row === choice.row : email.trim().toLowerCase() === choice.address;
    if (found) return { recipient, row, line };
  }
  throw new InputError(
    'row' in choice
      ? `--recipient ${choice.row}: ${path} has ${formatCount(row)} recipient${row === 1 ? '' : 's'}`
      : `--recipient ${choice.address}: no such address in ${path}`,
  );
}

/** Renders the recipient, naming its line when its message cannot be built (exit code 2). */
function render(
  options: CampaignMessageOptions,
  recipient: CampaignRecipient,
  where: { row: number; line: number; path: string },
  producer?: Producer,
  queue?: string,
): { message: EmailMessage; eml: Buffer } {
  try {
    return previewCampaign(options, recipient, producer ? { producer } : queue ? { queue } : {});
  } catch (error) {
    // A placeholder error is the template's, not this recipient's: it names the template field.
    if (
      error instanceof ValidationError &&
      !error.field?.startsWith('template.') &&
      !error.field?.startsWith('unsubscribe.')
    ) {
      throw new InputError(`recipient ${where.row} (${where.path} line ${where.line}): ${error.message}`);
    }
    throw error;
  }
}

/** The HTML alternative of a rendered campaign message, if it has one. */
function htmlOf(message: EmailMessage): string | undefined {
  const alternatives = (message as EmailMessage & { alternatives?: unknown[] }).alternatives ?? [];
  for (const entry of alternatives) {
    const [content, mimetype] = Array.isArray(entry)
      ? (entry as [unknown, string])
      : [(entry as { content: unknown }).content, (entry as { mimetype: string }).mimetype];
    if (mimetype === 'text/html' && typeof content === 'string') return content;
  }
  return undefined;
}

/** The headers a reader sees first, decoded, in the order of a mail client. */
function visibleHeaders(message: EmailMessage): [string, string][] {
  return [
    ['From', message.fromEmail],
    ['To', message.to.join(', ')],
    ...(message.replyTo.length > 0 ? [['Reply-To', message.replyTo.join(', ')] as [string, string]] : []),
    ['Subject', message.subject],
    ...Object.entries(message.extraHeaders).map(([name, value]): [string, string] => [
      name,
      value instanceof Date ? value.toUTCString() : String(value),
    ]),
  ];
}

const previewFlags = {
  ...messageFlags,
  queue: { type: 'string' },
  json: { type: 'boolean' },
  recipient: { type: 'string' },
  output: { type: 'string' },
} satisfies FlagSpec;

/** Usage of `mailroom campaign preview` (part of the campaign usage). */
export const previewUsage = `  mailroom campaign preview --from ADDR --subject TEXT --text-file PATH --recipients FILE [flags]
    Renders the message of one recipient exactly as "start" would (placeholders, escaping,
    unsubscribe link) and prints its headers and text body; nothing is enqueued, Redis is not
    needed. The placeholders are checked against the file's columns first.
    --recipient <n|address>    which recipient: its number in the file (default 1) or its address
    --output <file.eml>        also write the whole message (MIME, HTML part included) to this file
    and the message flags of "start" (--from ... --header, --reply-to, --unsubscribe-*, --empty-values)`;

/** `mailroom campaign preview`. */
export async function previewCommand(argv: string[], context: CliContext, usage: string): Promise<number> {
  const { values, positionals } = parseFlags(argv, previewFlags, usage);
  if (positionals.length > 0) {
    throw new UsageError(
      `unexpected argument ${JSON.stringify(positionals[0])} (see "mailroom campaign --help")`,
    );
  }
  const path = required(values.recipients, '--recipients', 'campaign');
  const format = recipientFormat(path);
  const choice = recipientChoice(values.recipient);
  const { template, unsubscribe, emptyValues } = await messageFromFlags(values, 'campaign');
  const scan = await scanRecipients(path, format);
  const { recipient, row, line } = await findRecipient(path, format, choice);
  // The queue only signs the one-click links; nothing is read from it.
  const { queue } = readQueueEnvironment(context.env, values.queue);
  const options: CampaignMessageOptions = {
    template,
    emptyValues,
    columns: scan.columns,
    ...(unsubscribe ? { unsubscribe } : {}),
    ...(values.id === undefined ? {} : { id: values.id }),
  };
  const { message, eml } = render(options, recipient, { row, line, path }, undefined, queue);
  const output = values.output;
  if (output !== undefined) {
    try {
      await writeFile(output, eml);
    } catch (error) {
      throw new InputError(`cannot write --output ${JSON.stringify(output)}: ${describeFileError(error)}`);
    }
  }
  const html = htmlOf(message);
  if (values.json) {
    printJson(context, {
      recipient: row,
      line,
      email: message.to[0],
      headers: Object.fromEntries(visibleHeaders(message)),
      text: message.body,
      html: html ?? null,
      bytes: eml.length,
      ...(output === undefined ? {} : { output }),
    });
    return EXIT.ok;
  }
  // Header values are data: escaped one by one, so a line break in one cannot pass as a header.
  const headers = visibleHeaders(message).map(
    ([name, value]) => `${forTerminal(name)}: ${forTerminal(value)}`,
  );
  printLines(context.stdout, `${headers.join('\n')}\n\n${message.body}`);
  println(
    context.stderr,
    `mailroom campaign preview: recipient ${row} (line ${line}), ${formatCount(eml.length)} bytes` +
      `${html === undefined ? '' : `, with an HTML alternative of ${formatCount(html.length)} characters`}` +
      `${output === undefined ? '' : `; written to ${output}`}`,
  );
  return EXIT.ok;
}

/** What `start --dry-run` and `start --test-to` need from the start command. */
export interface StartPlan {
  options: CampaignMessageOptions;
  path: string;
  format: RecipientFormat;
  scan: RecipientScan;
}

/** Invalid rows printed by a dry run (all are counted; --json lists 100). */
const DRY_RUN_PRINTED = 10;

/**
 * `start --dry-run`: every recipient read and checked as `start` would, nothing written (the
 * suppression list is only read). Exit 0 with the summary, invalid rows included (start would skip
 * them and go on); a placeholder or template error is thrown (exit 2), as start would refuse it.
 */
export async function dryRun(
  plan: StartPlan,
  producer: Producer,
  context: CliContext,
  json: boolean,
): Promise<number> {
  const lineOf = new WeakMap<object, number>();
  const recipients = (async function* () {
    for await (const { line, recipient } of readRecipients(plan.path, plan.format)) {
      if (typeof recipient === 'object') lineOf.set(recipient, line);
      yield recipient;
    }
  })();
  const lines = new Map<InvalidRow, number>();
  const summary: DryRunSummary = await dryRunCampaign(
    {
      ...plan.options,
      recipients,
      onInvalid(row, recipient) {
        const line = typeof recipient === 'object' ? lineOf.get(recipient) : undefined;
        if (line !== undefined && lines.size < 100) lines.set(row, line);
      },
    },
    { producer },
  );
  const invalidRows = summary.invalidRows.map((row) => {
    const line = lines.get(row);
    return line === undefined ? row : { ...row, line };
  });
  if (json) {
    printJson(context, { dryRun: true, queue: producer.queue, ...summary, invalidRows });
    return EXIT.ok;
  }
  const placeholders = [...new Set(summary.placeholders.map((use) => use.placeholder))];
  const rows: [string, string][] = [
    ['recipients', formatCount(summary.recipients)],
    ['valid', `${formatCount(summary.valid)} (would be enqueued)`],
    ['invalid', formatCount(summary.invalid)],
    ['duplicates', formatCount(summary.duplicates)],
    ['suppressed', formatCount(summary.suppressed ?? 0)],
    ['columns', summary.columns?.join(', ') ?? '--'],
    ['placeholders', placeholders.length > 0 ? placeholders.join(', ') : '--'],
  ];
  printLines(
    context.stdout,
    rows.map(([label, value]) => `${label.padEnd(12)} ${forTerminal(value)}`).join('\n'),
  );
  for (const row of invalidRows.slice(0, DRY_RUN_PRINTED)) {
    const where = 'line' in row ? `line ${row.line}` : `recipient ${row.row}`;
    println(
      context.stderr,
      `mailroom campaign: invalid: ${where} (${row.email}): ${row.field}: ${row.reason}`,
    );
  }
  if (summary.invalid > DRY_RUN_PRINTED) {
    println(
      context.stderr,
      `mailroom campaign: ${formatCount(summary.invalid - DRY_RUN_PRINTED)} more invalid (--json lists 100)`,
    );
  }
  println(context.stderr, 'mailroom campaign: dry run: nothing was enqueued');
  return EXIT.ok;
}

/**
 * `start --test-to ADDRESS`: the chosen recipient's row rendered with ADDRESS as its address (so
 * `{{ email }}` and the signed unsubscribe link are the test address's: clicking it cannot
 * unsubscribe the real recipient), enqueued as one plain message (no campaign record). Prints the
 * job id (--json: the job ids, the address and the recipient).
 */
export async function testSend(
  plan: StartPlan,
  testTo: string,
  recipientFlag: string | undefined,
  producer: Producer,
  context: CliContext,
  json: boolean,
): Promise<number> {
  const { recipient, row, line } = await findRecipient(
    plan.path,
    plan.format,
    recipientChoice(recipientFlag),
  );
  const fields = typeof recipient === 'object' ? recipient : { email: recipient };
  const { message } = render(
    plan.options,
    { ...fields, email: testTo },
    { row, line, path: plan.path },
    producer,
  );
  const result = await producer.enqueue(message);
  const jobId = result.jobIds[0] ?? '';
  if (json)
    printJson(context, { testTo, recipient: row, line, queue: producer.queue, jobIds: result.jobIds });
  else {
    println(context.stdout, jobId);
    println(
      context.stderr,
      `mailroom campaign: test message of recipient ${row} (line ${line}) enqueued to ${testTo}; no campaign was started`,
    );
  }
  return EXIT.ok;
}

/** Times further back than this are refused: a typo, not a clock skew. */
const PAST_TOLERANCE = 60_000;

/**
 * `--send-at`: an ISO 8601 time with its offset (`2025-07-01T09:00:00+02:00`, `...Z`), or a duration
 * from now (`90m`, `2h`, a plain number of seconds). A time without an offset is refused (whose
 * 9:00?), as is one more than a minute in the past. Returns epoch ms.
 */
export function sendAtFlag(value: string, now = Date.now()): number {
  const text = value.trim();
  let at: number;
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    if (!/T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})$/i.test(text)) {
      throw new UsageError(
        `--send-at must be an ISO 8601 time with its offset, like 2025-07-01T09:00:00+02:00 or ...Z, or a duration like 2h (got ${JSON.stringify(value)})`,
      );
    }
    at = Date.parse(text);
    if (Number.isNaN(at))
      throw new UsageError(`--send-at is not a valid time (got ${JSON.stringify(value)})`);
  } else {
    try {
      at = now + durationFlag(text, '--send-at');
    } catch (error) {
      if (!(error instanceof UsageError || error instanceof ConfigError)) throw error;
      throw new UsageError(
        `--send-at must be an ISO 8601 time with its offset (2025-07-01T09:00:00+02:00) or a duration from now (90m, 2h) (got ${JSON.stringify(value)})`,
      );
    }
  }
  if (at < now - PAST_TOLERANCE) {
    throw new UsageError(`--send-at ${JSON.stringify(value)} is in the past (${new Date(at).toISOString()})`);
  }
  return at;
}

/** Exit codes of a command stopped by a signal, as a shell reports them (128 + the signal number). */
export function signalExitCode(signal: 'SIGINT' | 'SIGTERM'): number {
  return 128 + constants.signals[signal];
}

/**
 * Calls `onFirst` at the first SIGINT or SIGTERM; a second one exits at once (with 128 + its
 * number): someone pressing Ctrl-C twice wants out, whatever is still being written. Returns a
 * function that removes the handlers (the default, dying at once, is back).
 */
export function onStopSignals(
  context: CliContext,
  onFirst: (signal: 'SIGINT' | 'SIGTERM') => void,
): () => void {
  const signals = context.signals ?? process;
  let stopping = false;
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((name) => {
    const handler = () => {
      if (stopping) process.exit(signalExitCode(name));
      stopping = true;
      onFirst(name);
    };
    signals.on(name, handler);
    return [name, handler] as const;
  });
  return () => {
    for (const [name, handler] of handlers) signals.off(name, handler);
  };
}

/** A word as a POSIX shell reads it back: as is when safe, else single-quoted. */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * The command that resumes an interrupted `campaign start`: the same flags with `--id ID`, without
 * `--start-over` (a campaign that exists refuses it) and without `--send-at` (the campaign keeps the
 * time first given; given again, a time now past would be refused, a duration would move it).
 */
export function resumeCommand(argv: readonly string[], id: string): string {
  const kept: string[] = [];
  for (let index = 0; index < argv.length; index++) {
    const word = argv[index] as string;
    if (word === '--id' || word === '--send-at') index++;
    else if (word.startsWith('--id=') || word.startsWith('--send-at=') || word === '--start-over') continue;
    else kept.push(word);
  }
  return ['mailroom', 'campaign', 'start', '--id', id, ...kept].map(shellWord).join(' ');
}
