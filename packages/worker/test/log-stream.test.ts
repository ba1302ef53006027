import { Writable } from 'node:stream';
import { ConfigError } from '@mailroom/core';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { chooseLogFormat, prettyLogStream, workerLogStream } from '../src/cli/log-stream.js';

function sink(isTTY?: boolean): Writable & { isTTY?: boolean; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      text += String(chunk);
      callback();
    },
  }) as Writable & { isTTY?: boolean; text: () => string };
  if (isTTY !== undefined) stream.isTTY = isTTY;
  stream.text = () => text;
  return stream;
}

describe('chooseLogFormat', () => {
  it('logs readable lines on a terminal and JSON anywhere else', () => {
    expect(chooseLogFormat({ pretty: false, logFormat: undefined, isTTY: true })).toBe('pretty');
    expect(chooseLogFormat({ pretty: false, logFormat: undefined, isTTY: undefined })).toBe('json');
  });

  it('takes LOG_FORMAT over the terminal check, and --pretty over both', () => {
    expect(chooseLogFormat({ pretty: false, logFormat: 'json', isTTY: true })).toBe('json');
    expect(chooseLogFormat({ pretty: false, logFormat: ' Pretty ', isTTY: false })).toBe('pretty');
    expect(chooseLogFormat({ pretty: true, logFormat: 'json', isTTY: false })).toBe('pretty');
  });

  it('refuses another LOG_FORMAT, naming it', () => {
    const choose = () => chooseLogFormat({ pretty: false, logFormat: 'yaml', isTTY: false });
    expect(choose).toThrow(ConfigError);
    expect(choose).toThrow('LOG_FORMAT="yaml" is not a log format: use json or pretty');
  });
});

describe('prettyLogStream', () => {
  it('writes one readable line an event: time, level, name, message, then the fields', () => {
    const out = sink();
    pino({ name: 'mailroom-worker' }, prettyLogStream(out, { colorize: false })).warn(
      { err: 'MOVED 1234 127.0.0.1:1', repeated: 12, overMs: 2000 },
      'worker error',
    );
    expect(out.text()).toMatch(
      /^\[\d\d:\d\d:\d\d\.\d{3}\] WARN \(mailroom-worker\): worker error \{"err":"MOVED 1234 127\.0\.0\.1:1","repeated":12,"overMs":2000\}\n$/,
    );
  });

  it('cannot be made to start a line or act on the terminal by what it quotes', () => {
    const out = sink();
    const hostile = 'ok\n[12:00:00.000] INFO (mailroom-worker): all good\u001b]0;pwned\u0007\u009b2J\u202e';
    pino({ name: 'mailroom-worker' }, prettyLogStream(out, { colorize: false })).error(
      { err: hostile, to: ['a\u2028b@example.com'] },
      hostile,
    );
    const text = out.text();
    expect(text.split('\n')).toHaveLength(2);
    expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/);
    expect(text).toContain(
      'ok\\n[12:00:00.000] INFO (mailroom-worker): all good\\x1b]0;pwned\\x07\\u009b2J\\u202e',
    );
    expect(text).toContain('\\u2028b@example.com');
  });

  it('keeps its own colours and escapes everything else', () => {
    const out = sink();
    pino({ name: 'mailroom-worker' }, prettyLogStream(out, { colorize: true })).info(
      { detail: '\u001b[2J' },
      'colour \u001b[31mred',
    );
    const text = out.text();
    // Every escape left is a colour (SGR) of pino-pretty's; the quoted ones are shown, not acted on.
    expect(text.match(/\u001b[^[]|\u001b\[[0-9;]*[^0-9;m]/g)).toBeNull();
    expect(text).toContain('\u001b[');
    expect(text).toContain('colour \\x1b[31mred');
  });
});

describe('workerLogStream', () => {
  it('colours pretty lines only on a terminal, and never with NO_COLOR', () => {
    const write = (isTTY: boolean, env: NodeJS.ProcessEnv) => {
      const out = sink(isTTY);
      pino({ name: 'mailroom-worker' }, workerLogStream(out, 'pretty', env)).info('hello');
      return out.text();
    };
    expect(write(true, {})).toContain('\u001b[');
    expect(write(false, {})).not.toContain('\u001b[');
    expect(write(true, { NO_COLOR: '1' })).not.toContain('\u001b[');
  });

  it('writes JSON lines, escaped for a terminal, in the json format', () => {
    const out = sink(true);
    pino({ name: 'mailroom-worker' }, workerLogStream(out, 'json', {})).info({ to: 'x\u009by' }, 'hello');
    const line = out.text();
    expect(JSON.parse(line)).toMatchObject({ msg: 'hello', to: 'x\u009by' });
    expect(line).toContain('x\\u009by');
  });
});
