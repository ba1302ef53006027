/** forTerminal and the CLI's writers built on it: nothing from data reaches a terminal raw. */
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { printJson } from '../src/cli/common.js';
import { type CliContext, jsonLogStream, printLines, println } from '../src/cli/io.js';
import { forTerminal } from '../src/cli/terminal.js';

/** Every character a terminal may act on (the set forTerminal promises to escape). */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** Strings rich in the characters that matter, mixed with any other UTF-16 code units. */
const hostile = fc.string({
  unit: fc.oneof(
    fc.constantFrom(
      '\x1b',
      '\x07',
      '\n',
      '\r',
      '\t',
      '\x00',
      '\x7f',
      '\x85',
      '\x9b',
      '\x9d',
      '\u2028',
      '\u2029',
    ),
    fc.constantFrom('\u202a', '\u202e', '\u2066', '\u2069', '[', ']', ';', '\\', '"', 'é', '日'),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
  ),
  maxLength: 40,
});

/** A writable that keeps what was written, as text. */
function capture(): { stream: PassThrough; text(): string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

describe('forTerminal', () => {
  it('shows ESC as \\x1b, so a colour sequence prints as text', () => {
    expect(forTerminal('\x1b[31mred\x1b[0m')).toBe('\\x1b[31mred\\x1b[0m');
  });

  it('shows BEL and a window-title sequence as text', () => {
    expect(forTerminal('ding\x07 \x1b]0;owned\x07')).toBe('ding\\x07 \\x1b]0;owned\\x07');
  });

  it('shows TAB, LF and CR inside a value as \\t, \\n and \\r', () => {
    expect(forTerminal('a\tb\nc\rd\r\n')).toBe('a\\tb\\nc\\rd\\r\\n');
  });

  it('shows NUL and the other C0 controls in \\x form', () => {
    expect(forTerminal('\x00\x08\x0b\x0c\x1f')).toBe('\\x00\\x08\\x0b\\x0c\\x1f');
  });

  it('shows DEL and C1 controls (U+009B is a one-character CSI) in \\u form', () => {
    expect(forTerminal('\x7f\x80\x85\x9b2J\x9d0;t\x9c\x9f')).toBe(
      '\\u007f\\u0080\\u0085\\u009b2J\\u009d0;t\\u009c\\u009f',
    );
  });

  it('shows the line and paragraph separators U+2028 and U+2029', () => {
    expect(forTerminal('one\u2028two\u2029three')).toBe('one\\u2028two\\u2029three');
  });

  it('shows the bidi embeddings, overrides and isolates', () => {
    expect(forTerminal('\u202a\u202b\u202c\u202d\u202e|\u2066\u2067\u2068\u2069')).toBe(
      '\\u202a\\u202b\\u202c\\u202d\\u202e|\\u2066\\u2067\\u2068\\u2069',
    );
  });

  it('leaves printable text alone, non-ASCII and backslashes included', () => {
    const text = 'Zoë <zoe@example.com> · 550 5.1.1 日本語 \u00a0 ✉️ C:\\mail\\x1b "quoted"';
    expect(forTerminal(text)).toBe(text);
  });

  it('keeps line breaks only when asked, and escapes everything else then too', () => {
    expect(forTerminal('a\nb\r\n\x1b[2J', { keepLineBreaks: true })).toBe('a\nb\\r\n\\x1b[2J');
  });

  it('leaves no character a terminal acts on, for any input', () => {
    fc.assert(
      fc.property(hostile, (text) => {
        expect(forTerminal(text)).not.toMatch(UNSAFE);
        expect(forTerminal(text, { keepLineBreaks: true }).replaceAll('\n', '')).not.toMatch(UNSAFE);
      }),
    );
  });

  it('changes nothing the second time (escaped output has nothing left to escape)', () => {
    fc.assert(
      fc.property(hostile, (text) => {
        const once = forTerminal(text);
        expect(forTerminal(once)).toBe(once);
      }),
    );
  });

  it('turns JSON text into JSON that parses to the same value', () => {
    fc.assert(
      fc.property(hostile, hostile, (key, value) => {
        const json = JSON.stringify({ [key]: [value, { value }] });
        expect(JSON.parse(forTerminal(json))).toEqual({ [key]: [value, { value }] });
      }),
    );
  });
});

describe('the CLI writers', () => {
  it('println writes one line: a line break in the text is shown, not made', () => {
    const out = capture();
    println(out.stream, 'job 7 · \x1b[31mred\x07\nfake line\u2028');
    expect(out.text()).toBe('job 7 · \\x1b[31mred\\x07\\nfake line\\u2028\n');
  });

  it('printLines keeps the line breaks of a multi-line text and escapes the rest', () => {
    const out = capture();
    printLines(out.stream, 'state  running\nname   \x9b31m');
    expect(out.text()).toBe('state  running\nname   \\u009b31m\n');
  });

  it('printJson escapes C1 controls and U+2028 and still prints the same value', () => {
    const out = capture();
    const value = { detail: '550 \x1b[31m\x07\x9b2J\u2028\u202e\x7f' };
    printJson({ stdout: out.stream } as unknown as CliContext, value);
    const line = out.text();
    expect(line.endsWith('}\n')).toBe(true);
    expect(line.slice(0, -1)).not.toMatch(UNSAFE);
    expect(JSON.parse(line)).toEqual(value);
  });

  it('jsonLogStream gives pino JSON lines that parse to the logged values', () => {
    const out = capture();
    const detail = '550 \x1b]0;title\x07 \x9b2J \u2028 \u2066';
    const logger = pino({ base: null, timestamp: false }, jsonLogStream(out.stream));
    logger.error({ detail }, 'refused: %s', detail);
    logger.info('second line');
    const lines = out.text().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toBe('');
    for (const line of lines.slice(0, 2)) expect(line).not.toMatch(UNSAFE);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ detail, msg: `refused: ${detail}` });
    expect(JSON.parse(lines[1] as string)).toMatchObject({ msg: 'second line' });
  });
});
