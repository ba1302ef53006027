/** Escaping of text that comes from data (SMTP replies, job data, files) before the CLI prints it. */

/**
 * What a terminal may act on instead of showing: C0 controls (ESC starts every escape sequence, BEL
 * ends OSC ones such as "set window title"), DEL, C1 controls (U+009B is a one-character CSI, U+009D an
 * OSC), the line and paragraph separators U+2028/U+2029, and the bidi embeddings, overrides and
 * isolates that reorder what is shown (Trojan Source, CVE-2021-42574).
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Readonly<Record<string, string>> = { '\t': '\\t', '\n': '\\n', '\r': '\\r' };

function escapeCharacter(character: string): string {
  const code = character.charCodeAt(0);
  const named = NAMED[character];
  if (named !== undefined) return named;
  if (code < 0x20) return `\\x${code.toString(16).padStart(2, '0')}`;
  return `\\u${code.toString(16).padStart(4, '0')}`;
}

/** Options of {@link forTerminal}. */
export interface TerminalTextOptions {
  /**
   * Keep LF as a line break, for text that is several lines by design (a usage text, a report whose
   * values were escaped on their own). Default false: a LF is shown as `\n`, so a value cannot start
   * a line that looks like output of its own.
   */
  keepLineBreaks?: boolean;
}

/**
 * Returns `text` with every character a terminal could act on shown escaped instead: TAB, LF and CR
 * as `\t`, `\n`, `\r`; other C0 controls as `\x1b`; DEL, C1 controls, U+2028/U+2029 and the bidi
 * controls (U+202A-U+202E, U+2066-U+2069) as `\u009b`. Everything else is unchanged (backslashes too:
 * the result is for reading, `--json` is the exact form). Never throws.
 *
 * Only C0 controls get the `\x` form, which JSON lacks: applied to JSON text (JSON.stringify leaves
 * no raw C0 control but does leave DEL, C1, U+2028 and bidi controls raw), the result is still JSON
 * and parses to the same value.
 */
export function forTerminal(text: string, options: TerminalTextOptions = {}): string {
  return text.replace(UNSAFE, (character) =>
    character === '\n' && options.keepLineBreaks ? character : escapeCharacter(character),
  );
}
