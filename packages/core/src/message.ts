/** Django's EmailMessage and EmailMultiAlternatives: the message model, its checks and its rendering. */
import { isAscii } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { isUtf8AddrSpec, type ParsedAddress, parseAddress, parseAddressList } from './address.js';
import type { BaseEmailBackend } from './backends/base.js';
import { getConnection } from './backends/registry.js';
import { canEncode, encodeText, toCrlf } from './encoding.js';
import { ValidationError } from './errors.js';
import { checkMimeToken } from './header-text.js';
import {
  ADDRESS_HEADERS,
  formatDate,
  makeMessageId,
  type RenderedHeader,
  renderAddressHeader,
  renderHeader,
  Utf8HeaderLines,
} from './headers.js';
import {
  binaryNode,
  type MimeNode,
  multipartNode,
  type PartExtras,
  serialize,
  textNode,
  verbatimNode,
} from './mime.js';
import { DEFAULT_ATTACHMENT_MIME_TYPE, guessMimeType } from './mimetypes.js';
import { settings } from './settings.js';

/** A value of an extra header: text, or a Date rendered as an RFC 5322 date. */
export type HeaderValue = string | Date | number;

/** What an attachment may hold: text, bytes, or (for message/rfc822) a whole EmailMessage. */
export type AttachmentContent = string | Uint8Array | EmailMessage;

/** Django's EmailAttachment named tuple: `filename`, `content`, `mimetype`. */
export class EmailAttachment {
  constructor(
    public filename: string | null,
    public content: AttachmentContent,
    public mimetype: string,
  ) {}
}

/** Django's EmailAlternative named tuple: `content`, `mimetype`. */
export class EmailAlternative {
  constructor(
    public content: string | Uint8Array,
    public mimetype: string,
  ) {}
}

/** Options of a {@link MimePart}. */
export interface MimePartOptions {
  /** The part's content: text for text/*, bytes for anything else (text is then sent as UTF-8). */
  content: string | Uint8Array;
  /** Full MIME type. Default `text/plain` for text content, `application/octet-stream` for bytes. */
  mimetype?: string;
  /** Charset of text content. Default: the message's encoding. */
  charset?: string;
  /** `inline` or `attachment`; omitted when null. */
  disposition?: 'inline' | 'attachment' | null;
  /** File name in Content-Disposition (RFC 2231 when non-ASCII). */
  filename?: string | null;
  /** Content-ID, with or without angle brackets (for `cid:` references from HTML). */
  contentId?: string | null;
  /** Further headers of the part, validated like message headers. */
  headers?: Record<string, string>;
}

/**
 * A ready-made MIME part attached verbatim with its own headers (Django 6's `attach(MIMEPart)`),
 * e.g. an inline image: `new MimePart({ content: png, mimetype: 'image/png', disposition: 'inline',
 * contentId: 'logo@example.com', filename: 'logo.png' })`.
 */
export class MimePart {
  content: string | Uint8Array;
  mimetype: string;
  charset: string | null;
  disposition: 'inline' | 'attachment' | null;
  filename: string | null;
  contentId: string | null;
  headers: Record<string, string>;

  constructor(options: MimePartOptions) {
    if (options?.content === undefined || options.content === null) {
      throw new ValidationError('MimePart: content is required', { field: 'content' });
    }
    checkContent(options.content, 'MimePart.content', false);
    this.content = options.content;
    this.mimetype =
      options.mimetype ?? (typeof options.content === 'string' ? 'text/plain' : DEFAULT_ATTACHMENT_MIME_TYPE);
    checkMimetype(this.mimetype, 'MimePart.mimetype');
    this.charset = options.charset ?? null;
    this.disposition = options.disposition ?? null;
    this.filename = options.filename ?? null;
    this.contentId = options.contentId ?? null;
    this.headers = { ...(options.headers ?? {}) };
  }
}

/** An attachment entry as accepted by the constructor: an object, a MimePart, or a Django-style tuple. */
export type AttachmentInput =
  | EmailAttachment
  | MimePart
  | [filename: string | null, content: AttachmentContent, mimetype?: string | null];

/** An alternative as accepted by the constructor: an object or a `[content, mimetype]` tuple. */
export type AlternativeInput = EmailAlternative | [content: string | Uint8Array, mimetype: string];

/** Constructor options of {@link EmailMessage} (every one optional). */
export interface EmailMessageOptions {
  subject?: string;
  body?: string;
  /** Sender; default DEFAULT_FROM_EMAIL. */
  fromEmail?: string | null;
  to?: readonly string[] | null;
  cc?: readonly string[] | null;
  bcc?: readonly string[] | null;
  replyTo?: readonly string[] | null;
  /** Backend used by send(); default getConnection(). */
  connection?: BaseEmailBackend | null;
  attachments?: readonly AttachmentInput[] | null;
  /** Extra headers; From, To, Cc and Reply-To here override the header (not the envelope). */
  headers?: Record<string, HeaderValue> | null;
}

/** Constructor options of {@link EmailMultiAlternatives}. */
export interface EmailMultiAlternativesOptions extends EmailMessageOptions {
  alternatives?: readonly AlternativeInput[] | null;
}

function checkMimetype(mimetype: unknown, field: string): asserts mimetype is string {
  checkMimeToken(mimetype, field, 'type');
}

/**
 * How deep message/rfc822 attachments may nest (a forward of a forward...). Real mail nests a few
 * levels; the cap keeps a hostile message from overflowing the stack of whoever renders or
 * decodes it, and catches a message attached to itself.
 */
export const MAX_MESSAGE_NESTING = 16;

// Depth of the message() call being rendered: message() is synchronous, so one counter is exact.
let renderingDepth = 0;

/** RFC 5321 §4.5.3.1.6: a line of text is at most 1000 octets with its CRLF. */
const MAX_WIRE_LINE = 998;

/**
 * RFC 2046 §5.2.1 forbids encoding a message/rfc822 body, so it must already be sendable as it is:
 * no NUL (RFC 2045 §2.7-2.8) and no line longer than SMTP allows. Such a message is refused here
 * rather than sent broken or under a wrong label; it can be attached as application/octet-stream.
 */
function checkNestedMessageBytes(bytes: Buffer, field: string): void {
  let problem: string | undefined;
  if (bytes.indexOf(0) !== -1) problem = 'holds a NUL byte';
  for (let start = 0; problem === undefined && start < bytes.length; ) {
    let end = bytes.indexOf(10, start);
    if (end === -1) end = bytes.length;
    const length = end - start - (end > start && bytes[end - 1] === 13 ? 1 : 0);
    if (length > MAX_WIRE_LINE) problem = `has a line of ${length} octets (at most ${MAX_WIRE_LINE})`;
    start = end + 1;
  }
  if (problem !== undefined) {
    throw new ValidationError(
      `${field}: a message/rfc822 attachment ${problem}; it cannot be encoded (RFC 2046), so attach it as application/octet-stream instead`,
      { field },
    );
  }
}

/** Content must be text or bytes (or, for an attachment, an EmailMessage to attach as message/rfc822). */
function checkContent(content: unknown, field: string, messageAllowed: boolean): void {
  const ok =
    typeof content === 'string' ||
    content instanceof Uint8Array ||
    (messageAllowed && content instanceof EmailMessage);
  if (!ok) {
    throw new ValidationError(
      `${field} must be text or bytes${messageAllowed ? ' (or an EmailMessage)' : ''}`,
      {
        field,
      },
    );
  }
}

function addressListArgument(value: unknown, argument: string): string[] {
  if (value === undefined || value === null) return [];
  if (typeof value === 'string') {
    throw new TypeError(`${argument} must be an array of addresses, not a string`);
  }
  if (!Array.isArray(value)) throw new TypeError(`${argument} must be an array of addresses`);
  return [...value] as string[];
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Django's rule: text/* bytes are decoded as UTF-8; bytes that are not UTF-8 make it application/octet-stream. */
function settleTextContent(
  content: AttachmentContent,
  mimetype: string,
): { content: AttachmentContent; mimetype: string } {
  if (mimetype.startsWith('text/') && content instanceof Uint8Array) {
    try {
      return { content: utf8Strict.decode(content), mimetype };
    } catch {
      return { content, mimetype: DEFAULT_ATTACHMENT_MIME_TYPE };
    }
  }
  return { content, mimetype };
}

function toBuffer(content: string | Uint8Array): Buffer {
  return typeof content === 'string'
    ? Buffer.from(content, 'utf8')
    : Buffer.from(content.buffer, content.byteOffset, content.byteLength);
}

function isTuple(value: unknown): value is unknown[] {
  return Array.isArray(value);
}

/**
 * Django's EmailMessage. Every attribute may be changed after construction and before
 * {@link EmailMessage.message} / {@link EmailMessage.send}.
 */
export class EmailMessage {
  /** Subtype of the main body: `plain` (default) or `html`. */
  contentSubtype = 'plain';
  /** Subtype of the multipart that wraps body and attachments. */
  mixedSubtype = 'mixed';
  /** Body charset; null means DEFAULT_CHARSET. */
  encoding: string | null = null;
  subject: string;
  body: string;
  fromEmail: string;
  /** Extra headers (Django's `extra_headers`); also reachable as `headers`. */
  extraHeaders: Record<string, HeaderValue>;
  attachments: AttachmentInput[];
  connection: BaseEmailBackend | null;
  #to: string[] = [];
  #cc: string[] = [];
  #bcc: string[] = [];
  #replyTo: string[] = [];

  constructor(options?: EmailMessageOptions);
  constructor(
    subject?: string,
    body?: string,
    fromEmail?: string | null,
    to?: readonly string[] | null,
    options?: Omit<EmailMessageOptions, 'subject' | 'body' | 'fromEmail' | 'to'>,
  );
  constructor(
    subjectOrOptions?: string | EmailMessageOptions,
    body?: string,
    fromEmail?: string | null,
    to?: readonly string[] | null,
    options: Omit<EmailMessageOptions, 'subject' | 'body' | 'fromEmail' | 'to'> = {},
  ) {
    const init: EmailMessageOptions =
      typeof subjectOrOptions === 'object' && subjectOrOptions !== null
        ? subjectOrOptions
        : {
            subject: subjectOrOptions ?? '',
            body: body ?? '',
            fromEmail: fromEmail ?? null,
            to: to ?? null,
            ...options,
          };
    this.subject = init.subject ?? '';
    this.body = init.body ?? '';
    this.fromEmail = init.fromEmail || settings.DEFAULT_FROM_EMAIL;
    this.to = init.to as string[];
    this.cc = init.cc as string[];
    this.bcc = init.bcc as string[];
    this.replyTo = init.replyTo as string[];
    this.extraHeaders = { ...(init.headers ?? {}) };
    this.attachments = [...(init.attachments ?? [])];
    this.connection = init.connection ?? null;
  }

  /** Primary recipients. Assigning a string is a TypeError. */
  get to(): string[] {
    return this.#to;
  }
  set to(value: readonly string[] | null | undefined) {
    this.#to = addressListArgument(value, 'to');
  }
  get cc(): string[] {
    return this.#cc;
  }
  set cc(value: readonly string[] | null | undefined) {
    this.#cc = addressListArgument(value, 'cc');
  }
  /** Blind copies: in the envelope, never in the headers. */
  get bcc(): string[] {
    return this.#bcc;
  }
  set bcc(value: readonly string[] | null | undefined) {
    this.#bcc = addressListArgument(value, 'bcc');
  }
  get replyTo(): string[] {
    return this.#replyTo;
  }
  set replyTo(value: readonly string[] | null | undefined) {
    // Named as the caller wrote it (SPEC §2: Django's reply_to is replyTo here).
    this.#replyTo = addressListArgument(value, 'replyTo');
  }
  /** Alias of {@link EmailMessage.extraHeaders} under the constructor's name. */
  get headers(): Record<string, HeaderValue> {
    return this.extraHeaders;
  }
  set headers(value: Record<string, HeaderValue>) {
    this.extraHeaders = value;
  }

  /** Every recipient, to + cc + bcc in that order, empty entries dropped (the envelope's RCPT TO list). */
  recipients(): string[] {
    return [...this.#to, ...this.#cc, ...this.#bcc].filter((address) => address);
  }

  /**
   * Attaches a file: `attach(filename, content, mimetype?)`, or `attach(part)` with a
   * {@link MimePart}. The type is guessed from the filename when not given; text/* bytes that are
   * not UTF-8 become application/octet-stream. Missing content is a {@link ValidationError}.
   */
  attach(part: MimePart): void;
  attach(filename: string | null, content: AttachmentContent, mimetype?: string | null): void;
  attach(
    filenameOrPart: string | null | MimePart,
    content?: AttachmentContent,
    mimetype?: string | null,
  ): void {
    if (filenameOrPart instanceof MimePart) {
      if (content !== undefined || (mimetype !== undefined && mimetype !== null)) {
        throw new ValidationError('attach(): content and mimetype must not be given with a MimePart');
      }
      this.attachments.push(filenameOrPart);
      return;
    }
    if (content === undefined || content === null) {
      throw new ValidationError(
        `attach(): content is required (filename ${JSON.stringify(filenameOrPart)})`,
        {
          field: 'content',
        },
      );
    }
    const type = mimetype || guessMimeType(filenameOrPart) || DEFAULT_ATTACHMENT_MIME_TYPE;
    checkMimetype(type, 'attach(): mimetype');
    const settled = settleTextContent(content, type);
    this.attachments.push(new EmailAttachment(filenameOrPart, settled.content, settled.mimetype));
  }

  /** Attaches a file from disk (read now, synchronously, as Django does); the file name becomes the attachment name. */
  attachFile(path: string, mimetype?: string | null): void {
    this.attach(basename(path), readFileSync(path), mimetype ?? null);
  }

  /** The backend send() uses: the message's own, or a new default one. */
  getConnection(failSilently = false): BaseEmailBackend {
    if (!this.connection) this.connection = getConnection(undefined, { failSilently });
    return this.connection;
  }

  /**
   * Sends the message through its connection (default: getConnection()). Returns 1 when sent, 0 when
   * there are no recipients or it failed silently. Throws delivery errors unless `failSilently`.
   */
  async send(failSilently = false): Promise<number> {
    if (this.recipients().length === 0) return 0;
    return this.getConnection(failSilently).sendMessages([this]);
  }

  /**
   * Renders the complete RFC 5322 message (CRLF line endings, ASCII headers; the one exception is an
   * address with a non-ASCII local part, written as raw UTF-8 per RFC 6532, see
   * {@link EmailMessage.needsSmtpUtf8}). Each call generates a fresh Date and Message-ID unless the
   * headers set them. Throws {@link BadHeaderError} for header injection and
   * {@link ValidationError} / InvalidAddressError for anything unsendable.
   */
  message(): Buffer {
    const charset = this.encoding || settings.DEFAULT_CHARSET;
    this.checkShapes();
    const root = this.buildRoot(charset);
    return serialize(['MIME-Version: 1.0\r\n', ...this.renderTopHeaders()], root);
  }

  /**
   * Whether the message needs the SMTPUTF8 extension (RFC 6531): true when the envelope sender, a
   * recipient (to, cc, bcc) or an address of a rendered address header (From, To, Cc, Reply-To,
   * also when given in headers, and Sender, Resent-*) has a non-ASCII local part, or when a
   * message/rfc822 attachment given as an EmailMessage does (its UTF-8 header travels verbatim).
   * Such a message has raw UTF-8 in its headers (RFC 6532), so an SMTP backend sends
   * `MAIL FROM:<...> SMTPUTF8` and fails the message permanently when the server does not offer
   * SMTPUTF8. Non-ASCII domains alone do not count: they are punycoded. Throws the errors message()
   * throws for an unusable address.
   */
  needsSmtpUtf8(): boolean {
    return this.needsSmtpUtf8Within(0);
  }

  private needsSmtpUtf8Within(depth: number): boolean {
    this.checkShapes();
    // The headers as message() renders them (so errors name the same fields): an address header
    // with a UTF-8 addr-spec is the only kind of header line that is not ASCII.
    if (this.renderTopHeaders(false).some((line) => line instanceof Utf8HeaderLines)) return true;
    // The envelope as BaseEmailBackend.envelope() builds it (To and Cc given in headers change only
    // the header).
    const envelope = [this.fromEmail, ...this.recipients()].map((address, index) =>
      parseAddress(address, index === 0 ? 'fromEmail' : `recipients[${index - 1}]`),
    );
    if (envelope.some((address) => isUtf8AddrSpec(address.addrSpec))) return true;
    return this.attachments.some((entry, index) => {
      const content = entry instanceof EmailAttachment ? entry.content : isTuple(entry) ? entry[1] : null;
      if (!(content instanceof EmailMessage)) return false;
      // The same cap as message() (renderNested), and the end of a message attached to itself.
      if (depth >= MAX_MESSAGE_NESTING) {
        const field = `attachments[${index}]`;
        throw new ValidationError(
          `${field}: message/rfc822 attachments nest more than ${MAX_MESSAGE_NESTING} levels deep`,
          { field },
        );
      }
      return content.needsSmtpUtf8Within(depth + 1);
    });
  }

  /**
   * Checks everything {@link EmailMessage.message} checks (header injection, header names,
   * addresses, charsets, attachment and alternative shapes) without encoding the bodies, so a
   * producer can validate thousands of messages cheaply. Throws the same errors message() would.
   */
  validate(): void {
    const charset = this.encoding || settings.DEFAULT_CHARSET;
    this.checkShapes();
    // Date and Message-ID are generated at send time; validating does not need them.
    this.renderTopHeaders(false);
    if (!canEncode(this.body, charset)) encodeText(this.body, charset, 'body');
    this.validateAlternatives(charset);
    this.attachments.forEach((entry, index) => {
      this.attachmentNode(entry, index, charset);
    });
  }

  /**
   * Attributes may be reassigned by plain JavaScript callers; a wrong shape gets an error that names
   * the attribute instead of a TypeError from deep inside rendering.
   */
  protected checkShapes(): void {
    const check = (ok: boolean, attribute: string, expected: string) => {
      if (!ok) throw new ValidationError(`${attribute} must be ${expected}`, { field: attribute });
    };
    check(typeof this.subject === 'string', 'subject', 'a string');
    check(typeof this.body === 'string', 'body', 'a string');
    check(typeof this.fromEmail === 'string', 'fromEmail', 'a string');
    check(Array.isArray(this.attachments), 'attachments', 'an array');
    // Arrays assigned by plain JavaScript or decoded from JSON: a null or a hole would be dropped by
    // recipients() here and still travel in the wire form, to fail at the worker instead.
    for (const [name, list] of [
      ['to', this.#to],
      ['cc', this.#cc],
      ['bcc', this.#bcc],
      ['replyTo', this.#replyTo],
      ['attachments', this.attachments],
    ] as const) {
      for (let index = 0; index < list.length; index++) {
        const entry = list[index];
        const ok = name === 'attachments' ? entry !== undefined && entry !== null : typeof entry === 'string';
        check(ok, `${name}[${index}]`, name === 'attachments' ? 'an attachment' : 'a string address');
      }
    }
    // Rendered into Content-Type lines as they are: tokens, never free text.
    checkMimeToken(this.contentSubtype, 'contentSubtype');
    checkMimeToken(this.mixedSubtype, 'mixedSubtype');
    if (this.encoding !== null) checkMimeToken(this.encoding, 'encoding');
    check(
      typeof this.extraHeaders === 'object' &&
        this.extraHeaders !== null &&
        !Array.isArray(this.extraHeaders),
      'headers',
      'an object of header names to values',
    );
  }

  /** Hook for EmailMultiAlternatives: checks alternatives without encoding them. */
  protected validateAlternatives(_charset: string): void {}

  /** A deep copy (attachments, alternatives, headers) without the connection. */
  clone(): this {
    const copy = new (this.constructor as new () => this)();
    Object.assign(copy, this);
    copy.to = [...this.to];
    copy.cc = [...this.cc];
    copy.bcc = [...this.bcc];
    copy.replyTo = [...this.replyTo];
    copy.extraHeaders = Object.fromEntries(
      Object.entries(this.extraHeaders).map(([k, v]) => [k, v instanceof Date ? new Date(v.getTime()) : v]),
    );
    copy.attachments = this.attachments.map(cloneAttachment);
    copy.connection = null;
    return copy;
  }

  /** The body parts (main body, then alternatives for EmailMultiAlternatives). */
  protected bodyNodes(charset: string): MimeNode[] {
    if (this.body === '' && this.attachments.length > 0) return [];
    return [textNode(this.body, this.contentSubtype, charset, {}, 'body')];
  }

  private buildRoot(charset: string): MimeNode {
    const bodies = this.bodyNodes(charset);
    const attachments = this.attachments.map((entry, index) => this.attachmentNode(entry, index, charset));
    if (attachments.length === 0) {
      // bodyNodes returns one node (or a multipart/alternative) when there are no attachments.
      return bodies[0] ?? textNode('', this.contentSubtype, charset);
    }
    return multipartNode(this.mixedSubtype, [...bodies, ...attachments]);
  }

  private renderTopHeaders(generate = true): RenderedHeader[] {
    const overrides = new Map<string, [string, HeaderValue]>();
    for (const [name, value] of Object.entries(this.extraHeaders))
      overrides.set(name.toLowerCase(), [name, value]);
    for (const generated of ['mime-version', 'content-type', 'content-transfer-encoding']) {
      if (overrides.has(generated)) {
        throw new ValidationError(
          `Header ${overrides.get(generated)?.[0]} is generated and cannot be set in headers`,
          {
            field: `headers.${overrides.get(generated)?.[0]}`,
          },
        );
      }
    }
    if (overrides.has('subject')) {
      // RFC 5322 §3.6 allows one Subject field; Django 6 raises ValueError for a second one too.
      const name = overrides.get('subject')?.[0];
      throw new ValidationError(
        `Header ${name} cannot be set in headers: set the subject attribute instead`,
        {
          field: `headers.${name}`,
        },
      );
    }
    const out: RenderedHeader[] = [];
    const addressHeader = (name: string, list: string[], field: string): void => {
      const override = overrides.get(name.toLowerCase());
      const parsed: ParsedAddress[] = override
        ? parseAddressList(String(override[1]), `headers.${override[0]}`)
        : list.filter((entry) => entry).map((entry, index) => parseAddress(entry, `${field}[${index}]`));
      if (parsed.length > 0) out.push(renderAddressHeader(name, parsed));
    };
    // Bcc is never rendered, but it is checked like every other address field so that header
    // injection (CR/LF) and unusable addresses fail here, at message() time.
    this.#bcc.forEach((entry, index) => {
      if (entry) parseAddress(entry, `bcc[${index}]`);
    });
    const bccOverride = overrides.get('bcc');
    if (bccOverride) parseAddressList(String(bccOverride[1]), `headers.${bccOverride[0]}`);
    out.push(renderHeader('Subject', String(this.subject), 'subject'));
    addressHeader('From', [this.fromEmail], 'fromEmail');
    addressHeader('To', this.#to, 'to');
    addressHeader('Cc', this.#cc, 'cc');
    addressHeader('Reply-To', this.#replyTo, 'replyTo');
    if (generate && !overrides.has('date'))
      out.push(`Date: ${formatDate(new Date(), settings.EMAIL_USE_LOCALTIME)}\r\n`);
    if (generate && !overrides.has('message-id')) out.push(`Message-ID: ${makeMessageId()}\r\n`);
    // Every extra header in the order given; keys differing only in case are all written, as
    // Django's dict of headers would be.
    for (const [name, value] of Object.entries(this.extraHeaders)) {
      const lower = name.toLowerCase();
      if (lower === 'from' || lower === 'to' || lower === 'cc' || lower === 'reply-to' || lower === 'bcc')
        continue;
      if (value instanceof Date)
        out.push(renderHeader(name, formatDate(value, settings.EMAIL_USE_LOCALTIME)));
      else if (ADDRESS_HEADERS.has(lower))
        out.push(renderAddressHeader(name, parseAddressList(String(value), `headers.${name}`)));
      else out.push(renderHeader(name, String(value)));
    }
    return out;
  }

  private attachmentNode(entry: AttachmentInput, index: number, charset: string): MimeNode {
    const field = `attachments[${index}]`;
    if (entry instanceof MimePart) return mimePartNode(entry, charset, field);
    let filename: string | null;
    let content: AttachmentContent | undefined;
    let mimetype: string | null | undefined;
    if (entry instanceof EmailAttachment) ({ filename, content, mimetype } = entry);
    else if (isTuple(entry)) [filename, content, mimetype] = entry;
    else throw new ValidationError(`${field} must be an EmailAttachment, a MimePart or a tuple`, { field });
    if (content === undefined || content === null) {
      throw new ValidationError(`${field}: content is required`, { field });
    }
    checkContent(content, `${field}.content`, true);
    if (filename !== null && filename !== undefined && typeof filename !== 'string') {
      throw new ValidationError(`${field}.filename must be a string or null`, { field: `${field}.filename` });
    }
    const type = mimetype || guessMimeType(filename) || DEFAULT_ATTACHMENT_MIME_TYPE;
    checkMimetype(type, `${field}.mimetype`);
    const settled = settleTextContent(content, type);
    const extras = filename ? { disposition: 'attachment', filename, field } : { field };
    const [main, sub] = settled.mimetype.split('/') as [string, string];
    if (settled.mimetype === 'message/rfc822') {
      const bytes =
        settled.content instanceof EmailMessage
          ? renderNested(settled.content, field)
          : Buffer.from(toCrlf(toBuffer(settled.content).toString('latin1')), 'latin1');
      return nestedMessageNode(bytes, extras);
    }
    if (settled.content instanceof EmailMessage) {
      throw new ValidationError(`${field}: an EmailMessage can only be attached as message/rfc822`, {
        field,
      });
    }
    if (main === 'text' && typeof settled.content === 'string') {
      const partCharset = canEncode(settled.content, charset) ? charset : 'utf-8';
      return textNode(settled.content, sub, partCharset, extras, field);
    }
    return binaryNode(toBuffer(settled.content), settled.mimetype, extras);
  }
}

/** A nested message rendered with the nesting depth checked (see MAX_MESSAGE_NESTING). */
function renderNested(message: EmailMessage, field: string): Buffer {
  if (renderingDepth >= MAX_MESSAGE_NESTING) {
    throw new ValidationError(
      `${field}: message/rfc822 attachments nest more than ${MAX_MESSAGE_NESTING} levels deep`,
      { field },
    );
  }
  renderingDepth++;
  try {
    return message.message();
  } finally {
    renderingDepth--;
  }
}

/** A message/rfc822 leaf: the bytes as they are (RFC 2046 §5.2.1: never base64 or QP), checked first. */
function nestedMessageNode(bytes: Buffer, extras: PartExtras & { field: string }): MimeNode {
  checkNestedMessageBytes(bytes, extras.field);
  return verbatimNode(bytes, 'message/rfc822', isAscii(bytes) ? '7bit' : '8bit', extras);
}

function mimePartNode(part: MimePart, charset: string, field: string): MimeNode {
  checkMimetype(part.mimetype, `${field}.mimetype`);
  if (part.charset !== null) checkMimeToken(part.charset, `${field}.charset`);
  const extras = {
    disposition: part.disposition,
    filename: part.filename,
    contentId: part.contentId,
    headers: part.headers,
    field,
  };
  const [main, sub] = part.mimetype.split('/') as [string, string];
  if (main === 'text' && typeof part.content === 'string') {
    return textNode(part.content, sub, part.charset ?? charset, extras, field);
  }
  if (part.mimetype === 'message/rfc822') {
    return nestedMessageNode(
      Buffer.from(toCrlf(toBuffer(part.content).toString('latin1')), 'latin1'),
      extras,
    );
  }
  return binaryNode(toBuffer(part.content), part.mimetype, extras);
}

function cloneContent<T extends AttachmentContent>(content: T): T {
  if (content instanceof EmailMessage) return content.clone() as T;
  if (content instanceof Uint8Array) return Buffer.from(content) as unknown as T;
  return content;
}

function cloneAttachment(entry: AttachmentInput): AttachmentInput {
  if (entry instanceof MimePart) {
    return new MimePart({
      content: cloneContent(entry.content),
      mimetype: entry.mimetype,
      ...(entry.charset ? { charset: entry.charset } : {}),
      disposition: entry.disposition,
      filename: entry.filename,
      contentId: entry.contentId,
      headers: { ...entry.headers },
    });
  }
  if (entry instanceof EmailAttachment) {
    return new EmailAttachment(entry.filename, cloneContent(entry.content), entry.mimetype);
  }
  const [filename, content, mimetype] = entry;
  return mimetype === undefined
    ? [filename, cloneContent(content)]
    : [filename, cloneContent(content), mimetype];
}

/**
 * Django's EmailMultiAlternatives: an EmailMessage with alternative renderings of the body (e.g.
 * text/html), sent as multipart/alternative with the body first.
 */
export class EmailMultiAlternatives extends EmailMessage {
  /** Subtype of the multipart that holds body and alternatives. */
  alternativeSubtype = 'alternative';
  alternatives: AlternativeInput[];

  constructor(options?: EmailMultiAlternativesOptions);
  constructor(
    subject?: string,
    body?: string,
    fromEmail?: string | null,
    to?: readonly string[] | null,
    options?: Omit<EmailMultiAlternativesOptions, 'subject' | 'body' | 'fromEmail' | 'to'>,
  );
  constructor(
    subjectOrOptions?: string | EmailMultiAlternativesOptions,
    body?: string,
    fromEmail?: string | null,
    to?: readonly string[] | null,
    options: Omit<EmailMultiAlternativesOptions, 'subject' | 'body' | 'fromEmail' | 'to'> = {},
  ) {
    if (typeof subjectOrOptions === 'object' && subjectOrOptions !== null) super(subjectOrOptions);
    else super(subjectOrOptions, body, fromEmail, to, options);
    const init =
      typeof subjectOrOptions === 'object' && subjectOrOptions !== null ? subjectOrOptions : options;
    this.alternatives = [...(init.alternatives ?? [])];
  }

  /** Adds an alternative rendering, e.g. `attachAlternative(html, 'text/html')`. Both arguments are required. */
  attachAlternative(content: string | Uint8Array, mimetype: string): void {
    if (content === undefined || content === null) {
      throw new ValidationError('attachAlternative(): content is required', { field: 'content' });
    }
    checkMimetype(mimetype, 'attachAlternative(): mimetype');
    this.alternatives.push(new EmailAlternative(content, mimetype));
  }

  /**
   * Django's body_contains(): true when `text` is in the body and in every text/* alternative
   * (non-text alternatives are ignored).
   */
  bodyContains(text: string): boolean {
    if (!this.body.includes(text)) return false;
    return this.alternatives.every((entry) => {
      const { content, mimetype } = normalizeAlternative(entry, 0);
      if (!mimetype.startsWith('text/')) return true;
      const decoded = typeof content === 'string' ? content : Buffer.from(content).toString('utf8');
      return decoded.includes(text);
    });
  }

  override clone(): this {
    const copy = super.clone();
    copy.alternatives = this.alternatives.map((entry) => {
      const { content, mimetype } = normalizeAlternative(entry, 0);
      return new EmailAlternative(cloneContent(content), mimetype);
    });
    return copy;
  }

  protected override checkShapes(): void {
    super.checkShapes();
    if (!Array.isArray(this.alternatives)) {
      throw new ValidationError('alternatives must be an array', { field: 'alternatives' });
    }
    checkMimeToken(this.alternativeSubtype, 'alternativeSubtype');
  }

  protected override validateAlternatives(): void {
    this.alternatives.forEach((entry, index) => {
      normalizeAlternative(entry, index);
    });
  }

  protected override bodyNodes(charset: string): MimeNode[] {
    if (this.alternatives.length === 0) return super.bodyNodes(charset);
    const parts: MimeNode[] = [];
    if (this.body !== '') parts.push(textNode(this.body, this.contentSubtype, charset, {}, 'body'));
    this.alternatives.forEach((entry, index) => {
      const field = `alternatives[${index}]`;
      const { content, mimetype } = normalizeAlternative(entry, index);
      const [main, sub] = mimetype.split('/') as [string, string];
      if (main === 'text') {
        const text = typeof content === 'string' ? content : Buffer.from(content).toString('utf8');
        parts.push(textNode(text, sub, canEncode(text, charset) ? charset : 'utf-8', {}, field));
      } else {
        parts.push(binaryNode(toBuffer(content), mimetype));
      }
    });
    return [multipartNode(this.alternativeSubtype, parts)];
  }
}

/** An alternative as `{content, mimetype}` (from an EmailAlternative, a tuple or a plain object), checked. */
export function normalizeAlternative(entry: AlternativeInput, index: number): EmailAlternative {
  const field = `alternatives[${index}]`;
  const alternative = isTuple(entry) ? new EmailAlternative(entry[0], entry[1]) : entry;
  if (alternative.content === undefined || alternative.content === null) {
    throw new ValidationError(`${field}: content is required`, { field });
  }
  checkContent(alternative.content, `${field}.content`, false);
  checkMimetype(alternative.mimetype, `${field}.mimetype`);
  return alternative;
}
