/**
 * The batch job envelope (@mailroom/core/protocol, batch-job.ts): packing, and an unpacking that
 * inflates no more than a producer could have written, so that a deflate bomb costs a worker nothing
 * (issue 9).
 */
import { deflateRawSync } from 'node:zlib';
import { EmailMessage, toWire, ValidationError } from '@mailroom/core';
import { packMessages, parseBatchJob, unpackedBatchLimit } from '@mailroom/core/protocol';
import { checkMessage, producerDefaults } from '@mailroom/producer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deflateBomb } from '../../../test/support/hostile.js';

const MiB = 1024 * 1024;

function batchJob(packed: string) {
  return { v: 1, packed, count: 1, enqueuedAt: 0 };
}

/** base64(deflateRaw(text)): a packed field that inflates to exactly `text`'s UTF-8 bytes. */
function packedText(text: string): string {
  return deflateRawSync(Buffer.from(text, 'utf8')).toString('base64');
}

describe('unpacking a batch', () => {
  it('reads back what packMessages wrote', () => {
    const wire = [toWire(new EmailMessage('Hi', 'Body', 'a@example.com', ['b@example.com']))];
    expect(parseBatchJob(batchJob(packMessages(wire))).messages).toEqual(wire);
  });

  it('inflates up to maxUnpackedBytes and refuses one byte more, naming job.packed and the limit', () => {
    const exactly = `[${'1,'.repeat(498)}10]`;
    expect(Buffer.byteLength(exactly)).toBe(1000);
    expect(parseBatchJob(batchJob(packedText(exactly)), { maxUnpackedBytes: 1000 }).messages).toHaveLength(
      499,
    );

    const parse = () => parseBatchJob(batchJob(packedText(exactly)), { maxUnpackedBytes: 999 });
    expect(parse).toThrow(ValidationError);
    expect(parse).toThrow(
      'Invalid job.packed: it inflates past 999 bytes (maxUnpackedBytes), more than a producer writes',
    );
    try {
      parse();
    } catch (error) {
      expect((error as ValidationError).field).toBe('job.packed');
    }
  });

  it('stops a deflate bomb at the default limit: 256 MiB of zeros never take the memory', async () => {
    const bomb = await deflateBomb(256 * MiB);
    expect(bomb.length).toBeLessThan(400_000);
    // maxRSS is a high-water mark: it still shows a spike that is over by the time it is read.
    const before = process.resourceUsage().maxRSS * 1024;
    expect(() => parseBatchJob(batchJob(bomb))).toThrow(`inflates past ${unpackedBatchLimit()} bytes`);
    expect(process.resourceUsage().maxRSS * 1024 - before).toBeLessThan(128 * MiB);
  });

  it('still says which other damage it found: not base64 deflated JSON', () => {
    expect(() => parseBatchJob(batchJob(Buffer.from('not deflated').toString('base64')))).toThrow(
      /^Invalid job\.packed: not base64 deflated JSON/,
    );
    expect(() => parseBatchJob(batchJob(packedText('{not json')))).toThrow(
      /^Invalid job\.packed: not base64 deflated JSON/,
    );
  });
});

describe('unpackedBatchLimit', () => {
  it('is 6 bytes per unit a producer counts in a batch, or one message of maxMessageBytes, plus the brackets', () => {
    expect(unpackedBatchLimit()).toBe(6 * producerDefaults.maxBatchBytes + 2);
    expect(unpackedBatchLimit()).toBe(24 * MiB + 2);
    expect(unpackedBatchLimit({ maxBatchBytes: 1 * MiB, maxMessageBytes: 50 * MiB })).toBe(50 * MiB + 2);
  });

  it('rests on this: a message never takes more than 6 bytes of JSON per unit checkMessage counts', () => {
    // The worst characters for the ratio: escaped controls and lone surrogates (6 bytes for 1 unit),
    // CJK (3), astral (4 for 2), and what JSON escapes in 2.
    const unit = fc.constantFrom('\u0001', '\ud800', '日', '😀', '"', '\\', '\n', 'a');
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 200 }), fc.string({ unit, maxLength: 40 }), (body, name) => {
        const message = new EmailMessage('Subject', body, 'news@example.com', ['reader@example.com']);
        message.attach(`${name.length}.txt`, name);
        const { wire, size } = checkMessage(message);
        expect(Buffer.byteLength(JSON.stringify(wire))).toBeLessThanOrEqual(6 * size);
      }),
    );
  });
});
