import { describe, expect, it } from 'vitest';
import { closest, didYouMean, editDistance } from '../src/cli/suggest.js';

describe('editDistance', () => {
  it('counts insertions, deletions and substitutions (Levenshtein)', () => {
    expect(editDistance('stats', 'stats')).toBe(0);
    expect(editDistance('stat', 'stats')).toBe(1);
    expect(editDistance('stats', 'stat')).toBe(1);
    expect(editDistance('sent', 'send')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
  });

  it('counts a swap of two neighbours as one edit (Damerau)', () => {
    expect(editDistance('form', 'from')).toBe(1);
    expect(editDistance('sned', 'send')).toBe(1);
    expect(editDistance('wroker', 'worker')).toBe(1);
  });
});

describe('closest', () => {
  const commands = ['worker', 'send', 'enqueue', 'campaign', 'failed', 'stats'];

  it('finds the known name a typo was meant to be', () => {
    expect(closest('stat', commands)).toBe('stats');
    expect(closest('sned', commands)).toBe('send');
    expect(closest('campain', commands)).toBe('campaign');
    expect(closest('Stats', commands)).toBe('stats');
  });

  it('suggests nothing for a word that is not close to any (1 edit up to 4 characters, 2 beyond)', () => {
    expect(closest('deploy', commands)).toBeUndefined();
    expect(closest('sn', commands)).toBeUndefined();
    expect(closest('bogus', ['from', 'to', 'body', 'subject'])).toBeUndefined();
  });
});

describe('didYouMean', () => {
  it('phrases the suggestion, or says nothing', () => {
    expect(didYouMean('lsit', ['list', 'retry'])).toBe(' (did you mean list?)');
    expect(didYouMean('launch', ['list', 'retry'])).toBe('');
  });
});
