/** A campaign's failed recipients: the record the worker writes per final failure, and the retry's claim script. */
import { z } from 'zod';
import { CAMPAIGN_FIELDS as FIELD } from './campaign-record.js';
import { protocolDefaults } from './defaults.js';
import { LEDGER_STATES as STATE } from './ledger-entry.js';

/**
 * Schema of one failed recipient's record (`keys.campaignFailedRecipients(id)`, field = the address
 * as normalizeSuppressedAddress keys it). Written by the worker's RECORD script in the same step that
 * counts the failure, so the records and the campaign's `failed` count agree after any crash.
 */
export const failedRecipientSchema = z.object({
  /** The reason the failure is counted under in the failures-by-reason hash ('' when none). */
  reason: z.string(),
  /** SMTP reply code, when a server answered. */
  code: z.number().int().optional(),
  /** Server reply or error text, on one line, cut to 300 characters (the ledger's detail). */
  reply: z.string().optional(),
  /** Delivery attempts the message had, the last included. */
  attempts: z.number().int().nonnegative(),
  /** Epoch ms the failure became final. */
  at: z.number().int().nonnegative(),
  /** `f` permanent failure, `x` transient failures until the attempts ran out. */
  state: z.enum([STATE.permanent, STATE.exhausted]),
  /** The message's wire form, packed as a batch job packs it (packMessages of a one-element array). */
  message: z.string().min(1),
  /** The batch job whose ledger recorded it, and the message's field there (`m3`). */
  job: z.string().optional(),
  field: z.string().optional(),
});

/** One failed recipient's record, as the worker writes it (see {@link failedRecipientSchema}). */
export type FailedRecipientRecord = z.infer<typeof failedRecipientSchema>;

/** Serializes a record for the failed-recipients hash. */
export function encodeFailedRecipient(record: FailedRecipientRecord): string {
  return JSON.stringify(record);
}

/**
 * Reads back what {@link encodeFailedRecipient} wrote, with the schema that wrote it; undefined for
 * anything else (a value damaged or written by hand is left out, never guessed at).
 */
export function parseFailedRecipient(raw: string): FailedRecipientRecord | undefined {
  try {
    const parsed = failedRecipientSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A claim in `keys.campaignRetrying(id)` is `<claim id>|<claimed at, epoch ms>|<record>`: the id
 * names the retry's enqueue (its idempotency key), the time tells a live retry's claim from one
 * left by a retry that crashed.
 */
export function parseRetryClaim(
  raw: string,
): { claim: string; claimedAt: number; record: FailedRecipientRecord | undefined } | undefined {
  const first = raw.indexOf('|');
  const second = raw.indexOf('|', first + 1);
  if (first <= 0 || second < 0) return undefined;
  return {
    claim: raw.slice(0, first),
    claimedAt: Number(raw.slice(first + 1, second)) || 0,
    record: parseFailedRecipient(raw.slice(second + 1)),
  };
}

/** ARGV of {@link CLAIM_RETRY} before its addresses: claim id, now ms, transient only, before ms. */
export const CLAIM_FIXED_ARGS = 4;

/** ARGV of {@link CLAIM_RETRY} per address: address, ledger key, ledger field, suppressed ('1' or '0'). */
export const CLAIM_ARGS_PER_ADDRESS = 4;

/**
 * Claims failed recipients of a campaign for a retry, each at most once whoever else claims at the
 * same time: per address (ARGV after the fixed ones: address, ledger key, ledger field, as the
 * record names them, '' when it names none, and '1' when the address is on the suppression list,
 * looked up just before: the list lives on the queue's home shard, which on a sharded queue is
 * another cluster node than the campaign's; a worker checks the list again before it sends), in one
 * atomic step, it moves the record from the
 * failed hash to the retrying hash and takes it back out of the campaign's `failed` count and
 * failures-by-reason hash (the worker counts the retried message again when it settles). Left
 * alone: an address no longer in the failed hash (claimed already), a failure that became final at
 * or after `before` (a new one, for the next retry), a permanent one when only transient ones are
 * wanted, an address on the suppression list, and one whose ledger entry is being sent again
 * (reopened by `mailroom failed retry`: state `t`). A record whose ledger entry says delivered or
 * cancelled (a dead-letter retry got there first) is stale: it is dropped. A claimed message's old
 * ledger entry, if still exhausted (`x`), becomes permanent (`f`), so that `mailroom failed retry`
 * cannot reopen it after this retry took it.
 *
 * KEYS: failed recipients hash, retrying hash, campaign hash, failures-by-reason hash. Returns {suppressed, in flight, stale, then address and record of each claim}.
 */
export const CLAIM_RETRY = `
local claim, now, transientOnly, before = ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4])
local suppressed, inFlight, stale = 0, 0, 0
local claimed = {}
for i = ${CLAIM_FIXED_ARGS + 1}, #ARGV, ${CLAIM_ARGS_PER_ADDRESS} do
  local address, ledger, field, isSuppressed = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3] == '1'
  local raw = redis.call('HGET', KEYS[1], address)
  local ok, record = false, nil
  if raw then ok, record = pcall(cjson.decode, raw) end
  if ok and type(record) == 'table' and type(record.at) == 'number' and record.at < before
    and (not transientOnly or record.state == '${STATE.exhausted}') then
    local entry = false
    if ledger ~= '' then entry = redis.call('HGET', ledger, field) end
    local letter = entry and string.sub(entry, 1, 1) or ''
    if letter == '${STATE.delivered}' or letter == '${STATE.cancelled}' then
      redis.call('HDEL', KEYS[1], address)
      stale = stale + 1
    elseif letter == '${STATE.transient}' then
      inFlight = inFlight + 1
    elseif isSuppressed then
      suppressed = suppressed + 1
    else
      -- The old batch's entry becomes permanent: \`mailroom failed retry\` (REOPEN_EXHAUSTED) reopens
      -- only exhausted ones, so it can no longer send this message a second time.
      if letter == '${STATE.exhausted}' then
        redis.call('HSET', ledger, field, '${STATE.permanent}' .. string.sub(entry, 2))
      end
      redis.call('HDEL', KEYS[1], address)
      redis.call('HSET', KEYS[2], address, claim .. '|' .. now .. '|' .. raw)
      local reason = type(record.reason) == 'string' and record.reason or ''
      redis.call('HINCRBY', KEYS[3], '${FIELD.failed}', -1)
      if redis.call('HINCRBY', KEYS[4], reason, -1) <= 0 then redis.call('HDEL', KEYS[4], reason) end
      claimed[#claimed + 1] = address
      claimed[#claimed + 1] = raw
    end
  end
end
if #claimed > 0 then redis.call('PEXPIRE', KEYS[2], ${protocolDefaults.campaignTtl}) end
return {suppressed, inFlight, stale, claimed}
`;
