/** Redis connections both sides make: createRedis, waitForRedis, and descriptions without credentials. */
import { Redis, type RedisOptions } from 'ioredis';
import { MailError } from '../errors.js';

/** Where Redis is: a `redis://` URL, ioredis options, or a ready ioredis client (not closed by us). */
export type RedisInput = string | RedisOptions | Redis;

/** Hides the password of a Redis URL, for logs and errors. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'redis://(unparsable url)';
  }
}

/** A human description of where a client points, without credentials. */
export function describeRedis(input: RedisInput): string {
  if (typeof input === 'string') return redactRedisUrl(input);
  if (input instanceof Redis) return `${input.options.host ?? '127.0.0.1'}:${input.options.port ?? 6379}`;
  return `${input.host ?? '127.0.0.1'}:${input.port ?? 6379}`;
}

/**
 * Creates an ioredis client from a URL or options, merged with `overrides`. An existing client is
 * returned as is (the caller keeps ownership).
 */
export function createRedis(input: RedisInput, overrides: RedisOptions): { client: Redis; owned: boolean } {
  if (input instanceof Redis) return { client: input, owned: false };
  const client =
    typeof input === 'string' ? new Redis(input, overrides) : new Redis({ ...input, ...overrides });
  return { client, owned: true };
}

/**
 * Waits until the client is ready, at most `timeoutMs`, and throws a MailError (code EREDIS) naming
 * the server and the connection error otherwise (at once when the connection is refused). The
 * fail-fast check of the producer.
 */
export async function waitForRedis(
  client: Redis,
  where: string,
  timeoutMs: number,
  lastError: () => Error | undefined,
): Promise<void> {
  if (client.status === 'ready') return;
  if (client.status === 'wait') client.connect().catch(() => {});
  await new Promise<void>((resolve, reject) => {
    const fail = (error?: Error) => {
      cleanup();
      const cause = error ?? lastError();
      reject(
        new MailError(
          `Redis is unreachable at ${where}${cause ? `: ${cause.message}` : ` (no answer within ${timeoutMs} ms)`}`,
          {
            code: 'EREDIS',
            ...(cause ? { cause } : {}),
          },
        ),
      );
    };
    const timer = setTimeout(() => fail(), timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const onEnd = () => fail();
    // A refused or reset connection is reported at once instead of waiting out the timeout.
    const onError = (error: Error) => fail(error);
    const cleanup = () => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('end', onEnd);
      client.off('error', onError);
    };
    client.once('ready', onReady);
    client.once('end', onEnd);
    client.once('error', onError);
    const known = lastError();
    if (client.status === 'reconnecting' && known) fail(known);
  });
}
