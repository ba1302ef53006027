/** The delivery ledger's record: one hash per batch job, one field per message, its states and encoding. */
import type { FailureReason } from '../classify.js';

/**
 * State of one message of a batch in the ledger, one letter:
 * - `d` delivered (accepted for at least one recipient, nothing left to try);
 * - `t` transient failure, to be retried (possibly only for `pending` recipients);
 * - `f` permanent failure, never retried;
 * - `x` transient failures until the attempts ran out (a manual retry may try it again);
 * - `c` cancelled with its campaign before it was sent.
 */
export const LEDGER_STATES = {
  delivered: 'd',
  transient: 't',
  permanent: 'f',
  exhausted: 'x',
  cancelled: 'c',
} as const;

/** State of one message in the ledger (see {@link LEDGER_STATES}). */
export type LedgerState = (typeof LEDGER_STATES)[keyof typeof LEDGER_STATES];

/** States after which a message is never sent again by the worker. */
export const FINAL_STATES: ReadonlySet<LedgerState> = new Set([
  LEDGER_STATES.delivered,
  LEDGER_STATES.permanent,
  LEDGER_STATES.exhausted,
  LEDGER_STATES.cancelled,
]);

/** The ledger hash's field counting the attempts of the batch that ended with transient failures. */
export const LEDGER_ATTEMPT_FIELD = 'attempt';

/** Every message's field in the ledger hash starts with this, followed by its index in the batch. */
export const LEDGER_MESSAGE_PREFIX = 'm';

/** The ledger hash's field of message `index` of the batch: `m0`, `m1`... */
export function ledgerMessageField(index: number): string {
  return `${LEDGER_MESSAGE_PREFIX}${index}`;
}

/** A recipient refused for good, as recorded. */
export interface RefusedRecipient {
  recipient: string;
  code?: number | undefined;
  response?: string | undefined;
}

/** One message's entry in the ledger. */
export interface LedgerEntry {
  state: LedgerState;
  /** Recipients the server accepted so far. */
  accepted?: string[] | undefined;
  /** Recipients still to try (state t/x); absent means every recipient. */
  pending?: string[] | undefined;
  /** Recipients refused for good. */
  refused?: RefusedRecipient[] | undefined;
  /** Why it failed (states t, f, x, c); the Lua scripts count campaign failures under it. */
  reason?: FailureReason | 'cancelled' | undefined;
  /** SMTP reply code of the failure, if any. */
  code?: number | undefined;
  /** Server reply or error text of the failure (truncated). */
  detail?: string | undefined;
}

/** Serializes an entry as its state letter followed by JSON of the rest (the Lua scripts read the letter). */
export function encodeEntry(entry: LedgerEntry): string {
  const { state, ...rest } = entry;
  return state + JSON.stringify(rest);
}

/** Reads back what {@link encodeEntry} wrote; throws SyntaxError when the JSON part is damaged. */
export function decodeEntry(raw: string): LedgerEntry {
  const state = raw.charAt(0) as LedgerState;
  const rest = raw.length > 1 ? (JSON.parse(raw.slice(1)) as Omit<LedgerEntry, 'state'>) : {};
  return { state, ...rest };
}
