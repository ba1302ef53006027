/** The worker's settings (config.ts): MAILROOM_* over workerDefaults, createWorker's options over both. */
import { ConfigError, configure, resetSettings } from '@mailroom/core';
import { readWorkerEnvironment, resolveWorkerOptions, workerDefaults } from '@mailroom/worker';
import { afterEach, describe, expect, it } from 'vitest';

afterEach(() => {
  resetSettings();
});

describe('readWorkerEnvironment', () => {
  it('uses the defaults when nothing is set', () => {
    const env = readWorkerEnvironment({});
    expect(env).toMatchObject({
      queue: workerDefaults.queue,
      concurrency: workerDefaults.concurrency,
      attempts: workerDefaults.attempts,
      shutdownTimeout: workerDefaults.shutdownTimeout,
      rateLimit: undefined,
      metricsPort: undefined,
    });
  });

  it('reads every MAILROOM_ variable', () => {
    const env = readWorkerEnvironment({
      MAILROOM_QUEUE: 'news',
      MAILROOM_CONCURRENCY: '4',
      MAILROOM_RATE_LIMIT: '200/s',
      MAILROOM_ATTEMPTS: '3',
      MAILROOM_SHUTDOWN_TIMEOUT: '5s',
      MAILROOM_METRICS_PORT: '9100',
      MAILROOM_LOCK_DURATION: '2s',
    });
    expect(env).toMatchObject({
      queue: 'news',
      concurrency: 4,
      rateLimit: { max: 200, duration: 1000 },
      attempts: 3,
      shutdownTimeout: 5000,
      metricsPort: 9100,
      lockDuration: 2000,
    });
  });

  it.each([
    ['MAILROOM_CONCURRENCY', 'many'],
    ['MAILROOM_ATTEMPTS', '0'],
    ['MAILROOM_RATE_LIMIT', 'lots'],
    ['MAILROOM_METRICS_PORT', '-3'],
  ])('rejects %s=%s naming the variable', (name, value) => {
    expect(() => readWorkerEnvironment({ [name]: value })).toThrow(ConfigError);
    expect(() => readWorkerEnvironment({ [name]: value })).toThrow(name);
  });
});

describe('resolveWorkerOptions', () => {
  it('uses workerDefaults when neither options nor settings say otherwise', () => {
    const resolved = resolveWorkerOptions({}, readWorkerEnvironment({}));
    expect(resolved).toMatchObject({
      queue: workerDefaults.queue,
      prefix: workerDefaults.prefix,
      concurrency: workerDefaults.concurrency,
      attempts: workerDefaults.attempts,
      backoffDelay: workerDefaults.backoffDelay,
      shutdownTimeout: workerDefaults.shutdownTimeout,
      lockDuration: workerDefaults.lockDuration,
      maxUnpackedBytes: workerDefaults.maxUnpackedBytes,
      rateLimit: undefined,
    });
  });

  it('takes each MAILROOM_* setting over its default', () => {
    const environment = readWorkerEnvironment({
      MAILROOM_QUEUE: 'news',
      MAILROOM_PREFIX: '{news}',
      MAILROOM_CONCURRENCY: '4',
      MAILROOM_RATE_LIMIT: '200/s',
      MAILROOM_BACKOFF: '250ms',
      MAILROOM_CONNECTION_IDLE: '0',
    });
    expect(resolveWorkerOptions({}, environment)).toMatchObject({
      queue: 'news',
      prefix: '{news}',
      concurrency: 4,
      rateLimit: { max: 200, duration: 1000 },
      backoffDelay: 250,
      connectionIdleTimeout: 0,
    });
  });

  it('lets options override the settings, and rateLimit: null turn the limit off', () => {
    const environment = readWorkerEnvironment({ MAILROOM_CONCURRENCY: '4', MAILROOM_RATE_LIMIT: '200/s' });
    expect(resolveWorkerOptions({ concurrency: 1, rateLimit: null }, environment)).toMatchObject({
      concurrency: 1,
      rateLimit: undefined,
    });
  });

  it('reads configure() when given no environment, as createProducer does', () => {
    configure({ MAILROOM_QUEUE: 'configured', MAILROOM_ATTEMPTS: 2 });
    expect(resolveWorkerOptions({})).toMatchObject({ queue: 'configured', attempts: 2 });
  });

  it('refuses a bad option before anything connects', () => {
    expect(() => resolveWorkerOptions({ maxUnpackedBytes: 0 }, readWorkerEnvironment({}))).toThrow(
      'maxUnpackedBytes must be a positive number (got 0)',
    );
    expect(() => resolveWorkerOptions({ queue: 'a:b' }, readWorkerEnvironment({}))).toThrow(ConfigError);
  });
});
