/** After a campaign's send: its failed recipients one by one, and retrying them exactly once. */
import { randomUUID } from 'node:crypto';
import { decodeWire, type EmailMessage, MailError } from '@mailroom/core';
import {
  CAMPAIGN_STATES,
  type FailedRecipientRecord,
  CAMPAIGN_FIELDS as FIELD,
  parseFailedRecipient,
  parseRetryClaim,
  registerScripts,
  SuppressionList,
  unpackMessages,
} from '@mailroom/core/protocol';
import { missingCampaignError } from './campaign-loss.js';
import { consumedShard, type Producer } from './producer.js';

/** One recipient whose campaign message failed for good, as {@link campaignFailures} lists it. */
export interface CampaignFailure {
  /** The address, as the suppression list keys it (lowercased, IDN domain punycoded). */
  address: string;
  /** The failure reason (`rejected`, `deferred`, `connection`...; `unknown` when none was recorded). */
  reason: string;
  /** SMTP reply code, when a server answered. */
  code: number | undefined;
  /** The server's reply or the error, on one line (at most 300 characters). */
  reply: string | undefined;
  /** Delivery attempts the message had, the last included. */
  attempts: number;
  /** Epoch ms the failure became final. */
  at: number;
  /** True for transient failures that ran out of attempts (what `retry --transient` sends again). */
  transient: boolean;
}

/** Options of {@link campaignFailures} and {@link retryCampaign}. */
export interface CampaignFailureOptions {
  /** Only the transient failures that ran out of attempts (4xx, connection, timeout...). Default false. */
  transient?: boolean;
}

/** Options of {@link retryCampaign}. */
export interface RetryCampaignOptions extends CampaignFailureOptions {
  /**
   * A claim older than this (ms) whose retry never confirmed its enqueue belongs to a retry that
   * crashed, and is resumed; younger ones are left to the retry that made them. Default 1 minute.
   */
  resumeAfter?: number;
}

/** What {@link retryCampaign} did. */
export interface RetryCampaignResult {
  /** Recipients whose message was enqueued again (resumed ones included). */
  retried: number;
  /** Of `retried`, claims left by an earlier retry that stopped before enqueueing them. */
  resumed: number;
  /**
   * Failed recipients matching the options that were not retried: on the suppression list, being
   * sent again by `mailroom failed retry`, delivered meanwhile, or whose record cannot be read.
   */
  skipped: number;
  /** Of `skipped`, the addresses on the suppression list. */
  suppressed: number;
  /** Claims of another retry still running (or stopped less than `resumeAfter` ago): left to it. */
  leftToOtherRetry: number;
}

/** Addresses read per HSCAN call and claimed per script call: one retry batch at most. */
const PAGE = 50;
const DEFAULT_RESUME_AFTER = 60_000;

/** Throws ENOTFOUND (or EDATALOST) unless the campaign exists; returns its stored state. */
async function storedState(producer: Producer, id: string): Promise<string> {
  await producer.ready();
  const { keys } = await producer.campaignShard(id);
  const state = await producer.redis.hget(keys.campaign(id), FIELD.state);
  if (state === null) throw await missingCampaignError(producer, id);
  return state;
}

function failureOf(address: string, record: FailedRecipientRecord): CampaignFailure {
  return {
    address,
    reason: record.reason || 'unknown',
    code: record.code,
    reply: record.reply,
    attempts: record.attempts,
    at: record.at,
    transient: record.state === 'x',
  };
}

/** HSCAN of a hash as pages of [field, value] pairs, each field once (HSCAN may repeat one). */
async function* scanHash(producer: Producer, key: string): AsyncGenerator<[string, string][]> {
  const seen = new Set<string>();
  let cursor = '0';
  do {
    const [next, flat] = await producer.redis.hscan(key, cursor, 'COUNT', PAGE);
    cursor = next;
    const page: [string, string][] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const field = flat[i] as string;
      if (seen.has(field)) continue;
      seen.add(field);
      page.push([field, flat[i + 1] as string]);
    }
    if (page.length > 0) yield page;
  } while (cursor !== '0');
}

/**
 * The recipients of a campaign whose message failed for good (permanent refusals, and transient
 * failures that ran out of attempts), streamed from Redis in no particular order: address, reason,
 * SMTP code and reply, attempts, time. Never the message itself. Recorded by the worker as each
 * failure is counted, so the list matches the campaign's `failed` count less its `invalid` rows
 * (recipients whose message could not be built are in campaignStatus().invalidRows) and less
 * failures being retried. Throws MailError ENOTFOUND for an unknown campaign, DataLossError
 * (EDATALOST) for one lost with Redis's data.
 */
export async function* campaignFailures(
  producer: Producer,
  id: string,
  options: CampaignFailureOptions = {},
): AsyncGenerator<CampaignFailure> {
  await storedState(producer, id);
  const { keys } = await producer.campaignShard(id);
  for await (const page of scanHash(producer, keys.campaignFailedRecipients(id))) {
    for (const [address, raw] of page) {
      const record = parseFailedRecipient(raw);
      if (record === undefined) continue;
      if (options.transient && record.state !== 'x') continue;
      yield failureOf(address, record);
    }
  }
}

/** The one message of a record, decoded; undefined when it cannot be (never sent, counted skipped). */
function messageOf(
  record: FailedRecipientRecord | undefined,
): { message: EmailMessage; silent: boolean } | undefined {
  if (record === undefined) return undefined;
  try {
    const [wire] = unpackMessages(record.message);
    const { message, failSilently } = decodeWire(wire, 'record.message');
    return { message, silent: failSilently };
  } catch {
    return undefined;
  }
}

/**
 * Enqueues the messages of one claim, once: the idempotency key is the claim's, so the same claim
 * enqueued again (a resume racing the retry that made it) enqueues nothing. Sorted by address, so
 * every process builds the same batch from the same claim.
 */
async function enqueueClaim(
  producer: Producer,
  id: string,
  claim: string,
  claimed: [string, { message: EmailMessage; silent: boolean }][],
): Promise<void> {
  claimed.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const result = await producer.enqueue(
    claimed.map(([, { message }]) => message),
    {
      campaign: id,
      // The campaign's own intent, which every one of its messages carries.
      failSilently: claimed[0]?.[1].silent ?? true,
      idempotencyKey: `campaign-retry:${id}:${claim}`,
    },
  );
  if (result.messages === 0 && !result.duplicate) {
    throw new MailError(`Could not enqueue the retry of campaign ${id}: Redis did not take it`, {
      code: 'EREDIS',
    });
  }
  // Confirmed: the claim is done. Until here a crash leaves it to be resumed.
  const { keys } = await producer.campaignShard(id);
  await producer.redis.hdel(keys.campaignRetrying(id), ...claimed.map(([address]) => address));
}

/**
 * Sends the failed recipients of a campaign again, each exactly once, and never one that was
 * delivered: the message each failed with is enqueued again as a message of the same campaign, so
 * the workers count it (sent, or failed again with a new record). With `transient`, only transient
 * failures that ran out of attempts; without, every failure (the permanent ones too: the operator
 * fixed what the server refused). Addresses on the suppression list are not sent (counted skipped).
 *
 * Exactly once: each record is claimed by a Lua script that, atomically, moves it from the failed
 * hash to the campaign's retrying hash and takes it out of the `failed` count (so the campaign is
 * `running` again until the retried messages settle); two retries at once never claim the same
 * record. The claim is then enqueued with an idempotency key of its own and removed from the
 * retrying hash; a retry that crashed in between leaves claims that a later retry resumes (after
 * `resumeAfter`), enqueueing them under the same key, so a claim that did reach the queue is not
 * enqueued twice (within the producer's idempotencyTtl, 24 h by default).
 *
 * Throws MailError ENOTFOUND for an unknown campaign, EDATALOST for one lost with Redis's data, and
 * MailError ECANCELLED for a cancelled campaign (its workers would only cancel the messages again).
 */
export async function retryCampaign(
  producer: Producer,
  id: string,
  options: RetryCampaignOptions = {},
): Promise<RetryCampaignResult> {
  const state = await storedState(producer, id);
  if (state === CAMPAIGN_STATES.cancelled) {
    throw new MailError(`Campaign ${id} is cancelled: its failed recipients cannot be retried`, {
      code: 'ECANCELLED',
    });
  }
  // Refused before anything is claimed: a claim whose enqueue is refused could never be resumed.
  const { keys } = consumedShard(await producer.campaignShard(id), id, producer.layout);
  const redis = registerScripts(producer.redis);
  const suppression = new SuppressionList(producer.redis, producer.keys);
  const result: RetryCampaignResult = {
    retried: 0,
    resumed: 0,
    skipped: 0,
    suppressed: 0,
    leftToOtherRetry: 0,
  };
  const started = Date.now();

  // 1. Claims a crashed retry left behind, grouped by claim: each enqueued under its own key.
  const resumeBefore = started - (options.resumeAfter ?? DEFAULT_RESUME_AFTER);
  const stale = new Map<string, [string, { message: EmailMessage; silent: boolean }][]>();
  for await (const page of scanHash(producer, keys.campaignRetrying(id))) {
    for (const [address, raw] of page) {
      const claim = parseRetryClaim(raw);
      if (claim === undefined) continue;
      if (claim.claimedAt > resumeBefore) {
        result.leftToOtherRetry++;
        continue;
      }
      const decoded = messageOf(claim.record);
      if (decoded === undefined) {
        // Never sendable: dropped, so it does not block every later retry.
        await redis.hdel(keys.campaignRetrying(id), address);
        result.skipped++;
        continue;
      }
      const group = stale.get(claim.claim) ?? [];
      group.push([address, decoded]);
      stale.set(claim.claim, group);
    }
  }
  for (const [claim, group] of stale) {
    await enqueueClaim(producer, id, claim, group);
    result.retried += group.length;
    result.resumed += group.length;
  }

  // 2. New claims, one page (at most one batch) at a time.
  for await (const page of scanHash(producer, keys.campaignFailedRecipients(id))) {
    const candidates: [string, string, string][] = [];
    for (const [address, raw] of page) {
      const record = parseFailedRecipient(raw);
      if (options.transient && record?.state !== 'x') continue;
      if (record === undefined || messageOf(record) === undefined) {
        result.skipped++;
        continue;
      }
      candidates.push([address, record.job === undefined ? '' : keys.ledger(record.job), record.field ?? '']);
    }
    if (candidates.length === 0) continue;
    const onList = await suppression.lookup(candidates.map(([address]) => address));
    const claim = randomUUID();
    const [suppressed, inFlight, staleRecords, claimedFlat] = await redis.mailroomClaimRetry(
      keys.campaignFailedRecipients(id),
      keys.campaignRetrying(id),
      keys.campaign(id),
      keys.campaignFailures(id),
      claim,
      String(Date.now()),
      options.transient ? '1' : '0',
      String(started),
      ...candidates.flatMap((candidate, index) => [...candidate, onList[index] === undefined ? '0' : '1']),
    );
    result.suppressed += suppressed;
    result.skipped += suppressed + inFlight + staleRecords;
    const claimed: [string, { message: EmailMessage; silent: boolean }][] = [];
    for (let i = 0; i + 1 < claimedFlat.length; i += 2) {
      const decoded = messageOf(parseFailedRecipient(claimedFlat[i + 1] as string));
      // Checked before the claim; a record rewritten in between to something unreadable stays claimed.
      if (decoded !== undefined) claimed.push([claimedFlat[i] as string, decoded]);
    }
    if (claimed.length === 0) continue;
    await enqueueClaim(producer, id, claim, claimed);
    result.retried += claimed.length;
  }
  return result;
}
