/** The MIME tree of a message: leaf and multipart nodes, RFC 2231 parameters, serialization with boundaries. */
import { isUtf8AddrSpec } from './address.js';
import {
  chooseTextEncoding,
  encodeBase64,
  encodeText,
  type TransferEncoding,
  textPartBody,
} from './encoding.js';
import { BadHeaderError, ValidationError } from './errors.js';
import { checkHeaderLength, checkMimeToken, forbidControls } from './header-text.js';
import {
  ADDRESS_HEADERS,
  foldTokens,
  MAX_LINE,
  type RenderedHeader,
  renderHeader,
  Utf8HeaderLines,
  validateHeaderName,
} from './headers.js';
import { randomHex } from './random.js';

/**
 * One node of a MIME tree, already rendered: its header lines (CRLF-terminated, without the blank
 * line) and either its encoded body or its children.
 */
export interface MimeNode {
  headers: string;
  body: Buffer | MimeNode[];
  /** Multipart subtype, for nodes with children. */
  subtype?: string;
}

/** Longest parameter token that fits a folded line: a leading space, the token and its ';' within 78. */
const MAX_PARAMETER = MAX_LINE - 2;

/** RFC 2231 §4 percent-encoding of one character's UTF-8 octets; attribute-chars stay literal. */
function percentEncode(char: string): string {
  if (/^[A-Za-z0-9!#$&+\-.^_`|~]$/.test(char)) return char;
  return Array.from(Buffer.from(char, 'utf8'))
    .map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`)
    .join('');
}

/**
 * A MIME parameter as folding tokens: a quoted-string when ASCII (escaping `\` and `"`), RFC 2231
 * `utf-8''` percent-encoding when not. A parameter too long for one line is split into RFC 2231 §3
 * continuations (`name*0`, `name*1`, ...), never inside an escape or a character's octets.
 */
function renderParameter(name: string, value: string, field: string): string[] {
  if (typeof value !== 'string') {
    throw new ValidationError(`${field} must be a string (got ${typeof value})`, { field });
  }
  checkHeaderLength(value, field);
  forbidControls(value, field);
  const ascii = /^[\x20-\x7e]*$/.test(value);
  const units = Array.from(value, (char) => (ascii ? char.replace(/(["\\])/, '\\$1') : percentEncode(char)));
  const single = ascii ? `${name}="${units.join('')}"` : `${name}*=utf-8''${units.join('')}`;
  if (single.length <= MAX_PARAMETER) return [single];
  const prefix = (index: number) =>
    ascii ? `${name}*${index}="` : `${name}*${index}*=${index === 0 ? "utf-8''" : ''}`;
  const suffix = ascii ? '"' : '';
  const segments: string[] = [];
  let current = '';
  for (const unit of units) {
    const length = prefix(segments.length).length + current.length + unit.length + suffix.length;
    if (current !== '' && length > MAX_PARAMETER) {
      segments.push(`${prefix(segments.length)}${current}${suffix}`);
      current = '';
    }
    current += unit;
  }
  segments.push(`${prefix(segments.length)}${current}${suffix}`);
  return segments;
}

/**
 * Renders `Name: value; a="b"; c="d"`, folding between parameters (and their continuations). The
 * value must be a MIME type (Content-Type) or token (Content-Disposition); errors name `field`.
 */
export function renderParameterHeader(
  name: string,
  value: string,
  parameters: [key: string, value: string, field?: string][],
  field = `headers.${name}`,
): string {
  validateHeaderName(name);
  checkMimeToken(value, field, name.toLowerCase() === 'content-type' ? 'type' : 'token');
  const tokens = [parameters.length > 0 ? `${value};` : value];
  const rendered = parameters.flatMap(([key, parameterValue, parameterField]) =>
    renderParameter(key, parameterValue, parameterField ?? `${field}.${key}`),
  );
  rendered.forEach((token, index) => {
    tokens.push(index < rendered.length - 1 ? `${token};` : token);
  });
  return foldTokens(name, tokens);
}

/** Extra lines for a part: Content-Disposition with its filename, Content-ID, anything else given. */
export interface PartExtras {
  disposition?: string | null | undefined;
  filename?: string | null | undefined;
  contentId?: string | null | undefined;
  headers?: Record<string, string> | undefined;
  /** Path of the part in the message (`attachments[2]`), for error messages. */
  field?: string | undefined;
}

function renderExtras(extras: PartExtras): string {
  const field = extras.field ?? 'part';
  let out = '';
  if (extras.disposition) {
    out += renderParameterHeader(
      'Content-Disposition',
      extras.disposition,
      extras.filename ? [['filename', extras.filename, `${field}.filename`]] : [],
      `${field}.disposition`,
    );
  }
  if (extras.contentId) {
    if (typeof extras.contentId !== 'string') {
      throw new ValidationError(`${field}.contentId must be a string`, { field: `${field}.contentId` });
    }
    const id = extras.contentId.startsWith('<') ? extras.contentId : `<${extras.contentId}>`;
    out += renderHeader('Content-ID', id, `${field}.contentId`);
  }
  for (const [name, value] of Object.entries(extras.headers ?? {})) {
    const where = `${field}.headers.${name}`;
    // Generated from the part's own fields: a second Content-Type is read differently by different
    // parsers and filters (one sees the attachment, the other does not).
    if (GENERATED_PART_HEADERS.has(name.toLowerCase())) {
      throw new BadHeaderError(`${where}: ${name} is generated from the part's fields and cannot be set`, {
        field: where,
      });
    }
    if (typeof value !== 'string') {
      throw new ValidationError(`${where} must be a string (got ${typeof value})`, { field: where });
    }
    out += renderHeader(name, value, where);
  }
  return out;
}

/** Part headers rendered from a part's fields (mimetype, disposition, filename, contentId). */
const GENERATED_PART_HEADERS = new Set([
  'content-type',
  'content-transfer-encoding',
  'content-disposition',
  'content-id',
  'mime-version',
]);

/** A text/* leaf: text normalised to CRLF with a final newline, encoded in `charset`, CTE chosen per RFC 2045. */
export function textNode(
  text: string,
  subtype: string,
  charset: string,
  extras: PartExtras = {},
  field = 'body',
): MimeNode {
  const bytes = encodeText(textPartBody(text), charset, field);
  const { encoding, body } = chooseTextEncoding(bytes);
  return {
    headers: `${textContentType(subtype, charset)}Content-Transfer-Encoding: ${encoding}\r\n${renderExtras(extras)}`,
    body,
  };
}

const textContentTypes = new Map<string, string>();

/** The Content-Type line of a text part, rendered once per subtype and charset (every message has one). */
function textContentType(subtype: string, charset: string): string {
  const key = `${subtype}\n${charset}`;
  let line = textContentTypes.get(key);
  if (line === undefined) {
    line = renderParameterHeader('Content-Type', `text/${subtype}`, [['charset', charset]]);
    // Bounded: subtypes and charsets come from code, but a caller could vary them without end.
    if (textContentTypes.size < 256) textContentTypes.set(key, line);
  }
  return line;
}

/** A binary leaf, base64 encoded. */
export function binaryNode(bytes: Buffer, mimetype: string, extras: PartExtras = {}): MimeNode {
  return {
    headers:
      renderParameterHeader('Content-Type', mimetype, []) +
      'Content-Transfer-Encoding: base64\r\n' +
      renderExtras(extras),
    body: encodeBase64(bytes),
  };
}

/** A leaf whose body is used as given (already encoded), e.g. message/rfc822 or a preset CTE. */
export function verbatimNode(
  bytes: Buffer,
  mimetype: string,
  encoding: TransferEncoding,
  extras: PartExtras = {},
): MimeNode {
  return {
    headers:
      renderParameterHeader('Content-Type', mimetype, []) +
      `Content-Transfer-Encoding: ${encoding}\r\n` +
      renderExtras(extras),
    body: bytes,
  };
}

/** A multipart node (mixed, alternative, related...). The boundary is chosen at serialization. */
export function multipartNode(subtype: string, children: MimeNode[]): MimeNode {
  return { headers: '', body: children, subtype };
}

/**
 * The bytes of rendered header lines. They are ASCII by construction (foldTokens checks every
 * token); checked once more here because latin1 keeps only the low byte of a wider character, and
 * that is how U+010D would become a CR on the wire.
 */
function headerBytes(text: string): Buffer {
  const found = /[^\x00-\x7f]/.exec(text);
  if (found !== null) {
    throw new BadHeaderError(
      `A rendered header holds the non-ASCII character U+${found[0].charCodeAt(0).toString(16).toUpperCase()}; refusing to send it`,
    );
  }
  return Buffer.from(text, 'latin1');
}

/**
 * The bytes of top-level header lines: text through {@link headerBytes}; the one exception,
 * {@link Utf8HeaderLines} (an internationalised addr-spec, RFC 6532), as the UTF-8 foldTokens made,
 * checked once more: an address header, exactly the UTF-8 encoding of its text, CRLF-terminated,
 * no control character but the CRLF of a fold, and non-ASCII only in internationalised addr-specs.
 */
function headerBlockBytes(lines: readonly RenderedHeader[]): Buffer {
  return Buffer.concat(
    lines.map((line) => {
      if (typeof line === 'string') return headerBytes(line);
      if (!(line instanceof Utf8HeaderLines) || !isSoundUtf8Header(line)) {
        throw new BadHeaderError('A rendered UTF-8 header line is malformed; refusing to send it');
      }
      return line.bytes;
    }),
  );
}

function isSoundUtf8Header(line: Utf8HeaderLines): boolean {
  const unfolded = line.text.replace(/\r\n(?=[ \t])/g, '');
  if (!unfolded.endsWith('\r\n')) return false;
  const value = unfolded.slice(0, -2);
  if (/[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]/.test(value)) return false;
  if (!ADDRESS_HEADERS.has(value.slice(0, Math.max(0, value.indexOf(':'))).toLowerCase())) return false;
  // Every word with non-ASCII is an internationalised addr-spec, bare or in <...>, maybe before a
  // comma (addr-specs, encoded-words and atoms hold no space).
  const words = value.split(' ').filter((word) => /[^\x00-\x7f]/.test(word));
  if (!words.every((word) => isUtf8AddrSpec(word.replace(/^<(.*)>$|^<(.*)>,$|^(.*),$/, '$1$2$3')))) {
    return false;
  }
  return line.bytes.equals(Buffer.from(line.text, 'utf8'));
}

const NO_HEADERS = Buffer.alloc(0);

function collect(node: MimeNode, chunks: Buffer[], headerPrefix: Buffer): void {
  if (Buffer.isBuffer(node.body)) {
    chunks.push(headerPrefix, headerBytes(`${node.headers}\r\n`), node.body);
    return;
  }
  const childChunks: Buffer[][] = node.body.map((child) => {
    const own: Buffer[] = [];
    collect(child, own, NO_HEADERS);
    return own;
  });
  const boundary = chooseBoundary(childChunks);
  chunks.push(
    headerPrefix,
    headerBytes(
      `${renderParameterHeader('Content-Type', `multipart/${node.subtype ?? 'mixed'}`, [['boundary', boundary]])}${node.headers}\r\n`,
    ),
  );
  // RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter, so one is added after
  // every body; a text body's own final newline survives.
  childChunks.forEach((own, index) => {
    chunks.push(Buffer.from(index === 0 ? `--${boundary}\r\n` : `\r\n--${boundary}\r\n`, 'latin1'), ...own);
  });
  chunks.push(Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1'));
}

function chooseBoundary(children: Buffer[][]): string {
  for (;;) {
    const boundary = `===============${randomHex(12)}==`;
    const clash = children.some((chunks) => chunks.some((chunk) => chunk.includes(boundary, 0, 'latin1')));
    if (!clash) return boundary;
  }
}

/**
 * Serializes a MIME tree under the given top-level header lines (ASCII, or the raw UTF-8 lines of an
 * internationalised address); CRLF line endings throughout. Throws {@link BadHeaderError} for a
 * header byte that did not come from one of those.
 */
export function serialize(topHeaders: readonly RenderedHeader[], root: MimeNode): Buffer {
  const chunks: Buffer[] = [];
  collect(root, chunks, headerBlockBytes(topHeaders));
  return Buffer.concat(chunks);
}
