/** LogThrottle: an error that repeats is logged once at once, then as a count at growing intervals. */
import type { Logger } from 'pino';

/** Options of {@link LogThrottle}; milliseconds. */
export interface LogThrottleOptions {
  /** Window after the first line of a message: its repeats within it become one summary line. */
  initialInterval: number;
  /** The window doubles after each summary, up to this; a message quiet this long starts over. */
  maxInterval: number;
  /** Messages tracked at once; past it, lines are told apart by their msg alone. Default 100. */
  maxMessages?: number;
}

/** The fields of a throttled line: those of a pino line, `err` being the error's message. */
export type ThrottledFields = Record<string, unknown> & { err?: string };

type Level = 'info' | 'warn' | 'error';

interface Repeats {
  level: Level;
  msg: string;
  /** Current window length. */
  interval: number;
  /** When the current window ends: a repeat before it is counted, not logged. */
  windowEnd: number;
  /** When the last line for this message was written. */
  loggedAt: number;
  /** When the message last occurred. */
  seenAt: number;
  /** Repeats counted since the last line, and the fields of the latest one. */
  count: number;
  fields: ThrottledFields;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Logs a message that keeps coming back (a Redis that refuses every command, a server that is down)
 * with backoff instead of once per try: the first occurrence at once; repeats of the same msg and
 * `err` within a window are counted, and written as ONE line with `repeated: <count>` and
 * `overMs: <since the previous line>` when the window ends (or at the next occurrence after it). Each
 * summary doubles the window, from `initialInterval` up to `maxInterval`; a message that stays quiet
 * for `maxInterval` starts over. So a hot loop of errors writes about log2(maxInterval /
 * initialInterval) lines in its first minute and one a window after that, and no repeat goes
 * uncounted.
 */
export class LogThrottle {
  readonly #logger: Logger;
  readonly #initialInterval: number;
  readonly #maxInterval: number;
  readonly #maxMessages: number;
  readonly #repeats = new Map<string, Repeats>();

  constructor(logger: Logger, options: LogThrottleOptions) {
    this.#logger = logger;
    this.#initialInterval = options.initialInterval;
    this.#maxInterval = Math.max(options.maxInterval, options.initialInterval);
    this.#maxMessages = options.maxMessages ?? 100;
  }

  /** Logs `msg` with `fields` at `level`, or counts it as a repeat. Never throws. */
  log(level: Level, fields: ThrottledFields, msg: string): void {
    const now = Date.now();
    const key = this.#key(level, msg, fields.err);
    let repeats = this.#repeats.get(key);
    if (repeats && now - repeats.seenAt >= this.#maxInterval) {
      // Quiet long enough: whatever was counted is reported, and the message starts over.
      this.#summarise(repeats, now);
      this.#forget(key, repeats);
      repeats = undefined;
    }
    if (!repeats) {
      this.#repeats.set(key, {
        level,
        msg,
        interval: this.#initialInterval,
        windowEnd: now + this.#initialInterval,
        loggedAt: now,
        seenAt: now,
        count: 0,
        fields,
        timer: undefined,
      });
      this.#logger[level](fields, msg);
      return;
    }
    repeats.seenAt = now;
    repeats.count++;
    repeats.fields = fields;
    if (now >= repeats.windowEnd) this.#summarise(repeats, now);
    else repeats.timer ??= this.#schedule(repeats);
  }

  /** Writes the counts not yet written and stops the timers (at shutdown). */
  flush(): void {
    const now = Date.now();
    for (const [key, repeats] of this.#repeats) {
      this.#summarise(repeats, now);
      this.#forget(key, repeats);
    }
  }

  #key(level: Level, msg: string, err: string | undefined): string {
    const key = `${level}\u0000${msg}\u0000${err ?? ''}`;
    if (this.#repeats.has(key)) return key;
    if (this.#repeats.size >= this.#maxMessages) this.#forgetQuiet();
    if (this.#repeats.size < this.#maxMessages) return key;
    // Too many different errors at once (each naming a job, say): count them by msg alone, so that
    // memory stays bounded and a flood of them is still summarised.
    return `${level}\u0000${msg}`;
  }

  /** Forgets the messages quiet for maxInterval (reporting what they counted). */
  #forgetQuiet(): void {
    const now = Date.now();
    for (const [key, repeats] of this.#repeats) {
      if (now - repeats.seenAt < this.#maxInterval) continue;
      this.#summarise(repeats, now);
      this.#forget(key, repeats);
    }
  }

  #schedule(repeats: Repeats): NodeJS.Timeout {
    const timer = setTimeout(() => {
      repeats.timer = undefined;
      this.#summarise(repeats, Date.now());
    }, repeats.windowEnd - Date.now());
    // A pending summary must not keep the process alive.
    timer.unref();
    return timer;
  }

  /** Writes one line for the repeats counted, if any, and opens the next, longer window. */
  #summarise(repeats: Repeats, now: number): void {
    if (repeats.count === 0) return;
    this.#logger[repeats.level](
      { ...repeats.fields, repeated: repeats.count, overMs: now - repeats.loggedAt },
      repeats.msg,
    );
    repeats.count = 0;
    repeats.loggedAt = now;
    repeats.interval = Math.min(repeats.interval * 2, this.#maxInterval);
    repeats.windowEnd = now + repeats.interval;
    if (repeats.timer) {
      clearTimeout(repeats.timer);
      repeats.timer = undefined;
    }
  }

  #forget(key: string, repeats: Repeats): void {
    if (repeats.timer) clearTimeout(repeats.timer);
    this.#repeats.delete(key);
  }
}
