/** The checks every piece of text bound for a header passes: no controls, no lossy characters, a bounded length. */
import { BadHeaderError, quoteValue, ValidationError } from './errors.js';

/**
 * Characters no header value or envelope address may hold: C0 controls but TAB (RFC 5322 allows
 * it as white space), DEL, C1 controls (U+0085 is a line break to some readers) and the Unicode line
 * and paragraph separators. They are refused rather than encoded: nobody sends them on purpose, and
 * a reader that decodes an encoded-word may still act on them.
 */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]/;
const NEWLINE = /[\r\n]/;

/**
 * Longest header value accepted, in characters (subject, extra headers, one address). Encoded and
 * folded, 16,384 characters stay under the 100 KB a header may take at Postfix (header_size_limit)
 * and keep a hostile value (an 8 MB CSV field in a subject) a clear error instead of a stack overflow.
 */
export const MAX_HEADER_VALUE = 16_384;

/** Throws {@link ValidationError} naming `field` when a header value is longer than {@link MAX_HEADER_VALUE}. */
export function checkHeaderLength(value: string, field: string): void {
  if (value.length > MAX_HEADER_VALUE) {
    throw new ValidationError(
      `${field} is ${value.length} characters long; a header value may have at most ${MAX_HEADER_VALUE}`,
      { field },
    );
  }
}

/** `U+000B`: how an error names a character. */
export function codePoint(char: string): string {
  return `U+${(char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * Throws {@link BadHeaderError} when a header value, an address or any text bound for a header
 * carries CR or LF (Django's check) or any other control character (see CONTROL), naming `field`.
 */
export function forbidControls(value: string, field: string): void {
  const found = CONTROL.exec(value);
  if (found === null) return;
  if (NEWLINE.test(value)) {
    throw new BadHeaderError(
      `Header values can't contain newlines (got ${quoteValue(value)} for header ${JSON.stringify(field)})`,
      { field },
    );
  }
  throw new BadHeaderError(
    `Header values can't contain control characters (${codePoint(found[0])} at position ${found.index} of ${quoteValue(value)} for header ${JSON.stringify(field)})`,
    { field },
  );
}

/**
 * Throws {@link BadHeaderError} naming `field` when `value` has a character outside printable ASCII
 * (and TAB): for the places of a header that no encoding covers (domain literals, MIME tokens,
 * structured headers), where such a character could only reach the wire through a lossy conversion.
 */
export function requireAscii(value: string, field: string, what: string): void {
  forbidControls(value, field);
  const found = /[^\t\x20-\x7e]/.exec(value);
  if (found === null) return;
  throw new BadHeaderError(
    `${what} must be printable ASCII (${codePoint(found[0])} at position ${found.index} of ${quoteValue(value)} for ${JSON.stringify(field)})`,
    { field },
  );
}

// RFC 2045 §5.1 token: printable ASCII but space and tspecials.
const TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const MIME_TOKEN = new RegExp(`^${TOKEN}$`);
const MIME_TYPE = new RegExp(`^${TOKEN}/${TOKEN}$`);

/**
 * Throws {@link BadHeaderError} naming `field` unless `value` is an RFC 2045 token (a subtype, a
 * disposition, a charset) or, with `kind` `type`, a `type/subtype` pair.
 */
export function checkMimeToken(value: unknown, field: string, kind: 'token' | 'type' = 'token'): void {
  const ok = typeof value === 'string' && (kind === 'type' ? MIME_TYPE : MIME_TOKEN).test(value);
  if (!ok) {
    throw new BadHeaderError(
      `${field} must be ${kind === 'type' ? 'a MIME type like "text/plain"' : "a MIME token (letters, digits and !#$%&'*+-.^_`|~)"} (got ${quoteValue(value)})`,
      { field },
    );
  }
}
