/**
 * Issue 9: message/rfc822 attachments went out verbatim with lines of 100,000 octets or NUL bytes
 * under a 7bit/8bit label, and nesting had no bound (the producer accepted ~2,000 levels, the
 * worker's decoder overflowed its stack from 400). Also: header values of 8 MB overflowed the stack.
 */
import {
  decodeWire,
  EmailMessage,
  MAX_HEADER_VALUE,
  MAX_MESSAGE_NESTING,
  toWire,
  ValidationError,
} from '@mailroom/core';
import { describe, expect, it } from 'vitest';

const message = (subject = 'Hi') => new EmailMessage(subject, 'Body', 'a@example.com', ['b@example.com']);

function thrown(run: () => unknown): Error {
  try {
    run();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a throw');
}

/** A message with `depth` levels of message/rfc822 attachments under it. */
function nested(depth: number): EmailMessage {
  let inner = message('level 0');
  for (let level = 1; level <= depth; level++) {
    const outer = message(`level ${level}`);
    outer.attach(null, inner, 'message/rfc822');
    inner = outer;
  }
  return inner;
}

describe('message/rfc822 attachments that cannot travel verbatim', () => {
  it('refuses a line longer than 998 octets, naming the attachment and what to do instead', () => {
    const long = `Subject: x\r\n\r\n${'a'.repeat(100_000)}\r\n`;
    const mail = message();
    mail.attach('fwd.eml', long, 'message/rfc822');
    for (const run of [() => mail.message(), () => mail.validate()]) {
      const error = thrown(run);
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).field).toBe('attachments[0]');
      expect(error.message).toMatch(/line of 100000 octets.*application\/octet-stream/);
    }
  });

  it('refuses a NUL byte', () => {
    const mail = message();
    mail.attach('fwd.eml', Buffer.from('Subject: x\r\n\r\nnul \u0000 here\r\n'), 'message/rfc822');
    expect(thrown(() => mail.message()).message).toMatch(/NUL/);
  });

  it('still sends a nested message whose lines fit, verbatim, as 7bit or 8bit', () => {
    const mail = message();
    mail.attach('fwd.eml', 'Subject: x\r\n\r\nfine line\r\n', 'message/rfc822');
    mail.attach('nested.eml', Buffer.from('Subject: y\r\n\r\nhéllo\r\n'), 'message/rfc822');
    const raw = mail.message().toString('latin1');
    expect(raw).toContain(
      'Content-Transfer-Encoding: 7bit\r\nContent-Disposition: attachment; filename="fwd.eml"',
    );
    expect(raw).toContain('Content-Transfer-Encoding: 8bit');
  });
});

describe('nesting depth', () => {
  it(`renders ${MAX_MESSAGE_NESTING} levels and refuses one more, naming the attachment`, () => {
    expect(nested(MAX_MESSAGE_NESTING).message().length).toBeGreaterThan(0);
    const error = thrown(() => nested(MAX_MESSAGE_NESTING + 1).validate());
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toMatch(/nest more than 16 levels/);
  });

  it('refuses a message attached to itself instead of overflowing the stack', () => {
    const mail = message();
    mail.attach(null, mail, 'message/rfc822');
    const error = thrown(() => mail.validate());
    expect(error).toBeInstanceOf(ValidationError);
    expect(thrown(() => toWire(mail))).toBeInstanceOf(ValidationError);
  });

  it('refuses 2,000 levels at toWire and at decodeWire with a ValidationError, not a RangeError', () => {
    expect(thrown(() => toWire(nested(2000)))).toBeInstanceOf(ValidationError);
    // A hand-made payload, as a hostile job would carry it: built as text, since JSON.stringify
    // itself recurses (JSON.parse does not, so the worker does read it).
    const { v: _v, ...leafBody } = toWire(message());
    const leafJson = JSON.stringify(leafBody);
    let json = leafJson;
    for (let level = 0; level < 2000; level++) {
      const link = `{"type":"attachment","filename":null,"mimetype":"message/rfc822","content":{"message":${json}}}`;
      json = leafJson.replace('"attachments":[]', `"attachments":[${link}]`);
    }
    const wire: unknown = JSON.parse(`{"v":1,${json.slice(1)}`);
    const error = thrown(() => decodeWire(wire));
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toMatch(
      /^message(\.attachments\[0\]\.content\.message)*\.attachments\[0\]$/,
    );
  });
});

describe('header value sizes', () => {
  it('refuses an 8 MB subject with a ValidationError naming the subject', () => {
    const mail = message('x'.repeat(8 * 1024 * 1024));
    const error = thrown(() => mail.validate());
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe('subject');
    expect(error.message).not.toContain('x'.repeat(100));
  });

  it('accepts a subject of the longest allowed length, non-ASCII too', () => {
    expect(message('é'.repeat(MAX_HEADER_VALUE)).message().length).toBeGreaterThan(MAX_HEADER_VALUE);
  });

  it('refuses an 8 MB extra header value and an 8 MB address', () => {
    const header = message();
    header.extraHeaders = { 'X-Big': 'y '.repeat(4 * 1024 * 1024) };
    expect((thrown(() => header.validate()) as ValidationError).field).toBe('headers.X-Big');
    const address = message();
    address.to = [`${'a'.repeat(8 * 1024 * 1024)}@example.com`];
    expect((thrown(() => address.validate()) as ValidationError).field).toBe('to[0]');
  });
});
