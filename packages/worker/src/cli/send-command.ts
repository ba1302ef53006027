/** `mailroom send`: one message built from flags, enqueued for the workers or sent at once (--now). */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import {
  type DeliveryOutcome,
  EmailMultiAlternatives,
  getConnection,
  parseAddress,
  settings,
  ValidationError,
} from '@mailroom/core';
import { type CheckedMessage, checkMessage } from '@mailroom/producer';
import {
  describeFileError,
  parseHeaderFlags,
  printJson,
  readTextFile,
  required,
  withProducer,
} from './common.js';
import { type FlagSpec, parseFlags } from './flags.js';
import { type CliContext, EXIT, InputError, println, UsageError } from './io.js';

export const sendUsage = `Usage: mailroom send --from ADDR --to ADDR [--to ADDR]... --subject TEXT
                     (--body TEXT | --body-file PATH) [flags]

Builds one message (an EmailMultiAlternatives) from flags and enqueues it for the workers; prints
the id of its batch job. With --now it is sent at once through the EMAIL_BACKEND backend instead
(no Redis needed) and the server's reply is printed.

Flags:
  --from <addr>              sender, e.g. 'Shop <shop@example.com>' (required)
  --to <addr>                recipient; repeat for more (at least one of --to/--cc/--bcc)
  --cc <addr>, --bcc <addr>  more recipients; repeatable
  --reply-to <addr>          Reply-To address; repeatable
  --subject <text>           subject (required; may be '')
  --body <text>              plain-text body, or
  --body-file <path>         read the body from a file ('-' reads stdin)
  --html-file <path>         HTML alternative (multipart/alternative)
  --header 'Name: value'     extra header; repeatable
  --attach <path>            attach a file (type guessed from its name); repeatable
  --now                      send now with EMAIL_BACKEND instead of enqueueing
  --queue <name>             queue to enqueue on (MAILROOM_QUEUE, default mail)
  --idempotency-key <key>    enqueue nothing if this key was used in the last 24 h
  --json                     print the result as JSON

Environment: REDIS_URL or REDIS_CLUSTER_NODES, MAILROOM_QUEUE, MAILROOM_PREFIX, MAILROOM_SHARDS
(enqueue); EMAIL_BACKEND, EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS,
EMAIL_USE_SSL, EMAIL_TIMEOUT (--now).

Exit codes: 0 enqueued or sent; 1 refused by the server (--now); 2 bad flags or message;
3 bad configuration (or SMTP credentials refused); 4 Redis or the mail server unreachable.
A message accepted for some recipients and refused for others counts as sent (exit 0); the
refusals are printed on stderr.

Examples:
  mailroom send --from shop@example.com --to ann@example.com --subject 'Your receipt' \\
    --body-file receipt.txt --html-file receipt.html --attach receipt.pdf
  echo 'It works' | mailroom send --now --from me@example.com --to me@example.com \\
    --subject Test --body-file -`;

const flags = {
  from: { type: 'string' },
  to: { type: 'string', multiple: true },
  cc: { type: 'string', multiple: true },
  bcc: { type: 'string', multiple: true },
  'reply-to': { type: 'string', multiple: true },
  subject: { type: 'string' },
  body: { type: 'string' },
  'body-file': { type: 'string' },
  'html-file': { type: 'string' },
  header: { type: 'string', multiple: true },
  attach: { type: 'string', multiple: true },
  now: { type: 'boolean' },
  queue: { type: 'string' },
  'idempotency-key': { type: 'string' },
  json: { type: 'boolean' },
} satisfies FlagSpec;

type SendFlags = ReturnType<typeof parseFlags<typeof flags>>['values'];

const ADDRESS_FLAGS = ['from', 'to', 'cc', 'bcc', 'reply-to'] as const;

/**
 * Refuses an address flag that is not one address with a domain. Core accepts a bare local part
 * (`root`, as Django does: local delivery); on the command line `--to bob` is a typo, not a wish to
 * mail the local user bob through a remote relay.
 */
function checkAddressFlags(values: SendFlags): void {
  for (const name of ADDRESS_FLAGS) {
    const value = values[name];
    for (const address of typeof value === 'string' ? [value] : (value ?? [])) {
      let addrSpec: string;
      try {
        ({ addrSpec } = parseAddress(address, `--${name}`));
      } catch (error) {
        if (error instanceof ValidationError) throw new InputError(`--${name}: ${error.message}`);
        throw error;
      }
      // The domain follows the last @ outside a quoted local part ("a@b"@example.com).
      if (addrSpec.lastIndexOf('@') < addrSpec.lastIndexOf('"') || !addrSpec.includes('@')) {
        throw new InputError(
          `--${name} ${JSON.stringify(address)} has no domain: give a full address such as ${addrSpec}@example.com`,
        );
      }
    }
  }
}

/** Builds the message from the flags; every check core makes at enqueue time runs here too. */
async function buildMessage(values: SendFlags): Promise<EmailMultiAlternatives> {
  const fromEmail = required(values.from, '--from', 'send');
  const subject = required(values.subject, '--subject', 'send');
  if (values.body !== undefined && values['body-file'] !== undefined) {
    throw new UsageError('--body and --body-file are exclusive: give one of them');
  }
  const bodyFile = values['body-file'];
  const body =
    bodyFile !== undefined
      ? await readTextFile(bodyFile, '--body-file')
      : required(values.body, '--body', 'send');
  if (!values.to?.length && !values.cc?.length && !values.bcc?.length) {
    throw new UsageError('--to is required (or --cc/--bcc): the message needs a recipient');
  }
  checkAddressFlags(values);
  const message = new EmailMultiAlternatives({
    subject,
    body,
    fromEmail,
    to: values.to ?? [],
    cc: values.cc ?? [],
    bcc: values.bcc ?? [],
    replyTo: values['reply-to'] ?? [],
    headers: parseHeaderFlags(values.header),
  });
  const htmlFile = values['html-file'];
  if (htmlFile !== undefined)
    message.attachAlternative(await readTextFile(htmlFile, '--html-file'), 'text/html');
  for (const path of values.attach ?? []) {
    let content: Buffer;
    try {
      content = await readFile(path);
    } catch (error) {
      throw new InputError(`cannot read --attach ${JSON.stringify(path)}: ${describeFileError(error)}`);
    }
    message.attach(basename(path), content);
  }
  return message;
}

/** The reply text of an outcome's error, e.g. `550 5.1.1 No such user`. */
function replyOf(error: NonNullable<DeliveryOutcome['error']>): string {
  const response = (error as { response?: unknown }).response;
  return typeof response === 'string' && response ? response : error.message;
}

async function sendNow(
  message: EmailMultiAlternatives,
  values: SendFlags,
  context: CliContext,
): Promise<number> {
  const connection = getConnection();
  const backend = settings.EMAIL_BACKEND;
  let outcome: DeliveryOutcome;
  try {
    // deliver() opens the connection and reports a refusal or a failed connection as an outcome.
    outcome = await connection.deliver(message);
  } finally {
    // MUST close what deliver() opened, whatever happened.
    await connection.close().catch(() => {});
  }
  const refused = outcome.refused.map((refusal) => ({
    recipient: refusal.recipient,
    code: refusal.responseCode,
    response: refusal.response,
  }));
  if (values.json) {
    printJson(context, {
      sent: outcome.delivered,
      backend,
      response: outcome.response ?? null,
      accepted: outcome.accepted,
      refused,
      ...(outcome.error
        ? {
            error: {
              reason: outcome.classification?.reason ?? 'unknown',
              code: outcome.error.responseCode ?? null,
              message: replyOf(outcome.error),
            },
          }
        : {}),
    });
  } else if (outcome.delivered) {
    println(context.stdout, outcome.response ?? `sent (backend ${backend})`);
  }
  for (const refusal of refused) {
    println(
      context.stderr,
      `mailroom send: ${refusal.recipient} refused${refusal.code ? ` (${refusal.code})` : ''}: ${refusal.response ?? ''}`,
    );
  }
  if (outcome.delivered) return EXIT.ok;
  if (!outcome.error) {
    println(context.stderr, 'mailroom send: not sent: the message has no recipients');
    return EXIT.usage;
  }
  const reason = outcome.classification?.reason ?? 'unknown';
  const text = replyOf(outcome.error);
  if (reason === 'connection' || reason === 'timeout') {
    println(context.stderr, `mailroom send: the mail server is unreachable (${backend}): ${text}`);
    return EXIT.unavailable;
  }
  if (reason === 'invalid') {
    println(context.stderr, `mailroom send: invalid message: ${text}`);
    return EXIT.usage;
  }
  if (reason === 'auth') {
    println(
      context.stderr,
      `mailroom send: the mail server refused the credentials (EMAIL_HOST_USER): ${text}`,
    );
    return EXIT.config;
  }
  println(context.stderr, `mailroom send: refused by the server: ${text}`);
  return EXIT.failure;
}

/** `mailroom send`: one message from flags, enqueued (default) or sent now (`--now`). */
export async function sendCommand(argv: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(argv, flags, sendUsage);
  if (positionals.length > 0) {
    throw new UsageError(
      `unexpected argument ${JSON.stringify(positionals[0])} (see "mailroom send --help")`,
    );
  }
  if (values.now && (values.queue !== undefined || values['idempotency-key'] !== undefined)) {
    throw new UsageError('--queue and --idempotency-key only apply when enqueueing, not with --now');
  }
  const message = await buildMessage(values);
  // The same checks the producer makes, before anything connects (headers, addresses, size); the
  // checked form is what gets enqueued.
  let checked: CheckedMessage;
  try {
    checked = checkMessage(message);
  } catch (error) {
    if (error instanceof ValidationError || error instanceof TypeError) {
      throw new InputError(`invalid message: ${error.message}`);
    }
    throw error;
  }
  if (values.now) return sendNow(message, values, context);

  return withProducer(context, { queue: values.queue, enqueues: true }, async (producer) => {
    const key = values['idempotency-key'];
    const result = await producer.enqueue(checked, key === undefined ? {} : { idempotencyKey: key });
    const jobId = result.jobIds[0] ?? null;
    if (values.json) {
      printJson(context, {
        jobId,
        queue: producer.queue,
        messages: result.messages,
        duplicate: result.duplicate,
      });
    } else {
      if (result.duplicate) {
        println(
          context.stderr,
          `mailroom send: idempotency key ${JSON.stringify(key)} was already used: nothing enqueued (job of the first call below)`,
        );
      }
      println(context.stdout, jobId ?? '');
    }
    return EXIT.ok;
  });
}
