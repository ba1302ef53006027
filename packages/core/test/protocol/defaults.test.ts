/** The protocol's defaults (defaults.ts): the unpacked-batch limit follows from the batch and message limits. */
import { protocolDefaults, unpackedBatchLimit } from '@mailroom/core/protocol';
import { describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;

describe('protocolDefaults', () => {
  it('caps what a batch inflates to at the most a default producer writes: 24 MiB + 2 bytes', () => {
    expect(protocolDefaults.maxUnpackedBytes).toBe(unpackedBatchLimit());
    expect(protocolDefaults.maxUnpackedBytes).toBe(6 * protocolDefaults.maxBatchBytes + 2);
    expect(protocolDefaults.maxUnpackedBytes).toBe(24 * MiB + 2);
  });
});
