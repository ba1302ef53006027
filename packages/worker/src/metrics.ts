/** The worker's Prometheus metrics: sent, failed and retried messages, batches, latencies, connections. */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What the worker reports as it works; {@link PrometheusMetrics} is the implementation. */
export interface WorkerMetrics {
  messageSent(latencySeconds: number | undefined): void;
  messageFailed(reason: string): void;
  messageRetried(reason: string): void;
  batchFinished(
    seconds: number,
    outcome: 'completed' | 'failed' | 'retry' | 'requeued' | 'paused' | 'invalid' | 'lock-lost',
  ): void;
  connectionOpened(): void;
  rateLimitWaited(milliseconds: number): void;
  batchesInFlight(delta: number): void;
  /** Addresses newly put on the suppression list by the worker (auto-suppress.ts), by reason. */
  addressesSuppressed(reason: string, count: number): void;
}

/** Prometheus counters and histograms of one worker process, in their own registry. */
export class PrometheusMetrics implements WorkerMetrics {
  readonly registry: Registry;
  readonly sent: Counter;
  readonly failed: Counter<'reason'>;
  readonly retried: Counter<'reason'>;
  readonly batches: Counter<'outcome'>;
  readonly batchDuration: Histogram;
  readonly messageLatency: Histogram;
  readonly connections: Counter;
  readonly rateLimitWaits: Counter;
  readonly rateLimitWaitSeconds: Counter;
  readonly inFlight: Gauge;
  readonly suppressed: Counter<'reason'>;

  constructor(registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    this.sent = new Counter({
      name: 'mailroom_messages_sent_total',
      help: 'Messages accepted by the mail server.',
      registers,
    });
    this.failed = new Counter({
      name: 'mailroom_messages_failed_total',
      help: 'Messages that failed for good (permanent, or transient until the attempts ran out), by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.retried = new Counter({
      name: 'mailroom_messages_retried_total',
      help: 'Messages scheduled for another attempt after a transient failure, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.batches = new Counter({
      name: 'mailroom_batches_total',
      help: 'Batch jobs processed, by how the processing ended.',
      labelNames: ['outcome'],
      registers,
    });
    this.batchDuration = new Histogram({
      name: 'mailroom_batch_duration_seconds',
      help: 'Time to process one batch job (one SMTP connection).',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.messageLatency = new Histogram({
      name: 'mailroom_message_latency_seconds',
      help: 'Time from enqueue to acceptance by the mail server, per message.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600],
      registers,
    });
    this.connections = new Counter({
      name: 'mailroom_smtp_connections_opened_total',
      help: 'Backend (SMTP) connections opened.',
      registers,
    });
    this.rateLimitWaits = new Counter({
      name: 'mailroom_rate_limit_waits_total',
      help: 'Messages that waited for the global rate limit.',
      registers,
    });
    this.rateLimitWaitSeconds = new Counter({
      name: 'mailroom_rate_limit_wait_seconds_total',
      help: 'Total time spent waiting for the global rate limit.',
      registers,
    });
    this.inFlight = new Gauge({
      name: 'mailroom_batches_in_flight',
      help: 'Batches being processed now.',
      registers,
    });
    this.suppressed = new Counter({
      name: 'mailroom_suppressed_total',
      help: 'Addresses the worker put on the suppression list (hard bounces), by reason.',
      labelNames: ['reason'],
      registers,
    });
  }

  messageSent(latencySeconds: number | undefined): void {
    this.sent.inc();
    if (latencySeconds !== undefined) this.messageLatency.observe(latencySeconds);
  }
  messageFailed(reason: string): void {
    this.failed.inc({ reason });
  }
  messageRetried(reason: string): void {
    this.retried.inc({ reason });
  }
  batchFinished(seconds: number, outcome: string): void {
    this.batches.inc({ outcome });
    // A paused campaign's batch is looked at once a second and put back untouched: timing those
    // looks would drown the real batch durations.
    if (outcome !== 'paused') this.batchDuration.observe(seconds);
  }
  connectionOpened(): void {
    this.connections.inc();
  }
  rateLimitWaited(milliseconds: number): void {
    if (milliseconds < 1) return;
    this.rateLimitWaits.inc();
    this.rateLimitWaitSeconds.inc(milliseconds / 1000);
  }
  batchesInFlight(delta: number): void {
    this.inFlight.inc(delta);
  }
  addressesSuppressed(reason: string, count: number): void {
    // inc by 0 still creates the series: it shows from the first hard bounce on, even one already listed.
    this.suppressed.inc({ reason }, count);
  }
}
