/**
 * Capacity model: what a drain of M messages costs Redis per message (commands, those called inside
 * Lua scripts included; redis-server CPU; network bytes) for mailroom and for baseline (b), measured
 * on a private redis-server started for the run so that nothing else's traffic is counted. From the
 * CPU per message follows the rate one Redis node could carry if its CPU were the bound (Redis runs
 * commands on one thread: one node is about one core), a derived figure, not a measured one. With
 * MAILROOM_BENCH_CLUSTER=<seed nodes> mailroom also drains through that Redis Cluster with
 * MAILROOM_SHARDS=1 and 3, and each master's keys, commands and CPU show how the load divides.
 *
 * The harness's systems and worker processes read REDIS_URL once, when loaded, so the drains run in
 * a child process of this very file (the driver) whose REDIS_URL is the private server; it starts
 * its own sink, workers and producer, and answers with the run's figures.
 */
import { fork, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ClusterSpec, parseClusterNodes } from '@mailroom/core/protocol';
import { createProducer } from '@mailroom/producer';
import { Queue } from 'bullmq';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { pino } from 'pino';
import { monoMs, REDIS_URL, runTag, sleep, Tail } from '../common.js';
import type { BenchConfig } from '../config.js';
import { newsletterMessage } from '../newsletter.js';
import { killAll, startMailroomWorker, type WorkerProcess } from '../processes.js';
import {
  counterDelta,
  removeKeys,
  type ServerCounters,
  serverCounters,
  sumCounters,
  waitForIdle,
} from '../redis-stats.js';
import type { Row } from '../report.js';
import { type Sink, startSink } from '../sink-client.js';
import { bullmqSystem, mailroomSystem, type SystemName } from '../systems.js';
import { type Context, type Figures, type RunResult, rotate } from './types.js';

/** Seed nodes of the Redis Cluster of the cluster part, e.g. `127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102`. */
export const CLUSTER_ENV = 'MAILROOM_BENCH_CLUSTER';
/** MAILROOM_SHARDS of the cluster part's drains. */
const CLUSTER_SHARDS = [1, 3] as const;
/** Worker processes of every drain (concurrency: --concurrency), as in drain-1. */
const WORKER_PROCESSES = 1;
/** How long the workers' background traffic is sampled, idle, just before each measured drain. */
const IDLE_SAMPLE_MS = 2000;
/** With 3 shards, each master's share of the commands counts as "about a third" within these bounds. */
const THIRD = { min: 0.25, max: 0.42 } as const;
/** The environment variable that carries the driver's request (and marks a process as the driver). */
const REQUEST_ENV = 'MAILROOM_BENCH_CAPACITY_REQUEST';
const DRIVER = fileURLToPath(import.meta.url);

/** What the harness asks of the driver for one run. */
interface DriverRequest {
  run: number;
  messages: number;
  warmup: number;
  chunk: number;
  concurrency: number;
  workerNodeArgs: string[];
  /** Seed nodes of a Redis Cluster ({@link CLUSTER_ENV}), or null: no cluster part. */
  cluster: string | null;
}

type DriverEvent =
  | { type: 'log'; text: string }
  | { type: 'result'; result: RunResult }
  | { type: 'error'; message: string };

/** A Redis server whose counters a drain reads: the private one, or one master of a cluster. */
interface MeasuredNode {
  /** `private`, or `master<port>`. */
  label: string;
  redis: Redis;
}

/** What a system under test offers a measured drain. */
interface DrainTarget {
  enqueue(tag: string, from: number, count: number): Promise<void>;
  /** The BullMQ queues to wait on until every job settled (one per shard). */
  queues: Queue[];
  /** CPU ms of the worker processes so far. */
  workersCpuMs(): number;
}

/** One node's part in a measured drain. */
interface NodeMeasurement {
  label: string;
  /** Counters moved from the first enqueue until every job settled. */
  drain: ServerCounters;
  /** Counters moved during the idle sample just before (the workers' background traffic). */
  idle: ServerCounters;
  idleSeconds: number;
  /** DBSIZE before the drain and once half the messages were accepted by the sink. */
  keysBefore: number;
  keysMidDrain: number;
}

/** One measured drain. */
interface CapacityDrain {
  messages: number;
  /** Messages per second, first enqueue to last acceptance at the sink. */
  rate: number;
  /** First enqueue to every job settled: the window of the counters, seconds. */
  seconds: number;
  enqueueMs: number;
  workerCpuMs: number;
  /** Messages the sink accepted beyond `messages` (duplicates: must be 0). */
  extraMessages: number;
  nodes: NodeMeasurement[];
}

// ---------------------------------------------------------------------------------------------------
// Harness side: the private redis-server and the driver process.

/** A free TCP port on 127.0.0.1 (free when asked: the server that takes it may still lose a race). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

interface PrivateRedis {
  port: number;
  url: string;
  version: string;
  /** Shuts the server down and removes its directory. */
  stop(): Promise<void>;
}

/** Starts `redis-server` on `port` without persistence and resolves once it accepts connections. */
async function startRedisServer(port: number): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'mailroom-capacity-redis-'));
  const output = new Tail();
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
  let failure: Error | undefined;
  child.once('error', (error) => {
    failure =
      (error as NodeJS.ErrnoException).code === 'ENOENT'
        ? new Error(
            'redis-server is not on the PATH: the capacity scenario starts a private one (Debian: redis-server)',
          )
        : error;
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let running = true;
  void exited.then(() => {
    running = false;
  });
  const kill = () => child.kill('SIGKILL');
  process.on('exit', kill);
  const stop = async () => {
    if (running) {
      child.kill('SIGTERM');
      const timer = setTimeout(kill, 5000);
      await exited;
      clearTimeout(timer);
    }
    process.off('exit', kill);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = monoMs() + 10_000;
  while (!output.toString().includes('Ready to accept connections')) {
    if (failure || !running || monoMs() > deadline) {
      await stop();
      throw failure ?? new Error(`redis-server on port ${port} did not start:\n${output}`);
    }
    await sleep(20);
  }
  const version = /version=([\d.]+)/.exec(output.toString())?.[1] ?? 'unknown';
  return { port, url: `redis://127.0.0.1:${port}`, version, stop };
}

/** A private redis-server on a free port (another free port when a race took the first). */
async function startPrivateRedis(): Promise<PrivateRedis> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRedisServer(await freePort());
    } catch (error) {
      if (attempt >= 3 || !String(error).includes('Address already in use')) throw error;
    }
  }
}

/** Runs the driver on the private server for one run and resolves with what it measured. */
async function runDriver(
  redisUrl: string,
  request: DriverRequest,
  log: (text: string) => void,
): Promise<RunResult> {
  const output = new Tail();
  const child = fork(DRIVER, [], {
    execArgv: process.execArgv,
    env: { ...process.env, REDIS_URL: redisUrl, [REQUEST_ENV]: JSON.stringify(request) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
  // SIGTERM, not SIGKILL: the driver stops its workers on the way out (killed, it would orphan them).
  const terminate = () => child.kill('SIGTERM');
  process.on('exit', terminate);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    return await new Promise<RunResult>((resolve, reject) => {
      child.on('message', (event: DriverEvent) => {
        if (event.type === 'log') log(event.text);
        else if (event.type === 'result') resolve(event.result);
        else reject(new Error(`${event.message}\n${output}`));
      });
      child.once('exit', (code, signal) =>
        reject(
          new Error(`the capacity driver exited (${signal ?? `code ${code}`}) before reporting\n${output}`),
        ),
      );
    });
  } finally {
    // It exits by itself once it has answered; one that does not is stopped.
    const timer = setTimeout(terminate, 20_000);
    const killer = setTimeout(() => child.kill('SIGKILL'), 40_000);
    await exited;
    clearTimeout(timer);
    clearTimeout(killer);
    process.off('exit', terminate);
  }
}

/** The capacity scenario: one run on a private redis-server of its own (and the cluster, when given). */
export async function capacityScenario(context: Context, run: number): Promise<RunResult> {
  const { config } = context;
  const cluster = process.env[CLUSTER_ENV]?.trim() || null;
  if (run === 0 && !cluster) {
    context.log(`  cluster part skipped: set ${CLUSTER_ENV} to a Redis Cluster's seed nodes to run it`);
  }
  const server = await startPrivateRedis();
  context.log(`  private redis-server ${server.version} on port ${server.port} (no persistence)`);
  try {
    const result = await runDriver(
      server.url,
      {
        run,
        messages: config.capacityMessages,
        warmup: config.warmupMessages,
        chunk: config.chunk,
        concurrency: config.concurrency,
        workerNodeArgs: config.workerNodeArgs,
        cluster,
      },
      context.log,
    );
    return { figures: result.figures, details: { ...result.details, privateRedisVersion: server.version } };
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------------------------------------------
// Driver side: the drains and their counters.

/** Warms the target up, samples the idle background, then drains `messages` and reads every node's counters. */
async function measuredDrain(
  sink: Sink,
  target: DrainTarget,
  nodes: readonly MeasuredNode[],
  request: DriverRequest,
  tag: string,
): Promise<CapacityDrain> {
  const { messages, warmup } = request;
  await sink.reset();
  if (warmup > 0) {
    await target.enqueue(`warm-${tag}`, 0, warmup);
    await sink.waitFor(warmup);
    for (const queue of target.queues) await waitForIdle(queue);
  }
  await sink.reset();
  const snapshot = () => Promise.all(nodes.map((node) => serverCounters(node.redis)));
  const keysBefore = await Promise.all(nodes.map((node) => node.redis.dbsize()));
  const idleStart = await snapshot();
  const idleStartedAt = monoMs();
  await sleep(IDLE_SAMPLE_MS);
  const before = await snapshot();
  const idleSeconds = (monoMs() - idleStartedAt) / 1000;

  const cpuBefore = target.workersCpuMs();
  const startedAt = monoMs();
  // The keys a drain in progress holds. The sink is asked, not Redis: polling Redis would add commands.
  const midDrain = sink
    .waitFor(Math.ceil(messages / 2))
    .then(() => Promise.all(nodes.map((node) => node.redis.dbsize())));
  midDrain.catch(() => {}); // awaited below; a stall fails the full wait first
  await target.enqueue(tag, 0, messages);
  const enqueueMs = monoMs() - startedAt;
  const counters = await sink.waitFor(messages);
  // Every message was accepted; the last jobs are completing. A few polls, not one per 25 ms of the drain.
  for (const queue of target.queues) await waitForIdle(queue);
  const after = await snapshot();
  const seconds = (monoMs() - startedAt) / 1000;
  const keysMidDrain = await midDrain;
  const workerCpuMs = target.workersCpuMs() - cpuBefore;
  const extraMessages = (await sink.report()).messages - messages;
  return {
    messages,
    rate: (messages * 1000) / (counters.lastAt - startedAt),
    seconds,
    enqueueMs,
    workerCpuMs,
    extraMessages,
    nodes: nodes.map((node, index) => ({
      label: node.label,
      drain: counterDelta(before[index] as ServerCounters, after[index] as ServerCounters),
      idle: counterDelta(idleStart[index] as ServerCounters, before[index] as ServerCounters),
      idleSeconds,
      keysBefore: keysBefore[index] as number,
      keysMidDrain: keysMidDrain[index] as number,
    })),
  };
}

/** mailroom or baseline (b), as drain-1 runs them, on the private server (the driver's REDIS_URL). */
async function privateDrain(
  name: SystemName,
  request: DriverRequest,
  sink: Sink,
  admin: Redis,
): Promise<CapacityDrain> {
  const tag = runTag(`capacity-${name}`, request.run);
  const system =
    name === 'mailroom'
      ? mailroomSystem(`bench-${tag}`, sink, admin, request.workerNodeArgs)
      : bullmqSystem(`bench-${tag}`, sink);
  try {
    await system.startWorkers(WORKER_PROCESSES, request.concurrency);
    return await measuredDrain(
      sink,
      {
        enqueue: (runTagText, from, count) => system.enqueue(runTagText, from, count, request.chunk),
        queues: [system.queue],
        workersCpuMs: () => system.workersCpuMs(),
      },
      [{ label: 'private', redis: admin }],
      request,
      tag,
    );
  } finally {
    await system.close(admin);
  }
}

/** A master of the cluster: where it listens and the slot ranges it serves. */
interface ClusterMaster {
  host: string;
  port: number;
  slots: [number, number][];
}

/** Options of every connection to one node of `spec`'s cluster. */
function nodeOptions(spec: ClusterSpec): RedisOptions {
  return {
    maxRetriesPerRequest: 1,
    ...(spec.username === undefined ? {} : { username: spec.username }),
    ...(spec.password === undefined ? {} : { password: spec.password }),
  };
}

/** The cluster's masters now, from CLUSTER NODES of the first seed that answers. */
async function clusterMasters(spec: ClusterSpec): Promise<ClusterMaster[]> {
  const errors: string[] = [];
  for (const seed of spec.seeds) {
    const probe = new Redis({ ...nodeOptions(spec), host: seed.host, port: seed.port, lazyConnect: true });
    probe.on('error', () => {});
    try {
      await probe.connect();
      const masters: ClusterMaster[] = [];
      for (const line of String(await probe.call('CLUSTER', 'NODES')).split('\n')) {
        const [, address, flags, , , , , , ...slots] = line.trim().split(' ');
        const roles = (flags ?? '').split(',');
        if (!roles.includes('master') || roles.includes('fail') || slots.length === 0) continue;
        // `host:port@busport[,hostname]`; the node answering may leave its own host out.
        const match = /^(.*):(\d+)@/.exec(address ?? '');
        if (!match) continue;
        masters.push({
          host: match[1] || seed.host,
          port: Number(match[2]),
          slots: slots
            .filter((range) => !range.startsWith('[')) // slots being migrated
            .map((range) => {
              const [from, to] = range.split('-').map(Number) as [number, number?];
              return [from, to ?? from];
            }),
        });
      }
      return masters.sort((a, b) => a.port - b.port);
    } catch (error) {
      errors.push(`${seed.host}:${seed.port}: ${(error as Error).message}`);
    } finally {
      probe.disconnect();
    }
  }
  throw new Error(`no seed node of ${CLUSTER_ENV} answered CLUSTER NODES (${errors.join('; ')})`);
}

/** Keys removed on the way out of an interrupted driver (the cluster is not private: leave it clean). */
const openCleanups = new Set<() => Promise<void>>();

/** Runs `body` with extra environment variables (seen by the worker processes it spawns). */
async function withEnv<T>(env: Record<string, string>, body: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((name) => [name, process.env[name]]));
  Object.assign(process.env, env);
  try {
    return await body();
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

/**
 * mailroom through the cluster: the producer here with `shards`, one `mailroom worker` with
 * REDIS_CLUSTER_NODES and MAILROOM_SHARDS; counters read on every master.
 */
async function clusterDrain(
  seeds: string,
  shards: number,
  request: DriverRequest,
  sink: Sink,
): Promise<{
  drain: CapacityDrain;
  layout: { index: number; prefix: string; slot: number; master: number }[];
}> {
  const spec = parseClusterNodes(seeds, CLUSTER_ENV);
  const masters = await clusterMasters(spec);
  const nodes: MeasuredNode[] = masters.map((master) => {
    const redis = new Redis({ ...nodeOptions(spec), host: master.host, port: master.port });
    redis.on('error', () => {}); // a master that goes away fails the command that needed it
    return { label: `master${master.port}`, redis };
  });
  const harness = new Cluster(
    spec.seeds.map(({ host, port }) => ({ host, port })),
    { redisOptions: nodeOptions(spec) },
  );
  const tag = runTag(`capacity-cluster${shards}`, request.run);
  const queueName = `bench-${tag}`;
  const producer = createProducer({
    redis: { cluster: seeds },
    queue: queueName,
    shards,
    logger: pino({ name: 'bench-producer', level: 'warn' }),
  });
  const { layout } = producer;
  const queues = layout.shards.map(
    (shard) => new Queue(queueName, { connection: harness, prefix: shard.prefix }),
  );
  const workers: WorkerProcess[] = [];
  const removeQueueKeys = async () => {
    for (const node of nodes) {
      for (const shard of layout.shards) await removeKeys(node.redis, shard.keys.base);
    }
  };
  openCleanups.add(removeQueueKeys);
  try {
    workers.push(
      await withEnv({ REDIS_CLUSTER_NODES: seeds, MAILROOM_SHARDS: String(shards) }, () =>
        startMailroomWorker({
          queue: queueName,
          concurrency: request.concurrency,
          sink,
          nodeArgs: request.workerNodeArgs,
        }),
      ),
    );
    const drain = await measuredDrain(
      sink,
      {
        async enqueue(runTagText, from, count) {
          for (let start = from; start < from + count; start += request.chunk) {
            const end = Math.min(from + count, start + request.chunk);
            const messages = [];
            for (let index = start; index < end; index++) messages.push(newsletterMessage(runTagText, index));
            await producer.enqueue(messages);
          }
        },
        queues,
        workersCpuMs: () => workers.reduce((sum, worker) => sum + (worker.cpuMs() ?? 0), 0),
      },
      nodes,
      request,
      tag,
    );
    // Another client's failover moves counters from one node to another: such a drain tells nothing.
    const mastersAfter = await clusterMasters(spec);
    const describe = (list: ClusterMaster[]) =>
      list.map((master) => `${master.port}:${master.slots.join(' ')}`).join(', ');
    if (describe(mastersAfter) !== describe(masters)) {
      throw new Error(
        `the cluster's masters changed during the drain (${describe(masters)} -> ${describe(mastersAfter)})`,
      );
    }
    const masterOf = (slot: number) =>
      masters.find((master) => master.slots.some(([from, to]) => slot >= from && slot <= to))?.port ?? 0;
    return {
      drain,
      layout: layout.shards.map((shard) => ({
        index: shard.index,
        prefix: shard.prefix,
        slot: shard.slot,
        master: masterOf(shard.slot),
      })),
    };
  } finally {
    // Always released, in reverse order of acquisition, whatever failed above.
    await Promise.allSettled(workers.map((worker) => worker.stop()));
    await Promise.allSettled(queues.map((queue) => queue.close()));
    await producer.close().catch(() => {});
    await removeQueueKeys().catch(() => {});
    openCleanups.delete(removeQueueKeys);
    harness.disconnect();
    for (const node of nodes) node.redis.disconnect();
  }
}

const SCRIPT_COMMANDS = ['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro'];

/** The figures of one drain under `prefix` (`mailroom`, `bullmq`, `cluster3`...), per message of the drain. */
function drainFigures(prefix: string, drain: CapacityDrain): Figures {
  const m = drain.messages;
  const total = sumCounters(drain.nodes.map((node) => node.drain));
  const idle = sumCounters(drain.nodes.map((node) => node.idle));
  const idleSeconds = drain.nodes[0]?.idleSeconds ?? Number.NaN;
  const busiest = Math.max(...drain.nodes.map((node) => node.drain.cpuSeconds));
  const figures: Figures = {
    [`${prefix}.commandsPerMessage`]: total.commands / m,
    [`${prefix}.scriptCallsPerMessage`]:
      SCRIPT_COMMANDS.reduce((sum, name) => sum + (total.commandStats[name]?.calls ?? 0), 0) / m,
    [`${prefix}.redisCpuUsPerMessage`]: (total.cpuSeconds * 1e6) / m,
    [`${prefix}.redisMainThreadCpuUsPerMessage`]: (total.mainThreadCpuSeconds * 1e6) / m,
    // Derived, not measured: 1 s of one core over the busiest node's CPU per message.
    [`${prefix}.capacityRate`]: 1e6 / ((busiest * 1e6) / m),
    [`${prefix}.netInBytesPerMessage`]: total.netInputBytes / m,
    [`${prefix}.netOutBytesPerMessage`]: total.netOutputBytes / m,
    [`${prefix}.rate`]: drain.rate,
    [`${prefix}.seconds`]: drain.seconds,
    [`${prefix}.redisBusyPercent`]: (100 * busiest) / drain.seconds,
    [`${prefix}.workerCpuUsPerMessage`]: (drain.workerCpuMs * 1000) / m,
    [`${prefix}.keysMidDrain`]: drain.nodes.reduce((sum, node) => sum + node.keysMidDrain, 0),
    [`${prefix}.idleCommandsPerSecond`]: idle.commands / idleSeconds,
    // The share of the drain's commands that background traffic at the idle rate would account for.
    [`${prefix}.idleShareOfCommands`]: ((idle.commands / idleSeconds) * drain.seconds) / total.commands,
    [`${prefix}.extraMessages`]: drain.extraMessages,
  };
  for (const [command, { calls, usec }] of Object.entries(total.commandStats)) {
    figures[`${prefix}.cmd.${command}.callsPerMessage`] = calls / m;
    figures[`${prefix}.cmd.${command}.usecPerMessage`] = usec / m;
  }
  if (drain.nodes.length > 1) {
    const commandsShares: number[] = [];
    const cpuShares: number[] = [];
    for (const node of drain.nodes) {
      const commandsShare = node.drain.commands / total.commands;
      const cpuShare = node.drain.cpuSeconds / total.cpuSeconds;
      commandsShares.push(commandsShare);
      cpuShares.push(cpuShare);
      Object.assign(figures, {
        [`${prefix}.${node.label}.keysMidDrain`]: node.keysMidDrain,
        [`${prefix}.${node.label}.keysBefore`]: node.keysBefore,
        [`${prefix}.${node.label}.commands`]: node.drain.commands,
        [`${prefix}.${node.label}.cpuMs`]: node.drain.cpuSeconds * 1000,
        [`${prefix}.${node.label}.commandsShare`]: commandsShare,
        [`${prefix}.${node.label}.cpuShare`]: cpuShare,
        [`${prefix}.${node.label}.cpuUsPerMessage`]: (node.drain.cpuSeconds * 1e6) / m,
      });
    }
    figures[`${prefix}.masters`] = drain.nodes.length;
    figures[`${prefix}.maxCommandsShare`] = Math.max(...commandsShares);
    figures[`${prefix}.minCommandsShare`] = Math.min(...commandsShares);
    figures[`${prefix}.maxCpuShare`] = Math.max(...cpuShares);
    figures[`${prefix}.minCpuShare`] = Math.min(...cpuShares);
  }
  return figures;
}

/** Figures compared mailroom / baseline (b) run by run. */
const RATIO_KEYS = [
  'commandsPerMessage',
  'scriptCallsPerMessage',
  'redisCpuUsPerMessage',
  'capacityRate',
  'netInBytesPerMessage',
  'netOutBytesPerMessage',
  'keysMidDrain',
] as const;

function summary(prefix: string, figures: Figures): string {
  const get = (key: string) => figures[`${prefix}.${key}`];
  return (
    `    ${format(get('commandsPerMessage'), 2)} commands/message (${format(get('scriptCallsPerMessage'), 3)} scripts), ` +
    `Redis CPU ${format(get('redisCpuUsPerMessage'), 1)} µs/message (busiest node ${format(get('redisBusyPercent'))} % busy ` +
    `at ${format(get('rate'))} msg/s); derived ceiling ${format(get('capacityRate'))} msg/s`
  );
}

/** Every measurement of one run: mailroom and (b) on the private server, then the cluster part. */
async function measure(
  request: DriverRequest,
  sink: Sink,
  admin: Redis,
  log: (text: string) => void,
): Promise<RunResult> {
  const figures: Figures = {};
  const details: Record<string, unknown> = {};
  for (const name of rotate(['mailroom', 'bullmq'] as const, request.run)) {
    log(
      `  ${name}: ${request.messages} messages, ${WORKER_PROCESSES} process x ${request.concurrency}, private Redis`,
    );
    const drain = await privateDrain(name, request, sink, admin);
    Object.assign(figures, drainFigures(name, drain));
    details[name] = drain;
    log(summary(name, figures));
  }
  for (const key of RATIO_KEYS) {
    figures[`ratio.${key}`] = (figures[`mailroom.${key}`] as number) / (figures[`bullmq.${key}`] as number);
  }
  if (request.cluster) {
    for (const shards of rotate(CLUSTER_SHARDS, request.run)) {
      const prefix = `cluster${shards}`;
      log(
        `  mailroom on the cluster (${request.cluster}), MAILROOM_SHARDS=${shards}: ${request.messages} messages`,
      );
      let measured: Awaited<ReturnType<typeof clusterDrain>>;
      try {
        measured = await clusterDrain(request.cluster, shards, request, sink);
      } catch (error) {
        // The cluster is shared (tests fail masters over): its part fails alone, the private figures stand.
        const message = error instanceof Error ? error.message : String(error);
        log(`    cluster part FAILED: ${message.split('\n')[0]}`);
        figures['cluster.failed'] = 1;
        details.clusterError = message;
        break;
      }
      const { drain, layout } = measured;
      Object.assign(figures, drainFigures(prefix, drain));
      details[prefix] = { ...drain, layout };
      figures[`ratio.${prefix}.capacityRateVsSingle`] =
        (figures[`${prefix}.capacityRate`] as number) / (figures['mailroom.capacityRate'] as number);
      log(summary(prefix, figures));
      log(
        `    ${drain.nodes
          .map(
            (node) =>
              `:${node.label.replace('master', '')} ${format(100 * (figures[`${prefix}.${node.label}.commandsShare`] ?? Number.NaN))} % of commands`,
          )
          .join(', ')}`,
      );
    }
    for (const shards of CLUSTER_SHARDS) {
      const rate = figures[`cluster${shards}.capacityRate`];
      const one = figures['cluster1.capacityRate'];
      if (shards > 1 && rate !== undefined && one !== undefined) {
        figures[`ratio.cluster${shards}.capacityRateVsCluster1`] = rate / one;
      }
    }
  }
  return { figures, details };
}

/** The driver process: measures one run and sends the result to the harness. */
async function drive(): Promise<void> {
  const request = JSON.parse(process.env[REQUEST_ENV] as string) as DriverRequest;
  // Nothing exported in the harness's shell may send this driver's single-node workers elsewhere.
  for (const name of [REQUEST_ENV, 'REDIS_CLUSTER_NODES', 'MAILROOM_SHARDS']) delete process.env[name];
  const send = (event: DriverEvent) =>
    new Promise<void>((resolve) => {
      if (!process.send) resolve();
      else process.send(event, undefined, undefined, () => resolve());
    });
  const leave = (code: number) => {
    killAll();
    const cleanups = [...openCleanups].map((cleanup) => cleanup().catch(() => {}));
    const timer = setTimeout(() => process.exit(code), 3000);
    void Promise.all(cleanups).then(() => {
      clearTimeout(timer);
      process.exit(code);
    });
  };
  process.once('SIGINT', () => leave(130));
  process.once('SIGTERM', () => leave(143));
  process.once('disconnect', () => leave(1));

  const sink = await startSink();
  const admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    await send({
      type: 'result',
      result: await measure(request, sink, admin, (text) => void send({ type: 'log', text })),
    });
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    await send({ type: 'error', message: error instanceof Error ? error.message : String(error) });
  } finally {
    await sink.stop();
    admin.disconnect();
  }
  process.exit(0);
}

if (process.argv[1] === DRIVER && process.env[REQUEST_ENV]) await drive();

// ---------------------------------------------------------------------------------------------------
// The printed table.

function format(value: number | undefined, digits = 0): string {
  if (value === undefined || Number.isNaN(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const percent = (value: number | undefined, digits = 0) =>
  value === undefined ? 'n/a' : `${format(100 * value, digits)} %`;

/** The most called commands of either system, and those with the most Redis time, by their medians. */
function topCommands(medians: Record<string, number>, prefixes: readonly string[]): string[] {
  const names = new Set<string>();
  for (const prefix of prefixes) {
    const stats = Object.entries(medians).flatMap(([key, value]) => {
      const match = new RegExp(`^${prefix}\\.cmd\\.(.+)\\.(callsPerMessage|usecPerMessage)$`).exec(key);
      return match ? [{ name: match[1] as string, kind: match[2] as string, value }] : [];
    });
    const top = (kind: string, count: number) =>
      stats
        .filter((stat) => stat.kind === kind)
        .sort((a, b) => b.value - a.value)
        .slice(0, count)
        .map((stat) => stat.name);
    for (const name of [...top('callsPerMessage', 5), ...top('usecPerMessage', 3)]) names.add(name);
  }
  const weight = (name: string) =>
    Math.max(...prefixes.map((prefix) => medians[`${prefix}.cmd.${name}.callsPerMessage`] ?? 0));
  return [...names].sort((a, b) => weight(b) - weight(a));
}

/** The table rows of the capacity scenario's medians (none when it did not run). */
export function capacityRows(config: BenchConfig, medians: Record<string, number> | undefined): Row[] {
  if (!medians) return [];
  const rows: Row[] = [];
  const row = (metric: string, mailroom: string, baseline = '', ratio = '', target = '', met = '') =>
    rows.push({ metric, mailroom, baseline, ratio, target, met });
  const get = (key: string) => medians[key];
  const times = (key: string) => `${format(get(`ratio.${key}`), 2)}x`;
  const size = config.capacityMessages;
  const n = size >= 1000 ? `${size / 1000}k` : String(size);
  const both = (key: string, digits: number) =>
    [format(get(`mailroom.${key}`), digits), format(get(`bullmq.${key}`), digits)] as const;

  if (get('mailroom.commandsPerMessage') !== undefined) {
    row(
      `Redis commands/message, drain ${n}, ${WORKER_PROCESSES} proc x ${config.concurrency}, private Redis, vs (b)`,
      ...both('commandsPerMessage', 2),
      times('commandsPerMessage'),
      'report',
      'n/a',
    );
    row(
      '  of which script calls (EVALSHA/EVAL); commands inside scripts count too',
      ...both('scriptCallsPerMessage', 3),
      times('scriptCallsPerMessage'),
    );
    row(
      'Redis CPU µs/message (used_cpu_user + used_cpu_sys) vs (b)',
      ...both('redisCpuUsPerMessage', 1),
      times('redisCpuUsPerMessage'),
      'report',
      'n/a',
    );
    row(
      '  => msg/s one Redis node could carry, derived: 1e6 µs / CPU µs per message',
      ...both('capacityRate', 0),
      times('capacityRate'),
      'derived, not measured',
    );
    row(
      '  Redis network B/message, in / out',
      `${format(get('mailroom.netInBytesPerMessage'))} / ${format(get('mailroom.netOutBytesPerMessage'))}`,
      `${format(get('bullmq.netInBytesPerMessage'))} / ${format(get('bullmq.netOutBytesPerMessage'))}`,
      `${times('netInBytesPerMessage')} / ${times('netOutBytesPerMessage')}`,
    );
    row(
      '  drain msg/s; Redis busy, % of one core, during it',
      `${format(get('mailroom.rate'))}; ${format(get('mailroom.redisBusyPercent'))} %`,
      `${format(get('bullmq.rate'))}; ${format(get('bullmq.redisBusyPercent'))} %`,
    );
    row('  keys in Redis mid-drain (DBSIZE)', ...both('keysMidDrain', 0), times('keysMidDrain'));
    for (const name of topCommands(medians, ['mailroom', 'bullmq'])) {
      const cell = (prefix: string) => {
        const calls = get(`${prefix}.cmd.${name}.callsPerMessage`);
        return calls === undefined
          ? '0'
          : `${format(calls, 3)} (${format(get(`${prefix}.cmd.${name}.usecPerMessage`), 2)} µs)`;
      };
      // commandstats usec is time spent in the command (a script's includes what it calls), not CPU.
      row(`  ${name.toUpperCase()} calls/message (µs in it per message)`, cell('mailroom'), cell('bullmq'));
    }
    row(
      '  idle traffic before the drain, commands/s (share of the drain at that rate)',
      `${format(get('mailroom.idleCommandsPerSecond'), 1)} (${percent(get('mailroom.idleShareOfCommands'), 2)})`,
      `${format(get('bullmq.idleCommandsPerSecond'), 1)} (${percent(get('bullmq.idleShareOfCommands'), 2)})`,
    );
    const extra = (get('mailroom.extraMessages') ?? 0) + (get('bullmq.extraMessages') ?? 0);
    if (extra !== 0) {
      row('  DUPLICATES at the sink (capacity)', ...both('extraMessages', 0), '', '0', 'NO');
    }
  }

  if (get('cluster.failed') !== undefined) {
    row(
      'Cluster part (failed in some runs: see the log; their cluster figures are left out)',
      'failed',
      '',
      '',
      '',
      'NO',
    );
  }
  for (const shards of CLUSTER_SHARDS) {
    const prefix = `cluster${shards}`;
    if (get(`${prefix}.commandsPerMessage`) === undefined) continue;
    row(
      `Cluster, mailroom MAILROOM_SHARDS=${shards}: commands/msg | Redis CPU µs/msg (all masters) | msg/s`,
      `${format(get(`${prefix}.commandsPerMessage`), 2)} | ${format(get(`${prefix}.redisCpuUsPerMessage`), 1)} | ` +
        format(get(`${prefix}.rate`)),
    );
    // Other clients of a shared cluster show here first: traffic while the bench's workers sat idle.
    row(
      '  idle traffic before the drain, commands/s, all masters (share of the drain at that rate)',
      `${format(get(`${prefix}.idleCommandsPerSecond`), 1)} (${percent(get(`${prefix}.idleShareOfCommands`), 2)})`,
    );
    const labels = Object.keys(medians)
      .flatMap((key) => new RegExp(`^${prefix}\\.(master\\d+)\\.commandsShare$`).exec(key)?.[1] ?? [])
      .sort();
    for (const label of labels) {
      const share = get(`${prefix}.${label}.commandsShare`);
      row(
        `  master :${label.replace('master', '')}: keys mid-drain | commands (share) | CPU ms (share)`,
        `${format(get(`${prefix}.${label}.keysMidDrain`))} | ${format(get(`${prefix}.${label}.commands`))} (${percent(share)}) | ` +
          `${format(get(`${prefix}.${label}.cpuMs`))} (${percent(get(`${prefix}.${label}.cpuShare`))})`,
        '',
        '',
        shards === 3 ? 'about 1/3 of the commands each' : '',
        shards === 3 && share !== undefined ? (share >= THIRD.min && share <= THIRD.max ? 'yes' : 'NO') : '',
      );
    }
    // One shard against the private node shows what the cluster itself costs (replica feed, cluster
    // checks); more shards against one shard shows how the load spreads.
    const [versus, versusLabel, versusRatio] =
      shards === 1
        ? ['mailroom.capacityRate', 'private node', `${prefix}.capacityRateVsSingle`]
        : ['cluster1.capacityRate', '1 shard', `${prefix}.capacityRateVsCluster1`];
    row(
      `  => msg/s the cluster could carry, derived: 1e6 / busiest master's CPU µs/msg, vs ${versusLabel}`,
      format(get(`${prefix}.capacityRate`)),
      `${format(get(versus))} (${versusLabel})`,
      times(versusRatio),
      'derived, not measured',
    );
  }
  return rows;
}
