/**
 * A real Python SMTP peer for mailroom's tests: aiosmtpd (Debian's python3-aiosmtpd) on 127.0.0.1 at a
 * free port, run by `aiosmtpd-peer.py` in a child process, reporting every accepted message.
 *
 * ```ts
 * const peer = await startAiosmtpd({ auth: { username: 'u', password: 'p' } });
 * // ... send to peer.host:peer.port ...
 * const [message] = await peer.waitForMessages(1);
 * expect(message.user).toBe('u');
 * await peer.stop();
 * ```
 *
 * aiosmtpd offers neither PIPELINING nor CHUNKING, and writes each EHLO line in a separate segment:
 * it exercises a client's lock-step path. It refuses lines longer than 1000 octets (500) and data past
 * its size limit (552, after the whole message was read).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { selfSignedCertificate } from './smtp-server.js';

/**
 * Debian's interpreter, not whatever `python3` is first on PATH (a pyenv or venv one does not see
 * the python3-aiosmtpd package).
 */
const python = '/usr/bin/python3';
const script = join(dirname(fileURLToPath(import.meta.url)), 'aiosmtpd-peer.py');
const startupTimeoutMs = 15_000;
const stopTimeoutMs = 5_000;

/** Options of {@link startAiosmtpd}; every one is optional. */
export interface AiosmtpdOptions {
  /**
   * AUTH PLAIN and LOGIN are offered, on plain connections too, and this pair is the only valid one
   * (535 otherwise). AUTH stays optional. Default: AUTH not offered.
   */
  auth?: { username: string; password: string };
  /** Offer STARTTLS with {@link selfSignedCertificate} (its PEM is {@link AiosmtpdPeer.ca}). Default false. */
  starttls?: boolean;
  /** Offer SMTPUTF8 (aiosmtpd's `enable_SMTPUTF8`; without it MAIL FROM ... SMTPUTF8 gets 501). Default true. */
  smtputf8?: boolean;
  /** Maximum message size in bytes, advertised with SIZE; larger messages get 552. Default 64 MiB; 0: no limit. */
  dataSizeLimit?: number;
  /** RCPT TO addresses starting with `prefix` are refused with `code message` (e.g. 550 No such user). */
  refuseRecipients?: { prefix: string; code: number; message: string }[];
}

/** A message aiosmtpd accepted. */
export interface AiosmtpdMessage {
  /** MAIL FROM address as aiosmtpd parsed it (an empty string for the null sender). */
  from: string;
  /** RCPT TO addresses it accepted, in order. */
  to: string[];
  /** MAIL FROM parameters, upper-cased by aiosmtpd (`BODY=8BITMIME`, `SMTPUTF8`, `SIZE=123`). */
  mailOptions: string[];
  /** RCPT TO parameters of every accepted recipient, in one list (aiosmtpd keeps them so). */
  rcptOptions: string[];
  /** The message bytes as received (dot-unstuffed, CRLF line endings). */
  raw: Buffer;
  /** Whether the connection was under TLS (after STARTTLS). */
  secure: boolean;
  /** The user name the client authenticated as, if it did. */
  user: string | undefined;
}

/** A running aiosmtpd; see {@link startAiosmtpd}. */
export interface AiosmtpdPeer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** PEM certificate to trust for STARTTLS; undefined without `starttls`. */
  readonly ca: string | undefined;
  /** aiosmtpd's version (`1.4.3` on Debian 12). */
  readonly version: string;
  /** The process id of the Python server. */
  readonly pid: number;
  /** Every accepted message, in order of acceptance. */
  readonly messages: readonly AiosmtpdMessage[];
  /**
   * Resolves once at least `count` messages were accepted; rejects after `timeoutMs` (default 10 s), or
   * at once if the server exited.
   */
  waitForMessages(count: number, timeoutMs?: number): Promise<readonly AiosmtpdMessage[]>;
  /** SIGTERM (SIGKILL after 5 s), then waits for the process to exit. Idempotent. */
  stop(): Promise<void>;
}

/** One line of aiosmtpd-peer.py's stdout. */
type PeerEvent =
  | { event: 'listening'; host: string; port: number; pid: number; version: string }
  | {
      event: 'message';
      from: string;
      to: string[];
      mailOptions: string[];
      rcptOptions: string[];
      raw: string;
      secure: boolean;
      user: string | null;
    };

/**
 * Installs the Debian package `python3-aiosmtpd` when Debian's python3 cannot import aiosmtpd
 * (apt-get noninteractive; `apt-get update` only if the first attempt fails). Throws an error saying
 * what to run when it cannot (not root, no package).
 */
export function ensureAiosmtpdInstalled(): void {
  if (canImportAiosmtpd()) return;
  if (process.getuid?.() !== 0) {
    throw new Error(
      'python3-aiosmtpd is not installed and installing it needs root: run "apt-get install -y python3-aiosmtpd" as root',
    );
  }
  const run = (args: string[]) =>
    execFileSync('apt-get', args, {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      stdio: 'pipe',
    });
  // Another test file may be installing at the same moment: wait for dpkg's lock instead of failing.
  const install = ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '-q', 'python3-aiosmtpd'];
  try {
    try {
      run(install);
    } catch {
      // The package lists may be empty or stale on a fresh machine.
      run(['-o', 'DPkg::Lock::Timeout=300', 'update', '-q']);
      run(install);
    }
  } catch (error) {
    const output = String((error as { stderr?: unknown }).stderr ?? '').trim();
    throw new Error(`apt-get install python3-aiosmtpd failed: ${output || (error as Error).message}`, {
      cause: error,
    });
  }
  if (!canImportAiosmtpd()) {
    throw new Error(`apt-get installed python3-aiosmtpd but ${python} still cannot import aiosmtpd`);
  }
}

let importable = false;

/** Whether Debian's python3 imports aiosmtpd (a yes is remembered: it costs a Python start). */
function canImportAiosmtpd(): boolean {
  if (importable || !existsSync(python)) return importable;
  try {
    execFileSync(python, ['-c', 'import aiosmtpd'], { stdio: 'ignore' });
    importable = true;
  } catch {
    // not installed (yet)
  }
  return importable;
}

/**
 * Starts aiosmtpd on 127.0.0.1 at a free port and resolves once it listens. Installs the package first
 * if needed ({@link ensureAiosmtpdInstalled}). Throws with the script's stderr when it does not start
 * within 15 s. Always `stop()` it.
 */
export async function startAiosmtpd(options: AiosmtpdOptions = {}): Promise<AiosmtpdPeer> {
  for (const rule of options.refuseRecipients ?? []) {
    if (
      !(Number.isInteger(rule.code) && rule.code >= 400 && rule.code <= 599) ||
      /[\r\n]/.test(rule.message)
    ) {
      throw new Error(
        `refuseRecipients rule ${JSON.stringify(rule)} needs a 4xx/5xx code and a one-line message`,
      );
    }
  }
  ensureAiosmtpdInstalled();
  const certificate = options.starttls ? await selfSignedCertificate() : undefined;
  // The key and certificate go to files only for as long as Python takes to load them.
  const certificateDirectory = certificate ? await mkdtemp(join(tmpdir(), 'mailroom-aiosmtpd-')) : undefined;
  try {
    let tls: { cert: string; key: string } | undefined;
    if (certificate && certificateDirectory) {
      tls = { cert: join(certificateDirectory, 'cert.pem'), key: join(certificateDirectory, 'key.pem') };
      await writeFile(tls.cert, certificate.cert);
      await writeFile(tls.key, certificate.key, { mode: 0o600 });
    }
    const settings = {
      ...(options.auth ? { auth: options.auth } : {}),
      ...(tls ? { tls } : {}),
      smtputf8: options.smtputf8 ?? true,
      dataSizeLimit: options.dataSizeLimit ?? 64 * 1024 * 1024,
      refuseRecipients: options.refuseRecipients ?? [],
    };
    return await launch(settings, certificate?.cert);
  } finally {
    if (certificateDirectory) await rm(certificateDirectory, { recursive: true, force: true });
  }
}

async function launch(settings: object, ca: string | undefined): Promise<AiosmtpdPeer> {
  // stdin stays an open pipe that we never write to: the script exits when it closes, i.e. when this
  // process is gone, however it ended (a test that forgot stop(), a runner killed on timeout).
  const child = spawn(python, [script, JSON.stringify(settings)], { stdio: ['pipe', 'pipe', 'pipe'] });
  // ...so a forgotten server must not keep this process alive either.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr])
    (stream as unknown as { unref(): void }).unref();
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-16_384);
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const hasExited = () => child.exitCode !== null || child.signalCode !== null;

  const messages: AiosmtpdMessage[] = [];
  const listeners = new Set<() => void>();
  const listening = new Promise<Extract<PeerEvent, { event: 'listening' }>>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`aiosmtpd did not listen within ${startupTimeoutMs} ms:\n${stderr}`)),
      startupTimeoutMs,
    );
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${python}: ${error.message}`, { cause: error }));
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(
        new Error(
          `aiosmtpd exited before listening (code ${child.exitCode}, signal ${child.signalCode}):\n${stderr}`,
        ),
      );
    });
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      let event: PeerEvent;
      try {
        event = JSON.parse(line) as PeerEvent;
      } catch {
        return; // not ours (a stray print)
      }
      if (event.event === 'listening') {
        clearTimeout(timer);
        resolve(event);
      } else if (event.event === 'message') {
        messages.push({
          from: event.from,
          to: event.to,
          mailOptions: event.mailOptions,
          rcptOptions: event.rcptOptions,
          raw: Buffer.from(event.raw, 'base64'),
          secure: event.secure,
          user: event.user ?? undefined,
        });
      }
      for (const listener of listeners) listener();
    });
  });
  // Wake waiters when the server dies, so they fail now instead of at their timeout.
  void exited.then(() => {
    for (const listener of listeners) listener();
  });

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (!hasExited()) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
        await exited;
        clearTimeout(timer);
      }
    })();
    return stopping;
  };

  let ready: Extract<PeerEvent, { event: 'listening' }>;
  try {
    ready = await listening;
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    host: '127.0.0.1',
    port: ready.port,
    ca,
    version: ready.version,
    pid: ready.pid,
    messages,
    waitForMessages(count, timeoutMs = 10_000) {
      if (messages.length >= count) return Promise.resolve(messages);
      return new Promise((resolve, reject) => {
        const finish = (error?: Error) => {
          clearTimeout(timer);
          listeners.delete(check);
          if (error) reject(error);
          else resolve(messages);
        };
        const timer = setTimeout(
          () =>
            finish(new Error(`Expected ${count} messages within ${timeoutMs} ms, got ${messages.length}`)),
          timeoutMs,
        );
        const check = () => {
          if (messages.length >= count) finish();
          else if (hasExited()) {
            finish(new Error(`aiosmtpd exited with ${messages.length} of ${count} messages:\n${stderr}`));
          }
        };
        listeners.add(check);
      });
    },
    stop,
  };
}
