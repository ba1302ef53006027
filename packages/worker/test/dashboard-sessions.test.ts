/** The dashboard's sessions (dashboard/auth.ts SessionStore): idle timeout and maximum age. */
import { describe, expect, it } from 'vitest';
import { SESSION_IDLE_TIMEOUT, SESSION_MAX_AGE, SessionStore } from '../src/dashboard/auth.js';

const HOUR = 3_600_000;

describe('dashboard sessions', () => {
  it('end after the idle timeout', () => {
    let now = 0;
    const sessions = new SessionStore({ now: () => now });
    const session = sessions.create();
    now = SESSION_IDLE_TIMEOUT - 1;
    expect(sessions.touch(session.id)).toBe(session);
    now += SESSION_IDLE_TIMEOUT + 1;
    expect(sessions.touch(session.id)).toBeUndefined();
  });

  it('end at their maximum age however busy they are (a tab that polls every second)', () => {
    let now = 0;
    const sessions = new SessionStore({ now: () => now });
    const session = sessions.create();
    for (now = HOUR; now <= SESSION_MAX_AGE; now += HOUR) expect(sessions.touch(session.id)).toBe(session);
    now = SESSION_MAX_AGE + 1;
    expect(sessions.touch(session.id)).toBeUndefined();
    // Gone for good: the same id is not taken back later.
    expect(sessions.touch(session.id)).toBeUndefined();
  });
});
