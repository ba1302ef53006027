/** Rendering header lines: RFC 2047 encoded-words, folding at 78 octets, dates and Message-IDs. */
import { hostname } from 'node:os';
import { domainToASCII } from 'node:url';
import { isUtf8AddrSpec, type ParsedAddress } from './address.js';
import { BadHeaderError, quoteValue, ValidationError } from './errors.js';
import { checkHeaderLength, forbidControls, requireAscii } from './header-text.js';
import { randomHex } from './random.js';

/** RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, MUST be at most 998 (octets: RFC 6532 §3.4). */
export const MAX_LINE = 78;
const HARD_MAX_LINE = 998;
/** Longest header name accepted: with its colon and a space it leaves room on a 78-character line. */
export const MAX_HEADER_NAME = 76;
/** RFC 2047 §2: an encoded-word is at most 75 characters. */
const MAX_ENCODED_WORD = 75;
const WORD_PREFIX = '=?utf-8?';
const WORD_OVERHEAD = WORD_PREFIX.length + 2 /* "b?" */ + 2; /* "?=" */

/**
 * Headers whose syntax is structured (ids, dates, URLs, MIME parameters): never RFC 2047 encoded,
 * so they must be ASCII. Everything else is treated as unstructured text, as Python's email does.
 */
const STRUCTURED =
  /^(message-id|in-reply-to|references|date|mime-version|return-path|received|list-[a-z-]+|content-[a-z-]+|dkim-signature|resent-date|resent-message-id|auto-submitted|precedence)$/i;

/** The address headers: parsed and re-rendered (punycode, RFC 2047 names) rather than copied. */
export const ADDRESS_HEADERS = new Set([
  'from',
  'to',
  'cc',
  'bcc',
  'reply-to',
  'sender',
  'resent-from',
  'resent-to',
  'resent-cc',
  'resent-sender',
]);

/**
 * RFC 5322 §2.2: a field name is printable US-ASCII (33-126) except colon. Django does not check
 * names; we do, because a name like "X-Evil\r\nBcc" is header injection too.
 */
export function validateHeaderName(name: string): void {
  if (typeof name !== 'string' || name === '' || !/^[\x21-\x39\x3b-\x7e]+$/.test(name)) {
    throw new BadHeaderError(
      `Invalid header name ${quoteValue(name)}: names must be printable ASCII without ':' or spaces`,
      { field: `headers.${quoteValue(name, 40).slice(1, -1)}` },
    );
  }
  // The name and its colon start the first line, which folding cannot shorten: keep it well inside
  // the 78 a line should have (RFC 5322 §2.1.1), let alone the 998 it must.
  if (name.length > MAX_HEADER_NAME) {
    throw new BadHeaderError(
      `Invalid header name ${quoteValue(name, 40)}: ${name.length} characters, at most ${MAX_HEADER_NAME}`,
      { field: `headers.${name.slice(0, 40)}` },
    );
  }
}

function isAscii(text: string): boolean {
  return !/[^\x00-\x7f]/.test(text);
}

// RFC 2047 §5(3): the characters that may stay literal in a Q-encoded word inside a phrase. Using
// the strictest set everywhere keeps one encoder valid in both unstructured text and display names.
const Q_LITERAL = /[A-Za-z0-9!*+\-/]/;

function qEncodeChar(char: string): string {
  if (char === ' ') return '_';
  if (Q_LITERAL.test(char)) return char;
  let out = '';
  for (const byte of Buffer.from(char, 'utf8')) out += `=${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/**
 * Encodes text as RFC 2047 encoded-words (UTF-8, Q or B, whichever is shorter), each at most 75
 * characters and never splitting a character across words.
 */
export function encodeWords(text: string): string[] {
  const chars = Array.from(text);
  const q = chunkWords(chars, 'q', (chunk) => chunk.map(qEncodeChar).join(''));
  const b = chunkWords(chars, 'b', (chunk) => Buffer.from(chunk.join(''), 'utf8').toString('base64'));
  const length = (words: string[]) => words.reduce((sum, word) => sum + word.length + 1, 0);
  return length(q) <= length(b) ? q : b;
}

function chunkWords(chars: string[], kind: 'q' | 'b', encode: (chunk: string[]) => string): string[] {
  const budget = MAX_ENCODED_WORD - WORD_OVERHEAD;
  const words: string[] = [];
  let chunk: string[] = [];
  let bytes = 0;
  let qLength = 0;
  for (const char of chars) {
    const charBytes = Buffer.byteLength(char, 'utf8');
    const charQ = kind === 'q' ? qEncodeChar(char).length : 0;
    const fits = kind === 'b' ? Math.ceil((bytes + charBytes) / 3) * 4 <= budget : qLength + charQ <= budget;
    if (!fits && chunk.length > 0) {
      words.push(`${WORD_PREFIX}${kind}?${encode(chunk)}?=`);
      chunk = [];
      bytes = 0;
      qLength = 0;
    }
    chunk.push(char);
    bytes += charBytes;
    qLength += charQ;
  }
  if (chunk.length > 0 || words.length === 0) words.push(`${WORD_PREFIX}${kind}?${encode(chunk)}?=`);
  return words;
}

/**
 * Splits unstructured text into tokens to be joined by single spaces: ASCII words stay as they are,
 * runs of words needing encoding (non-ASCII, control characters, things that look like
 * encoded-words, or words too long to fold) become encoded-words.
 */
function unstructuredTokens(value: string): string[] {
  const words = value.split(' ');
  const tokens: string[] = [];
  let run: string[] = [];
  const flush = () => {
    // A loop, not push(...words): a long value makes more words than a call may take arguments.
    if (run.length > 0) for (const word of encodeWords(run.join(' '))) tokens.push(word);
    run = [];
  };
  for (const word of words) {
    const needsEncoding = !isAscii(word) || word.includes('=?') || word.length > MAX_LINE - 2;
    if (needsEncoding) run.push(word);
    // An empty word (from consecutive spaces) next to encoded text joins the run: decoders drop the
    // whitespace between two adjacent encoded-words (RFC 2047 §6.2), so it must be encoded too.
    else if (word === '' && run.length > 0) run.push(word);
    else {
      flush();
      tokens.push(word);
    }
  }
  flush();
  return tokens;
}

// What a rendered header token may hold: printable ASCII and TAB. Every token comes from an
// encoding chosen on purpose (RFC 2047, IDNA, RFC 2231) or from checked ASCII input.
const HEADER_TOKEN = /^[\t\x20-\x7e]*$/;

/**
 * The one header token that may hold non-ASCII: an internationalised addr-spec (RFC 6532 §3.2, a
 * local part in UTF-8) with the ASCII around it (`<` before, `>` and `,` after). The constructor
 * checks the addr-spec again ({@link isUtf8AddrSpec}) and makes its bytes with
 * `Buffer.from(text, 'utf8')`, never latin1, so no header byte comes from a lossy conversion.
 * Throws {@link BadHeaderError} for anything else.
 */
export class Utf8AddrSpecToken {
  /** The token as text, e.g. `<用户@xn--fsqu00a.xn--4rr70v>,`. */
  readonly text: string;
  /** The token's UTF-8 octets, as written to the header. */
  readonly bytes: Buffer;

  constructor(before: '' | '<', addrSpec: string, after: string, field: string) {
    const bracketed = before === '<';
    const fits = (bracketed || before === '') && (bracketed ? /^>,?$/ : /^,?$/).test(after);
    if (!fits || !isUtf8AddrSpec(addrSpec)) {
      throw new BadHeaderError(
        `Only a validated internationalised addr-spec may hold non-ASCII in a header (got ${quoteValue(before + addrSpec + after)} for ${JSON.stringify(field)})`,
        { field },
      );
    }
    this.text = `${before}${addrSpec}${after}`;
    this.bytes = Buffer.from(this.text, 'utf8');
  }
}

/** A folding token: ASCII text, or an internationalised addr-spec (the RFC 6532 exception). */
export type HeaderToken = string | Utf8AddrSpecToken;

/**
 * Rendered header lines holding the raw UTF-8 of an internationalised addr-spec (RFC 6532). Made
 * only by {@link foldTokens} from {@link Utf8AddrSpecToken}s: `bytes` are the ASCII text as it is
 * and each such token's UTF-8 octets; `text` is the same lines as a string.
 */
export class Utf8HeaderLines {
  constructor(
    readonly text: string,
    readonly bytes: Buffer,
  ) {}
}

/** One or more rendered header lines, CRLF-terminated: ASCII text, or {@link Utf8HeaderLines}. */
export type RenderedHeader = string | Utf8HeaderLines;

/**
 * Joins tokens with single spaces, folding (CRLF + the space) before a token whenever the line
 * would pass 78 octets; a line over 998 octets is a {@link ValidationError}. Unfolding gives back
 * exactly the joined text. The last guard against header injection: a string token with any
 * character but printable ASCII and TAB is a {@link BadHeaderError}, so no header byte ever comes
 * from a lossy conversion of a wider character (U+010D is not CR). The one exception is a
 * {@link Utf8AddrSpecToken}, never split, whose UTF-8 octets are counted and written as they are;
 * with one, the result is {@link Utf8HeaderLines} instead of a string.
 */
export function foldTokens(name: string, tokens: readonly string[], field?: string): string;
export function foldTokens(name: string, tokens: readonly HeaderToken[], field?: string): RenderedHeader;
export function foldTokens(
  name: string,
  tokens: readonly HeaderToken[],
  field = `headers.${name}`,
): RenderedHeader {
  let out = `${name}:`;
  let lineLength = out.length;
  // The octets, kept only once a UTF-8 token appears: ASCII runs as latin1 (= ASCII), each UTF-8
  // token as its own UTF-8 bytes.
  let chunks: Buffer[] | undefined;
  let asciiFrom = 0;
  tokens.forEach((token, index) => {
    let text: string;
    let octets: number;
    if (token instanceof Utf8AddrSpecToken) {
      text = token.text;
      octets = token.bytes.length;
    } else {
      if (typeof token !== 'string') {
        throw new BadHeaderError(`Header ${name} has a token that is not text (${typeof token})`, { field });
      }
      if (!HEADER_TOKEN.test(token)) requireAscii(token, field, `Header ${name}`);
      text = token;
      octets = token.length;
    }
    const separator = ' ';
    const fitsHere = lineLength + separator.length + octets <= MAX_LINE;
    // RFC 5322 §3.2.2: the space after the colon is folding white space too, so a first token too
    // long to follow the name (e.g. a 75-character encoded-word) starts the next line instead.
    const foldable = index > 0 || separator.length + octets <= MAX_LINE;
    // Never fold before a token of white space only (or none): the continuation line would be
    // white space only, which RFC 5322 §3.2.2 forbids and a line-trimming filter reads as the end.
    if (!fitsHere && foldable && text.trim() !== '' && lineLength > 1) {
      out += `\r\n${separator}`;
      lineLength = separator.length + octets;
    } else {
      out += separator;
      lineLength += separator.length + octets;
    }
    if (token instanceof Utf8AddrSpecToken) {
      chunks ??= [];
      chunks.push(Buffer.from(out.slice(asciiFrom), 'latin1'), token.bytes);
      asciiFrom = out.length + text.length;
    }
    out += text;
    if (lineLength > HARD_MAX_LINE) {
      throw new ValidationError(
        `Header ${name} has a word longer than ${HARD_MAX_LINE} octets that cannot be folded`,
        { field: `headers.${name}` },
      );
    }
  });
  out += '\r\n';
  if (chunks === undefined) return out;
  chunks.push(Buffer.from(out.slice(asciiFrom), 'latin1'));
  return new Utf8HeaderLines(out, Buffer.concat(chunks));
}

/**
 * Renders one header line (folded, CRLF-terminated) from a text value: checks the name, rejects
 * CR/LF and other control characters in the value (header injection) and values longer than
 * {@link MAX_HEADER_VALUE}, RFC 2047 encodes unstructured non-ASCII text and refuses non-ASCII in
 * structured headers. Errors name `field` (default `headers.<name>`).
 */
export function renderHeader(name: string, value: string, field = `headers.${name}`): string {
  validateHeaderName(name);
  checkHeaderLength(value, field);
  forbidControls(value, field);
  if (STRUCTURED.test(name)) {
    requireAscii(value, field, `Header ${name}`);
    return foldTokens(name, value.split(' '), field);
  }
  return foldTokens(name, unstructuredTokens(value), field);
}

/** A display name as a phrase: atoms as they are, a quoted-string when needed, encoded-words when non-ASCII. */
function phraseTokens(displayName: string): string[] {
  if (!isAscii(displayName) || /[\x00-\x1f\x7f]/.test(displayName) || displayName.includes('=?')) {
    return encodeWords(displayName);
  }
  if (/^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+$/.test(displayName) && !/^ | $| {2}/.test(displayName)) {
    return displayName.split(' ');
  }
  return [`"${displayName.replace(/(["\\])/g, '\\$1')}"`];
}

/**
 * Renders an address header (From, To, ...) from parsed addresses, folding between addresses and
 * words. ASCII unless an addr-spec has a non-ASCII local part: that addr-spec is written as raw
 * UTF-8 (RFC 6532 §3.2) and the result is {@link Utf8HeaderLines}; display names stay RFC 2047.
 */
export function renderAddressHeader(name: string, addresses: ParsedAddress[]): RenderedHeader {
  validateHeaderName(name);
  const field = `headers.${name}`;
  const tokens: HeaderToken[] = [];
  addresses.forEach((address, index) => {
    const comma = index < addresses.length - 1 ? ',' : '';
    const utf8 = isUtf8AddrSpec(address.addrSpec);
    if (address.displayName === '') {
      tokens.push(
        utf8 ? new Utf8AddrSpecToken('', address.addrSpec, comma, field) : address.addrSpec + comma,
      );
    } else {
      for (const token of phraseTokens(address.displayName)) tokens.push(token);
      tokens.push(
        utf8
          ? new Utf8AddrSpecToken('<', address.addrSpec, `>${comma}`, field)
          : `<${address.addrSpec}>${comma}`,
      );
    }
  });
  return foldTokens(name, tokens, field);
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => String(n).padStart(2, '0');

/** RFC 5322 §3.3 date-time, in UTC (`+0000`) or in the process's local time zone. */
export function formatDate(date: Date, localTime = false): string {
  if (Number.isNaN(date.getTime())) throw new ValidationError('Invalid Date given for a Date header');
  if (!localTime) {
    return `${DAYS[date.getUTCDay()]}, ${pad(date.getUTCDate())} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} ${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`;
  }
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const zone = `${sign}${pad(Math.floor(Math.abs(offset) / 60))}${pad(Math.abs(offset) % 60)}`;
  return `${DAYS[date.getDay()]}, ${pad(date.getDate())} ${MONTHS[date.getMonth()]} ${date.getFullYear()} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())} ${zone}`;
}

let messageIdHost: string | undefined;
let messageIdCounter = 0;

/** The host part of generated Message-IDs: this machine's name, punycoded (Django's DNS_NAME). */
export function messageIdDomain(): string {
  if (messageIdHost === undefined) {
    const name = hostname() || 'localhost';
    messageIdHost = domainToASCII(name) || 'localhost';
  }
  return messageIdHost;
}

/** A new, unique Message-ID (`<time.pid.counter.random@host>`), as Python's make_msgid. */
export function makeMessageId(): string {
  messageIdCounter = (messageIdCounter + 1) % 1_000_000_000;
  return `<${Date.now()}.${process.pid}.${messageIdCounter}.${randomHex(6)}@${messageIdDomain()}>`;
}
