/** The parsers of setting and flag values (durations, counts, ports, rate limits), with errors in the user's words. */
import { ConfigError, quoteValue } from './errors.js';

/**
 * The error for a value that cannot be used: `MAILROOM_CONCURRENCY="0" must be a positive integer`.
 * `name` is what the user wrote it as (an environment variable, a configure() key, a `--flag`).
 */
export function invalidValue(name: string, value: unknown, problem: string): ConfigError {
  return new ConfigError(`${name}=${quoteValue(value)} ${problem}`);
}

const DURATION = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/;
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Reads a duration: `500ms`, `10s`, `2m`, `1h`, or a plain number of SECONDS (as Docker's stop
 * timeout). A number (configure() values) is taken as milliseconds already. Returns milliseconds;
 * throws ConfigError naming `name` and the value.
 */
export function parseDuration(value: string | number, name: string): number {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) return Math.round(value);
    throw invalidValue(name, value, 'is not a duration: give milliseconds, 0 or more');
  }
  const match = typeof value === 'string' ? DURATION.exec(value) : null;
  if (!match) {
    throw invalidValue(
      name,
      value,
      'is not a duration: write one like 10s, 500ms or 2m (a plain number is seconds)',
    );
  }
  return Math.round(Number(match[1]) * (DURATION_UNITS[match[2] ?? 's'] as number));
}

/** A whole number from a setting: a number as is, or a string of digits (surrounding spaces allowed). */
function wholeNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? value : undefined;
  if (typeof value !== 'string' || !/^\s*\d+\s*$/.test(value)) return undefined;
  const number = Number(value);
  return Number.isSafeInteger(number) ? number : undefined;
}

/**
 * Reads a positive integer (`4`, ` 4 `; not `4.5`, `1e3` or `0`), or with `allowZero` 0 too. Throws
 * ConfigError: `MAILROOM_CONCURRENCY="0" must be a positive integer`.
 */
export function parsePositiveInteger(
  value: string | number,
  name: string,
  options: { allowZero?: boolean } = {},
): number {
  const number = wholeNumber(value);
  const min = options.allowZero ? 0 : 1;
  if (number === undefined || number < min) {
    throw invalidValue(
      name,
      value,
      options.allowZero ? 'must be 0 or a positive integer' : 'must be a positive integer',
    );
  }
  return number;
}

/**
 * Reads a TCP port, 1 to 65535, or with `allowZero` 0 too (a listener on any free port). Throws
 * ConfigError: `EMAIL_PORT="abc" is not a port number`.
 */
export function parsePort(
  value: string | number,
  name: string,
  options: { allowZero?: boolean } = {},
): number {
  const number = wholeNumber(value);
  if (number === undefined || number < (options.allowZero ? 0 : 1) || number > 65_535) {
    throw invalidValue(name, value, 'is not a port number');
  }
  return number;
}

/** A global rate: at most `max` messages per `duration` milliseconds, across every replica. */
export interface RateLimit {
  max: number;
  duration: number;
}

const RATE = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|m|min|h|hour)\s*$/;
const RATE_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  hour: 3_600_000,
};

/**
 * Reads a rate limit: `200/s`, `10000/h`, `50/10s`, `300/min`, or a {@link RateLimit} (checked).
 * Throws ConfigError naming `name` (default `rateLimit`, the worker option) and the value.
 */
export function parseRateLimit(value: string | RateLimit, name = 'rateLimit'): RateLimit {
  if (typeof value !== 'string') {
    if (typeof value !== 'object' || value === null || !(value.max > 0) || !(value.duration > 0)) {
      throw invalidValue(name, value, 'is not a rate limit: give { max, duration } with both above 0');
    }
    return { max: value.max, duration: value.duration };
  }
  const match = RATE.exec(value);
  const max = Number(match?.[1]);
  const duration = Number(match?.[2] ?? 1) * (RATE_UNITS[match?.[3] ?? ''] ?? Number.NaN);
  if (!match || !(max > 0) || !(duration > 0)) {
    throw invalidValue(
      name,
      value,
      'is not a rate limit: write messages/interval, e.g. 200/s, 10000/h, 50/10s',
    );
  }
  return { max, duration };
}
