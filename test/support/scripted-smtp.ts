/** A raw SMTP server on node:net whose every reply a test scripts: the faults smtp-server cannot produce. */
import net from 'node:net';

/** The envelope of the transaction open on a connection. */
export interface ScriptedTransaction {
  /** MAIL FROM address (between < and >). */
  from: string;
  /** MAIL parameters as sent, with their leading space (e.g. ` SIZE=120 BODY=8BITMIME`). */
  params: string;
  /** Recipients the server accepted so far, in order. */
  to: string[];
}

/** A message whose data the server received in full (accepted or not). */
export interface ScriptedMessage {
  /** 1 for the first connection. */
  connection: number;
  /** MAIL FROM of the transaction that carried it. */
  from: string;
  /** MAIL parameters of that transaction. */
  params: string;
  /** Recipients accepted in that transaction. */
  to: string[];
  /** The bytes as the server stored them: BDAT chunks verbatim, DATA dot-unstuffed without its final ".". */
  raw: Buffer;
  /** How it came. */
  via: 'DATA' | 'BDAT';
  /** The reply the server wrote for it (undefined while none was). */
  reply: string | undefined;
  /** True once a 2yz reply for it was written to the socket, before any close: the server took it. */
  accepted: boolean;
}

/** A command line the client sent. */
export interface ScriptedCommand {
  connection: number;
  /** Upper-case verb (`MAIL`, `RCPT`, `BDAT`...). */
  verb: string;
  /** The line as received, without its line end. */
  line: string;
}

/** What the script sees before each reply. */
export interface ScriptedEvent {
  connection: number;
  /** Upper-case verb of the command; `.` for the end of a DATA message (after its bytes). BDAT comes after its bytes too. */
  verb: string;
  /** The command line without its line end (`.` for the end of data). */
  line: string;
  /** MAIL and RCPT: the address between < and >. */
  address: string | undefined;
  /** This is the n-th command with this verb on this connection, from 1. */
  ordinal: number;
  /** The transaction open before this command, if any (a copy). */
  transaction: ScriptedTransaction | undefined;
  /** At `.` and at `BDAT ... LAST`: the message just received. */
  message: ScriptedMessage | undefined;
  /** The reply the server sends unless the script decides otherwise. */
  defaultReply: string;
  /** Writes bytes to this connection at once, outside the reply order (an unsolicited reply, garbage). */
  write(text: string): void;
}

/** What the script decides; every field is optional and an empty action is the default reply. */
export interface ScriptedAction {
  /**
   * Reply text instead of the default: one line, or lines joined with CRLF (a multi-line reply, or two
   * replies at once); one CRLF is appended and the whole goes out in ONE write. `null`: no reply.
   */
  reply?: string | null;
  /** Milliseconds to wait before replying (the commands behind it wait too: replies keep their order). */
  delayMs?: number;
  /**
   * After the reply (or without one, with `reply: null`): `'end'` sends FIN and reads and ignores
   * everything after, so the client reads every reply written before (no RST); `'destroy'` resets at
   * once, and a reply written just before may never reach the client.
   */
  close?: 'end' | 'destroy';
  /** Answer nothing more on this connection, this command included, while keeping it open. */
  hang?: boolean;
}

/** A script: the action for each command, or nothing for the default reply. */
export type ScriptedHook = (
  event: ScriptedEvent,
) => ScriptedAction | undefined | Promise<ScriptedAction | undefined>;

/** Options of {@link startScriptedServer}. */
export interface ScriptedServerOptions {
  /** EHLO keywords offered, in order. Default `['PIPELINING', 'CHUNKING', '8BITMIME', 'SMTPUTF8']`. */
  extensions?: string[];
  /** The greeting line. Default `220 scripted.test ESMTP`. */
  greeting?: string;
  /**
   * `'crlf'` (default): only CRLF ends a line, as RFC 5321 §2.3.8 says. `'lenient'`: CRLF, a bare LF
   * and a bare CR all end one, in commands and in DATA (so "\n.\n" ends the data): the reading under
   * which SMTP smuggling works, used as the oracle of smuggling tests.
   */
  lineEnding?: 'crlf' | 'lenient';
  /** Decides the reply to each command; returning nothing keeps the default. */
  onCommand?: ScriptedHook;
}

/** A running scripted server; see {@link startScriptedServer}. */
export interface ScriptedServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Connections accepted so far. */
  readonly connectionCount: number;
  /** Connections not yet closed. */
  readonly openConnectionCount: number;
  /** Every command line received, in order (over all connections). */
  readonly commands: readonly ScriptedCommand[];
  /** Every message received in full, in order, whatever the reply. */
  readonly received: readonly ScriptedMessage[];
  /** The messages the server accepted: a 2yz reply to their end of data / BDAT LAST was written before any close. */
  readonly accepted: readonly ScriptedMessage[];
  /** Number of commands with this verb over all connections. */
  commandCount(verb: string): number;
  /** Writes bytes to connection `connection` (1-based) at once: an unsolicited reply. */
  write(connection: number, text: string): void;
  /** Resolves once `check()` holds; rejects after `timeoutMs` (default 10 s) naming `what`. */
  waitFor(check: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** Forgets what was recorded (the server keeps running). */
  clear(): void;
  /** Stops accepting connections (new ones are refused) while the open ones go on. */
  stopListening(): void;
  /** Stops listening and destroys every connection. Idempotent. */
  close(): Promise<void>;
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const DEFAULT_EXTENSIONS = ['PIPELINING', 'CHUNKING', '8BITMIME', 'SMTPUTF8'];

type Step =
  | { kind: 'command'; line: string }
  | { kind: 'data-end' }
  | { kind: 'bdat-end'; line: string; last: boolean };

interface Connection {
  id: number;
  socket: net.Socket;
  buffer: Buffer;
  mode: 'command' | 'data' | 'bdat';
  /** DATA: lines so far (unstuffed, with their line ends); BDAT: chunks so far. */
  parts: Buffer[];
  /** BDAT: bytes of the current chunk still to read, its command line and whether it is the last. */
  bdat: { remaining: number; line: string; last: boolean };
  /** Between a first BDAT and the one that ends the message (LAST, or a refusal). */
  chunking: boolean;
  transaction: ScriptedTransaction | undefined;
  ordinals: Map<string, number>;
  processing: boolean;
  closed: boolean;
  hung: boolean;
}

function addressOf(line: string): string | undefined {
  return /<([^>]*)>/.exec(line)?.[1];
}

/** The length of the line end at `index` (CRLF 2, bare LF or CR 1 in lenient mode), 0 when none. */
function lineEndAt(buffer: Buffer, index: number, lenient: boolean): number {
  const byte = buffer[index];
  if (byte === CR && buffer[index + 1] === LF) return 2;
  if (!lenient) return 0;
  return byte === LF || byte === CR ? 1 : 0;
}

/**
 * The next complete line of `buffer` from `start`: its end (exclusive, before the line end) and
 * where the following line starts; undefined when the buffer holds no complete line yet. A CR as the
 * very last byte waits for the next chunk (it may be the first half of a CRLF).
 */
function nextLine(
  buffer: Buffer,
  start: number,
  lenient: boolean,
): { end: number; next: number } | undefined {
  for (let index = start; index < buffer.length; index++) {
    const byte = buffer[index];
    if (byte !== CR && byte !== LF) continue;
    if (byte === CR && index + 1 >= buffer.length) return undefined;
    const length = lineEndAt(buffer, index, lenient);
    if (length > 0) return { end: index, next: index + length };
  }
  return undefined;
}

function ehloReply(extensions: readonly string[]): string {
  const lines = ['scripted.test', ...extensions];
  return lines.map((text, index) => `250${index === lines.length - 1 ? ' ' : '-'}${text}`).join('\r\n');
}

/**
 * Starts a scripted SMTP server on 127.0.0.1 at a free port, for the faults smtp-server cannot
 * produce: replies withheld, late, doubled, garbled or unsolicited, a 421 or a dropped connection at
 * any point of a pipelined window, BDAT (CHUNKING), and a "lenient" line reader that ends lines at a
 * bare CR or LF as the most forgiving (smuggling-prone) servers do. Replies go out in command order,
 * one write each. Always `close()` it.
 *
 * ```ts
 * const server = await startScriptedServer({
 *   extensions: ['PIPELINING', 'CHUNKING'],
 *   onCommand: (event) =>
 *     event.verb === 'RCPT' && event.address === 'gone@example.com' ? { reply: '550 5.1.1 No such user' } : undefined,
 * });
 * // ... send ...
 * expect(server.accepted.map((message) => message.to)).toEqual([['here@example.com']]);
 * ```
 *
 * Left alone it behaves like Postfix (smtpd.c): MAIL opens a transaction and a second MAIL inside it
 * is "503 nested MAIL"; DATA with no accepted recipient is "554 no valid recipients" and leaves the
 * transaction open (until RSET, as data_cmd() does); the end of the data, "." or BDAT ... LAST, ends
 * the transaction whatever its reply (skip_bdat() resets after a refused BDAT LAST); a message over
 * the advertised SIZE is refused with 552. State follows the reply actually written, so a script
 * that answers MAIL with 550 opens no transaction, and one that answers RCPT with 250 adds the
 * recipient.
 */
export async function startScriptedServer(options: ScriptedServerOptions = {}): Promise<ScriptedServer> {
  const extensions = options.extensions ?? DEFAULT_EXTENSIONS;
  const lenient = options.lineEnding === 'lenient';
  const sizeLimit = (() => {
    const size = extensions.find((keyword) => /^SIZE\b/i.test(keyword));
    const limit = size ? Number(size.split(/\s+/)[1] ?? 0) : 0;
    return Number.isSafeInteger(limit) && limit > 0 ? limit : undefined;
  })();
  const commands: ScriptedCommand[] = [];
  const received: ScriptedMessage[] = [];
  const connections = new Map<number, Connection>();
  const timers = new Set<NodeJS.Timeout>();
  let connectionCount = 0;
  let closing: Promise<void> | undefined;
  /** Resolves once the listening socket and every connection are closed. */
  let stopped: Promise<void> | undefined;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });

  const send = (connection: Connection, text: string): boolean => {
    if (connection.closed || connection.socket.destroyed) return false;
    connection.socket.write(text);
    return true;
  };

  /** Parses the next step from the buffer; undefined when more bytes are needed. */
  const nextStep = (connection: Connection): Step | undefined => {
    if (connection.mode === 'bdat') {
      const take = Math.min(connection.bdat.remaining, connection.buffer.length);
      if (take > 0) {
        connection.parts.push(connection.buffer.subarray(0, take));
        connection.buffer = connection.buffer.subarray(take);
        connection.bdat.remaining -= take;
      }
      if (connection.bdat.remaining > 0) return undefined;
      connection.mode = 'command';
      return { kind: 'bdat-end', line: connection.bdat.line, last: connection.bdat.last };
    }
    if (connection.mode === 'data') {
      let start = 0;
      for (
        let found = nextLine(connection.buffer, start, lenient);
        found;
        found = nextLine(connection.buffer, start, lenient)
      ) {
        const line = connection.buffer.subarray(start, found.end);
        const whole = connection.buffer.subarray(start, found.next);
        start = found.next;
        if (line.length === 1 && line[0] === DOT) {
          connection.buffer = connection.buffer.subarray(start);
          connection.mode = 'command';
          return { kind: 'data-end' };
        }
        // RFC 5321 §4.5.2: a line starting with "." loses that first dot.
        connection.parts.push(Buffer.from(line[0] === DOT ? whole.subarray(1) : whole));
      }
      connection.buffer = connection.buffer.subarray(start);
      return undefined;
    }
    const found = nextLine(connection.buffer, 0, lenient);
    if (!found) return undefined;
    const line = connection.buffer.subarray(0, found.end).toString('latin1');
    connection.buffer = connection.buffer.subarray(found.next);
    return { kind: 'command', line };
  };

  const defaultReplyFor = (
    connection: Connection,
    verb: string,
    line: string,
    message?: ScriptedMessage,
  ): string => {
    const transaction = connection.transaction;
    switch (verb) {
      case 'EHLO':
        return ehloReply(extensions);
      case 'HELO':
        return '250 scripted.test';
      case 'MAIL': {
        if (transaction) return '503 5.5.1 Error: nested MAIL command';
        const declared = Number(/\bSIZE=(\d+)/i.exec(line)?.[1] ?? 0);
        if (sizeLimit !== undefined && declared > sizeLimit)
          return '552 5.3.4 Message size exceeds fixed limit';
        return '250 2.1.0 Ok';
      }
      case 'RCPT':
        return transaction ? '250 2.1.5 Ok' : '503 5.5.1 Error: need MAIL command';
      case 'DATA':
        if (!transaction) return '503 5.5.1 Error: need RCPT command';
        if (transaction.to.length === 0) return '554 5.5.1 Error: no valid recipients';
        return '354 End data with <CR><LF>.<CR><LF>';
      case '.':
      case 'BDAT': {
        if (!/^BDAT\s+\d+(\s+LAST)?\s*$/i.test(line) && verb === 'BDAT')
          return '501 5.5.4 Syntax: BDAT count [LAST]';
        if (!transaction) return '503 5.5.1 Error: need RCPT command';
        if (transaction.to.length === 0) return '554 5.5.1 Error: no valid recipients';
        if (message && sizeLimit !== undefined && message.raw.length > sizeLimit) {
          return '552 5.3.4 Message size exceeds fixed limit';
        }
        if (verb === 'BDAT' && !message) return `250 2.0.0 Ok: ${/\d+/.exec(line)?.[0]} octets received`;
        return `250 2.0.0 Ok: queued as S${received.length}`;
      }
      case 'RSET':
      case 'NOOP':
        return '250 2.0.0 Ok';
      case 'QUIT':
        return '221 2.0.0 Bye';
      default:
        return '502 5.5.2 Error: command not recognized';
    }
  };

  /** Updates the connection's state after `reply` (or no reply) to `verb`. */
  const applyReply = (
    connection: Connection,
    verb: string,
    line: string,
    code: number | undefined,
    final: boolean,
  ) => {
    const positive = code !== undefined && code >= 200 && code < 300;
    switch (verb) {
      case 'EHLO':
      case 'HELO':
      case 'RSET':
        if (positive) connection.transaction = undefined;
        break;
      case 'MAIL':
        if (positive && !connection.transaction) {
          connection.transaction = {
            from: addressOf(line) ?? '',
            params: line.replace(/^MAIL FROM:\s*<[^>]*>/i, ''),
            to: [],
          };
        }
        break;
      case 'RCPT': {
        const address = addressOf(line);
        if (positive && connection.transaction && address !== undefined)
          connection.transaction.to.push(address);
        break;
      }
      case 'DATA':
        if (code === 354) {
          connection.mode = 'data';
          connection.parts = [];
        }
        break;
      case '.':
      case 'BDAT':
        // The end of the data ends the transaction whatever the reply (RFC 5321 §4.1.1.4; Postfix's
        // skip_bdat() resets after a refused BDAT LAST too, "no valid recipients" included).
        if (final) connection.transaction = undefined;
        break;
    }
  };

  const handle = async (connection: Connection, step: Step): Promise<void> => {
    let verb: string;
    let line: string;
    let message: ScriptedMessage | undefined;
    const transaction = connection.transaction;
    if (step.kind === 'command') {
      line = step.line;
      verb = (line.split(/[\s:]/, 1)[0] ?? '').toUpperCase();
      commands.push({ connection: connection.id, verb, line });
      const bdat = verb === 'BDAT' ? /^BDAT\s+(\d+)(\s+LAST)?\s*$/i.exec(line) : null;
      if (bdat) {
        // RFC 3030: the chunk's bytes follow the command at once; the reply comes after them.
        if (!connection.chunking) connection.parts = [];
        connection.chunking = true;
        connection.mode = 'bdat';
        connection.bdat = { remaining: Number(bdat[1]), line, last: Boolean(bdat[2]) };
        return;
      }
    } else if (step.kind === 'data-end') {
      verb = '.';
      line = '.';
      message = {
        connection: connection.id,
        from: transaction?.from ?? '',
        params: transaction?.params ?? '',
        to: [...(transaction?.to ?? [])],
        raw: Buffer.concat(connection.parts),
        via: 'DATA',
        reply: undefined,
        accepted: false,
      };
      connection.parts = [];
      received.push(message);
    } else {
      verb = 'BDAT';
      line = step.line;
      const judged = step.last || !transaction || transaction.to.length === 0;
      if (step.last && transaction && transaction.to.length > 0) {
        message = {
          connection: connection.id,
          from: transaction.from,
          params: transaction.params,
          to: [...transaction.to],
          raw: Buffer.concat(connection.parts),
          via: 'BDAT',
          reply: undefined,
          accepted: false,
        };
        received.push(message);
      }
      if (judged) connection.chunking = false;
    }
    const ordinal = (connection.ordinals.get(verb) ?? 0) + 1;
    connection.ordinals.set(verb, ordinal);
    const defaultReply = defaultReplyFor(connection, verb, line, message);
    if (step.kind === 'bdat-end' && !connection.chunking) connection.parts = [];
    const action =
      (await options.onCommand?.({
        connection: connection.id,
        verb,
        line,
        address: verb === 'MAIL' || verb === 'RCPT' ? addressOf(line) : undefined,
        ordinal,
        transaction: transaction ? { ...transaction, to: [...transaction.to] } : undefined,
        message,
        defaultReply,
        write: (text) => {
          send(connection, text);
        },
      })) ?? {};
    if (action.delayMs) await sleep(action.delayMs);
    if (action.hang) {
      connection.hung = true;
      return;
    }
    const reply = action.reply === undefined ? defaultReply : action.reply;
    let code: number | undefined;
    if (reply !== null) {
      const written = send(connection, `${reply}\r\n`);
      if (written) {
        code = /^\d{3}/.test(reply) ? Number(reply.slice(0, 3)) : undefined;
        if (message) {
          message.reply = reply;
          message.accepted = code !== undefined && code >= 200 && code < 300;
        }
      }
    }
    applyReply(
      connection,
      verb,
      line,
      code,
      step.kind === 'data-end' || (step.kind === 'bdat-end' && step.last),
    );
    const close = action.close ?? (verb === 'QUIT' && reply !== null ? 'end' : undefined);
    if (close === 'end') {
      connection.closed = true;
      connection.socket.end();
    } else if (close === 'destroy') {
      connection.closed = true;
      connection.socket.destroy();
    }
  };

  /** Works through the buffered input, one step at a time (replies keep command order). */
  const pump = async (connection: Connection): Promise<void> => {
    if (connection.processing) return;
    connection.processing = true;
    try {
      while (!connection.closed && !connection.hung) {
        const step = nextStep(connection);
        if (!step) break;
        await handle(connection, step);
      }
    } finally {
      connection.processing = false;
    }
  };

  const server = net.createServer((socket) => {
    connectionCount++;
    const connection: Connection = {
      id: connectionCount,
      socket,
      buffer: Buffer.alloc(0),
      mode: 'command',
      parts: [],
      bdat: { remaining: 0, line: '', last: false },
      chunking: false,
      transaction: undefined,
      ordinals: new Map(),
      processing: false,
      closed: false,
      hung: false,
    };
    connections.set(connection.id, connection);
    socket.setNoDelay(true);
    socket.on('error', () => {
      // Resets by the client are part of what the tests provoke.
    });
    socket.on('close', () => {
      connection.closed = true;
      connections.delete(connection.id);
    });
    socket.on('data', (chunk: Buffer) => {
      // After a scripted close the input is read and dropped, so the kernel sends FIN, not RST.
      if (connection.closed || connection.hung) return;
      connection.buffer = connection.buffer.length === 0 ? chunk : Buffer.concat([connection.buffer, chunk]);
      void pump(connection);
    });
    send(connection, `${options.greeting ?? '220 scripted.test ESMTP'}\r\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (!address || typeof address === 'string')
    throw new Error('the scripted SMTP server did not bind a TCP port');

  return {
    host: '127.0.0.1',
    port: address.port,
    get connectionCount() {
      return connectionCount;
    },
    get openConnectionCount() {
      return connections.size;
    },
    commands,
    received,
    get accepted() {
      return received.filter((message) => message.accepted);
    },
    commandCount(verb: string) {
      const wanted = verb.toUpperCase();
      return commands.filter((command) => command.verb === wanted).length;
    },
    write(connection: number, text: string) {
      const target = connections.get(connection);
      if (!target) throw new Error(`no open connection ${connection}`);
      send(target, text);
    },
    async waitFor(check, what, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    clear() {
      commands.length = 0;
      received.length = 0;
    },
    stopListening() {
      stopped ??= new Promise<void>((resolve) => server.close(() => resolve()));
    },
    close() {
      closing ??= (async () => {
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        stopped ??= new Promise<void>((resolve) => server.close(() => resolve()));
        for (const connection of connections.values()) connection.socket.destroy();
        await stopped;
      })();
      return closing;
    },
  };
}
