/** The suppression list of a queue: addresses campaigns never mail again, with why, when and from what. */

import { z } from 'zod';
import { envelopeAddress } from '../address.js';
import { quoteValue, ValidationError } from '../errors.js';
import type { QueueKeys } from './keys.js';
import type { RedisClient } from './redis.js';

/**
 * Why an address is suppressed: `hard-bounce` (a server said the mailbox does not exist, see
 * isHardBounce), `unsubscribe` (the recipient asked, e.g. one-click), `complaint` (a spam report fed
 * back by a mailbox provider), `manual` (an operator).
 */
export const SUPPRESSION_REASONS = ['hard-bounce', 'unsubscribe', 'complaint', 'manual'] as const;

/** One of {@link SUPPRESSION_REASONS}. */
export type SuppressionReason = (typeof SUPPRESSION_REASONS)[number];

/** One address on the suppression list. */
export interface Suppression {
  /** The address as the list keys it ({@link normalizeSuppressedAddress}). */
  address: string;
  reason: SuppressionReason;
  /** Epoch ms it was added. */
  at: number;
  /** What added it: the SMTP reply of a bounce, `campaign:<id>` of an unsubscribe, `cli`, an import file... */
  source: string;
}

/** What to add: the address in any form envelopeAddress takes (`Name <a@b>` too). */
export interface SuppressionInput {
  address: string;
  reason: SuppressionReason;
  /** Default '' (none). Cut to {@link SOURCE_LENGTH} characters, on one line. */
  source?: string;
  /** Epoch ms, a non-negative integer. Default now. */
  at?: number;
}

/** What {@link SuppressionList.add} did. */
export interface SuppressionAddResult {
  /** Addresses newly on the list. */
  added: number;
  /** Addresses that were on it already (their first record is kept, unless `replace`). */
  existing: number;
}

/** A source is stored on one line and cut to this many characters (an SMTP reply can be long). */
export const SOURCE_LENGTH = 300;

/** The last instant a Date can hold (ECMA-262 §21.4.1.22), in epoch ms. */
const MAX_TIME = 8.64e15;

// The stored value, short keys: a list of a million addresses is mostly these records.
const recordSchema = z.object({
  r: z.enum(SUPPRESSION_REASONS),
  t: z.number().int().nonnegative().max(MAX_TIME),
  s: z.string(),
});

/**
 * The key of an address on the list: the addr-spec (a display name dropped), its domain IDN
 * punycoded, a non-ASCII local part in NFC, all lowercased. Local parts are case-sensitive in
 * principle (RFC 5321 §2.4) but no mailbox provider treats them so, and an unsubscribe must hold
 * whatever case the next list writes the address in. Throws ValidationError naming `field` and the
 * value for anything that is not one usable address.
 */
export function normalizeSuppressedAddress(address: string, field = 'address'): string {
  if (typeof address !== 'string') {
    throw new ValidationError(`${field} must be a string address (got ${typeof address})`, { field });
  }
  let addrSpec: string;
  try {
    addrSpec = envelopeAddress(address.trim(), field);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ValidationError(`${field} ${quoteValue(address)} is not an address: ${reason}`, {
      field,
      cause: error,
    });
  }
  // Core takes a bare local part (`root`, local delivery, as Django does); no mail to it can bounce or
  // be unsubscribed from, so on this list it is a typo. The domain follows the last @ outside a
  // quoted local part ("a@b"@example.com).
  if (!addrSpec.includes('@') || addrSpec.lastIndexOf('@') < addrSpec.lastIndexOf('"')) {
    throw new ValidationError(`${field} ${quoteValue(address)} is not an address: it has no domain`, {
      field,
    });
  }
  return addrSpec.toLowerCase();
}

function checkReason(reason: unknown, field: string): SuppressionReason {
  if (!SUPPRESSION_REASONS.includes(reason as SuppressionReason)) {
    throw new ValidationError(
      `${field} must be one of ${SUPPRESSION_REASONS.join(', ')} (got ${quoteValue(String(reason))})`,
      { field },
    );
  }
  return reason as SuppressionReason;
}

function checkTime(at: unknown, field: string): number {
  if (typeof at !== 'number' || !Number.isInteger(at) || at < 0 || at > MAX_TIME) {
    throw new ValidationError(
      `${field} must be a time in epoch milliseconds, an integer from 0 to ${MAX_TIME} (got ${quoteValue(String(at))})`,
      { field },
    );
  }
  return at;
}

function checkSource(source: unknown, field: string): string {
  if (typeof source !== 'string') throw new ValidationError(`${field} must be a string`, { field });
  return source;
}

// Whitespace, C0, DEL and C1 controls, and the bidi controls a terminal would reorder text by (the set
// the CLI escapes, terminal.ts): a source is shown on terminals and in CSV files, never needs them.
const NOT_ON_ONE_LINE = /[\s\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]+/g;

function oneLine(text: string): string {
  const line = text.replace(NOT_ON_ONE_LINE, ' ').trim();
  return line.length > SOURCE_LENGTH ? `${line.slice(0, SOURCE_LENGTH - 1)}…` : line;
}

/** Reads a stored record back with the schema that wrote it; undefined when it does not parse. */
function parseRecord(address: string, raw: string | null | undefined): Suppression | undefined {
  if (raw === null || raw === undefined) return undefined;
  try {
    const parsed = recordSchema.safeParse(JSON.parse(raw));
    if (!parsed.success) return undefined;
    return { address, reason: parsed.data.r, at: parsed.data.t, source: parsed.data.s };
  } catch {
    return undefined;
  }
}

/** Addresses per Redis command when adding, removing or looking up many. */
const CHUNK = 1000;

/**
 * The suppression list of one queue, in Redis (one hash under the queue's key prefix, so it shares
 * the queue's hash tag and Redis Cluster slot). Campaigns skip what is on it, producer.enqueue can
 * skip it too, the worker adds hard bounces, the unsubscribe endpoint adds unsubscribes. Entries do not
 * expire: removing one is an operator's decision (remove()). About 100 bytes of Redis memory per address.
 */
export class SuppressionList {
  readonly #redis: RedisClient;
  readonly #key: string;

  constructor(redis: RedisClient, keys: Pick<QueueKeys, 'suppression'>) {
    this.#redis = redis;
    this.#key = keys.suppression;
  }

  /**
   * Adds addresses. Every input is checked first (address, reason): one bad entry throws
   * ValidationError naming `entries[i]` and adds nothing. An address already on the list keeps its
   * first record (so a repeated unsubscribe or bounce changes nothing) unless `replace`.
   */
  async add(
    entries: SuppressionInput | readonly SuppressionInput[],
    options: { replace?: boolean } = {},
  ): Promise<SuppressionAddResult> {
    const list: readonly SuppressionInput[] = Array.isArray(entries)
      ? entries
      : [entries as SuppressionInput];
    const now = Date.now();
    const prepared = new Map<string, string>();
    list.forEach((entry, index) => {
      const where = list.length === 1 && !Array.isArray(entries) ? '' : `entries[${index}].`;
      const address = normalizeSuppressedAddress(entry?.address, `${where}address`);
      const record = {
        r: checkReason(entry.reason, `${where}reason`),
        t: checkTime(entry.at ?? now, `${where}at`),
        s: oneLine(checkSource(entry.source ?? '', `${where}source`)),
      };
      if (!prepared.has(address)) prepared.set(address, JSON.stringify(recordSchema.parse(record)));
    });
    let added = 0;
    const items = [...prepared];
    for (let start = 0; start < items.length; start += CHUNK) {
      const pipeline = this.#redis.pipeline();
      for (const [address, record] of items.slice(start, start + CHUNK)) {
        if (options.replace) pipeline.hset(this.#key, address, record);
        else pipeline.hsetnx(this.#key, address, record);
      }
      for (const [error, result] of (await pipeline.exec()) ?? []) {
        if (error) throw error;
        added += Number(result);
      }
    }
    return { added, existing: prepared.size - added };
  }

  /** Removes addresses; returns how many were on the list. Throws ValidationError for a bad address. */
  async remove(addresses: string | readonly string[]): Promise<number> {
    const list = typeof addresses === 'string' ? [addresses] : addresses;
    const normalized = list.map((address, index) =>
      normalizeSuppressedAddress(address, typeof addresses === 'string' ? 'address' : `addresses[${index}]`),
    );
    let removed = 0;
    for (let start = 0; start < normalized.length; start += CHUNK) {
      removed += await this.#redis.hdel(this.#key, ...normalized.slice(start, start + CHUNK));
    }
    return removed;
  }

  /** The record of one address, or undefined when it is not suppressed. */
  async get(address: string): Promise<Suppression | undefined> {
    const normalized = normalizeSuppressedAddress(address);
    return parseRecord(normalized, await this.#redis.hget(this.#key, normalized));
  }

  /**
   * Looks up many addresses at once (one HMGET per 1,000): the record of each, in order, undefined
   * for one that is not suppressed. An address that is not usable (it could never have been added)
   * is not suppressed; the caller's own validation reports it.
   */
  async lookup(addresses: readonly string[]): Promise<(Suppression | undefined)[]> {
    const keys = addresses.map((address) => {
      try {
        return normalizeSuppressedAddress(address);
      } catch {
        return undefined;
      }
    });
    const wanted = keys.filter((key): key is string => key !== undefined);
    const found = new Map<string, string | null>();
    for (let start = 0; start < wanted.length; start += CHUNK) {
      const chunk = wanted.slice(start, start + CHUNK);
      const values = await this.#redis.hmget(this.#key, ...chunk);
      chunk.forEach((key, index) => {
        found.set(key, values[index] ?? null);
      });
    }
    return keys.map((key) => (key === undefined ? undefined : parseRecord(key, found.get(key))));
  }

  /** Number of addresses on the list. */
  count(): Promise<number> {
    return this.#redis.hlen(this.#key);
  }

  /**
   * Every record, streamed with HSCAN (a million addresses never sit in memory at once), in no
   * particular order; `reason` keeps one kind. A record that does not parse is skipped.
   */
  async *entries(options: { reason?: SuppressionReason } = {}): AsyncGenerator<Suppression> {
    let cursor = '0';
    do {
      const [next, flat] = await this.#redis.hscan(this.#key, cursor, 'COUNT', CHUNK);
      cursor = next;
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const record = parseRecord(flat[i] as string, flat[i + 1]);
        if (record && (options.reason === undefined || record.reason === options.reason)) yield record;
      }
    } while (cursor !== '0');
  }
}
