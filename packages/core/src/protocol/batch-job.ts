/** The batch job: its name, its zod schema (and the types derived from it), packing and parsing. */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { z } from 'zod';
import { ValidationError } from '../errors.js';
import { parseWith, WIRE_VERSION, type WireMessage } from '../wire.js';
import { MAX_BATCH_MESSAGES, unpackedBatchLimit } from './defaults.js';

/** Name of every batch job on the queue. */
export const BATCH_JOB_NAME = 'batch';

/**
 * Schema of one batch job's payload: the messages in wire form, sent over one connection by a
 * worker. The producer writes them `packed`: the UTF-8 JSON array of wire messages, deflated (raw)
 * and base64 encoded. A batch of similar messages (a newsletter) shrinks about 40x, which keeps Redis
 * small and, above all, keeps the big strings out of ioredis, whose per-byte cost dominated
 * enqueueing (see BENCHMARKS.md). A job may also carry a plain `messages` array (hand-made jobs,
 * debugging); the worker reads both. The messages are checked one by one with the wire schema by the
 * worker (decodeWire), so one malformed message fails alone instead of costing its batch.
 */
export const batchJobSchema = z
  .strictObject({
    /** Wire format version of the batch envelope (the messages carry their own `v`). */
    v: z.literal(WIRE_VERSION),
    /** base64(deflateRaw(UTF-8 JSON of WireMessage[])). */
    packed: z.string().min(1).optional(),
    /** The messages, unpacked (when `packed` is absent). */
    messages: z.array(z.unknown()).min(1).max(MAX_BATCH_MESSAGES).optional(),
    /** Number of messages (for listings without unpacking). */
    count: z.number().int().positive().optional(),
    /** Campaign the batch belongs to, when enqueued by a campaign. */
    campaign: z.string().min(1).optional(),
    /** Epoch ms when the batch was enqueued (latency metrics). */
    enqueuedAt: z.number().int().nonnegative(),
  })
  .refine((job) => (job.packed === undefined) !== (job.messages === undefined), {
    message: 'a batch has either packed or messages',
    path: ['messages'],
  });

/** Payload of one batch job, as the producer writes it (see {@link batchJobSchema}). */
export type BatchJobData = z.input<typeof batchJobSchema>;

/** The parsed batch envelope: the messages unpacked, still to be decoded one by one. */
export type ParsedBatchJob = Pick<z.output<typeof batchJobSchema>, 'v' | 'campaign' | 'enqueuedAt'> & {
  messages: unknown[];
};

const encoder = new TextEncoder();

/** Packs wire messages for a batch job's `packed` field (see {@link batchJobSchema}). */
export function packMessages(messages: readonly WireMessage[]): string {
  // Level 1: nearly all of the gain for a fraction of the time of the default level.
  return deflateRawSync(encoder.encode(JSON.stringify(messages)), { level: 1 }).toString('base64');
}

/**
 * Unpacks what {@link packMessages} wrote; anything else is a ValidationError on `job.packed`. Inflates
 * at most `maxBytes` (default {@link unpackedBatchLimit}): a few hundred KB of deflated zeros would
 * otherwise inflate to gigabytes (a deflate bomb, issue #9), so a field that inflates past it is
 * refused as soon as it does, without ever holding more than `maxBytes`.
 */
export function unpackMessages(packed: string, maxBytes: number = unpackedBatchLimit()): unknown[] {
  let inflated: Buffer;
  try {
    // Node stops inflating and throws ERR_BUFFER_TOO_LARGE as soon as the output passes the limit.
    inflated = inflateRawSync(Buffer.from(packed, 'base64'), { maxOutputLength: maxBytes });
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new ValidationError(
        `Invalid job.packed: it inflates past ${maxBytes} bytes (maxUnpackedBytes), more than a producer writes`,
        { field: 'job.packed' },
      );
    }
    throw notPacked(error);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(inflated.toString('utf8'));
  } catch (error) {
    throw notPacked(error);
  }
  if (!Array.isArray(parsed) || parsed.length === 0) {
    throw new ValidationError('Invalid job.packed: expected a non-empty array of messages', {
      field: 'job.packed',
    });
  }
  if (parsed.length > MAX_BATCH_MESSAGES) {
    throw new ValidationError(
      `Invalid job.packed: ${parsed.length} messages, more than a batch holds (${MAX_BATCH_MESSAGES})`,
      { field: 'job.packed' },
    );
  }
  return parsed;
}

function notPacked(error: unknown): ValidationError {
  return new ValidationError(`Invalid job.packed: not base64 deflated JSON (${(error as Error).message})`, {
    field: 'job.packed',
  });
}

/**
 * Validates a batch job payload read back from Redis with the schema that wrote it and unpacks it,
 * inflating at most `maxUnpackedBytes` (default {@link unpackedBatchLimit}); throws ValidationError
 * naming the field.
 */
export function parseBatchJob(data: unknown, options: { maxUnpackedBytes?: number } = {}): ParsedBatchJob {
  const job = parseWith(batchJobSchema, data, 'job');
  return {
    v: job.v,
    messages:
      job.packed !== undefined
        ? unpackMessages(job.packed, options.maxUnpackedBytes)
        : (job.messages as unknown[]),
    ...(job.campaign === undefined ? {} : { campaign: job.campaign }),
    enqueuedAt: job.enqueuedAt,
  };
}
