/** The settings (settings.ts): defaults, the environment, configure(), readSettings(), errors in the user's words. */
import {
  ConfigError,
  configure,
  defaultSettings,
  QUEUE_NAME_RULE,
  readSettings,
  resetSettings,
  type Settings,
  settings,
} from '@mailroom/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const names = Object.keys(defaultSettings) as (keyof Settings)[];
let savedEnv: NodeJS.ProcessEnv;

beforeEach(() => {
  savedEnv = { ...process.env };
  // The machine's own EMAIL_* variables must not leak into these tests.
  for (const name of names) delete process.env[name];
  resetSettings();
});

afterEach(() => {
  process.env = savedEnv;
  resetSettings();
});

/** Reads settings after setting one environment variable. */
function fromEnv(name: keyof Settings, value: string): Readonly<Settings> {
  process.env[name] = value;
  resetSettings();
  return settings;
}

function configError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('defaults', () => {
  it("uses Django's defaults when neither the environment nor configure() sets a value", () => {
    expect({ ...settings }).toEqual(defaultSettings);
    expect(settings.EMAIL_BACKEND).toBe('smtp');
    expect(settings.EMAIL_PORT).toBe(25);
    expect(settings.DEFAULT_FROM_EMAIL).toBe('webmaster@localhost');
    expect(settings.SERVER_EMAIL).toBe('root@localhost');
    expect(settings.EMAIL_SUBJECT_PREFIX).toBe('[Django] ');
  });

  it('is read-only', () => {
    expect(() => {
      (settings as Settings).EMAIL_HOST = 'elsewhere';
    }).toThrow(TypeError);
  });

  it('answers `in` for setting names only', () => {
    expect('EMAIL_HOST' in settings).toBe(true);
    expect('EMAIL_HOSTNAME' in settings).toBe(false);
  });
});

describe('environment', () => {
  it.each(['1', 'true', 'TRUE', 'yes', 'on', ' True '])('reads %j as true', (value) => {
    expect(fromEnv('EMAIL_USE_TLS', value).EMAIL_USE_TLS).toBe(true);
  });

  it.each(['0', 'false', 'no', 'off', ''])('reads %j as false', (value) => {
    expect(fromEnv('EMAIL_USE_SSL', value).EMAIL_USE_SSL).toBe(false);
  });

  it('rejects a boolean it cannot read, naming the setting and the value', () => {
    process.env.EMAIL_USE_LOCALTIME = 'maybe';
    const error = configError(() => settings.EMAIL_HOST);
    expect(error.message).toContain('EMAIL_USE_LOCALTIME');
    expect(error.message).toContain('"maybe"');
  });

  it('reads EMAIL_PORT as a number', () => {
    expect(fromEnv('EMAIL_PORT', '2525').EMAIL_PORT).toBe(2525);
  });

  it.each(['abc', '0', '70000', '25.5'])('rejects EMAIL_PORT=%j as not a port number', (value) => {
    process.env.EMAIL_PORT = value;
    expect(configError(() => settings.EMAIL_PORT).message).toBe(
      `EMAIL_PORT=${JSON.stringify(value)} is not a port number`,
    );
  });

  it('reads EMAIL_TIMEOUT as seconds, fractions allowed', () => {
    expect(fromEnv('EMAIL_TIMEOUT', '2.5').EMAIL_TIMEOUT).toBe(2.5);
  });

  it('reads an empty EMAIL_TIMEOUT as no timeout', () => {
    expect(fromEnv('EMAIL_TIMEOUT', '').EMAIL_TIMEOUT).toBeNull();
  });

  it('rejects a non-numeric EMAIL_TIMEOUT naming it', () => {
    process.env.EMAIL_TIMEOUT = 'soon';
    expect(configError(() => settings.EMAIL_TIMEOUT).message).toContain('EMAIL_TIMEOUT');
  });

  it('reads an empty EMAIL_FILE_PATH as unset', () => {
    expect(fromEnv('EMAIL_FILE_PATH', '').EMAIL_FILE_PATH).toBeNull();
  });

  it('reads ADMINS as a JSON array, display names with commas kept whole', () => {
    const value = JSON.stringify(['"Doe, Jane" <jane@example.com>', 'ops@example.com']);
    expect(fromEnv('ADMINS', value).ADMINS).toEqual(['"Doe, Jane" <jane@example.com>', 'ops@example.com']);
  });

  it('reads ADMINS as a comma-separated list, trimming and skipping empty entries', () => {
    expect(fromEnv('ADMINS', ' a@example.com, Bob <b@example.com>,, ').ADMINS).toEqual([
      'a@example.com',
      'Bob <b@example.com>',
    ]);
  });

  it('reads MANAGERS in the same formats as ADMINS', () => {
    expect(fromEnv('MANAGERS', '["m@example.com"]').MANAGERS).toEqual(['m@example.com']);
    expect(fromEnv('MANAGERS', 'm@example.com,n@example.com').MANAGERS).toEqual([
      'm@example.com',
      'n@example.com',
    ]);
  });

  it('reads an empty ADMINS as no admins', () => {
    expect(fromEnv('ADMINS', '').ADMINS).toEqual([]);
  });

  it('rejects malformed JSON in ADMINS naming ADMINS', () => {
    process.env.ADMINS = '["a@example.com",';
    expect(configError(() => settings.ADMINS).message).toContain('ADMINS');
  });

  it('rejects a JSON ADMINS that is not a list of strings', () => {
    process.env.ADMINS = '[1, 2]';
    expect(configError(() => settings.ADMINS).message).toContain('ADMINS');
  });

  it('rejects a REDIS_URL that is not a redis:// URL', () => {
    process.env.REDIS_URL = 'http://127.0.0.1:6379';
    expect(configError(() => settings.REDIS_URL).message).toContain('REDIS_URL');
  });

  it('reads the environment once, until resetSettings()', () => {
    process.env.EMAIL_HOST = 'first.example.com';
    expect(settings.EMAIL_HOST).toBe('first.example.com');
    process.env.EMAIL_HOST = 'second.example.com';
    expect(settings.EMAIL_HOST).toBe('first.example.com');
    resetSettings();
    expect(settings.EMAIL_HOST).toBe('second.example.com');
  });
});

describe('configure()', () => {
  it('overrides the environment', () => {
    process.env.EMAIL_HOST = 'env.example.com';
    configure({ EMAIL_HOST: 'configured.example.com' });
    expect(settings.EMAIL_HOST).toBe('configured.example.com');
  });

  it('removes an override when given undefined', () => {
    process.env.EMAIL_HOST = 'env.example.com';
    configure({ EMAIL_HOST: 'configured.example.com' });
    configure({ EMAIL_HOST: undefined });
    expect(settings.EMAIL_HOST).toBe('env.example.com');
  });

  it('coerces and validates configured values like environment values', () => {
    configure({ EMAIL_PORT: '587' as unknown as number, EMAIL_USE_TLS: 'yes' as unknown as boolean });
    expect(settings.EMAIL_PORT).toBe(587);
    expect(settings.EMAIL_USE_TLS).toBe(true);
  });

  it("rejects EMAIL_PORT='abc' with a ConfigError naming EMAIL_PORT", () => {
    const error = configError(() => configure({ EMAIL_PORT: 'abc' as unknown as number }));
    expect(error.message).toContain('EMAIL_PORT');
    expect(error.code).toBe('ECONFIG');
  });

  it('rejects an unknown setting name, naming it', () => {
    const error = configError(() => configure({ EMAIL_HOSTNAME: 'x' } as Partial<Settings>));
    expect(error.message).toMatch(/^Unknown setting EMAIL_HOSTNAME/);
  });

  it('never shows the password in a validation error', () => {
    const error = configError(() =>
      configure({ EMAIL_HOST_PASSWORD: { secret: 'hunter2-password' } as unknown as string }),
    );
    expect(error.message).toContain('EMAIL_HOST_PASSWORD');
    expect(error.message).not.toContain('hunter2-password');
    expect(JSON.stringify(error)).not.toContain('hunter2-password');
  });

  it('leaves the previous settings in place when it rejects a value', () => {
    configure({ EMAIL_HOST: 'good.example.com' });
    configError(() => configure({ EMAIL_HOST: 'other.example.com', EMAIL_PORT: -1 }));
    expect(settings.EMAIL_HOST).toBe('good.example.com');
    expect(settings.EMAIL_PORT).toBe(25);
  });

  it('leaves the previous settings in place when it rejects an unknown name', () => {
    configError(() => configure({ EMAIL_HOST: 'partial.example.com', NOPE: 1 } as Partial<Settings>));
    expect(settings.EMAIL_HOST).toBe('localhost');
  });

  it('resetSettings() drops every override', () => {
    configure({ EMAIL_HOST: 'configured.example.com', ADMINS: ['a@example.com'] });
    resetSettings();
    expect(settings.EMAIL_HOST).toBe('localhost');
    expect(settings.ADMINS).toEqual([]);
  });
});

describe('MAILROOM_* settings', () => {
  it('default to the protocol for the queue, and to unset (the worker decides) for the worker', () => {
    expect(settings.MAILROOM_QUEUE).toBe('mail');
    expect(settings.MAILROOM_PREFIX).toBe('{mailroom}');
    expect(settings.MAILROOM_MAX_UNPACKED_BYTES).toBe(24 * 1024 * 1024 + 2);
    expect(settings.MAILROOM_CONCURRENCY).toBeNull();
    expect(settings.MAILROOM_RATE_LIMIT).toBeNull();
    expect(settings.MAILROOM_METRICS_PORT).toBeNull();
  });

  it('reads each worker setting from the environment in its own unit', () => {
    const values = readSettings({
      MAILROOM_CONCURRENCY: '4',
      MAILROOM_RATE_LIMIT: '200/s',
      MAILROOM_ATTEMPTS: '3',
      MAILROOM_BACKOFF: '500ms',
      MAILROOM_SHUTDOWN_TIMEOUT: '5',
      MAILROOM_LOCK_DURATION: '2s',
      MAILROOM_STALLED_INTERVAL: '1m',
      MAILROOM_MAX_STALLED_COUNT: '0',
      MAILROOM_CONNECTION_IDLE: '0',
      MAILROOM_METRICS_PORT: '0',
      MAILROOM_MAX_UNPACKED_BYTES: '50000000',
      MAILROOM_SMTP_TIMEOUT: '30s',
      MAILROOM_PIPELINE_WINDOW: '8',
    });
    expect(values).toMatchObject({
      MAILROOM_CONCURRENCY: 4,
      MAILROOM_RATE_LIMIT: { max: 200, duration: 1000 },
      MAILROOM_ATTEMPTS: 3,
      MAILROOM_BACKOFF: 500,
      MAILROOM_SHUTDOWN_TIMEOUT: 5000,
      MAILROOM_LOCK_DURATION: 2000,
      MAILROOM_STALLED_INTERVAL: 60_000,
      MAILROOM_MAX_STALLED_COUNT: 0,
      MAILROOM_CONNECTION_IDLE: 0,
      MAILROOM_METRICS_PORT: 0,
      MAILROOM_MAX_UNPACKED_BYTES: 50_000_000,
      MAILROOM_SMTP_TIMEOUT: 30_000,
      MAILROOM_PIPELINE_WINDOW: 8,
    });
  });

  it('takes MAILROOM_PIPELINE_WINDOW unset or blank as 32', () => {
    expect(fromEnv('MAILROOM_PIPELINE_WINDOW', ' ').MAILROOM_PIPELINE_WINDOW).toBe(32);
    expect(fromEnv('MAILROOM_CONCURRENCY', '1').MAILROOM_PIPELINE_WINDOW).toBe(32);
  });

  it('takes a blank worker setting as unset', () => {
    expect(fromEnv('MAILROOM_CONCURRENCY', ' ').MAILROOM_CONCURRENCY).toBeNull();
  });

  it('trims MAILROOM_QUEUE and takes a blank one as the default', () => {
    expect(fromEnv('MAILROOM_QUEUE', ' news-2026 ').MAILROOM_QUEUE).toBe('news-2026');
    expect(fromEnv('MAILROOM_QUEUE', ' ').MAILROOM_QUEUE).toBe('mail');
  });

  it('refuses a MAILROOM_QUEUE the producer and the worker would refuse, with the rule', () => {
    process.env.MAILROOM_QUEUE = 'x:y';
    expect(configError(() => settings.MAILROOM_QUEUE).message).toBe(
      `Invalid MAILROOM_QUEUE="x:y": ${QUEUE_NAME_RULE}`,
    );
  });

  it.each([
    ['MAILROOM_CONCURRENCY', '0', 'MAILROOM_CONCURRENCY="0" must be a positive integer'],
    ['MAILROOM_ATTEMPTS', 'many', 'MAILROOM_ATTEMPTS="many" must be a positive integer'],
    ['MAILROOM_MAX_STALLED_COUNT', '-1', 'MAILROOM_MAX_STALLED_COUNT="-1" must be 0 or a positive integer'],
    ['MAILROOM_METRICS_PORT', '-3', 'MAILROOM_METRICS_PORT="-3" is not a port number'],
    ['MAILROOM_PIPELINE_WINDOW', '0', 'MAILROOM_PIPELINE_WINDOW="0" must be a positive integer'],
    [
      'MAILROOM_PIPELINE_WINDOW',
      '1001',
      'MAILROOM_PIPELINE_WINDOW="1001" must be at most 1000 (messages in flight per connection)',
    ],
    [
      'MAILROOM_SMTP_TIMEOUT',
      '0',
      'MAILROOM_SMTP_TIMEOUT="0" must be more than 0: a worker never waits forever',
    ],
    [
      'MAILROOM_BACKOFF',
      'soon',
      'MAILROOM_BACKOFF="soon" is not a duration: write one like 10s, 500ms or 2m (a plain number is seconds)',
    ],
    [
      'MAILROOM_RATE_LIMIT',
      'lots',
      'MAILROOM_RATE_LIMIT="lots" is not a rate limit: write messages/interval, e.g. 200/s, 10000/h, 50/10s',
    ],
  ] as const)('refuses %s=%j in the user words', (name, value, message) => {
    process.env[name] = value;
    expect(configError(() => settings.MAILROOM_QUEUE).message).toBe(message);
  });
});

describe('error wording', () => {
  it("never speaks the validation library's words", () => {
    process.env.EMAIL_PORT = 'abc';
    const message = configError(() => settings.EMAIL_PORT).message;
    expect(message).toBe('EMAIL_PORT="abc" is not a port number');
    expect(message).not.toMatch(/expected|received|NaN/);
  });

  it('hides a REDIS_URL password in its error', () => {
    process.env.REDIS_URL = 'http://user:s3cret-pw@127.0.0.1:6379';
    const message = configError(() => settings.REDIS_URL).message;
    expect(message).toBe('REDIS_URL="http://user:***@127.0.0.1:6379" must start with redis:// or rediss://');
  });

  it('says which values a boolean takes', () => {
    process.env.EMAIL_USE_TLS = 'maybe';
    expect(configError(() => settings.EMAIL_USE_TLS).message).toBe(
      'EMAIL_USE_TLS="maybe" is not a boolean: write true or false (or 1/0, yes/no, on/off)',
    );
  });
});

describe('configure() of MAILROOM_* settings', () => {
  it('overrides MAILROOM_QUEUE from the environment', () => {
    process.env.MAILROOM_QUEUE = 'from-env';
    configure({ MAILROOM_QUEUE: 'configured' });
    expect(settings.MAILROOM_QUEUE).toBe('configured');
  });

  it('takes a duration as milliseconds or as its text', () => {
    configure({ MAILROOM_BACKOFF: 2000, MAILROOM_SHUTDOWN_TIMEOUT: '3s' });
    expect(settings.MAILROOM_BACKOFF).toBe(2000);
    expect(settings.MAILROOM_SHUTDOWN_TIMEOUT).toBe(3000);
  });

  it('takes a rate limit as an object or as its text', () => {
    configure({ MAILROOM_RATE_LIMIT: '10/s' });
    expect(settings.MAILROOM_RATE_LIMIT).toEqual({ max: 10, duration: 1000 });
    configure({ MAILROOM_RATE_LIMIT: { max: 5, duration: 60_000 } });
    expect(settings.MAILROOM_RATE_LIMIT).toEqual({ max: 5, duration: 60_000 });
  });

  it('refuses a bad value in the same words as the environment, and keeps the previous one', () => {
    configure({ MAILROOM_CONCURRENCY: 3 });
    const error = configError(() => configure({ MAILROOM_CONCURRENCY: 0 }));
    expect(error.message).toBe('MAILROOM_CONCURRENCY="0" must be a positive integer');
    expect(settings.MAILROOM_CONCURRENCY).toBe(3);
  });
});

describe('readSettings()', () => {
  it('reads the given environment instead of the process one', () => {
    process.env.MAILROOM_QUEUE = 'process-queue';
    expect(readSettings({ MAILROOM_QUEUE: 'own-queue' }).MAILROOM_QUEUE).toBe('own-queue');
    expect(readSettings({}).MAILROOM_QUEUE).toBe('mail');
    expect(settings.MAILROOM_QUEUE).toBe('process-queue');
  });

  it('lets configure() win over the given environment, as over the process one', () => {
    configure({ MAILROOM_PREFIX: '{configured}' });
    expect(readSettings({ MAILROOM_PREFIX: '{env}' }).MAILROOM_PREFIX).toBe('{configured}');
  });

  it('validates the given environment the same way', () => {
    expect(() => readSettings({ MAILROOM_CONCURRENCY: '0' })).toThrow(
      'MAILROOM_CONCURRENCY="0" must be a positive integer',
    );
  });
});
