/** The `mailroom` command line: dispatches to a command, prints the usage, the version and errors. */
import { readFileSync } from 'node:fs';
import { coerceError } from '@mailroom/core';
import { campaignCommand, campaignUsage } from './campaign-command.js';
import { dashboardCommand, dashboardUsage } from './dashboard-command.js';
import { enqueueCommand, enqueueUsage } from './enqueue-command.js';
import { failedCommand, failedUsage } from './failed-command.js';
import { type CliContext, EXIT, exitCodeFor, printLines, println, UsageError } from './io.js';
import { sendCommand, sendUsage } from './send-command.js';
import { statsCommand, statsUsage } from './stats-command.js';
import { didYouMean } from './suggest.js';
import { suppressCommand, suppressUsage } from './suppress-command.js';
import { unsubscribeCommand, unsubscribeUsage } from './unsubscribe-command.js';
import { workerCommand, workerUsage } from './worker-command.js';

/** A subcommand: runs and returns the exit code. */
type Command = (argv: string[], context: CliContext) => Promise<number>;

const commands: Readonly<Record<string, { run: Command; usage: string; summary: string }>> = {
  worker: { run: workerCommand, usage: workerUsage, summary: 'run a worker (until SIGTERM/SIGINT)' },
  send: {
    run: sendCommand,
    usage: sendUsage,
    summary: 'enqueue one message built from flags (or --now: send it)',
  },
  enqueue: { run: enqueueCommand, usage: enqueueUsage, summary: 'enqueue the messages of a JSON Lines file' },
  campaign: {
    run: campaignCommand,
    usage: campaignUsage,
    summary: 'preview, start, follow, pause, resume, cancel or retry a newsletter campaign',
  },
  failed: { run: failedCommand, usage: failedUsage, summary: 'list or retry failed (dead-letter) jobs' },
  stats: { run: statsCommand, usage: statsUsage, summary: 'job counts of the queue and its campaigns' },
  suppress: {
    run: suppressCommand,
    usage: suppressUsage,
    summary: 'add, remove, list, import or export suppressed addresses',
  },
  'unsubscribe-server': {
    run: unsubscribeCommand,
    usage: unsubscribeUsage,
    summary: 'serve one-click unsubscribe links (until SIGTERM/SIGINT)',
  },
  dashboard: {
    run: dashboardCommand,
    usage: dashboardUsage,
    summary: 'serve the web dashboard for operators (until SIGTERM/SIGINT)',
  },
};

function mainUsage(): string {
  const width = Math.max(...Object.keys(commands).map((name) => name.length));
  const lines = Object.entries(commands).map(
    ([name, command]) => `  ${name.padEnd(width)}  ${command.summary}`,
  );
  return `Usage: mailroom <command> [flags]

Commands:
${lines.join('\n')}

Run "mailroom <command> --help" for a command's flags, "mailroom --version" for the version.
Exit codes: 0 ok, 1 failed, 2 usage or invalid input, 3 configuration error, 4 Redis or server unreachable.`;
}

/**
 * The version of @mailroom/worker, read from its package.json: `../../package.json` from both
 * src/cli/ (run from source) and dist/cli/ (built).
 */
function version(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return manifest.version;
}

/** Runs the CLI with arguments (without node and script) and returns the exit code. */
export async function run(argv: string[], context: CliContext): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    printLines(name === undefined ? context.stderr : context.stdout, mainUsage());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  if (name === '--version' || name === '-V') {
    println(context.stdout, version());
    return EXIT.ok;
  }
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!command) {
    const known = name.startsWith('-') ? ['--help', '--version'] : Object.keys(commands);
    println(context.stderr, `mailroom: unknown command ${JSON.stringify(name)}${didYouMean(name, known)}`);
    printLines(context.stderr, `\n${mainUsage()}`);
    return EXIT.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    printLines(context.stdout, command.usage);
    return EXIT.ok;
  }
  try {
    return await command.run(rest, context);
  } catch (error) {
    const err = coerceError(error);
    const code = exitCodeFor(err);
    // One line (escaped by println): messages quote values from flags, files and servers.
    println(context.stderr, `mailroom ${name}: ${err.message}`);
    const usage = err instanceof UsageError ? err.usage : code === EXIT.usage ? command.usage : undefined;
    if (usage !== undefined) printLines(context.stderr, `\n${usage}`);
    return code;
  }
}
