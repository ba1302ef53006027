/** CLI input and output: exit codes, usage and input errors, and the escaped writers every command prints with. */
import type { Writable } from 'node:stream';
import { ConfigError, MailError, ValidationError } from '@mailroom/core';
import { forTerminal } from './terminal.js';

/** Exit codes scripts can rely on. */
export const EXIT = {
  /** Done. */
  ok: 0,
  /** The operation ran and failed (e.g. a message was refused, a job not found). */
  failure: 1,
  /** Bad command line or bad input (unknown flag, invalid message). */
  usage: 2,
  /** Bad configuration (an EMAIL_* or MAILROOM_* value). */
  config: 3,
  /** Redis (or the mail server) could not be reached. */
  unavailable: 4,
} as const;

/** A command-line mistake: exit code 2, printed as one line, then `usage` when it carries one. */
export class UsageError extends Error {
  override name = 'UsageError';
  /** Help text printed after the message (kept apart: the message is one line, the usage several). */
  readonly usage: string | undefined;

  constructor(message: string, options: { usage?: string } = {}) {
    super(message);
    this.usage = options.usage;
  }
}

/**
 * Bad input data (a line of a file, a file that cannot be read, a missing flag): exit code 2, printed
 * as one line without the whole usage text.
 */
export class InputError extends UsageError {
  override name = 'InputError';
}

/** Where a command reads and writes; tests pass their own. */
export interface CliContext {
  stdout: Writable & { isTTY?: boolean; columns?: number };
  stderr: Writable;
  env: NodeJS.ProcessEnv;
  /** Resolves when the process is asked to stop (SIGINT/SIGTERM). */
  signals?: NodeJS.EventEmitter;
}

/** The exit code for an error thrown by a command. */
export function exitCodeFor(error: unknown): number {
  if (error instanceof UsageError || error instanceof ValidationError) return EXIT.usage;
  if (error instanceof ConfigError) return EXIT.config;
  if (
    error instanceof MailError &&
    (error.code === 'EREDIS' || error.code === 'ECONNECTION' || error.code === 'ECONNREFUSED')
  ) {
    return EXIT.unavailable;
  }
  return EXIT.failure;
}

/**
 * Writes `text` as one line, escaped with {@link forTerminal}: nothing in it (an SMTP reply, an
 * address, a job id, an error message quoting a value) can move the cursor, set colours or the window
 * title, ring the bell or start a line of its own. Every human-readable line of the CLI goes through
 * here or {@link printLines}.
 */
export function println(stream: Writable, text = ''): void {
  stream.write(`${forTerminal(text)}\n`);
}

/**
 * Writes text that is several lines by design (a usage text, `campaign status`), escaped like
 * {@link println} except that its line breaks stay. Values from data in it must have been escaped
 * with {@link forTerminal} on their own, or a line break in one would pass as a line of the output.
 */
export function printLines(stream: Writable, text: string): void {
  stream.write(`${forTerminal(text, { keepLineBreaks: true })}\n`);
}

/**
 * A pino destination writing JSON lines to `stream` with DEL, C1 controls, U+2028/U+2029 and bidi
 * controls written as `\uXXXX` (pino, like JSON.stringify, escapes C0 controls only): each line still
 * parses to the same values, and a log line on a terminal cannot act on it.
 */
export function jsonLogStream(stream: Writable): { write(line: string): void } {
  return {
    write(line) {
      stream.write(forTerminal(line, { keepLineBreaks: true }));
    },
  };
}

/**
 * Resolves at the first SIGTERM or SIGINT (from `context.signals`, else the process), logged; a second
 * one exits the process at once with 1. For the long-running commands (worker, unsubscribe-server,
 * dashboard): call it before printing the banner, so that whoever waits for the banner may signal.
 */
export function stopSignal(
  context: CliContext,
  logger: { info(fields: object, message: string): void; warn(fields: object, message: string): void },
): Promise<void> {
  const signals = context.signals ?? process;
  return new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(EXIT.failure);
      }
      stopping = true;
      logger.info({ signal }, 'signal received');
      resolve();
    };
    signals.on('SIGTERM', () => stop('SIGTERM'));
    signals.on('SIGINT', () => stop('SIGINT'));
  });
}
