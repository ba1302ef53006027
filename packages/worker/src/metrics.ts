/** The worker's Prometheus metrics: sent, failed and retried messages, batches, latencies, connections, the queue's backlog. */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { BACKLOG_STATES, type QueueBacklog, type StateBacklog } from './queue-gauges.js';

/**
 * Reads a queue's backlog for a scrape; undefined when it cannot now (Redis away): the backlog
 * gauges of that queue are then left out of the scrape rather than shown as 0.
 */
export type BacklogReader = () => Promise<QueueBacklog | undefined>;

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
  /**
   * Reports `queue`'s backlog gauges, read with `read` at each scrape, until the returned function is
   * called. Optional: a sink without gauges leaves it out.
   */
  trackQueue?(queue: string, read: BacklogReader): () => void;
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
  readonly queueBatches: Gauge<'queue' | 'state'>;
  readonly queueMessages: Gauge<'queue' | 'state'>;
  readonly campaignMessages: Gauge<'queue' | 'campaign' | 'state'>;
  readonly #backlogReaders = new Map<string, BacklogReader>();
  #reading: Promise<Map<string, QueueBacklog>> | undefined;

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
    // The backlog gauges are read from Redis when scraped, not kept up to date job by job: every
    // worker of a queue reports the same values (aggregate them with max, not sum).
    const backlog = this;
    const stateGauge = (name: string, help: string, pick: (state: StateBacklog) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['queue', 'state'],
        registers,
        async collect() {
          const readings = await backlog.#read();
          this.reset();
          for (const [queue, reading] of readings)
            for (const state of BACKLOG_STATES) this.set({ queue, state }, pick(reading.states[state]));
        },
      });
    this.queueBatches = stateGauge(
      'mailroom_queue_batches',
      'Batch jobs of the queue by state (waiting, delayed: retries and scheduled, active, failed: dead letters), read at scrape time.',
      (state) => state.batches,
    );
    this.queueMessages = stateGauge(
      'mailroom_queue_messages',
      'Messages in the batch jobs of the queue by state, read at scrape time (exact up to 8 batches per state, estimated from their average past it).',
      (state) => state.messages,
    );
    this.campaignMessages = new Gauge({
      name: 'mailroom_campaign_messages',
      help: 'Messages of each running campaign: sent, failed and pending (not settled yet), read at scrape time.',
      labelNames: ['queue', 'campaign', 'state'],
      registers,
      async collect() {
        const readings = await backlog.#read();
        // Reset at each scrape: a campaign that completed, was paused or cancelled drops out.
        this.reset();
        for (const [queue, reading] of readings) {
          for (const { id: campaign, sent, failed, pending } of reading.campaigns) {
            this.set({ queue, campaign, state: 'sent' }, sent);
            this.set({ queue, campaign, state: 'failed' }, failed);
            this.set({ queue, campaign, state: 'pending' }, pending);
          }
        }
      },
    });
  }

  /**
   * One reading of every tracked queue per scrape: the three gauges are collected at once and share
   * it. Never rejects: a queue whose reading failed is left out.
   */
  #read(): Promise<Map<string, QueueBacklog>> {
    this.#reading ??= (async () => {
      const readings = new Map<string, QueueBacklog>();
      await Promise.all(
        [...this.#backlogReaders].map(async ([queue, read]) => {
          const reading = await read().catch(() => undefined);
          if (reading) readings.set(queue, reading);
        }),
      );
      return readings;
    })().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  trackQueue(queue: string, read: BacklogReader): () => void {
    this.#backlogReaders.set(queue, read);
    return () => {
      if (this.#backlogReaders.get(queue) === read) this.#backlogReaders.delete(queue);
    };
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
