/** The one rule for queue names, shared by the producer, the worker and their settings (MAILROOM_QUEUE). */
import { ConfigError } from './errors.js';

/**
 * 1 to 100 ASCII letters, digits, `.`, `_` and `-`. Each character left out is a reason:
 * `:` separates the parts of every Redis key (`{mailroom}:<queue>:<job>`; BullMQ refuses it, and the
 * pattern of queue `mail`, `{mailroom}:mail:*`, would take in `mail:x`'s keys); `* ? [ ] \` are SCAN
 * pattern characters (a queue's keys are found with one);
 * `{ }` are Redis Cluster hash tags; spaces, control and non-ASCII characters are refused by
 * CLIENT SETNAME, which names the worker's connection after its queue, and blur log lines.
 */
const QUEUE_NAME = /^[A-Za-z0-9._-]{1,100}$/;

/** What {@link validateQueueName} allows, in the words of its error messages. */
export const QUEUE_NAME_RULE = "a queue name is 1 to 100 ASCII letters, digits, '.', '_' or '-'";

/**
 * Returns `name` when it is a usable queue name (see {@link QUEUE_NAME_RULE}); otherwise throws a
 * ConfigError that shows the value and the rule, naming `setting` (e.g. `MAILROOM_QUEUE`) when given.
 * The producer, the worker and the settings that hold a queue name all call this one function, so
 * a name one side accepts is never refused by the other.
 */
export function validateQueueName(name: unknown, setting?: string): string {
  if (typeof name === 'string' && QUEUE_NAME.test(name)) return name;
  const shown = typeof name === 'string' ? JSON.stringify(name) : String(name);
  const what = setting === undefined ? `Invalid queue name ${shown}` : `Invalid ${setting}=${shown}`;
  throw new ConfigError(`${what}: ${QUEUE_NAME_RULE}`);
}
