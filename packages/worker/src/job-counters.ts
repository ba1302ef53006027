/** Job counters (issue 9): jobs whose BullMQ counters (ats, atm, stc) are not integers are repaired, not lost. */

import type { RedisClient } from '@mailroom/core/protocol';
import type { RedisQueueBackend } from 'bullmq';

/**
 * The integer counters BullMQ keeps in a job hash and increments in its Lua scripts (HINCRBY):
 * attempts started (moveToActive), attempts made (moveToFinished), stalled count
 * (moveStalledJobsToWait). A value that is not an integer makes the script fail half-way, and Redis
 * keeps what it wrote before: a job left active forever, or removed from every list.
 */
export const COUNTER_FIELDS = ['ats', 'atm', 'stc'] as const;

/** One counter of one job that held something else than an integer, and what stands in for it. */
export interface CounterRepair {
  jobId: string;
  field: string;
  /** What the field held; kept in the job hash as `unreadable:<field>`. */
  value: string;
  standIn: string;
}

/**
 * Why the stand-ins are what they are. A job whose counter is unreadable is processed normally, not
 * dead-lettered: its data is intact, a counter is BullMQ's bookkeeping, and dead-lettering would drop
 * messages that were never sent. What the counters cannot tell any more is whether the job ran
 * before, so the stand-ins say it may have: with `ats` and `atm` at 1 the worker reads the job's
 * ledger before sending (decode-job.ts), and every message already delivered is skipped, so nothing
 * is sent twice. Mailroom counts delivery attempts in the ledger, not in `atm`, so no retry is lost
 * or added. `stc` restarts at 0: the job may stall maxStalledCount more times, a bounded number.
 */
const STAND_INS: Record<(typeof COUNTER_FIELDS)[number], string> = { ats: '1', atm: '1', stc: '0' };

/** Jobs looked at per list when a fetch fails: the ones BullMQ takes next, and all active ones up to this. */
const SCAN_LIMIT = 1000;

/**
 * Checks the counters of the given job ids, or (none given) of the active jobs, the stalled set and
 * the next SCAN_LIMIT jobs of wait, paused, prioritized and delayed; keeps each non-integer one under
 * `unreadable:<field>` and puts its stand-in in its place. Redis's string2ll takes no sign on 0, no
 * leading zero and at most 19 digits; 18 keeps HINCRBY clear of overflow. Returns, per repair, id,
 * field, old value, stand-in, and the lock token when the job is active, its `ats` was unreadable (its
 * fetch failed half-way) and the lock is this worker's (ARGV[2] is its token prefix), else ''.
 * KEYS: active, stalled, wait, paused, prioritized, delayed. ARGV: job key prefix, token prefix,
 * stand-ins of ats, atm, stc, then job ids.
 */
const REPAIR_SCRIPT = `
local function isInteger(value)
  if value == '0' then return true end
  local digits = string.match(value, '^%-?([1-9]%d*)$')
  return digits ~= nil and #digits <= 18
end
local standIns = { ats = ARGV[3], atm = ARGV[4], stc = ARGV[5] }
local ids = {}
if #ARGV > 5 then
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  local limit = ${SCAN_LIMIT}
  local lists = {
    redis.call('LRANGE', KEYS[1], 0, limit - 1),
    redis.call('SMEMBERS', KEYS[2]),
    redis.call('LRANGE', KEYS[3], -limit, -1),
    redis.call('LRANGE', KEYS[4], -limit, -1),
    redis.call('ZRANGE', KEYS[5], 0, limit - 1),
    redis.call('ZRANGE', KEYS[6], 0, limit - 1),
  }
  local seen = {}
  for _, list in ipairs(lists) do
    for _, id in ipairs(list) do
      if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
    end
  end
end
local repairs = {}
for _, id in ipairs(ids) do
  local jobKey = ARGV[1] .. id
  local values = redis.call('HMGET', jobKey, 'ats', 'atm', 'stc')
  local fields = { 'ats', 'atm', 'stc' }
  for i, field in ipairs(fields) do
    local value = values[i]
    if value and not isInteger(value) then
      redis.call('HSET', jobKey, 'unreadable:' .. field, value, field, standIns[field])
      local token = ''
      if field == 'ats' and redis.call('LPOS', KEYS[1], id) then
        local lock = redis.call('GET', jobKey .. ':lock')
        if lock and string.sub(lock, 1, #ARGV[2]) == ARGV[2] then token = lock end
      end
      repairs[#repairs + 1] = { id, field, value, standIns[field], token }
    end
  end
end
return repairs
`;

/** The message of the error a BullMQ script fails with on a counter that is not an integer. */
const COUNTER_ERROR = /hash value is not an integer|increment or decrement would overflow/;

/** True when `error` is a Redis script failing on a job counter that is not an integer. */
export function isCounterError(error: unknown): boolean {
  return error instanceof Error && COUNTER_ERROR.test(error.message);
}

function isIntegerText(value: unknown): boolean {
  return typeof value === 'string' && (value === '0' || /^-?[1-9]\d{0,17}$/.test(value));
}

/** What {@link guardJobCounters} needs of the worker it guards. */
export interface CounterGuardOptions {
  /** Prefix of the lock tokens this worker takes jobs with (BullMQ's `${worker.id}:`). */
  tokenPrefix: () => string;
  /** Told of every repaired counter (to log it at error level with the job id). MUST not throw. */
  onRepair: (repair: CounterRepair) => void;
}

type ExecCommand = RedisQueueBackend['execCommand'];

/**
 * Wraps the backend's execCommand so that no job is left active forever or in no list because of a
 * counter that is not an integer:
 *
 * - A fetched job's hash (the reply of moveToActive, moveToFinished, moveToDelayed) with such an
 *   `atm` or `stc` is repaired while the lock is ours, before the job is processed: otherwise
 *   moveToFinished fails after removing the job from the active list (delivered, then in no list),
 *   and moveStalledJobsToWait after removing it too (in no list, unsent).
 * - Before each stalled-job check, the counters of the jobs it will move are repaired: a worker that
 *   died before repairing its own leaves such a job active, for another one's check.
 * - A fetch that fails on `ats` (moveToActive's HINCRBY, after the job was moved to active and
 *   locked): the active and next jobs are repaired, each one our failed fetch left locked is put back
 *   at the head of the wait list with BullMQ's own script, and the fetch is tried once more (a
 *   moveToFinished whose own job finished before its fetch of the next one failed answers "no next
 *   job" instead).
 */
export function guardJobCounters(backend: RedisQueueBackend, options: CounterGuardOptions): void {
  const execCommand: ExecCommand = backend.execCommand.bind(backend);

  async function repair(client: RedisClient, ids: string[] = []): Promise<CounterRepair[]> {
    const rows = (await client.eval(
      REPAIR_SCRIPT,
      6,
      ...['active', 'stalled', 'wait', 'paused', 'prioritized', 'delayed'].map((type) => backend.toKey(type)),
      backend.toKey(''),
      options.tokenPrefix(),
      STAND_INS.ats,
      STAND_INS.atm,
      STAND_INS.stc,
      ...ids,
    )) as string[][];
    const repairs: CounterRepair[] = [];
    for (const [jobId = '', field = '', value = '', standIn = '', token = ''] of rows) {
      repairs.push({ jobId, field, value, standIn });
      options.onRepair({ jobId, field, value, standIn });
      // Our fetch locked it and failed: give it back now, rather than after the lock expires and
      // the stalled check counts a stall that never was.
      if (token !== '') await backend.moveJobFromActiveToWait(jobId, token);
    }
    return repairs;
  }

  /** Repairs the counters of a fetched job (reply `[[field, value, ...], id, ...]`) in Redis and in the reply. */
  async function repairFetched(client: RedisClient, reply: unknown): Promise<void> {
    if (!Array.isArray(reply) || !Array.isArray(reply[0]) || typeof reply[1] !== 'string') return;
    const hash = reply[0] as unknown[];
    const bad = (index: number) =>
      index % 2 === 0 &&
      (COUNTER_FIELDS as readonly unknown[]).includes(hash[index]) &&
      !isIntegerText(hash[index + 1]);
    if (!hash.some((_, index) => bad(index))) return;
    const repairs = await repair(client, [reply[1]]);
    for (const { field, standIn } of repairs) {
      const at = hash.indexOf(field);
      if (at !== -1 && at % 2 === 0) hash[at + 1] = standIn;
    }
  }

  backend.execCommand = (client, name, args) => {
    // The Redis backend's clients are ioredis ones.
    const redis = client as unknown as RedisClient;
    if (name === 'moveStalledJobsToWait') {
      // Only the jobs this check moves: the stalled set (a whole scan here would cost every worker
      // thousands of reads per stalled interval). The full scan runs when a fetch fails.
      return redis
        .smembers(backend.toKey('stalled'))
        .then((ids) => (ids.length > 0 ? repair(redis, ids) : []))
        .then(() => execCommand(client, name, args));
    }
    if (!['moveToActive', 'moveToFinished', 'moveToDelayed'].includes(name)) {
      return execCommand(client, name, args);
    }
    return Promise.resolve(execCommand(client, name, args)).then(
      async (reply: unknown) => {
        await repairFetched(redis, reply);
        return reply;
      },
      async (error: unknown) => {
        if (!isCounterError(error)) throw error;
        await repair(redis);
        if (name === 'moveToActive') {
          const reply: unknown = await execCommand(client, name, args);
          await repairFetched(redis, reply);
          return reply;
        }
        // moveToFinished: KEYS[11] is the completed/failed set, KEYS[12] the job, ARGV[1] its id.
        if (name === 'moveToFinished') {
          const [finishedKey, jobKey, jobId] = [args[10], args[11], args[14]] as string[];
          const finished =
            (await redis.zscore(finishedKey ?? '', jobId ?? '')) !== null ||
            (await redis.exists(jobKey ?? '')) === 0;
          if (finished) return 0;
        }
        throw error;
      },
    );
  };
}
