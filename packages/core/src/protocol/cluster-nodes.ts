/** REDIS_CLUSTER_NODES: the seed nodes of a Redis Cluster, parsed into what ioredis's Cluster client takes. */
import { ConfigError } from '../errors.js';

/** One seed node. */
export interface ClusterSeed {
  readonly host: string;
  readonly port: number;
}

/**
 * A Redis Cluster to connect to: seed nodes (any few of its nodes: the client learns the rest from
 * CLUSTER SLOTS) and the options every node connection shares.
 */
export interface ClusterSpec {
  readonly seeds: readonly ClusterSeed[];
  /** ACL user, from a `redis://user:password@` seed. */
  readonly username?: string;
  /** Password, from a `redis://:password@` seed; every node of a cluster shares it. */
  readonly password?: string;
  /** True when the seeds are `rediss://` URLs: TLS to every node. */
  readonly tls: boolean;
}

const DEFAULT_PORT = 6379;

/** `host:port`, a bare host, `[v6]:port`, or a `redis://` / `rediss://` URL with credentials. */
function parseSeed(
  entry: string,
  name: string,
): { seed: ClusterSeed; username?: string; password?: string; tls?: boolean } {
  const shown = entry.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
  const fail = (why: string) => new ConfigError(`${name}: seed node "${shown}" ${why}`);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(entry)) {
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      throw fail('is not a valid URL');
    }
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:')
      throw fail('must be host:port or a redis:// or rediss:// URL');
    if (url.pathname !== '' && url.pathname !== '/' && url.pathname !== '/0')
      throw fail('names a database: a Redis Cluster has only database 0');
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (host === '') throw fail('has no host');
    const port = url.port === '' ? DEFAULT_PORT : Number(url.port);
    return {
      seed: { host, port },
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      tls: url.protocol === 'rediss:',
    };
  }
  const match = /^(?:\[([^\]]+)\]|([^:[\]\s]+))(?::(\d+))?$/.exec(entry);
  if (!match) throw fail('must be host:port or a redis:// or rediss:// URL');
  const port = match[3] === undefined ? DEFAULT_PORT : Number(match[3]);
  return { seed: { host: (match[1] ?? match[2]) as string, port } };
}

/**
 * Parses REDIS_CLUSTER_NODES: comma-separated seed nodes, each `host:port` (port 6379 when left out)
 * or a `redis://[user:password@]host:port` / `rediss://...` URL. Credentials and TLS may be written
 * on one seed or on all of them alike; seeds that disagree (two passwords, TLS on some) are an error,
 * as is an empty list or a port out of range. Errors name the setting and never show a password.
 */
export function parseClusterNodes(text: string, name = 'REDIS_CLUSTER_NODES'): ClusterSpec {
  const entries = text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (entries.length === 0)
    throw new ConfigError(`${name} holds no seed node: write host:port[,host:port...]`);
  const parsed = entries.map((entry) => parseSeed(entry, name));
  for (const { seed } of parsed) {
    if (!Number.isInteger(seed.port) || seed.port < 1 || seed.port > 65535)
      throw new ConfigError(`${name}: port ${seed.port} of ${seed.host} is not between 1 and 65535`);
  }
  const agreed = <K extends 'username' | 'password' | 'tls'>(key: K, label: string) => {
    const values = new Set(parsed.flatMap((entry) => (entry[key] === undefined ? [] : [entry[key]])));
    if (values.size > 1)
      throw new ConfigError(`${name}: the seed nodes give different ${label}; give one for all`);
    return [...values][0] as (typeof parsed)[number][K];
  };
  const username = agreed('username', 'user names');
  const password = agreed('password', 'passwords');
  const tlsValues = new Set(parsed.map((entry) => entry.tls === true));
  if (tlsValues.size > 1)
    throw new ConfigError(
      `${name}: some seeds are rediss:// (TLS) and some are not; a cluster is one or the other`,
    );
  return {
    seeds: parsed.map((entry) => entry.seed),
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    tls: tlsValues.has(true),
  };
}

/** The seeds of a cluster as `host:port`, for logs and errors (never credentials). */
export function describeCluster(spec: ClusterSpec): string {
  return `cluster ${spec.seeds.map(({ host, port }) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`)).join(',')}`;
}
