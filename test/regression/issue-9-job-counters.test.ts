/**
 * Issue 9, BullMQ's job counters. A job hash whose `ats` (attempts started), `atm` (attempts made) or
 * `stc` (stalled count) held something else than an integer made BullMQ's Lua scripts fail half-way
 * (`ERR hash value is not an integer`), and the worker logged an error naming no job every time:
 * `ats` left the job active forever, `atm` removed a delivered job from the active list and left it
 * in no list, `ats` with `stc` removed it from every list unsent. Now the counter gets a stand-in (the
 * bad value is kept as `unreadable:<field>` until the job is removed), the repair is logged with the job id, and the job is
 * delivered once, completed, and followed by the next one.
 */
import { EmailMessage } from '@mailroom/core';
import { createWorker } from '@mailroom/worker';
import { describe, expect, it } from 'vitest';
import { queueIdle, queueRig, useHarness } from '../support/harness.js';
import { PREFIX, REDIS_URL } from '../support/redis.js';
import { captureLogger, waitUntil } from '../support/wait.js';

const harness = useHarness();
const { redis } = harness;

function message(to: string): EmailMessage {
  return new EmailMessage('Hello', 'Hello', 'news@example.com', [to]);
}

describe('issue 9: a job counter that is not an integer', () => {
  it.each([[{ ats: 'abc' }], [{ atm: 'abc' }], [{ ats: 'abc', stc: 'abc' }]])(
    'with %j: the job is delivered once and completed, logged with its id, and the next one goes on',
    async (counters) => {
      const rig = await queueRig(harness, { label: 'issue-9-counters' });
      const logs = captureLogger();
      const {
        jobIds: [id = ''],
      } = await rig.producer.enqueue(message('counted@example.com'));
      const jobKey = `${PREFIX}:${rig.queue}:${id}`;
      await redis.hset(jobKey, counters);
      const worker = createWorker({
        redis: REDIS_URL,
        queue: rig.queue,
        backend: 'smtp',
        backendOptions: { host: rig.server.host, port: rig.server.port },
        logger: logs.logger,
      });
      harness.onCleanup(() => worker.close());

      // The producer's jobs are removed on completion (removeOnComplete): a completed job leaves no
      // hash. Before the fix the job stayed active forever, or in no list with its hash kept.
      await waitUntil(
        async () =>
          (await redis.exists(jobKey)) === 0 &&
          logs.lines.some((line) => line.msg === 'batch completed' && line.jobId === id),
        `job ${id} to complete`,
        15_000,
      );
      const fields = Object.keys(counters);
      const repairs = logs.lines.filter((line) =>
        line.msg?.toString().startsWith('job counter is not an integer'),
      );
      expect(repairs.map((line) => [line.jobId, line.field, line.value, line.level])).toEqual(
        fields.map((field) => [id, field, 'abc', 50]),
      );
      expect(logs.lines.filter((line) => line.msg === 'worker error')).toEqual([]);

      const {
        jobIds: [next = ''],
      } = await rig.producer.enqueue(message('next@example.com'));
      await rig.server.waitForMessages(2);
      await queueIdle(rig.producer, 30_000);
      expect(rig.server.messages.map((received) => received.to)).toEqual([
        ['counted@example.com'],
        ['next@example.com'],
      ]);
      // Both completed (and so removed); none left active, failed, or in no list with its hash kept.
      for (const jobId of [id, next]) expect(await redis.exists(`${PREFIX}:${rig.queue}:${jobId}`)).toBe(0);
      expect(await redis.lrange(`${PREFIX}:${rig.queue}:active`, 0, -1)).toEqual([]);
      expect(await redis.zcard(`${PREFIX}:${rig.queue}:failed`)).toBe(0);
    },
  );

  it('repairs an `ats` job fetched as the next job of a finished one, and delivers both once', async () => {
    const rig = await queueRig(harness, { label: 'issue-9-counters' });
    const logs = captureLogger();
    await rig.producer.enqueue(message('first@example.com'));
    const {
      jobIds: [id = ''],
    } = await rig.producer.enqueue(message('counted@example.com'));
    await redis.hset(`${PREFIX}:${rig.queue}:${id}`, 'ats', 'abc');
    const worker = createWorker({
      redis: REDIS_URL,
      queue: rig.queue,
      concurrency: 1,
      backend: 'smtp',
      backendOptions: { host: rig.server.host, port: rig.server.port },
      logger: logs.logger,
    });
    harness.onCleanup(() => worker.close());
    await rig.server.waitForMessages(2);
    await queueIdle(rig.producer, 30_000);
    expect(rig.server.messages.map((received) => received.to)).toEqual([
      ['first@example.com'],
      ['counted@example.com'],
    ]);
    expect(
      logs.lines.filter((line) => line.msg === 'batch completed').map((line) => line.jobId),
    ).toHaveLength(2);
    expect(logs.lines.filter((line) => line.jobId === id && line.field === 'ats')).toHaveLength(1);
    expect(logs.lines.filter((line) => line.msg === 'worker error')).toEqual([]);
  });
});
