/** createWorker reads the MAILROOM_* settings the way createProducer does (configure() or environment). */
import { configure, resetSettings } from '@mailroom/core';
import { createProducer } from '@mailroom/producer';
import { afterEach, describe, expect, it } from 'vitest';
import { createWorker } from '../src/index.js';

afterEach(() => resetSettings());

describe('worker settings', () => {
  it('takes its queue and prefix from configure(), as the producer does', async () => {
    configure({ MAILROOM_QUEUE: 'settings-queue', MAILROOM_PREFIX: '{settings-test}' });
    const worker = createWorker({ backend: 'memory', autorun: false });
    const producer = createProducer();
    try {
      expect(worker.queue).toBe('settings-queue');
      expect(worker.bullWorker.opts.prefix).toBe('{settings-test}');
      expect(producer.queue).toBe('settings-queue');
    } finally {
      await worker.close();
      await producer.close();
    }
  });

  it('lets an option win over the setting, and reads the worker settings as option defaults', async () => {
    configure({ MAILROOM_QUEUE: 'settings-queue', MAILROOM_CONCURRENCY: 7, MAILROOM_LOCK_DURATION: '4s' });
    const worker = createWorker({ backend: 'memory', autorun: false, queue: 'explicit' });
    try {
      expect(worker.queue).toBe('explicit');
      expect(worker.bullWorker.opts.concurrency).toBe(7);
      expect(worker.bullWorker.opts.lockDuration).toBe(4000);
    } finally {
      await worker.close();
    }
  });
});
