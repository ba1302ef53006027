/**
 * Hard bounces onto the suppression list: a recipient whose mailbox does not exist (isHardBounce) is
 * put on the queue's list as it settles, so no campaign on the queue mails it again.
 *
 * When: a batch's hard bounces are written to Redis just before the ledger write that records their
 * messages (deliver-batch.ts GroupWriter), which waits for them: the list lives on the queue's home
 * shard, and on a sharded queue (or a Redis Cluster) the ledger is on another node, where the order
 * of one connection's commands promises nothing. So a refusal that is in the ledger has its
 * suppression applied already. The hot path pays nothing: the wait (one round trip) is only for a
 * ledger write whose messages had hard bounces, and there is no work at all for one without refusals. What a crash can lose: nothing. A worker killed before the ledger
 * write has recorded neither; the next attempt sends those messages again (as it would anyway, one
 * window at most) and meets the same refusals. What a Redis error can lose: the suppressions of one
 * write, logged as a warning; the batch goes on and nothing is sent again for it (the ledger is what
 * decides that). The address is then suppressed the next time a server refuses it.
 */
import { coerceError, type DeliveryOutcome, isHardBounce } from '@mailroom/core';
import {
  normalizeSuppressedAddress,
  type SuppressionInput,
  type SuppressionList,
} from '@mailroom/core/protocol';
import type { Logger } from 'pino';
import type { WorkerMetrics } from './metrics.js';
import { truncateRecipients } from './settle.js';

/** What a DeliveryError (or nodemailer's error) says about the command it answers. */
type ErrorFields = NonNullable<DeliveryOutcome['error']> & {
  command?: unknown;
  recipient?: unknown;
  response?: unknown;
};

/**
 * The hard bounces in one message's outcome, as suppression entries with the server's reply as their
 * source: every recipient refused permanently whose reply isHardBounce() judges "no such mailbox".
 * The SMTP backend reports each refused recipient in `outcome.refused`, a sole recipient too (with
 * `error` besides); a backend that reports a refused recipient only as an `error` of command `RCPT TO`
 * naming it (a custom one) counts the same. A recipient that is not a usable address is left out.
 */
export function hardBounces(outcome: DeliveryOutcome): SuppressionInput[] {
  const bounces: SuppressionInput[] = [];
  const add = (recipient: string, code: number | undefined, reply: string | undefined) => {
    if (!isHardBounce(code, reply)) return;
    try {
      normalizeSuppressedAddress(recipient);
    } catch {
      return; // cannot be on the list; the ledger and the log still have the refusal
    }
    bounces.push({ address: recipient, reason: 'hard-bounce', source: reply ?? String(code) });
  };
  for (const refusal of outcome.refused) {
    if (!refusal.transient) add(refusal.recipient, refusal.responseCode, refusal.response);
  }
  const error = outcome.error as ErrorFields | undefined;
  if (
    outcome.refused.length === 0 &&
    error !== undefined &&
    outcome.classification?.transient === false &&
    error.command === 'RCPT TO' &&
    typeof error.recipient === 'string'
  ) {
    add(
      error.recipient,
      error.responseCode,
      typeof error.response === 'string' ? error.response : error.message,
    );
  }
  return bounces;
}

/** The hard bounces of one batch that are not on their way to Redis yet. */
export interface BatchSuppressions {
  /** Keeps the hard bounces of one settled message (nothing to do for one without refusals). */
  note(outcome: DeliveryOutcome): void;
  /**
   * Sends what was noted to the suppression list, now; returns a promise of the reply when there was
   * something to send, undefined otherwise. Never throws and never rejects: a failure is logged as a
   * warning.
   */
  send(): Promise<void> | undefined;
}

/** Puts the hard bounces of a worker's batches on the queue's suppression list; one per worker. */
export class AutoSuppress {
  readonly #list: SuppressionList;
  readonly #logger: Logger;
  readonly #metrics: WorkerMetrics;

  constructor(list: SuppressionList, logger: Logger, metrics: WorkerMetrics) {
    this.#list = list;
    this.#logger = logger;
    this.#metrics = metrics;
  }

  /** A collector for the batch of job `jobId`. */
  batch(jobId: string): BatchSuppressions {
    let pending: SuppressionInput[] = [];
    return {
      note: (outcome) => {
        if (outcome.refused.length === 0 && outcome.error === undefined) return;
        pending.push(...hardBounces(outcome));
      },
      send: () => {
        if (pending.length === 0) return undefined;
        const entries = pending;
        pending = [];
        return this.#add(jobId, entries);
      },
    };
  }

  /** MUST NOT throw or reject: a suppression that fails never fails the batch. */
  #add(jobId: string, entries: SuppressionInput[]): Promise<void> {
    const domains = truncateRecipients([...new Set(entries.map(({ address }) => domainOf(address)))]);
    return this.#list.add(entries).then(
      ({ added, existing }) => {
        this.#metrics.addressesSuppressed('hard-bounce', added);
        if (added > 0) this.#logger.info({ jobId, added, existing, domains }, 'hard bounces suppressed');
      },
      (error: unknown) => {
        this.#logger.warn(
          { jobId, addresses: entries.length, domains, err: coerceError(error).message },
          'could not put hard bounces on the suppression list; the batch goes on',
        );
      },
    );
  }
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}
