/** One-click unsubscribe tokens (protocol/unsubscribe-token.ts): signing, verifying, secrets and URLs. */
import { createHmac } from 'node:crypto';
import { ConfigError, ValidationError } from '@mailroom/core';
import {
  DAY,
  parseUnsubscribeSecrets,
  signUnsubscribeToken,
  UNSUBSCRIBE_TOKEN_LIFETIME,
  unsubscribeUrl,
  verifyUnsubscribeToken,
} from '@mailroom/core/protocol';
import { describe, expect, it } from 'vitest';

const SECRET = 'first-secret-0123456789';
const OTHER_SECRET = 'other-secret-0123456789';
const NOW = Date.UTC(2030, 0, 15, 12, 0, 0);
const CLAIM = {
  queue: 'mail',
  campaign: 'spring-sale',
  address: 'ann@example.com',
  expiresAt: NOW + 30 * DAY,
};
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * A token over any payload, signed as the module signs (its documented format: base64url of the
 * payload, a dot, the first 16 bytes of HMAC-SHA256 over a context line and the payload): for payloads
 * signUnsubscribeToken would never write.
 */
function signRaw(payloadText: string, secret = SECRET): string {
  const payload = Buffer.from(payloadText).toString('base64url');
  const mac = createHmac('sha256', secret)
    .update('mailroom-unsubscribe-v1\n')
    .update(payload)
    .digest()
    .subarray(0, 16);
  return `${payload}.${mac.toString('base64url')}`;
}

function thrown(work: () => unknown): Error {
  try {
    work();
  } catch (error) {
    return error as Error;
  }
  throw new Error('did not throw');
}

describe('signUnsubscribeToken and verifyUnsubscribeToken', () => {
  it('verifies a token it signed, giving back queue, campaign, address and expiry', () => {
    const token = signUnsubscribeToken(CLAIM, SECRET);
    expect(verifyUnsubscribeToken(token, [SECRET], NOW)).toEqual({ ok: true, ...CLAIM });
  });

  it('writes a URL-safe token of about 100 characters', () => {
    const token = signUnsubscribeToken(CLAIM, SECRET);
    expect(token).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$/);
    expect(token.length).toBeLessThan(120);
  });

  it('rounds the expiry up to the second', () => {
    const token = signUnsubscribeToken({ ...CLAIM, expiresAt: NOW + 1 }, SECRET);
    expect(verifyUnsubscribeToken(token, [SECRET], NOW)).toMatchObject({ ok: true, expiresAt: NOW + 1000 });
  });

  it('makes a token last a year when no expiry is given', () => {
    const before = Date.now();
    const { expiresAt: _, ...claim } = CLAIM;
    const verdict = verifyUnsubscribeToken(signUnsubscribeToken(claim, SECRET), [SECRET]);
    expect(verdict.ok).toBe(true);
    if (!verdict.ok) return;
    expect(verdict.expiresAt).toBeGreaterThanOrEqual(before + UNSUBSCRIBE_TOKEN_LIFETIME);
    expect(verdict.expiresAt).toBeLessThanOrEqual(Date.now() + UNSUBSCRIBE_TOKEN_LIFETIME + 1000);
  });

  it('refuses a token with any single character of payload, dot or signature changed', () => {
    const token = signUnsubscribeToken(CLAIM, SECRET);
    const accepted: string[] = [];
    for (let index = 0; index < token.length; index++) {
      for (const replacement of `${BASE64URL}.`) {
        if (replacement === token[index]) continue;
        const altered = token.slice(0, index) + replacement + token.slice(index + 1);
        if (verifyUnsubscribeToken(altered, [SECRET], NOW).ok) accepted.push(altered);
      }
    }
    // The last signature character carries 4 unused bits: decoding it would accept 15 other spellings.
    expect(accepted).toEqual([]);
  });

  it('calls a payload changed under its signature forged', () => {
    const token = signUnsubscribeToken(CLAIM, SECRET);
    const [, signature] = token.split('.');
    const other = signUnsubscribeToken({ ...CLAIM, address: 'mallory@example.com' }, SECRET).split('.')[0];
    expect(verifyUnsubscribeToken(`${other}.${signature}`, [SECRET], NOW)).toEqual({
      ok: false,
      fault: 'forged',
    });
  });

  it('calls a token signed with another secret forged', () => {
    const token = signUnsubscribeToken(CLAIM, OTHER_SECRET);
    expect(verifyUnsubscribeToken(token, [SECRET], NOW)).toEqual({ ok: false, fault: 'forged' });
  });

  it('calls a token forged when no secret is given to verify it with', () => {
    const token = signUnsubscribeToken(CLAIM, SECRET);
    expect(verifyUnsubscribeToken(token, [], NOW)).toEqual({ ok: false, fault: 'forged' });
  });

  it('refuses a token from its expiry on, and takes it until then', () => {
    const token = signUnsubscribeToken(CLAIM, SECRET);
    expect(verifyUnsubscribeToken(token, [SECRET], CLAIM.expiresAt - 1).ok).toBe(true);
    expect(verifyUnsubscribeToken(token, [SECRET], CLAIM.expiresAt)).toEqual({ ok: false, fault: 'expired' });
    expect(verifyUnsubscribeToken(token, [SECRET], CLAIM.expiresAt + DAY)).toEqual({
      ok: false,
      fault: 'expired',
    });
  });

  it('checks the signature before the expiry: an expired forgery is forged', () => {
    const token = signUnsubscribeToken({ ...CLAIM, expiresAt: NOW - DAY }, OTHER_SECRET);
    expect(verifyUnsubscribeToken(token, [SECRET], NOW)).toEqual({ ok: false, fault: 'forged' });
  });

  it('verifies with any of the secrets, so links signed before a rotation keep working', () => {
    const [signing, ...older] = parseUnsubscribeSecrets(`${OTHER_SECRET} ${SECRET}`);
    expect(signing).toBe(OTHER_SECRET);
    expect(older).toEqual([SECRET]);
    const beforeRotation = signUnsubscribeToken(CLAIM, SECRET);
    const afterRotation = signUnsubscribeToken(CLAIM, OTHER_SECRET);
    const secrets = [OTHER_SECRET, SECRET];
    expect(verifyUnsubscribeToken(beforeRotation, secrets, NOW).ok).toBe(true);
    expect(verifyUnsubscribeToken(afterRotation, secrets, NOW).ok).toBe(true);
    // Once the old secret is dropped, its links stop working.
    expect(verifyUnsubscribeToken(beforeRotation, [OTHER_SECRET], NOW)).toEqual({
      ok: false,
      fault: 'forged',
    });
  });

  it.each([
    ['empty', ''],
    ['without a dot', 'abcdefghijklmnopqrstuvwxyz0123456789'],
    ['with a short signature', 'eyJhIjoxfQ.abc'],
    ['with a long signature', `eyJhIjoxfQ.${'A'.repeat(23)}`],
    ['with characters outside base64url', `eyJh+Ijox/fQ.${'A'.repeat(22)}`],
    ['with padding', `eyJhIjoxfQ==.${'A'.repeat(22)}`],
    ['with two dots', `eyJh.IjoxfQ.${'A'.repeat(22)}`],
    ['with an empty payload', `.${'A'.repeat(22)}`],
    ['of 2,000 characters', `${'A'.repeat(1977)}.${'A'.repeat(22)}`],
  ])('calls a token %s malformed', (_, token) => {
    expect(verifyUnsubscribeToken(token, [SECRET], NOW)).toEqual({ ok: false, fault: 'malformed' });
  });

  it('calls a non-string token malformed instead of throwing', () => {
    expect(verifyUnsubscribeToken(undefined as unknown as string, [SECRET], NOW)).toEqual({
      ok: false,
      fault: 'malformed',
    });
  });

  it.each([
    ['not JSON', 'not json'],
    ['an object', '{"queue":"mail"}'],
    ['another version', '[2,"mail","c","ann@example.com",1900000000]'],
    ['too few fields', '[1,"mail","c","ann@example.com"]'],
    ['too many fields', '[1,"mail","c","ann@example.com",1900000000,"x"]'],
    ['a number for the queue', '[1,7,"c","ann@example.com",1900000000]'],
    ['a string expiry', '[1,"mail","c","ann@example.com","1900000000"]'],
    ['a fractional expiry', '[1,"mail","c","ann@example.com",1900000000.5]'],
    ['an expiry past safe integers', '[1,"mail","c","ann@example.com",1e300]'],
  ])('calls a correctly signed payload that is %s malformed', (_, payload) => {
    expect(verifyUnsubscribeToken(signRaw(payload), [SECRET], NOW)).toEqual({
      ok: false,
      fault: 'malformed',
    });
  });

  it('signs the normalised address: display name dropped, lowercased, IDN domain punycoded', () => {
    const token = signUnsubscribeToken({ ...CLAIM, address: 'Ann <Ann.Lee@Bücher.Example>' }, SECRET);
    expect(verifyUnsubscribeToken(token, [SECRET], NOW)).toMatchObject({
      ok: true,
      address: 'ann.lee@xn--bcher-kva.example',
    });
  });

  it('signs the same token for two spellings of one address', () => {
    expect(signUnsubscribeToken({ ...CLAIM, address: ' ANN@Example.com ' }, SECRET)).toBe(
      signUnsubscribeToken(CLAIM, SECRET),
    );
  });

  it('throws ValidationError for an address that is not one', () => {
    expect(() => signUnsubscribeToken({ ...CLAIM, address: 'not an address' }, SECRET)).toThrow(
      ValidationError,
    );
  });

  it('throws ValidationError for an expiry that is not a finite time', () => {
    for (const expiresAt of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const error = thrown(() => signUnsubscribeToken({ ...CLAIM, expiresAt }, SECRET));
      expect(error).toBeInstanceOf(ValidationError);
      expect(error.message).toContain('expiresAt');
    }
  });
});

describe('unsubscribeUrl', () => {
  it('puts the token under /unsubscribe/ of the endpoint', () => {
    expect(unsubscribeUrl('https://mail.example.com', 'T.S')).toBe(
      'https://mail.example.com/unsubscribe/T.S',
    );
  });

  it('keeps a path prefix, with or without a trailing slash', () => {
    expect(unsubscribeUrl('https://example.com/mail', 'T.S')).toBe(
      'https://example.com/mail/unsubscribe/T.S',
    );
    expect(unsubscribeUrl('https://example.com/mail/', 'T.S')).toBe(
      'https://example.com/mail/unsubscribe/T.S',
    );
  });

  it('keeps a port and punycodes an IDN host', () => {
    expect(unsubscribeUrl('https://bücher.example:8443', 'T.S')).toBe(
      'https://xn--bcher-kva.example:8443/unsubscribe/T.S',
    );
  });

  it.each([
    ['http:', 'http://mail.example.com'],
    ['not a URL', 'mail.example.com'],
    ['a query', 'https://mail.example.com/?list=1'],
    ['a fragment', 'https://mail.example.com/#top'],
    ['a user name', 'https://user@mail.example.com'],
    ['credentials', 'https://user:pass@mail.example.com'],
  ])('refuses an endpoint with %s, naming the field', (_, endpoint) => {
    const error = thrown(() => unsubscribeUrl(endpoint, 'T.S', 'campaign.unsubscribe.endpoint'));
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toContain('campaign.unsubscribe.endpoint');
  });

  it('does not repeat a password of the endpoint in its error', () => {
    const error = thrown(() => unsubscribeUrl('https://user:hunter2-secret@mail.example.com', 'T.S'));
    expect(error.message).not.toContain('hunter2-secret');
  });
});

describe('parseUnsubscribeSecrets', () => {
  it('takes one secret, or several separated by whitespace, in order', () => {
    expect(parseUnsubscribeSecrets(SECRET)).toEqual([SECRET]);
    expect(parseUnsubscribeSecrets(` ${SECRET}\n\t${OTHER_SECRET} `)).toEqual([SECRET, OTHER_SECRET]);
  });

  it.each([
    ['null', null],
    ['undefined', undefined],
    ['empty', ''],
    ['blank', ' \t\n'],
  ])('refuses %s with a ConfigError naming the setting', (_, value) => {
    const error = thrown(() => parseUnsubscribeSecrets(value));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain('MAILROOM_UNSUBSCRIBE_SECRET');
  });

  it('refuses a secret shorter than 16 characters without showing any secret', () => {
    const short = 'short-Secret1';
    const error = thrown(() => parseUnsubscribeSecrets(`${SECRET} ${short}`));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain('MAILROOM_UNSUBSCRIBE_SECRET');
    expect(error.message).toContain('16');
    expect(error.message).not.toContain(short);
    expect(error.message).not.toContain(SECRET);
  });

  it('names the setting it is given', () => {
    expect(thrown(() => parseUnsubscribeSecrets('', 'campaign.unsubscribe.secret')).message).toContain(
      'campaign.unsubscribe.secret',
    );
  });
});
