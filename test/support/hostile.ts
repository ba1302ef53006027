/**
 * Hostile input shared by the injection tests: the characters of the issue-9 attack run and a
 * checker of raw header bytes as they reached an SMTP server, and a deflate bomb.
 */
import { once } from 'node:events';
import { createDeflateRaw } from 'node:zlib';

/** Line breaks, other controls, and the low-byte look-alikes (U+010D ends in 0x0D, U+010A in 0x0A). */
export const HOSTILE_CHARACTERS: Record<string, string> = {
  CR: '\r',
  LF: '\n',
  CRLF: '\r\n',
  'bare CR': '\rX',
  'U+0085': '\u0085',
  'U+2028': '\u2028',
  'U+2029': '\u2029',
  NUL: '\u0000',
  VT: '\u000b',
  FF: '\u000c',
  'U+010D': '\u010d',
  'U+010A': '\u010a',
  'U+FF0D': '\uff0d',
  'U+FF0A': '\uff0a',
  'U+0D0A': '\u0d0a',
  'U+010D U+010A': '\u010d\u010a',
};

/** The names in {@link HOSTILE_CHARACTERS} that are control characters (always refused). */
export const CONTROL_NAMES = new Set([
  'CR',
  'LF',
  'CRLF',
  'bare CR',
  'U+0085',
  'U+2028',
  'U+2029',
  'NUL',
  'VT',
  'FF',
]);

/** What an attacker appends after `c`: a header of their own and the start of a body of their own. */
export const inject = (c: string): string => `${c}Bcc: victim@attacker.example${c}${c}<h1>attacker body</h1>`;

/**
 * What is wrong with the header section of raw message bytes: anything but printable ASCII, a line
 * that is neither a `Name:` header nor a folded continuation, a bare CR or LF, a Bcc line.
 */
export function headerProblems(raw: Buffer): string[] {
  const text = raw.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  if (end === -1) return ['no end of headers'];
  const section = text.slice(0, end);
  const problems: string[] = [];
  if (/\r(?!\n)|(?<!\r)\n/.test(section)) problems.push('bare CR or LF in the header section');
  for (const line of section.split('\r\n')) {
    if (/[^\t\x20-\x7e]/.test(line)) problems.push(`non-printable byte in ${JSON.stringify(line)}`);
    if (!/^[\x21-\x39\x3b-\x7e]+:/.test(line) && !/^[ \t]/.test(line)) {
      problems.push(`neither a header nor a continuation: ${JSON.stringify(line)}`);
    }
    if (/^bcc:/i.test(line)) problems.push(`an injected Bcc line: ${JSON.stringify(line)}`);
  }
  return problems;
}

/** base64(deflateRaw(`bytes` zero bytes)), made a MiB at a time so that making it takes no memory. */
export async function deflateBomb(bytes: number): Promise<string> {
  const deflate = createDeflateRaw({ level: 9 });
  const chunks: Buffer[] = [];
  deflate.on('data', (chunk: Buffer) => chunks.push(chunk));
  const zeros = Buffer.alloc(1024 * 1024);
  for (let written = 0; written < bytes; written += zeros.length) {
    if (!deflate.write(zeros)) await once(deflate, 'drain');
  }
  deflate.end();
  await once(deflate, 'end');
  return Buffer.concat(chunks).toString('base64');
}
