/**
 * The latency proxy (latency-proxy.ts) in a process of its own, forked by startLatencyProxy
 * (processes.ts). Its own process, at a raised priority, so that its CPU is measured on its own and
 * its timers never wait behind another process's work (a client's rendering would otherwise stretch
 * the delay it is measured under).
 *
 * Environment: TARGET_HOST, TARGET_PORT. Sends {@link ProxyEvent} `listening` once it listens
 * (no delay until configured); answers each {@link ProxyRequest}. Exits when the harness disconnects.
 */
import { setPriority } from 'node:os';
import { type Delays, LatencyProxy, type ProxyStats } from './latency-proxy.js';

/**
 * Messages the harness sends to the proxy process: `configure` sets the delays of connections
 * accepted from now on and zeroes the counters and the CPU reading; `report` asks for them.
 */
export type ProxyRequest = ({ type: 'configure' } & Delays) | { type: 'report' };

/** Messages the proxy process sends to the harness. */
export type ProxyEvent =
  | { type: 'listening'; port: number }
  | { type: 'configured' }
  /** Counters since the last configure, and the CPU ms (user + system) the process used meanwhile. */
  | { type: 'report'; stats: ProxyStats; cpuMs: number };

function send(event: ProxyEvent): void {
  process.send?.(event);
}

const proxy = await LatencyProxy.start(
  { host: process.env.TARGET_HOST ?? '127.0.0.1', port: Number(process.env.TARGET_PORT) },
  { clientToServerMs: 0, serverToClientMs: 0 },
);
// The proxy stands for the network, whose delay does not grow when the endpoints keep the CPU busy:
// ahead of them in the scheduler, its timers fire on time on a loaded 2-core machine. It needs root;
// without it the proxy runs at normal priority (and the measured delays show it).
try {
  setPriority(-10);
} catch {}
let cpuAtConfigure = process.cpuUsage();

process.on('message', (request: ProxyRequest) => {
  if (request.type === 'configure') {
    proxy.configure({
      clientToServerMs: request.clientToServerMs,
      serverToClientMs: request.serverToClientMs,
    });
    cpuAtConfigure = process.cpuUsage();
    send({ type: 'configured' });
  } else {
    const cpu = process.cpuUsage(cpuAtConfigure);
    send({ type: 'report', stats: proxy.stats(), cpuMs: (cpu.user + cpu.system) / 1000 });
  }
});
process.on('disconnect', () => void proxy.close().finally(() => process.exit(0)));
send({ type: 'listening', port: proxy.port });
