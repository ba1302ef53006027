/** Turning a delivery outcome into a ledger entry: delivered, retry only the refused-with-4xx, or failed. */
import type { DeliveryOutcome } from '@mailroom/core';
import type { LedgerEntry, RefusedRecipient } from '@mailroom/core/protocol';

const MAX_DETAIL = 300;

/** Error or reply text, shortened for the ledger and logs (never a body: outcomes carry none). */
export function shortDetail(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const oneLine = text.replace(/\s+/g, ' ').trim();
  return oneLine.length > MAX_DETAIL ? `${oneLine.slice(0, MAX_DETAIL)}…` : oneLine;
}

/**
 * Turns what the backend reported for one message into its new ledger entry, given what the ledger
 * knew before (recipients accepted by an earlier attempt stay accepted; only recipients deferred
 * with 4xx stay pending).
 */
export function settle(outcome: DeliveryOutcome, previous: LedgerEntry | undefined): LedgerEntry {
  const accepted = [...(previous?.accepted ?? []), ...outcome.accepted];
  const refused: RefusedRecipient[] = [
    ...(previous?.refused ?? []),
    ...outcome.refused
      .filter((refusal) => !refusal.transient)
      .map((refusal) => ({
        recipient: refusal.recipient,
        code: refusal.responseCode,
        response: shortDetail(refusal.response),
      })),
  ];
  const deferred = outcome.refused.filter((refusal) => refusal.transient);
  const optional = (entry: LedgerEntry): LedgerEntry => {
    if (accepted.length === 0) delete entry.accepted;
    if (refused.length === 0) delete entry.refused;
    return entry;
  };

  if (deferred.length > 0) {
    const first = deferred[0];
    return optional({
      state: 't',
      accepted,
      refused,
      pending: deferred.map((refusal) => refusal.recipient),
      reason: first?.reason ?? 'deferred',
      code: first?.responseCode,
      detail: shortDetail(first?.response),
    });
  }
  if (outcome.delivered) return optional({ state: 'd', accepted, refused });
  if (!outcome.error) {
    // No recipients at all: nothing can ever be sent (Django skips such a message).
    return optional({
      state: 'f',
      accepted,
      refused,
      reason: 'invalid',
      detail: 'the message has no recipients',
    });
  }
  const error = outcome.error;
  const classification = outcome.classification ?? { transient: true, reason: 'unknown' as const };
  if (classification.transient) {
    return optional({
      state: 't',
      accepted,
      refused,
      pending: previous?.pending,
      reason: classification.reason,
      code: error.responseCode,
      detail: shortDetail(error.message),
    });
  }
  // Permanent: keep an earlier partial delivery as delivered, with the refusals recorded.
  if (accepted.length > 0) return optional({ state: 'd', accepted, refused });
  return optional({
    state: 'f',
    accepted,
    refused,
    reason: classification.reason,
    code: error.responseCode,
    detail: shortDetail(error.message),
  });
}

/** The final entry of a message still transient when the attempts ran out. */
export function exhaust(
  entry: LedgerEntry | undefined,
  fallback: Pick<LedgerEntry, 'reason' | 'detail'>,
): LedgerEntry {
  if (entry?.accepted?.length) return { ...entry, state: 'd' };
  return {
    ...(entry ?? {}),
    state: 'x',
    reason: entry?.reason ?? fallback.reason,
    detail: entry?.detail ?? fallback.detail,
  };
}

/** "a@x, b@y (+3 more)": recipient lists in logs stay short. */
export function truncateRecipients(recipients: readonly string[], shown = 3): string {
  if (recipients.length <= shown) return recipients.join(', ');
  return `${recipients.slice(0, shown).join(', ')} (+${recipients.length - shown} more)`;
}
