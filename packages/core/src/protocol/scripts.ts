/** Registers every mailroom Lua script on an ioredis client, as typed commands. */

import { COMMIT_CHUNK, SEEN, TRANSITION } from './campaign-scripts.js';
import { ENSURE_EPOCH, RECORD_LOSS } from './epoch-scripts.js';
import { CLAIM_RETRY } from './failed-recipients.js';
import { CHECK, RECORD, REOPEN_EXHAUSTED } from './ledger-scripts.js';
import type { RedisClient } from './redis.js';

type Argument = string | Buffer | number;

/** The commands {@link registerScripts} adds; KEYS and ARGV of each are documented with its script. */
export interface MailroomCommands {
  /** campaign-scripts.ts COMMIT_CHUNK: 1 when the chunk was counted, 0 when it had been already. */
  mailroomCommitChunk(...keysAndArgs: Argument[]): Promise<number>;
  /** campaign-scripts.ts SEEN: the number of pairs, the bucket keys, then the fields; 1 or 0 per pair. */
  mailroomSeen(...args: Argument[]): Promise<number[]>;
  /** campaign-scripts.ts TRANSITION: the state found, '' when there is no campaign. */
  mailroomTransition(...keysAndArgs: string[]): Promise<string>;
  /** ledger-scripts.ts RECORD: [lock held 1/0, campaign state]. */
  mailroomRecord(...keysAndArgs: string[]): Promise<[number, string]>;
  /** ledger-scripts.ts CHECK: [lock held 1/0, campaign state]. */
  mailroomCheck(...keysAndArgs: string[]): Promise<[number, string]>;
  /** ledger-scripts.ts REOPEN_EXHAUSTED: the number of messages reopened. */
  mailroomReopenExhausted(...keysAndArgs: string[]): Promise<number>;
  /** failed-recipients.ts CLAIM_RETRY: [suppressed, in flight, stale, [address, record, ...]]. */
  mailroomClaimRetry(...keysAndArgs: string[]): Promise<[number, number, number, string[]]>;
  /** epoch-scripts.ts ENSURE_EPOCH: the marker, HGETALL as a flat list. */
  mailroomEnsureEpoch(key: string, id: string, now: string): Promise<string[]>;
  /** epoch-scripts.ts RECORD_LOSS: [1 after a loss, 0 otherwise; the marker, HGETALL as a flat list]. */
  mailroomRecordLoss(...keysAndArgs: string[]): Promise<[number, string[]]>;
}

/** An ioredis client with the mailroom commands. */
export type ScriptedRedis = RedisClient & MailroomCommands;

const SCRIPTS: Record<keyof MailroomCommands, { numberOfKeys?: number; lua: string }> = {
  mailroomCommitChunk: { numberOfKeys: 4, lua: COMMIT_CHUNK },
  mailroomSeen: { lua: SEEN },
  mailroomTransition: { numberOfKeys: 1, lua: TRANSITION },
  mailroomRecord: { numberOfKeys: 6, lua: RECORD },
  mailroomCheck: { numberOfKeys: 6, lua: CHECK },
  mailroomReopenExhausted: { numberOfKeys: 4, lua: REOPEN_EXHAUSTED },
  mailroomClaimRetry: { numberOfKeys: 4, lua: CLAIM_RETRY },
  mailroomEnsureEpoch: { numberOfKeys: 1, lua: ENSURE_EPOCH },
  mailroomRecordLoss: { numberOfKeys: 1, lua: RECORD_LOSS },
};

/**
 * Defines every mailroom script on `redis` (once per client: a second call finds them and does
 * nothing) and returns the same client, typed with the commands. ioredis runs them with EVALSHA and
 * falls back to EVAL when the server does not know the script (after a restart or SCRIPT FLUSH).
 */
export function registerScripts(redis: RedisClient): ScriptedRedis {
  for (const [name, definition] of Object.entries(SCRIPTS)) {
    if (!(name in redis)) redis.defineCommand(name, definition);
  }
  return redis as ScriptedRedis;
}
