/** The command `campaign start` prints to resume an interrupted start (campaign-preview.ts resumeCommand). */
import { describe, expect, it } from 'vitest';
import { resumeCommand } from '../src/cli/campaign-preview.js';

describe('resumeCommand', () => {
  it('keeps the flags, names the id, and drops --start-over and --send-at', () => {
    const argv = [
      '--from',
      'News <news@example.com>',
      '--send-at',
      '2h',
      '--start-over',
      '--recipients',
      'list.csv',
      '--send-at=2026-12-02T10:00:00Z',
      '--id=old',
    ];
    expect(resumeCommand(argv, 'june')).toBe(
      "mailroom campaign start --id june --from 'News <news@example.com>' --recipients list.csv",
    );
  });
});
