/**
 * A private Postfix for mailroom's tests and benchmarks: its own master process, configuration, queue
 * and mail log under a fresh temp dir, listening on 127.0.0.1 at a free port. Several run side by
 * side, and none of them reads or touches the system's instance (/etc/postfix, /var/spool/postfix).
 *
 * ```ts
 * const sink = await startSmtpServer();
 * const postfix = await startPostfix({ deliverTo: { host: sink.host, port: sink.port } });
 * // ... send to postfix.host:postfix.port, with PIPELINING and CHUNKING offered ...
 * await sink.waitForMessages(1); // what Postfix relayed, as bytes
 * await postfix.stop();
 * ```
 *
 * Needs root (Postfix's master runs as root and its daemons as the `postfix` user) and the Debian
 * package `postfix`, 3.4 or later (CHUNKING, postlogd); {@link ensurePostfixInstalled} installs it.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './redis-server.js';
import { selfSignedCertificate } from './smtp-server.js';
import { waitUntil } from './wait.js';

const postfixCommand = '/usr/sbin/postfix';
const postconfCommand = '/usr/sbin/postconf';
const startupTimeoutMs = 20_000;
const stopTimeoutMs = 10_000;

/** Options of {@link startPostfix}; every one is optional. */
export interface PostfixOptions {
  /** Offer PIPELINING (RFC 2920). Default true; false adds it to `smtpd_discard_ehlo_keywords`. */
  pipelining?: boolean;
  /** Offer CHUNKING / BDAT (RFC 3030). Default true; false adds it to `smtpd_discard_ehlo_keywords`. */
  chunking?: boolean;
  /**
   * Offer STARTTLS with {@link selfSignedCertificate} (valid for `localhost` and `127.0.0.1`; its PEM
   * is {@link PostfixPeer.ca}). Default false: plain only.
   */
  starttls?: boolean;
  /** `message_size_limit` in bytes, advertised with SIZE. Default 64 MiB (a 20 MB attachment passes). */
  messageSizeLimit?: number;
  /**
   * Recipients refused at RCPT TO, through `check_recipient_access regexp:`: `pattern` is the left
   * side of a Postfix regexp table (`/^bounce-/`, matched against the whole address), `reply` the
   * SMTP reply (`550 5.1.1 No such user`, `450 4.2.0 Try later`). Default: every recipient accepted.
   */
  refuseRecipients?: { pattern: string; reply: string }[];
  /**
   * Relay every accepted message to this SMTP server (e.g. a test smtp-server, to read the bytes
   * Postfix sends on: its own Received: header on top, nothing else rewritten). Bounces and notices
   * Postfix generates go there too. Default: the `discard` transport (accept and throw away).
   */
  deliverTo?: { host: string; port: number };
}

/** A running private Postfix; see {@link startPostfix}. */
export interface PostfixPeer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** PEM certificate to trust for STARTTLS (the server's self-signed one); undefined without `starttls`. */
  readonly ca: string | undefined;
  /** The instance's temp dir (config/, queue/, data/, maillog); removed by stop(). */
  readonly directory: string;
  /** Text of this instance's mail log so far (postlogd writes it a moment after the fact). */
  log(): Promise<string>;
  /** Number of messages Postfix accepted (queued), counted from the log. */
  accepted(): Promise<number>;
  /** Resolves with the count once at least `count` messages were accepted; rejects after `timeoutMs` (default 10 s). */
  waitForAccepted(count: number, timeoutMs?: number): Promise<number>;
  /** Process ids of this instance still alive (master and daemons); empty once stopped. */
  processIds(): number[];
  /**
   * SIGTERM to master (which stops its daemons), SIGKILL to whatever of the instance is still alive
   * after that, then removes the temp dir. log() still answers afterwards. Idempotent; never throws
   * for a process that is already gone.
   */
  stop(): Promise<void>;
}

/** What postconf says about the installed Postfix. */
interface Installation {
  version: string;
  daemonDirectory: string;
  uid: number;
  gid: number;
  setgidGroup: number;
}

let installation: Installation | undefined;

/**
 * Installs the Debian package `postfix` when /usr/sbin/postfix is missing: debconf preseeded to "No
 * configuration" (nothing of the system's instance is set up or started), apt-get noninteractive,
 * `apt-get update` only if the first install attempt fails. Throws an error saying what to run when it
 * cannot (not root, no package).
 */
export function ensurePostfixInstalled(): void {
  if (existsSync(postfixCommand) && existsSync(postconfCommand)) return;
  installDebianPackage('postfix', 'postfix postfix/main_mailer_type select No configuration\n');
  if (!existsSync(postfixCommand)) {
    throw new Error(`apt-get installed postfix but ${postfixCommand} is still missing`);
  }
}

/** apt-get install of one package, as root, with an `apt-get update` and a second try if it fails. */
function installDebianPackage(name: string, debconfSelections: string): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      `${name} is not installed and installing it needs root: run ` +
        `"echo '${debconfSelections.trim()}' | debconf-set-selections && apt-get install -y ${name}" as root`,
    );
  }
  const run = (command: string, args: string[], input?: string) =>
    execFileSync(command, args, {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      stdio: 'pipe',
      ...(input === undefined ? {} : { input }),
    });
  // Another test file may be installing at the same moment: wait for dpkg's lock instead of failing.
  const install = ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '-q', name];
  try {
    run('debconf-set-selections', [], debconfSelections);
    try {
      run('apt-get', install);
    } catch {
      // The package lists may be empty or stale on a fresh machine.
      run('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'update', '-q']);
      run('apt-get', install);
    }
  } catch (error) {
    const output = String((error as { stderr?: unknown }).stderr ?? '').trim();
    throw new Error(`apt-get install ${name} failed: ${output || (error as Error).message}`, {
      cause: error,
    });
  }
}

/** The fields of `name`'s line in /etc/passwd or /etc/group. */
function systemEntry(file: '/etc/passwd' | '/etc/group', name: string): string[] {
  const line = readFileSync(file, 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith(`${name}:`));
  if (!line) throw new Error(`"${name}" is not in ${file}: is the postfix package installed?`);
  return line.split(':');
}

function inspectInstallation(): Installation {
  installation ??= (() => {
    const [version = '', daemonDirectory = '', owner = '', setgidGroup = ''] = execFileSync(
      postconfCommand,
      ['-d', '-h', 'mail_version', 'daemon_directory', 'mail_owner', 'setgid_group'],
      { encoding: 'utf8' },
    ).split('\n');
    const [major = 0, minor = 0] = version.split('.').map(Number);
    // 3.4 brought CHUNKING (BDAT) to smtpd, and postlogd (maillog_file): we rely on both.
    if (major < 3 || (major === 3 && minor < 4)) {
      throw new Error(`Postfix ${version} is too old: the test peer needs 3.4 or later (CHUNKING, postlogd)`);
    }
    const [, , uid, gid] = systemEntry('/etc/passwd', owner);
    const [, , group] = systemEntry('/etc/group', setgidGroup);
    return {
      version,
      daemonDirectory,
      uid: Number(uid),
      gid: Number(gid),
      setgidGroup: Number(group),
    };
  })();
  return installation;
}

/**
 * Starts a guard for the instance whose master is `group`: a bash outside this process's session
 * that waits on a pipe from us. If this process ends without stop() (a test that forgot it, vitest or a
 * CI timeout killing us, Ctrl-C), the pipe closes and the guard kills the instance's process group and
 * removes its directory; stop() dismisses it first by writing "done".
 */
function startGuard(group: number, directory: string): ChildProcess {
  const guard = spawn(
    '/bin/bash',
    [
      '-c',
      'read -r word; [ "$word" = done ] && exit 0; kill -KILL -- "-$1" 2>/dev/null; ' +
        // Wait (5 s at most) for the killed processes to be gone before removing what they write to.
        'i=0; while kill -0 -- "-$1" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; ' +
        'rm -rf -- "$2"',
      'postfix-guard',
      String(group),
      directory,
    ],
    { stdio: ['pipe', 'ignore', 'ignore'], detached: true },
  );
  // The guard must not keep this process alive, nor die with it (SIGINT goes to our process group).
  guard.unref();
  (guard.stdin as unknown as { unref(): void }).unref();
  return guard;
}

/** Dismisses a guard (the instance is being stopped properly); resolves once it exited. Never rejects. */
function dismissGuard(guard: ChildProcess): Promise<void> {
  if (guard.exitCode !== null || guard.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => guard.once('exit', () => resolve()));
  guard.stdin?.on('error', () => {}); // it may be exiting already
  guard.stdin?.end('done\n');
  return exited;
}

/** Live (non-zombie) processes whose process group is `group`, from /proc. */
function processGroupMembers(group: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // Fields after "(comm)": state ppid pgrp ...; comm may itself contain spaces and parentheses.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state !== 'Z' && Number(pgrp) === group) members.push(Number(entry));
  }
  return members;
}

/** The first reply of an SMTP server on the port (all its lines), or an error. */
function readGreeting(port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let text = '';
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      reject(new Error(`no greeting within ${timeoutMs} ms`));
    });
    socket.on('error', reject); // `on`: an error after the greeting (a reset after QUIT) is no news
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
      // The reply ends with a line whose code is followed by a space, not a hyphen (RFC 5321 §4.2.1).
      if (!/(^|\r\n)\d{3}( [^\r\n]*)?\r\n$/.test(text)) return;
      socket.end('QUIT\r\n');
      resolve(text);
    });
  });
}

/** Postfix main.cf: `name = value` lines. */
function mainCf(settings: Record<string, string | number>): string {
  return `${Object.entries(settings)
    .map(([name, value]) => `${name} = ${value}`)
    .join('\n')}\n`;
}

/**
 * Postfix master.cf: the smtpd listener on 127.0.0.1:port plus the daemons it and qmgr talk to
 * (smtpd hangs ~100 s then fails when one it needs, such as proxymap, is missing). Nothing is chrooted
 * (the queue dir has no chroot tree), and there is no `local` delivery: nothing reaches the system's
 * mailboxes.
 */
function masterCf(port: number): string {
  const services = [
    // service type private unpriv chroot wakeup maxproc command
    `127.0.0.1:${port} inet n - n - - smtpd`,
    'cleanup unix n - n - 0 cleanup',
    'qmgr unix n - n 300 1 qmgr',
    'tlsmgr unix - - n 1000? 1 tlsmgr',
    'rewrite unix - - n - - trivial-rewrite',
    'bounce unix - - n - 0 bounce',
    'defer unix - - n - 0 bounce',
    'trace unix - - n - 0 bounce',
    'verify unix - - n - 1 verify',
    'flush unix n - n 1000? 0 flush',
    'proxymap unix - - n - - proxymap',
    'proxywrite unix - - n - 1 proxymap',
    'smtp unix - - n - - smtp',
    'relay unix - - n - - smtp',
    'showq unix n - n - - showq',
    'error unix - - n - - error',
    'retry unix - - n - - error',
    'discard unix - - n - - discard',
    'anvil unix - - n - 1 anvil',
    'scache unix - - n - 1 scache',
    'postlog unix-dgram n - n - 1 postlogd',
  ];
  return `${services.join('\n')}\n`;
}

/** Checks the options where they are turned into configuration (a bad line would fail obscurely later). */
function validate(options: PostfixOptions): void {
  for (const { pattern, reply } of options.refuseRecipients ?? []) {
    if (!/^\/.*\/[a-z]*$/.test(pattern) || /[\r\n]/.test(pattern)) {
      throw new Error(`refuseRecipients pattern ${JSON.stringify(pattern)} is not a /regexp/ of one line`);
    }
    if (!/^[45]\d\d [^\r\n]+$/.test(reply)) {
      throw new Error(`refuseRecipients reply ${JSON.stringify(reply)} is not "4xx text" or "5xx text"`);
    }
  }
  const limit = options.messageSizeLimit;
  if (limit !== undefined && !(Number.isSafeInteger(limit) && limit > 0)) {
    throw new Error(`messageSizeLimit ${limit} is not a positive number of bytes`);
  }
}

/**
 * Starts a private Postfix (see the module comment) and resolves once its smtpd answered with a 220
 * greeting. Installs the package first if needed ({@link ensurePostfixInstalled}). Throws, with the
 * instance's mail log in the message, when it does not come up within 20 s; nothing of it is left
 * running then. Always `stop()` it.
 */
export async function startPostfix(options: PostfixOptions = {}): Promise<PostfixPeer> {
  validate(options);
  if (process.getuid?.() !== 0) {
    throw new Error('startPostfix needs root: Postfix\'s master runs as root and its daemons as "postfix"');
  }
  ensurePostfixInstalled();
  const { daemonDirectory, uid, gid, setgidGroup } = inspectInstallation();

  const certificate = options.starttls ? await selfSignedCertificate() : undefined;
  const directory = await mkdtemp(join(tmpdir(), 'mailroom-postfix-'));
  if (/[\s,]/.test(directory)) {
    await rm(directory, { recursive: true, force: true });
    throw new Error(
      `temp dir ${directory} has a space or comma, which Postfix lists cannot hold: set TMPDIR`,
    );
  }
  // The postfix user's daemons read config/ and the queue; the temp dir is root's and 0700 by default.
  await chmod(directory, 0o755);
  const configDirectory = join(directory, 'config');
  const queueDirectory = join(directory, 'queue');
  const dataDirectory = join(directory, 'data');
  const logFile = join(directory, 'maillog');

  try {
    const makeDirectory = async (path: string, mode: number, owner: number, group: number) => {
      await mkdir(path);
      await chown(path, owner, group);
      await chmod(path, mode); // after chown, which clears the set-gid bit
    };
    // The layout of $meta_directory/postfix-files, which `postfix check` would create.
    await makeDirectory(configDirectory, 0o755, 0, 0);
    await makeDirectory(dataDirectory, 0o700, uid, gid);
    await makeDirectory(queueDirectory, 0o755, 0, 0);
    const ownerOnly = ['active', 'bounce', 'corrupt', 'defer', 'deferred', 'flush', 'hold', 'incoming'];
    for (const name of [...ownerOnly, 'private', 'saved', 'trace']) {
      await makeDirectory(join(queueDirectory, name), 0o700, uid, gid);
    }
    await makeDirectory(join(queueDirectory, 'maildrop'), 0o1730, uid, setgidGroup);
    await makeDirectory(join(queueDirectory, 'public'), 0o2710, uid, setgidGroup);
    await makeDirectory(join(queueDirectory, 'pid'), 0o755, 0, 0);

    if (certificate) {
      await writeFile(join(configDirectory, 'tls-key.pem'), certificate.key, { mode: 0o600 });
      await writeFile(join(configDirectory, 'tls-cert.pem'), certificate.cert);
    }
    const refusals = options.refuseRecipients ?? [];
    const accessMap = join(configDirectory, 'refuse-recipients');
    if (refusals.length > 0) {
      await writeFile(accessMap, refusals.map(({ pattern, reply }) => `${pattern} ${reply}\n`).join(''));
    }
    const discarded = [
      ...(options.pipelining === false ? ['pipelining'] : []),
      ...(options.chunking === false ? ['chunking'] : []),
    ];

    await writeFile(
      join(configDirectory, 'main.cf'),
      mainCf({
        compatibility_level: '3.6',
        queue_directory: queueDirectory,
        data_directory: dataDirectory,
        // postlogd writes the log; only files under these prefixes are allowed (default /var).
        maillog_file: logFile,
        maillog_file_prefixes: directory,
        // No DNS anywhere: explicit names, no reverse lookup of clients, no MX/A lookups when relaying.
        myhostname: 'postfix.mailroom.localhost',
        mydomain: 'mailroom.localhost',
        myorigin: '$myhostname',
        smtpd_banner: '$myhostname ESMTP',
        smtpd_peername_lookup: 'no',
        smtp_dns_support_level: 'disabled',
        inet_interfaces: '127.0.0.1',
        inet_protocols: 'ipv4',
        mynetworks: '127.0.0.0/8',
        // No local domains at all: every recipient goes to the default transport (relay or discard),
        // and no system file (/etc/aliases, passwd) is consulted.
        mydestination: '',
        relay_domains: '',
        local_recipient_maps: '',
        alias_maps: '',
        alias_database: '',
        smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
        smtpd_recipient_restrictions: refusals.length > 0 ? `check_recipient_access regexp:${accessMap}` : '',
        smtpd_discard_ehlo_keywords: discarded.length > 0 ? `silent-discard, ${discarded.join(', ')}` : '',
        // Postfix adds Message-ID/Date/From to local clients' mail by default; keep our client's bytes.
        local_header_rewrite_clients: '',
        message_size_limit: options.messageSizeLimit ?? 64 * 1024 * 1024,
        mailbox_size_limit: 0,
        // A test peer and a benchmark sink must not slow the client down on its own account: no 1 s
        // pause after each refused command, no disconnect after 20 refusals or 100 RSETs on a long
        // connection, and no in-flow throttling when qmgr falls behind.
        smtpd_error_sleep_time: '0s',
        smtpd_soft_error_limit: 100_000,
        smtpd_hard_error_limit: 100_000,
        smtpd_junk_command_limit: 100_000,
        in_flow_delay: '0s',
        // A relay target that was down is retried within seconds, not the default 5 minutes.
        queue_run_delay: '1s',
        minimal_backoff_time: '1s',
        maximal_backoff_time: '2s',
        ...(options.deliverTo
          ? {
              default_transport: 'smtp',
              relayhost: `[${options.deliverTo.host}]:${options.deliverTo.port}`,
              smtp_tls_security_level: 'none',
            }
          : { default_transport: 'discard' }),
        ...(certificate
          ? {
              smtpd_tls_security_level: 'may',
              smtpd_tls_cert_file: join(configDirectory, 'tls-cert.pem'),
              smtpd_tls_key_file: join(configDirectory, 'tls-key.pem'),
              smtpd_tls_loglevel: 1,
            }
          : { smtpd_tls_security_level: 'none' }),
      }),
    );
  } catch (error) {
    await rm(directory, { recursive: true, force: true });
    throw error;
  }

  const ca = certificate?.cert;
  const readLog = async () => {
    try {
      return await readFile(logFile, 'utf8');
    } catch {
      return ''; // postlogd has not written anything yet
    }
  };

  // The port comes from freePort(); another process may take it before master binds it: try again.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    await writeFile(join(configDirectory, 'master.cf'), masterCf(port));
    await backdateConfiguration(configDirectory);
    const launched = await launchMaster(daemonDirectory, directory, port, readLog);
    if ('master' in launched) {
      return makePeer(launched, port, directory, ca, readLog);
    }
    if (attempt < 3 && launched.portTaken) {
      await rm(logFile, { force: true });
      continue;
    }
    await rm(directory, { recursive: true, force: true });
    throw launched.error;
  }
}

/**
 * Sets the mtime of every file in config/ one minute back. Postfix reads main.cf again, every 300 ms,
 * for as long as it was modified within the last two seconds (util/load_file.c: "reads it again when
 * the file changed recently", against an editor still writing it): fresh files cost every start ~2 s.
 */
async function backdateConfiguration(configDirectory: string): Promise<void> {
  const then = new Date(Date.now() - 60_000);
  for (const name of await readdir(configDirectory)) {
    await utimes(join(configDirectory, name), then, then);
  }
}

/** A running master process, the promise of its exit, and its guard. */
interface Master {
  master: ChildProcess;
  exited: Promise<void>;
  guard: ChildProcess;
}

/** Runs master in the foreground and waits for the 220 greeting; on failure, kills what it started. */
async function launchMaster(
  daemonDirectory: string,
  directory: string,
  port: number,
  readLog: () => Promise<string>,
): Promise<Master | { error: Error; portTaken: boolean }> {
  // -s: stay in the foreground (Postfix 3.3+), still as a session and process group leader: master
  // stops its daemons by signalling its own group, and so can we.
  const master = spawn(join(daemonDirectory, 'master'), ['-s', '-c', join(directory, 'config')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (text: string) => {
    output = (output + text).slice(-16_384);
  };
  master.stdout?.setEncoding('utf8').on('data', keep);
  master.stderr?.setEncoding('utf8').on('data', keep);
  master.once('error', (error) => keep(`${error.message}\n`));
  // 'exit', not 'close': daemons inherit master's stdout and stderr and may hold them open longer.
  const exited = new Promise<void>((resolve) => master.once('exit', () => resolve()));
  const hasExited = () => master.exitCode !== null || master.signalCode !== null;
  // A forgotten instance must not keep this process alive: its guard cleans up after us.
  master.unref();
  for (const stream of [master.stdout, master.stderr]) (stream as unknown as { unref(): void }).unref();
  const guard = master.pid === undefined ? undefined : startGuard(master.pid, directory);

  let greeting = '';
  let failure: Error | undefined;
  try {
    await waitUntil(
      async () => {
        if (hasExited() || master.pid === undefined) return true;
        try {
          greeting = await readGreeting(port, 3_000);
          return true;
        } catch {
          return false; // not listening yet, or smtpd still starting
        }
      },
      `Postfix on 127.0.0.1:${port} to greet`,
      startupTimeoutMs,
    );
  } catch (error) {
    failure = error as Error;
  }
  if (!failure && greeting.startsWith('220') && guard) return { master, exited, guard };

  if (guard) await dismissGuard(guard);
  await killGroup(master, exited);
  const log = await readLog();
  // master logs what stops it before postlogd runs (a port it cannot bind, a bad main.cf) only to
  // syslog, which the log file never sees: find out about the port ourselves.
  const portTaken = /Address already in use/.test(log) || (!greeting && (await isListening(port)));
  let reason: string;
  if (failure) reason = failure.message;
  else if (greeting) reason = `it greeted with ${JSON.stringify(greeting.trim())}`;
  else if (portTaken) reason = `another process took port ${port} first`;
  else {
    const mainCfText = await readFile(join(directory, 'config', 'main.cf'), 'utf8').catch(() => '');
    reason =
      `master exited (code ${master.exitCode}, signal ${master.signalCode}) before its log service ` +
      `was up (it reports such errors, e.g. a bad main.cf value, to syslog only). main.cf was:\n${mainCfText}`;
  }
  const error = new Error(
    `Postfix did not start on 127.0.0.1:${port}: ${reason}\n` +
      `--- master output ---\n${output}\n--- mail log ---\n${log}`,
    failure ? { cause: failure } : undefined,
  );
  return { error, portTaken };
}

/** Whether something listens on 127.0.0.1:port (binding it fails with EADDRINUSE). */
function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'EADDRINUSE'));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)));
  });
}

/** SIGTERM to master, SIGKILL to its group if it lingers, then waits until no member is alive. */
async function killGroup(master: ChildProcess, exited: Promise<void>): Promise<void> {
  const group = master.pid;
  if (group === undefined) return; // spawn failed: nothing ran
  if (master.exitCode === null && master.signalCode === null) {
    master.kill('SIGTERM'); // master signals its daemons (its process group) and exits
    const timer = setTimeout(() => {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {}
    }, stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  }
  // Daemons still finishing after master is gone (or orphaned by a master that crashed).
  for (const pid of processGroupMembers(group)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  await waitUntil(
    () => processGroupMembers(group).length === 0,
    `the processes of Postfix master ${group} to exit`,
    stopTimeoutMs,
  );
}

/** Queue ids in the log lines where cleanup(8) finished a message: one per accepted message. */
function acceptedQueueIds(log: string): Set<string> {
  const ids = new Set<string>();
  for (const match of log.matchAll(/ postfix\/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=/g)) {
    ids.add(match[1]!);
  }
  return ids;
}

function makePeer(
  { master, exited, guard }: Master,
  port: number,
  directory: string,
  ca: string | undefined,
  readLog: () => Promise<string>,
): PostfixPeer {
  let stopping: Promise<void> | undefined;
  let finalLog: string | undefined;
  const log = async () => finalLog ?? (await readLog());
  const accepted = async () => acceptedQueueIds(await log()).size;
  return {
    host: '127.0.0.1',
    port,
    ca,
    directory,
    log,
    accepted,
    async waitForAccepted(count, timeoutMs = 10_000) {
      let seen = 0;
      await waitUntil(
        async () => {
          seen = await accepted();
          return seen >= count;
        },
        `Postfix to accept ${count} messages`,
        timeoutMs,
      ).catch((error: unknown) => {
        throw new Error(`Expected ${count} messages accepted by Postfix, got ${seen}`, { cause: error });
      });
      return seen;
    },
    processIds() {
      return master.pid === undefined ? [] : processGroupMembers(master.pid);
    },
    stop() {
      stopping ??= (async () => {
        try {
          await dismissGuard(guard);
          await killGroup(master, exited);
        } finally {
          finalLog = await readLog();
          await rm(directory, { recursive: true, force: true });
        }
      })();
      return stopping;
    },
  };
}
