/** Where `mailroom worker` logs: JSON lines for machines, pino-pretty's lines for people; escaped for terminals either way. */
import type { Writable } from 'node:stream';
import { invalidValue } from '@mailroom/core';
import { prettyFactory } from 'pino-pretty';
import { jsonLogStream } from './io.js';
import { forTerminal } from './terminal.js';

/** `json`: one JSON object a line (pino's own). `pretty`: one readable line an event (pino-pretty). */
export type LogFormat = 'json' | 'pretty';

/**
 * The format a worker logs in: `pretty` with `--pretty`; else LOG_FORMAT (`json` or `pretty`); else
 * pretty when stdout is a terminal and JSON when it is not (a pipe, a file, a log collector). Throws
 * ConfigError for another LOG_FORMAT.
 */
export function chooseLogFormat(options: {
  pretty: boolean;
  logFormat: string | undefined;
  isTTY: boolean | undefined;
}): LogFormat {
  if (options.pretty) return 'pretty';
  const format = options.logFormat?.trim().toLowerCase();
  if (format === 'json' || format === 'pretty') return format;
  if (format) throw invalidValue('LOG_FORMAT', options.logFormat, 'is not a log format: use json or pretty');
  return options.isTTY ? 'pretty' : 'json';
}

/** An SGR sequence (colours, bold), the only escape sequence pino-pretty itself writes. */
const COLOURS = /(\u001b\[[0-9;]*m)/;

/**
 * A pino destination writing each JSON line as one readable line (pino-pretty: time, level, message,
 * then the other fields as JSON), coloured when `colorize`. Escaped as {@link jsonLogStream} escapes:
 * the message and logger name (which pino-pretty writes as they are) are escaped with
 * {@link forTerminal}, line breaks included; the other fields are JSON, and what JSON leaves raw
 * (DEL, C1, U+2028/U+2029, bidi controls) is escaped in the finished line, around pino-pretty's
 * colours. So nothing from data (an SMTP reply, an address) can move the cursor, set the window title
 * or start a line of its own.
 */
export function prettyLogStream(
  stream: Writable,
  options: { colorize: boolean },
): { write(line: string): void } {
  const format = prettyFactory({
    colorize: options.colorize,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
    singleLine: true,
    // `err` (always a message string here) stays with the other fields, on the same line.
    errorLikeObjectKeys: [],
  });
  return {
    write(line) {
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        // Never from pino; written as the JSON form would be.
        stream.write(forTerminal(line, { keepLineBreaks: true }));
        return;
      }
      for (const key of ['msg', 'name']) {
        if (typeof record[key] === 'string') record[key] = forTerminal(record[key]);
      }
      const pretty = format(record)
        .split(COLOURS)
        .map((part, index) => (index % 2 === 1 ? part : forTerminal(part, { keepLineBreaks: true })))
        .join('');
      stream.write(pretty);
    },
  };
}

/** The destination for `format` on `stream`; colours only on a terminal, and never with NO_COLOR set. */
export function workerLogStream(
  stream: Writable & { isTTY?: boolean },
  format: LogFormat,
  env: NodeJS.ProcessEnv,
): { write(line: string): void } {
  if (format === 'json') return jsonLogStream(stream);
  // https://no-color.org: any value but the empty string turns colours off.
  return prettyLogStream(stream, { colorize: Boolean(stream.isTTY) && !env.NO_COLOR });
}
