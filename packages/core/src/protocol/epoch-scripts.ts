/** The Lua scripts on the queue's epoch marker: create it, record a loss on it. */
import { EPOCH_FIELDS as FIELD } from './epoch-marker.js';

/** Creates the marker unless it exists; returns it (HGETALL). KEYS: marker. ARGV: new id, now ms. */
export const ENSURE_EPOCH = `
if redis.call('HSETNX', KEYS[1], '${FIELD.id}', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], '${FIELD.createdAt}', ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
`;

/**
 * Records a loss noticed by a process that remembered marker ARGV[1]: creates the new marker if no
 * one did yet, records the loss on it once (the first process to notice wins; a marker created by a
 * process that knew nothing gets it too), and merges the campaigns this process knew (for each, the
 * entry with the most recent progress wins). Returns {1, HGETALL} after a loss, {0, HGETALL} when
 * the marker is the remembered one after all.
 *
 * KEYS: marker. ARGV: remembered id, new id, now, lostAt, previousSeenAt, restartedAt ('' unknown),
 * detectedBy, then pairs of (campaign id, JSON of the lost campaign).
 */
export const RECORD_LOSS = `
local id = redis.call('HGET', KEYS[1], '${FIELD.id}')
if id == ARGV[1] then return {0, redis.call('HGETALL', KEYS[1])} end
if not id then redis.call('HSET', KEYS[1], '${FIELD.id}', ARGV[2], '${FIELD.createdAt}', ARGV[3]) end
if redis.call('HEXISTS', KEYS[1], '${FIELD.lostAt}') == 0 then
  redis.call('HSET', KEYS[1], '${FIELD.lostAt}', ARGV[4], '${FIELD.detectedAt}', ARGV[3],
    '${FIELD.previousEpoch}', ARGV[1], '${FIELD.previousSeenAt}', ARGV[5], '${FIELD.detectedBy}', ARGV[7])
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], '${FIELD.restartedAt}', ARGV[6]) end
end
for i = 8, #ARGV, 2 do
  local field = '${FIELD.lostCampaignPrefix}' .. ARGV[i]
  local old = redis.call('HGET', KEYS[1], field)
  local keep = false
  if old then
    local ok, known = pcall(cjson.decode, old)
    local new = cjson.decode(ARGV[i + 1])
    keep = ok and type(known) == 'table' and (tonumber(known.seenAt) or 0) >= (tonumber(new.seenAt) or 0)
  end
  if not keep then redis.call('HSET', KEYS[1], field, ARGV[i + 1]) end
end
return {1, redis.call('HGETALL', KEYS[1])}
`;
