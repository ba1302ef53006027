/** The delivery ledger: a batch's record of what became of each message, written as each one settles. */
import type { WireMessage } from '@mailroom/core';
import type { RedisClient } from '@mailroom/core/protocol';
import {
  decodeEntry,
  encodeEntry,
  encodeFailedRecipient,
  LEDGER_ATTEMPT_FIELD,
  LEDGER_MESSAGE_PREFIX,
  type LedgerEntry,
  ledgerMessageField,
  normalizeSuppressedAddress,
  packMessages,
  type QueueKeys,
  registerScripts,
  type ScriptedRedis,
} from '@mailroom/core/protocol';

/** What the worker must know before sending the next message of a batch. */
export interface BatchStatus {
  /** False when another worker took the job over (our lock expired): stop sending at once. */
  lockHeld: boolean;
  /** The campaign's state ('' without campaign): `paused` and `cancelled` stop the batch. */
  campaignState: string;
}

/** Identifies the batch for ledger writes: job, lock token, campaign. */
export interface BatchRef {
  jobId: string;
  /** BullMQ lock token of this run; undefined skips the lock check. */
  token: string | undefined;
  campaign: string | undefined;
  /**
   * The job's messages as the job carries them (wire form), by index: a campaign message that fails
   * for good is kept with its failure record, so `campaign retry` can send it again. Only read for
   * failures (a delivered message costs nothing).
   */
  messages?: readonly unknown[] | undefined;
  /** This run's attempt number (1 for the first), the `attempts` of the failure records it writes. */
  attempt?: number | undefined;
}

/** What the ledger knows about a batch. */
export interface LedgerSnapshot {
  entries: Map<number, LedgerEntry>;
  /** Delivery attempts of the batch that ended with transient failures. */
  attempts: number;
}

/**
 * The delivery ledger: per batch job, one Redis hash of message index → {@link LedgerEntry},
 * written as each message settles, so that a retry, a stalled job recovered by another replica or a
 * restarted worker never re-sends a delivered message.
 */
export class Ledger {
  readonly #redis: ScriptedRedis;
  readonly #keys: QueueKeys;
  readonly #ttl: number;

  constructor(redis: RedisClient, keys: QueueKeys, ttl: number) {
    this.#redis = registerScripts(redis);
    this.#keys = keys;
    this.#ttl = ttl;
  }

  async load(jobId: string): Promise<LedgerSnapshot> {
    const raw = await this.#redis.hgetall(this.#keys.ledger(jobId));
    const entries = new Map<number, LedgerEntry>();
    let attempts = 0;
    for (const [field, value] of Object.entries(raw)) {
      if (field === LEDGER_ATTEMPT_FIELD) attempts = Number(value) || 0;
      else if (field.startsWith(LEDGER_MESSAGE_PREFIX))
        entries.set(Number(field.slice(LEDGER_MESSAGE_PREFIX.length)), decodeEntry(value));
    }
    return { entries, attempts };
  }

  private keysAndArgs(batch: BatchRef): string[] {
    const id = batch.campaign ?? '';
    return [
      this.#keys.ledger(batch.jobId),
      this.#keys.campaign(id),
      this.#keys.campaignFailures(id),
      this.#keys.campaignRate(id),
      this.#keys.jobLock(batch.jobId),
      this.#keys.campaignFailedRecipients(id),
      String(this.#ttl),
      id,
      String(Math.floor(Date.now() / 1000)),
      batch.token ?? '',
      String(Date.now()),
    ];
  }

  /**
   * The campaign's failed-recipient record of an entry that failed for good (`f`, `x`): [address,
   * record], or ['', ''] for anything else, and for a message whose one recipient cannot be read
   * (it could not be sent again anyway). Never throws: the ledger write MUST happen.
   */
  private failureRecord(batch: BatchRef, index: number, entry: LedgerEntry): [string, string] {
    if (batch.campaign === undefined || (entry.state !== 'f' && entry.state !== 'x')) return ['', ''];
    const wire = batch.messages?.[index];
    const address = campaignRecipient(wire);
    if (address === undefined) return ['', ''];
    try {
      const refusal = entry.refused?.[0];
      const record = encodeFailedRecipient({
        reason: entry.reason ?? '',
        // The server's own reply to the one recipient, else the error (a 5xx after DATA, a timeout).
        ...((refusal?.code ?? entry.code) === undefined ? {} : { code: refusal?.code ?? entry.code }),
        ...((refusal?.response ?? entry.detail) === undefined
          ? {}
          : { reply: refusal?.response ?? entry.detail }),
        attempts: batch.attempt ?? 1,
        at: Date.now(),
        state: entry.state,
        message: packMessages([wire as WireMessage]),
        job: batch.jobId,
        field: ledgerMessageField(index),
      });
      return [address, record];
    } catch {
      return ['', ''];
    }
  }

  /**
   * Records one message's entry (and its campaign counters, once) in one atomic step, and reports
   * whether the lock is still held and the campaign's state.
   */
  async record(batch: BatchRef, index: number, entry: LedgerEntry): Promise<BatchStatus> {
    return this.recordMany(batch, [[index, entry]]);
  }

  /**
   * Records the entries of several messages of one batch in one atomic step and one round trip (the
   * replies a pipelined window brought back), and reports the lock and the campaign's state.
   */
  async recordMany(
    batch: BatchRef,
    entries: readonly (readonly [number, LedgerEntry])[],
  ): Promise<BatchStatus> {
    const args = this.keysAndArgs(batch);
    for (const [index, entry] of entries) {
      args.push(
        ledgerMessageField(index),
        encodeEntry(entry),
        entry.reason ?? '',
        ...this.failureRecord(batch, index, entry),
      );
    }
    const [held, state] = await this.#redis.mailroomRecord(...args);
    return { lockHeld: held === 1, campaignState: state };
  }

  /** Lock and campaign state, without writing. */
  async check(batch: BatchRef): Promise<BatchStatus> {
    const [held, state] = await this.#redis.mailroomCheck(...this.keysAndArgs(batch));
    return { lockHeld: held === 1, campaignState: state };
  }

  /** Counts one more attempt that ended with transient failures; resolves with the new count. */
  async addAttempt(jobId: string): Promise<number> {
    const key = this.#keys.ledger(jobId);
    const [[, count]] = (await this.#redis
      .multi()
      .hincrby(key, LEDGER_ATTEMPT_FIELD, 1)
      .pexpire(key, this.#ttl)
      .exec()) as [[Error | null, number]];
    return count;
  }

  /**
   * For a manual retry of a dead-lettered batch (`mailroom failed retry`), in one atomic step: turns
   * every `x` entry (transient failures that ran out of attempts) back into `t`, resets the attempt
   * count to 0 so the retry gets the full attempts again, and, when the batch belongs to `campaign`,
   * takes each reopened message back out of the campaign's `failed` counter and failures-by-reason
   * hash (the worker counts it again when it settles), and out of its failed-recipients hash, so that
   * `campaign retry` does not send it a second time (`messages`: the job's messages, whose To address
   * names the record). `f`, `d` and `c` entries stay as they are, so a permanent failure or a
   * delivered message is never sent again. Resolves with the number of messages reopened; 0 when the
   * batch has no ledger.
   */
  async reopenExhausted(
    jobId: string,
    campaign?: string,
    messages: readonly unknown[] = [],
  ): Promise<number> {
    const id = campaign ?? '';
    const addresses: string[] = [];
    if (campaign !== undefined) {
      messages.forEach((wire, index) => {
        const address = campaignRecipient(wire);
        if (address !== undefined) addresses.push(ledgerMessageField(index), address);
      });
    }
    return this.#redis.mailroomReopenExhausted(
      this.#keys.ledger(jobId),
      this.#keys.campaign(id),
      this.#keys.campaignFailures(id),
      this.#keys.campaignFailedRecipients(id),
      id,
      String(this.#ttl),
      ...addresses,
    );
  }

  /** Shortens the ledger's life once its batch completed. */
  async finish(jobId: string, ttl: number): Promise<void> {
    await this.#redis.pexpire(this.#keys.ledger(jobId), ttl);
  }
}

/**
 * The address a campaign message's failure record is kept under: its one To recipient (campaign
 * messages have exactly one), normalised as the suppression list keys it; undefined when unreadable.
 */
function campaignRecipient(wire: unknown): string | undefined {
  const to = (wire as { to?: unknown } | undefined)?.to;
  const first = Array.isArray(to) ? to[0] : undefined;
  if (typeof first !== 'string') return undefined;
  try {
    return normalizeSuppressedAddress(first);
  } catch {
    return undefined;
  }
}
