/** The wire format: a versioned, JSON-safe, zod-validated form of a message (toWire, decodeWire). */
import { z } from 'zod';
import { ValidationError } from './errors.js';
import {
  type AlternativeInput,
  type AttachmentContent,
  type AttachmentInput,
  EmailAlternative,
  EmailAttachment,
  EmailMessage,
  EmailMultiAlternatives,
  type HeaderValue,
  MAX_MESSAGE_NESTING,
  MimePart,
  normalizeAlternative,
} from './message.js';

/** The wire format version this build writes and reads. */
export const WIRE_VERSION = 1;

/** Text stays text; bytes travel as base64 (byte-exact). */
export type WireContent = { text: string } | { base64: string };

/** An attachment's content: text, bytes, or a nested message (message/rfc822). */
export type WireAttachmentContent = WireContent | { message: WireMessageBody };

/**
 * A header value: a string, a Date (ISO 8601, millisecond precision) or a number. Numbers travel as
 * their decimal text, which keeps -0, Infinity and NaN (JSON has none of them).
 */
export type WireHeaderValue = string | { date: string } | { number: string };

/** An attachment on the wire: a Django (filename, content, mimetype) entry or a MimePart. */
export type WireAttachment =
  | { type: 'attachment'; filename: string | null; mimetype: string | null; content: WireAttachmentContent }
  | {
      type: 'part';
      mimetype: string;
      content: WireContent;
      charset: string | null;
      disposition: 'inline' | 'attachment' | null;
      filename: string | null;
      contentId: string | null;
      headers: Record<string, string>;
    };

/** Every field of an EmailMessage / EmailMultiAlternatives, JSON-safe. Never a connection or a credential. */
export interface WireMessageBody {
  kind: 'message' | 'alternatives';
  subject: string;
  body: string;
  fromEmail: string;
  to: string[];
  cc: string[];
  bcc: string[];
  replyTo: string[];
  /** Extra headers as [name, value] pairs, in order. */
  headers: [string, WireHeaderValue][];
  contentSubtype: string;
  mixedSubtype: string;
  alternativeSubtype?: string | undefined;
  encoding: string | null;
  alternatives?: { content: WireContent; mimetype: string }[] | undefined;
  attachments: WireAttachment[];
  /** The sender's failSilently intent: failures are recorded but do not dead-letter the job. */
  failSilently?: boolean | undefined;
}

/** A top-level wire message: {@link WireMessageBody} with the format version `v`. */
export interface WireMessage extends WireMessageBody {
  v: typeof WIRE_VERSION;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const wireContent = z.union([
  z.strictObject({ text: z.string() }),
  z.strictObject({ base64: z.string().regex(BASE64, 'must be base64') }),
]);
// ECMA-262 (Date.prototype.toISOString): years outside 0000-9999 are written with a sign and six
// digits, which z.iso.datetime() refuses; message() renders such dates, so the wire must carry them.
const EXPANDED_YEAR_DATE = /^[+-]\d{6}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const headerValue = z.union([
  z.string(),
  z.strictObject({ date: z.union([z.iso.datetime(), z.string().regex(EXPANDED_YEAR_DATE)]) }),
  z.strictObject({
    number: z.string().regex(/^(-?(\d+(\.\d+)?(e[+-]?\d+)?|Infinity)|NaN)$/i, 'must be a number'),
  }),
]);
const nullableString = z.string().nullable();

const attachmentSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('attachment'),
    filename: nullableString,
    mimetype: nullableString,
    content: z.union([wireContent, z.strictObject({ message: z.lazy(() => wireBody) })]),
  }),
  z.strictObject({
    type: z.literal('part'),
    mimetype: z.string(),
    content: wireContent,
    charset: nullableString,
    disposition: z.enum(['inline', 'attachment']).nullable(),
    filename: nullableString,
    contentId: nullableString,
    headers: z.record(z.string(), z.string()),
  }),
]);

const bodyShape = {
  kind: z.enum(['message', 'alternatives']),
  subject: z.string(),
  body: z.string(),
  fromEmail: z.string(),
  to: z.array(z.string()),
  cc: z.array(z.string()),
  bcc: z.array(z.string()),
  replyTo: z.array(z.string()),
  headers: z.array(z.tuple([z.string(), headerValue])),
  contentSubtype: z.string(),
  mixedSubtype: z.string(),
  alternativeSubtype: z.string().optional(),
  encoding: nullableString,
  alternatives: z.array(z.strictObject({ content: wireContent, mimetype: z.string() })).optional(),
  attachments: z.array(attachmentSchema),
  failSilently: z.boolean().optional(),
};

const wireBody: z.ZodType<WireMessageBody> = z.strictObject(bodyShape);

/** The zod schema of a top-level wire message: what {@link toWire} writes and {@link decodeWire} reads. */
export const wireMessageSchema: z.ZodType<WireMessage> = z.strictObject({
  v: z.literal(WIRE_VERSION),
  ...bodyShape,
});

function encodeContent(content: string | Uint8Array): WireContent {
  return typeof content === 'string'
    ? { text: content }
    : { base64: Buffer.from(content).toString('base64') };
}

function decodeContent(content: WireContent): string | Buffer {
  return 'text' in content ? content.text : Buffer.from(content.base64, 'base64');
}

function encodeHeader(value: HeaderValue, name: string): WireHeaderValue {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime()))
      throw new ValidationError(`headers.${name} is an invalid Date`, { field: `headers.${name}` });
    return { date: value.toISOString() };
  }
  // JSON has no Infinity or NaN (JSON.stringify writes null); their text renders the same header.
  if (typeof value === 'number') return { number: Object.is(value, -0) ? '-0' : String(value) };
  return String(value);
}

function encodeAttachment(entry: AttachmentInput, index: number, depth: number): WireAttachment {
  if (entry instanceof MimePart) {
    return {
      type: 'part',
      mimetype: entry.mimetype,
      content: encodeContent(entry.content),
      charset: entry.charset,
      disposition: entry.disposition,
      filename: entry.filename,
      contentId: entry.contentId,
      headers: { ...entry.headers },
    };
  }
  const [filename, content, mimetype] =
    entry instanceof EmailAttachment ? [entry.filename, entry.content, entry.mimetype] : entry;
  if (content === undefined || content === null) {
    throw new ValidationError(`attachments[${index}]: content is required`, {
      field: `attachments[${index}]`,
    });
  }
  return {
    type: 'attachment',
    filename: filename ?? null,
    mimetype: mimetype ?? null,
    content:
      content instanceof EmailMessage ? { message: encodeBody(content, depth + 1) } : encodeContent(content),
  };
}

function encodeBody(message: EmailMessage, depth = 0): WireMessageBody {
  if (depth > MAX_MESSAGE_NESTING) {
    throw new ValidationError(
      `message/rfc822 attachments nest more than ${MAX_MESSAGE_NESTING} levels deep`,
      { field: 'attachments' },
    );
  }
  const body: WireMessageBody = {
    kind: message instanceof EmailMultiAlternatives ? 'alternatives' : 'message',
    subject: message.subject,
    body: message.body,
    fromEmail: message.fromEmail,
    to: [...message.to],
    cc: [...message.cc],
    bcc: [...message.bcc],
    replyTo: [...message.replyTo],
    headers: Object.entries(message.extraHeaders).map(([name, value]) => [name, encodeHeader(value, name)]),
    contentSubtype: message.contentSubtype,
    mixedSubtype: message.mixedSubtype,
    encoding: message.encoding,
    attachments: message.attachments.map((entry, index) => encodeAttachment(entry, index, depth)),
  };
  if (message instanceof EmailMultiAlternatives) {
    body.alternativeSubtype = message.alternativeSubtype;
    body.alternatives = message.alternatives.map((entry, index) => {
      const { content, mimetype } = normalizeAlternative(entry, index);
      return { content: encodeContent(content), mimetype };
    });
  }
  return body;
}

/** Options of {@link toWire}. */
export interface ToWireOptions {
  /** Record the sender's failSilently intent with the message. */
  failSilently?: boolean;
}

/**
 * Serializes a message to the versioned, JSON-safe wire form: every field, binary content as base64,
 * Date headers as ISO strings, nested message/rfc822 attachments recursively. The connection (and so
 * any credential) is never included. Throws {@link ValidationError} for content that cannot be encoded.
 */
export function toWire(message: EmailMessage, options: ToWireOptions = {}): WireMessage {
  const wire: WireMessage = { v: WIRE_VERSION, ...encodeBody(message) };
  if (options.failSilently !== undefined) wire.failSilently = options.failSilently;
  return wire;
}

function decodeBody(body: WireMessageBody, where: string): EmailMessage {
  // fromEntries defines own properties, so even a header named "__proto__" survives as a header.
  const headers: Record<string, HeaderValue> = Object.fromEntries(
    body.headers.map(([name, value]) => [
      name,
      typeof value === 'string' ? value : 'date' in value ? new Date(value.date) : Number(value.number),
    ]),
  );
  const attachments: AttachmentInput[] = body.attachments.map((entry, index) => {
    const field = `${where}.attachments[${index}]`;
    if (entry.type === 'part') {
      try {
        return new MimePart({
          content: decodeContent(entry.content),
          mimetype: entry.mimetype,
          ...(entry.charset === null ? {} : { charset: entry.charset }),
          disposition: entry.disposition,
          filename: entry.filename,
          contentId: entry.contentId,
          headers: entry.headers,
        });
      } catch (error) {
        // MimePart checks its mimetype itself (validation lives where the thing is built); name
        // the wire field instead of the constructor's.
        if (!(error instanceof ValidationError)) throw error;
        throw new ValidationError(`Invalid ${field}.mimetype: ${error.message}`, {
          field: `${field}.mimetype`,
          cause: error,
        });
      }
    }
    const content: AttachmentContent =
      'message' in entry.content
        ? decodeBody(entry.content.message, `${field}.content.message`)
        : decodeContent(entry.content);
    return new EmailAttachment(entry.filename, content, entry.mimetype as string);
  });
  const init = {
    subject: body.subject,
    body: body.body,
    fromEmail: body.fromEmail,
    to: body.to,
    cc: body.cc,
    bcc: body.bcc,
    replyTo: body.replyTo,
    headers,
    attachments,
  };
  let message: EmailMessage;
  if (body.kind === 'alternatives') {
    const alternatives: AlternativeInput[] = (body.alternatives ?? []).map(
      (entry) => new EmailAlternative(decodeContent(entry.content), entry.mimetype),
    );
    const multi = new EmailMultiAlternatives({ ...init, alternatives });
    if (body.alternativeSubtype !== undefined) multi.alternativeSubtype = body.alternativeSubtype;
    message = multi;
  } else {
    message = new EmailMessage(init);
  }
  message.contentSubtype = body.contentSubtype;
  message.mixedSubtype = body.mixedSubtype;
  message.encoding = body.encoding;
  return message;
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (out, key) => (typeof key === 'number' ? `${out}[${key}]` : out ? `${out}.${String(key)}` : String(key)),
    '',
  );
}

/**
 * Where an issue really is. Zod reports a failed union as one "Invalid input" at the union, and an
 * unknown key at its parent object; descend into the branch that came closest (fewest issues, then
 * the deepest) and onto the key, so that e.g. a nested message's bad `to[1]` is named as such.
 */
function culprit(
  issue: z.core.$ZodIssue,
  prefix: readonly PropertyKey[] = [],
): { path: PropertyKey[]; message: string } {
  const path = [...prefix, ...issue.path];
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) {
    return { path: [...path, issue.keys[0]], message: issue.message };
  }
  if (issue.code === 'invalid_union') {
    const depth = (branch: z.core.$ZodIssue[]) => branch[0]?.path.length ?? 0;
    const closest = issue.errors
      .filter((branch) => branch.length > 0)
      .reduce<z.core.$ZodIssue[] | undefined>(
        (best, branch) =>
          !best ||
          branch.length < best.length ||
          (branch.length === best.length && depth(branch) > depth(best))
            ? branch
            : best,
        undefined,
      );
    if (closest?.[0]) return culprit(closest[0], path);
  }
  return { path, message: issue.message };
}

/** Parses with a zod schema; failure is a ValidationError naming the first bad field (prefixed by `where`). */
export function parseWith<T>(schema: z.ZodType<T>, data: unknown, where: string): T {
  const parsed = schema.safeParse(data);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const found = issue ? culprit(issue) : { path: [], message: 'malformed' };
  const path = formatPath(found.path);
  const field = path ? `${where}.${path}` : where;
  throw new ValidationError(`Invalid ${field}: ${found.message}`, { field });
}

/** Checks the `v` field first, so an unknown version gets its own clear error. */
export function checkWireVersion(data: unknown, where = 'message'): void {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new ValidationError(
      `Invalid ${where}: expected a wire message object, got ${Array.isArray(data) ? 'array' : typeof data}`,
      {
        field: where,
      },
    );
  }
  const version = (data as { v?: unknown }).v;
  if (version !== WIRE_VERSION) {
    throw new ValidationError(
      `Unsupported wire format version ${JSON.stringify(version)} in ${where}.v; this build reads v${WIRE_VERSION}`,
      { field: `${where}.v` },
    );
  }
}

/**
 * Refuses wire data whose message/rfc822 attachments nest deeper than {@link MAX_MESSAGE_NESTING},
 * before the (recursive) schema walks it: a hand-made job nested a few hundred levels would
 * otherwise overflow the decoder's stack. Iterative, and looks only at the nesting path.
 */
function checkWireNesting(data: unknown, where: string): void {
  const stack: { body: unknown; path: string; depth: number }[] = [{ body: data, path: where, depth: 0 }];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const attachments = (next.body as { attachments?: unknown } | null)?.attachments;
    if (!Array.isArray(attachments)) continue;
    attachments.forEach((entry, index) => {
      const nested = (entry as { content?: { message?: unknown } } | null)?.content?.message;
      if (nested === undefined || next === undefined) return;
      const path = `${next.path}.attachments[${index}].content.message`;
      if (next.depth + 1 > MAX_MESSAGE_NESTING) {
        throw new ValidationError(
          `Invalid ${next.path}.attachments[${index}]: message/rfc822 attachments nest more than ${MAX_MESSAGE_NESTING} levels deep`,
          { field: `${next.path}.attachments[${index}]` },
        );
      }
      stack.push({ body: nested, path, depth: next.depth + 1 });
    });
  }
}

/**
 * Validates wire data with the same zod schema that describes what toWire writes and rebuilds the
 * message (EmailMessage or EmailMultiAlternatives) plus the failSilently intent. Malformed data or an
 * unknown version is a {@link ValidationError} naming the field; never a crash.
 */
export function decodeWire(
  data: unknown,
  where = 'message',
): { message: EmailMessage; failSilently: boolean } {
  checkWireVersion(data, where);
  checkWireNesting(data, where);
  const wire = parseWith(wireMessageSchema, data, where);
  return { message: decodeBody(wire, where), failSilently: wire.failSilently ?? false };
}

/** {@link decodeWire} without the failSilently intent: `fromWire(toWire(m))` is a copy of m. */
export function fromWire(data: unknown): EmailMessage {
  return decodeWire(data).message;
}
