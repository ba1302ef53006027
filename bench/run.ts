/**
 * `pnpm bench`: mailroom against what users would otherwise write, in the same run, against the
 * same SMTP sink (its own process) with the same newsletter messages:
 *   (a) direct nodemailer: one process, pooled transport, sendMail per message;
 *   (b) plain BullMQ: one job per message (queue.addBulk), workers sending each job with nodemailer.
 * The rtt scenario adds Django's send_messages, and Postfix as a second server, behind a latency proxy.
 *
 *   pnpm bench                    every scenario, 3 runs each (figures are medians)
 *   pnpm bench --quick            small sizes, one run (about two minutes)
 *   pnpm bench drain-1 --runs 5   one scenario by name
 *   pnpm bench --profile          also CPU profiles (worker, producer, baselines)
 *   pnpm bench capacity           Redis commands/CPU per message on a private redis-server (by name only)
 *
 * Prints the machine and a table `metric | mailroom | baseline | ratio | target | met?`, and
 * writes every run's raw figures to bench/results/bench-<time>.json (git-ignored).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { median, REDIS_URL, RESULTS_DIR, ROOT, sleep } from './common.js';
import { type BenchConfig, parseConfig, type ScenarioName, usage } from './config.js';
import { killAll } from './processes.js';
import { redisVersion, removeKeys } from './redis-stats.js';
import { describeMachine, formatMachine, formatTable, type Medians, tableRows } from './report.js';
import { capacityRows, capacityScenario } from './scenarios/capacity.js';
import { delayScenario } from './scenarios/delay.js';
import { drainScenario } from './scenarios/drain.js';
import { enqueueScenario } from './scenarios/enqueue.js';
import { latencyScenario } from './scenarios/latency.js';
import { memoryScenario } from './scenarios/memory.js';
import { profileScenario } from './scenarios/profile.js';
import { rttScenario } from './scenarios/rtt.js';
import type { Context, RunResult } from './scenarios/types.js';
import { startSink } from './sink-client.js';
import { openBases } from './systems.js';

const scenarios: Record<ScenarioName, (context: Context, run: number) => Promise<RunResult>> = {
  enqueue: enqueueScenario,
  'drain-1': drainScenario(1),
  'drain-2': drainScenario(2),
  latency: latencyScenario,
  memory: memoryScenario,
  delay: delayScenario,
  rtt: rttScenario,
  profile: profileScenario,
  capacity: capacityScenario,
};

function mediansOf(runs: RunResult[]): Record<string, number> {
  const keys = new Set(runs.flatMap((run) => Object.keys(run.figures)));
  return Object.fromEntries(
    [...keys].map((key) => [
      key,
      median(runs.map((run) => run.figures[key]).filter((v): v is number => v !== undefined)),
    ]),
  );
}

async function main(config: BenchConfig): Promise<number> {
  const started = new Date();
  const say = (text: string) => process.stdout.write(`${text}\n`);
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  const machine = describeMachine(await redisVersion(redis));
  say(formatMachine(machine));
  say(
    `Mode: ${config.quick ? 'quick' : 'full'}, ${config.runs} run(s) per scenario, concurrency ${config.concurrency}, ` +
      `scenarios: ${config.scenarios.join(', ')}`,
  );
  if (config.source) process.env.BENCH_WORKER_SOURCE = '1';
  else {
    // Workers run as deployed: the built CLI (tsx alone adds ~36 MB of loader to every process).
    say('Building (pnpm build) for the worker processes...');
    const build = spawnSync('pnpm', ['build'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    if (build.status !== 0) throw new Error('pnpm build failed; run with --source to bench the sources');
  }
  const sink = await startSink();
  const context: Context = { config, sink, redis, log: say };
  const results: Partial<Record<ScenarioName, { runs: RunResult[]; medians: Record<string, number> }>> = {};
  const failed = new Map<ScenarioName, string>();
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `bench-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  // Written after every scenario, so that a long run interrupted late keeps what it measured.
  const save = (extra: Record<string, unknown> = {}) => {
    const data = {
      startedAt: started.toISOString(),
      machine,
      config,
      failed: Object.fromEntries(failed),
      scenarios: results,
      ...extra,
    };
    writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  };
  try {
    for (const name of config.scenarios) {
      const runs: RunResult[] = [];
      // One profile is enough: it is a picture of where time goes, not a figure.
      const runCount = name === 'profile' ? 1 : config.runs;
      for (let run = 0; run < runCount; run++) {
        say(`\n[${name}] run ${run + 1}/${runCount}`);
        const began = Date.now();
        try {
          runs.push(await scenarios[name](context, run));
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          say(`[${name}] FAILED: ${message}`);
          failed.set(name, message.split('\n')[0] ?? message);
          break;
        }
        say(`[${name}] run ${run + 1} took ${((Date.now() - began) / 1000).toFixed(1)} s`);
      }
      if (runs.length > 0 && !failed.has(name)) results[name] = { runs, medians: mediansOf(runs) };
      save();
    }
  } finally {
    await sink.stop();
  }

  const medians: Medians = Object.fromEntries(
    Object.entries(results).map(([name, result]) => [name, result.medians]),
  );
  const rows = [...tableRows(config, medians, failed), ...capacityRows(config, medians.capacity)];
  const finished = new Date();
  const endMachine = describeMachine(machine.redis);
  say('');
  say(formatMachine(endMachine));
  say(
    `${config.quick ? 'Quick mode (small sizes, 1 run)' : `Medians of ${config.runs} runs`}; a ratio is the median of ` +
      `the per-run ratios mailroom / baseline (each from one run), so it may differ from the ratio of the medians; ` +
      `(a) = direct nodemailer pool, (b) = plain BullMQ + nodemailer. ` +
      `Took ${((finished.getTime() - started.getTime()) / 1000).toFixed(0)} s.`,
  );
  say('');
  say(formatTable(rows));
  const profile = results.profile?.runs[0]?.details?.text;
  if (typeof profile === 'string') say(`\nProfiles (top self time):\n${profile}`);

  save({
    finishedAt: finished.toISOString(),
    machine: { ...machine, loadAverageAtEnd: endMachine.loadAverage },
    table: rows,
  });
  say(`\nRaw runs: ${file}`);
  await redis.quit();
  return failed.size > 0 ? 1 : 0;
}

let config: BenchConfig | 'help';
try {
  config = parseConfig(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n\n${usage}\n`);
  process.exit(2);
}
if (config === 'help') {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}
// Interrupted: kill the workers first (so that they write nothing more), then remove the open queues' keys.
process.once('SIGINT', () => {
  killAll();
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  const timer = setTimeout(() => process.exit(130), 5000);
  void sleep(300)
    .then(() => Promise.allSettled([...openBases].map((base) => removeKeys(redis, base))))
    .then(() => {
      clearTimeout(timer);
      process.exit(130);
    });
});
process.exit(await main(config));
