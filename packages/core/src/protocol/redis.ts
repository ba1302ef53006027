/** Redis connections both sides make (one node or a Cluster): createRedis, waitForRedis, descriptions without credentials. */
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { MailError } from '../errors.js';
import { type ClusterSpec, describeCluster, parseClusterNodes } from './cluster-nodes.js';

/** A connection to Redis: one node (ioredis `Redis`) or a Redis Cluster (ioredis `Cluster`). */
export type RedisClient = Redis | Cluster;

/**
 * Where Redis is: a `redis://` URL, ioredis options, `{ cluster: ... }` (seed nodes, as
 * REDIS_CLUSTER_NODES writes them, or parsed), or a ready ioredis client, one node or a Cluster (not
 * closed by us).
 */
export type RedisInput = string | RedisOptions | { cluster: string | ClusterSpec } | Redis | Cluster;

/**
 * The Redis of the settings: REDIS_CLUSTER_NODES when set (it takes precedence), else REDIS_URL.
 * `clusterNodes` and `url` are the two settings' values.
 */
export function redisInputFrom(url: string, clusterNodes: string | null): RedisInput {
  return clusterNodes ? { cluster: clusterNodes } : url;
}

function clusterSpecOf(input: RedisInput): ClusterSpec | undefined {
  if (
    typeof input !== 'object' ||
    input instanceof Redis ||
    input instanceof Cluster ||
    !('cluster' in input)
  )
    return undefined;
  return typeof input.cluster === 'string' ? parseClusterNodes(input.cluster) : input.cluster;
}

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
  const spec = clusterSpecOf(input);
  if (spec) return describeCluster(spec);
  if (input instanceof Cluster) return 'Redis Cluster (a client given)';
  if (input instanceof Redis) return `${input.options.host ?? '127.0.0.1'}:${input.options.port ?? 6379}`;
  const options = input as RedisOptions;
  return `${options.host ?? '127.0.0.1'}:${options.port ?? 6379}`;
}

/**
 * ioredis Cluster options for `spec` with the per-connection `overrides` a caller gives for one node:
 * what concerns each node connection goes to `redisOptions`, the offline queue, lazy connect and the
 * retry strategy apply to the cluster as a whole. With TLS, node addresses are used as given (no DNS
 * lookup that would break certificate names, as ioredis advises for managed clusters).
 */
function clusterOptions(spec: ClusterSpec, overrides: RedisOptions): ClusterOptions {
  const { enableOfflineQueue, lazyConnect, retryStrategy, ...perNode } = overrides;
  return {
    redisOptions: {
      ...(spec.username === undefined ? {} : { username: spec.username }),
      ...(spec.password === undefined ? {} : { password: spec.password }),
      ...(spec.tls ? { tls: {} } : {}),
      ...perNode,
    },
    ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
    ...(lazyConnect === undefined ? {} : { lazyConnect }),
    ...(retryStrategy ? { clusterRetryStrategy: (times: number) => retryStrategy(times) } : {}),
    ...(spec.tls ? { dnsLookup: (address, callback) => callback(null, address) } : {}),
  };
}

/**
 * Creates an ioredis client from a URL or options, merged with `overrides`, or an ioredis Cluster
 * client from `{ cluster }` seed nodes (the overrides then apply to every node connection). An
 * existing client is returned as is (the caller keeps ownership).
 */
export function createRedis(
  input: RedisInput,
  overrides: RedisOptions,
): { client: RedisClient; owned: boolean } {
  if (input instanceof Redis || input instanceof Cluster) return { client: input, owned: false };
  const spec = clusterSpecOf(input);
  if (spec) {
    return {
      client: new Cluster(
        spec.seeds.map(({ host, port }) => ({ host, port })),
        clusterOptions(spec, overrides),
      ),
      owned: true,
    };
  }
  const client =
    typeof input === 'string'
      ? new Redis(input, overrides)
      : new Redis({ ...(input as RedisOptions), ...overrides });
  return { client, owned: true };
}

/**
 * Waits until the client is ready, at most `timeoutMs`, and throws a MailError (code EREDIS) naming
 * the server and the connection error otherwise (at once when the connection is refused). The
 * fail-fast check of the producer.
 */
export async function waitForRedis(
  client: RedisClient,
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
