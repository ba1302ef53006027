/** Body encodings: CRLF normalisation, charsets, and the 7bit/8bit/quoted-printable/base64 choice. */
import { isAscii } from 'node:buffer';
import iconv from 'iconv-lite';
import { ValidationError } from './errors.js';
import { MAX_LINE } from './headers.js';

/** A Content-Transfer-Encoding mailroom emits. */
export type TransferEncoding = '7bit' | '8bit' | 'quoted-printable' | 'base64';

const CR = 13;
const LF = 10;

/** Normalises CR, LF and CRLF line endings to CRLF. */
export function toCrlf(text: string): string {
  return text.includes('\r') || text.includes('\n') ? text.replace(/\r\n|\r|\n/g, '\r\n') : text;
}

/** Text of a text/* part: CRLF line endings and a final newline (Python's set_content does the same). */
export function textPartBody(text: string): string {
  const normalized = toCrlf(text);
  return normalized.endsWith('\r\n') ? normalized : `${normalized}\r\n`;
}

function isUtf8(charset: string): boolean {
  const c = charset.toLowerCase();
  return c === 'utf-8' || c === 'utf8';
}

/**
 * Encodes text in a charset. UTF-8 uses Buffer directly, anything else iconv-lite; text that the
 * charset cannot represent is a {@link ValidationError} instead of silent '?' substitution.
 */
export function encodeText(text: string, charset: string, field = 'body'): Buffer {
  if (isUtf8(charset)) return Buffer.from(text, 'utf8');
  if (!iconv.encodingExists(charset)) {
    throw new ValidationError(`Unknown charset ${JSON.stringify(charset)} for ${field}`, { field });
  }
  const bytes = iconv.encode(text, charset);
  if (iconv.decode(bytes, charset) !== text) {
    throw new ValidationError(`${field} cannot be encoded in charset ${JSON.stringify(charset)}`, { field });
  }
  return bytes;
}

/** Tells whether a charset can represent the text (UTF-8 always can). */
export function canEncode(text: string, charset: string): boolean {
  if (isUtf8(charset)) return true;
  if (!iconv.encodingExists(charset)) return false;
  return iconv.decode(iconv.encode(text, charset), charset) === text;
}

/**
 * RFC 2045 choice for CRLF text: 7bit when ASCII with every line <= 78 octets, 8bit when only the
 * ASCII test fails, otherwise the shorter of quoted-printable and base64 (Python's heuristic).
 */
export function chooseTextEncoding(bytes: Buffer): { encoding: TransferEncoding; body: Buffer } {
  // Native scans (memchr, simdutf) rather than a JS loop over every byte: this runs per text part of
  // every message a worker sends.
  let longest = 0;
  for (let start = 0; start < bytes.length; ) {
    let end = bytes.indexOf(LF, start);
    if (end === -1) end = bytes.length;
    const length = end - start - (end > start && bytes[end - 1] === CR ? 1 : 0);
    if (length > longest) longest = length;
    start = end + 1;
  }
  // RFC 2045 §2.7-2.8: neither 7bit nor 8bit data may contain NUL.
  if (longest <= MAX_LINE && bytes.indexOf(0) === -1) {
    return { encoding: isAscii(bytes) ? '7bit' : '8bit', body: bytes };
  }
  const qp = encodeQuotedPrintable(bytes);
  const base64Length = base64EncodedLength(bytes.length);
  if (qp.length <= base64Length) return { encoding: 'quoted-printable', body: qp };
  return { encoding: 'base64', body: encodeBase64(bytes) };
}

/** Length of {@link encodeBase64}'s output for n input bytes. */
function base64EncodedLength(n: number): number {
  const chars = Math.ceil(n / 3) * 4;
  return chars + Math.ceil(chars / 76) * 2;
}

/** Base64 in lines of 76 characters, each ending CRLF (RFC 2045 §6.8). */
export function encodeBase64(bytes: Buffer): Buffer {
  const text = bytes.toString('base64');
  if (text.length === 0) return Buffer.alloc(0);
  const out = Buffer.allocUnsafe(base64EncodedLength(bytes.length));
  let offset = 0;
  for (let i = 0; i < text.length; i += 76) {
    offset += out.write(text.slice(i, i + 76), offset, 'latin1');
    out[offset++] = CR;
    out[offset++] = LF;
  }
  return out;
}

const HEX = '0123456789ABCDEF';

/**
 * Quoted-printable (RFC 2045 §6.7) of CRLF text: CRLF stays a hard line break, lines are soft-broken
 * at 76 characters, trailing spaces and tabs are encoded.
 */
export function encodeQuotedPrintable(bytes: Buffer): Buffer {
  // Worst case: every byte becomes "=XX" plus a soft break every 25 bytes.
  const out = Buffer.allocUnsafe(bytes.length * 3 + Math.ceil(bytes.length / 25) * 3 + 3);
  let o = 0;
  let lineLength = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i] as number;
    if (byte === CR && bytes[i + 1] === LF) {
      out[o++] = CR;
      out[o++] = LF;
      lineLength = 0;
      i++;
      continue;
    }
    const atLineEnd = i + 1 === bytes.length || (bytes[i + 1] === CR && bytes[i + 2] === LF);
    const literal =
      (byte >= 33 && byte <= 126 && byte !== 0x3d) || ((byte === 32 || byte === 9) && !atLineEnd);
    const width = literal ? 1 : 3;
    // Soft line break "=" CRLF keeps every encoded line at most 76 characters.
    if (lineLength + width > 75) {
      out[o++] = 0x3d;
      out[o++] = CR;
      out[o++] = LF;
      lineLength = 0;
    }
    if (literal) out[o++] = byte;
    else {
      out[o++] = 0x3d;
      out[o++] = HEX.charCodeAt(byte >> 4);
      out[o++] = HEX.charCodeAt(byte & 15);
    }
    lineLength += width;
  }
  return out.subarray(0, o);
}
