/**
 * Issue 9, second round: what an adversarial review of the first fixes still got through — header
 * lines past 998 octets through long names, generated headers duplicated in a part, a fold onto a
 * line of white space only, holes and non-strings in lists, addresses that WHATWG's domainToASCII
 * rewrites, envelope characters RFC 5321 does not allow, and raw TypeErrors instead of field-named
 * ValidationErrors.
 */
import { deflateRawSync } from 'node:zlib';
import {
  BadHeaderError,
  EmailMessage,
  EmailMultiAlternatives,
  InvalidAddressError,
  MimePart,
  ValidationError,
} from '@mailroom/core';
import { MAX_BATCH_MESSAGES, parseBatchJob } from '@mailroom/core/protocol';
import { describe, expect, it } from 'vitest';
import { headerProblems } from '../../../../test/support/hostile.js';

const message = () => new EmailMultiAlternatives('Hi', 'Body', 'a@example.com', ['b@example.com']);

function refusal(run: () => unknown): ValidationError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError');
}

describe('header lines stay within the limits', () => {
  it('refuses a header name longer than 76 characters, at the top and in a part', () => {
    const top = message();
    top.extraHeaders = { [`X-${'a'.repeat(1200)}`]: 'v' };
    expect(refusal(() => top.message())).toBeInstanceOf(BadHeaderError);
    const part = message();
    part.attach(new MimePart({ content: 'x', headers: { [`X-${'a'.repeat(1200)}`]: 'v' } }));
    expect(refusal(() => part.message())).toBeInstanceOf(BadHeaderError);
    const fits = message();
    fits.extraHeaders = { [`X-${'a'.repeat(74)}`]: 'v' };
    expect(headerProblems(fits.message())).toEqual([]);
  });

  it('never folds onto a line of white space only', () => {
    const mail = message();
    mail.subject = `${'x'.repeat(68)} \t`;
    const raw = mail.message().toString('latin1');
    const head = raw.slice(0, raw.indexOf('\r\n\r\n'));
    expect(head.split('\r\n').filter((line) => line.trim() === '')).toEqual([]);
  });

  it('refuses part headers that the part generates from its fields', () => {
    for (const name of [
      'Content-Type',
      'content-transfer-encoding',
      'Content-Disposition',
      'Content-ID',
      'MIME-Version',
    ]) {
      const mail = message();
      mail.attach(new MimePart({ content: 'x', headers: { [name]: 'text/html' } }));
      const error = refusal(() => mail.message());
      expect(error).toBeInstanceOf(BadHeaderError);
      expect(error.field).toBe(`attachments[0].headers.${name}`);
    }
  });
});

describe('lists and values of the wrong kind', () => {
  it('refuses a null, a hole or a number among the recipients, naming the entry', () => {
    const nulls = message();
    nulls.to = [null as unknown as string, 'b@example.com'];
    expect(refusal(() => nulls.validate()).field).toBe('to[0]');
    const hole = message();
    // biome-ignore lint/suspicious/noSparseArray: the hole is the point
    hole.cc = [, 'c@example.com'] as string[];
    expect(refusal(() => hole.validate()).field).toBe('cc[0]');
    const number = message();
    number.bcc = [5 as unknown as string];
    expect(refusal(() => number.validate()).field).toBe('bcc[0]');
  });

  it('refuses content, filenames, Content-IDs and part header values that are not text', () => {
    expect(refusal(() => new MimePart({ content: {} as unknown as string })).field).toBe('MimePart.content');
    const cases: [string, (mail: EmailMultiAlternatives) => void][] = [
      [
        'attachments[0].content',
        (mail) => mail.attachments.push(['f.txt', 5 as unknown as string, 'text/plain']),
      ],
      [
        'attachments[0].filename',
        (mail) => mail.attachments.push([5 as unknown as string, 'x', 'text/plain']),
      ],
      [
        'attachments[0].contentId',
        (mail) => mail.attach(new MimePart({ content: 'x', contentId: 5 as unknown as string })),
      ],
      [
        'attachments[0].headers.X-A',
        (mail) => mail.attach(new MimePart({ content: 'x', headers: { 'X-A': 5 as unknown as string } })),
      ],
      ['alternatives[0].content', (mail) => mail.alternatives.push([5 as unknown as string, 'text/html'])],
    ];
    for (const [field, build] of cases) {
      const mail = message();
      build(mail);
      expect(refusal(() => mail.validate()).field, field).toBe(field);
    }
  });
});

describe('addresses are taken as written', () => {
  it('refuses a percent-encoded domain and an IP address outside brackets', () => {
    for (const address of ['v@exa%6dple.com', 'v@0x7f.1', 'w@2130706433', 'x@192.0.2.1']) {
      expect(
        refusal(() => new EmailMessage('s', 'b', 'a@example.com', [address]).validate()),
        address,
      ).toBeInstanceOf(InvalidAddressError);
    }
    expect(new EmailMessage('s', 'b', 'a@example.com', ['x@[192.0.2.1]']).message().length).toBeGreaterThan(
      0,
    );
  });

  it('refuses a TAB or angle brackets in a quoted local part (RFC 5321 envelope)', () => {
    for (const address of ['"a\tb"@example.com', '"a>b"@example.com', '"x<y"@example.com']) {
      expect(() => new EmailMessage('s', 'b', 'a@example.com', [address]).validate(), address).toThrow(
        ValidationError,
      );
    }
    expect(
      new EmailMessage('s', 'b', 'a@example.com', ['"a b"@example.com']).message().length,
    ).toBeGreaterThan(0);
  });
});

describe('batch size', () => {
  it(`refuses a batch job of more than ${MAX_BATCH_MESSAGES} messages, packed or plain, before decoding any`, () => {
    // A few kilobytes of deflated `[0,0,0,...]` would otherwise be a million invalid messages, each
    // recorded in the ledger and logged.
    const packed = deflateRawSync(Buffer.from(`[${'0,'.repeat(MAX_BATCH_MESSAGES)}0]`)).toString('base64');
    const job = { v: 1, packed, enqueuedAt: Date.now() };
    expect(refusal(() => parseBatchJob(job)).message).toMatch(/more than a batch holds/);
    const plain = { v: 1, messages: Array(MAX_BATCH_MESSAGES + 1).fill(0), enqueuedAt: Date.now() };
    expect(refusal(() => parseBatchJob(plain)).field).toBe('job.messages');
    expect(
      parseBatchJob({ v: 1, messages: Array(MAX_BATCH_MESSAGES).fill(0), enqueuedAt: 1 }).messages,
    ).toHaveLength(MAX_BATCH_MESSAGES);
  });
});
