/** Random hex strings from a pooled buffer, for boundaries and Message-IDs. */
import { randomFillSync } from 'node:crypto';

// One randomFillSync call per 4 KiB instead of one per token: a small randomBytes() call costs
// microseconds, and every rendered message needs a Message-ID and up to two boundaries.
const pool = Buffer.allocUnsafe(4096);
let offset = pool.length;

/** `bytes` cryptographically random bytes as lowercase hex, from a refilled pool. */
export function randomHex(bytes: number): string {
  if (offset + bytes > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const hex = pool.toString('hex', offset, offset + bytes);
  offset += bytes;
  return hex;
}
