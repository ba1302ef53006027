import { parseArgs } from 'node:util';
import { UsageError } from './io.js';

/** Flag definitions in node:util parseArgs form. */
export type FlagSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

type Values<T extends FlagSpec> = {
  [K in keyof T]?: T[K]['type'] extends 'boolean'
    ? boolean
    : T[K]['multiple'] extends true
      ? string[]
      : string;
};

/** Parses flags strictly; an unknown flag or a missing value is a UsageError that carries the usage text. */
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
    throw new UsageError((error as Error).message, { usage });
  }
}
