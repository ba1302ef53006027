/** BullWorker: the BullMQ Worker createWorker runs: a failing job fetch paced, a close that can be cut short. */
import { setTimeout as sleep } from 'node:timers/promises';
import { isNotConnectionError, type Job, type Worker } from 'bullmq';
import { workerDefaults } from './defaults.js';
import { type CounterRepair, guardJobCounters } from './job-counters.js';
import { MailroomWorker } from './unreadable-jobs.js';

type BatchJob = MailroomWorker extends Worker<infer Data> ? Job<Data> : never;

/**
 * {@link MailroomWorker} (which takes unreadable jobs) with two changes for a Redis that misbehaves:
 *
 * - A job fetch that Redis answers with an error is retried after a pause that doubles per failure
 *   (fetchRetryDelay up to fetchRetryMaxDelay), instead of at once. bullmq 6.7's main loop
 *   (Worker.mainLoop, retryIfFailed with onlyEmitError) waits runRetryDelay after a connection
 *   error but fetches again at once after a reply error: a Redis Cluster node answering MOVED made a
 *   worker send ~9,000 fetches a second, each one an 'error' event and a log line.
 * - {@link BullWorker.forceClose} ends what close() waits for when Redis does not answer.
 */
export class BullWorker extends MailroomWorker {
  readonly #closing = new AbortController();
  #failedFetches = 0;

  /**
   * Told of each job counter that was not an integer and got a stand-in (see job-counters.ts); the
   * job goes on. Default: nothing. MUST not throw.
   */
  onCounterRepair: (repair: CounterRepair) => void = () => {};

  protected override createBackend(): void {
    super.createBackend();
    // Called from BullMQ's constructor, before this class's fields exist: both are read later.
    guardJobCounters(this.backend, {
      tokenPrefix: () => `${this.id}:`,
      onRepair: (repair) => this.onCounterRepair(repair),
    });
  }

  protected override async moveToActive(token: string, name?: string): Promise<BatchJob> {
    try {
      const job = await super.moveToActive(token, name);
      this.#failedFetches = 0;
      return job;
    } catch (error) {
      // Connection errors: BullMQ waits them out itself.
      if (error instanceof Error && isNotConnectionError(error)) await this.#pauseAfterFailedFetch();
      throw error;
    }
  }

  async #pauseAfterFailedFetch(): Promise<void> {
    const delay = Math.min(
      workerDefaults.fetchRetryDelay * 2 ** this.#failedFetches,
      workerDefaults.fetchRetryMaxDelay,
    );
    this.#failedFetches++;
    // close() waits for the main loop, so a pause ends as soon as it is called.
    await sleep(delay, undefined, { signal: this.#closing.signal }).catch(() => {});
  }

  override close(force = false): Promise<void> {
    this.#closing.abort();
    return super.close(force);
  }

  /**
   * What close() cannot finish while Redis does not answer (it waits for the blocking connection to
   * be ready before it disconnects it, and for the main loop's fetch): stops renewing the locks of
   * the batches still in flight, so that another worker takes them over once they expire, and
   * disconnects the connections BullMQ owns without a word to Redis (the one it shares is the
   * caller's). Starts the cut and returns; never throws.
   */
  forceClose(): void {
    this.#closing.abort();
    void this.lockManager.close().catch(() => {});
    void this.getBackend()
      .close(true)
      .catch(() => {});
  }
}
