/** `mailroom campaign start|status|pause|resume|cancel`: newsletter campaigns from the command line. */
import { ValidationError } from '@mailroom/core';
import {
  type CampaignState,
  campaignStatus,
  cancelCampaign,
  checkPlaceholders,
  type InvalidRow,
  type Producer,
  pauseCampaign,
  resumeCampaign,
  startCampaign,
} from '@mailroom/producer';
import { campaignFailuresUsage, failuresSubcommand, retrySubcommand } from './campaign-failures-command.js';
import {
  dryRun,
  messageFlags,
  messageFromFlags,
  onStopSignals,
  previewCommand,
  previewUsage,
  resumeCommand,
  scanRecipients,
  sendAtFlag,
  signalExitCode,
  testSend,
} from './campaign-preview.js';
import {
  durationFlag,
  formatCount,
  positiveIntegerFlag,
  printJson,
  required,
  withProducer,
} from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, InputError, printLines, println, UsageError } from './io.js';
import { statusReport, watchCampaign } from './progress.js';
import { readRecipients, recipientFormat } from './recipients.js';
import { didYouMean } from './suggest.js';
import { STATES_NEEDING_WORKERS, warnWithoutWorkers } from './workers.js';

export const campaignUsage = `Usage: mailroom campaign <start|preview|status|pause|resume|cancel|failures|retry> [flags]

Newsletter drains: one template, many recipients, personalised, with live progress.

  mailroom campaign start --from ADDR --subject TEXT --text-file PATH --recipients FILE [flags]
    Reads the recipients as a stream (never all in memory), skips repeated addresses
    (case-insensitive) and addresses on the suppression list (counted suppressed; see
    "mailroom suppress"), renders each message and enqueues it with backpressure. Prints the
    campaign id first, then waits until every recipient is enqueued (the workers send them).
    The file is checked first: a malformed line stops everything, with its line number.
    A recipient whose message cannot be built (a bad address, a field or message over the
    size limits) is skipped and counted invalid; the first 10 are printed with their line,
    field and reason (the first 100 are kept: campaign status --json).
    --from <addr>              sender (required)
    --subject <text>           subject template (required), e.g. 'News for {{ name }}'
    --text-file <path>         plain-text body template (required)
    --html-file <path>         HTML alternative template (values are HTML-escaped; {{{ x }}} is raw)
    --recipients <file>        .csv with a header row and an "email" column (RFC 4180), or .jsonl
                               with one {"email": ...} object per line; every column/field is a
                               template variable: {{ name }}, {{ city }}
    --id <id>                  campaign id (default a new UUID); starting an id again resumes it
                               without sending anyone a second message
    --start-over               start anew a campaign whose record Redis lost (restarted without
                               persistence): everyone gets it again, including those already
                               delivered; without it such an id is refused
    --name <text>              name shown by status
    --unsubscribe-endpoint <url>
                               https base URL of "mailroom unsubscribe-server" (behind your TLS
                               proxy): each recipient gets a signed one-click link
                               <url>/unsubscribe/TOKEN (List-Unsubscribe + One-Click, RFC 8058),
                               also {{ unsubscribe_url }} in the templates; needs
                               MAILROOM_UNSUBSCRIBE_SECRET
    --unsubscribe-url <url>    your own https URL instead (placeholders allowed), same headers
    --unsubscribe-mailto <a>   mailto address for List-Unsubscribe
    --header 'Name: value'     extra header template; repeatable
    --reply-to <addr>          Reply-To; repeatable
    --batch-size <n>           messages per batch job (default 50)
    --empty-values <error|allow>
                               a recipient with no value for a placeholder the templates use:
                               error (default) skips it as invalid (field placeholder.<name>),
                               allow renders the value empty
    --send-at <time>           schedule: an ISO 8601 time with its offset (2025-07-01T09:00+02:00)
                               or a duration from now (90m, 2h); the messages wait in the queue
                               until then (status shows it); a list longer than the backpressure
                               window (20 batches) keeps start enqueueing until sending begins
    --dry-run                  read and check the whole file (placeholders, addresses, rendering,
                               duplicates, suppressed) and print a summary; enqueues nothing and
                               creates no campaign (exit 0, invalid rows listed; 2 for a bad
                               template or placeholder)
    --test-to <addr>           enqueue one message, rendered from the first recipient's row (or
                               --recipient <n|address>) with <addr> as its address ({{ email }}
                               and the unsubscribe link are <addr>'s), to <addr> only; no campaign
                               is created; prints the job id
    A placeholder that matches no column of the file ({{ nmae }}, {{ name }} for a column Name)
    stops start (and --dry-run, --test-to, preview) with exit 2 before anything is enqueued.
    Ctrl-C or SIGTERM while recipients are read stops reading: the campaign is "interrupted",
    the command prints how to resume (the same flags with --id) and exits 130 (SIGINT) or 143
    (SIGTERM); a second Ctrl-C exits at once.
    --watch                    then follow the progress like "status --watch"

${previewUsage}

  mailroom campaign status <id> [--watch] [--json]
    Prints total, queued, sent, failed (by reason), cancelled, duplicates, suppressed, remaining, rate, ETA
    and state. --watch follows it until it is completed or cancelled: on a terminal one progress
    line redrawn in place, otherwise (pipe, file, CI log) one line per interval.
    start and status warn on stderr when no worker consumes the queue (none seen in the last
    15 s); status --json gives the number of live workers as "workers".
    --interval <duration>      time between two reads with --watch (default 1s)

  mailroom campaign pause <id>     workers stop sending it within one message per batch
  mailroom campaign resume <id>    continue a paused campaign
  mailroom campaign cancel <id>    drop what is not sent yet (counted as cancelled)
    Each prints the campaign's new state.

${campaignFailuresUsage}

Flags of every subcommand:
  --queue <name>             queue (MAILROOM_QUEUE, default mail)
  --json                     machine-readable output (status --watch: one JSON object per line)

Environment: REDIS_URL or REDIS_CLUSTER_NODES, MAILROOM_QUEUE, MAILROOM_PREFIX, MAILROOM_SHARDS,
MAILROOM_UNSUBSCRIBE_SECRET.
Exit codes: 0 ok (status --watch: the campaign completed or was cancelled); 1 unknown campaign,
a campaign lost with Redis's data (start refuses it without --start-over), or a
pause/resume/cancel that does not apply to its state; 2 bad flags or a bad recipients file;
3 bad configuration; 4 Redis unreachable.

Examples:
  mailroom campaign start --id june --name 'June news' --from 'News <news@example.com>' \\
    --subject 'June news for {{ name }}' --text-file june.txt --html-file june.html \\
    --recipients subscribers.csv --unsubscribe-endpoint https://mail.example.com --watch
  mailroom campaign status june --watch
  mailroom campaign pause june && mailroom campaign resume june`;

const common = {
  queue: { type: 'string' },
  json: { type: 'boolean' },
} satisfies FlagSpec;

const startFlags = {
  ...common,
  ...messageFlags,
  name: { type: 'string' },
  'dry-run': { type: 'boolean' },
  'test-to': { type: 'string' },
  recipient: { type: 'string' },
  'send-at': { type: 'string' },
  'batch-size': { type: 'string' },
  'start-over': { type: 'boolean' },
  watch: { type: 'boolean' },
  interval: { type: 'string' },
} satisfies FlagSpec;

const statusFlags = {
  ...common,
  watch: { type: 'boolean' },
  interval: { type: 'string' },
} satisfies FlagSpec;

const DEFAULT_INTERVAL = 1000;
/** Invalid recipients printed by `start` (with --json: listed), as campaign status keeps them. */
const INVALID_ROWS_PRINTED = 10;
const INVALID_ROWS_LISTED = 100;

function intervalOf(value: string | undefined): number {
  if (value === undefined) return DEFAULT_INTERVAL;
  const ms = durationFlag(value, '--interval');
  if (ms < 50) throw new UsageError(`--interval must be at least 50ms (got ${JSON.stringify(value)})`);
  return ms;
}

/** The one positional `<id>` of status/pause/resume/cancel. */
function campaignId(positionals: string[], subcommand: string): string {
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? `a campaign id is required: mailroom campaign ${subcommand} <id>`
        : `one campaign id at a time (got ${positionals.join(' ')})`,
    );
  }
  return positionals[0] as string;
}

async function start(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, startFlags, campaignUsage);
  if (positionals.length > 0) {
    throw new UsageError(
      `unexpected argument ${JSON.stringify(positionals[0])} (see "mailroom campaign --help")`,
    );
  }
  const recipientsPath = required(values.recipients, '--recipients', 'campaign');
  const format = recipientFormat(recipientsPath);
  const batchSize = values['batch-size']
    ? positiveIntegerFlag(values['batch-size'], '--batch-size')
    : undefined;
  const intervalMs = intervalOf(values.interval);
  if (values.recipient !== undefined && values['test-to'] === undefined) {
    throw new UsageError('--recipient goes with --test-to (or "mailroom campaign preview")');
  }
  if (values['dry-run'] && values['test-to'] !== undefined) {
    throw new UsageError('--dry-run and --test-to are exclusive: give one of them');
  }
  const sendAt = values['send-at'] === undefined ? undefined : sendAtFlag(values['send-at']);
  const { template, unsubscribe, emptyValues } = await messageFromFlags(values, 'campaign');

  // Pass 1: the whole file is well-formed (else nothing starts), its size gives the ETA, its columns
  // are checked against the placeholders: a typo stops everything here, before Redis is touched.
  const scan = await scanRecipients(recipientsPath, format);
  const expectedTotal = scan.count;
  const message = { template, emptyValues, columns: scan.columns, ...(unsubscribe ? { unsubscribe } : {}) };
  checkPlaceholders(message, scan.columns);

  return withProducer(context, { queue: values.queue, batchSize, enqueues: true }, async (producer) => {
    const plan = {
      options: { ...message, ...(values.id === undefined ? {} : { id: values.id }) },
      path: recipientsPath,
      format,
      scan,
    };
    if (values['dry-run']) return dryRun(plan, producer, context, Boolean(values.json));
    const testTo = values['test-to'];
    if (testTo !== undefined)
      return testSend(plan, testTo, values.recipient, producer, context, Boolean(values.json));

    // The file line of each recipient, to name the invalid ones: weakly held, so only while the
    // campaign holds the recipient (never the whole file).
    const lineOf = new WeakMap<object, number>();
    const recipients = (async function* () {
      for await (const { line, recipient } of readRecipients(recipientsPath, format)) {
        if (typeof recipient === 'object') lineOf.set(recipient, line);
        yield recipient;
      }
    })();
    const invalidRows: (InvalidRow & { line?: number })[] = [];
    // Stops reading recipients when the watch fails (nothing would report the progress any more)
    // or at Ctrl-C/SIGTERM: the campaign is then `interrupted`, resumable with its id.
    const reading = new AbortController();
    let interruptedBy: 'SIGINT' | 'SIGTERM' | undefined;
    const releaseSignals = onStopSignals(context, (signal) => {
      interruptedBy = signal;
      reading.abort(new Error(`interrupted by ${signal} during "mailroom campaign start"`));
    });
    const handle = await startCampaign(producer, {
      signal: reading.signal,
      ...(values.id === undefined ? {} : { id: values.id }),
      ...(values.name === undefined ? {} : { name: values.name }),
      ...(values['start-over'] ? { startOver: true } : {}),
      ...(sendAt === undefined ? {} : { sendAt }),
      ...message,
      recipients,
      expectedTotal,
      onInvalid(row, recipient) {
        if (invalidRows.length >= INVALID_ROWS_LISTED) return;
        const line = typeof recipient === 'object' ? lineOf.get(recipient) : undefined;
        invalidRows.push(line === undefined ? row : { ...row, line });
      },
    }).catch((error: unknown) => {
      releaseSignals();
      throw error;
    });
    // Once reading is over a signal has nothing to interrupt: the default (exit at once) is back.
    handle.enqueued.finally(releaseSignals).catch(() => {});
    // The id first, at once: another terminal can pause or watch while this one enqueues.
    if (!values.json) println(context.stdout, handle.id);
    if (sendAt !== undefined && sendAt > Date.now()) {
      // Backpressure holds: past maxPending messages, reading waits for the workers, who wait for sendAt.
      println(
        context.stderr,
        `mailroom campaign: scheduled for ${new Date(sendAt).toISOString()}: the messages wait in the queue until then; ` +
          'a list longer than the backpressure window keeps this command enqueueing until sending begins',
      );
    }
    /** The line that says how to resume, and the exit code of the signal. */
    const interrupted = (signal: 'SIGINT' | 'SIGTERM', queued: number): number => {
      println(
        context.stderr,
        `mailroom campaign: interrupted: ${formatCount(queued)} of ${formatCount(expectedTotal)} recipients enqueued; ` +
          `resume with: ${resumeCommand(argv, handle.id)}`,
      );
      return signalExitCode(signal);
    };
    // Without a worker the enqueueing stalls on backpressure, which looks like a hang: say why.
    await warnWithoutWorkers(producer, context);

    if (values.watch) {
      const stop = new AbortController();
      handle.enqueued.then(
        (progress) => progress.stopped === 'aborted' && stop.abort(),
        () => stop.abort(),
      );
      const watching = watchCampaign(producer, handle.id, context, {
        json: Boolean(values.json),
        intervalMs,
        signal: stop.signal,
      });
      watching.catch(() => reading.abort());
      const [enqueued, watched] = await Promise.allSettled([handle.enqueued, watching]);
      if (enqueued.status === 'rejected') throw enqueued.reason;
      if (watched.status === 'rejected') throw watched.reason;
      if (interruptedBy !== undefined && enqueued.value.stopped === 'aborted')
        return interrupted(interruptedBy, enqueued.value.queued);
      return EXIT.ok;
    }

    const progress = await handle.enqueued;
    const stoppedBy = progress.stopped === 'aborted' ? interruptedBy : undefined;
    if (values.json) {
      printJson(context, {
        id: handle.id,
        queue: producer.queue,
        ...progress,
        invalidRows,
        ...(sendAt === undefined ? {} : { sendAt }),
        ...(stoppedBy === undefined
          ? {}
          : { interrupted: stoppedBy, resume: resumeCommand(argv, handle.id) }),
      });
      return stoppedBy === undefined ? EXIT.ok : interrupted(stoppedBy, progress.queued);
    }
    if (stoppedBy !== undefined) return interrupted(stoppedBy, progress.queued);
    const notes = [
      progress.duplicates > 0
        ? `${formatCount(progress.duplicates)} duplicate${progress.duplicates === 1 ? '' : 's'} skipped`
        : '',
      progress.suppressed > 0 ? `${formatCount(progress.suppressed)} suppressed` : '',
      progress.invalid > 0 ? `${formatCount(progress.invalid)} invalid` : '',
    ].filter(Boolean);
    println(
      context.stderr,
      `mailroom campaign: ${formatCount(progress.queued)} of ${formatCount(expectedTotal)} recipient lines enqueued` +
        `${notes.length > 0 ? ` (${notes.join(', ')})` : ''}` +
        `${progress.stopped === 'cancelled' ? '; the campaign was cancelled meanwhile' : ''}` +
        `${sendAt === undefined ? '' : `; scheduled for ${new Date(sendAt).toISOString()}`}` +
        `; follow it with: mailroom campaign status ${handle.id} --watch`,
    );
    for (const { line, row, email, field, reason } of invalidRows.slice(0, INVALID_ROWS_PRINTED)) {
      const where = line === undefined ? `recipient ${row}` : `line ${line}`;
      println(context.stderr, `mailroom campaign: invalid: ${where} (${email}): ${field}: ${reason}`);
    }
    if (progress.invalid > INVALID_ROWS_PRINTED) {
      println(
        context.stderr,
        `mailroom campaign: ${formatCount(progress.invalid - INVALID_ROWS_PRINTED)} more invalid; ` +
          `the first ${INVALID_ROWS_LISTED} are in: mailroom campaign status ${handle.id} --json`,
      );
    }
    return EXIT.ok;
  });
}

async function status(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, statusFlags, campaignUsage);
  const id = campaignId(positionals, 'status');
  const intervalMs = intervalOf(values.interval);
  return withProducer(context, { queue: values.queue }, async (producer) => {
    const current = await campaignStatus(producer, id);
    // A finished campaign needs no worker: the warning is only for one still waiting on the queue.
    const workers = await warnWithoutWorkers(producer, context, STATES_NEEDING_WORKERS.has(current.state));
    if (values.watch) {
      await watchCampaign(producer, id, context, { json: Boolean(values.json), intervalMs });
      return EXIT.ok;
    }
    if (values.json) printJson(context, { ...current, ...(workers === undefined ? {} : { workers }) });
    else printLines(context.stdout, statusReport(current));
    return EXIT.ok;
  });
}

const TRANSITIONS: Record<
  string,
  { run: (producer: Producer, id: string) => Promise<CampaignState>; wanted: CampaignState; verb: string }
> = {
  pause: { run: pauseCampaign, wanted: 'paused', verb: 'paused' },
  resume: { run: resumeCampaign, wanted: 'running', verb: 'resumed' },
  cancel: { run: cancelCampaign, wanted: 'cancelled', verb: 'cancelled' },
};

async function transition(subcommand: string, argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, common, campaignUsage);
  const id = campaignId(positionals, subcommand);
  const { run, wanted, verb } = TRANSITIONS[subcommand] as (typeof TRANSITIONS)[string];
  return withProducer(context, { queue: values.queue }, async (producer) => {
    const state = await run(producer, id);
    if (values.json) printJson(context, { id, state });
    else println(context.stdout, state);
    if (state === wanted) return EXIT.ok;
    println(
      context.stderr,
      `mailroom campaign ${subcommand}: campaign ${id} is ${state}; it cannot be ${verb}`,
    );
    return EXIT.failure;
  });
}

/** `mailroom campaign start|status|pause|resume|cancel`. */
export async function campaignCommand(argv: string[], context: CliContext): Promise<number> {
  try {
    return await dispatch(argv, context);
  } catch (error) {
    // A bad template, unsubscribe URL or campaign id: one line naming it, not the whole usage.
    if (error instanceof ValidationError) throw new InputError(error.message);
    throw error;
  }
}

const SUBCOMMANDS = ['start', 'preview', 'status', 'pause', 'resume', 'cancel', 'failures', 'retry'];

async function dispatch(argv: string[], context: CliContext): Promise<number> {
  const [subcommand, ...rest] = argv;
  switch (subcommand) {
    case 'start':
      return start(rest, context);
    case 'status':
      return status(rest, context);
    case 'preview':
      return previewCommand(rest, context, campaignUsage);
    case 'pause':
    case 'resume':
    case 'cancel':
      return transition(subcommand, rest, context);
    case 'failures':
      return failuresSubcommand(rest, context);
    case 'retry':
      return retrySubcommand(rest, context);
    default:
      throw new UsageError(
        `${subcommand === undefined ? 'a subcommand is required' : `unknown subcommand ${JSON.stringify(subcommand)}${didYouMean(subcommand, SUBCOMMANDS)}`}: start, preview, status, pause, resume, cancel, failures or retry`,
        { usage: campaignUsage },
      );
  }
}
