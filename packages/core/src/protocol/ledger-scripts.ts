/** The Lua scripts the worker runs on a batch's ledger and its campaign's record: record, check, reopen. */
import { CAMPAIGN_FIELDS as FIELD } from './campaign-record.js';
import { protocolDefaults, SECOND } from './defaults.js';
import {
  FINAL_STATES,
  LEDGER_ATTEMPT_FIELD,
  LEDGER_MESSAGE_PREFIX,
  LEDGER_STATES as STATE,
} from './ledger-entry.js';

// A Lua table whose keys are the final state letters: `{ d = true, f = true, ... }`.
const FINAL_TABLE = `{ ${[...FINAL_STATES].map((state) => `${state} = true`).join(', ')} }`;

// Whether this worker still holds the job's lock, and the campaign's state.
// KEYS[2] campaign hash, KEYS[5] job lock; ARGV[2] campaign ('' when none), ARGV[4] lock token ('' to skip).
const STATUS = `
local function status()
  local held = 1
  if ARGV[4] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[4] then held = 0 end
  local state = ''
  if ARGV[2] ~= '' then state = redis.call('HGET', KEYS[2], '${FIELD.state}') or '' end
  return {held, state}
end
`;

/** ARGV of {@link RECORD} before its entries: ttl ms, campaign, epoch second, lock token, now ms. */
export const RECORD_FIXED_ARGS = 5;

/** ARGV of {@link RECORD} per message: field, encoded entry, failure reason, address, failure record. */
export const RECORD_ARGS_PER_MESSAGE = 5;

/**
 * Writes the entries of one or more messages of a batch (the replies one pipelined window brought
 * back: one round trip for all of them) and counts on the campaign each entry that becomes final for
 * the first time (so a re-run never counts twice). Returns {lock held (1/0), campaign state ('' without
 * campaign)}, so the worker learns of a lost lock, a pause or a cancel without another round trip,
 * before it sends more. A campaign message counted as failed (`f` or `x`) with a failure record
 * gets it in the campaign's failed-recipients hash in the same step (failed-recipients.ts), so the
 * records and the count agree after any crash; every count also sets the campaign's `lastSettledAt`.
 *
 * KEYS: ledger, campaign hash, campaign failures hash, campaign rate hash, job lock, campaign failed
 * recipients hash. ARGV: ttl ms, campaign ('' when none), epoch second, lock token ('' to skip), now
 * ms, then per message: field, encoded entry, failure reason, address and failure record ('' and ''
 * when there is none: delivered messages never carry one).
 */
export const RECORD = `${STATUS}
local final = ${FINAL_TABLE}
local counted = false
for i = ${RECORD_FIXED_ARGS + 1}, #ARGV, ${RECORD_ARGS_PER_MESSAGE} do
  local field, entry, reason, address = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local prev = redis.call('HGET', KEYS[1], field)
  redis.call('HSET', KEYS[1], field, entry)
  local state = string.sub(entry, 1, 1)
  local wasFinal = prev ~= false and final[string.sub(prev, 1, 1)] == true
  if ARGV[2] ~= '' and state ~= '${STATE.transient}' and not wasFinal then
    counted = true
    if state == '${STATE.delivered}' then
      redis.call('HINCRBY', KEYS[2], '${FIELD.sent}', 1)
      redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
    elseif state == '${STATE.cancelled}' then
      redis.call('HINCRBY', KEYS[2], '${FIELD.cancelled}', 1)
    else
      redis.call('HINCRBY', KEYS[2], '${FIELD.failed}', 1)
      redis.call('HINCRBY', KEYS[3], reason, 1)
      redis.call('EXPIRE', KEYS[3], ${protocolDefaults.campaignTtl / SECOND})
      if address ~= '' then
        redis.call('HSET', KEYS[6], address, ARGV[i + 4])
        redis.call('EXPIRE', KEYS[6], ${protocolDefaults.campaignTtl / SECOND})
      end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if counted then
  redis.call('EXPIRE', KEYS[4], ${protocolDefaults.campaignRateTtl / SECOND})
  redis.call('HSET', KEYS[2], '${FIELD.lastSettledAt}', ARGV[5])
end
return status()
`;

/** {@link RECORD}'s status without writing anything (after a rate-limit wait); same KEYS and ARGV, no entries. */
export const CHECK = `${STATUS}
return status()
`;

/**
 * Reopens the messages of a dead-lettered batch whose transient failures ran out of attempts
 * (x → t), resets the attempt count, and takes them back out of their campaign's failed counters, so
 * that a manual retry sends them again and the campaign counts each message once. Permanent failures
 * (f), deliveries (d) and cancellations (c) are left alone: they are never sent again. The entry keeps
 * its other fields (accepted, pending recipients, last reason): a retry resumes where the batch
 * stopped. Returns the number of messages reopened.
 *
 * A reopened campaign message also leaves the campaign's failed-recipients hash: it is being sent
 * again, so `campaign retry` must not send it a second time (ARGV after the first two: pairs of
 * ledger field and the address its failure record is kept under).
 *
 * KEYS: ledger, campaign hash, campaign failures hash, campaign failed-recipients hash. ARGV:
 * campaign ('' when none), ttl ms, then pairs of (message field, recipient address).
 */
export const REOPEN_EXHAUSTED = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local raw = redis.call('HGETALL', KEYS[1])
local counted = ARGV[1] ~= '' and redis.call('EXISTS', KEYS[2]) == 1
local addresses = {}
for i = 3, #ARGV, 2 do addresses[ARGV[i]] = ARGV[i + 1] end
local reopened = 0
for i = 1, #raw, 2 do
  local field, value = raw[i], raw[i + 1]
  local isMessage = string.sub(field, 1, ${LEDGER_MESSAGE_PREFIX.length}) == '${LEDGER_MESSAGE_PREFIX}'
  if isMessage and string.sub(value, 1, 1) == '${STATE.exhausted}' then
    redis.call('HSET', KEYS[1], field, '${STATE.transient}' .. string.sub(value, 2))
    reopened = reopened + 1
    if counted then
      -- The same reason field RECORD counted the failure under (entry.reason, else '').
      local ok, rest = pcall(cjson.decode, string.sub(value, 2))
      local reason = ''
      if ok and type(rest) == 'table' and type(rest.reason) == 'string' then reason = rest.reason end
      redis.call('HINCRBY', KEYS[2], '${FIELD.failed}', -1)
      if redis.call('HINCRBY', KEYS[3], reason, -1) <= 0 then redis.call('HDEL', KEYS[3], reason) end
    end
    if addresses[field] then redis.call('HDEL', KEYS[4], addresses[field]) end
  end
end
redis.call('HSET', KEYS[1], '${LEDGER_ATTEMPT_FIELD}', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return reopened
`;
