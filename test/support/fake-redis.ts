/**
 * A TCP server that speaks just enough RESP to answer every command with one error reply: a stand-in
 * for a Redis that is up but unusable (a Redis Cluster node answering MOVED, a server refusing every
 * command). Runs in the test process; each command is parsed, so pipelined commands get one reply each.
 */
import { createServer, type Server, type Socket } from 'node:net';

/** A running fake Redis; see {@link startErrorRedis}. */
export interface ErrorRedis {
  readonly port: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** Commands received so far (all connections). */
  readonly commandCount: number;
  /** Stops listening and destroys open connections. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link startErrorRedis}. */
export interface ErrorRedisOptions {
  /**
   * The RESP error line (without CRLF) every command gets: `-ERR ...` (default), `-MOVED 1234
   * 127.0.0.1:1`, `-NOAUTH ...`.
   */
  reply?: string;
  /**
   * Answer the connection's own commands (INFO, PING, CLIENT, SELECT) as a healthy Redis 7.2 would,
   * and give `reply` to the rest: a Redis Cluster node answering MOVED for every key, where a client
   * connects, passes its ready check and then fails every command. Default false.
   */
  connectionCommandsWork?: boolean;
  /** Raw RESP answers of other commands by name (upper case), e.g. `{ GET: '$1\r\n1\r\n' }`. */
  answers?: Readonly<Record<string, string>>;
}

const INFO = 'redis_version:7.2.4\r\nredis_mode:standalone\r\nloading:0\r\nmaxmemory_policy:noeviction\r\n';
const HEALTHY_ANSWERS: Readonly<Record<string, string>> = {
  INFO: `$${Buffer.byteLength(INFO)}\r\n${INFO}\r\n`,
  PING: '+PONG\r\n',
  CLIENT: '+OK\r\n',
  SELECT: '+OK\r\n',
};

/**
 * The first complete command at the start of `buffer`: its byte length and its name (upper case), or
 * undefined when it is incomplete. Clients send multibulk arrays of bulk strings; an inline command
 * is one line.
 */
function firstCommand(buffer: Buffer): { length: number; name: string } | undefined {
  const lineEnd = (from: number) => buffer.indexOf('\r\n', from);
  if (buffer[0] !== 0x2a /* '*' */) {
    const end = lineEnd(0);
    if (end === -1) return undefined;
    return { length: end + 2, name: (buffer.subarray(0, end).toString().split(' ')[0] ?? '').toUpperCase() };
  }
  let end = lineEnd(0);
  if (end === -1) return undefined;
  const items = Number(buffer.subarray(1, end).toString());
  let offset = end + 2;
  let name = '';
  for (let item = 0; item < items; item++) {
    end = lineEnd(offset);
    if (end === -1) return undefined;
    const length = Number(buffer.subarray(offset + 1, end).toString());
    if (end + 2 + length + 2 > buffer.length) return undefined;
    if (item === 0)
      name = buffer
        .subarray(end + 2, end + 2 + length)
        .toString()
        .toUpperCase();
    offset = end + 2 + length + 2;
  }
  return { length: offset, name };
}

/** Starts the fake on 127.0.0.1, on a free port; see {@link ErrorRedisOptions}. */
export async function startErrorRedis(options: ErrorRedisOptions = {}): Promise<ErrorRedis> {
  const sockets = new Set<Socket>();
  let commandCount = 0;
  const error = `${options.reply ?? '-ERR this server refuses every command'}\r\n`;
  const answer = (name: string) =>
    (options.connectionCommandsWork ? HEALTHY_ANSWERS[name] : undefined) ?? options.answers?.[name] ?? error;
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (let command = firstCommand(pending); command; command = firstCommand(pending)) {
        pending = pending.subarray(command.length);
        commandCount++;
        socket.write(answer(command.name));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  let closing: Promise<void> | undefined;
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get commandCount() {
      return commandCount;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      });
      return closing;
    },
  };
}
