/**
 * Single-message latency when idle: one message at a time, from the enqueue call to its acceptance
 * at the sink (the sink's timestamp, same clock), with the workers already running, warmed up and
 * idle (a short pause between sends). mailroom (1 worker process) against baseline (b) (plain
 * BullMQ, 1 worker process) and, for reference, baseline (a) (sendMail on a warm pool, measured
 * from the sendMail call in its own process).
 */
import { monoMs, percentile, runTag, sleep } from '../common.js';
import { recipient } from '../newsletter.js';
import { startDirectSender } from '../processes.js';
import type { QueueSystem } from '../systems.js';
import { withSystem } from './drain.js';
import { type Context, type Figures, type RunResult, rotate } from './types.js';

const WARMUP_SENDS = 20;
const PAUSE_MS = 5;

/** Waits for the sink's acceptance of one recipient. */
function arrivals(context: Context) {
  const waiting = new Map<string, (at: number) => void>();
  context.sink.onArrival((recipient, at) => {
    waiting.get(recipient)?.(at);
    waiting.delete(recipient);
  });
  return {
    next(recipient: string, timeoutMs = 30_000): Promise<number> {
      return new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(recipient);
          reject(new Error(`no acceptance of ${recipient} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiting.set(recipient, (at) => {
          clearTimeout(timer);
          resolve(at);
        });
      });
    },
    stop: () => context.sink.onArrival(undefined),
  };
}

async function queueLatencies(
  context: Context,
  system: QueueSystem,
  tag: string,
  sends: number,
): Promise<number[]> {
  const watch = arrivals(context);
  const latencies: number[] = [];
  try {
    for (let index = 0; index < WARMUP_SENDS + sends; index++) {
      const accepted = watch.next(recipient(tag, index));
      const startedAt = monoMs();
      await system.enqueueOne(tag, index);
      const at = await accepted;
      if (index >= WARMUP_SENDS) latencies.push(at - startedAt);
      await sleep(PAUSE_MS);
    }
    return latencies;
  } finally {
    watch.stop();
  }
}

async function directLatencies(context: Context, tag: string, sends: number): Promise<number[]> {
  const watch = arrivals(context);
  const sender = await startDirectSender({
    connections: context.config.concurrency,
    port: context.sink.port,
  });
  const latencies: number[] = [];
  try {
    for (let index = 0; index < WARMUP_SENDS + sends; index++) {
      const accepted = watch.next(recipient(tag, index));
      const result = await sender.send(tag, index, 1);
      const at = await accepted;
      if (index >= WARMUP_SENDS) latencies.push(at - result.startedAt);
      await sleep(PAUSE_MS);
    }
    return latencies;
  } finally {
    watch.stop();
    await sender.stop();
  }
}

export async function latencyScenario(context: Context, run: number): Promise<RunResult> {
  const { config } = context;
  const figures: Figures = {};
  const details: Record<string, number[]> = {};
  await context.sink.reset({ notifyArrivals: true });
  for (const name of rotate(['mailroom', 'bullmq', 'direct'] as const, run)) {
    const tag = runTag(`latency-${name}`, run);
    context.log(`  ${name}: ${config.latencySends} single sends`);
    const latencies =
      name === 'direct'
        ? await directLatencies(context, tag, config.latencySends)
        : await withSystem(context, name, tag, { processes: 1, concurrency: config.concurrency }, (system) =>
            queueLatencies(context, system, tag, config.latencySends),
          );
    figures[`${name}.p50`] = percentile(latencies, 50);
    figures[`${name}.p99`] = percentile(latencies, 99);
    figures[`${name}.max`] = Math.max(...latencies);
    details[name] = latencies.map((value) => Math.round(value * 1000) / 1000);
  }
  await context.sink.reset();
  return { figures, details };
}
