/** createProducer: validate messages, chunk them into batch jobs and enqueue them atomically on BullMQ. */
import { randomUUID } from 'node:crypto';
import {
  ConfigError,
  coerceError,
  EmailMessage,
  envelopeAddress,
  MailError,
  settings,
  toWire,
  ValidationError,
  validateQueueName,
  type WireMessage,
} from '@mailroom/core';
import {
  BATCH_JOB_NAME,
  type BatchJobData,
  campaignShardOf,
  checkShardCount,
  claimLayout,
  createRedis,
  describeRedis,
  EpochWatch,
  MAX_BATCH_MESSAGES,
  normalizeSuppressedAddress,
  packMessages,
  protocolDefaults,
  type QueueKeys,
  type QueueLayout,
  type QueueShard,
  queueLayout,
  type RedisClient,
  type RedisInput,
  redisInputFrom,
  SuppressionList,
  waitForRedis,
} from '@mailroom/core/protocol';
import { type FlowJob, FlowProducer, Queue } from 'bullmq';
import { type Logger, pino } from 'pino';
import { producerDefaults } from './defaults.js';

/** Options of {@link createProducer}; see producerDefaults for every default. */
export interface ProducerOptions {
  /**
   * Redis URL, ioredis options, `{ cluster: 'host:port,...' }` seed nodes, or a client (one node or
   * an ioredis Cluster). Default REDIS_CLUSTER_NODES when set, else REDIS_URL.
   */
  redis?: RedisInput;
  /** Shards of the queue (hash tags spread over a cluster's masters), 1 to 64. Default MAILROOM_SHARDS, else 1. */
  shards?: number;
  /**
   * Opens the queue to look at it (stats, dead letters, campaign status, the dashboard): ready()
   * does not claim the layout (a tool started with another MAILROOM_SHARDS must not take the queue
   * over); the first enqueue still does. Default false.
   */
  inspect?: boolean;
  /** Queue name, checked by validateQueueName. Default MAILROOM_QUEUE, else `mail`. */
  queue?: string;
  /** Key prefix (a Redis Cluster hash tag). Default MAILROOM_PREFIX, else `{mailroom}`. */
  prefix?: string;
  /** Messages per batch job. Default 50. */
  batchSize?: number;
  /** Bytes of wire form after which a batch is closed early. Default 4 MiB. */
  maxBatchBytes?: number;
  /** Largest message accepted, in bytes of wire form. Default 10 MiB. */
  maxMessageBytes?: number;
  /** Milliseconds an idempotency key blocks repeats. Default 24 h. */
  idempotencyTtl?: number;
  /** Milliseconds enqueue waits for Redis before failing. Default 1000. */
  connectTimeout?: number;
  /** Failed jobs (dead letters) kept: age in ms and count. Default 7 days, 10,000. */
  keepFailed?: { age: number; count: number };
  /** pino logger. Default: a new pino logger named mailroom-producer. */
  logger?: Logger;
}

/** Options of one {@link Producer.enqueue} call. */
export interface EnqueueOptions {
  /** BullMQ priority: 1 (first) to 2,097,152 (last); unset jobs go before prioritized ones. */
  priority?: number;
  /** Milliseconds to wait before the messages may be sent. Exclusive with sendAt. */
  delay?: number;
  /** When the messages may be sent (Date or epoch ms). Exclusive with delay. */
  sendAt?: Date | number;
  /**
   * Makes the call idempotent: the same key enqueues nothing again within idempotencyTtl, even after
   * the first call's jobs completed and were removed. Keys are per queue.
   */
  idempotencyKey?: string;
  /** Failures of these messages are recorded and logged but do not dead-letter their jobs; Redis being down returns 0 instead of throwing. */
  failSilently?: boolean;
  /** Campaign the messages belong to (set by campaigns). */
  campaign?: string;
  /**
   * Leaves out recipients on the queue's suppression list (bounced, unsubscribed, complained,
   * suppressed by hand): they are dropped from To, Cc and Bcc, and a message left with no recipient is
   * not enqueued; the result lists them (`suppressed`, `skippedMessages`). Costs one Redis lookup per
   * call. Default false: transactional mail (a password reset, a receipt) goes to whoever asks for it.
   */
  skipSuppressed?: boolean;
}

/** What one enqueue call did. */
export interface EnqueueResult {
  /** Messages enqueued by this call: 0 for a repeated idempotency key or a silent Redis failure. */
  messages: number;
  /** Ids of the batch jobs written; for a repeated idempotency key, those of the first call. */
  jobIds: string[];
  /** True when the idempotency key had been used already and nothing new was enqueued. */
  duplicate: boolean;
  /** With skipSuppressed: the addresses left out (as the suppression list keys them), each once. */
  suppressed?: string[];
  /** With skipSuppressed: indexes of the messages not enqueued because every recipient was suppressed. */
  skippedMessages?: number[];
}

/** A producer: enqueues messages as batch jobs. Create with {@link createProducer}. */
export interface Producer {
  readonly queue: string;
  readonly prefix: string;
  /** The key names of the queue's home shard (queue-wide keys: suppression list, epoch, workers...). */
  readonly keys: QueueKeys;
  /** Where the queue's shards live (one shard: the unsharded layout). */
  readonly layout: QueueLayout;
  /** The producer's Redis client (fail-fast: no offline queue). */
  readonly redis: RedisClient;
  /** Options in effect, defaults applied. */
  readonly options: Readonly<Required<Omit<ProducerOptions, 'redis' | 'logger'>>>;
  readonly logger: Logger;
  /**
   * This producer's view of the queue's epoch marker: it notices (and logs, once) when Redis lost the
   * queue's data between two of its enqueues, and campaigns use it to refuse resending (epoch.ts).
   */
  readonly epoch: EpochWatch;
  /**
   * Validates every message (headers, addresses, envelope, size; a {@link CheckedMessage} from
   * checkMessage is taken as checked), then writes all batch jobs in one atomic Redis transaction. A bad message throws ValidationError naming `messages[i]` and nothing
   * is enqueued. Redis unreachable: throws MailError EREDIS within connectTimeout, or with
   * failSilently logs and returns 0 messages.
   */
  enqueue(
    messages: EmailMessage | CheckedMessage | readonly (EmailMessage | CheckedMessage)[],
    options?: EnqueueOptions,
  ): Promise<EnqueueResult>;
  /** A BullMQ Queue of the home shard on the same connection, for counts and inspection. */
  getQueue(): Queue;
  /** The BullMQ Queue of every shard (index = shard index), on the same connection. */
  getQueues(): Queue[];
  /**
   * The shard campaign `id` lives on (its records, counters and batches); `assign` pins a campaign
   * that has no shard yet (campaign start). Home when the queue has one shard.
   */
  campaignShard(id: string, options?: { assign?: boolean }): Promise<QueueShard>;
  /** Waits until Redis answers (or throws EREDIS), e.g. at start-up. */
  ready(): Promise<void>;
  /** Closes what the producer opened. Idempotent. */
  close(): Promise<void>;
}

const MAX_PRIORITY = 2_097_152;

/**
 * `shard`, when workers of `layout` read it; else MailError ESHARD: campaign `id` was pinned to a
 * shard under another MAILROOM_SHARDS, and nothing may be enqueued (or claimed for a retry) for it.
 */
export function consumedShard(shard: QueueShard, id: string, layout: QueueLayout): QueueShard {
  if (shard.index !== -1) return shard;
  throw new MailError(
    `campaign "${id}" lives on shard ${shard.prefix}, which MAILROOM_SHARDS=${layout.shards.length} does not have: ` +
      'no worker would take its batches. Run it with the MAILROOM_SHARDS it was started with.',
    { code: 'ESHARD' },
  );
}

function atMost(value: number, limit: number, name: string): number {
  if (value > limit)
    throw new ValidationError(`${name} must be at most ${limit} (got ${value})`, { field: name });
  return value;
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new ValidationError(`${name} must be a positive integer (got ${JSON.stringify(value)})`, {
      field: name,
    });
  }
  return value;
}

function checkEnqueueOptions(options: EnqueueOptions): { delay: number | undefined } {
  if (options.priority !== undefined) {
    if (!Number.isInteger(options.priority) || options.priority < 1 || options.priority > MAX_PRIORITY) {
      throw new ValidationError(
        `priority must be an integer from 1 to ${MAX_PRIORITY} (got ${JSON.stringify(options.priority)})`,
        {
          field: 'priority',
        },
      );
    }
  }
  if (options.delay !== undefined && options.sendAt !== undefined) {
    throw new ValidationError('delay and sendAt are exclusive: give one of them', { field: 'delay' });
  }
  let delay = options.delay;
  if (delay !== undefined && (!Number.isFinite(delay) || delay < 0)) {
    throw new ValidationError(`delay must be a number of milliseconds >= 0 (got ${JSON.stringify(delay)})`, {
      field: 'delay',
    });
  }
  if (options.sendAt !== undefined) {
    const at = options.sendAt instanceof Date ? options.sendAt.getTime() : options.sendAt;
    if (!Number.isFinite(at)) {
      throw new ValidationError(
        `sendAt must be a Date or epoch milliseconds (got ${String(options.sendAt)})`,
        { field: 'sendAt' },
      );
    }
    delay = Math.max(0, at - Date.now());
  }
  const key = options.idempotencyKey;
  if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > 512)) {
    throw new ValidationError('idempotencyKey must be a non-empty string of at most 512 characters', {
      field: 'idempotencyKey',
    });
  }
  return { delay: delay === undefined || delay === 0 ? undefined : Math.round(delay) };
}

/**
 * A message checked by {@link checkMessage}: its wire form, ready to be enqueued as it is. Passing it
 * to {@link Producer.enqueue} instead of the EmailMessage skips a second validation and
 * serialization (campaigns and the CLI check each message before they enqueue a chunk). Only what
 * checkMessage returned counts as checked; anything else passed to enqueue is checked again.
 */
export interface CheckedMessage {
  readonly wire: WireMessage;
  /** Its size as the batch byte budget counts it. */
  readonly size: number;
  /** The size cap it was checked against. */
  readonly maxMessageBytes: number;
}

/** What checkMessage returned (so a hand-made `{ wire }` is never taken as checked). */
const checkedMessages = new WeakSet<CheckedMessage>();

/** Whether `value` is a {@link CheckedMessage} that checkMessage returned. */
export function isCheckedMessage(value: unknown): value is CheckedMessage {
  return typeof value === 'object' && value !== null && checkedMessages.has(value as CheckedMessage);
}

/**
 * Checks one message the way a worker will need it, as {@link Producer.enqueue} does for every
 * message before it enqueues any: renders its headers (injection, names, addresses), checks its
 * envelope (a sender and at least one recipient, all usable in SMTP), converts it to the wire form and
 * applies the size cap (`maxMessageBytes`, default producerDefaults.maxMessageBytes) to the wire
 * form's JSON size in bytes. Returns the wire form and its size (exact near the cap, otherwise the
 * character count, which the batch byte budget uses). Throws ValidationError (or TypeError) with the reason, naming no index; enqueue
 * prefixes `messages[i]`. Any other failure while checking (a RangeError on a huge field) is turned
 * into a ValidationError with it as `cause`; a MailError that is not a ValidationError (a ConfigError
 * from a bad setting) is about the environment, not the message, and is thrown as it is. For callers
 * that validate a stream before enqueueing it in chunks.
 */
export function checkMessage(
  message: unknown,
  options: { failSilently?: boolean; maxMessageBytes?: number } = {},
): CheckedMessage {
  try {
    const checked: CheckedMessage = Object.freeze({
      ...checkMessageFields(message, options),
      maxMessageBytes: options.maxMessageBytes ?? producerDefaults.maxMessageBytes,
    });
    checkedMessages.add(checked);
    return checked;
  } catch (error) {
    if (error instanceof TypeError || error instanceof MailError) throw error;
    // Whatever a check trips over in this message is still this message's fault, and the caller
    // must be able to pin it on the message (enqueue names its index, a campaign counts the
    // recipient invalid) instead of an unnamed RangeError stopping the whole call.
    const cause = coerceError(error);
    throw new ValidationError(`it could not be checked: ${cause.name}: ${cause.message}`, { cause });
  }
}

function checkMessageFields(
  message: unknown,
  options: { failSilently?: boolean; maxMessageBytes?: number },
): { wire: WireMessage; size: number } {
  const maxBytes = options.maxMessageBytes ?? producerDefaults.maxMessageBytes;
  if (!(message instanceof EmailMessage)) {
    throw new ValidationError('not an EmailMessage');
  }
  message.validate();
  envelopeAddress(message.fromEmail, 'fromEmail');
  const recipients = message.recipients();
  if (recipients.length === 0) throw new ValidationError('it has no recipients (to, cc and bcc are empty)');
  recipients.forEach((address, i) => {
    envelopeAddress(address, `recipients[${i}]`);
  });
  const wire = toWire(
    message,
    options.failSilently === undefined ? {} : { failSilently: options.failSilently },
  );
  // Serializing every message just to measure it would double the producer's work (BullMQ serializes
  // the batch anyway): a bound from string lengths settles all but messages near the cap.
  const { approximate, bound } = wireSize(wire);
  const size = bound > maxBytes ? Buffer.byteLength(JSON.stringify(wire)) : approximate;
  if (size > maxBytes) {
    throw new ValidationError(
      `it is ${size} bytes in wire form, over the maxMessageBytes limit of ${maxBytes}`,
      {
        field: 'size',
      },
    );
  }
  return { wire, size };
}

/**
 * Size of a value's JSON form without serializing it: `approximate` counts characters (what the batch
 * byte budget needs), `bound` can only be larger than the UTF-8 byte count (a UTF-16 unit is at most
 * 6 bytes, as a \u escape).
 */
export function wireSize(value: unknown): { approximate: number; bound: number } {
  if (typeof value === 'string') return { approximate: value.length + 2, bound: value.length * 6 + 2 };
  if (value === null || typeof value !== 'object') return { approximate: 8, bound: 24 };
  let approximate = 2;
  let bound = 2;
  if (Array.isArray(value)) {
    for (const item of value) {
      const size = wireSize(item);
      approximate += size.approximate + 1;
      bound += size.bound + 1;
    }
    return { approximate, bound };
  }
  for (const key in value) {
    const size = wireSize((value as Record<string, unknown>)[key]);
    approximate += key.length + 4 + size.approximate;
    bound += key.length * 6 + 4 + size.bound;
  }
  return { approximate, bound };
}

/** {@link checkMessage} for `messages[index]` of an enqueue call: errors name `messages[index]`. */
function prepareMessage(
  message: unknown,
  index: number,
  options: EnqueueOptions,
  maxBytes: number,
): { wire: WireMessage; size: number } {
  const where = `messages[${index}]`;
  if (isCheckedMessage(message)) {
    // Checked already (a campaign chunk, the CLI): only the size cap (when this producer's is
    // smaller than the one it was checked against) and the enqueue's failSilently may differ.
    if (message.maxMessageBytes > maxBytes) {
      const size = Buffer.byteLength(JSON.stringify(message.wire));
      if (size > maxBytes) {
        throw new ValidationError(
          `${where} rejected: it is ${size} bytes in wire form, over the maxMessageBytes limit of ${maxBytes}`,
          { field: `${where}.size` },
        );
      }
    }
    const silent = options.failSilently;
    if (silent === undefined || message.wire.failSilently === silent) return message;
    return { wire: { ...message.wire, failSilently: silent }, size: message.size };
  }
  try {
    return checkMessage(message, {
      maxMessageBytes: maxBytes,
      ...(options.failSilently === undefined ? {} : { failSilently: options.failSilently }),
    });
  } catch (error) {
    if (error instanceof TypeError || error instanceof ValidationError) {
      const field = error instanceof ValidationError && error.field ? `${where}.${error.field}` : where;
      throw new ValidationError(`${where} rejected: ${error.message}`, { field, cause: error });
    }
    throw error;
  }
}

/**
 * The messages without their suppressed recipients (To, Cc and Bcc entries whose address is on the
 * list), those left with no recipient dropped; what was left out, for the caller. One lookup for the
 * whole call.
 */
async function leaveOutSuppressed(
  suppression: SuppressionList,
  prepared: readonly { wire: WireMessage; size: number }[],
): Promise<{
  prepared: { wire: WireMessage; size: number }[];
  suppressed: string[];
  skippedMessages: number[];
}> {
  const fields = ['to', 'cc', 'bcc'] as const;
  const addresses = [...new Set(prepared.flatMap(({ wire }) => fields.flatMap((field) => wire[field])))];
  const records = await suppression.lookup(addresses);
  const suppressedEntries = new Set(addresses.filter((_, index) => records[index] !== undefined));
  if (suppressedEntries.size === 0) return { prepared: [...prepared], suppressed: [], skippedMessages: [] };
  const suppressed = new Set<string>();
  const skippedMessages: number[] = [];
  const kept: { wire: WireMessage; size: number }[] = [];
  prepared.forEach((message, index) => {
    const { wire } = message;
    if (!fields.some((field) => wire[field].some((entry) => suppressedEntries.has(entry)))) {
      kept.push(message);
      return;
    }
    const filtered = { ...wire };
    for (const field of fields) {
      filtered[field] = wire[field].filter((entry) => {
        if (!suppressedEntries.has(entry)) return true;
        suppressed.add(normalizeSuppressedAddress(entry));
        return false;
      });
    }
    if (fields.some((field) => filtered[field].length > 0)) kept.push({ wire: filtered, size: message.size });
    else skippedMessages.push(index);
  });
  return { prepared: kept, suppressed: [...suppressed], skippedMessages };
}

/**
 * Creates a producer. Connecting happens in the background; enqueue fails fast if Redis is not there.
 * An invalid queue name (validateQueueName) or option throws at once, before any connection.
 */
export function createProducer(options: ProducerOptions = {}): Producer {
  const resolved = {
    // MAILROOM_QUEUE / MAILROOM_PREFIX are the worker's settings too (core settings, env or
    // configure()): one setting configures both sides, and one rule checks the name on both.
    queue: validateQueueName(options.queue ?? settings.MAILROOM_QUEUE),
    prefix: options.prefix ?? settings.MAILROOM_PREFIX,
    batchSize: atMost(
      positiveInteger(options.batchSize ?? producerDefaults.batchSize, 'batchSize'),
      MAX_BATCH_MESSAGES,
      'batchSize',
    ),
    maxBatchBytes: positiveInteger(options.maxBatchBytes ?? producerDefaults.maxBatchBytes, 'maxBatchBytes'),
    maxMessageBytes: positiveInteger(
      options.maxMessageBytes ?? producerDefaults.maxMessageBytes,
      'maxMessageBytes',
    ),
    idempotencyTtl: positiveInteger(
      options.idempotencyTtl ?? producerDefaults.idempotencyTtl,
      'idempotencyTtl',
    ),
    connectTimeout: positiveInteger(
      options.connectTimeout ?? producerDefaults.connectTimeout,
      'connectTimeout',
    ),
    keepFailed: options.keepFailed ?? {
      age: producerDefaults.keepFailedAge,
      count: producerDefaults.keepFailedCount,
    },
  };
  const redisInput = options.redis ?? redisInputFrom(settings.REDIS_URL, settings.REDIS_CLUSTER_NODES);
  const layout = queueLayout(
    resolved.prefix,
    resolved.queue,
    checkShardCount(options.shards ?? settings.MAILROOM_SHARDS, 'shards'),
  );
  const where = describeRedis(redisInput);
  const logger = options.logger ?? pino({ name: 'mailroom-producer' });
  // Producer fails fast (BullMQ production guide): no offline queue, one retry per command.
  const { client: redis, owned } = createRedis(redisInput, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: resolved.connectTimeout,
    lazyConnect: true,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  });
  let lastError: Error | undefined;
  redis.on('error', (error) => {
    lastError = error;
  });
  redis.on('ready', () => {
    lastError = undefined;
  });
  if (redis.status === 'wait') redis.connect().catch(() => {});
  const keys = layout.home.keys;
  const suppression = new SuppressionList(redis, keys);
  const epoch = new EpochWatch(redis, keys, {
    queue: resolved.queue,
    logger,
    role: 'producer',
    minInterval: producerDefaults.epochCheckInterval,
  });
  let flowProducer: FlowProducer | undefined;
  const queues: (Queue | undefined)[] = layout.shards.map(() => undefined);
  let closed = false;
  // Claimed before the first write, then looked at again at most every epochCheckInterval: a producer
  // never goes on enqueueing on a layout the queue has left (another MAILROOM_SHARDS took it over).
  let layoutClaimed: Promise<void> | undefined;
  let layoutCheckedAt = 0;
  let superseded: ConfigError | undefined;
  // Batches without an idempotency key or campaign go to the shards in turn, from a random one.
  let nextShard = Math.floor(Math.random() * layout.shards.length);

  async function ready(): Promise<void> {
    await waitForRedis(redis, where, resolved.connectTimeout, () => lastError);
    if (!options.inspect) await claimed();
  }

  /**
   * The layout claimed (claimLayout) before the first write, then looked at again at most every
   * epochCheckInterval. Once another count has taken the queue over, every later call refuses: a
   * stale producer claiming the queue back would write where the new workers never read.
   */
  async function claimed(): Promise<void> {
    if (superseded) throw superseded;
    if (layoutClaimed && Date.now() - layoutCheckedAt >= producerDefaults.epochCheckInterval) {
      const recorded = await redis.get(layout.home.keys.layout);
      layoutCheckedAt = Date.now();
      // Gone (Redis lost its data): claimed again below.
      if (recorded === null) layoutClaimed = undefined;
      else if (Number(recorded) !== layout.shards.length) {
        superseded = new ConfigError(
          `queue "${resolved.queue}" is now laid out over ${recorded} shard(s), not MAILROOM_SHARDS=${layout.shards.length}: ` +
            `restart this producer with MAILROOM_SHARDS=${recorded}`,
        );
        throw superseded;
      }
    }
    layoutClaimed ??= claimLayout(redis, layout).then(
      () => {
        layoutCheckedAt = Date.now();
      },
      (error: unknown) => {
        layoutClaimed = undefined;
        throw error;
      },
    );
    await layoutClaimed;
  }

  async function campaignShard(id: string, shardOptions: { assign?: boolean } = {}): Promise<QueueShard> {
    // Looked up even on one shard: a campaign pinned under an earlier count keeps its shard.
    return campaignShardOf(redis, layout, id, {
      ...(shardOptions.assign ? { assign: true } : {}),
      ttl: protocolDefaults.campaignTtl,
    });
  }

  /** The shard one enqueue call writes to: all its batches go there, in one transaction. */
  async function shardFor(enqueueOptions: EnqueueOptions): Promise<QueueShard> {
    if (enqueueOptions.campaign !== undefined)
      return consumedShard(await campaignShard(enqueueOptions.campaign), enqueueOptions.campaign, layout);
    if (layout.shards.length === 1) return layout.home;
    if (enqueueOptions.idempotencyKey !== undefined) return layout.shardForKey(enqueueOptions.idempotencyKey);
    nextShard = (nextShard + 1) % layout.shards.length;
    return layout.shards[nextShard] as QueueShard;
  }

  async function enqueue(
    input: EmailMessage | CheckedMessage | readonly (EmailMessage | CheckedMessage)[],
    enqueueOptions: EnqueueOptions = {},
  ): Promise<EnqueueResult> {
    if (closed) throw new MailError('enqueue() after close()', { code: 'ECLOSED' });
    const messages: readonly unknown[] = Array.isArray(input) ? input : [input];
    if (messages.length === 0) return { messages: 0, jobIds: [], duplicate: false };
    const { delay } = checkEnqueueOptions(enqueueOptions);

    // 1. Validate and serialize EVERY message before anything touches Redis.
    let prepared = messages.map((message, index) =>
      prepareMessage(message, index, enqueueOptions, resolved.maxMessageBytes),
    );
    let skipped: { suppressed: string[]; skippedMessages: number[] } | undefined;
    if (enqueueOptions.skipSuppressed) {
      try {
        await ready();
        ({ prepared, ...skipped } = await leaveOutSuppressed(suppression, prepared));
      } catch (error) {
        return failed(error, messages.length);
      }
      if (prepared.length === 0) return { messages: 0, jobIds: [], duplicate: false, ...skipped };
    }
    const batches: WireMessage[][] = [];
    let current: WireMessage[] = [];
    let currentBytes = 0;
    for (const { wire, size } of prepared) {
      if (
        current.length >= resolved.batchSize ||
        (current.length > 0 && currentBytes + size > resolved.maxBatchBytes)
      ) {
        batches.push(current);
        current = [];
        currentBytes = 0;
      }
      current.push(wire);
      currentBytes += size;
    }
    batches.push(current);

    // 2. One atomic transaction for all batch jobs (FlowProducer.addBulk is a MULTI; Queue.addBulk
    //    is only a pipeline). Idempotency rides on BullMQ deduplication with a TTL: the key outlives
    //    the job, and it is set in the same transaction as the job itself.
    const enqueuedAt = Date.now();
    const assignedIds = batches.map(() => randomUUID());
    const flowsOn = (shard: QueueShard): FlowJob[] =>
      batches.map((batch, index) => {
        const data: BatchJobData = {
          v: 1,
          packed: packMessages(batch),
          count: batch.length,
          enqueuedAt,
          ...(enqueueOptions.campaign ? { campaign: enqueueOptions.campaign } : {}),
        };
        return {
          name: BATCH_JOB_NAME,
          queueName: resolved.queue,
          prefix: shard.prefix,
          data,
          opts: {
            jobId: assignedIds[index] as string,
            attempts: 1, // retries are the worker's (only undelivered messages are retried)
            removeOnComplete: true,
            removeOnFail: {
              age: Math.ceil(resolved.keepFailed.age / 1000),
              count: resolved.keepFailed.count,
            },
            ...(enqueueOptions.priority === undefined ? {} : { priority: enqueueOptions.priority }),
            ...(delay === undefined ? {} : { delay }),
            ...(enqueueOptions.idempotencyKey === undefined
              ? {}
              : {
                  deduplication: {
                    id: `${enqueueOptions.idempotencyKey}#${index}`,
                    ttl: resolved.idempotencyTtl,
                  },
                }),
          },
        };
      });
    try {
      await ready();
      // An inspecting producer (options.inspect) claims the layout only when it first enqueues.
      await claimed();
      const shard = await shardFor(enqueueOptions);
      // At most one round trip every epochCheckInterval. The marker only reports: enqueueing the
      // messages in hand is right whatever it says, so a failure to read it never fails the call.
      await epoch.check().catch((error) => {
        logger.warn(
          { queue: resolved.queue, err: coerceError(error).message },
          'could not check the epoch marker',
        );
      });
      if (enqueueOptions.idempotencyKey !== undefined) {
        // A repeat of a key is recognised by its first batch, whatever the repeat holds: a retried
        // request with more (or differently chunked) messages enqueues nothing either. The per-batch
        // deduplication below still settles two calls racing with the same key.
        const dedupKey = (index: number) =>
          shard.keys.deduplication(`${enqueueOptions.idempotencyKey}#${index}`);
        if ((await redis.exists(dedupKey(0))) === 1) {
          const jobIds: string[] = [];
          for (let start = 0; ; start += 100) {
            const found = await redis.mget(...Array.from({ length: 100 }, (_, i) => dedupKey(start + i)));
            const end = found.indexOf(null);
            jobIds.push(...(found.slice(0, end === -1 ? found.length : end) as string[]));
            if (end !== -1) break;
          }
          logger.debug(
            { queue: resolved.queue, idempotencyKey: enqueueOptions.idempotencyKey },
            'duplicate enqueue',
          );
          return { messages: 0, jobIds, duplicate: true, ...skipped };
        }
      }
      flowProducer ??= new FlowProducer({ connection: redis, prefix: resolved.prefix });
      const nodes = await flowProducer.addBulk(flowsOn(shard));
      if (!nodes) throw new MailError('the producer is closing', { code: 'ECLOSED' });
      const jobIds = nodes.map((node) => node.job.id as string);
      const fresh = jobIds.map((id, index) => id === assignedIds[index]);
      const count = batches.reduce((sum, batch, index) => sum + (fresh[index] ? batch.length : 0), 0);
      const duplicate = enqueueOptions.idempotencyKey !== undefined && count === 0;
      logger.debug({ queue: resolved.queue, messages: count, jobs: jobIds.length, duplicate }, 'enqueued');
      return { messages: count, jobIds, duplicate, ...skipped };
    } catch (error) {
      return failed(error, messages.length);
    }

    /** A failure to reach Redis: thrown as EREDIS, or logged and 0 with failSilently. */
    function failed(error: unknown, count: number): EnqueueResult {
      const err = coerceError(error);
      const failure =
        err instanceof MailError
          ? err
          : new MailError(`Could not enqueue on ${where}: ${err.message}`, { code: 'EREDIS', cause: err });
      if (enqueueOptions.failSilently) {
        logger.error(
          { queue: resolved.queue, err: failure.message, messages: count },
          'enqueue failed silently',
        );
        return { messages: 0, jobIds: [], duplicate: false };
      }
      throw failure;
    }
  }

  function queueOf(index: number): Queue {
    const shard = layout.shards[index] as QueueShard;
    const queue = queues[index] ?? new Queue(resolved.queue, { connection: redis, prefix: shard.prefix });
    queues[index] = queue;
    return queue;
  }

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    const steps: (() => Promise<unknown>)[] = [];
    if (owned) steps.push(() => redis.quit().catch(() => redis.disconnect()));
    if (flowProducer) steps.push(() => (flowProducer as FlowProducer).close());
    for (const queue of queues) if (queue) steps.push(() => queue.close());
    // Reverse order of acquisition; every step runs even when one fails.
    for (const step of steps.reverse()) {
      try {
        await step();
      } catch (error) {
        logger.warn({ err: coerceError(error).message }, 'producer close: a cleanup step failed');
      }
    }
  }

  return {
    queue: resolved.queue,
    prefix: resolved.prefix,
    keys,
    layout,
    redis,
    options: { ...resolved, shards: layout.shards.length, inspect: options.inspect === true },
    logger,
    epoch,
    enqueue,
    getQueue() {
      return queueOf(0);
    },
    getQueues() {
      return layout.shards.map((shard) => queueOf(shard.index));
    },
    campaignShard,
    ready,
    close,
  };
}

/**
 * A producer opened to look at a queue (stats, dead letters, campaign status, a dashboard): `inspect`
 * on, ready, and on the shard count the queue recorded whatever `options.shards` (MAILROOM_SHARDS)
 * says, so that it reads every shard and never takes the queue over. Rejects as ready() does (the
 * producer is closed then).
 */
export async function openInspector(options: ProducerOptions = {}): Promise<Producer> {
  const producer = await openProducer({ ...options, inspect: true });
  let recorded: number;
  try {
    recorded = Number(await producer.redis.get(producer.keys.layout));
  } catch (error) {
    await producer.close();
    throw error;
  }
  if (!Number.isInteger(recorded) || recorded < 1 || recorded === producer.layout.shards.length)
    return producer;
  await producer.close();
  return openProducer({ ...options, shards: recorded, inspect: true });
}

/**
 * A producer that is ready (Redis answers; the layout is claimed unless `inspect`): createProducer,
 * then ready(). Rejects as ready() does, the producer closed.
 */
export async function openProducer(options: ProducerOptions = {}): Promise<Producer> {
  const producer = createProducer(options);
  try {
    await producer.ready();
  } catch (error) {
    await producer.close();
    throw error;
  }
  return producer;
}
