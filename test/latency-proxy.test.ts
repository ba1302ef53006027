import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { LatencyProxy } from '../bench/latency-proxy.js';

const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** A TCP server on 127.0.0.1 (a free port) running `onConnection` for each client. */
async function target(onConnection: (socket: Socket) => void): Promise<{ host: string; port: number }> {
  const sockets: Socket[] = [];
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.push(socket);
    onConnection(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => {
    // Half-open connections would keep close() waiting.
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { host: '127.0.0.1', port: (server.address() as { port: number }).port };
}

const echo = (socket: Socket) => socket.pipe(socket);

async function proxyTo(
  to: { host: string; port: number },
  clientToServerMs: number,
  serverToClientMs: number,
): Promise<LatencyProxy> {
  const proxy = await LatencyProxy.start(to, { clientToServerMs, serverToClientMs });
  closers.push(() => proxy.close());
  return proxy;
}

async function client(proxy: LatencyProxy): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
  await once(socket, 'connect');
  closers.push(async () => {
    socket.destroy();
  });
  return socket;
}

/** Everything the socket receives until the peer ends its side. */
async function readToEnd(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await once(socket, 'end');
  return Buffer.concat(chunks);
}

describe('LatencyProxy', () => {
  it('holds each direction back by its own delay', async () => {
    const proxy = await proxyTo(await target(echo), 10, 20);
    const socket = await client(proxy);
    const startedAt = performance.now();
    socket.write('ping');
    await once(socket, 'data');
    // A chunk may leave up to half a millisecond early (the proxy works to the nearest millisecond).
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(29);
    const stats = proxy.stats();
    expect(stats.connections).toBe(1);
    expect(stats.clientToServer).toMatchObject({ chunks: 1, bytes: 4 });
    expect(stats.clientToServer.meanDelayMs).toBeGreaterThanOrEqual(9.5);
    expect(stats.serverToClient).toMatchObject({ chunks: 1, bytes: 4 });
    expect(stats.serverToClient.meanDelayMs).toBeGreaterThanOrEqual(19.5);
  });

  it('keeps the bytes of many small writes in order', async () => {
    const proxy = await proxyTo(await target(echo), 2, 3);
    const socket = await client(proxy);
    const sent = Array.from({ length: 2000 }, (_, index) => `${index},`).join('');
    const received = readToEnd(socket);
    for (let offset = 0; offset < sent.length; offset += 7) socket.write(sent.slice(offset, offset + 7));
    socket.end();
    expect((await received).toString()).toBe(sent);
  });

  it('passes a half-close on, after the data sent before it', async () => {
    let serverReceived: Promise<Buffer> | undefined;
    const proxy = await proxyTo(
      await target((socket) => {
        serverReceived = readToEnd(socket);
        void serverReceived.then(() => socket.end('bye'));
      }),
      5,
      5,
    );
    const socket = await client(proxy);
    const received = readToEnd(socket);
    socket.end('hello');
    expect((await received).toString()).toBe('bye');
    expect((await serverReceived)?.toString()).toBe('hello');
  });

  it('stops reading from a client while the server does not read, and delivers everything after', async () => {
    const paused: Socket[] = [];
    const proxy = await proxyTo(
      await target((socket) => {
        socket.pause();
        paused.push(socket);
      }),
      1,
      1,
    );
    const socket = await client(proxy);
    const payload = Buffer.alloc(64 * 1024 * 1024, 'x');
    socket.end(payload);
    await new Promise((resolve) => setTimeout(resolve, 500));
    // The proxy holds at most its window (4 MiB): the rest waits in the client's own buffer.
    expect(socket.writableLength).toBeGreaterThan(32 * 1024 * 1024);
    const server = paused[0] as Socket;
    const received = readToEnd(server);
    server.resume();
    expect((await received).length).toBe(payload.length);
  });
});
