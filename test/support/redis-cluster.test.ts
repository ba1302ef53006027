/** Self-test of the local Redis Cluster helpers: start, route keys, fail over, kill a master, settle. */
import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ClusterNodes,
  clusterSettle,
  clusterTopology,
  ensureCluster,
  failoverMasterOf,
  killMasterOf,
  masterOfKey,
  perMaster,
} from './redis-cluster.js';

// A failover takes seconds here, far more on a busy machine: generous bounds, no timing assertions.
const SLOW = 180_000;

describe('local Redis Cluster (scripts/redis-cluster.sh)', () => {
  let nodes: ClusterNodes;
  let cluster: Cluster;
  // Other test files may use the cluster at the same time: own keys only, removed afterwards (no FLUSHALL).
  const prefix = `redis-cluster-test:${randomUUID()}`;
  const written: string[] = [];

  beforeAll(async () => {
    nodes = await ensureCluster();
    cluster = new Cluster(
      nodes.ports.map((port) => ({ host: '127.0.0.1', port })),
      { retryDelayOnFailover: 200, retryDelayOnClusterDown: 200 },
    );
    // Connection errors to a killed node are expected; without a listener ioredis prints them.
    cluster.on('error', () => {});
    cluster.on('node error', () => {});
  }, SLOW);

  afterAll(async () => {
    try {
      for (const key of written) await cluster.del(key);
    } finally {
      cluster?.disconnect();
      await clusterSettle();
    }
  }, SLOW);

  /** Writes `value` under `key` and waits until the key's replica has it (WAIT 1 1000, on the key's master). */
  async function setReplicated(key: string, value: string): Promise<void> {
    // A pipeline goes to the node of its keys' slot, so the keyless WAIT runs on the key's master.
    written.push(key);
    const replies = await cluster.pipeline().set(key, value).wait(1, 1000).exec();
    expect(replies).toEqual([
      [null, 'OK'],
      [null, 1],
    ]);
  }

  it('starts 3 masters serving all 16384 slots, each followed by one replica', async () => {
    expect(nodes.seeds).toEqual(nodes.ports.map((port) => `127.0.0.1:${port}`));
    const { masters, replicas } = await clusterTopology();
    expect(masters).toHaveLength(3);
    expect(replicas).toHaveLength(3);
    const served = masters
      .flatMap((master) => master.slots)
      .reduce((sum, [from, to]) => sum + to - from + 1, 0);
    expect(served).toBe(16384);
    expect(new Set(replicas.map((replica) => replica.masterId))).toEqual(
      new Set(masters.map((master) => master.id)),
    );
    for (const node of [...masters, ...replicas]) expect(node.pid).toBeGreaterThan(0);
  });

  it('routes keys of different slots to every master through a Cluster client', async () => {
    const masters = (await clusterTopology()).masters;
    const byMaster = new Map<number, string[]>(masters.map((master) => [master.port, []]));
    for (let i = 0; [...byMaster.values()].some((keys) => keys.length < 2); i++) {
      const key = `${prefix}:spread:${i}`;
      byMaster.get((await masterOfKey(key)).port)?.push(key);
    }
    const keys = [...byMaster.values()].flat();
    written.push(...keys);
    for (const key of keys) await cluster.set(key, `value of ${key}`);
    for (const key of keys) expect(await cluster.get(key)).toBe(`value of ${key}`);
    // Each key sits on the master masterOfKey named (KEYS on every master, this test's keys only).
    for (const node of cluster.nodes('master')) {
      const found = await node.keys(`${prefix}:spread:*`);
      expect(found.sort()).toEqual([...(byMaster.get(node.options.port ?? 0) ?? [])].sort());
    }
    const load = await perMaster();
    expect(load.map((master) => master.port)).toEqual(masters.map((master) => master.port));
    for (const master of load) {
      expect(master.keys).toBeGreaterThanOrEqual(byMaster.get(master.port)?.length ?? 0);
      expect(master.commands).toBeGreaterThan(0);
      expect(master.cpuSeconds).toBeGreaterThan(0);
    }
  });

  it(
    'failoverMasterOf hands the key to its replica and the value survives',
    async () => {
      const key = `${prefix}:failover`;
      await setReplicated(key, 'before the failover');
      const { before, after } = await failoverMasterOf(key);
      expect(after.port).not.toBe(before.port);
      expect((await masterOfKey(key)).port).toBe(after.port);
      expect(await cluster.get(key)).toBe('before the failover');
      const { replicas } = await clusterTopology();
      expect(replicas.find((node) => node.port === before.port)?.masterId).toBe(after.id);
    },
    SLOW,
  );

  it(
    'killMasterOf promotes the replica, the value survives and the killed node returns as its replica',
    async () => {
      const key = `${prefix}:kill`;
      await setReplicated(key, 'before the kill');
      const { killed, promoted } = await killMasterOf(key);
      expect(promoted.port).not.toBe(killed.port);
      expect((await masterOfKey(key)).port).toBe(promoted.port);
      expect(await cluster.get(key)).toBe('before the kill');
      const { replicas } = await clusterTopology();
      const restarted = replicas.find((node) => node.port === killed.port);
      expect(restarted?.masterId).toBe(promoted.id);
      expect(restarted?.pid).not.toBe(killed.pid);
    },
    SLOW,
  );

  it(
    'leaves a healthy cluster: 3 masters, each with a connected replica',
    async () => {
      await clusterSettle();
      const { masters, replicas } = await clusterTopology();
      expect(masters).toHaveLength(3);
      expect(replicas.map((replica) => replica.masterId).sort()).toEqual(
        masters.map((master) => master.id).sort(),
      );
    },
    SLOW,
  );
});
