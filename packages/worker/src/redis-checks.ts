/** Start-up check of the Redis settings that decide whether a Redis restart or a full memory loses mail. */
import { coerceError } from '@mailroom/core';
import type { RedisClient } from '@mailroom/core/protocol';
import type { Logger } from 'pino';

/** The settings read with CONFIG GET (undefined: the server did not say). */
export interface RedisDurabilitySettings {
  /** `yes` when the append-only file is on. */
  appendonly: string | undefined;
  /** RDB snapshot schedule, e.g. `3600 1 300 100`; empty when snapshots are off. */
  save: string | undefined;
  maxmemoryPolicy: string | undefined;
}

/** One way the configured Redis can lose the queue's data, with what that means for mail. */
export interface RedisDurabilityProblem {
  setting: 'persistence' | 'maxmemory-policy' | 'unchecked';
  message: string;
}

/** What {@link checkRedisDurability} found. */
export interface RedisDurabilityReport {
  settings: RedisDurabilitySettings;
  /** Warnings: no persistence at all, an eviction policy, or settings that could not be read. */
  problems: RedisDurabilityProblem[];
  /** True with snapshots (RDB) but no AOF: a crash goes back to the last snapshot (not warned, see README). */
  snapshotsOnly: boolean;
}

async function configGet(redis: RedisClient, name: string): Promise<string | undefined> {
  // CONFIG GET answers [name, value] (RESP2); an unknown name answers [].
  const reply = (await redis.config('GET', name)) as unknown;
  if (!Array.isArray(reply)) return undefined;
  const index = reply.indexOf(name);
  return index === -1 ? undefined : String(reply[index + 1] ?? '');
}

/**
 * Reads `appendonly`, `save` and `maxmemory-policy` (CONFIG GET) and says what each means for mail.
 * Never throws: a server that refuses CONFIG (managed Redis, ACLs) gives one `unchecked` problem.
 */
export async function checkRedisDurability(redis: RedisClient): Promise<RedisDurabilityReport> {
  let settings: RedisDurabilitySettings;
  try {
    const [appendonly, save, maxmemoryPolicy] = await Promise.all(
      ['appendonly', 'save', 'maxmemory-policy'].map((name) => configGet(redis, name)),
    );
    settings = { appendonly, save, maxmemoryPolicy };
  } catch (error) {
    return {
      settings: { appendonly: undefined, save: undefined, maxmemoryPolicy: undefined },
      problems: [
        {
          setting: 'unchecked',
          message:
            `could not check Redis persistence and eviction policy (CONFIG GET refused: ${coerceError(error).message}): ` +
            'make sure it has AOF persistence (appendonly yes) and maxmemory-policy noeviction, or a ' +
            'restart or a full memory silently loses queued mail, delivery ledgers and campaigns',
        },
      ],
      snapshotsOnly: false,
    };
  }
  const problems: RedisDurabilityProblem[] = [];
  const aof = settings.appendonly === 'yes';
  const snapshots = settings.save !== undefined && settings.save.trim() !== '';
  if (settings.appendonly === undefined || settings.save === undefined) {
    problems.push({
      setting: 'unchecked',
      message:
        'could not check Redis persistence (CONFIG GET appendonly/save gave no answer): make sure it ' +
        'has AOF persistence (appendonly yes), or a restart loses every queued message',
    });
  } else if (!aof && !snapshots) {
    problems.push({
      setting: 'persistence',
      message:
        'Redis has no persistence (appendonly no, save ""): a Redis restart empties the queue. Waiting ' +
        'and retrying batches are never sent, delivery ledgers are gone, and a campaign started again ' +
        'cannot know whom it already reached. Set appendonly yes',
    });
  }
  if (settings.maxmemoryPolicy === undefined) {
    problems.push({
      setting: 'unchecked',
      message:
        'could not check Redis maxmemory-policy (CONFIG GET gave no answer): it must be noeviction, or a ' +
        'full memory silently drops queued batches and ledgers',
    });
  } else if (settings.maxmemoryPolicy !== 'noeviction') {
    problems.push({
      setting: 'maxmemory-policy',
      message:
        `Redis maxmemory-policy is ${settings.maxmemoryPolicy}, not noeviction: when memory is full ` +
        'Redis silently deletes keys, so a waiting batch is never sent, a deleted ledger makes a ' +
        'retry resend what was delivered, and a campaign loses its progress. Set maxmemory-policy ' +
        'noeviction (writes then fail loudly instead)',
    });
  }
  return { settings, problems, snapshotsOnly: !aof && snapshots };
}

/**
 * Runs {@link checkRedisDurability} and logs each problem as a warning (or one info line saying the
 * settings are safe). Never throws.
 */
export async function warnAboutRedisDurability(
  redis: RedisClient,
  logger: Logger,
  queue: string,
): Promise<void> {
  const { settings, problems, snapshotsOnly } = await checkRedisDurability(redis);
  const fields = {
    queue,
    appendonly: settings.appendonly,
    save: settings.save,
    maxmemoryPolicy: settings.maxmemoryPolicy,
  };
  for (const problem of problems) logger.warn({ ...fields, setting: problem.setting }, problem.message);
  if (problems.length > 0) return;
  logger.info(
    fields,
    snapshotsOnly
      ? 'Redis persistence: RDB snapshots only (a crash goes back to the last snapshot; appendonly yes is safer), maxmemory-policy noeviction'
      : 'Redis persistence: AOF on, maxmemory-policy noeviction',
  );
}
