#!/usr/bin/env node
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

// The `mailroom` command. Exit codes: see cli/io.ts (EXIT).
const code = await run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
});
process.exit(code);
