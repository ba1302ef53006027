/** Campaigns: a template sent to a stream of recipients, enqueued with backpressure, paused, resumed, cancelled, watched. */
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout } from 'node:timers/promises';
import {
  coerceError,
  EmailMessage,
  EmailMultiAlternatives,
  MailError,
  settings,
  ValidationError,
} from '@mailroom/core';
import {
  CAMPAIGN_STATES,
  type CampaignField,
  CAMPAIGN_FIELDS as FIELD,
  INVALID_ROWS_KEPT,
  parseUnsubscribeSecrets,
  protocolDefaults,
  type QueueKeys,
  registerScripts,
  type StoredCampaignState,
  SuppressionList,
  signUnsubscribeToken,
  UNSUBSCRIBE_TOKEN_LIFETIME,
  unsubscribeUrl,
} from '@mailroom/core/protocol';
import { z } from 'zod';
import { type EtaBasis, estimateEta } from './campaign-eta.js';
import { failIfCampaignLost, guardCampaignStart, missingCampaignError } from './campaign-loss.js';
import {
  campaignPlaceholders,
  checkPlaceholders,
  checkPlaceholderValues,
  type EmptyValuePolicy,
  valuePlaceholders,
} from './placeholders.js';
import { type CheckedMessage, checkMessage, consumedShard, type Producer } from './producer.js';
import { type CompiledTemplate, compileTemplate, type TemplateVariables } from './template.js';

/** The message every recipient gets, with `{{ placeholders }}` filled from the recipient's fields. */
export interface CampaignTemplate {
  subject: string;
  /** Plain-text body. */
  text: string;
  /** Optional HTML alternative; values are HTML-escaped (`{{{ raw }}}` for trusted HTML). */
  html?: string;
  fromEmail: string;
  replyTo?: string[];
  /** Extra headers; values may use placeholders. */
  headers?: Record<string, string>;
}

/**
 * How a campaign's messages offer to unsubscribe (List-Unsubscribe, RFC 2369; one-click, RFC 8058).
 * With `endpoint`, each recipient gets a signed one-click link served by `mailroom unsubscribe-server`
 * (or an app's own handler): a POST to it puts the address on the queue's suppression list.
 */
export interface CampaignUnsubscribe {
  /**
   * https base URL where mailroom's unsubscribe endpoint is reachable, e.g.
   * `https://mail.example.com`: each message gets `List-Unsubscribe: <https://mail.example.com/unsubscribe/TOKEN>`
   * and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, TOKEN signed for that recipient (queue,
   * campaign, address, expiry) with MAILROOM_UNSUBSCRIBE_SECRET; the templates can show the same link
   * as `{{ unsubscribe_url }}`. Exclusive with `url`.
   */
  endpoint?: string;
  /** How long the links work, in ms. Default a year. */
  validFor?: number;
  /** Secret(s) that sign the tokens (as MAILROOM_UNSUBSCRIBE_SECRET, the default; the first signs). */
  secret?: string;
  /**
   * Your own https unsubscribe URL (placeholders percent-encoded, e.g. `https://example.com/u?e={{ email }}`):
   * List-Unsubscribe plus One-Click; your site handles the POST. Exclusive with `endpoint`.
   */
  url?: string;
  /** A mailto address for List-Unsubscribe (besides either link). */
  mailto?: string;
}

/** A recipient: an address, or an object with `email` plus any fields the template uses (`name`, ...). */
export type CampaignRecipient = string | ({ email: string; name?: string } & TemplateVariables);

/** Options of {@link startCampaign}. */
export interface CampaignOptions {
  /** Campaign id (letters, digits, `-_.`); default a new UUID. Starting an id again resumes it. */
  id?: string;
  /** Human name shown by status. */
  name?: string;
  template: CampaignTemplate;
  /** The recipients, streamed: an async iterable (a generator, a file reader) or an array. */
  recipients: AsyncIterable<CampaignRecipient> | Iterable<CampaignRecipient>;
  /** RFC 2369 / RFC 8058 unsubscribe links; see {@link CampaignUnsubscribe}. */
  unsubscribe?: CampaignUnsubscribe;
  /** Builds the message for a recipient instead of the template (it must return an EmailMessage). */
  render?: (recipient: { email: string } & TemplateVariables) => EmailMessage;
  /** Backpressure: at most this many messages enqueued but not yet settled. Default 20 batches. */
  maxPending?: number;
  /** Recipients per enqueue call. Default 10 batches. */
  chunkSize?: number;
  /** Expected number of recipients, for the ETA while recipients are still being read. */
  expectedTotal?: number;
  /** Failures are recorded on the campaign instead of dead-lettering batches. Default true. */
  failSilently?: boolean;
  /**
   * Stops reading recipients (the campaign keeps what was enqueued): the campaign is `interrupted`
   * (its record keeps the abort reason as `enqueueError`) and starting the id again resumes it.
   */
  signal?: AbortSignal;
  /**
   * The recipients' columns, checked against the templates' placeholders before anything is written
   * (see checkPlaceholders). Default: the keys of the first recipient when it is an object; plain
   * address strings have no columns to check.
   */
  columns?: readonly string[];
  /**
   * A recipient (given as an object) with no value, or only whitespace, for a placeholder the
   * templates use: `error` (default) counts it invalid (field `placeholder.<name>`) and the campaign
   * goes on; `allow` renders the value empty.
   */
  emptyValues?: EmptyValuePolicy;
  /**
   * When the messages may be sent (Date or epoch ms): every batch is enqueued delayed until then, and
   * status shows it. Starting the id again without it (a resume) keeps the time first given. Backpressure still holds: past maxPending messages, reading waits until the
   * workers send (so from sendAt on). Default: at once.
   */
  sendAt?: Date | number;
  /**
   * Starts anew a campaign whose record Redis lost (restarted without persistence): every recipient
   * gets the message again, including those it was already delivered to. Without it, starting such
   * an id throws DataLossError (EDATALOST). Default false; refused for a campaign that exists.
   */
  startOver?: boolean;
  /** Called after each chunk with the counts so far. */
  onProgress?: (progress: CampaignEnqueueProgress) => void;
  /**
   * Called for each recipient counted `invalid`, with the item as `recipients` gave it, once its
   * chunk is counted (a restart that finds it counted already does not call it again).
   */
  onInvalid?: (row: InvalidRow, recipient: CampaignRecipient) => void;
}

/**
 * A recipient skipped because its message could not be built: a bad address, header injection, a
 * field over its size cap, a message over maxMessageBytes. Counted as failed `invalid`.
 */
export interface InvalidRow {
  /** 1-based position of the recipient in `recipients`, duplicates included (data row N of a file). */
  row: number;
  /** The address as given, on one line, cut to 254 characters. */
  email: string;
  /**
   * What was wrong, in the template's terms: `subject`, `text`, `html`, `headers.<Name>`,
   * `unsubscribe.url`, `to` (address or name), `size` (the whole message), `render` (a render()
   * result), or `message` when the failure named no field.
   */
  field: string;
  /** Why, on one line, cut to 300 characters. */
  reason: string;
}

// How an invalid row is stored (a JSON list in Redis) and read back.
const invalidRowSchema = z.object({
  row: z.number().int().positive(),
  email: z.string(),
  field: z.string(),
  reason: z.string(),
});

/** What the enqueueing side of a campaign has done. */
export interface CampaignEnqueueProgress {
  /** Distinct recipients taken from the iterable to send to (enqueued + invalid). */
  total: number;
  queued: number;
  invalid: number;
  duplicates: number;
  /** Recipients skipped because their address is on the queue's suppression list (not in `total`). */
  suppressed: number;
}

/** A started campaign: its id, and a promise for the end of enqueueing (not of sending). */
export interface CampaignHandle {
  readonly id: string;
  readonly enqueued: Promise<CampaignEnqueueProgress & { stopped: 'done' | 'cancelled' | 'aborted' }>;
}

/**
 * A campaign's state: stored `running`/`paused`/`cancelled`; derived `completed` (every recipient
 * read and settled) and `interrupted` (reading the recipients failed, see `enqueueError`, and what was
 * enqueued is settled; start it again with the same id to resume).
 */
export type CampaignState = StoredCampaignState | 'completed' | 'interrupted';

/** Progress of a campaign, readable from any process. */
export interface CampaignStatus {
  id: string;
  name: string;
  state: CampaignState;
  /** Distinct recipients so far (the final total once enqueueing finished). */
  total: number;
  expectedTotal: number | undefined;
  queued: number;
  sent: number;
  failed: number;
  failedByReason: Record<string, number>;
  cancelled: number;
  duplicates: number;
  /** Recipients skipped because their address was on the suppression list (not in `total`). */
  suppressed: number;
  /** Messages not settled yet (including expected recipients not read yet). */
  remaining: number;
  /** Messages per second over the last 10 seconds. */
  rate: number;
  /**
   * Seconds to completion: at the rate of the last 10 seconds, else at the average rate since the
   * start (plus the wait for the next retry while only retries are due); null when unknown. See
   * `etaBasis` and estimateEta.
   */
  etaSeconds: number | null;
  /** What `etaSeconds` is based on (campaign-eta.ts). */
  etaBasis: EtaBasis;
  /**
   * While the campaign sends nothing because the queue only holds batches waiting for a retry: when
   * the next one is due (epoch ms). Read from the queue as a whole, so exact when this campaign is
   * the queue's only work.
   */
  retryAt: number | undefined;
  enqueueFinished: boolean;
  /** Why reading or enqueueing the recipients stopped early, if it failed. */
  enqueueError: string | undefined;
  /** The first 100 invalid recipients with their reasons; all of them count in `failedByReason.invalid`. */
  invalidRows: InvalidRow[];
  startedAt: number;
  /**
   * Epoch ms it finished: for a cancelled campaign its cancel, for a completed (or interrupted) one
   * the last message a worker counted (`lastSettledAt`); undefined while it goes on, and for one
   * whose every recipient was skipped or invalid (no worker counted any).
   */
  finishedAt: number | undefined;
  /** Epoch ms before which its messages are not sent (startCampaign's `sendAt`), if scheduled. */
  sendAt: number | undefined;
}

const ID = /^[A-Za-z0-9_.-]{1,128}$/;
const SEEN_BUCKETS = 16_384;
/** RFC 5321 §4.5.3.1.3: a path is at most 256 octets, 254 without its angle brackets. */
const ADDRESS_LENGTH = 254;
const REASON_LENGTH = 300;

function checkId(id: string): string {
  if (!ID.test(id)) {
    throw new ValidationError(
      `Invalid campaign id ${JSON.stringify(id)}: use 1-128 letters, digits, '-', '_' or '.'`,
      { field: 'id' },
    );
  }
  return id;
}

/** The seen-bucket and field of an address (SHA-1 of the lowercased address: 14 bits bucket, 8 bytes field). */
function seenSlot(seenPrefix: string, address: string): [string, Buffer] {
  const digest = createHash('sha1').update(address.toLowerCase()).digest();
  const bucket = digest.readUInt16BE(0) % SEEN_BUCKETS;
  return [`${seenPrefix}:${bucket}`, digest.subarray(2, 10)];
}

function quoteName(name: string): string {
  return /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*$/.test(name) ? name : `"${name.replace(/(["\\])/g, '\\$1')}"`;
}

/** A campaign's templates compiled once, rendered per recipient by {@link renderMessage}. */
export interface CompiledCampaign {
  subject: CompiledTemplate;
  text: CompiledTemplate;
  html: CompiledTemplate | undefined;
  headers: [string, CompiledTemplate][];
  unsubscribeUrl: CompiledTemplate | undefined;
  unsubscribeMailto: CompiledTemplate | undefined;
  /** One-click links signed per recipient (`unsubscribe.endpoint`). */
  oneClick: OneClick | undefined;
  /** Placeholders each recipient given as an object must have a value for (emptyValues `error`). */
  required: string[];
}

/** What signing a recipient's one-click link needs. */
interface OneClick {
  endpoint: string;
  queue: string;
  campaign: string;
  secret: string;
  validFor: number;
}

/** The signed one-click URL of a recipient. */
function oneClickUrl(oneClick: OneClick, address: string): string {
  const token = signUnsubscribeToken(
    {
      queue: oneClick.queue,
      campaign: oneClick.campaign,
      address,
      expiresAt: Date.now() + oneClick.validFor,
    },
    oneClick.secret,
  );
  return unsubscribeUrl(oneClick.endpoint, token);
}

/**
 * The one-click settings of a campaign, checked before anything is written: an https endpoint, a
 * secret (ConfigError naming MAILROOM_UNSUBSCRIBE_SECRET, never its value), a positive lifetime.
 */
function compileOneClick(
  unsubscribe: CampaignUnsubscribe | undefined,
  queue: string,
  campaign: string,
): OneClick | undefined {
  if (unsubscribe?.endpoint === undefined) return undefined;
  if (unsubscribe.url) {
    throw new ValidationError('unsubscribe.endpoint and unsubscribe.url are exclusive: give one of them', {
      field: 'unsubscribe.endpoint',
    });
  }
  // Checks the endpoint (https, no query) once, with a token that is never used.
  unsubscribeUrl(unsubscribe.endpoint, 'probe');
  const validFor = unsubscribe.validFor ?? UNSUBSCRIBE_TOKEN_LIFETIME;
  if (!Number.isSafeInteger(validFor) || validFor <= 0) {
    throw new ValidationError(
      `unsubscribe.validFor must be a positive number of milliseconds (got ${JSON.stringify(validFor)})`,
      { field: 'unsubscribe.validFor' },
    );
  }
  const secrets =
    unsubscribe.secret === undefined
      ? parseUnsubscribeSecrets(settings.MAILROOM_UNSUBSCRIBE_SECRET)
      : parseUnsubscribeSecrets(unsubscribe.secret, 'unsubscribe.secret');
  return { endpoint: unsubscribe.endpoint, queue, campaign, secret: secrets[0] as string, validFor };
}

/**
 * Compiles a campaign's templates and unsubscribe settings (for startCampaign, previewCampaign and
 * dryRunCampaign: one render path). Throws ValidationError naming the field.
 */
export function compileCampaign(
  options: Pick<CampaignOptions, 'template' | 'unsubscribe' | 'emptyValues'>,
  queue: string,
  campaign: string,
): CompiledCampaign {
  const { template, unsubscribe } = options;
  if (
    !template ||
    typeof template.subject !== 'string' ||
    typeof template.text !== 'string' ||
    !template.fromEmail
  ) {
    throw new ValidationError('A campaign template needs subject, text and fromEmail', { field: 'template' });
  }
  if (unsubscribe?.url && !/^https:\/\//i.test(unsubscribe.url)) {
    // RFC 8058 §3: one-click unsubscription requires an HTTPS URI.
    throw new ValidationError(
      `unsubscribe.url must be an https:// URL (got ${JSON.stringify(unsubscribe.url)})`,
      {
        field: 'unsubscribe.url',
      },
    );
  }
  return {
    subject: compileTemplate(template.subject, 'none', 'template.subject'),
    text: compileTemplate(template.text, 'none', 'template.text'),
    html: template.html === undefined ? undefined : compileTemplate(template.html, 'html', 'template.html'),
    headers: Object.entries(template.headers ?? {}).map(([name, value]) => [
      name,
      compileTemplate(value, 'none', `template.headers.${name}`),
    ]),
    unsubscribeUrl: unsubscribe?.url ? compileTemplate(unsubscribe.url, 'url', 'unsubscribe.url') : undefined,
    unsubscribeMailto: unsubscribe?.mailto
      ? compileTemplate(
          unsubscribe.mailto.startsWith('mailto:') ? unsubscribe.mailto : `mailto:${unsubscribe.mailto}`,
          'url',
          'unsubscribe.mailto',
        )
      : undefined,
    oneClick: compileOneClick(unsubscribe, queue, campaign),
    required:
      emptyValuePolicy(options.emptyValues) === 'allow'
        ? []
        : valuePlaceholders(campaignPlaceholders(template, unsubscribe), unsubscribe),
  };
}

function emptyValuePolicy(policy: EmptyValuePolicy | undefined): EmptyValuePolicy {
  if (policy === undefined || policy === 'error' || policy === 'allow') return policy ?? 'error';
  throw new ValidationError(`emptyValues must be 'error' or 'allow' (got ${JSON.stringify(policy)})`, {
    field: 'emptyValues',
  });
}

/** The template field a core validation error is about (`fromEmail[0]` → `template.fromEmail[0]`). */
function templateField(field: string | undefined, template: CampaignTemplate): string {
  if (!field) return 'template';
  // A render error already names the template's field.
  if (field.startsWith('template.') || field.startsWith('unsubscribe.')) return field;
  if (template.headers && Object.hasOwn(template.headers, field)) return `template.headers.${field}`;
  return `template.${rowField(field)}`;
}

/**
 * Renders the template once for a recipient without variables and checks the result as enqueue
 * would: a bad fromEmail, replyTo, header name or fixed header value fails the campaign at start
 * instead of making every recipient `invalid`.
 */
export function checkTemplate(
  compiled: CompiledCampaign,
  template: CampaignTemplate,
  maxMessageBytes: number,
): void {
  try {
    checkMessage(renderMessage(compiled, template, { email: 'probe@example.com' }, maxMessageBytes), {
      maxMessageBytes,
    });
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    throw new ValidationError(`Invalid campaign template: ${error.message}`, {
      field: templateField(error.field, template),
      cause: error,
    });
  }
}

/**
 * Renders the template for one recipient: personalised subject, bodies, headers and unsubscribe
 * links. Each field stops rendering at `maxLength` characters (a ValidationError naming the field):
 * a field that long alone would put the message over maxMessageBytes.
 */
export function renderMessage(
  compiled: CompiledCampaign,
  template: CampaignTemplate,
  recipient: { email: string } & TemplateVariables,
  maxLength: number,
): EmailMessage {
  const name = typeof recipient.name === 'string' ? recipient.name : '';
  const to = name ? `${quoteName(name)} <${recipient.email}>` : recipient.email;
  const oneClick = compiled.oneClick ? oneClickUrl(compiled.oneClick, recipient.email) : undefined;
  // The signed link is the recipient's own: the templates show it as {{ unsubscribe_url }}.
  if (oneClick !== undefined) recipient = { ...recipient, unsubscribe_url: oneClick };
  const subject = compiled.subject.render(recipient, maxLength);
  const body = compiled.text.render(recipient, maxLength);
  const html = compiled.html?.render(recipient, maxLength);
  const headers: Record<string, string> = {};
  for (const [header, value] of compiled.headers) headers[header] = value.render(recipient, maxLength);
  const links: string[] = [];
  if (compiled.unsubscribeMailto) links.push(`<${compiled.unsubscribeMailto.render(recipient, maxLength)}>`);
  if (compiled.unsubscribeUrl) links.push(`<${compiled.unsubscribeUrl.render(recipient, maxLength)}>`);
  if (oneClick !== undefined) links.push(`<${oneClick}>`);
  if (links.length > 0) headers['List-Unsubscribe'] = links.join(', ');
  if (compiled.unsubscribeUrl || oneClick !== undefined) {
    headers['List-Unsubscribe-Post'] = 'List-Unsubscribe=One-Click';
  }
  const message = new EmailMultiAlternatives({
    subject,
    body,
    fromEmail: template.fromEmail,
    to: [to],
    replyTo: template.replyTo ?? [],
    headers,
  });
  if (html !== undefined) message.attachAlternative(html, 'text/html');
  return message;
}

/**
 * Whether a failure to build one recipient's message is that recipient's: it is counted invalid and
 * the campaign goes on. Otherwise (a ConfigError, a render() callback that lost its database) the
 * enqueueing stops, resumable by a restart: counting it invalid would mark every later recipient
 * seen, and they would never be sent.
 */
function isRecipientFault(error: unknown, customRender: boolean): boolean {
  if (error instanceof ValidationError || error instanceof TypeError || error instanceof RangeError)
    return true;
  if (error instanceof MailError) return false;
  // The built-in rendering and checkMessage fail only on the recipient's data (checkMessage turns
  // anything unexpected into a ValidationError); a caller's render() may fail on anything.
  return !customRender;
}

/** The field of an invalid row, in the template's terms (see {@link InvalidRow.field}). */
function rowField(field: string | undefined): string {
  if (!field) return 'message';
  if (field.startsWith('template.')) return field.slice('template.'.length);
  // Core names the subject after its header (the template has no Subject header: checked at start).
  if (field === 'Subject' || field === 'headers.Subject') return 'subject';
  if (field === 'body') return 'text';
  if (field.startsWith('alternatives')) return 'html';
  // The one To address (built from `email` and `name`), in the headers or the envelope.
  if (/^(?:to|recipients)\[\d+\]$/.test(field)) return 'to';
  return field;
}

/** `text` on one line without control characters, cut to `max` characters (first: it may quote 8 MB). */
function oneLine(text: string, max: number): string {
  const cut = text.length > max ? `${text.slice(0, max - 1)}…` : text;
  return cut.replace(/[\s\x00-\x1f\x7f-\x9f]+/g, ' ').trim();
}

/** The record of a recipient whose message could not be built. */
export function invalidRow(row: number, email: string, error: unknown): InvalidRow {
  const err = coerceError(error);
  const validation = err instanceof ValidationError;
  return {
    row,
    email: oneLine(email, ADDRESS_LENGTH),
    field: rowField(validation ? err.field : undefined),
    reason: oneLine(validation ? err.message : `${err.name}: ${err.message}`, REASON_LENGTH),
  };
}

/** A recipient of a chunk, new to the chunk: normalized, as given, and its position in the recipients. */
interface Candidate {
  recipient: { email: string } & TemplateVariables;
  item: CampaignRecipient;
  row: number;
}

/** A recipient as `{ email, ...fields }` with the address trimmed (an unusable item: an empty address). */
export function normalizeRecipient(recipient: CampaignRecipient): { email: string } & TemplateVariables {
  if (typeof recipient === 'string') return { email: recipient.trim() };
  if (recipient && typeof recipient === 'object' && typeof recipient.email === 'string') {
    return { ...recipient, email: recipient.email.trim() };
  }
  return { email: '' };
}

/**
 * One recipient's message as the campaign sends it, checked as enqueue would check it: its empty
 * placeholders (emptyValues 'error'; a bare address has no fields), the template rendered (or the
 * caller's render()), then checkMessage. Throws what makes the recipient an invalid row.
 */
export function buildMessage(
  compiled: CompiledCampaign | undefined,
  options: Pick<CampaignOptions, 'template' | 'render'>,
  recipient: { email: string } & TemplateVariables,
  item: CampaignRecipient,
  maxMessageBytes: number,
): { message: EmailMessage; checked: CheckedMessage } {
  if (compiled && typeof item === 'object') checkPlaceholderValues(compiled.required, recipient);
  const message = options.render
    ? options.render(recipient)
    : renderMessage(compiled as CompiledCampaign, options.template, recipient, maxMessageBytes);
  if (!(message instanceof EmailMessage))
    throw new ValidationError('render() must return an EmailMessage', { field: 'render' });
  return { message, checked: checkMessage(message, { maxMessageBytes }) };
}

/** Whether a placeholder reads a recipient column (not the address, not the signed link). */
function isColumn({ placeholder }: { placeholder: string }): boolean {
  return placeholder !== 'email' && placeholder !== 'unsubscribe_url';
}

/**
 * `sendAt` as epoch ms, or undefined. ValidationError for anything but a valid Date or finite number,
 * and for a time further ahead than half the campaign record's lifetime (15 days): the record must
 * outlive the send long enough to follow it and read its failures.
 */
function sendAtOf(sendAt: Date | number | undefined): number | undefined {
  if (sendAt === undefined) return undefined;
  const at = sendAt instanceof Date ? sendAt.getTime() : sendAt;
  if (typeof at !== 'number' || !Number.isFinite(at)) {
    throw new ValidationError(`sendAt must be a Date or epoch milliseconds (got ${String(sendAt)})`, {
      field: 'sendAt',
    });
  }
  const latest = Date.now() + protocolDefaults.campaignTtl / 2;
  if (at > latest) {
    throw new ValidationError(
      `sendAt ${new Date(at).toISOString()} is too far ahead: at most ${protocolDefaults.campaignTtl / 2 / 86_400_000} days from now`,
      { field: 'sendAt' },
    );
  }
  return Math.round(at);
}

/** The reason an aborted read is recorded with, on one line. */
function abortReason(signal: AbortSignal | undefined): string {
  const reason: unknown = signal?.reason;
  const text =
    reason instanceof Error && reason.name !== 'AbortError'
      ? reason.message
      : typeof reason === 'string'
        ? reason
        : 'reading the recipients was aborted';
  return oneLine(text, REASON_LENGTH);
}

/**
 * The first item of `source` and an iterable of all of it, the first included, read once. A failure
 * reading the first item is thrown by the iterable (where startCampaign records it), not here.
 */
async function peekFirst<T>(
  source: AsyncIterable<T> | Iterable<T>,
): Promise<{ first: T | undefined; rest: AsyncIterable<T> }> {
  const iterator =
    Symbol.asyncIterator in source
      ? (source as AsyncIterable<T>)[Symbol.asyncIterator]()
      : (source as Iterable<T>)[Symbol.iterator]();
  let head: IteratorResult<T> | undefined;
  let failure: { error: unknown } | undefined;
  try {
    head = await iterator.next();
  } catch (error) {
    failure = { error };
  }
  async function* rest(): AsyncGenerator<T> {
    if (failure) throw failure.error;
    try {
      if (!head || head.done) return;
      yield head.value;
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        yield next.value;
      }
    } finally {
      // A reader that stops early (cancel, abort) MUST close the source (a file handle).
      await iterator.return?.();
    }
  }
  return { first: head && !head.done ? head.value : undefined, rest: rest() };
}

async function* chunks<T>(source: AsyncIterable<T> | Iterable<T>, size: number): AsyncGenerator<T[]> {
  let chunk: T[] = [];
  for await (const item of source) {
    chunk.push(item);
    if (chunk.length >= size) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}

/**
 * Starts (or resumes, with the same id) a campaign: reads the recipients as a stream, skips
 * addresses already seen (case-insensitive, across the whole campaign and across restarts), renders
 * each message, and enqueues them in batches with backpressure: at most `maxPending` messages are
 * waiting at any time, so neither Redis nor this process holds the whole list. A recipient whose
 * message cannot be built (bad address, header injection, a field that renders past maxMessageBytes
 * characters, a message over maxMessageBytes, anything else checking it throws) is counted as failed
 * `invalid`, recorded with its row, field and reason ({@link InvalidRow}: `onInvalid`, and the first
 * 100 in campaignStatus().invalidRows), and skipped; the campaign goes on. Resolves once the
 * campaign is registered; `enqueued` resolves when every recipient was read. Throws ValidationError,
 * before writing anything, for a bad id or template
 * (placeholders, fromEmail, replyTo, headers, a non-https unsubscribe URL). Throws DataLossError
 * (EDATALOST), writing nothing, for an id whose record Redis lost (see `startOver`); `enqueued`
 * rejects with it when Redis loses the campaign while its recipients are being read.
 */
export async function startCampaign(producer: Producer, options: CampaignOptions): Promise<CampaignHandle> {
  const id = checkId(options.id ?? randomUUID());
  const compiled = options.render ? undefined : compileCampaign(options, producer.queue, id);
  if (compiled) checkTemplate(compiled, options.template, producer.options.maxMessageBytes);
  let sendAt = sendAtOf(options.sendAt);
  // A placeholder no column fills (`{{ nmae }}`, `{{ name }}` for a column `Name`) would give every
  // recipient a blank: refused before anything is written. The columns are the first recipient's
  // keys unless given; only a template with placeholders beyond {{ email }} needs to look.
  let recipients = options.recipients;
  if (compiled && options.columns !== undefined) checkPlaceholders(options, options.columns);
  else if (compiled && campaignPlaceholders(options.template, options.unsubscribe).some(isColumn)) {
    const peeked = await peekFirst(recipients);
    recipients = peeked.rest;
    if (peeked.first !== null && typeof peeked.first === 'object')
      checkPlaceholders(options, Object.keys(peeked.first));
  }
  const batchSize = producer.options.batchSize;
  const chunkSize = Math.max(1, Math.floor(options.chunkSize ?? batchSize * 10));
  const maxPending = Math.max(chunkSize, Math.floor(options.maxPending ?? batchSize * 20));
  const failSilently = options.failSilently ?? true;
  const redis = registerScripts(producer.redis);
  await producer.ready();
  // The campaign's record, counters and batches live on one shard, fixed at its first start: every
  // script that counts a delivery stays on one slot (and one node of a cluster).
  const shard = consumedShard(await producer.campaignShard(id, { assign: true }), id, producer.layout);
  const keys = shard.keys;
  // A "resume" of a record Redis lost would resend to everyone already delivered (campaign-loss.ts).
  await guardCampaignStart(producer, id, {
    startOver: options.startOver === true,
    name: options.name ?? id,
    keys,
  });
  // A resumed scheduled campaign keeps its time (past by now, perhaps: then at once), unless given anew.
  if (sendAt === undefined) {
    const stored = await redis.hget(keys.campaign(id), FIELD.sendAt);
    if (stored !== null && Number.isFinite(Number(stored))) sendAt = Number(stored);
  }
  const now = Date.now();
  await redis
    .multi()
    .hsetnx(keys.campaign(id), FIELD.state, CAMPAIGN_STATES.running)
    .hsetnx(keys.campaign(id), FIELD.startedAt, String(now))
    .hsetnx(keys.campaign(id), FIELD.name, options.name ?? id)
    .hset(
      keys.campaign(id),
      ...(options.expectedTotal ? [FIELD.expectedTotal, String(options.expectedTotal)] : []),
      ...(sendAt === undefined ? [] : [FIELD.sendAt, String(sendAt)]),
      FIELD.enqueueFinished,
      '0',
    )
    .hdel(keys.campaign(id), FIELD.enqueueError)
    .pexpire(keys.campaign(id), protocolDefaults.campaignTtl)
    .exec();
  // The index of campaigns is queue-wide (home shard): its own command on a sharded queue.
  await redis.sadd(producer.keys.campaigns, id);

  const progress: CampaignEnqueueProgress = { total: 0, queued: 0, invalid: 0, duplicates: 0, suppressed: 0 };
  const suppression = new SuppressionList(producer.redis, producer.keys);
  const seenPrefix = keys.campaignSeen(id);

  async function stateNow(): Promise<string> {
    return (await redis.hget(keys.campaign(id), FIELD.state)) ?? CAMPAIGN_STATES.cancelled;
  }

  async function waitForRoom(): Promise<'ok' | 'cancelled' | 'aborted'> {
    for (;;) {
      if (options.signal?.aborted) return 'aborted';
      const [state, total, sent, failed, cancelled] = await redis.hmget(
        keys.campaign(id),
        FIELD.state,
        FIELD.total,
        FIELD.sent,
        FIELD.failed,
        FIELD.cancelled,
      );
      // A record gone with Redis's data is a loss to report, not a cancel.
      if (state === null) await failIfCampaignLost(producer, id, now);
      if (state === CAMPAIGN_STATES.cancelled || state === null) return 'cancelled';
      // What this process would report of the campaign if Redis lost it now.
      producer.epoch.noteCampaign(id, {
        state,
        total: Number(total ?? 0),
        sent: Number(sent ?? 0),
        failed: Number(failed ?? 0),
        cancelled: Number(cancelled ?? 0),
        seenAt: Date.now(),
      });
      const pending = Number(total ?? 0) - Number(sent ?? 0) - Number(failed ?? 0) - Number(cancelled ?? 0);
      if (state !== CAMPAIGN_STATES.paused && pending + chunkSize <= maxPending) return 'ok';
      await setTimeout(100);
    }
  }

  /**
   * Positions (in `fresh`) of the chunk's suppressed recipients. Decided once per chunk and kept: a
   * chunk read again after its batches were enqueued but before it was counted (a crash) must skip
   * the same recipients, or its counts would not match what was enqueued (sent above total, or a
   * recipient counted queued that never was).
   */
  async function suppressedInChunk(chunkKey: string, fresh: readonly Candidate[]): Promise<Set<number>> {
    const key = keys.campaignChunkSuppressed(id);
    const earlier = await redis.hget(key, chunkKey);
    if (earlier !== null) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(earlier);
      } catch {
        parsed = undefined; // damaged: decided again
      }
      const positions = z.array(z.number().int().nonnegative()).safeParse(parsed);
      if (positions.success) return new Set(positions.data);
    }
    const records = await suppression.lookup(fresh.map((candidate) => candidate.recipient.email));
    const positions = records.flatMap((record, index) => (record === undefined ? [] : [index]));
    await redis
      .multi()
      .hset(key, chunkKey, JSON.stringify(positions))
      .pexpire(key, protocolDefaults.campaignTtl)
      .exec();
    return new Set(positions);
  }

  /** `firstRow`: the 1-based position of `raw[0]` in the recipients. */
  async function enqueueChunk(raw: CampaignRecipient[], ordinal: number, firstRow: number): Promise<void> {
    // Within the chunk first, then against everything seen before (Redis).
    const unique = new Map<string, Candidate>();
    const chunkHash = createHash('sha1').update(`${ordinal}`);
    let duplicates = 0;
    raw.forEach((item, offset) => {
      const recipient = normalizeRecipient(item);
      const key = recipient.email.toLowerCase();
      chunkHash.update(`\n${key}`);
      if (unique.has(key)) duplicates++;
      else unique.set(key, { recipient, item, row: firstRow + offset });
    });
    // The chunk's place in the stream and everything read into it, duplicates included: the same
    // chunk read again (crash, restart) has the same key. A key made of the new addresses only was
    // the same for every chunk made entirely of duplicates, so only the first such chunk counted.
    const chunkKey = chunkHash.digest('hex');
    const candidates = [...unique.values()];
    const slots = candidates.map(({ recipient }) => seenSlot(seenPrefix, recipient.email));
    const seen =
      slots.length > 0
        ? await redis.mailroomSeen(
            slots.length,
            ...slots.map(([bucket]) => bucket),
            ...slots.map(([, field]) => field),
          )
        : [];
    const fresh: typeof candidates = [];
    const freshSlots: [string, Buffer][] = [];
    candidates.forEach((candidate, index) => {
      if (seen[index] === 1) duplicates++;
      else {
        fresh.push(candidate);
        freshSlots.push(slots[index] as [string, Buffer]);
      }
    });
    // Suppressed addresses (bounced, unsubscribed...) are marked seen with the others, counted apart
    // and never rendered.
    const skipped = fresh.length > 0 ? await suppressedInChunk(chunkKey, fresh) : new Set<number>();
    const toSend = fresh.filter((_, index) => !skipped.has(index));
    const suppressed = fresh.length - toSend.length;
    const messages: CheckedMessage[] = [];
    const invalidRows: { row: InvalidRow; item: CampaignRecipient }[] = [];
    const maxMessageBytes = producer.options.maxMessageBytes;
    for (const { recipient, item, row } of toSend) {
      // One recipient's data must never stop the campaign: whatever building or checking its
      // message throws (a field over its cap, a RangeError deep in header encoding) makes it an
      // invalid row, named, and the next recipient goes on. A restart then finds it counted.
      try {
        // Every check enqueue makes (envelope, size cap), here: enqueue rejects a whole call for one
        // bad message, and one oversized personalisation must not stop the campaign. The checked
        // wire form is what gets enqueued: validated and serialized once.
        messages.push(buildMessage(compiled, options, recipient, item, maxMessageBytes).checked);
      } catch (error) {
        if (!isRecipientFault(error, options.render !== undefined)) throw error;
        invalidRows.push({ row: invalidRow(row, recipient.email, error), item });
      }
    }
    const invalid = invalidRows.length;
    const records = invalidRows
      .slice(0, INVALID_ROWS_KEPT)
      .map(({ row }) => JSON.stringify(invalidRowSchema.parse(row)));
    let queued = 0;
    if (messages.length > 0) {
      const result = await producer.enqueue(messages, {
        ...(sendAt === undefined ? {} : { sendAt }),
        campaign: id,
        failSilently,
        idempotencyKey: `campaign:${id}:${chunkKey}`,
      });
      queued = messages.length;
      if (result.messages === 0 && !result.duplicate)
        throw new MailError(`Could not enqueue a chunk of campaign ${id}`, { code: 'EREDIS' });
    }
    const committed = await redis.mailroomCommitChunk(
      keys.campaignChunks(id),
      keys.campaign(id),
      keys.campaignFailures(id),
      keys.campaignInvalid(id),
      chunkKey,
      toSend.length,
      queued,
      invalid,
      duplicates,
      suppressed,
      records.length,
      ...records,
      ...freshSlots.flat(),
    );
    if (committed === 1) {
      progress.total += toSend.length;
      progress.suppressed += suppressed;
      progress.queued += queued;
      progress.invalid += invalid;
      progress.duplicates += duplicates;
      for (const { row, item } of invalidRows) options.onInvalid?.(row, item);
    }
    options.onProgress?.({ ...progress });
  }

  const enqueued = (async () => {
    let stopped: 'done' | 'cancelled' | 'aborted' = 'done';
    let ordinal = 0;
    let row = 1;
    try {
      for await (const chunk of chunks(recipients, chunkSize)) {
        const room = await waitForRoom();
        if (room !== 'ok') {
          stopped = room;
          break;
        }
        await enqueueChunk(chunk, ordinal++, row);
        row += chunk.length;
      }
    } catch (error) {
      // Recorded on the campaign, so that status shows why it stopped instead of "running" forever.
      const reason = (error instanceof Error ? error.message : String(error))
        .replace(/\s+/g, ' ')
        .slice(0, 300);
      await redis
        .hset(
          keys.campaign(id),
          FIELD.enqueueFinished,
          '1',
          FIELD.enqueueStoppedBy,
          'error',
          FIELD.enqueueError,
          reason,
        )
        .catch(() => {});
      throw error;
    }
    if (stopped === 'done' && (await stateNow()) === CAMPAIGN_STATES.cancelled) stopped = 'cancelled';
    await redis.hset(
      keys.campaign(id),
      FIELD.enqueueFinished,
      '1',
      FIELD.enqueueStoppedBy,
      stopped,
      // Why reading stopped early: status shows the campaign `interrupted` with it, not `completed`.
      ...(stopped === 'aborted' ? [FIELD.enqueueError, abortReason(options.signal)] : []),
    );
    return { ...progress, stopped };
  })();
  // The caller may never await `enqueued`; its failure must not become an unhandled rejection.
  enqueued.catch(() => {});
  return { id, enqueued };
}

async function transition(
  producer: Producer,
  id: string,
  to: StoredCampaignState,
  from: StoredCampaignState[],
): Promise<CampaignState> {
  const redis = registerScripts(producer.redis);
  await producer.ready();
  const { keys } = await producer.campaignShard(checkId(id));
  const found = await redis.mailroomTransition(keys.campaign(id), to, ...from, String(Date.now()));
  // "No campaign", or "lost with Redis's data at T" when the epoch marker says so.
  if (found === '') throw await missingCampaignError(producer, id);
  return (from.includes(found as StoredCampaignState) ? to : found) as CampaignState;
}

/** Pauses a running campaign: workers stop sending its messages within one message. Returns the state now. */
export function pauseCampaign(producer: Producer, id: string): Promise<CampaignState> {
  return transition(producer, id, CAMPAIGN_STATES.paused, [CAMPAIGN_STATES.running]);
}

/** Resumes a paused campaign. Returns the state now. */
export function resumeCampaign(producer: Producer, id: string): Promise<CampaignState> {
  return transition(producer, id, CAMPAIGN_STATES.running, [CAMPAIGN_STATES.paused]);
}

/** Cancels a campaign: nothing more is enqueued or sent; unsent messages are counted as cancelled. */
export function cancelCampaign(producer: Producer, id: string): Promise<CampaignState> {
  return transition(producer, id, CAMPAIGN_STATES.cancelled, [
    CAMPAIGN_STATES.running,
    CAMPAIGN_STATES.paused,
  ]);
}

const RATE_WINDOW_SECONDS = 10;

/**
 * Reads a campaign's progress (any process). Throws MailError ENOTFOUND for an unknown id, and
 * DataLossError (EDATALOST) for one whose record was lost with Redis's data (saying when).
 */
export async function campaignStatus(producer: Producer, id: string): Promise<CampaignStatus> {
  await producer.ready();
  const { keys } = await producer.campaignShard(checkId(id));
  const nowSecond = Math.floor(Date.now() / 1000);
  const seconds = Array.from({ length: RATE_WINDOW_SECONDS }, (_, i) => String(nowSecond - 1 - i));
  const [hash, failures, rates, invalidRecords] = (await producer.redis
    .multi()
    .hgetall(keys.campaign(checkId(id)))
    .hgetall(keys.campaignFailures(id))
    .hmget(keys.campaignRate(id), ...seconds)
    .lrange(keys.campaignInvalid(id), 0, INVALID_ROWS_KEPT - 1)
    .exec()) as [
    [null, Record<string, string>],
    [null, Record<string, string>],
    [null, (string | null)[]],
    [null, string[]],
  ];
  const data = hash[1];
  // "No campaign", or "lost with Redis's data at T" when the epoch marker says so.
  const field = (name: CampaignField): string | undefined => data[name];
  const stored = field(FIELD.state);
  if (!stored) throw await missingCampaignError(producer, id);
  const number = (name: CampaignField) => Number(field(name) ?? 0);
  const total = number(FIELD.total);
  const sent = number(FIELD.sent);
  const failed = number(FIELD.failed);
  const cancelled = number(FIELD.cancelled);
  const enqueueFinished = field(FIELD.enqueueFinished) === '1';
  const expectedTotalText = field(FIELD.expectedTotal);
  const expectedTotal = expectedTotalText ? Number(expectedTotalText) : undefined;
  const enqueueError = field(FIELD.enqueueError);
  const cancelledAt = field(FIELD.cancelledAt);
  const duplicates = number(FIELD.duplicates);
  const suppressed = number(FIELD.suppressed);
  // Lines not read yet: the expected total counts every line, skipped ones too.
  const unread =
    !enqueueFinished && expectedTotal !== undefined
      ? Math.max(0, expectedTotal - total - duplicates - suppressed)
      : 0;
  const remaining =
    stored === CAMPAIGN_STATES.cancelled
      ? Math.max(0, total - sent - failed - cancelled)
      : total - sent - failed - cancelled + unread;
  const startedAt = number(FIELD.startedAt);
  const window = Math.min(RATE_WINDOW_SECONDS, Math.max(1, nowSecond - Math.floor(startedAt / 1000)));
  const recent = rates[1].slice(0, window).reduce((sum, value) => sum + Number(value ?? 0), 0);
  const rate = recent / window;
  let state = stored as CampaignState;
  if (state !== CAMPAIGN_STATES.cancelled && enqueueFinished && remaining === 0)
    state = enqueueError ? 'interrupted' : 'completed';
  const sendAtText = field(FIELD.sendAt);
  const sendAt = sendAtText === undefined ? undefined : Number(sendAtText);
  // Only when nothing was sent lately does the queue say whether it just waits for retries.
  const retryAt =
    stored === CAMPAIGN_STATES.running && remaining > 0 && rate === 0
      ? await nextRetryOnly(producer, keys)
      : undefined;
  const eta = estimateEta({
    remaining,
    recentRate: rate,
    settled: sent + failed,
    startedAt,
    now: Date.now(),
    sendAt,
    retryAt,
  });
  // A campaign that goes on has no finish time, however long ago its last message settled.
  const settledAt = state === 'completed' || state === 'interrupted' ? field(FIELD.lastSettledAt) : undefined;
  return {
    id,
    name: field(FIELD.name) ?? id,
    state,
    total,
    expectedTotal,
    queued: number(FIELD.queued),
    sent,
    failed,
    failedByReason: Object.fromEntries(
      Object.entries(failures[1]).map(([reason, count]) => [reason, Number(count)]),
    ),
    cancelled,
    duplicates,
    suppressed,
    remaining,
    rate,
    etaSeconds: eta.seconds,
    etaBasis: eta.basis,
    retryAt,
    enqueueFinished,
    enqueueError,
    invalidRows: invalidRecords[1].flatMap((record) => {
      // Read back with the schema that wrote it; a record that does not parse is left out.
      try {
        const parsed = invalidRowSchema.safeParse(JSON.parse(record));
        return parsed.success ? [parsed.data] : [];
      } catch {
        return [];
      }
    }),
    startedAt,
    finishedAt: cancelledAt ? Number(cancelledAt) : settledAt ? Number(settledAt) : undefined,
    sendAt,
  };
}

/**
 * When the queue holds nothing ready to send (no waiting, prioritized or active batch) but batches
 * waiting for a retry: when the first of those is due (epoch ms; BullMQ's delayed score is the due
 * time x 0x1000 + a counter). Undefined otherwise.
 */
async function nextRetryOnly(producer: Producer, keys: QueueKeys): Promise<number | undefined> {
  const [waiting, active, prioritized, first] = (
    (await producer.redis
      .pipeline()
      .llen(keys.jobSet('wait'))
      .llen(keys.jobSet('active'))
      .zcard(keys.jobSet('prioritized'))
      .zrange(keys.jobSet('delayed'), 0, 0, 'WITHSCORES')
      .exec()) ?? []
  ).map(([error, value]) => (error ? undefined : value)) as [
    number | undefined,
    number | undefined,
    number | undefined,
    string[] | undefined,
  ];
  if (waiting !== 0 || active !== 0 || prioritized !== 0 || first?.[1] === undefined) return undefined;
  return Math.floor(Number(first[1]) / 0x1000);
}

/** Ids of the campaigns known on the producer's queue. */
export async function listCampaigns(producer: Producer): Promise<string[]> {
  await producer.ready();
  return (await producer.redis.smembers(producer.keys.campaigns)).sort();
}
