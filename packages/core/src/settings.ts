/** The settings: Django's EMAIL_* and mailroom's MAILROOM_*, read from the environment or configure(), validated in the user's words. */
import { validateDkimDomain, validateDkimSelector } from './dkim.js';
import { ConfigError, quoteValue } from './errors.js';
import { parseClusterNodes } from './protocol/cluster-nodes.js';
import { protocolDefaults } from './protocol/defaults.js';
import { checkShardCount } from './protocol/shards.js';
import { validateQueueName } from './queue-name.js';
import {
  invalidValue,
  parseDuration,
  parsePort,
  parsePositiveInteger,
  parseRateLimit,
  type RateLimit,
} from './setting-values.js';

/**
 * Django's EMAIL_* settings (and the few others django.core.mail reads) and mailroom's MAILROOM_*
 * settings of the queue, resolved from the environment and from {@link configure}. Values are
 * validated the first time any setting is read; a bad value is a {@link ConfigError} that names the
 * setting and the value: `EMAIL_PORT="abc" is not a port number`.
 *
 * A worker-only MAILROOM_* setting that is null is unset: the worker then uses its own default
 * (workerDefaults in @mailroom/worker); createWorker's options override both.
 */
export interface Settings {
  /** Backend name (`smtp`, `console`, `file`, `memory`, `dummy`, `queue`, a registered name) or a module specifier `pkg/path#Export`. Default `smtp`. */
  EMAIL_BACKEND: string;
  /** SMTP host. Default `localhost`. */
  EMAIL_HOST: string;
  /** SMTP port. Default 25. */
  EMAIL_PORT: number;
  /** SMTP user; AUTH happens only when user and password are both non-empty. Default ''. */
  EMAIL_HOST_USER: string;
  /** SMTP password. Default ''. Never logged. */
  EMAIL_HOST_PASSWORD: string;
  /** STARTTLS after connecting. Default false. Mutually exclusive with EMAIL_USE_SSL. */
  EMAIL_USE_TLS: boolean;
  /** Implicit TLS from the first byte (port 465). Default false. */
  EMAIL_USE_SSL: boolean;
  /** Client certificate (PEM path) for TLS. Default null. */
  EMAIL_SSL_CERTFILE: string | null;
  /** Client key (PEM path) for TLS. Default null. */
  EMAIL_SSL_KEYFILE: string | null;
  /** SMTP timeout in seconds (connect, greeting and socket inactivity). Default null: nodemailer's defaults. */
  EMAIL_TIMEOUT: number | null;
  /**
   * DKIM signing domain, the `d=` of the signature (an IDN is punycoded). Default null: no signing.
   * The three EMAIL_DKIM_* settings are set together or not at all (a ConfigError names the missing
   * one; configure() them in one call). Only the SMTP backend signs; console, file and memory do not.
   */
  EMAIL_DKIM_DOMAIN: string | null;
  /** DKIM selector, `s=`: the public key is the TXT record at `<selector>._domainkey.<domain>`. Default null. */
  EMAIL_DKIM_SELECTOR: string | null;
  /**
   * DKIM private key, RSA: its PEM text (starting with `-----BEGIN`) or the path of a PEM file. Read
   * and checked when an SMTP backend is built (a bad key is a ConfigError then). Default null. Never
   * shown in errors or logs.
   */
  EMAIL_DKIM_PRIVATE_KEY: string | null;
  /** Generated Date headers in local time instead of UTC. Default false. */
  EMAIL_USE_LOCALTIME: boolean;
  /** Directory of the file backend. Default null (the backend then requires its `filePath` option). */
  EMAIL_FILE_PATH: string | null;
  /** From address when none is given. Default `webmaster@localhost`. */
  DEFAULT_FROM_EMAIL: string;
  /** From address of mailAdmins / mailManagers. Default `root@localhost`. */
  SERVER_EMAIL: string;
  /** Prefix of mailAdmins / mailManagers subjects. Default `[Django] `, kept from Django so that mail filters keep working. */
  EMAIL_SUBJECT_PREFIX: string;
  /** Charset of message bodies. Default `utf-8`. */
  DEFAULT_CHARSET: string;
  /** Recipients of mailAdmins. Env: a JSON array, or a comma-separated list. Default []. */
  ADMINS: string[];
  /** Recipients of mailManagers. Same format as ADMINS. Default []. */
  MANAGERS: string[];
  /** Redis URL of the queue backend, producer and worker. Default `redis://127.0.0.1:6379`. */
  REDIS_URL: string;
  /**
   * Redis Cluster seed nodes, comma-separated `host:port` or `redis[s]://[user:password@]host:port`;
   * when set, producer, worker and CLI use ioredis's Cluster client and REDIS_URL is not used.
   * Default null: one Redis at REDIS_URL.
   */
  REDIS_CLUSTER_NODES: string | null;
  /**
   * Shards of a queue: N BullMQ queues with distinct hash tags, spread over a cluster's masters; 1 is
   * the unsharded layout. Producers and workers of a queue must agree (the queue records it). Default 1.
   */
  MAILROOM_SHARDS: number;
  /** Queue name of the producer and the worker (validateQueueName; trimmed). Default `mail`. */
  MAILROOM_QUEUE: string;
  /** Redis key prefix of the producer and the worker; keep the braces (a Cluster hash tag). Default `{mailroom}`. */
  MAILROOM_PREFIX: string;
  /** Worker: batches (= SMTP connections) in flight per process, a positive integer. Default null (2). */
  MAILROOM_CONCURRENCY: number | null;
  /** Worker: global rate limit across replicas: `200/s`, `10000/h`, `50/10s`. Default null: none. */
  MAILROOM_RATE_LIMIT: RateLimit | null;
  /** Worker: delivery attempts per batch, the first included. Default null (5). */
  MAILROOM_ATTEMPTS: number | null;
  /** Worker: first retry delay in ms (env: `1s`, `500ms`; a plain number is seconds); doubles per attempt. Default null (1 s). */
  MAILROOM_BACKOFF: number | null;
  /** Worker: graceful shutdown budget in ms (a duration, as MAILROOM_BACKOFF). Default null (10 s). */
  MAILROOM_SHUTDOWN_TIMEOUT: number | null;
  /** Worker: BullMQ lock duration in ms: a dead worker's batches are taken over after about this long. Default null (30 s). */
  MAILROOM_LOCK_DURATION: number | null;
  /** Worker: ms between looks for batches of dead workers. Default null (30 s). */
  MAILROOM_STALLED_INTERVAL: number | null;
  /** Worker: takeovers allowed per batch before it fails, 0 or more. Default null (5). */
  MAILROOM_MAX_STALLED_COUNT: number | null;
  /** Worker: ms an open SMTP connection waits for the next batch (0: close after every batch). Default null (5 s). */
  MAILROOM_CONNECTION_IDLE: number | null;
  /** Worker CLI: port of `/metrics`, `/healthz`, `/readyz` (0: any free port). Default null: off. */
  MAILROOM_METRICS_PORT: number | null;
  /** Worker: bytes a batch may inflate to before it is dead-lettered. Default 24 MiB + 2 bytes (protocolDefaults.maxUnpackedBytes). */
  MAILROOM_MAX_UNPACKED_BYTES: number;
  /** Worker: SMTP timeout in ms when EMAIL_TIMEOUT is not set, a duration above 0: a worker never waits forever. Default null (the worker's). */
  MAILROOM_SMTP_TIMEOUT: number | null;
  /**
   * SMTP: messages in flight per connection (pipelined across messages; with CHUNKING that many, with
   * PIPELINING alone at most 2), 1 to 1000. Also the most a worker killed mid-window can send twice
   * per connection. Default 32.
   */
  MAILROOM_PIPELINE_WINDOW: number;
  /**
   * Secret(s) signing one-click unsubscribe tokens (HMAC-SHA256): one, or several separated by
   * spaces (the first signs, all verify: rotation without breaking links already sent), each at least
   * 16 characters. Needed by campaigns with an unsubscribe endpoint and by `mailroom unsubscribe-server`.
   * Never logged or shown. Default null.
   */
  MAILROOM_UNSUBSCRIBE_SECRET: string | null;
}

/** Django's defaults, and mailroom's, used when neither the environment nor {@link configure} sets a value. */
export const defaultSettings = {
  EMAIL_BACKEND: 'smtp',
  EMAIL_HOST: 'localhost',
  EMAIL_PORT: 25,
  EMAIL_HOST_USER: '',
  EMAIL_HOST_PASSWORD: '',
  EMAIL_USE_TLS: false,
  EMAIL_USE_SSL: false,
  EMAIL_SSL_CERTFILE: null,
  EMAIL_SSL_KEYFILE: null,
  EMAIL_TIMEOUT: null,
  EMAIL_DKIM_DOMAIN: null,
  EMAIL_DKIM_SELECTOR: null,
  EMAIL_DKIM_PRIVATE_KEY: null,
  EMAIL_USE_LOCALTIME: false,
  EMAIL_FILE_PATH: null,
  DEFAULT_FROM_EMAIL: 'webmaster@localhost',
  SERVER_EMAIL: 'root@localhost',
  EMAIL_SUBJECT_PREFIX: '[Django] ',
  DEFAULT_CHARSET: 'utf-8',
  ADMINS: [],
  MANAGERS: [],
  REDIS_URL: 'redis://127.0.0.1:6379',
  REDIS_CLUSTER_NODES: null,
  MAILROOM_SHARDS: 1,
  MAILROOM_QUEUE: protocolDefaults.queue,
  MAILROOM_PREFIX: protocolDefaults.prefix,
  MAILROOM_CONCURRENCY: null,
  MAILROOM_RATE_LIMIT: null,
  MAILROOM_ATTEMPTS: null,
  MAILROOM_BACKOFF: null,
  MAILROOM_SHUTDOWN_TIMEOUT: null,
  MAILROOM_LOCK_DURATION: null,
  MAILROOM_STALLED_INTERVAL: null,
  MAILROOM_MAX_STALLED_COUNT: null,
  MAILROOM_CONNECTION_IDLE: null,
  MAILROOM_METRICS_PORT: null,
  MAILROOM_MAX_UNPACKED_BYTES: protocolDefaults.maxUnpackedBytes,
  MAILROOM_SMTP_TIMEOUT: null,
  // The reasons for 32 are in the README's decisions.
  MAILROOM_PIPELINE_WINDOW: 32,
  MAILROOM_UNSUBSCRIBE_SECRET: null,
} as const satisfies Settings;

/** What {@link configure} takes for a setting: a value of its type, or its text as the environment gives it. */
export type SettingInput<Name extends keyof Settings> = Settings[Name] | string;

type Parser<T> = (value: unknown, name: string) => T;

const text: Parser<string> = (value, name) => {
  if (typeof value !== 'string') throw invalidValue(name, value, 'must be a string');
  return value;
};

const nonEmpty: Parser<string> = (value, name) => {
  if (text(value, name).trim() === '') throw invalidValue(name, value, 'must not be empty');
  return value as string;
};

const nullableText: Parser<string | null> = (value, name) =>
  value === '' || value === null ? null : text(value, name);

const TRUE = ['1', 'true', 'yes', 'on'];
const FALSE = ['0', 'false', 'no', 'off', ''];

const bool: Parser<boolean> = (value, name) => {
  if (typeof value === 'boolean') return value;
  const word = typeof value === 'string' ? value.trim().toLowerCase() : undefined;
  if (word !== undefined && TRUE.includes(word)) return true;
  if (word !== undefined && FALSE.includes(word)) return false;
  throw invalidValue(name, value, 'is not a boolean: write true or false (or 1/0, yes/no, on/off)');
};

const seconds: Parser<number | null> = (value, name) => {
  if (value === null || (typeof value === 'string' && value.trim() === '')) return null;
  const number = typeof value === 'string' ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isFinite(number) || number <= 0) {
    throw invalidValue(name, value, 'is not a number of seconds above 0');
  }
  return number;
};

const addressList: Parser<string[]> = (value, name) => {
  let list: unknown = value;
  if (typeof value === 'string') {
    const trimmed = value.trim();
    if (trimmed.startsWith('[')) {
      try {
        list = JSON.parse(trimmed) as unknown;
      } catch {
        list = undefined;
      }
    } else {
      list = trimmed
        .split(',')
        .map((part) => part.trim())
        .filter(Boolean);
    }
  }
  if (!Array.isArray(list) || !list.every((item) => typeof item === 'string')) {
    throw invalidValue(
      name,
      value,
      'is not a list of addresses: write a JSON array of strings or a comma-separated list',
    );
  }
  return [...list];
};

const redisUrl: Parser<string> = (value, name) => {
  if (typeof value === 'string' && /^rediss?:\/\//.test(value)) return value;
  // A URL with credentials must not put its password in an error message.
  const shown = typeof value === 'string' ? value.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@') : value;
  throw invalidValue(name, shown, 'must start with redis:// or rediss://');
};

const password: Parser<string> = (value, name) => {
  if (typeof value !== 'string') throw new ConfigError(`${name}=(hidden) must be a string`);
  return value;
};

/** A secret that may be unset (blank or null); like {@link password}, never shown. */
const nullableSecret: Parser<string | null> = (value, name) =>
  value === null || (typeof value === 'string' && value.trim() === '') ? null : password(value, name);

/** Settings whose values an error message must never show. */
const SECRET_SETTINGS: ReadonlySet<string> = new Set([
  'EMAIL_HOST_PASSWORD',
  'EMAIL_DKIM_PRIVATE_KEY',
  'MAILROOM_UNSUBSCRIBE_SECRET',
  'REDIS_CLUSTER_NODES',
]);

/** The three settings DKIM signing needs together. */
const DKIM_SETTINGS = ['EMAIL_DKIM_DOMAIN', 'EMAIL_DKIM_SELECTOR', 'EMAIL_DKIM_PRIVATE_KEY'] as const;

/**
 * All three DKIM settings or none: a partial set is a mistake to report, not a quiet "unsigned".
 * Throws ConfigError naming the settings that are missing.
 */
function checkDkimSettings(values: Settings): void {
  const missing = DKIM_SETTINGS.filter((name) => values[name] === null);
  if (missing.length === 0 || missing.length === DKIM_SETTINGS.length) return;
  const given = DKIM_SETTINGS.filter((name) => values[name] !== null);
  throw new ConfigError(
    `${missing.join(' and ')} ${missing.length === 1 ? 'is' : 'are'} not set while ${given.join(' and ')} ` +
      `${given.length === 1 ? 'is' : 'are'}: DKIM signing needs ${DKIM_SETTINGS.join(', ')} all set (or none, to send unsigned)`,
  );
}

/** A MAILROOM_* string: trimmed; blank means the default. */
function mailroomText(fallback: string, check: (value: string, name: string) => string): Parser<string> {
  return (value, name) => {
    if (value === null || (typeof value === 'string' && value.trim() === '')) return fallback;
    return check(text(value, name).trim(), name);
  };
}

/** A MAILROOM_* value that may be unset (null): blank or null is unset, anything else is parsed. */
function unsetOr<T>(parse: Parser<T>): Parser<T | null> {
  return (value, name) =>
    value === null || (typeof value === 'string' && value.trim() === '') ? null : parse(value, name);
}

function numberOrText(value: unknown, name: string): string | number {
  if (typeof value === 'string' || typeof value === 'number') return value;
  throw invalidValue(name, value, 'must be a number or its text');
}

const positiveInteger: Parser<number> = (value, name) =>
  parsePositiveInteger(numberOrText(value, name), name);
const duration: Parser<number> = (value, name) => parseDuration(numberOrText(value, name), name);
const positiveDuration: Parser<number> = (value, name) => {
  const ms = duration(value, name);
  if (ms <= 0) throw invalidValue(name, value, 'must be more than 0: a worker never waits forever');
  return ms;
};

/** Largest MAILROOM_PIPELINE_WINDOW: beyond it a connection holds more unacknowledged mail than any server will buffer. */
const MAX_PIPELINE_WINDOW = 1000;

const parsers: { [Name in keyof Settings]: Parser<Settings[Name]> } = {
  EMAIL_BACKEND: nonEmpty,
  EMAIL_HOST: nonEmpty,
  EMAIL_PORT: (value, name) => parsePort(numberOrText(value, name), name),
  EMAIL_HOST_USER: text,
  EMAIL_HOST_PASSWORD: password,
  EMAIL_USE_TLS: bool,
  EMAIL_USE_SSL: bool,
  EMAIL_SSL_CERTFILE: nullableText,
  EMAIL_SSL_KEYFILE: nullableText,
  EMAIL_TIMEOUT: seconds,
  EMAIL_DKIM_DOMAIN: unsetOr((value, name) => {
    validateDkimDomain(text(value, name), name);
    return (value as string).trim();
  }),
  EMAIL_DKIM_SELECTOR: unsetOr((value, name) => validateDkimSelector(text(value, name), name)),
  EMAIL_DKIM_PRIVATE_KEY: nullableSecret,
  EMAIL_USE_LOCALTIME: bool,
  EMAIL_FILE_PATH: nullableText,
  DEFAULT_FROM_EMAIL: nonEmpty,
  SERVER_EMAIL: nonEmpty,
  EMAIL_SUBJECT_PREFIX: text,
  DEFAULT_CHARSET: nonEmpty,
  ADMINS: addressList,
  MANAGERS: addressList,
  REDIS_URL: redisUrl,
  REDIS_CLUSTER_NODES: unsetOr((value, name) => {
    parseClusterNodes(text(value, name), name);
    return (value as string).trim();
  }),
  MAILROOM_SHARDS: (value, name) =>
    value === null || (typeof value === 'string' && value.trim() === '')
      ? defaultSettings.MAILROOM_SHARDS
      : checkShardCount(parsePositiveInteger(numberOrText(value, name), name), name),
  // The one queue name rule of the producer and the worker.
  MAILROOM_QUEUE: mailroomText(defaultSettings.MAILROOM_QUEUE, validateQueueName),
  MAILROOM_PREFIX: mailroomText(defaultSettings.MAILROOM_PREFIX, (value) => value),
  MAILROOM_CONCURRENCY: unsetOr(positiveInteger),
  MAILROOM_RATE_LIMIT: unsetOr((value, name) => parseRateLimit(value as string | RateLimit, name)),
  MAILROOM_ATTEMPTS: unsetOr(positiveInteger),
  MAILROOM_BACKOFF: unsetOr(duration),
  MAILROOM_SHUTDOWN_TIMEOUT: unsetOr(duration),
  MAILROOM_LOCK_DURATION: unsetOr(duration),
  MAILROOM_STALLED_INTERVAL: unsetOr(duration),
  MAILROOM_MAX_STALLED_COUNT: unsetOr((value, name) =>
    parsePositiveInteger(numberOrText(value, name), name, { allowZero: true }),
  ),
  MAILROOM_CONNECTION_IDLE: unsetOr(duration),
  MAILROOM_METRICS_PORT: unsetOr((value, name) =>
    parsePort(numberOrText(value, name), name, { allowZero: true }),
  ),
  MAILROOM_MAX_UNPACKED_BYTES: (value, name) =>
    value === null || (typeof value === 'string' && value.trim() === '')
      ? defaultSettings.MAILROOM_MAX_UNPACKED_BYTES
      : positiveInteger(value, name),
  MAILROOM_SMTP_TIMEOUT: unsetOr(positiveDuration),
  MAILROOM_PIPELINE_WINDOW: (value, name) => {
    if (value === null || (typeof value === 'string' && value.trim() === '')) {
      return defaultSettings.MAILROOM_PIPELINE_WINDOW;
    }
    const window = positiveInteger(value, name);
    if (window > MAX_PIPELINE_WINDOW) {
      throw invalidValue(
        name,
        value,
        `must be at most ${MAX_PIPELINE_WINDOW} (messages in flight per connection)`,
      );
    }
    return window;
  },
  // Its length is checked where it is used (parseUnsubscribeSecrets), with a message that never shows it.
  MAILROOM_UNSUBSCRIBE_SECRET: nullableSecret,
};

const settingNames = Object.keys(defaultSettings) as (keyof Settings)[];

let overrides: Partial<Record<keyof Settings, unknown>> = {};
let resolved: Settings | undefined;

/**
 * Every setting from `overrides`, else `env`, else its default, each parsed by its parser: the first
 * bad value throws its ConfigError. Never shows EMAIL_HOST_PASSWORD or EMAIL_DKIM_PRIVATE_KEY.
 */
function resolveFrom(env: Record<string, string | undefined>): Settings {
  const values: Record<string, unknown> = {};
  for (const name of settingNames) {
    const raw =
      name in overrides ? overrides[name] : env[name] !== undefined ? env[name] : defaultSettings[name];
    try {
      values[name] = parsers[name](raw, name);
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      // A parser bug must still name the setting, and never echo a secret.
      const shown = SECRET_SETTINGS.has(name) ? '(hidden)' : quoteValue(raw);
      throw new ConfigError(`${name}=${shown} could not be read`, { cause: error });
    }
  }
  checkDkimSettings(values as unknown as Settings);
  return values as unknown as Settings;
}

function resolve(): Settings {
  resolved ??= resolveFrom(process.env);
  return resolved;
}

/**
 * The current settings. Reading any property resolves (and validates) the whole set once; the
 * result is cached until {@link configure} or {@link resetSettings} is called.
 */
export const settings: Readonly<Settings> = new Proxy({} as Settings, {
  get(_target, property) {
    if (typeof property !== 'string') return undefined;
    return resolve()[property as keyof Settings];
  },
  has(_target, property) {
    return typeof property === 'string' && (settingNames as string[]).includes(property);
  },
  ownKeys() {
    return settingNames;
  },
  getOwnPropertyDescriptor(_target, property) {
    if (typeof property !== 'string' || !(settingNames as string[]).includes(property)) return undefined;
    return { enumerable: true, configurable: true, value: resolve()[property as keyof Settings] };
  },
  set() {
    throw new TypeError('settings are read-only: use configure({ NAME: value })');
  },
});

/**
 * The settings as they would be with `env` as the environment (the {@link configure} overrides still
 * win), validated the same way; not cached. For a command given its own environment (the CLI's).
 * Throws ConfigError for a bad value, naming it.
 */
export function readSettings(env: Record<string, string | undefined>): Settings {
  return env === process.env ? { ...resolve() } : resolveFrom(env);
}

/**
 * Overrides settings for this process (Django's settings.configure()). Values take precedence over
 * the environment; `undefined` removes an override. A value may be given as its text, as in the
 * environment (`MAILROOM_BACKOFF: '2s'`); a duration given as a number is milliseconds. Throws
 * {@link ConfigError} for an unknown setting name or an invalid value, naming it, and then changes
 * nothing.
 */
export function configure(values: { [Name in keyof Settings]?: SettingInput<Name> | undefined }): void {
  const previous = overrides;
  const next = { ...overrides };
  for (const [name, value] of Object.entries(values)) {
    if (!(settingNames as string[]).includes(name)) {
      throw new ConfigError(`Unknown setting ${name}; known settings: ${settingNames.join(', ')}`);
    }
    if (value === undefined) delete next[name as keyof Settings];
    else next[name as keyof Settings] = value;
  }
  overrides = next;
  resolved = undefined;
  try {
    resolve();
  } catch (error) {
    // All or nothing: a rejected configure() must not leave a bad value behind that makes every
    // later read of `settings` throw.
    overrides = previous;
    resolved = undefined;
    throw error;
  }
}

/** Drops every {@link configure} override and re-reads the environment on next use. */
export function resetSettings(): void {
  overrides = {};
  resolved = undefined;
}
