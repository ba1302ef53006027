/** Strict flag parsing (node:util parseArgs) for every command; a mistyped flag gets a suggestion. */
import { parseArgs } from 'node:util';
import { UsageError } from './io.js';
import { closest } from './suggest.js';

/** Flag definitions in node:util parseArgs form. */
export type FlagSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

type Values<T extends FlagSpec> = {
  [K in keyof T]?: T[K]['type'] extends 'boolean'
    ? boolean
    : T[K]['multiple'] extends true
      ? string[]
      : string;
};

/**
 * Parses flags strictly; an unknown flag or a missing value is a UsageError that carries the usage
 * text. An unknown long flag close to a known one names it: `Unknown option '--form' (did you mean
 * --from?)`.
 */
export function parseFlags<T extends FlagSpec>(
  argv: string[],
  spec: T,
  usage: string,
): { values: Values<T>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: spec,
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Values<T>, positionals };
  } catch (error) {
    const suggestion =
      (error as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && suggestFlag(argv, spec);
    throw new UsageError(
      suggestion ? `${suggestion.message} (did you mean --${suggestion.flag}?)` : (error as Error).message,
      { usage },
    );
  }
}

/** The first unknown long flag of `argv` and the known flag closest to it, if one is close. */
function suggestFlag(argv: string[], spec: FlagSpec): { message: string; flag: string } | undefined {
  // Parsed again without strictness only to find which token was unknown (parseArgs does not say).
  const { tokens } = parseArgs({
    args: argv,
    options: spec,
    allowPositionals: true,
    strict: false,
    tokens: true,
  });
  const unknown = tokens.find((token) => token.kind === 'option' && !Object.hasOwn(spec, token.name));
  if (unknown?.kind !== 'option' || !unknown.rawName.startsWith('--')) return undefined;
  const flag = closest(unknown.name, Object.keys(spec));
  return flag === undefined ? undefined : { message: `Unknown option '${unknown.rawName}'`, flag };
}
