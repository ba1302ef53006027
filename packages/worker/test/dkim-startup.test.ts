/**
 * DKIM at worker start-up: createWorker builds a probe backend before it connects to anything
 * (worker.ts, backendFactory), and the SMTP backend reads and checks the EMAIL_DKIM_* key in its
 * constructor, so a worker with a bad key or a partial DKIM configuration refuses to start with a
 * ConfigError that names the setting and never shows the key.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import {
  ConfigError,
  configure,
  EmailMessage,
  resetSettings,
  SmtpBackend,
  type SmtpBackendOptions,
} from '@mailroom/core';
import { createProducer } from '@mailroom/producer';
import { createWorker, type WorkerOptions } from '@mailroom/worker';
import { pino } from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REDIS_URL, removeQueueKeys, testRedis, uniqueQueue } from '../../../test/support/redis.js';
import { startSmtpServer } from '../../../test/support/smtp-server.js';

const DKIM_NAMES = ['EMAIL_DKIM_DOMAIN', 'EMAIL_DKIM_SELECTOR', 'EMAIL_DKIM_PRIVATE_KEY'] as const;

let pem: string;
/** A PEM cut in the middle: key material that cannot be parsed. */
let damaged: string;

beforeAll(() => {
  pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({
    type: 'pkcs8',
    format: 'pem',
  }) as string;
  damaged = pem.slice(0, 900);
});

/** Signer domains of the SMTP backends the worker built. */
const signers: (string | null)[] = [];

class RecordingSmtpBackend extends SmtpBackend {
  constructor(options: SmtpBackendOptions = {}) {
    super(options);
    signers.push(this.dkimSigner?.dnsName ?? null);
  }
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  signers.length = 0;
  for (const name of DKIM_NAMES) delete process.env[name];
  resetSettings();
});

/** Starts (and closes after the test) a worker that takes no job. */
function startWorker(options: WorkerOptions): void {
  const queue = uniqueQueue('dkim-startup');
  const worker = createWorker({
    redis: REDIS_URL,
    queue,
    autorun: false,
    logger: pino({ level: 'silent' }),
    ...options,
  });
  cleanups.push(async () => {
    await worker.close();
    const redis = testRedis();
    await removeQueueKeys(redis, queue);
    await redis.quit();
  });
}

/** The ConfigError starting a worker throws; checked to show none of the key's lines. */
function refusal(options: WorkerOptions): ConfigError {
  let caught: unknown;
  try {
    startWorker(options);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(ConfigError);
  const printed = `${inspect(caught, { depth: 10 })}\n${JSON.stringify(caught)}`;
  for (const line of damaged.split('\n').filter((text) => text.length >= 16 && !text.startsWith('-----'))) {
    expect(printed).not.toContain(line);
  }
  return caught as ConfigError;
}

describe('a worker with DKIM', () => {
  it('refuses to start with a bad key in EMAIL_DKIM_PRIVATE_KEY, naming the setting, not the key', () => {
    configure({
      EMAIL_DKIM_DOMAIN: 'example.com',
      EMAIL_DKIM_SELECTOR: 's1',
      EMAIL_DKIM_PRIVATE_KEY: damaged,
    });
    expect(refusal({ backend: 'smtp' }).message).toMatch(/^EMAIL_DKIM_PRIVATE_KEY cannot be used: /);
  });

  it('refuses to start with a bad key in backendOptions.dkim', () => {
    const error = refusal({
      backend: 'smtp',
      backendOptions: { dkim: { domain: 'example.com', selector: 's1', privateKey: damaged } },
    });
    expect(error.message).toMatch(/^EMAIL_DKIM_PRIVATE_KEY cannot be used: /);
  });

  it('refuses to start with a partial DKIM configuration, naming what is missing', () => {
    process.env.EMAIL_DKIM_DOMAIN = 'example.com';
    process.env.EMAIL_DKIM_PRIVATE_KEY = damaged;
    resetSettings();
    expect(refusal({ backend: 'smtp' }).message).toMatch(
      /^EMAIL_DKIM_SELECTOR is not set while EMAIL_DKIM_DOMAIN and EMAIL_DKIM_PRIVATE_KEY are/,
    );
  });

  it('starts with a good key, and the backends it builds sign', () => {
    configure({ EMAIL_DKIM_DOMAIN: 'example.com', EMAIL_DKIM_SELECTOR: 's1', EMAIL_DKIM_PRIVATE_KEY: pem });
    startWorker({ backend: RecordingSmtpBackend });
    expect(signers.length).toBeGreaterThan(0);
    expect(signers.every((name) => name === 's1._domainkey.example.com')).toBe(true);
  });

  it('reads the key once at start-up: a key file gone later does not stop its connections signing', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'mailroom-dkim-'));
    cleanups.push(() => rm(directory, { recursive: true, force: true }));
    const keyFile = join(directory, 'dkim.pem');
    await writeFile(keyFile, pem);
    configure({
      EMAIL_DKIM_DOMAIN: 'example.com',
      EMAIL_DKIM_SELECTOR: 's1',
      EMAIL_DKIM_PRIVATE_KEY: keyFile,
    });
    const server = await startSmtpServer();
    cleanups.push(() => server.close());
    const queue = uniqueQueue('dkim-once');
    const worker = createWorker({
      redis: REDIS_URL,
      queue,
      backend: 'smtp',
      backendOptions: { host: server.host, port: server.port },
      logger: pino({ level: 'silent' }),
    });
    const producer = createProducer({ redis: REDIS_URL, queue, logger: pino({ level: 'silent' }) });
    cleanups.push(async () => {
      await producer.close();
      await worker.close();
      const redis = testRedis();
      await removeQueueKeys(redis, queue);
      await redis.quit();
    });
    // Gone before the first connection opens: only the signer built at start-up can sign.
    await rm(keyFile);
    await producer.enqueue(new EmailMessage('Hi', 'Body', 'news@example.com', ['reader@example.com']));
    const [received] = await server.waitForMessages(1, 20_000);
    const raw = received?.raw.toString('latin1') ?? '';
    expect(raw).toMatch(/^DKIM-Signature: /);
    const signature = raw.slice(0, raw.indexOf('\r\n', raw.indexOf('b=')));
    expect(signature).toMatch(/\bd=example\.com;/);
    expect(signature).toMatch(/\bs=s1;/);
  });
});
