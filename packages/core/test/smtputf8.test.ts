/** Internationalised addresses (RFC 6530/6531/6532): which local parts core accepts, how they render, needsSmtpUtf8. */
import {
  BadHeaderError,
  decodeWire,
  type EmailMessage,
  type EmailMessageOptions,
  envelopeAddress,
  getConnection,
  InvalidAddressError,
  parseAddress,
  quoteValue,
  toWire,
  ValidationError,
} from '@mailroom/core';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { foldTokens, Utf8AddrSpecToken, Utf8HeaderLines } from '../src/headers.js';
import { serialize, textNode } from '../src/mime.js';
import { messageFactory } from './support/message.js';
import { decodeEncodedWords, splitEntity } from './support/mime-tree.js';

// Fixed Date and Message-ID, so that two renderings of one message are byte for byte the same.
const make = messageFactory({
  headers: { Date: 'Mon, 01 Jan 2024 00:00:00 +0000', 'Message-ID': '<fixed@example.com>' },
});

const envelope = (message: EmailMessage) => getConnection('memory').envelope(message);

/** The physical header lines of a rendered message, as bytes (CRLF removed). */
function headerLines(raw: Buffer): Buffer[] {
  const { rawHeaders } = splitEntity(raw);
  const lines: Buffer[] = [];
  for (let start = 0; start < rawHeaders.length; ) {
    let end = rawHeaders.indexOf('\r\n', start, 'latin1');
    if (end === -1) end = rawHeaders.length;
    lines.push(rawHeaders.subarray(start, end));
    start = end + 2;
  }
  return lines.filter((line) => line.length > 0);
}

/** How many times `needle` occurs in `haystack`. */
function occurrences(haystack: Buffer, needle: Buffer): number {
  let count = 0;
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + needle.length))
    count++;
  return count;
}

const isPrintableAscii = (line: Buffer) => line.every((byte) => byte === 9 || (byte >= 0x20 && byte <= 0x7e));

/** The error `build` throws. */
function thrownBy(build: () => unknown): unknown {
  try {
    build();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('accepted internationalised local parts', () => {
  it.each([
    ['a Latin letter with a diacritic', 'jöran@example.com', 'jöran@example.com'],
    ['Han characters with an IDN domain', '用户@例子.广告', '用户@xn--fsqu00a.xn--4rr70v'],
    ['Greek', 'θσερ@example.com', 'θσερ@example.com'],
    ['Devanagari with combining vowel signs (marks)', 'राहुल@example.com', 'राहुल@example.com'],
    ['Arabic-Indic digits', 'علي٣@example.com', 'علي٣@example.com'],
    ['non-ASCII letters with ASCII atext and dots', 'jöran.o+news@example.com', 'jöran.o+news@example.com'],
    ['a domain literal', 'jöran@[192.0.2.1]', 'jöran@[192.0.2.1]'],
    ['no domain (a local mailbox, as Django allows)', 'jöran', 'jöran'],
  ])('accepts %s', (_label, address, expected) => {
    expect(envelopeAddress(address)).toBe(expected);
    expect(parseAddress(`Name <${address}>`)).toEqual({ displayName: 'Name', addrSpec: expected });
  });

  it('puts the UTF-8 local part and the punycoded domain in the envelope', () => {
    const message = make({
      fromEmail: 'Jöran <jöran@bücher.de>',
      to: ['用户@例子.广告'],
      bcc: ['θσερ@example.com'],
    });
    expect(envelope(message)).toEqual({
      from: 'jöran@xn--bcher-kva.de',
      to: ['用户@xn--fsqu00a.xn--4rr70v', 'θσερ@example.com'],
    });
  });
});

describe('NFC normalisation', () => {
  it('normalises a decomposed local part to NFC in the envelope', () => {
    // "o" + U+0308 COMBINING DIAERESIS is "ö" (U+00F6) in NFC.
    expect(envelopeAddress('jo\u0308ran@example.com')).toBe('j\u00f6ran@example.com');
  });

  it('composes decomposed Hangul jamo into syllables', () => {
    expect(envelopeAddress('\u1112\u1161\u11ab@example.com')).toBe('\ud55c@example.com');
  });

  it('writes the NFC bytes, not the decomposed ones, in the header', () => {
    const raw = make({ to: ['jo\u0308ran@example.com'] }).message();
    expect(occurrences(raw, Buffer.from('j\u00f6ran@example.com', 'utf8'))).toBe(1);
    expect(raw.includes(Buffer.from('o\u0308', 'utf8'))).toBe(false);
  });
});

describe('refused characters in a local part', () => {
  // Controls and the Unicode line separators are refused by the header-injection guard first
  // (BadHeaderError, as in every header value); everything else by the local-part rules.
  const REFUSED: [name: string, char: string, error: typeof ValidationError][] = [
    ['U+2028 LINE SEPARATOR', '\u2028', BadHeaderError],
    ['U+2029 PARAGRAPH SEPARATOR', '\u2029', BadHeaderError],
    ['U+0085 NEXT LINE (C1 control)', '\u0085', BadHeaderError],
    ['U+200B ZERO WIDTH SPACE', '\u200b', InvalidAddressError],
    ['U+200D ZERO WIDTH JOINER', '\u200d', InvalidAddressError],
    ['U+200E LEFT-TO-RIGHT MARK', '\u200e', InvalidAddressError],
    ['U+200F RIGHT-TO-LEFT MARK', '\u200f', InvalidAddressError],
    ['U+202E RIGHT-TO-LEFT OVERRIDE', '\u202e', InvalidAddressError],
    ['U+2066 LEFT-TO-RIGHT ISOLATE', '\u2066', InvalidAddressError],
    ['U+FEFF BYTE ORDER MARK', '\ufeff', InvalidAddressError],
    ['U+00A0 NO-BREAK SPACE', '\u00a0', InvalidAddressError],
    ['U+3000 IDEOGRAPHIC SPACE', '\u3000', InvalidAddressError],
    ['U+FF20 FULLWIDTH COMMERCIAL AT', '\uff20', InvalidAddressError],
    ['U+FF0E FULLWIDTH FULL STOP', '\uff0e', InvalidAddressError],
    ['U+FF0D FULLWIDTH HYPHEN-MINUS', '\uff0d', InvalidAddressError],
    ['U+00B7 MIDDLE DOT', '\u00b7', InvalidAddressError],
    ['U+1F600 an emoji (symbol)', '\u{1f600}', InvalidAddressError],
    ['U+E000 private use', '\ue000', InvalidAddressError],
    ['U+0378 unassigned', '\u0378', InvalidAddressError],
    ['U+FFFF noncharacter', '\uffff', InvalidAddressError],
    ['a lone high surrogate U+D800', '\ud800', InvalidAddressError],
    ['a lone low surrogate U+DC00', '\udc00', InvalidAddressError],
    ['U+FF4A FULLWIDTH LATIN SMALL LETTER J (a compatibility character)', '\uff4a', InvalidAddressError],
    ['U+FB01 LATIN SMALL LIGATURE FI (a compatibility character)', '\ufb01', InvalidAddressError],
  ];
  const FIELDS: [field: string, options: (address: string) => EmailMessageOptions][] = [
    ['fromEmail', (address) => ({ fromEmail: address })],
    ['to[0]', (address) => ({ to: [address] })],
    ['cc[0]', (address) => ({ cc: [address] })],
    ['bcc[0]', (address) => ({ bcc: [address] })],
    ['replyTo[0]', (address) => ({ replyTo: [address] })],
    ['headers.Reply-To', (address) => ({ headers: { 'Reply-To': address } })],
  ];
  const FORMS: [form: string, address: (char: string) => string][] = [
    ['a bare address', (char) => `jö${char}ran@example.com`],
    ['angle brackets', (char) => `Jöran <jö${char}ran@example.com>`],
  ];
  const CASES = REFUSED.flatMap(([name, char, error]) =>
    FIELDS.flatMap(([field, options]) =>
      FORMS.map(
        ([form, address]) => [name, field, form, address(char), options(address(char)), error] as const,
      ),
    ),
  );

  it.each(CASES)(
    'refuses %s in %s (%s), naming the field and the value',
    (_name, field, _form, address, options, kind) => {
      const error = thrownBy(() => make(options).message());
      expect(error, String(error)).toBeInstanceOf(kind);
      // message() names fromEmail "fromEmail[0]", as it always has; a prefix match covers both.
      expect((error as ValidationError).field?.startsWith(field), String(error)).toBe(true);
      expect((error as ValidationError).message).toContain(quoteValue(address));
    },
  );

  it.each(REFUSED)('refuses %s in the envelope', (_name, char, kind) => {
    const error = thrownBy(() => envelope(make({ bcc: [`jö${char}ran@example.com`] })));
    expect(error, String(error)).toBeInstanceOf(kind);
    expect((error as ValidationError).field).toBe('recipients[1]');
  });

  it('names the refused code point and its kind', () => {
    expect(() => envelopeAddress('Jöran <jö\u202eran@example.com>')).toThrow(
      /U\+202E \(a format character \(bidi, zero-width or byte-order mark\)\); beyond ASCII a local part may hold only letters, marks and digits/,
    );
    expect(() => envelopeAddress('Jöran <jö\uff20ran@example.com>')).toThrow(/U\+FF20 \(punctuation\)/);
  });

  it('refuses a quoted local part with non-ASCII, saying so', () => {
    const error = thrownBy(() => envelopeAddress('"jöran smith"@example.com', 'to[0]'));
    expect(error).toBeInstanceOf(InvalidAddressError);
    expect((error as InvalidAddressError).field).toBe('to[0]');
    expect((error as InvalidAddressError).message).toMatch(/a quoted local part must be ASCII/);
  });

  it('refuses ASCII specials next to non-ASCII letters, which only quoting would allow', () => {
    expect(() => envelopeAddress('Jöran <jö(ran)@example.com>')).toThrow(InvalidAddressError);
  });

  it('refuses a combining mark that follows no letter or digit', () => {
    expect(() => envelopeAddress('\u0301jöran@example.com')).toThrow(/combining mark that follows no letter/);
    expect(() => envelopeAddress('jöran.\u0301x@example.com')).toThrow(
      /combining mark that follows no letter/,
    );
  });
});

describe('raw header bytes', () => {
  const message = () =>
    make({
      subject: 'Grüße',
      fromEmail: 'Jöran Müller <jöran@bücher.de>',
      to: ['用户 <用户@例子.广告>', 'plain@example.com'],
      cc: ['θσερ@example.com'],
      replyTo: ['"Müller, Jöran" <jöran@example.com>'],
    });

  it('writes each UTF-8 addr-spec exactly once, as its UTF-8 bytes, in its own header line', () => {
    const lines = headerLines(message().message());
    const expected: [header: string, addrSpec: string][] = [
      ['From', 'jöran@xn--bcher-kva.de'],
      ['To', '用户@xn--fsqu00a.xn--4rr70v'],
      ['Cc', 'θσερ@example.com'],
      ['Reply-To', 'jöran@example.com'],
    ];
    for (const [header, addrSpec] of expected) {
      const bytes = Buffer.from(addrSpec, 'utf8');
      const holding = lines.filter((line) => line.includes(bytes));
      expect(
        holding.map((line) => line.toString('utf8').split(':')[0]),
        addrSpec,
      ).toEqual([header]);
      expect(occurrences(holding[0] as Buffer, bytes), addrSpec).toBe(1);
    }
  });

  it('keeps the display names RFC 2047 encoded next to a UTF-8 addr-spec', () => {
    const lines = headerLines(message().message()).map((line) => line.toString('utf8'));
    const from = lines.find((line) => line.startsWith('From:')) as string;
    expect(from).toMatch(/^From: =\?utf-8\?[bq]\?[!-~]+\?= <jöran@xn--bcher-kva\.de>$/);
    expect(decodeEncodedWords(from.slice('From: '.length, from.indexOf(' <')))).toBe('Jöran Müller');
    const replyTo = lines.find((line) => line.startsWith('Reply-To:')) as string;
    expect(decodeEncodedWords(replyTo.slice('Reply-To: '.length, replyTo.indexOf(' <')))).toBe(
      'Müller, Jöran',
    );
  });

  it('keeps every other header line pure printable ASCII', () => {
    const utf8Specs = [
      'jöran@xn--bcher-kva.de',
      '用户@xn--fsqu00a.xn--4rr70v',
      'θσερ@example.com',
      'jöran@example.com',
    ];
    for (const line of headerLines(message().message())) {
      let rest = line.toString('utf8');
      for (const spec of utf8Specs) rest = rest.replace(spec, 'x@example.com');
      expect(isPrintableAscii(Buffer.from(rest, 'utf8')), line.toString('utf8')).toBe(true);
    }
  });

  it('keeps the header section valid UTF-8 and readable by mailparser', async () => {
    const raw = message().message();
    expect(() => new TextDecoder('utf-8', { fatal: true }).decode(splitEntity(raw).rawHeaders)).not.toThrow();
    const parsed = await simpleParser(raw);
    // mailparser shows the domain in Unicode again.
    expect(parsed.from?.value).toEqual([{ name: 'Jöran Müller', address: 'jöran@bücher.de' }]);
    expect(parsed.subject).toBe('Grüße');
  });

  it('still refuses any other non-ASCII token in a header', () => {
    expect(() => foldTokens('X-Note', ['jöran@example.com'])).toThrow(BadHeaderError);
  });

  it('makes the UTF-8 exception only for a validated addr-spec', () => {
    expect(new Utf8AddrSpecToken('<', 'jöran@example.com', '>,', 'to').bytes).toEqual(
      Buffer.from('<jöran@example.com>,', 'utf8'),
    );
    for (const [before, addrSpec, after] of [
      ['', 'plain@example.com', ''], // ASCII needs no exception
      ['', 'jö\u202eran@example.com', ''], // a refused character
      ['', 'jo\u0308ran@example.com', ''], // not NFC
      ['', 'jöran@bücher.de', ''], // domain not punycoded
      ['', '"jö ran"@example.com', ''], // quoted
      ['<', 'jöran@example.com', ''], // unbalanced bracket
      ['"', 'jöran@example.com', ''], // anything before it but <
      ['', 'jöran@example.com', '\r\nBcc: x'], // anything after it but > and ,
    ] as const) {
      expect(
        () => new Utf8AddrSpecToken(before as '' | '<', addrSpec, after, 'to'),
        addrSpec + after,
      ).toThrow(BadHeaderError);
    }
  });
});

describe('the serialization guard', () => {
  const body = () => textNode('body', 'plain', 'utf-8');
  const lines = (text: string, bytes = Buffer.from(text, 'utf8')) => new Utf8HeaderLines(text, bytes);

  it('writes UTF-8 header lines that hold only internationalised addr-specs', () => {
    const raw = serialize(
      [lines('To: Name <jöran@example.com>,\r\n =?utf-8?q?x?= <用户@example.com>\r\n')],
      body(),
    );
    expect(raw.includes(Buffer.from('<jöran@example.com>,\r\n', 'utf8'))).toBe(true);
  });

  it.each([
    ['a header that is not an address header', 'Subject: Grüße\r\n'],
    ['a raw UTF-8 display name', 'To: "Jöran" <jöran@example.com>\r\n'],
    ['a refused character in the addr-spec', 'To: <jö\u202eran@example.com>\r\n'],
    ['a line break that is not a fold', 'To: jöran@example.com\r\nBcc: x@example.com\r\n'],
    ['a C1 control', 'To: jöran@example.com \u0085\r\n'],
    ['no final CRLF', 'To: jöran@example.com'],
  ])('refuses UTF-8 header lines with %s', (_label, text) => {
    expect(() => serialize([lines(text)], body())).toThrow(BadHeaderError);
  });

  it('refuses UTF-8 header lines whose bytes are not the UTF-8 of their text', () => {
    const text = 'To: jöran@example.com\r\n';
    expect(() => serialize([lines(text, Buffer.from(text, 'latin1'))], body())).toThrow(BadHeaderError);
  });

  it('still refuses a non-ASCII header given as text', () => {
    expect(() => serialize(['To: jöran@example.com\r\n'], body())).toThrow(BadHeaderError);
  });
});

describe('folding', () => {
  it('folds a To header of many UTF-8 addresses between addresses, lines at most 78 octets', () => {
    const to = Array.from({ length: 60 }, (_, i) => `名前 ${i} <用户${i}@例子.广告>`);
    const raw = make({ to }).message();
    const lines = headerLines(raw);
    for (const line of lines) expect(line.length, line.toString('utf8')).toBeLessThanOrEqual(78);
    const start = lines.findIndex((line) => line.toString('utf8').startsWith('To:'));
    const toLines = [lines[start] as Buffer];
    for (const line of lines.slice(start + 1)) {
      if (line[0] !== 0x20) break;
      toLines.push(line);
    }
    expect(toLines.length).toBeGreaterThan(10);
    // Each addr-spec whole on exactly one line.
    for (let i = 0; i < 60; i++) {
      const spec = Buffer.from(`<用户${i}@xn--fsqu00a.xn--4rr70v>`, 'utf8');
      expect(toLines.filter((line) => line.includes(spec))).toHaveLength(1);
    }
    expect(envelope(make({ to })).to).toHaveLength(60);
  });

  it('never splits a long UTF-8 addr-spec, giving it a line of its own', () => {
    const local = 'ö'.repeat(200); // 400 octets
    const raw = make({ to: ['a@example.com', `${local}@example.com`, 'b@example.com'] }).message();
    const lines = headerLines(raw).map((line) => line.toString('utf8'));
    expect(lines).toContain(` ${local}@example.com,`);
  });

  it('counts the 998-octet line limit in octets, not characters', () => {
    const fits = 'ö'.repeat(490); // 980 octets + "@example.com" + " " = 993
    const raw = make({ to: [`${fits}@example.com`] }).message();
    for (const line of headerLines(raw)) expect(line.length).toBeLessThanOrEqual(998);
    // 506 characters but 1,000 octets: the line cannot be folded under 998.
    const error = thrownBy(() => make({ to: [`${'ö'.repeat(494)}@example.com`] }).message());
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).message).toMatch(/longer than 998 octets/);
  });
});

describe('needsSmtpUtf8()', () => {
  it('is false for ASCII addresses, IDN domains and non-ASCII display names or subjects', () => {
    const message = make({
      subject: 'Grüße',
      fromEmail: 'Jöran <joran@bücher.de>',
      to: ['用户 <user@例子.广告>'],
    });
    expect(message.needsSmtpUtf8()).toBe(false);
  });

  it.each<[string, EmailMessageOptions]>([
    ['the envelope sender', { fromEmail: 'jöran@example.com' }],
    ['a To recipient', { to: ['用户@例子.广告'] }],
    ['a Cc recipient', { cc: ['θσερ@example.com'] }],
    ['a Bcc recipient (in the envelope only)', { bcc: ['jöran@example.com'] }],
    ['a Reply-To address (in the header only)', { replyTo: ['jöran@example.com'] }],
    ['a From given in headers (in the header only)', { headers: { From: 'jöran@example.com' } }],
    ['a Sender extra header', { headers: { Sender: 'Jöran <jöran@example.com>' } }],
  ])('is true for a non-ASCII local part in %s', (_label, options) => {
    expect(make(options).needsSmtpUtf8()).toBe(true);
  });

  it('is true for a message/rfc822 attachment whose own header has one', () => {
    const message = make();
    message.attach(null, make({ fromEmail: 'jöran@example.com' }), 'message/rfc822');
    expect(message.needsSmtpUtf8()).toBe(true);
  });

  it('throws the error message() throws for an unusable address', () => {
    const error = thrownBy(() => make({ to: ['jö\u200bran@example.com'] }).needsSmtpUtf8());
    expect(error).toBeInstanceOf(InvalidAddressError);
    expect((error as InvalidAddressError).field).toBe('to[0]');
  });
});

describe('wire format', () => {
  it('round-trips a message with UTF-8 addresses to the same bytes and envelope', () => {
    const message = make({
      fromEmail: 'Jöran Müller <jöran@bücher.de>',
      to: ['用户 <用户@例子.广告>'],
      cc: ['jo\u0308ran@example.com'],
      bcc: ['θσερ@example.com'],
      replyTo: ['jöran@example.com'],
    });
    const copy = decodeWire(JSON.parse(JSON.stringify(toWire(message)))).message;
    expect(copy.fromEmail).toBe(message.fromEmail);
    expect(copy.recipients()).toEqual(message.recipients());
    expect(copy.message().equals(message.message())).toBe(true);
    expect(envelope(copy)).toEqual(envelope(message));
    expect(copy.needsSmtpUtf8()).toBe(true);
  });
});
