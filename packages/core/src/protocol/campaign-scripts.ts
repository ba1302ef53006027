/** The Lua scripts the producer runs on a campaign's record: count a chunk, look up seen addresses, change state. */
import {
  CAMPAIGN_STATES,
  CAMPAIGN_FIELDS as FIELD,
  INVALID_REASON,
  INVALID_ROWS_KEPT,
} from './campaign-record.js';
import { protocolDefaults } from './defaults.js';

/**
 * Marks a chunk's recipients as seen and counts it, once per chunk key: after a crash, the same
 * chunk enqueued again (deduplicated by BullMQ) is not counted twice, and a restart that reads the
 * same list again counts nothing again (its chunks are all known). The invalid rows' records go in
 * the same step as their count, so the list and the count agree after a crash or restart too.
 * Everything it writes lives protocolDefaults.campaignTtl.
 *
 * KEYS: chunks set, campaign hash, failures hash, invalid rows list. ARGV: chunk key, total, queued,
 * invalid, duplicates, suppressed, n, then n invalid row records (JSON), then pairs of (bucket key,
 * field) for every recipient. Returns 1 when the chunk was counted, 0 when it had been already.
 */
export const COMMIT_CHUNK = `
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], ${protocolDefaults.campaignTtl})
redis.call('HINCRBY', KEYS[2], '${FIELD.total}', ARGV[2])
redis.call('HINCRBY', KEYS[2], '${FIELD.queued}', ARGV[3])
redis.call('HINCRBY', KEYS[2], '${FIELD.duplicates}', ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('HINCRBY', KEYS[2], '${FIELD.suppressed}', ARGV[6]) end
if tonumber(ARGV[4]) > 0 then
  redis.call('HINCRBY', KEYS[2], '${FIELD.failed}', ARGV[4])
  redis.call('HINCRBY', KEYS[3], '${INVALID_REASON}', ARGV[4])
end
local records = tonumber(ARGV[7])
if records > 0 then
  redis.call('RPUSH', KEYS[4], unpack(ARGV, 8, 7 + records))
  redis.call('LTRIM', KEYS[4], 0, ${INVALID_ROWS_KEPT - 1})
  redis.call('PEXPIRE', KEYS[4], ${protocolDefaults.campaignTtl})
end
for i = 8 + records, #ARGV, 2 do
  redis.call('HSET', ARGV[i], ARGV[i + 1], '1')
  redis.call('PEXPIRE', ARGV[i], ${protocolDefaults.campaignTtl})
end
return 1
`;

/**
 * Which of the given addresses were seen before: 1 or 0 per (KEYS[i], ARGV[i]) pair of bucket key and
 * field. The buckets are declared keys (one hash tag, one slot), so a Redis Cluster client routes the
 * script to the node that holds them.
 */
export const SEEN = `
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HEXISTS', KEYS[i], ARGV[i]) end
return out
`;

/**
 * Moves a campaign's stored state from one of ARGV[2..n-1] to ARGV[1] (a cancel also records
 * `cancelledAt`, ARGV[n]); returns the state found, '' when there is no campaign.
 * KEYS: campaign hash.
 */
export const TRANSITION = `
local state = redis.call('HGET', KEYS[1], '${FIELD.state}')
if not state then return '' end
for i = 2, #ARGV - 1 do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], '${FIELD.state}', ARGV[1])
    if ARGV[1] == '${CAMPAIGN_STATES.cancelled}' then
      redis.call('HSET', KEYS[1], '${FIELD.cancelledAt}', ARGV[#ARGV])
    end
    return state
  end
end
return state
`;
