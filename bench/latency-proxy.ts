/**
 * A TCP proxy that adds network latency: every chunk read from one side is written to the other a
 * fixed delay later, in each direction, in order. Run in its own process by latency-proxy-process.ts.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { monoMs } from './common.js';

/** One-way delays of a {@link LatencyProxy}, ms (non-negative; fractions allowed). */
export interface Delays {
  /** Added to everything a client sends before the target reads it. */
  clientToServerMs: number;
  /** Added to everything the target sends before the client reads it. */
  serverToClientMs: number;
}

/** What crossed one direction of the proxy since the last configure. */
export interface DirectionStats {
  chunks: number;
  bytes: number;
  /** Mean and largest time a chunk spent in the proxy (read to write), ms: the delay actually added. */
  meanDelayMs: number;
  maxDelayMs: number;
}

/** Counters of a {@link LatencyProxy} since the last configure: connections accepted, and per direction. */
export interface ProxyStats {
  connections: number;
  clientToServer: DirectionStats;
  serverToClient: DirectionStats;
}

/**
 * Bytes a direction holds (in its delay line plus the destination socket's write buffer) before it
 * stops reading its source, as a TCP receive window would: 4 MiB carries 80 MB/s at 50 ms, far
 * above what one SMTP connection sends, so it bounds memory without shaping the traffic measured.
 */
const WINDOW_BYTES = 4 * 1024 * 1024;

const END = Symbol('end of stream');

/** Half of the timers' 1 ms granularity: a chunk due that close to now leaves now. */
const HALF_TICK_MS = 0.5;

interface Pending {
  data: Buffer | typeof END;
  /** Monotonic ms (monoMs()) of the read, and of the moment it is due at the destination. */
  readAt: number;
  dueAt: number;
}

class DirectionCounters {
  chunks = 0;
  bytes = 0;
  delaySumMs = 0;
  maxDelayMs = 0;

  add(bytes: number, delayMs: number): void {
    this.chunks++;
    this.bytes += bytes;
    this.delaySumMs += delayMs;
    this.maxDelayMs = Math.max(this.maxDelayMs, delayMs);
  }

  snapshot(): DirectionStats {
    return {
      chunks: this.chunks,
      bytes: this.bytes,
      meanDelayMs: this.chunks === 0 ? 0 : this.delaySumMs / this.chunks,
      maxDelayMs: this.maxDelayMs,
    };
  }
}

/**
 * One direction of a proxied connection. Each chunk (and the end of the stream) is queued with the
 * time it is due, its read time plus the delay; one timer, armed for the head of the queue, writes
 * the chunks that are due, in order. Every chunk gets the same delay, so due times never decrease
 * and the queue is a FIFO.
 *
 * Node's timers sleep whole milliseconds (at least 1) from when they are armed, so the line works to
 * the nearest millisecond: a chunk due within half a millisecond leaves now (the next chance is a
 * millisecond away), and the timer sleeps the rounded time to the head. Each chunk is delayed D ±
 * 0.5 ms, D on average plus the process's wake-up (where "never before D" would add about 0.5 ms to
 * every chunk); a delay under 1 ms cannot be kept and becomes about 1 ms. The counters record the
 * delay actually added.
 */
class DelayLine {
  readonly #pending: Pending[] = [];
  #heldBytes = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly source: Socket,
    private readonly destination: Socket,
    private readonly delayMs: number,
    private readonly counters: DirectionCounters,
  ) {
    source.on('data', (chunk: Buffer) => this.#push(chunk));
    source.on('end', () => this.#push(END));
    destination.on('drain', () => this.#resumeIfRoom());
    destination.on('close', () => {
      clearTimeout(this.#timer);
      this.#pending.length = 0;
    });
  }

  #push(data: Buffer | typeof END): void {
    const readAt = monoMs();
    this.#pending.push({ data, readAt, dueAt: readAt + this.delayMs });
    if (data !== END) {
      this.#heldBytes += data.length;
      if (this.#full()) this.source.pause();
    }
    if (this.delayMs === 0) this.#flush();
    else if (this.#timer === undefined) this.#arm(this.delayMs);
  }

  #arm(waitMs: number): void {
    this.#timer = setTimeout(() => this.#flush(), Math.max(1, Math.round(waitMs)));
  }

  #flush(): void {
    this.#timer = undefined;
    const now = monoMs();
    let due = 0;
    while (due < this.#pending.length && (this.#pending[due] as Pending).dueAt <= now + HALF_TICK_MS) due++;
    // The chunks due now leave in one write (cork), in order.
    this.destination.cork();
    for (const { data, readAt } of this.#pending.splice(0, due)) {
      if (data === END) {
        this.destination.end();
      } else {
        this.#heldBytes -= data.length;
        this.counters.add(data.length, now - readAt);
        this.destination.write(data);
      }
    }
    this.destination.uncork();
    const head = this.#pending[0];
    if (head) this.#arm(head.dueAt - now);
    this.#resumeIfRoom();
  }

  #full(): boolean {
    return this.#heldBytes + this.destination.writableLength >= WINDOW_BYTES;
  }

  #resumeIfRoom(): void {
    if (this.source.isPaused() && !this.#full()) this.source.resume();
  }
}

/**
 * A proxy on 127.0.0.1 (a free port) in front of `target`: each accepted connection opens one to
 * the target and relays both directions through a {@link DelayLine}. Half-closes travel with the
 * delay; an error or reset on either side destroys both at once. Nagle is off on every socket so
 * that the proxy adds no delay of its own.
 */
export class LatencyProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #delays: Delays;
  #connections = 0;
  #clientToServer = new DirectionCounters();
  #serverToClient = new DirectionCounters();

  private constructor(
    readonly target: { host: string; port: number },
    delays: Delays,
  ) {
    this.#delays = delays;
    this.#server = createServer({ allowHalfOpen: true }, (client) => this.#relay(client));
  }

  /** Starts a proxy in front of `target` and resolves once it listens. */
  static async start(target: { host: string; port: number }, delays: Delays): Promise<LatencyProxy> {
    const proxy = new LatencyProxy(target, delays);
    await new Promise<void>((resolve, reject) => {
      proxy.#server.once('error', reject);
      proxy.#server.listen(0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  /** The port clients connect to (on 127.0.0.1). */
  get port(): number {
    const address = this.#server.address();
    if (!address || typeof address === 'string') throw new Error('the latency proxy is not listening');
    return address.port;
  }

  /** Sets the delays of connections accepted from now on, and counts only those from now on. */
  configure(delays: Delays): void {
    this.#delays = delays;
    this.#connections = 0;
    this.#clientToServer = new DirectionCounters();
    this.#serverToClient = new DirectionCounters();
  }

  /** Counters of the connections accepted since the last configure (or the start). */
  stats(): ProxyStats {
    return {
      connections: this.#connections,
      clientToServer: this.#clientToServer.snapshot(),
      serverToClient: this.#serverToClient.snapshot(),
    };
  }

  /** Stops listening and destroys every open connection. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    await closed;
  }

  #relay(client: Socket): void {
    this.#connections++;
    const upstream = connect({ ...this.target, allowHalfOpen: true });
    const destroyBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.setNoDelay(true);
      socket.on('error', destroyBoth);
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    }
    new DelayLine(client, upstream, this.#delays.clientToServerMs, this.#clientToServer);
    new DelayLine(upstream, client, this.#delays.serverToClientMs, this.#serverToClient);
  }
}
