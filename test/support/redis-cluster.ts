/** The local Redis Cluster of scripts/redis-cluster.sh for tests: start it, read its topology, fail a master over or kill it. */
import { execFile, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';

// cluster-key-slot is ioredis's own dependency, not the root package's, and pnpm does not hoist it
// where test/ can import it: resolve it from ioredis's directory (the very function ioredis routes by).
const requireFromIoredis = createRequire(createRequire(import.meta.url).resolve('ioredis'));
const calculateSlot = requireFromIoredis('cluster-key-slot') as (key: string | Buffer) => number;

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCRIPT = 'scripts/redis-cluster.sh';
const HOST = '127.0.0.1';
const SLOTS = 16384;
/** The script's own defaults (MAILROOM_CLUSTER_PORTS, MAILROOM_CLUSTER_DIR); it reads the same variables. */
const PORTS = (process.env.MAILROOM_CLUSTER_PORTS ?? '7100 7101 7102 7103 7104 7105')
  .trim()
  .split(/\s+/)
  .map(Number);
const CLUSTER_DIR = process.env.MAILROOM_CLUSTER_DIR ?? '/tmp/mailroom-redis-cluster';
const MASTERS = PORTS.length / 2;
/** Bound of every wait here: a failover takes seconds, a busy 2-core machine may make it ten times slower. */
const WAIT_MS = 90_000;

/** The cluster's nodes, as {@link ensureCluster} returns them. */
export interface ClusterNodes {
  /** `127.0.0.1:<port>` of every node, for ioredis's Cluster or MAILROOM_TEST_CLUSTER. */
  readonly seeds: string[];
  readonly ports: number[];
}

/** One node as CLUSTER NODES and its INFO describe it. */
export interface NodeInfo {
  readonly id: string;
  readonly port: number;
  readonly role: 'master' | 'replica';
  /** The id of the master a replica follows; null for a master. */
  readonly masterId: string | null;
  /** Inclusive slot ranges the node serves (empty for a replica). */
  readonly slots: readonly (readonly [number, number])[];
  /** Its process id (INFO server process_id); null when the node did not answer INFO. */
  readonly pid: number | null;
}

/** Load of one master since it started, from {@link perMaster}. */
export interface MasterLoad {
  readonly port: number;
  /** DBSIZE. */
  readonly keys: number;
  /** used_cpu_sys + used_cpu_user. */
  readonly cpuSeconds: number;
  /** total_commands_processed. */
  readonly commands: number;
}

/**
 * Starts the cluster when it is not running, restarts nodes that died, and resolves once it is healthy
 * (`scripts/redis-cluster.sh start`: idempotent, safe to call from several test files at once).
 * Throws with the script's output when it fails.
 */
export async function ensureCluster(): Promise<ClusterNodes> {
  try {
    await promisify(execFile)('bash', [SCRIPT, 'start'], { cwd: ROOT, timeout: 300_000, maxBuffer: 1 << 22 });
  } catch (error) {
    const failed = error as Error & { stdout?: string; stderr?: string };
    throw new Error(
      `bash ${SCRIPT} start failed: ${failed.message.split('\n')[0]}\n${failed.stdout ?? ''}${failed.stderr ?? ''}`,
      { cause: error },
    );
  }
  return { seeds: PORTS.map((port) => `${HOST}:${port}`), ports: [...PORTS] };
}

/**
 * The masters serving slots and the replicas, as the first node that answers sees them (nodes it flags
 * fail, fail? or handshake left out), each sorted by port. Throws when no node answers.
 */
export async function clusterTopology(): Promise<{ masters: NodeInfo[]; replicas: NodeInfo[] }> {
  let lines: NodeLine[] | undefined;
  for (const port of PORTS) {
    lines = await onNode(port, async (redis) =>
      parseClusterNodes(await command(redis, 'CLUSTER', 'NODES')),
    ).catch(() => undefined);
    if (lines) break;
  }
  if (!lines) throw new Error(`no node of the cluster answers CLUSTER NODES (ports ${PORTS.join(' ')})`);
  const live = lines.filter((line) => !line.flags.some((flag) => UNHEALTHY_FLAGS.has(flag)));
  const nodes = await Promise.all(
    live.map(async (line): Promise<NodeInfo> => {
      const pid = await onNode(line.port, async (redis) =>
        Number(infoFields(await redis.info('server')).process_id),
      )
        .then((value) => (Number.isInteger(value) ? value : null))
        .catch(() => null);
      return {
        id: line.id,
        port: line.port,
        role: line.role,
        masterId: line.role === 'replica' ? line.masterId : null,
        slots: line.role === 'master' ? line.slots : [],
        pid,
      };
    }),
  );
  nodes.sort((a, b) => a.port - b.port);
  return {
    masters: nodes.filter((node) => node.role === 'master' && node.slots.length > 0),
    replicas: nodes.filter((node) => node.role === 'replica'),
  };
}

/** The master serving `slot` (0..16383); throws when none does. */
export async function masterOfSlot(slot: number): Promise<NodeInfo> {
  const { masters } = await clusterTopology();
  const master = masters.find((node) => node.slots.some(([from, to]) => slot >= from && slot <= to));
  if (!master) throw new Error(`no master serves slot ${slot}; masters: ${describeNodes(masters)}`);
  return master;
}

/** The master serving the slot of `key` (hash tags honoured, as ioredis routes it). */
export function masterOfKey(key: string): Promise<NodeInfo> {
  return masterOfSlot(calculateSlot(key));
}

/**
 * A manual failover (CLUSTER FAILOVER, no data lost) of the master serving `key`'s slot: resolves once
 * its replica is the master of that slot and the cluster is healthy again (the old master then being the
 * new one's replica). Throws, saying what it last saw, when that does not happen within 90 s.
 */
export async function failoverMasterOf(key: string): Promise<{ before: NodeInfo; after: NodeInfo }> {
  const slot = calculateSlot(key);
  const { before, replica } = await masterAndReplica(slot);
  let sentAt = 0;
  await waitFor(`replica ${replica.port} to take slot ${slot} over from master ${before.port}`, async () => {
    const role = await replicationRole(replica.port);
    if (role.role !== 'master') {
      // A manual failover that cannot complete gives up after 5 s (CLUSTER_MF_TIMEOUT): ask again.
      if (Date.now() - sentAt > 10_000) {
        sentAt = Date.now();
        await onNode(replica.port, (redis) => command(redis, 'CLUSTER', 'FAILOVER'));
      }
      return `node ${replica.port} is still ${role.role}`;
    }
    return (await healthProblems()).join('; ') || undefined;
  });
  const after = await masterOfSlot(slot);
  if (after.port !== replica.port)
    throw new Error(
      `after the failover slot ${slot} is served by ${after.port}, not by the replica ${replica.port}`,
    );
  return { before, after };
}

/**
 * SIGKILLs the master serving `key`'s slot, waits until its replica is promoted and the live nodes say
 * cluster_state:ok, then starts the killed node again ({@link ensureCluster}) and waits until it is the
 * promoted node's replica with its link up. Writes not yet replicated when it died are lost, as in
 * production. Throws, saying what it last saw, when a step does not happen within 90 s.
 */
export async function killMasterOf(key: string): Promise<{ killed: NodeInfo; promoted: NodeInfo }> {
  const slot = calculateSlot(key);
  const { before: killed, replica } = await masterAndReplica(slot);
  const { pid } = killed;
  if (pid === null) throw new Error(`master ${killed.port} did not say its process id`);
  // Hold the script's lock until the replica is promoted: a `start` from another test file in between
  // would restart the killed node empty while it is still the master, and its replica would then copy
  // the empty dataset instead of taking over.
  const lock = await holdScriptLock();
  try {
    process.kill(pid, 'SIGKILL');
    const live = PORTS.filter((port) => port !== killed.port);
    await waitFor(
      `replica ${replica.port} to be promoted after master ${killed.port} was killed`,
      async () => {
        const role = await replicationRole(replica.port);
        if (role.role !== 'master') return `node ${replica.port} is still ${role.role}`;
        const states = await Promise.all(
          live.map(async (port) => {
            const state = await onNode(port, async (redis) =>
              infoFields(await command(redis, 'CLUSTER', 'INFO')),
            )
              .then((fields) => fields.cluster_state ?? '?')
              .catch(() => 'no answer');
            return state === 'ok' ? undefined : `node ${port}: cluster_state:${state}`;
          }),
        );
        return states.filter(Boolean).join('; ') || undefined;
      },
    );
  } finally {
    await lock.release();
  }
  await ensureCluster();
  await waitFor(`node ${killed.port} to come back as the replica of ${replica.port}`, async () => {
    const role = await replicationRole(killed.port);
    if (
      role.role !== 'slave' ||
      role.master_port !== String(replica.port) ||
      role.master_link_status !== 'up'
    )
      return `node ${killed.port}: role ${role.role}, master_port ${role.master_port ?? '-'}, link ${role.master_link_status ?? '-'}`;
    return undefined;
  });
  const promoted = await masterOfSlot(slot);
  if (promoted.port !== replica.port)
    throw new Error(
      `after the kill slot ${slot} is served by ${promoted.port}, not by the replica ${replica.port}`,
    );
  return { killed, promoted };
}

/** Keys, CPU time and commands of every current master, sorted by port. */
export async function perMaster(): Promise<MasterLoad[]> {
  const { masters } = await clusterTopology();
  return Promise.all(
    masters.map((master) =>
      onNode(master.port, async (redis): Promise<MasterLoad> => {
        const info = infoFields(await redis.info());
        return {
          port: master.port,
          keys: await redis.dbsize(),
          cpuSeconds: Number(info.used_cpu_sys) + Number(info.used_cpu_user),
          commands: Number(info.total_commands_processed),
        };
      }),
    ),
  );
}

/**
 * FLUSHALL on every master (replicas follow). Only for redis-cluster.test.ts: mailroom's tests share the
 * cluster and remove their own keys by prefix.
 */
export async function flushCluster(): Promise<void> {
  const { masters } = await clusterTopology();
  await Promise.all(masters.map((master) => onNode(master.port, (redis) => redis.flushall())));
}

/**
 * Resolves once the cluster is healthy, by the script's check: on every node cluster_state:ok, all
 * slots served and the same view of masters and replicas; 3 masters each with one replica whose link
 * is up. Call it after a failover test to hand the next test file a healthy cluster. Throws after
 * `timeoutMs`, saying what was still wrong. Restarts nothing (that is {@link ensureCluster}).
 */
export async function clusterSettle(timeoutMs = WAIT_MS): Promise<void> {
  await waitFor('a healthy cluster', async () => (await healthProblems()).join('; ') || undefined, timeoutMs);
}

// CLUSTER NODES flags of a node that is not (yet, or any more) a working member.
const UNHEALTHY_FLAGS = new Set(['fail', 'fail?', 'handshake', 'noaddr']);

interface NodeLine {
  readonly id: string;
  readonly port: number;
  readonly role: 'master' | 'replica';
  readonly flags: string[];
  readonly masterId: string | null;
  readonly slots: [number, number][];
}

/** CLUSTER NODES: `<id> <ip:port@cport[,hostname]> <flags> <master|-> <ping> <pong> <epoch> <link> <slots...>`. */
function parseClusterNodes(text: string): NodeLine[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [id = '', address = '', flagList = '', master = '-', , , , , ...ranges] = line.split(' ');
      const flags = flagList.split(',');
      const slots = ranges
        .filter((range) => !range.startsWith('[')) // [slot->-id] / [slot-<-id]: a migration in progress
        .map((range): [number, number] => {
          const [from, to = from] = range.split('-').map(Number) as [number, number?];
          return [from, to];
        });
      return {
        id,
        port: Number(address.split('@')[0]?.split(':').pop()),
        role: flags.includes('slave') ? 'replica' : 'master',
        flags,
        masterId: master === '-' ? null : master,
        slots,
      };
    });
}

/** `name:value` lines (INFO, CLUSTER INFO) as an object. */
function infoFields(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}

function describeNodes(nodes: readonly NodeInfo[]): string {
  return nodes
    .map((node) => `${node.port} ${node.slots.map(([from, to]) => `${from}-${to}`).join(',')}`)
    .join('; ');
}

/** A fresh connection to one node for `use`, closed afterwards; fails fast when the node is down. */
async function onNode<T>(port: number, use: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 3_000,
    commandTimeout: 10_000,
  });
  redis.on('error', () => {}); // a refused connection rejects connect() below; no unhandled 'error' event
  try {
    await redis.connect();
    return await use(redis);
  } finally {
    redis.disconnect(); // MUST run: a leaked connection keeps the test process alive
  }
}

async function command(redis: Redis, name: string, ...args: string[]): Promise<string> {
  return String(await redis.call(name, args));
}

/** INFO replication of a node (role: master | slave; master_port and master_link_status on a replica). */
async function replicationRole(port: number): Promise<Record<string, string>> {
  return onNode(port, async (redis) => infoFields(await redis.info('replication'))).catch(
    (error: unknown) => ({
      role: `unreachable (${error instanceof Error ? error.message : String(error)})`,
    }),
  );
}

async function masterAndReplica(slot: number): Promise<{ before: NodeInfo; replica: NodeInfo }> {
  const { masters, replicas } = await clusterTopology();
  const before = masters.find((node) => node.slots.some(([from, to]) => slot >= from && slot <= to));
  if (!before) throw new Error(`no master serves slot ${slot}; masters: ${describeNodes(masters)}`);
  const replica = replicas.find((node) => node.masterId === before.id);
  if (!replica) throw new Error(`master ${before.port} (slot ${slot}) has no replica to take over`);
  return { before, replica };
}

/**
 * Polls `check` (it returns what is still wrong, or undefined once done) until done; throws after
 * `timeoutMs` with the last thing it saw. A check that throws counts as not done yet.
 */
async function waitFor(
  what: string,
  check: () => Promise<string | undefined>,
  timeoutMs = WAIT_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let seen: string | undefined;
    try {
      seen = await check();
    } catch (error) {
      seen = error instanceof Error ? error.message : String(error);
    }
    if (seen === undefined) return;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last saw: ${seen}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** What keeps the cluster from being healthy (empty when it is); the same check as the script's health_problems. */
async function healthProblems(): Promise<string[]> {
  const perNode = await Promise.all(
    PORTS.map(async (port) => {
      try {
        return await onNode(port, async (redis) => {
          const problems: string[] = [];
          const info = infoFields(await command(redis, 'CLUSTER', 'INFO'));
          if (info.cluster_state !== 'ok') problems.push(`node ${port}: cluster_state:${info.cluster_state}`);
          if (info.cluster_slots_ok !== String(SLOTS))
            problems.push(
              `node ${port}: cluster_slots_ok:${info.cluster_slots_ok} (assigned ${info.cluster_slots_assigned})`,
            );
          if (info.cluster_known_nodes !== String(PORTS.length))
            problems.push(`node ${port}: knows ${info.cluster_known_nodes} nodes, not ${PORTS.length}`);
          const lines = parseClusterNodes(await command(redis, 'CLUSTER', 'NODES'));
          const portOf = new Map(lines.map((line) => [line.id, line.port]));
          for (const line of lines) {
            const bad = line.flags.filter((flag) => UNHEALTHY_FLAGS.has(flag));
            if (bad.length > 0) problems.push(`node ${port}: sees ${line.port} as ${bad.join(',')}`);
          }
          const masters = lines.filter((line) => line.role === 'master' && line.slots.length > 0);
          if (masters.length !== MASTERS)
            problems.push(`node ${port}: sees ${masters.length} masters serving slots, not ${MASTERS}`);
          const view: string[] = masters.map(
            (line) => `master ${line.port}: ${line.slots.map(([from, to]) => `${from}-${to}`).join(' ')}`,
          );
          for (const master of masters) {
            const followers = lines.filter((line) => line.role === 'replica' && line.masterId === master.id);
            if (followers.length !== 1)
              problems.push(`node ${port}: master ${master.port} has ${followers.length} replicas, not 1`);
          }
          for (const replica of lines.filter((line) => line.role === 'replica')) {
            if (!masters.some((master) => master.id === replica.masterId))
              problems.push(
                `node ${port}: replica ${replica.port} follows ${replica.masterId}, not a master serving slots`,
              );
            view.push(`replica ${replica.port} of ${portOf.get(replica.masterId ?? '') ?? replica.masterId}`);
          }
          const replication = infoFields(await redis.info('replication'));
          if (replication.role === 'slave' && replication.master_link_status !== 'up')
            problems.push(
              `node ${port}: replica of ${replication.master_port} with master_link_status:${replication.master_link_status}`,
            );
          return { port, problems, view: view.sort().join('\n') };
        });
      } catch {
        return { port, problems: [`node ${port}: no answer`], view: undefined };
      }
    }),
  );
  const problems = perNode.flatMap((node) => node.problems);
  const first = perNode.find((node) => node.view !== undefined);
  for (const node of perNode) {
    if (first && node.view !== undefined && node.view !== first.view)
      problems.push(
        `node ${node.port} and node ${first.port} disagree on the masters' slots or the replicas`,
      );
  }
  return problems;
}

/**
 * Takes the lock scripts/redis-cluster.sh serialises itself with (flock(1) on `<cluster dir>/.lock`,
 * held by a child process until `release`), so no `start` runs in between.
 */
function holdScriptLock(): Promise<{ release(): Promise<void> }> {
  return new Promise((resolve, reject) => {
    // `flock FILE CMD` holds the lock while CMD runs; cat runs until its stdin is closed.
    const holder = spawn(
      'flock',
      ['-w', '300', `${CLUSTER_DIR}/.lock`, 'sh', '-c', 'echo locked; exec cat'],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    holder.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const exited = new Promise<void>((done) => holder.once('exit', () => done()));
    holder.once('error', reject);
    holder.once('exit', (code) =>
      reject(new Error(`flock ${CLUSTER_DIR}/.lock exited with ${code}: ${stderr}`)),
    );
    holder.stdout.setEncoding('utf8').once('data', () =>
      resolve({
        async release() {
          holder.stdin.end();
          await exited;
        },
      }),
    );
  });
}

/** Every key of `queue` (any shard prefix) on every master of `cluster`, removed one UNLINK at a time (keys of several slots). */
export async function removeClusterQueueKeys(cluster: Cluster, queue: string): Promise<void> {
  for (const node of cluster.nodes('master')) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `*:${queue}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) {
        const pipeline = node.pipeline();
        for (const key of keys) pipeline.unlink(key);
        await pipeline.exec();
      }
    } while (cursor !== '0');
  }
}

/** An ioredis Cluster client on `seeds` (`host:port` strings, as {@link ensureCluster} gives them); the caller quits it. */
export function clusterClient(seeds: readonly string[]): Cluster {
  return new Cluster(
    seeds.map((seed) => {
      const [host, port] = seed.split(':');
      return { host: host as string, port: Number(port) };
    }),
  );
}
