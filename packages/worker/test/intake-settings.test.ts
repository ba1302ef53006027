/**
 * The worker settings issue 9 added or tightened: MAILROOM_QUEUE follows the producer's queue name
 * rule, and MAILROOM_MAX_UNPACKED_BYTES / maxUnpackedBytes cap what a batch may inflate to.
 */
import { deflateRawSync } from 'node:zlib';
import { ConfigError, QUEUE_NAME_RULE } from '@mailroom/core';
import { parseBatchJob } from '@mailroom/core/protocol';
import { createWorker, readWorkerEnvironment, workerDefaults } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;

describe('MAILROOM_QUEUE', () => {
  it.each(['x:y', 'mail queue', 'q'.repeat(101)])('refuses %j naming the variable and the rule', (queue) => {
    const read = () => readWorkerEnvironment({ MAILROOM_QUEUE: queue });
    expect(read).toThrow(ConfigError);
    expect(read).toThrow(`Invalid MAILROOM_QUEUE=${JSON.stringify(queue)}: ${QUEUE_NAME_RULE}`);
  });

  it('reads a valid name, trimmed, and takes the default when unset or blank', () => {
    expect(readWorkerEnvironment({ MAILROOM_QUEUE: ' news-2026 ' }).queue).toBe('news-2026');
    expect(readWorkerEnvironment({ MAILROOM_QUEUE: ' ' }).queue).toBe(workerDefaults.queue);
  });
});

describe('maxUnpackedBytes', () => {
  it('is 24 MiB and 2 bytes by default, the limit parseBatchJob applies by default', () => {
    expect(workerDefaults.maxUnpackedBytes).toBe(24 * MiB + 2);
    const bomb = deflateRawSync(Buffer.alloc(25 * MiB)).toString('base64');
    expect(() => parseBatchJob({ v: 1, packed: bomb, enqueuedAt: 0 })).toThrow(
      `inflates past ${workerDefaults.maxUnpackedBytes} bytes`,
    );
  });

  it('is read from MAILROOM_MAX_UNPACKED_BYTES', () => {
    expect(readWorkerEnvironment({}).maxUnpackedBytes).toBe(workerDefaults.maxUnpackedBytes);
    expect(readWorkerEnvironment({ MAILROOM_MAX_UNPACKED_BYTES: '50000000' }).maxUnpackedBytes).toBe(
      50_000_000,
    );
  });

  it.each(['0', 'lots', '1.5'])('refuses MAILROOM_MAX_UNPACKED_BYTES=%s naming the variable', (value) => {
    const read = () => readWorkerEnvironment({ MAILROOM_MAX_UNPACKED_BYTES: value });
    expect(read).toThrow(ConfigError);
    expect(read).toThrow('MAILROOM_MAX_UNPACKED_BYTES');
  });

  it('must be positive for createWorker (a ConfigError before anything connects)', () => {
    expect(() => createWorker({ maxUnpackedBytes: 0, backend: 'memory' })).toThrow(
      'maxUnpackedBytes must be a positive number (got 0)',
    );
  });
});
