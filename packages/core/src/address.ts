/** Parsing one address or a header-style list into display name and addr-spec, IDN punycoded. */
import { domainToASCII } from 'node:url';
import { BadHeaderError, InvalidAddressError, quoteValue } from './errors.js';
import { checkHeaderLength, forbidControls, requireAscii } from './header-text.js';

/** One parsed address: what a header shows and what the SMTP envelope uses. */
export interface ParsedAddress {
  /** Display name as the user wrote it (unquoted, unescaped); '' when there is none. */
  displayName: string;
  /** The addr-spec with its domain punycoded: what goes inside `<...>` and into MAIL FROM / RCPT TO. */
  addrSpec: string;
}

// RFC 5322 §3.2.3 atext, plus the dot of dot-atom.
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+$/;
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

/** Validates an addr-spec and punycodes its domain (IDNA via WHATWG `domainToASCII`). */
export function normalizeAddrSpec(addrSpec: string, original: string, field?: string): string {
  if (addrSpec === '') throw invalid(original, 'the address is empty', field);
  const at = findUnquoted(addrSpec, '@', true);
  const local = at === -1 ? addrSpec : addrSpec.slice(0, at);
  const domain = at === -1 ? null : addrSpec.slice(at + 1);
  if (local === '') throw invalid(original, 'the local part (before @) is empty', field);
  if (/[^\x00-\x7f]/.test(local)) {
    // RFC 6531 (SMTPUTF8) would be needed, and the header could not stay ASCII.
    throw invalid(original, 'non-ASCII local parts are not supported (they need SMTPUTF8)', field);
  }
  if (!DOT_ATOM.test(local) && !QUOTED_LOCAL.test(local)) {
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

/** The envelope form (addr-spec, IDN punycoded) of one address string. */
export function envelopeAddress(value: string, field = 'address'): string {
  return parseAddress(value, field).addrSpec;
}
