#!/usr/bin/env node
/** The `mailroom` executable: runs the CLI and turns a closed pipe or an uncaught error into an exit code. */
import { inspect } from 'node:util';
import { EXIT } from './cli/io.js';
import { run } from './cli/main.js';
import { forTerminal } from './cli/terminal.js';

// An error no command caught (a bug, a failing background task) ends the process as Node would
// (exit 1), but printed escaped: its message may quote an SMTP reply or job data.
process.on('uncaughtException', (error) => {
  process.stderr.write(`mailroom: ${forTerminal(inspect(error), { keepLineBreaks: true })}\n`);
  process.exit(EXIT.failure);
});

// Under the repository's `pnpm mailroom …` script, a `--` typed out of npm habit
// (`pnpm mailroom stats -- --json`) reaches the command, where npm would have taken the first one
// as its own: drop it as npm does. Run any other way, `--` keeps its meaning (end of the flags).
const argv = process.argv.slice(2);
const separator = argv.indexOf('--');
if (process.env.npm_lifecycle_event === 'mailroom' && separator !== -1) argv.splice(separator, 1);

// `mailroom stats | head -1`: the reader has gone and nothing more can reach anyone. Stop at once
// and quietly, as a C program ended by SIGPIPE does (Node ignores SIGPIPE and reports EPIPE as an
// 'error' event, which unhandled printed a stack trace and exited 1), with 0: the reader had what it
// wanted. Not so for a long-running server (the worker, the unsubscribe endpoint), whose log pipe
// closing is no request to stop: 1, so that a supervisor restarts it (a worker's batches in flight
// are taken over like a killed worker's).
const closedPipeCode = ['worker', 'unsubscribe-server'].includes(argv[0] ?? '') ? EXIT.failure : EXIT.ok;
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(closedPipeCode);
    throw error;
  });
}

// The `mailroom` command. Exit codes: see cli/io.ts (EXIT).
const code = await run(argv, {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
});
process.exit(code);
