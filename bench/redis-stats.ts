/**
 * What a scenario leaves in Redis: keys under a pattern with their memory (MEMORY USAGE, exact for
 * our own keys even while other clients use the same Redis) and TTLs, INFO's used_memory, waiting
 * for a queue to go idle, and removing a scenario's keys.
 */
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { monoMs, sleep } from './common.js';

export async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

/** One group of keys (e.g. every ledger hash) and what it holds. */
export interface KeyGroup {
  keys: number;
  bytes: number;
  /** Keys of the group without an expiry. */
  persistent: number;
  /** Longest remaining TTL in the group, seconds (0 when none has one). */
  maxTtlSeconds: number;
}

export interface KeySnapshot {
  keys: number;
  bytes: number;
  groups: Record<string, KeyGroup>;
}

/**
 * Groups a key by what follows `<base>:` — `job` for a job hash (uuid or number), `job-logs`...,
 * `ledger` for mailroom's per-batch ledgers, else the BullMQ structure name (`events`, `meta`...).
 */
function groupOf(key: string, base: string): string {
  const rest = key.startsWith(`${base}:`) ? key.slice(base.length + 1) : key;
  if (rest.startsWith('ledger:')) return 'ledger';
  const [head, ...tail] = rest.split(':');
  if (
    /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(head ?? '') ||
    /^\d+$/.test(head ?? '')
  ) {
    return tail.length > 0 ? `job:${tail.join(':')}` : 'job';
  }
  return rest;
}

/** Every key of `<base>:*` with its memory and TTL, grouped (see groupOf). */
export async function keySnapshot(redis: Redis, base: string): Promise<KeySnapshot> {
  const keys = await scanKeys(redis, `${base}:*`);
  const snapshot: KeySnapshot = { keys: 0, bytes: 0, groups: {} };
  for (let start = 0; start < keys.length; start += 500) {
    const slice = keys.slice(start, start + 500);
    const pipeline = redis.pipeline();
    for (const key of slice) {
      pipeline.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
      pipeline.ttl(key);
    }
    const replies = (await pipeline.exec()) ?? [];
    slice.forEach((key, index) => {
      const bytes = Number(replies[index * 2]?.[1] ?? 0);
      const ttl = Number(replies[index * 2 + 1]?.[1] ?? -2);
      if (ttl === -2) return; // gone meanwhile
      const name = groupOf(key, base);
      const group = snapshot.groups[name] ?? { keys: 0, bytes: 0, persistent: 0, maxTtlSeconds: 0 };
      snapshot.groups[name] = group;
      group.keys++;
      group.bytes += bytes;
      if (ttl === -1) group.persistent++;
      else group.maxTtlSeconds = Math.max(group.maxTtlSeconds, ttl);
      snapshot.keys++;
      snapshot.bytes += bytes;
    });
  }
  return snapshot;
}

/** INFO memory's used_memory, bytes (the whole server: other clients' keys move it too). */
export async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/^used_memory:(\d+)/m.exec(info)?.[1] ?? Number.NaN);
}

export async function redisVersion(redis: Redis): Promise<string> {
  const info = await redis.info('server');
  return /^redis_version:(\S+)/m.exec(info)?.[1] ?? 'unknown';
}

/** Removes every key of `<base>:*`. */
export async function removeKeys(redis: Redis, base: string): Promise<number> {
  const keys = await scanKeys(redis, `${base}:*`);
  for (let start = 0; start < keys.length; start += 1000) {
    await redis.unlink(...keys.slice(start, start + 1000));
  }
  return keys.length;
}

/** Waits until `count` workers are connected to the queue (BullMQ's CLIENT LIST names). */
export async function waitForWorkers(queue: Queue, count: number, timeoutMs = 30_000): Promise<void> {
  const deadline = monoMs() + timeoutMs;
  while ((await queue.getWorkersCount()) < count) {
    if (monoMs() > deadline) throw new Error(`${count} workers did not connect to ${queue.name}`);
    await sleep(25);
  }
}

/** Waits until the queue has nothing waiting, active or delayed (every job settled). */
export async function waitForIdle(queue: Queue, timeoutMs = 60_000): Promise<void> {
  const deadline = monoMs() + timeoutMs;
  for (;;) {
    const counts = await queue.getJobCounts('active', 'wait', 'delayed', 'prioritized');
    if (Object.values(counts).every((count) => count === 0)) return;
    if (monoMs() > deadline) throw new Error(`queue ${queue.name} not idle: ${JSON.stringify(counts)}`);
    await sleep(25);
  }
}

/** One command's counters from INFO commandstats. */
export interface CommandCounters {
  calls: number;
  /** Microseconds spent running it (a script's time includes the commands it called). */
  usec: number;
}

/** The server-wide counters a drain moves (INFO stats, cpu and commandstats), at one instant or as a difference. */
export interface ServerCounters {
  /** total_commands_processed: every command run, those called inside Lua scripts included. */
  commands: number;
  /** used_cpu_user + used_cpu_sys, seconds: every thread of redis-server. */
  cpuSeconds: number;
  /** used_cpu_user_main_thread + used_cpu_sys_main_thread, seconds: the thread that runs commands. */
  mainThreadCpuSeconds: number;
  /** total_net_input_bytes and total_net_output_bytes (client traffic; replication has its own counters). */
  netInputBytes: number;
  netOutputBytes: number;
  /** INFO commandstats by command name (`evalsha`, `client|setname`...). */
  commandStats: Record<string, CommandCounters>;
}

/** Parses the reply of `INFO stats cpu commandstats`; a field Redis did not give reads as NaN. */
export function parseServerCounters(info: string): ServerCounters {
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN);
  const commandStats: Record<string, CommandCounters> = {};
  for (const match of info.matchAll(/^cmdstat_(\S+?):calls=(\d+),usec=(\d+)/gm)) {
    commandStats[match[1] as string] = { calls: Number(match[2]), usec: Number(match[3]) };
  }
  return {
    commands: field('total_commands_processed'),
    cpuSeconds: field('used_cpu_user') + field('used_cpu_sys'),
    mainThreadCpuSeconds: field('used_cpu_user_main_thread') + field('used_cpu_sys_main_thread'),
    netInputBytes: field('total_net_input_bytes'),
    netOutputBytes: field('total_net_output_bytes'),
    commandStats,
  };
}

/** The server's counters now: one INFO command (Redis 7 takes several sections at once). */
export async function serverCounters(redis: Redis): Promise<ServerCounters> {
  return parseServerCounters(String(await redis.call('INFO', 'stats', 'cpu', 'commandstats')));
}

/** What moved from `before` to `after`; commands that did not run in between are left out. */
export function counterDelta(before: ServerCounters, after: ServerCounters): ServerCounters {
  const commandStats: Record<string, CommandCounters> = {};
  for (const [name, counters] of Object.entries(after.commandStats)) {
    const calls = counters.calls - (before.commandStats[name]?.calls ?? 0);
    if (calls > 0)
      commandStats[name] = { calls, usec: counters.usec - (before.commandStats[name]?.usec ?? 0) };
  }
  return {
    commands: after.commands - before.commands,
    cpuSeconds: after.cpuSeconds - before.cpuSeconds,
    mainThreadCpuSeconds: after.mainThreadCpuSeconds - before.mainThreadCpuSeconds,
    netInputBytes: after.netInputBytes - before.netInputBytes,
    netOutputBytes: after.netOutputBytes - before.netOutputBytes,
    commandStats,
  };
}

/** The sum of several servers' counters (a cluster's masters), command by command. */
export function sumCounters(list: readonly ServerCounters[]): ServerCounters {
  const total: ServerCounters = {
    commands: 0,
    cpuSeconds: 0,
    mainThreadCpuSeconds: 0,
    netInputBytes: 0,
    netOutputBytes: 0,
    commandStats: {},
  };
  for (const counters of list) {
    total.commands += counters.commands;
    total.cpuSeconds += counters.cpuSeconds;
    total.mainThreadCpuSeconds += counters.mainThreadCpuSeconds;
    total.netInputBytes += counters.netInputBytes;
    total.netOutputBytes += counters.netOutputBytes;
    for (const [name, { calls, usec }] of Object.entries(counters.commandStats)) {
      const sum = total.commandStats[name] ?? { calls: 0, usec: 0 };
      total.commandStats[name] = { calls: sum.calls + calls, usec: sum.usec + usec };
    }
  }
  return total;
}
