/** The parsers of setting and flag values (setting-values.ts): what they read, and errors in the user's words. */
import { ConfigError, parseDuration, parsePort, parsePositiveInteger, parseRateLimit } from '@mailroom/core';
import { describe, expect, it } from 'vitest';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['10s', 10_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    [' 1.5s ', 1500],
  ])('reads %j', (text, ms) => {
    expect(parseDuration(text, 'X')).toBe(ms);
  });

  it('takes a plain number in text as seconds', () => {
    expect(parseDuration('15', 'X')).toBe(15_000);
  });

  it('takes a number as milliseconds already (a configure() value)', () => {
    expect(parseDuration(2500, 'X')).toBe(2500);
  });

  it('names the setting and shows the value in its error', () => {
    expect(() => parseDuration('soon', 'MAILROOM_SHUTDOWN_TIMEOUT')).toThrow(
      new ConfigError(
        'MAILROOM_SHUTDOWN_TIMEOUT="soon" is not a duration: write one like 10s, 500ms or 2m (a plain number is seconds)',
      ),
    );
  });

  it.each(['-1s', '10 days', '', '1e3'])('refuses %j', (text) => {
    expect(() => parseDuration(text, 'X')).toThrow(ConfigError);
  });
});

describe('parsePositiveInteger', () => {
  it.each([
    ['4', 4],
    [' 4 ', 4],
    [7, 7],
  ] as const)('reads %j', (value, number) => {
    expect(parsePositiveInteger(value, 'X')).toBe(number);
  });

  it('says what was wrong with which setting, in the user words', () => {
    expect(() => parsePositiveInteger('0', 'MAILROOM_CONCURRENCY')).toThrow(
      new ConfigError('MAILROOM_CONCURRENCY="0" must be a positive integer'),
    );
  });

  it.each(['0', '-1', '1.5', '1e3', 'many', '', '99999999999999999999'])('refuses %j', (text) => {
    expect(() => parsePositiveInteger(text, 'X')).toThrow('X=');
  });

  it('takes 0 with allowZero, and says so when refusing', () => {
    expect(parsePositiveInteger('0', 'X', { allowZero: true })).toBe(0);
    expect(() => parsePositiveInteger('-1', 'X', { allowZero: true })).toThrow(
      'X="-1" must be 0 or a positive integer',
    );
  });

  it('shows a control character in the value escaped, not raw', () => {
    expect(() => parsePositiveInteger('1\u001b[2J', '--limit')).toThrow('--limit="1\\u001b[2J"');
  });
});

describe('parsePort', () => {
  it('reads 1 to 65535', () => {
    expect(parsePort('1', 'X')).toBe(1);
    expect(parsePort('65535', 'X')).toBe(65_535);
  });

  it.each(['abc', '0', '65536', '25.5', '-3'])('refuses %j as not a port number', (text) => {
    expect(() => parsePort(text, 'EMAIL_PORT')).toThrow(
      new ConfigError(`EMAIL_PORT=${JSON.stringify(text)} is not a port number`),
    );
  });

  it('takes 0 with allowZero (a listener on any free port)', () => {
    expect(parsePort('0', 'MAILROOM_METRICS_PORT', { allowZero: true })).toBe(0);
  });
});

describe('parseRateLimit', () => {
  it.each([
    ['200/s', { max: 200, duration: 1000 }],
    ['10000/h', { max: 10000, duration: 3_600_000 }],
    ['50/10s', { max: 50, duration: 10_000 }],
    ['300/min', { max: 300, duration: 60_000 }],
    [' 5 / 500ms ', { max: 5, duration: 500 }],
  ])('reads %s', (text, expected) => {
    expect(parseRateLimit(text)).toEqual(expected);
  });

  it('checks a {max, duration} object', () => {
    expect(parseRateLimit({ max: 10, duration: 1000 })).toEqual({ max: 10, duration: 1000 });
    expect(() => parseRateLimit({ max: 0, duration: 1000 })).toThrow(ConfigError);
  });

  it.each(['200', 'fast', '0/s', '200/parsec', '-1/s'])(
    'refuses %s with a ConfigError that names the setting and shows the value',
    (text) => {
      expect(() => parseRateLimit(text, 'MAILROOM_RATE_LIMIT')).toThrow(ConfigError);
      expect(() => parseRateLimit(text, 'MAILROOM_RATE_LIMIT')).toThrow(
        `MAILROOM_RATE_LIMIT=${JSON.stringify(text)} is not a rate limit`,
      );
    },
  );
});
