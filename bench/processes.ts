/**
 * The processes a scenario runs besides the harness: mailroom workers (the `mailroom worker` CLI),
 * baseline (b)'s BullMQ workers, the direct senders (baseline (a)'s nodemailer process, mailroom's
 * backend, Django's send_messages) and latency proxies. Every one is tracked and killed if the
 * harness exits early.
 */
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { BUILT_CLI, CLI, monoMs, procCpuMs, procStatus, REDIS_URL, ROOT, sleep, Tail } from './common.js';
import type { Delays, ProxyStats } from './latency-proxy.js';
import type { ProxyEvent, ProxyRequest } from './latency-proxy-process.js';
import type { NewsletterFields } from './newsletter.js';
import type { Sink } from './sink-client.js';

const running = new Set<ChildProcess>();

/** Kills every child still running (an interrupted run). */
export function killAll(): void {
  for (const child of running) child.kill('SIGKILL');
}
process.on('exit', killAll);

/** A long-running child (worker) the harness measures. */
export interface WorkerProcess {
  readonly pid: number;
  readonly kind: 'mailroom' | 'bullmq';
  /** Output tail, for errors. */
  readonly output: Tail;
  /** Peak resident set (VmHWM) in kB so far. */
  peakRssKb(): number | undefined;
  /** CPU ms used so far. */
  cpuMs(): number | undefined;
  /** Graceful stop (SIGTERM / IPC), SIGKILL after `timeoutMs`. */
  stop(timeoutMs?: number): Promise<void>;
}

function track(child: ChildProcess, output: Tail): Promise<void> {
  running.add(child);
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
  return new Promise<void>((resolve) =>
    child.once('exit', () => {
      running.delete(child);
      resolve();
    }),
  );
}

function stopper(child: ChildProcess, exited: Promise<void>, polite: () => void) {
  return async (timeoutMs = 15_000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    polite();
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  };
}

/** Resolves once `check` is true, polling; rejects with `what` after `timeoutMs`. */
async function until(check: () => boolean, what: string, timeoutMs: number, output?: Tail): Promise<void> {
  const deadline = monoMs() + timeoutMs;
  while (!check()) {
    if (monoMs() > deadline) throw new Error(`timed out waiting for ${what}\n${output ?? ''}`);
    await sleep(20);
  }
}

export interface MailroomWorkerOptions {
  queue: string;
  concurrency: number;
  sink: Sink;
  /** Extra node flags (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** Run from source through tsx instead of the build. */
  source?: boolean;
}

/** Starts `mailroom worker` (built, or from source) with LOG_LEVEL=warn and waits for its start banner. */
export async function startMailroomWorker(options: MailroomWorkerOptions): Promise<WorkerProcess> {
  const output = new Tail();
  const child = spawn(
    process.execPath,
    (options.source ?? process.env.BENCH_WORKER_SOURCE === '1')
      ? [...(options.nodeArgs ?? []), '--conditions=source', '--import', 'tsx', CLI, 'worker']
      : [...(options.nodeArgs ?? []), BUILT_CLI, 'worker'],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        REDIS_URL,
        LOG_LEVEL: 'warn',
        EMAIL_BACKEND: 'smtp',
        EMAIL_HOST: options.sink.host,
        EMAIL_PORT: String(options.sink.port),
        MAILROOM_QUEUE: options.queue,
        MAILROOM_CONCURRENCY: String(options.concurrency),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const exited = track(child, output);
  let exitedEarly = false;
  void exited.then(() => {
    exitedEarly = true;
  });
  await until(
    () => exitedEarly || output.toString().includes('mailroom worker pid='),
    'the mailroom worker banner',
    60_000,
    output,
  );
  if (exitedEarly) throw new Error(`mailroom worker exited at start:\n${output}`);
  const pid = child.pid as number;
  return {
    pid,
    kind: 'mailroom',
    output,
    peakRssKb: () => procStatus(pid)?.VmHWM,
    cpuMs: () => procCpuMs(pid),
    stop: stopper(child, exited, () => child.kill('SIGTERM')),
  };
}

/**
 * Forks a bench script through tsx. Scripts that import @mailroom/core (newsletter.ts does) get the
 * build, or its sources under `--source` (BENCH_WORKER_SOURCE), as the workers do.
 */
function forkBench(
  script: string,
  env: Record<string, string>,
  nodeArgs: string[] = [],
): { child: ChildProcess; output: Tail; exited: Promise<void> } {
  const output = new Tail();
  const source = process.env.BENCH_WORKER_SOURCE === '1' ? ['--conditions=source'] : [];
  const child = fork(fileURLToPath(new URL(script, import.meta.url)), [], {
    cwd: ROOT,
    execArgv: [...nodeArgs, ...source, '--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  return { child, output, exited: track(child, output) };
}

function nextMessage<T extends { type: string }>(
  child: ChildProcess,
  type: string,
  output: Tail,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onMessage = (message: T) => {
      if (message.type !== type) return;
      cleanup();
      resolve(message);
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`child exited (code ${code}) before '${type}'\n${output}`));
    };
    const cleanup = () => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

export interface BullmqWorkerOptions {
  queue: string;
  concurrency: number;
  sink: Sink;
  nodeArgs?: string[];
}

/** Starts a baseline (b) worker (bench/baselines/bullmq-worker.ts) and waits until it is connected. */
export async function startBullmqWorker(options: BullmqWorkerOptions): Promise<WorkerProcess> {
  const { child, output, exited } = forkBench(
    './baselines/bullmq-worker.ts',
    {
      REDIS_URL,
      QUEUE: options.queue,
      CONCURRENCY: String(options.concurrency),
      SINK_PORT: String(options.sink.port),
    },
    options.nodeArgs,
  );
  await nextMessage(child, 'ready', output);
  const pid = child.pid as number;
  return {
    pid,
    kind: 'bullmq',
    output,
    peakRssKb: () => procStatus(pid)?.VmHWM,
    cpuMs: () => procCpuMs(pid),
    stop: stopper(child, exited, () => child.send({ type: 'stop' })),
  };
}

/** What a direct sender (baseline (a), mailroom's backend, Django) reports for one batch of sends. */
export interface DirectSendResult {
  /** Monotonic ms (the clock of monoMs()) before the first message and after the last one. */
  startedAt: number;
  finishedAt: number;
  failed: number;
  /** CPU ms of the sender process during the sends. */
  cpuMs: number;
}

/** A process that sends messages itself, without a queue, and answers once they are all sent. */
export interface DirectSender {
  readonly pid: number;
  send(tag: string, from: number, count: number): Promise<DirectSendResult>;
  peakRssKb(): number | undefined;
  /** Exits (so that a --cpu-prof profile is written). */
  stop(): Promise<void>;
}

async function startSender(
  script: string,
  env: Record<string, string>,
  nodeArgs?: string[],
): Promise<DirectSender> {
  const { child, output, exited } = forkBench(script, env, nodeArgs);
  await nextMessage(child, 'ready', output);
  const pid = child.pid as number;
  return {
    pid,
    async send(tag, from, count) {
      const reply = nextMessage<DirectSendResult & { type: string }>(child, 'sent', output);
      child.send({ type: 'send', tag, from, count });
      const { type: _type, ...result } = await reply;
      return result;
    },
    peakRssKb: () => procStatus(pid)?.VmHWM,
    stop: stopper(child, exited, () => child.send({ type: 'exit' })),
  };
}

/**
 * Baseline (a): one nodemailer process with a pooled transport of `connections` connections to
 * 127.0.0.1:`port` (the sink's, or a latency proxy's).
 */
export function startDirectSender(options: {
  connections: number;
  port: number;
  nodeArgs?: string[];
}): Promise<DirectSender> {
  return startSender(
    './baselines/nodemailer-direct.ts',
    { SINK_PORT: String(options.port), CONNECTIONS: String(options.connections) },
    options.nodeArgs,
  );
}

/**
 * mailroom without a queue (bench/mailroom-direct.ts): SmtpBackend.sendMessages to 127.0.0.1:`port`,
 * one connection per send.
 */
export function startMailroomSender(options: { port: number }): Promise<DirectSender> {
  return startSender('./mailroom-direct.ts', { SINK_PORT: String(options.port) });
}

const DJANGO_SENDER = fileURLToPath(new URL('./baselines/django-send.py', import.meta.url));

/** A Python that imports Django: the first of `python3` on the PATH and Debian's (python3-django). */
export function findDjango(): { python: string; version: string } | undefined {
  for (const python of ['python3', '/usr/bin/python3']) {
    const probe = spawnSync(python, ['-c', 'import django; print(django.get_version())'], {
      encoding: 'utf8',
    });
    if (probe.status === 0) return { python, version: probe.stdout.trim() };
  }
  return undefined;
}

/**
 * Sends `messages` with Django's send_messages over one connection to 127.0.0.1:`port`
 * (bench/baselines/django-send.py, run by `python`); resolves with what the script reports.
 */
export async function sendWithDjango(
  python: string,
  port: number,
  messages: readonly NewsletterFields[],
): Promise<DirectSendResult> {
  const output = new Tail();
  const child = spawn(python, [DJANGO_SENDER], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  const exited = track(child, output);
  child.stdin.end(JSON.stringify({ host: '127.0.0.1', port, timeout: 30, messages }));
  await exited;
  if (child.exitCode !== 0) {
    throw new Error(`the Django sender exited with code ${child.exitCode}:\n${output}`);
  }
  return JSON.parse(stdout) as DirectSendResult;
}

/** The harness's handle on a latency proxy process (latency-proxy-process.ts). */
export interface LatencyProxyProcess {
  /** Port on 127.0.0.1 to connect to instead of the target's. */
  readonly port: number;
  /** Delays for connections opened from now on; zeroes the counters. */
  configure(delays: Delays): Promise<void>;
  /** Counters and the proxy's CPU ms since the last configure. */
  report(): Promise<{ stats: ProxyStats; cpuMs: number }>;
  stop(): Promise<void>;
}

/** Starts a latency proxy process in front of `target` (no delay until configured). */
export async function startLatencyProxy(target: {
  host: string;
  port: number;
}): Promise<LatencyProxyProcess> {
  const { child, output, exited } = forkBench('./latency-proxy-process.ts', {
    TARGET_HOST: target.host,
    TARGET_PORT: String(target.port),
  });
  const { port } = await nextMessage<ProxyEvent & { type: 'listening' }>(child, 'listening', output);
  // Requests are answered in order and the harness awaits each, so the reply is the next of its type.
  const ask = <T extends ProxyEvent>(request: ProxyRequest, reply: T['type']) => {
    const answer = nextMessage<T>(child, reply, output);
    child.send(request);
    return answer;
  };
  return {
    port,
    async configure(delays) {
      await ask({ type: 'configure', ...delays }, 'configured');
    },
    async report() {
      const { stats, cpuMs } = await ask<ProxyEvent & { type: 'report' }>({ type: 'report' }, 'report');
      return { stats, cpuMs };
    },
    stop: stopper(child, exited, () => child.disconnect()),
  };
}
