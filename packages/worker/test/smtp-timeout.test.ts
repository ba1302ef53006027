/**
 * The worker's SMTP timeout: Django's EMAIL_TIMEOUT defaults to none, and nodemailer then waits 10
 * minutes for a reply; the worker's connections get MAILROOM_SMTP_TIMEOUT (60 s) unless EMAIL_TIMEOUT
 * or the backend options say otherwise. Plain sendMail users keep Django's behaviour.
 */
import {
  type BackendOptions,
  ConfigError,
  configure,
  getConnection,
  MemoryBackend,
  SmtpBackend,
  type SmtpBackendOptions,
} from '@mailroom/core';
import { createWorker, readWorkerEnvironment, type WorkerOptions, workerDefaults } from '@mailroom/worker';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { REDIS_URL, removeQueueKeys, testRedis, uniqueQueue } from '../../../test/support/redis.js';

/** Timeouts (seconds) of the SMTP backends the worker built: the last one has the options every batch's gets. */
const timeouts: (number | null)[] = [];

class RecordingSmtpBackend extends SmtpBackend {
  constructor(options: SmtpBackendOptions = {}) {
    super(options);
    timeouts.push(this.timeout);
  }
}

const memoryOptions: (BackendOptions & Record<string, unknown>)[] = [];

class RecordingMemoryBackend extends MemoryBackend {
  constructor(options: BackendOptions & Record<string, unknown> = {}) {
    super(options);
    memoryOptions.push(options);
  }
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  timeouts.length = 0;
  memoryOptions.length = 0;
});

/** Starts (and closes after the test) a worker that takes no job, to see the backend it builds. */
function worker(options: WorkerOptions): void {
  const queue = uniqueQueue('smtp-timeout');
  const started = createWorker({
    redis: REDIS_URL,
    queue,
    autorun: false,
    logger: pino({ level: 'silent' }),
    ...options,
  });
  cleanups.push(async () => {
    await started.close();
    const redis = testRedis();
    await removeQueueKeys(redis, queue);
    await redis.quit();
  });
}

describe('the SMTP timeout of the worker', () => {
  it('is 60 s when EMAIL_TIMEOUT is not set', () => {
    worker({ backend: RecordingSmtpBackend });
    expect(timeouts.at(-1)).toBe(60);
    expect(workerDefaults.smtpTimeout).toBe(60_000);
  });

  it('is EMAIL_TIMEOUT when that is set', () => {
    configure({ EMAIL_TIMEOUT: 7 });
    cleanups.push(async () => configure({ EMAIL_TIMEOUT: undefined }));
    worker({ backend: RecordingSmtpBackend });
    expect(timeouts.at(-1)).toBe(7);
  });

  it('is the timeout of the backend options, or the smtpTimeout option, when given', () => {
    worker({ backend: RecordingSmtpBackend, backendOptions: { timeout: 3 } });
    expect(timeouts.at(-1)).toBe(3);
    worker({ backend: RecordingSmtpBackend, smtpTimeout: 5000 });
    expect(timeouts.at(-1)).toBe(5);
  });

  it('is MAILROOM_SMTP_TIMEOUT when set', () => {
    // Settings are read once, as Django's are: configure() is how code sets one later.
    configure({ MAILROOM_SMTP_TIMEOUT: '2s' });
    cleanups.push(async () => {
      configure({ MAILROOM_SMTP_TIMEOUT: undefined });
    });
    worker({ backend: RecordingSmtpBackend });
    expect(timeouts.at(-1)).toBe(2);
  });

  it('can be turned off with smtpTimeout: null', () => {
    worker({ backend: RecordingSmtpBackend, smtpTimeout: null });
    expect(timeouts.at(-1)).toBeNull();
  });

  it('is given to SMTP backends only', () => {
    worker({ backend: RecordingMemoryBackend });
    expect(memoryOptions.length).toBeGreaterThan(0);
    for (const options of memoryOptions) expect(options).not.toHaveProperty('timeout');
  });

  it('leaves plain sendMail users with Django’s default: no timeout', () => {
    expect((getConnection('smtp') as SmtpBackend).timeout).toBeNull();
  });
});

describe('MAILROOM_SMTP_TIMEOUT', () => {
  it('is read as a duration, 60 s when unset or blank', () => {
    expect(readWorkerEnvironment({ MAILROOM_SMTP_TIMEOUT: '90s' }).smtpTimeout).toBe(90_000);
    expect(readWorkerEnvironment({ MAILROOM_SMTP_TIMEOUT: ' ' }).smtpTimeout).toBe(60_000);
    expect(readWorkerEnvironment({}).smtpTimeout).toBe(60_000);
  });

  it.each(['0', 'soon'])('refuses %j, naming the variable', (value) => {
    const read = () => readWorkerEnvironment({ MAILROOM_SMTP_TIMEOUT: value });
    expect(read).toThrow(ConfigError);
    expect(read).toThrow(`MAILROOM_SMTP_TIMEOUT="${value}"`);
  });
});
