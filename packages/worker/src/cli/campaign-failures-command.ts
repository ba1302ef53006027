/** `mailroom campaign failures|retry`: a campaign's failed recipients, and sending them again exactly once. */
import { type CampaignFailure, campaignFailures, retryCampaign } from '@mailroom/producer';
import { formatCount, printJson, withProducer } from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, println, UsageError } from './io.js';
import { csvField } from './suppression-file.js';
import { forTerminal } from './terminal.js';

/** The `failures` and `retry` part of `mailroom campaign --help`. */
export const campaignFailuresUsage = `  mailroom campaign failures <id> [--transient] [--json | --csv]
    The recipients whose message failed for good (refused with 5xx, or deferred until the
    attempts ran out): address, reason, SMTP code, attempts, when, and the server's reply (cut to
    one short line in the table; whole in --json and --csv). Recipients whose message could not be
    built are not here: see "status --json" (invalidRows).
    --transient                only transient failures that ran out of attempts (what
                               "retry --transient" sends again)
    --json                     one JSON object per line (JSON Lines)
    --csv                      CSV (RFC 4180) with a header row:
                               address,reason,code,attempts,at,transient,reply

  mailroom campaign retry <id> [--transient] [--json]
    Enqueues the failed recipients' messages again, each exactly once (even when two retries run
    at once or one is interrupted: run it again to finish), never to a recipient that was
    delivered nor to one on the suppression list (counted skipped). The campaign is running again
    until they settle; each is counted once more as sent or failed.
    --transient                only transient failures that ran out of attempts (4xx, connection,
                               timeout); without it the permanent ones too (fix their cause first)`;

const failuresFlags = {
  queue: { type: 'string' },
  json: { type: 'boolean' },
  csv: { type: 'boolean' },
  transient: { type: 'boolean' },
} satisfies FlagSpec;

const retryFlags = {
  queue: { type: 'string' },
  json: { type: 'boolean' },
  transient: { type: 'boolean' },
} satisfies FlagSpec;

/** The CSV header of `failures --csv`, in the order of {@link csvLine}. */
const CSV_HEADER = 'address,reason,code,attempts,at,transient,reply';
/** Characters of the reply shown in the table. */
const REPLY_SHOWN = 60;

function onlyId(positionals: string[], subcommand: string, usage: string): string {
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? `a campaign id is required: mailroom campaign ${subcommand} <id>`
        : `one campaign id at a time (got ${positionals.join(' ')})`,
      { usage },
    );
  }
  return positionals[0] as string;
}

/** A failure as --json prints it: every field, `at` in ISO 8601 (UTC), absent values as null. */
function jsonRecord(failure: CampaignFailure): Record<string, unknown> {
  return {
    address: failure.address,
    reason: failure.reason,
    code: failure.code ?? null,
    reply: failure.reply ?? null,
    attempts: failure.attempts,
    at: new Date(failure.at).toISOString(),
    transient: failure.transient,
  };
}

function csvLine(failure: CampaignFailure): string {
  const fields = [
    failure.address,
    failure.reason,
    failure.code === undefined ? '' : String(failure.code),
    String(failure.attempts),
    new Date(failure.at).toISOString(),
    failure.transient ? 'true' : 'false',
    failure.reply ?? '',
  ];
  // Escaped like every line the CLI writes: a reply from a hostile server cannot act on a terminal.
  return forTerminal(fields.map(csvField).join(','));
}

/** A line of the table: columns, the reply last and cut short (a longer address pushes the rest). */
function tableRow(
  address: string,
  reason: string,
  code: string,
  attempts: string,
  at: string,
  reply: string,
) {
  const shown = reply.length > REPLY_SHOWN ? `${reply.slice(0, REPLY_SHOWN - 1)}…` : reply;
  return `${address.padEnd(32)}  ${reason.padEnd(11)}  ${code.padEnd(4)}  ${attempts.padStart(8)}  ${at.padEnd(24)}  ${shown}`.trimEnd();
}

/** `mailroom campaign failures <id> [--transient] [--json | --csv]`. */
export async function failuresSubcommand(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, failuresFlags, campaignFailuresUsage);
  const id = onlyId(positionals, 'failures', campaignFailuresUsage);
  if (values.json && values.csv) throw new UsageError('--json and --csv are exclusive: give one of them');
  return withProducer(context, { queue: values.queue }, async (producer) => {
    let shown = 0;
    const options = { transient: Boolean(values.transient) };
    for await (const failure of campaignFailures(producer, id, options)) {
      if (values.json) printJson(context, jsonRecord(failure));
      else if (values.csv) {
        if (shown === 0) context.stdout.write(`${CSV_HEADER}\n`);
        context.stdout.write(`${csvLine(failure)}\n`);
      } else {
        if (shown === 0) {
          println(context.stdout, tableRow('ADDRESS', 'REASON', 'CODE', 'ATTEMPTS', 'WHEN (UTC)', 'REPLY'));
        }
        println(
          context.stdout,
          tableRow(
            failure.address,
            failure.reason,
            failure.code === undefined ? '' : String(failure.code),
            String(failure.attempts),
            new Date(failure.at).toISOString(),
            failure.reply ?? '',
          ),
        );
      }
      shown++;
    }
    // An empty CSV still has its header: a spreadsheet or script reading it finds the columns.
    if (values.csv && shown === 0) context.stdout.write(`${CSV_HEADER}\n`);
    if (!values.json && !values.csv) {
      const kind = values.transient ? 'transient ' : '';
      if (shown === 0) println(context.stdout, `no ${kind}failed recipients in campaign ${id}`);
      else println(context.stdout, `${formatCount(shown)} ${kind}failed recipient${shown === 1 ? '' : 's'}`);
    }
    return EXIT.ok;
  });
}

/** `mailroom campaign retry <id> [--transient] [--json]`. */
export async function retrySubcommand(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, retryFlags, campaignFailuresUsage);
  const id = onlyId(positionals, 'retry', campaignFailuresUsage);
  return withProducer(context, { queue: values.queue, enqueues: true }, async (producer) => {
    const result = await retryCampaign(producer, id, { transient: Boolean(values.transient) });
    if (values.json) {
      printJson(context, { id, ...result });
      return EXIT.ok;
    }
    const lines: string[] = [];
    if (result.retried === 0) lines.push(`nothing to retry in campaign ${id}`);
    else {
      const resumed =
        result.resumed > 0 ? ` (${formatCount(result.resumed)} left by an interrupted retry)` : '';
      lines.push(
        `${formatCount(result.retried)} re-enqueued${resumed}; follow them with: mailroom campaign status ${id}`,
      );
    }
    if (result.skipped > 0) {
      const suppressed =
        result.suppressed > 0 ? ` (${formatCount(result.suppressed)} on the suppression list)` : '';
      lines.push(`${formatCount(result.skipped)} skipped${suppressed}`);
    }
    if (result.leftToOtherRetry > 0) {
      lines.push(
        `${formatCount(result.leftToOtherRetry)} claimed by another retry less than a minute ago, left to it; if that retry was interrupted, run this again in a minute`,
      );
    }
    for (const line of lines) println(context.stdout, line);
    return EXIT.ok;
  });
}
