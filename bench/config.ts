/** Command line of `pnpm bench`: sizes, runs, scenario selection. */
import { parseArgs } from 'node:util';

export const SCENARIOS = [
  'enqueue',
  'drain-1',
  'drain-2',
  'latency',
  'memory',
  'delay',
  'rtt',
  'profile',
  'capacity',
] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/**
 * Scenarios run when none is named. The profile runs with --profile or by name; capacity by name only,
 * since it starts a redis-server binary of its own (REDIS_URL may be a remote or containerised Redis).
 */
export const DEFAULT_SCENARIOS: readonly ScenarioName[] = SCENARIOS.filter(
  (name) => name !== 'profile' && name !== 'capacity',
);

export interface BenchConfig {
  quick: boolean;
  /** Runs per scenario; every figure is the median over them. */
  runs: number;
  scenarios: ScenarioName[];
  /** MAILROOM_CONCURRENCY of every mailroom worker (= the baseline (b) worker's concurrency). */
  concurrency: number;
  /** Messages per producer.enqueue / queue.addBulk call. */
  chunk: number;
  /** Messages enqueued by the enqueue scenario (also the N of Redis memory per waiting message). */
  enqueueMessages: number;
  /** Messages per drain. */
  drainMessages: number;
  /** Messages sent before each measured drain (workers warm, connections up). */
  warmupMessages: number;
  /** Single-message sends of the latency scenario. */
  latencySends: number;
  /** Messages of the peak-RSS drain. */
  memoryMessages: number;
  /** Messages of the reply-delay scenario, and the delay. */
  delayMessages: number;
  replyDelayMs: number;
  /** Round trips of the rtt scenario, each with its messages per connection (the same for every system). */
  rttSteps: RttStep[];
  /** Messages of each profiled drain. */
  profileMessages: number;
  /** Messages of each measured drain of the capacity scenario (Redis cost per message). */
  capacityMessages: number;
  /** Extra node flags for every `mailroom worker` process (e.g. `--max-semi-space-size=4`). */
  workerNodeArgs: string[];
  /** Run mailroom (worker CLI, senders) from source through tsx instead of the build (`pnpm build`, done first). */
  source: boolean;
}

/** Round trips (ms) the rtt scenario adds in front of each server. */
export const RTTS_MS = [1, 10, 50] as const;

/** One round trip of the rtt scenario and the messages each system sends over its one connection. */
export interface RttStep {
  rttMs: number;
  messages: number;
}

export const usage = `Usage: pnpm bench [scenario...] [options]

Scenarios: ${SCENARIOS.join(', ')} (default: all but profile and capacity)

Options:
  --quick                 small sizes, one run: finishes in about two minutes
  --runs <n>              runs per scenario, figures are medians (default 3, quick 1)
  --scenario <name>       run only this scenario (repeatable; same as naming it)
  --profile               also run the profile scenario (CPU profiles of worker, producer, baselines)
  --concurrency <n>       MAILROOM_CONCURRENCY of mailroom workers and of baseline (b) (default 2)
  --chunk <n>             messages per enqueue/addBulk call (default 1000)
  --enqueue <n> --drain <n> --latency <n> --memory <n> --delay <n> --warmup <n> --capacity <n>
                          sizes (full: 100000, 20000, 500, 100000, 1000, 200, 20000;
                          quick: 5000, 500, 50, 1500, 60, 20, 2000)
  --reply-delay <ms>      reply delay of the delay scenario (default 5)
  --rtt <a,b,c>           messages per connection of the rtt scenario at ${RTTS_MS.join(', ')} ms RTT
                          (full: 400,300,60; quick: 150,30,10)
  --worker-node-args=<a>  extra node flags for the mailroom worker processes, space-separated
  --source                run mailroom (workers, senders) from source through tsx (default: the
                          build, made with pnpm build before the first scenario, as it is deployed)
  --help

capacity starts a private redis-server (the binary on the PATH) for its drains; with
MAILROOM_BENCH_CLUSTER=<host:port,...> (seed nodes of a Redis Cluster, e.g. bash scripts/redis-cluster.sh
start) it also drains through the cluster with MAILROOM_SHARDS=1 and 3 and reports each master's share.`;

function count(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) throw new Error(`--${name} must be a positive integer`);
  return number;
}

/** `--rtt 400,300,60`: one message count per RTT of {@link RTTS_MS}, in order. */
function rttSteps(value: string | undefined, fallback: readonly number[]): RttStep[] {
  const counts =
    value === undefined ? fallback : value.split(',').map((part) => count(part.trim(), 0, 'rtt'));
  if (counts.length !== RTTS_MS.length) {
    throw new Error(
      `--rtt takes ${RTTS_MS.length} comma-separated counts, one per RTT (${RTTS_MS.join(', ')} ms)`,
    );
  }
  return RTTS_MS.map((rttMs, index) => ({ rttMs, messages: counts[index] as number }));
}

export function parseConfig(argv: string[]): BenchConfig | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string' },
      scenario: { type: 'string', multiple: true },
      profile: { type: 'boolean', default: false },
      concurrency: { type: 'string' },
      chunk: { type: 'string' },
      enqueue: { type: 'string' },
      drain: { type: 'string' },
      latency: { type: 'string' },
      memory: { type: 'string' },
      delay: { type: 'string' },
      warmup: { type: 'string' },
      capacity: { type: 'string' },
      'reply-delay': { type: 'string' },
      rtt: { type: 'string' },
      'worker-node-args': { type: 'string' },
      source: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick;
  const named = [...(values.scenario ?? []), ...positionals.filter((word) => word !== '--')];
  for (const name of named) {
    if (!(SCENARIOS as readonly string[]).includes(name)) {
      throw new Error(`unknown scenario ${JSON.stringify(name)}; choose from ${SCENARIOS.join(', ')}`);
    }
  }
  const scenarios =
    named.length > 0
      ? (named as ScenarioName[])
      : [...DEFAULT_SCENARIOS, ...(values.profile ? ['profile' as const] : [])];
  const drainMessages = count(values.drain, quick ? 500 : 20_000, 'drain');
  return {
    quick,
    runs: count(values.runs, quick ? 1 : 3, 'runs'),
    scenarios,
    concurrency: count(values.concurrency, 2, 'concurrency'),
    chunk: count(values.chunk, 1000, 'chunk'),
    enqueueMessages: count(values.enqueue, quick ? 5000 : 100_000, 'enqueue'),
    drainMessages,
    warmupMessages: count(values.warmup, quick ? 20 : 200, 'warmup'),
    latencySends: count(values.latency, quick ? 50 : 500, 'latency'),
    memoryMessages: count(values.memory, quick ? 1500 : 100_000, 'memory'),
    delayMessages: count(values.delay, quick ? 60 : 1000, 'delay'),
    replyDelayMs: count(values['reply-delay'], 5, 'reply-delay'),
    rttSteps: rttSteps(values.rtt, quick ? [150, 30, 10] : [400, 300, 60]),
    profileMessages: drainMessages,
    capacityMessages: count(values.capacity, quick ? 2000 : 20_000, 'capacity'),
    workerNodeArgs: (values['worker-node-args'] ?? '').split(' ').filter((word) => word !== ''),
    source: values.source,
  };
}
