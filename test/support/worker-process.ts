/**
 * Real `mailroom` processes for integration tests: the CLI from source (node + tsx), its JSON log
 * lines collected, killable with any signal.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Path of the CLI entry point (run from source). */
export const CLI = fileURLToPath(new URL('../../packages/worker/src/cli.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A JSON log line of a worker (pino). */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/** A running `mailroom` child process. */
export interface MailroomProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Parsed JSON lines from stdout so far. */
  readonly logs: LogLine[];
  /** Raw stdout and stderr so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code and signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Waits for a log line matching the predicate. */
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Waits until stderr contains text (e.g. the start banner). */
  waitForStderr(text: string, timeoutMs?: number): Promise<void>;
  kill(signal?: NodeJS.Signals): void;
}

/** Environment every spawned process gets on top of process.env. */
export function baseEnvironment(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'info', ...extra };
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete env[key];
  return env;
}

/** Spawns `mailroom <args>` from source with the given environment. */
export function spawnMailroom(args: string[], env: Record<string, string | undefined> = {}): MailroomProcess {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    env: baseEnvironment(env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let partial = '';
  const logs: LogLine[] = [];
  const listeners = new Set<() => void>();
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        // not a log line
      }
    }
    for (const listener of listeners) listener();
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
    for (const listener of listeners) listener();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      for (const listener of listeners) listener();
      resolve({ code, signal });
    });
  });
  const waitFor = (check: () => boolean, what: string, timeoutMs: number) =>
    new Promise<void>((resolve, reject) => {
      if (check()) return resolve();
      const timer = setTimeout(() => {
        listeners.delete(listener);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}\nstderr:\n${err}\nstdout tail:\n${out.slice(-2000)}`,
          ),
        );
      }, timeoutMs);
      const listener = () => {
        if (!check()) return;
        clearTimeout(timer);
        listeners.delete(listener);
        resolve();
      };
      listeners.add(listener);
    });
  return {
    child,
    pid: child.pid as number,
    logs,
    stdout: () => out,
    stderr: () => err,
    exited,
    async waitForLog(predicate, timeoutMs = 30_000) {
      await waitFor(() => logs.some(predicate), 'a log line', timeoutMs);
      return logs.find(predicate) as LogLine;
    },
    waitForStderr: (text, timeoutMs = 30_000) =>
      waitFor(() => err.includes(text), JSON.stringify(text), timeoutMs),
    kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

/** Starts a worker process and waits for its start banner. */
export async function startWorker(
  env: Record<string, string | undefined>,
  args: string[] = [],
): Promise<MailroomProcess> {
  const worker = spawnMailroom(['worker', ...args], env);
  await worker.waitForStderr('mailroom worker pid=');
  return worker;
}

/** Kills every process still running (for afterEach). */
export async function killAll(processes: Iterable<MailroomProcess>): Promise<void> {
  await Promise.all(
    [...processes].map(async (process) => {
      process.kill('SIGKILL');
      await process.exited;
    }),
  );
}

/** What a finished `mailroom` command did. */
export interface MailroomResult {
  /** Exit code (null when killed by a signal). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall-clock milliseconds from spawn to exit (for loose fail-fast bounds only). */
  durationMs: number;
}

/** Options of {@link runMailroom}. */
export interface RunOptions {
  /** Written to the command's stdin, which is then closed (default: closed at once). */
  input?: string;
  /** Kill the command (SIGKILL) and reject after this long. Default 60 s. */
  timeoutMs?: number;
  /** Called with all of stdout so far each time more arrives (to act while the command runs). */
  onOutput?: (stdout: string) => void;
}

/**
 * Runs `mailroom <args>` from source as a user would, with stdout and stderr as pipes (not a
 * terminal), to completion; resolves with its exit code and output.
 */
export async function runMailroom(
  args: string[],
  env: Record<string, string | undefined> = {},
  options: RunOptions = {},
): Promise<MailroomResult> {
  const started = Date.now();
  const command = spawnMailroom(args, env);
  command.child.stdin?.end(options.input ?? '');
  const onOutput = options.onOutput;
  if (onOutput) command.child.stdout?.on('data', () => onOutput(command.stdout()));
  // 'close', not 'exit': the output is complete only once both pipes are drained.
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    command.child.once('close', (code, signal) => resolve({ code, signal }));
  });
  return finish(closed, command.stdout, command.stderr, () => command.kill('SIGKILL'), started, {
    what: `mailroom ${args.join(' ')}`,
    timeoutMs: options.timeoutMs ?? 60_000,
  });
}

async function finish(
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
  stdout: () => string,
  stderr: () => string,
  kill: () => void,
  started: number,
  options: { what: string; timeoutMs: number },
): Promise<MailroomResult> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), options.timeoutMs);
  });
  const result = await Promise.race([exited, timedOut]);
  clearTimeout(timer);
  if (result === 'timeout') {
    kill();
    await exited;
    throw new Error(
      `${options.what} did not finish within ${options.timeoutMs} ms\nstderr:\n${stderr()}\nstdout tail:\n${stdout().slice(-2000)}`,
    );
  }
  return { ...result, stdout: stdout(), stderr: stderr(), durationMs: Date.now() - started };
}

/**
 * Runs `mailroom <args> | <reader>` in bash (e.g. `head -n 1`, which closes the pipe after one
 * line): `code` is mailroom's exit status as bash reports it (PIPESTATUS; 128 + n when killed by
 * signal n), `stdout` is what the reader printed, `stderr` is mailroom's and the reader's.
 */
export async function runMailroomIntoPipe(
  args: string[],
  reader: string,
  env: Record<string, string | undefined> = {},
  options: Omit<RunOptions, 'input'> = {},
): Promise<MailroomResult> {
  const started = Date.now();
  const command = shellCommand(args);
  const script = `${command} | ${reader}; status=\${PIPESTATUS[0]}; exit "$status"`;
  const child = spawn('bash', ['-c', script], {
    cwd: ROOT,
    env: baseEnvironment(env),
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so a timeout kills bash AND the pipeline it runs.
    detached: true,
  });
  return collectDetached(child, started, `mailroom ${args.join(' ')} | ${reader}`, options);
}

/**
 * Collects the output of a child spawned `detached` (its own process group) until it closes; a
 * timeout kills the whole group (the shell or `script` AND what it runs).
 */
function collectDetached(
  child: ChildProcess,
  started: number,
  what: string,
  options: Omit<RunOptions, 'input'>,
): Promise<MailroomResult> {
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    options.onOutput?.(out);
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  return finish(
    exited,
    () => out,
    () => err,
    () => {
      if (child.exitCode === null && child.signalCode === null)
        process.kill(-(child.pid as number), 'SIGKILL');
    },
    started,
    { what, timeoutMs: options.timeoutMs ?? 60_000 },
  );
}

/** `mailroom <args>` from source as one shell command line (for bash -c and script -c). */
function shellCommand(args: string[]): string {
  return [process.execPath, '--conditions=source', '--import', 'tsx', CLI, ...args].map(shellQuote).join(' ');
}

/** Quotes a word for `sh -c`. */
function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs `mailroom <args>` under a pseudo-terminal (util-linux `script -qfec "<command>" /dev/null`),
 * so its stdout IS a TTY, as in an interactive shell. The terminal merges stdout and stderr into
 * `stdout` (with the terminal's CRLF line endings); `stderr` holds only what `script` itself said.
 */
export async function runMailroomInTerminal(
  args: string[],
  env: Record<string, string | undefined> = {},
  options: Omit<RunOptions, 'input'> = {},
): Promise<MailroomResult> {
  const started = Date.now();
  const command = shellCommand(args);
  const child = spawn('script', ['-qfec', command, '/dev/null'], {
    cwd: ROOT,
    env: baseEnvironment({ COLUMNS: '120', LINES: '40', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so a timeout kills script AND the command it runs.
    detached: true,
  });
  return collectDetached(child, started, `mailroom ${args.join(' ')} (in a terminal)`, options);
}
