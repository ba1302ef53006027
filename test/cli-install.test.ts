/**
 * The README's promise: right after `pnpm install`, `pnpm mailroom` works, with no build first. Run
 * on a copy of the repository as a fresh clone would have it (the files git knows of, so no dist/
 * and no node_modules), installed from the lockfile and pnpm's store.
 */
import { type SpawnOptions, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT, freshQueue, useHarness, useTemporaryDirectory } from './support/harness.js';
import { REDIS_URL } from './support/redis.js';

const harness = useHarness();
const dir = useTemporaryDirectory('mailroom-fresh-clone-');
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PACKAGES = ['core', 'producer', 'worker'];

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (killed after `timeoutMs`), with its output. */
function run(command: string, args: string[], options: SpawnOptions, timeoutMs = 120_000): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * The environment of a user's shell: this process's, without what `pnpm test` set for its own
 * script (npm_config_* would be read as pnpm settings by the pnpm runs below).
 */
function shellEnvironment(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const key of Object.keys(env)) if (key.startsWith('npm_') || key === 'INIT_CWD') delete env[key];
  return env;
}

/** Copies the files git knows of (committed or new, not ignored) from the work tree into `target`. */
async function copyWorkTree(target: string): Promise<number> {
  const listed = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: ROOT,
  });
  expect(listed.code, listed.stderr).toBe(0);
  let copied = 0;
  for (const path of listed.stdout.split('\0')) {
    const source = join(ROOT, path);
    // A file deleted in the work tree is still listed until the deletion is committed.
    if (!path || !existsSync(source) || !statSync(source).isFile()) continue;
    mkdirSync(dirname(join(target, path)), { recursive: true });
    copyFileSync(source, join(target, path));
    copied++;
  }
  return copied;
}

describe('pnpm mailroom right after pnpm install', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('runs the CLI from source: --help, --version and stats with arguments, and builds nothing', async () => {
    const clone = join(dir, 'mailroom');
    expect(await copyWorkTree(clone)).toBeGreaterThan(50);
    const distDirectories = () =>
      PACKAGES.filter((name) => existsSync(join(clone, 'packages', name, 'dist')));
    expect(existsSync(join(clone, 'node_modules'))).toBe(false);
    expect(distDirectories()).toEqual([]);

    // From the lockfile and pnpm's store (filled by the install of this checkout).
    const install = await run('pnpm', ['install', '--frozen-lockfile', '--prefer-offline'], {
      cwd: clone,
      env: shellEnvironment(),
    });
    expect(install.code, install.stderr + install.stdout).toBe(0);

    const help = await run('pnpm', ['mailroom', '--help'], { cwd: clone, env: shellEnvironment() });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toContain('Usage: mailroom <command> [flags]');
    expect(help.stdout).toMatch(/^ {2}campaign +preview, start, follow, pause, resume, cancel or retry/m);

    const version = await run('pnpm', ['-s', 'mailroom', '--version'], {
      cwd: clone,
      env: shellEnvironment(),
    });
    const manifest = JSON.parse(readFileSync(join(ROOT, 'packages/worker/package.json'), 'utf8')) as {
      version: string;
    };
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout).toBe(`${manifest.version}\n`);

    // Flags reach the command whether or not they follow a `--` (npm's habit).
    const queue = freshQueue(harness, 'cli-install');
    const stats = await Promise.all(
      [
        ['stats', '--json', '--queue', queue],
        ['stats', '--', '--json', '--queue', queue],
      ].map((args) =>
        run('pnpm', ['-s', 'mailroom', ...args], { cwd: clone, env: shellEnvironment({ REDIS_URL }) }),
      ),
    );
    for (const result of stats) {
      expect(result.code, result.stderr).toBe(0);
      expect(JSON.parse(result.stdout)).toMatchObject({ queue, jobs: { waiting: 0, failed: 0 } });
    }

    expect(distDirectories()).toEqual([]);
  });
});
