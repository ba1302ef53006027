/**
 * End-to-end drain throughput: `count` messages from the first enqueue call (or, for baseline (a),
 * the first sendMail) to the last acceptance at the sink, with P worker processes of concurrency
 * C. mailroom (P `mailroom worker` processes, P×C SMTP connections) against baseline (a) (one
 * process, nodemailer pool of P×C connections) and baseline (b) (P plain BullMQ worker processes of
 * concurrency C, one pooled transport of C connections each). Workers are started and warmed up
 * (`warmupMessages` delivered) before the clock starts. Also measured: worker CPU per message
 * (until the queue is idle), the sink's CPU per message, worker peak RSS, and what the drain left
 * in Redis (completed work that accumulates).
 */
import { monoMs, runTag } from '../common.js';
import { startDirectSender } from '../processes.js';
import { type KeySnapshot, keySnapshot, waitForIdle } from '../redis-stats.js';
import type { SinkCounters, SinkOptions } from '../sink-client.js';
import { bullmqSystem, mailroomSystem, type QueueSystem, type SystemName } from '../systems.js';
import { type Context, type Figures, type RunResult, rotate } from './types.js';

/** What one measured drain gives. */
export interface DrainMeasurement {
  /** Messages per second, first enqueue (or sendMail) to last acceptance. */
  rate: number;
  /** Monotonic ms of the first enqueue and of the last acceptance. */
  startedAt: number;
  lastAcceptedAt: number;
  /** How long the enqueue calls took (queue systems). */
  enqueueMs: number;
  /** CPU ms of the worker processes (or of baseline (a)'s process) during the drain. */
  cpuMs: number;
  sink: SinkCounters;
  /** Peak RSS (VmHWM) of each worker process, kB. */
  peakRssKb: number[];
  residueBefore?: KeySnapshot;
  residueAfter?: KeySnapshot;
  /** Messages the sink accepted beyond `count` once everything settled (duplicates: must be 0). */
  extraMessages: number;
}

export interface DrainOptions {
  count: number;
  warmup: number;
  tag: string;
  sinkOptions?: SinkOptions;
  /** Called with the worker pids before the clock starts (e.g. to sample RSS). */
  onStart?: (pids: number[]) => void;
}

/** Warms the system up, then drains `count` messages through it and waits until every job settled. */
export async function queueDrain(
  context: Context,
  system: QueueSystem,
  options: DrainOptions,
): Promise<DrainMeasurement> {
  const { sink, redis, config } = context;
  await sink.reset(options.sinkOptions);
  if (options.warmup > 0) {
    await system.enqueue(`warm-${options.tag}`, 0, options.warmup, config.chunk);
    await sink.waitFor(options.warmup);
    await waitForIdle(system.queue);
  }
  await sink.reset(options.sinkOptions);
  const residueBefore = await keySnapshot(redis, system.base);
  options.onStart?.(system.workers.map((worker) => worker.pid));
  const cpuBefore = system.workersCpuMs();
  const startedAt = monoMs();
  await system.enqueue(options.tag, 0, options.count, config.chunk);
  const enqueueMs = monoMs() - startedAt;
  const counters = await sink.waitFor(options.count);
  await waitForIdle(system.queue);
  const cpuMs = system.workersCpuMs() - cpuBefore;
  const residueAfter = await keySnapshot(redis, system.base);
  const settled = await sink.report();
  return {
    extraMessages: settled.messages - options.count,
    rate: (options.count * 1000) / (counters.lastAt - startedAt),
    startedAt,
    lastAcceptedAt: counters.lastAt,
    enqueueMs,
    cpuMs,
    sink: counters,
    peakRssKb: system.workers.map((worker) => worker.peakRssKb() ?? Number.NaN),
    residueBefore,
    residueAfter,
  };
}

/** Baseline (a): one nodemailer process with a pool of `connections`, warmed up, then `count` sendMail. */
export async function directDrain(
  context: Context,
  connections: number,
  options: DrainOptions & { nodeArgs?: string[] },
): Promise<DrainMeasurement> {
  const { sink } = context;
  await sink.reset(options.sinkOptions);
  const sender = await startDirectSender({
    connections,
    port: sink.port,
    ...(options.nodeArgs ? { nodeArgs: options.nodeArgs } : {}),
  });
  try {
    if (options.warmup > 0) {
      await sender.send(`warm-${options.tag}`, 0, options.warmup);
      await sink.waitFor(options.warmup);
    }
    await sink.reset(options.sinkOptions);
    options.onStart?.([sender.pid]);
    const [result, counters] = await Promise.all([
      sender.send(options.tag, 0, options.count),
      sink.waitFor(options.count),
    ]);
    if (result.failed > 0) throw new Error(`baseline (a): ${result.failed} sendMail calls failed`);
    return {
      rate: (options.count * 1000) / (counters.lastAt - result.startedAt),
      startedAt: result.startedAt,
      lastAcceptedAt: counters.lastAt,
      enqueueMs: 0,
      cpuMs: result.cpuMs,
      sink: counters,
      peakRssKb: [sender.peakRssKb() ?? Number.NaN],
      extraMessages: (await sink.report()).messages - options.count,
    };
  } finally {
    await sender.stop();
  }
}

/** Creates a queue system on a queue of its own, for one measurement. */
export function makeSystem(context: Context, name: SystemName, tag: string): QueueSystem {
  return name === 'mailroom'
    ? mailroomSystem(`bench-${tag}`, context.sink, context.redis, context.config.workerNodeArgs)
    : bullmqSystem(`bench-${tag}`, context.sink);
}

/** Starts a system's workers, runs `body`, and always stops everything and removes its keys. */
export async function withSystem<T>(
  context: Context,
  name: SystemName,
  tag: string,
  workers: { processes: number; concurrency: number; nodeArgs?: string[] },
  body: (system: QueueSystem) => Promise<T>,
): Promise<T> {
  const system = makeSystem(context, name, tag);
  try {
    await system.startWorkers(workers.processes, workers.concurrency, workers.nodeArgs);
    return await body(system);
  } finally {
    await system.close(context.redis);
  }
}

function residueFigures(prefix: string, measurement: DrainMeasurement, count: number): Figures {
  const before = measurement.residueBefore;
  const after = measurement.residueAfter;
  if (!before || !after) return {};
  const grew = (group: string, field: 'keys' | 'bytes') =>
    (after.groups[group]?.[field] ?? 0) - (before.groups[group]?.[field] ?? 0);
  const jobKeys = Object.keys(after.groups)
    .filter((group) => group === 'job' || group.startsWith('job:'))
    .reduce((sum, group) => sum + grew(group, 'keys'), 0);
  return {
    [`${prefix}.residueKeys`]: after.keys - before.keys,
    [`${prefix}.residueBytesPerMessage`]: (after.bytes - before.bytes) / count,
    // Per-batch keys that stay after their job completed (mailroom's ledgers, kept an hour).
    [`${prefix}.residueLedgerKeys`]: grew('ledger', 'keys'),
    [`${prefix}.residueLedgerBytesPerMessage`]: grew('ledger', 'bytes') / count,
    [`${prefix}.residueLedgerTtlSeconds`]: after.groups.ledger?.maxTtlSeconds ?? 0,
    // BullMQ's event stream: capped (about 10,000 entries), so bounded whatever the volume.
    [`${prefix}.residueEventsBytesPerMessage`]: grew('events', 'bytes') / count,
    [`${prefix}.residueJobKeys`]: jobKeys,
  };
}

function drainFigures(prefix: string, measurement: DrainMeasurement, count: number): Figures {
  return {
    [`${prefix}.rate`]: measurement.rate,
    [`${prefix}.cpuUsPerMessage`]: (measurement.cpuMs * 1000) / count,
    [`${prefix}.sinkCpuUsPerMessage`]: (measurement.sink.cpuMs * 1000) / count,
    [`${prefix}.peakRssMb`]: Math.max(...measurement.peakRssKb) / 1024,
    [`${prefix}.connections`]: measurement.sink.connections,
    [`${prefix}.clientChunksPerMessage`]: measurement.sink.clientChunks / count,
    [`${prefix}.clientTurnsPerMessage`]: measurement.sink.clientTurns / count,
    [`${prefix}.extraMessages`]: measurement.extraMessages,
    ...residueFigures(prefix, measurement, count),
  };
}

export function drainScenario(processes: number) {
  return async (context: Context, run: number): Promise<RunResult> => {
    const { config } = context;
    const connections = processes * config.concurrency;
    const figures: Figures = {};
    const details: Record<string, unknown> = {};
    const options = (name: string) => ({
      count: config.drainMessages,
      warmup: config.warmupMessages,
      tag: runTag(`drain${processes}-${name}`, run),
    });
    for (const name of rotate(['mailroom', 'direct', 'bullmq'] as const, run)) {
      context.log(
        `  ${name}: ${config.drainMessages} messages, ${
          name === 'direct'
            ? `one process, ${connections} connections`
            : `${processes} process(es) x ${config.concurrency}`
        }`,
      );
      const measurement =
        name === 'direct'
          ? await directDrain(context, connections, options(name))
          : await withSystem(
              context,
              name,
              options(name).tag,
              { processes, concurrency: config.concurrency },
              (system) => queueDrain(context, system, options(name)),
            );
      Object.assign(figures, drainFigures(name, measurement, config.drainMessages));
      details[name] = {
        sink: measurement.sink,
        enqueueMs: measurement.enqueueMs,
        residueBefore: measurement.residueBefore,
        residueAfter: measurement.residueAfter,
      };
    }
    figures['ratio.vsDirect'] = (figures['mailroom.rate'] as number) / (figures['direct.rate'] as number);
    figures['ratio.vsBullmq'] = (figures['mailroom.rate'] as number) / (figures['bullmq.rate'] as number);
    return { figures, details };
  };
}
