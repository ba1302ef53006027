/**
 * Jobs the worker cannot read (issue 9): a BullMQ Worker that takes every job however corrupt its
 * Redis hash, so that each one is dead-lettered with its id and reason instead of stalling forever.
 */
import { randomUUID } from 'node:crypto';
import { coerceError } from '@mailroom/core';
import type { RedisClient } from '@mailroom/core/protocol';
import { type BatchJobData, protocolDefaults, SECOND } from '@mailroom/core/protocol';
import { type Job, type JobJson, Worker } from 'bullmq';

/**
 * Options an unreadable job is failed with, whatever its own say: no retry, and kept as long as the
 * other dead letters (the producer's keepFailed defaults). Its own may be what is unreadable, and
 * BullMQ's failure script compares some of them as numbers.
 */
const UNREADABLE_JOB_OPTIONS = {
  attempts: 1,
  removeOnFail: {
    age: Math.ceil(protocolDefaults.keepFailedAge / SECOND),
    count: protocolDefaults.keepFailedCount,
  },
};

/**
 * What stands in for each job hash field that the worker may find unusable ('' removes it); the
 * original is kept beside it, as `unreadable:<field>`.
 */
const STAND_INS: Record<string, string> = {
  data: '{}',
  opts: JSON.stringify(UNREADABLE_JOB_OPTIONS),
  progress: '0',
  parent: '',
  parentKey: '',
  rjk: '',
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function jsonError(text: string): string | undefined {
  try {
    JSON.parse(text);
    return undefined;
  } catch (error) {
    return coerceError(error).message;
  }
}

function optsProblem(text: string): string | undefined {
  let opts: unknown;
  try {
    opts = JSON.parse(text);
  } catch (error) {
    return `opts is not JSON (${coerceError(error).message})`;
  }
  if (!isRecord(opts)) return 'opts is not a JSON object';
  // BullMQ's finishing script compares these as numbers: a string stops it half-way, and the job is
  // neither active nor failed.
  if (opts.attempts !== undefined && !Number.isInteger(opts.attempts))
    return 'opts.attempts is not an integer';
  for (const name of ['removeOnComplete', 'removeOnFail']) {
    const keep = opts[name];
    if (keep === undefined || typeof keep === 'boolean' || typeof keep === 'number') continue;
    if (
      !isRecord(keep) ||
      !['age', 'count', 'limit'].every((key) => ['undefined', 'number'].includes(typeof keep[key]))
    ) {
      return `opts.${name} is not a boolean, a number or { age, count, limit }`;
    }
  }
  return undefined;
}

const NOT_IN_A_FLOW = 'a mailroom batch is never part of a BullMQ flow';

/**
 * Why a field of a fetched job hash cannot be taken as it is (undefined: it can), for each field that
 * stops BullMQ. Issue #9: one that is not JSON made BullMQ throw while it read the job (bullmq 6.7,
 * the fetch commands' `rawToJobJson`), before the job had an id, so the job was never failed: it
 * stalled forever and every try logged an error naming no job. A flow's parent link (which BullMQ's
 * finishing script follows, and drops a job that has a broken one) or a job scheduler's key (whose
 * next run BullMQ schedules before the job reaches the processor) are never in a batch either.
 * `data` is parsed once, by createJob.
 */
const FIELD_PROBLEMS: Record<string, (value: string) => string | undefined> = {
  opts: optsProblem,
  progress: (value) => {
    const error = jsonError(value);
    return error === undefined ? undefined : `progress is not JSON (${error})`;
  },
  parent: () => `it has a parent (${NOT_IN_A_FLOW})`,
  parentKey: () => `it has a parentKey (${NOT_IN_A_FLOW})`,
  rjk: () => 'it has a job scheduler key, rjk (a mailroom batch never comes from one)',
};

/** Why a job cannot be read, and which of its hash fields get stand-ins. */
export interface Unreadable {
  reasons: string[];
  fields: string[];
}

/**
 * Key of the stand-in opts under which the fetch command's reply hands an {@link Unreadable} on to
 * createJob. Random per process, so that no job's own opts can pass for it.
 */
const UNREADABLE_KEY = `mailroom:unreadable:${randomUUID()}`;

/** Unreadable jobs, as MailroomWorker.createJob found them; the processor dead-letters them. */
export const unreadableJobs = new WeakMap<Job, Unreadable>();

/** Commands whose reply carries the next job's hash: `[[field, value, ...], id, ...]` (raw2NextJobData). */
const FETCH_COMMANDS = new Set(['moveToActive', 'moveToFinished', 'moveToDelayed']);

/**
 * Keeps each unreadable field under `unreadable:<field>` and puts its stand-in in its place, while
 * the lock is still ours. KEYS: the job hash, its lock; ARGV: our lock token, then field, stand-in.
 */
const STAND_IN_SCRIPT = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    redis.call('HSET', KEYS[1], 'unreadable:' .. ARGV[i], value)
    if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
    else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  end
end
return 1
`;

function valueIndex(hash: unknown[], field: string): number {
  for (let index = 0; index < hash.length; index += 2) if (hash[index] === field) return index + 1;
  return -1;
}

/**
 * Makes a fetched job hash one BullMQ can take, in place: each field {@link FIELD_PROBLEMS} finds
 * fault with gets its stand-in, and the reasons ride on to createJob in the stand-in opts. A hash
 * without data is unreadable too (BullMQ would take it for `{}`).
 */
function standInForUnreadableFields(hash: unknown[]): void {
  const found: Unreadable = { reasons: [], fields: [] };
  const data = valueIndex(hash, 'data');
  if (data === -1 || hash[data] === '') found.reasons.push('it has no data');
  for (const [field, problem] of Object.entries(FIELD_PROBLEMS)) {
    const at = valueIndex(hash, field);
    const reason = at === -1 ? undefined : problem(String(hash[at]));
    if (reason === undefined) continue;
    found.reasons.push(reason);
    found.fields.push(field);
    if (STAND_INS[field] === '') hash.splice(at - 1, 2);
    else hash[at] = STAND_INS[field];
  }
  if (found.reasons.length === 0) return;
  const opts = JSON.stringify({ ...UNREADABLE_JOB_OPTIONS, [UNREADABLE_KEY]: found });
  const at = valueIndex(hash, 'opts');
  if (at === -1) hash.push('opts', opts);
  else hash[at] = opts;
}

/**
 * BullMQ's Worker, except that it takes every job however corrupt its Redis hash: what BullMQ
 * cannot parse gets a stand-in, and the job goes to the processor marked in {@link unreadableJobs},
 * to be dead-lettered with the reason under its id (issue #9).
 */
export class MailroomWorker extends Worker<BatchJobData> {
  protected override createBackend(): void {
    super.createBackend();
    // BullMQ's constructor calls this before any job is fetched (and before this class has fields).
    const backend = this.backend;
    const execCommand = backend.execCommand.bind(backend);
    backend.execCommand = (client, name, args) => {
      const reply = execCommand(client, name, args);
      if (!FETCH_COMMANDS.has(name)) return reply;
      return Promise.resolve(reply).then((next: unknown) => {
        if (Array.isArray(next) && Array.isArray(next[0])) standInForUnreadableFields(next[0]);
        return next;
      });
    };
  }

  protected override createJob(json: JobJson, jobId: string): Job<BatchJobData> {
    const opts = (json.opts ?? {}) as Record<string, unknown>;
    const found = (opts[UNREADABLE_KEY] as Unreadable | undefined) ?? { reasons: [], fields: [] };
    let data: unknown;
    try {
      data = JSON.parse(json.data);
    } catch (error) {
      found.reasons.push(`data is not JSON (${coerceError(error).message})`);
      found.fields.push('data');
    }
    let job: Job<BatchJobData>;
    try {
      // A placeholder for the data, which BullMQ would parse a second time.
      job = super.createJob({ ...json, data: 'null' }, jobId);
    } catch (error) {
      // Whatever else BullMQ's Job refuses (an option of a type it does not expect).
      found.reasons.push(`BullMQ cannot take it (${coerceError(error).message})`);
      job = super.createJob({ ...json, data: 'null', opts: {} }, jobId);
    }
    job.data = data as BatchJobData;
    if (found.reasons.length > 0) {
      job.opts = { ...UNREADABLE_JOB_OPTIONS };
      // Once it has stalled too often BullMQ fails it itself, before the processor, as "stalled more
      // than allowable limit"; the processor gives the reason instead.
      job.deferredFailure = '';
      unreadableJobs.set(job, found);
    }
    return job;
  }
}

/**
 * Leaves the dead letter of an unreadable job in a shape BullMQ's finishing script can fail and tools
 * can list: each unreadable field is kept as `unreadable:<field>` beside its stand-in, while the lock
 * (`token`) is still ours. Resolves with the reason to fail the job with.
 */
export async function standInForUnreadableJob(
  redis: RedisClient,
  jobKey: string,
  token: string | undefined,
  unreadable: Unreadable,
): Promise<string> {
  const fields = unreadable.fields.flatMap((field) => [field, STAND_INS[field] ?? '']);
  if (fields.length > 0)
    await redis.eval(STAND_IN_SCRIPT, 2, jobKey, `${jobKey}:lock`, token ?? '', ...fields);
  return `unreadable job: ${unreadable.reasons.join('; ')}`;
}
