/** The worker's HTTP endpoint: /metrics, /healthz and /readyz. */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { Registry } from 'prom-client';

/** What the HTTP endpoint asks the worker. */
export interface HealthSource {
  /** Process is alive and not wedged: /healthz. */
  live(): boolean;
  /** Connected to Redis and taking jobs: /readyz. */
  ready(): boolean;
}

/** A running metrics/health endpoint. */
export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Starts the worker's opt-in HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`
 * (liveness) and `/readyz` (readiness: Redis connected and not shutting down). Port 0 picks a free port.
 */
export async function startMetricsServer(
  port: number,
  registry: Registry,
  health: HealthSource,
  host = '0.0.0.0',
): Promise<MetricsServer> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    const reply = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      response.writeHead(status, { 'content-type': type });
      response.end(body);
    };
    if (request.method !== 'GET' && request.method !== 'HEAD') return reply(405, 'method not allowed\n');
    if (path === '/metrics') {
      registry
        .metrics()
        .then((text) => reply(200, text, registry.contentType))
        .catch((error: unknown) => reply(500, `metrics failed: ${String(error)}\n`));
      return;
    }
    if (path === '/healthz') return health.live() ? reply(200, 'ok\n') : reply(503, 'unhealthy\n');
    if (path === '/readyz') return health.ready() ? reply(200, 'ready\n') : reply(503, 'not ready\n');
    reply(404, 'not found: try /metrics, /healthz or /readyz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // A scraper's open (keep-alive or unfinished) request must not hold up a shutdown.
        server.closeAllConnections();
      }),
  };
}

/**
 * An HTTP server for `handler` listening on `host:port` (0 picks a free port), with Node's own limits
 * under the handler's: headers within 10 s, the whole request within 30 s. Rejects with the listen
 * error (EADDRINUSE...). For the public-facing servers (unsubscribe endpoint, dashboard).
 */
export async function listenHttp(handler: RequestListener, port: number, host: string): Promise<Server> {
  const server = createServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
