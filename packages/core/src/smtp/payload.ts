/** Message bytes framed for SMTP: CRLF line endings, at most 998 octets a line, dot-stuffed for DATA. */
import { ValidationError } from '../errors.js';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
/** RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF. */
export const MAX_LINE_OCTETS = 998;
const TERMINATOR = Buffer.from('.\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

/** How a message travels: after DATA (dot-stuffed, ends with `.`) or as one `BDAT n LAST` chunk. */
export type PayloadMode = 'data' | 'bdat';

/**
 * Whether the bytes can go out unchanged: every CR is followed by LF, every LF preceded by CR, no
 * line longer than 998 octets, and (for DATA) no line starts with ".". `'unterminated'` when that
 * holds but the last line lacks its CRLF (core's messages end that way, as Django's do): a CRLF
 * chunk after them is all they need. For DATA, the start of every line beginning with "." goes in
 * `dots` (a stuffing dot is put before it). Two native scans (Buffer#indexOf), no copy.
 */
function cleanliness(bytes: Buffer, mode: PayloadMode, dots: number[]): 'clean' | 'unterminated' | 'dirty' {
  const length = bytes.length;
  if (length === 0) return 'clean';
  let lineStart = 0;
  for (let lf = bytes.indexOf(LF); lf !== -1; lf = bytes.indexOf(LF, lineStart)) {
    if (lf === 0 || bytes[lf - 1] !== CR) return 'dirty';
    if (lf - 1 - lineStart > MAX_LINE_OCTETS) return 'dirty';
    if (mode === 'data' && bytes[lineStart] === DOT) dots.push(lineStart);
    lineStart = lf + 1;
  }
  for (let cr = bytes.indexOf(CR); cr !== -1; cr = bytes.indexOf(CR, cr + 2)) {
    if (bytes[cr + 1] !== LF) return 'dirty';
  }
  if (lineStart === length) return 'clean';
  // The last line, without its CRLF.
  if (length - lineStart > MAX_LINE_OCTETS) return 'dirty';
  if (mode === 'data' && bytes[lineStart] === DOT) dots.push(lineStart);
  return 'unterminated';
}

const STUFFING = Buffer.from('.', 'latin1');

/** The bytes as slices with a stuffing dot before each line that starts with "." (no copy). */
function stuffed(bytes: Buffer, dots: readonly number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let from = 0;
  for (const at of dots) {
    if (at > from) chunks.push(bytes.subarray(from, at));
    chunks.push(STUFFING);
    from = at;
  }
  chunks.push(bytes.subarray(from));
  return chunks;
}

/**
 * The bytes rewritten so that they are safe on the wire: bare CR, bare LF and CRLF all become CRLF
 * (so no body can hold "<CR><LF>.<CR><LF>" in a form one side reads as the end of the message and
 * the other does not: SMTP smuggling), a final CRLF is added, and for DATA every line starting with
 * "." gets a second one (RFC 5321 §4.5.2). A line over 998 octets cannot be sent without changing
 * the message, so it is refused: mailroom's own messages never hold one (long lines are encoded).
 */
function normalise(bytes: Buffer, mode: PayloadMode): Buffer {
  const out = Buffer.allocUnsafe(bytes.length * 2 + 2);
  let o = 0;
  let lineStart = 0;
  let line = 1;
  // The dot added by stuffing is not part of the line's length (RFC 5321 §4.5.2).
  let stuffed = 0;
  const endLine = () => {
    const length = o - lineStart - stuffed;
    if (length > MAX_LINE_OCTETS) {
      throw new ValidationError(
        `line ${line} of the message is ${length} octets long; SMTP allows at most ${MAX_LINE_OCTETS}`,
        { field: 'message' },
      );
    }
    out[o++] = CR;
    out[o++] = LF;
    lineStart = o;
    stuffed = 0;
    line++;
  };
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i] as number;
    if (byte === CR) {
      if (bytes[i + 1] === LF) i++;
      endLine();
    } else if (byte === LF) {
      endLine();
    } else {
      if (mode === 'data' && byte === DOT && o === lineStart) {
        out[o++] = DOT;
        stuffed = 1;
      }
      out[o++] = byte;
    }
  }
  if (o !== lineStart) endLine();
  return out.subarray(0, o);
}

/**
 * The chunks that carry `bytes` as one message: for `bdat` the data of `BDAT n LAST` (its length is
 * the sum of the chunks), for `data` what follows the 354 reply, terminator included.
 */
export function framePayload(bytes: Buffer, mode: PayloadMode): Buffer[] {
  const dots: number[] = [];
  const state = cleanliness(bytes, mode, dots);
  if (state === 'dirty') {
    const body = normalise(bytes, mode);
    return mode === 'bdat' ? [body] : [body, TERMINATOR];
  }
  const body = dots.length > 0 ? stuffed(bytes, dots) : [bytes];
  if (state === 'unterminated') body.push(CRLF);
  if (mode === 'data') body.push(TERMINATOR);
  return body;
}

/** Total length of framed chunks. */
export function payloadLength(chunks: readonly Buffer[]): number {
  let length = 0;
  for (const chunk of chunks) length += chunk.length;
  return length;
}
