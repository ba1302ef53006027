/** Parsing one address or a header-style list into display name and addr-spec: IDN punycoded, UTF-8 local parts checked. */
import { domainToASCII } from 'node:url';
import { BadHeaderError, InvalidAddressError, quoteValue } from './errors.js';
import { checkHeaderLength, codePoint, forbidControls, requireAscii } from './header-text.js';

/** One parsed address: what a header shows and what the SMTP envelope uses. */
export interface ParsedAddress {
  /** Display name as the user wrote it (unquoted, unescaped); '' when there is none. */
  displayName: string;
  /**
   * The addr-spec with its domain punycoded and a non-ASCII local part in NFC: what goes inside
   * `<...>` and into MAIL FROM / RCPT TO.
   */
  addrSpec: string;
}

// RFC 5322 §3.2.3 atext, plus the dot of dot-atom.
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+$/;
const NON_ASCII = /[^\x00-\x7f]/;
// RFC 6531 §3.3 / RFC 6532 §3.2 let atext hold any UTF-8 character; we take only letters, marks and
// numbers (general categories L*, M*, N*) beyond ASCII. Everything else (controls, format characters
// such as bidi overrides and zero-width ones, separators, private use, unassigned code points, lone
// surrogates, symbols and punctuation such as U+FF20 FULLWIDTH COMMERCIAL AT) can hide or fake part
// of an address, and no real mailbox needs it.
const UTF8_DOT_ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.\p{L}\p{M}\p{N}]+$/u;
// A combining mark on a dot, an ASCII symbol or nothing (IDNA2008 refuses a label that starts with one).
const LOOSE_MARK = /(?:^|[^\p{L}\p{M}\p{N}])\p{M}/u;
// What a refused character is, for the error message (the first that matches).
const CHARACTER_KINDS: [RegExp, string][] = [
  [/\p{Cc}/u, 'a control character'],
  [/\p{Cf}/u, 'a format character (bidi, zero-width or byte-order mark)'],
  [/\p{Z}/u, 'a space or separator'],
  [/\p{Cs}/u, 'a lone surrogate'],
  [/\p{Co}/u, 'a private-use character'],
  [/\p{Cn}/u, 'an unassigned code point'],
  [/\p{P}/u, 'punctuation'],
  [/\p{S}/u, 'a symbol'],
];
// RFC 5321 §4.1.2 quoted-string (it goes into MAIL FROM / RCPT TO as it is): printable ASCII and
// spaces, no TAB; nor "<" or ">", which would end the path early for some servers and libraries.
const QUOTED_LOCAL = /^"(?:[\x20\x21\x23-\x3b\x3d\x3f-\x5b\x5d-\x7e]|\\[\x20-\x3b\x3d\x3f-\x7e])*"$/;
// A quoted display name: any character but an unescaped quote (controls are refused before this;
// non-ASCII names are RFC 2047 encoded when rendered).
const QUOTED_PHRASE = /^"(?:[^"\\]|\\.)*"$/;
// RFC 5322 §3.4.1 domain-literal: dtext is printable ASCII but "[", "]" and "\". Nothing encodes a
// domain literal, so any other character could only reach the header through a lossy conversion.
const DOMAIN_LITERAL = /^\[[\x21-\x5a\x5e-\x7e]*\]$/;
// Characters a display name may not contain unless it is a quoted-string (RFC 5322 §3.2.3 specials).
const PHRASE_SPECIALS = /[,;:<>@"[\]\\]/;

function invalid(value: string, reason: string, field?: string): InvalidAddressError {
  return new InvalidAddressError(`Invalid address ${quoteValue(value)}: ${reason}`, field ? { field } : {});
}

/** Splits at the first character `target` that is outside a quoted-string, scanning from the end when `fromEnd`. */
function findUnquoted(text: string, target: string, fromEnd: boolean): number {
  let found = -1;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (quoted && char === '\\') {
      i++;
      continue;
    }
    if (char === '"') quoted = !quoted;
    else if (!quoted && char === target) {
      found = i;
      if (!fromEnd) return i;
    }
  }
  return found;
}

function unquote(text: string): string {
  return text.slice(1, -1).replace(/\\(.)/g, '$1');
}

/**
 * Checks an internationalised (non-ASCII, already NFC) local part and returns it: a dot-atom of
 * ASCII atext and non-ASCII letters, marks and digits ({@link UTF8_DOT_ATOM}), no compatibility
 * character, no combining mark without a base. Throws {@link InvalidAddressError} naming the first
 * refused character.
 */
function checkUtf8LocalPart(local: string, original: string, field?: string): string {
  if (local.startsWith('"')) {
    // RFC 6531 allows UTF-8 in a quoted-string too; nothing needs it, and a quoted local part may
    // hold spaces and specials that make look-alikes easy. Keep UTF-8 to dot-atoms.
    throw invalid(
      original,
      "a quoted local part must be ASCII; a non-ASCII local part must be unquoted (letters, marks, digits and . ! # $ % & ' * + - / = ? ^ _ ` { | } ~)",
      field,
    );
  }
  const what = `the local part ${quoteValue(local)}`;
  for (const char of local) {
    if (UTF8_DOT_ATOM.test(char)) {
      // RFC 8264 (PRECIS IdentifierClass) refuses compatibility characters: fullwidth "ｊｏｅ" or
      // the ligature "ﬁ" would show as, but not be, "joe" and "fi".
      if (char.normalize('NFKC') !== char) {
        throw invalid(
          original,
          `${what} has ${codePoint(char)}, a compatibility character (write ${quoteValue(char.normalize('NFKC'))} instead)`,
          field,
        );
      }
      continue;
    }
    if (!NON_ASCII.test(char)) {
      throw invalid(
        original,
        `${what} has ${quoteValue(char)}, which a non-ASCII local part cannot quote`,
        field,
      );
    }
    const kind =
      CHARACTER_KINDS.find(([pattern]) => pattern.test(char))?.[1] ?? 'not a letter, mark or digit';
    throw invalid(
      original,
      `${what} has ${codePoint(char)} (${kind}); beyond ASCII a local part may hold only letters, marks and digits`,
      field,
    );
  }
  if (LOOSE_MARK.test(local)) {
    throw invalid(original, `${what} has a combining mark that follows no letter or digit`, field);
  }
  return local;
}

/**
 * True when `addrSpec` is an internationalised addr-spec as {@link normalizeAddrSpec} returns it: a
 * non-ASCII NFC local part of letters, marks, digits and atext, and an ASCII domain (punycoded, a
 * domain literal) or none. Such an address needs SMTPUTF8 (RFC 6531) and is written in headers as
 * raw UTF-8 (RFC 6532). False for ASCII addresses and for anything else.
 */
export function isUtf8AddrSpec(addrSpec: string): boolean {
  if (typeof addrSpec !== 'string' || !NON_ASCII.test(addrSpec)) return false;
  const at = addrSpec.lastIndexOf('@');
  const local = at === -1 ? addrSpec : addrSpec.slice(0, at);
  const domain = at === -1 ? null : addrSpec.slice(at + 1);
  if (domain !== null && !/^(?:[A-Za-z0-9.\-_]+|\[[\x21-\x5a\x5e-\x7e]*\])$/.test(domain)) return false;
  try {
    return local.normalize('NFC') === local && checkUtf8LocalPart(local, addrSpec) === local;
  } catch {
    return false;
  }
}

/**
 * Validates an addr-spec and punycodes its domain (IDNA via WHATWG `domainToASCII`); a non-ASCII
 * local part is NFC-normalised and checked (see {@link isUtf8AddrSpec}). Throws
 * {@link InvalidAddressError} ("Invalid address ...") naming `field`.
 */
export function normalizeAddrSpec(addrSpec: string, original: string, field?: string): string {
  if (addrSpec === '') throw invalid(original, 'the address is empty', field);
  const at = findUnquoted(addrSpec, '@', true);
  let local = at === -1 ? addrSpec : addrSpec.slice(0, at);
  const domain = at === -1 ? null : addrSpec.slice(at + 1);
  if (local === '') throw invalid(original, 'the local part (before @) is empty', field);
  if (NON_ASCII.test(local)) {
    // RFC 6531 (SMTPUTF8): the local part goes into the envelope and the headers as UTF-8, in NFC so
    // that one mailbox has one spelling (RFC 6532 §3.1).
    local = checkUtf8LocalPart(local.normalize('NFC'), original, field);
  } else if (!DOT_ATOM.test(local) && !QUOTED_LOCAL.test(local)) {
    throw invalid(original, `the local part ${quoteValue(local)} has characters that must be quoted`, field);
  }
  if (domain === null) return local; // Django allows a bare local part, e.g. "root".
  if (domain === '') throw invalid(original, 'the domain (after @) is empty', field);
  if (domain.startsWith('[')) {
    requireAscii(domain, field ?? 'address', 'A domain literal');
    if (!DOMAIN_LITERAL.test(domain)) {
      throw invalid(original, `the domain literal ${quoteValue(domain)} is malformed`, field);
    }
    return `${local}@${domain}`;
  }
  // WHATWG's domainToASCII also percent-decodes and rewrites numbers as IPv4 (`exa%6dple.com` is
  // example.com, `0x7f.1` is 127.0.0.1): one mailbox would pass under many spellings. An address
  // gives a domain name as it is, or an IP address as a literal ([192.0.2.1]).
  if (domain.includes('%')) throw invalid(original, `the domain ${quoteValue(domain)} has a "%"`, field);
  const ascii = domainToASCII(domain);
  if (ascii === '' || /[^A-Za-z0-9.\-_]/.test(ascii) || ascii.startsWith('.') || ascii.includes('..')) {
    throw invalid(original, `the domain ${quoteValue(domain)} is not a valid (IDNA) domain name`, field);
  }
  if (/^[\d.]+$/.test(ascii)) {
    throw invalid(original, `an IP address goes in brackets, as a domain literal: [${ascii}]`, field);
  }
  return `${local}@${ascii}`;
}

/**
 * Parses ONE address, `Name <local@domain>`, `"Doe, John" <j@x>`, `<a@b>` or a bare `a@b`.
 * Throws {@link BadHeaderError} for CR/LF and {@link InvalidAddressError} ("Invalid address ...")
 * for anything that is not exactly one usable address.
 */
export function parseAddress(value: string, field = 'address'): ParsedAddress {
  if (typeof value !== 'string') {
    throw new TypeError(`${field} must be a string address, got ${typeof value}`);
  }
  checkHeaderLength(value, field);
  forbidControls(value, field);
  const text = value.trim();
  if (text.endsWith('>')) {
    const lt = findUnquoted(text, '<', true);
    if (lt === -1) throw invalid(value, 'unbalanced angle brackets', field);
    const display = text.slice(0, lt).trim();
    const addrSpec = normalizeAddrSpec(text.slice(lt + 1, -1).trim(), value, field);
    return { displayName: parseDisplayName(display, value, field), addrSpec };
  }
  if (findUnquoted(text, ',', false) !== -1) {
    throw invalid(
      value,
      'only one address is allowed per list entry (quote display names with commas)',
      field,
    );
  }
  if (/[\s<>]/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, ''))) {
    throw invalid(value, 'an address without angle brackets cannot contain spaces or < >', field);
  }
  return { displayName: '', addrSpec: normalizeAddrSpec(text, value, field) };
}

function parseDisplayName(display: string, original: string, field: string): string {
  if (display === '') return '';
  if (display.startsWith('"') && display.endsWith('"') && display.length >= 2) {
    if (!QUOTED_PHRASE.test(display)) throw invalid(original, 'badly quoted display name', field);
    return unquote(display);
  }
  if (PHRASE_SPECIALS.test(display)) {
    throw invalid(
      original,
      `the display name ${quoteValue(display)} has special characters; put it in double quotes`,
      field,
    );
  }
  return display;
}

/**
 * Parses a header-style address list (`a@x, "B, C" <b@y>`), used for From/To/Cc/Reply-To given as
 * extra headers. Empty entries are skipped.
 */
export function parseAddressList(value: string, field: string): ParsedAddress[] {
  checkHeaderLength(value, field);
  forbidControls(value, field);
  const result: ParsedAddress[] = [];
  let start = 0;
  let quoted = false;
  let angle = 0;
  for (let i = 0; i <= value.length; i++) {
    const char = value[i];
    if (quoted && char === '\\') {
      i++;
      continue;
    }
    if (char === '"') quoted = !quoted;
    else if (!quoted && char === '<') angle++;
    else if (!quoted && char === '>') angle = Math.max(0, angle - 1);
    else if (char === undefined || (!quoted && angle === 0 && char === ',')) {
      const entry = value.slice(start, i).trim();
      if (entry !== '') result.push(parseAddress(entry, field));
      start = i + 1;
    }
  }
  return result;
}

/**
 * The envelope form of one address string: the addr-spec with its domain IDN punycoded and a
 * non-ASCII local part as UTF-8 in NFC (`用户@xn--fsqu00a.xn--4rr70v`), which needs SMTPUTF8.
 */
export function envelopeAddress(value: string, field = 'address'): string {
  return parseAddress(value, field).addrSpec;
}
