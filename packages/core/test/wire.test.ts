/**
 * The wire format: property-based round trips through JSON (the copy renders to the same MIME and
 * the same decoded values, binary content byte-exact), no credentials on the wire, and a clear
 * ValidationError naming the field for malformed input or an unknown version, never a crash.
 */
import {
  type AlternativeInput,
  type AttachmentInput,
  decodeWire,
  EmailAlternative,
  EmailAttachment,
  EmailMessage,
  EmailMultiAlternatives,
  fromWire,
  getConnection,
  type HeaderValue,
  MimePart,
  SmtpBackend,
  toWire,
  ValidationError,
  WIRE_VERSION,
} from '@mailroom/core';
import fc from 'fast-check';
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { type MimeTree, outline, parseMime } from './support/mime-tree.js';

// ---------------------------------------------------------------------------------------------
// Generators. Every generated message is valid (message() renders it); the properties compare what
// the original and its wire copy render to, so anything the wire loses shows up as a difference.
// ---------------------------------------------------------------------------------------------

/** Text on one line: ASCII, any Unicode grapheme, or raw code units (controls, lone surrogates). */
const oneLine = (maxLength: number) =>
  fc
    .oneof(
      fc.string({ unit: 'grapheme-ascii', maxLength }),
      fc.string({ unit: 'grapheme', maxLength }),
      fc.string({ unit: 'binary', maxLength }),
    )
    .map((text) => text.replace(/[\r\n]/g, ' '));

/**
 * Text for a header: one line without the control characters headers refuse (C0 but TAB, DEL, C1,
 * U+2028/2029), which become spaces.
 */
const withoutControls = (text: string) => text.replace(/[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]/g, ' ');
const headerLine = (maxLength: number) => oneLine(maxLength).map(withoutControls);

/** A long line (beyond the 78/998-octet limits), so folding and QP/base64 choices are exercised. */
const longLine = fc.oneof(
  fc.string({ unit: 'grapheme-ascii', minLength: 79, maxLength: 1200 }),
  fc.string({ unit: 'grapheme', minLength: 79, maxLength: 400 }),
);

/** Multi-line text with any line ending (rendering normalises them to CRLF). */
const multiLine = fc
  .tuple(fc.array(fc.oneof(oneLine(60), longLine), { maxLength: 6 }), fc.constantFrom('\n', '\r\n', '\r'))
  .map(([lines, eol]) => lines.join(eol));

/** ISO-8859-1 encodable text (printable Latin-1), with newlines. */
const latin1Text = fc
  .array(
    fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0xa0, max: 0xff }), fc.constant(10)),
    {
      maxLength: 300,
    },
  )
  .map((codes) => String.fromCharCode(...codes));

const localPart = fc.constantFrom('jane', 'john.doe', 'a+tag', "o'neil", 'x_y-z', 'root', 'UPPER.case');
const domain = fc.constantFrom(
  'example.com',
  'mail.example.org',
  'bücher.example',
  '例え.テスト',
  'пример.рф',
  'xn--bcher-kva.example',
);
const displayName = fc.oneof(
  fc.constant(''),
  fc.constantFrom(
    'Jane Doe',
    'Doe, Jane',
    'Jörg Müller',
    'Müller, Jörg',
    '山田 太郎',
    '"Quoted" \\ Name',
    'a,b,c',
  ),
  headerLine(40),
);

/** `addr` or `"Display Name" <addr>` (quoted and escaped so commas stay in ONE address). */
const address = fc.tuple(displayName, localPart, domain, fc.boolean()).map(([name, local, host, bare]) => {
  // Django allows a bare local part ("root"); keep a few of them.
  const spec = bare && local === 'root' ? local : `${local}@${host}`;
  if (name.trim() === '') return spec;
  return `"${name.replace(/(["\\])/g, '\\$1')}" <${spec}>`;
});

/** A list of addresses, with an occasional empty entry (skipped by rendering). */
const addressList = fc.array(
  fc.oneof({ weight: 9, arbitrary: address }, { weight: 1, arbitrary: fc.constant('') }),
  {
    maxLength: 4,
  },
);

/** Dates across the whole range a Date can hold, plus ordinary ones. */
const anyDate = fc.oneof(
  fc.date({ noInvalidDate: true }),
  fc.date({
    min: new Date('1990-01-01T00:00:00Z'),
    max: new Date('2100-01-01T00:00:00Z'),
    noInvalidDate: true,
  }),
);

const headerValue: fc.Arbitrary<HeaderValue> = fc.oneof(
  headerLine(60),
  longLine.map(withoutControls),
  anyDate,
  fc.integer(),
  fc.double(),
);

/** Extra headers: X- names with any value, plus a few structured ones with ASCII values. */
const extraHeaders = fc
  .tuple(
    fc.uniqueArray(fc.tuple(fc.stringMatching(/^X-[A-Za-z0-9-]{1,20}$/), headerValue), {
      maxLength: 4,
      selector: ([name]) => name.toLowerCase(),
    }),
    fc.option(fc.constantFrom('<parent-1@example.com>', '<a@example.com> <b@example.com>'), {
      nil: undefined,
    }),
    fc.option(address, { nil: undefined }),
  )
  .map(([pairs, references, replyToOverride]) => {
    const headers: Record<string, HeaderValue> = Object.fromEntries(pairs);
    if (references !== undefined) headers.References = references;
    // An override of an address header changes the header, not the envelope (SPEC §2.2).
    if (replyToOverride !== undefined) headers['Reply-To'] = replyToOverride;
    return headers;
  });

const filename = fc.oneof(
  fc.constantFrom(
    'report.pdf',
    'notes.txt',
    'data.csv',
    'we"ird\\name.txt',
    'résumé.pdf',
    '日本語.txt',
    'noext',
  ),
  fc
    .string({ unit: 'grapheme', minLength: 1, maxLength: 80 })
    .map((name) => `${name.replace(/[\r\n]/g, '')}.bin`),
);

const bytes = fc.uint8Array({ maxLength: 2048 }).map((array) => Buffer.from(array));

/** Bytes that are not valid UTF-8, so a text/* attachment given as them becomes application/octet-stream. */
const nonUtf8Bytes = bytes.map((buffer) => Buffer.concat([buffer, Buffer.from([0xff, 0xfe, 0xc3])]));

const contentId = fc.constantFrom('logo@example.com', '<img.1@example.com>', 'part-2');

/** Fixed Date and Message-ID so that two renders of the same message have the same headers. */
const fixedIdentity = fc
  .tuple(fc.oneof(anyDate, fc.constant('Mon, 01 Jan 2024 00:00:00 +0000')), fc.integer({ min: 1, max: 1e6 }))
  .map(
    ([date, id]) =>
      ({ Date: date, 'Message-ID': `<fixed.${id}@example.com>` }) as Record<string, HeaderValue>,
  );

type Intent = { failSilently?: boolean };

interface Generated {
  message: EmailMessage;
  /** Every binary content the message carries (attachments, parts, alternatives), to find byte-exact. */
  binaries: Buffer[];
}

function attachmentArbitrary(
  nested: fc.Arbitrary<Generated> | undefined,
): fc.Arbitrary<[AttachmentInput, Buffer[]]> {
  const options: fc.Arbitrary<[AttachmentInput, Buffer[]]>[] = [
    fc
      .tuple(filename, multiLine, fc.constantFrom('text/plain', 'text/csv', 'text/html'))
      .map(([name, text, type]) => [new EmailAttachment(name, text, type), []]),
    fc.tuple(filename, bytes).map(([name, content]) => [[name, content, 'application/pdf'], [content]]),
    // A tuple without a mimetype: guessed from the (non-text) filename at render time.
    fc
      .tuple(fc.constantFrom('photo.jpg', 'archive.zip', 'data.bin', 'noext', 'пакет.tar.gz'), bytes)
      .map(([name, content]) => [[name, content], [content]]),
    // No filename: no Content-Disposition.
    multiLine.map((text) => [[null, text, 'text/plain'], []]),
    // text/* bytes that are UTF-8 are decoded; bytes that are not become application/octet-stream.
    multiLine.map((text) => [new EmailAttachment('utf8.txt', Buffer.from(text, 'utf8'), 'text/plain'), []]),
    nonUtf8Bytes.map((content) => [new EmailAttachment('latin.txt', content, 'text/plain'), [content]]),
    fc.tuple(bytes, contentId, fc.boolean()).map(([content, cid, withHeaders]) => [
      new MimePart({
        content,
        mimetype: 'image/png',
        disposition: 'inline',
        filename: 'logo.png',
        contentId: cid,
        ...(withHeaders ? { headers: { 'X-Part-Note': 'inline logo' } } : {}),
      }),
      [content],
    ]),
    // A text MimePart: any text in utf-8, or Latin-1 text in the message's charset (its default).
    fc
      .oneof(
        multiLine.map((text) => ({ content: text, charset: 'utf-8' })),
        latin1Text.map((text) => ({ content: text })),
      )
      .map((text) => [
        new MimePart({ ...text, mimetype: 'text/plain', disposition: 'attachment', filename: 'part.txt' }),
        [],
      ]),
    fc.constant<[AttachmentInput, Buffer[]]>([
      ['forwarded.eml', 'Subject: old\nFrom: a@example.com\n\nold body\n', 'message/rfc822'],
      [],
    ]),
  ];
  if (nested) {
    options.push(
      fc
        .tuple(nested, fc.option(fc.constant('forwarded.eml'), { nil: null }))
        .map(([inner, name]) => [new EmailAttachment(name, inner.message, 'message/rfc822'), inner.binaries]),
    );
  }
  return fc.oneof(...options);
}

/** An alternative and the binary content it carries. */
const alternative = (entry: AlternativeInput, binaries: Buffer[] = []): [AlternativeInput, Buffer[]] => [
  entry,
  binaries,
];

const alternativeArbitrary = fc.oneof(
  multiLine.map((html) => alternative([`<p>${html}</p>`, 'text/html'])),
  multiLine.map((html) => alternative(new EmailAlternative(`<div>${html}</div>`, 'text/html'))),
  multiLine.map((text) => alternative(new EmailAlternative(Buffer.from(text, 'utf8'), 'text/plain'))),
  bytes.map((content) => alternative(new EmailAlternative(content, 'application/octet-stream'), [content])),
);

function messageArbitrary(depth: number): fc.Arbitrary<Generated> {
  const nested = depth > 0 ? messageArbitrary(depth - 1) : undefined;
  return fc
    .record({
      multi: fc.boolean(),
      subject: fc.oneof(headerLine(80), longLine.map(withoutControls)),
      latin1: fc.boolean(),
      body: multiLine,
      latin1Body: latin1Text,
      fromEmail: address,
      to: addressList,
      cc: addressList,
      bcc: addressList,
      replyTo: addressList,
      headers: extraHeaders,
      identity: fixedIdentity,
      html: fc.boolean(),
      mixedSubtype: fc.constantFrom('mixed', 'mixed', 'related'),
      alternativeSubtype: fc.constantFrom('alternative', 'alternative', 'related'),
      alternatives: fc.array(alternativeArbitrary, { maxLength: 3 }),
      attachments: fc.array(attachmentArbitrary(nested), { maxLength: depth > 0 ? 4 : 2 }),
    })
    .map((g) => {
      const init = {
        subject: g.subject,
        body: g.latin1 ? g.latin1Body : g.body,
        fromEmail: g.fromEmail,
        to: g.to,
        cc: g.cc,
        bcc: g.bcc,
        replyTo: g.replyTo,
        headers: { ...g.headers, ...g.identity },
        attachments: g.attachments.map(([entry]) => entry),
      };
      const binaries = g.attachments.flatMap(([, found]) => found);
      let message: EmailMessage;
      if (g.multi) {
        const multi = new EmailMultiAlternatives({
          ...init,
          alternatives: g.alternatives.map(([entry]) => entry),
        });
        multi.alternativeSubtype = g.alternativeSubtype;
        binaries.push(...g.alternatives.flatMap(([, found]) => found));
        message = multi;
      } else {
        message = new EmailMessage(init);
      }
      if (g.html) message.contentSubtype = 'html';
      if (g.latin1) message.encoding = 'iso-8859-1';
      message.mixedSubtype = g.mixedSubtype;
      return { message, binaries };
    });
}

const generatedMessage = messageArbitrary(2);
const intent: fc.Arbitrary<Intent> = fc.oneof(
  fc.constant({}),
  fc.boolean().map((failSilently) => ({ failSilently })),
);

// ---------------------------------------------------------------------------------------------
// Comparison helpers
// ---------------------------------------------------------------------------------------------

/** MIME boundaries are random per render: number them by first appearance. */
function normaliseBoundaries(raw: Buffer): string {
  const seen = new Map<string, string>();
  return raw.toString('latin1').replace(/===============[0-9a-f]{24}==/g, (boundary) => {
    if (!seen.has(boundary)) seen.set(boundary, `BOUNDARY-${seen.size}`);
    return seen.get(boundary) as string;
  });
}

/** The JSON round trip a queue job goes through. */
function throughJson(message: EmailMessage, options: Intent = {}): unknown {
  return JSON.parse(JSON.stringify(toWire(message, options)));
}

/** Every leaf body of a tree (and of embedded messages), decoded. */
function decodedLeaves(tree: MimeTree): Buffer[] {
  // An embedded message's raw bytes hold its own random boundaries: compare its parsed leaves instead.
  if (tree.embedded) return decodedLeaves(tree.embedded);
  if (tree.children.length > 0) return tree.children.flatMap(decodedLeaves);
  return [tree.decoded()];
}

/** What mailparser decodes, reduced to comparable plain values. */
async function decodedValues(raw: Buffer) {
  const parsed = await simpleParser(raw);
  const addresses = (field: typeof parsed.to) =>
    (field === undefined ? [] : Array.isArray(field) ? field : [field]).flatMap((object) =>
      object.value.map((entry) => [entry.name, entry.address]),
    );
  return {
    subject: parsed.subject,
    text: parsed.text,
    html: parsed.html,
    from: addresses(parsed.from),
    to: addresses(parsed.to),
    cc: addresses(parsed.cc),
    replyTo: addresses(parsed.replyTo),
    messageId: parsed.messageId,
    // The header as written: mailparser replaces a date it cannot read (e.g. year -86) with "now".
    date: parsed.headerLines.find((line) => line.key === 'date')?.line,
    attachments: parsed.attachments.map((attachment) => ({
      filename: attachment.filename,
      contentType: attachment.contentType,
      contentDisposition: attachment.contentDisposition,
      cid: attachment.cid,
      // A message/rfc822 attachment holds the inner message's own random boundaries.
      content: normaliseBoundaries(attachment.content),
    })),
  };
}

// ---------------------------------------------------------------------------------------------

describe('wire round trip (property)', () => {
  it('renders the JSON-transported copy to the same bytes as the original (boundaries aside)', () => {
    fc.assert(
      fc.property(generatedMessage, intent, ({ message }, options) => {
        const copy = fromWire(throughJson(message, options));
        expect(normaliseBoundaries(copy.message())).toBe(normaliseBoundaries(message.message()));
      }),
      { numRuns: 150 },
    );
  });

  it('gives the same MIME tree and the same decoded parts', () => {
    fc.assert(
      fc.property(generatedMessage, ({ message }) => {
        const original = parseMime(message.message());
        const copy = parseMime(fromWire(throughJson(message)).message());
        expect(outline(copy)).toEqual(outline(original));
        expect(decodedLeaves(copy)).toEqual(decodedLeaves(original));
      }),
      { numRuns: 100 },
    );
  });

  it('keeps every binary content byte-exact through JSON', () => {
    fc.assert(
      fc.property(
        generatedMessage.filter(({ binaries }) => binaries.length > 0),
        ({ message, binaries }) => {
          const leaves = decodedLeaves(parseMime(fromWire(throughJson(message)).message()));
          for (const binary of binaries) {
            expect(leaves.some((leaf) => leaf.equals(binary))).toBe(true);
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  it('decodes to the same values with mailparser', async () => {
    await fc.assert(
      fc.asyncProperty(generatedMessage, async ({ message }) => {
        const copy = fromWire(throughJson(message));
        expect(await decodedValues(copy.message())).toEqual(await decodedValues(message.message()));
      }),
      { numRuns: 60 },
    );
  });

  it('rebuilds the same class and the same fields', () => {
    fc.assert(
      fc.property(generatedMessage, ({ message }) => {
        const copy = fromWire(throughJson(message));
        expect(copy.constructor).toBe(message.constructor);
        expect([copy.subject, copy.body, copy.fromEmail]).toEqual([
          message.subject,
          message.body,
          message.fromEmail,
        ]);
        expect([copy.to, copy.cc, copy.bcc, copy.replyTo]).toEqual([
          message.to,
          message.cc,
          message.bcc,
          message.replyTo,
        ]);
        expect([copy.contentSubtype, copy.mixedSubtype, copy.encoding]).toEqual([
          message.contentSubtype,
          message.mixedSubtype,
          message.encoding,
        ]);
        // Date headers come back as Dates with the same instant, numbers as numbers (-0, Infinity
        // and NaN included: the wire carries numbers as text).
        expect(copy.extraHeaders).toEqual(message.extraHeaders);
        for (const [name, value] of Object.entries(message.extraHeaders)) {
          if (typeof value === 'number') expect(Object.is(copy.extraHeaders[name], value)).toBe(true);
        }
        // Serializing the copy again gives the same wire form: nothing was dropped or reshaped.
        expect(toWire(copy)).toEqual(toWire(message));
      }),
      { numRuns: 100 },
    );
  });

  it('returns the failSilently intent it was given, false by default', () => {
    fc.assert(
      fc.property(generatedMessage, intent, ({ message }, options) => {
        expect(decodeWire(throughJson(message, options)).failSilently).toBe(options.failSilently ?? false);
      }),
      { numRuns: 30 },
    );
  });

  it('writes a JSON-safe value (JSON.stringify loses nothing)', () => {
    fc.assert(
      fc.property(generatedMessage, intent, ({ message }, options) => {
        const wire = toWire(message, options);
        expect(JSON.parse(JSON.stringify(wire))).toEqual(wire);
      }),
      { numRuns: 50 },
    );
  });
});

describe('wire round trip (examples)', () => {
  const base = {
    subject: 'Grüße, 世界',
    body: 'Hello\n',
    fromEmail: '"Doe, Jane" <jane@bücher.example>',
    to: ['"Müller, Jörg" <joerg@例え.テスト>', 'root'],
    headers: { Date: new Date('2024-05-06T07:08:09.123Z'), 'Message-ID': '<x@example.com>', 'X-Count': 3 },
  };

  it('keeps a nested message/rfc822 EmailMessage as a message, with its own attachments', () => {
    const inner = new EmailMultiAlternatives({
      ...base,
      subject: 'inner',
      alternatives: [['<b>hi</b>', 'text/html']],
    });
    inner.attach('inner.bin', Buffer.from([0, 1, 2, 255]), 'application/octet-stream');
    const outer = new EmailMessage({
      ...base,
      attachments: [new EmailAttachment('fwd.eml', inner, 'message/rfc822')],
    });
    const copy = fromWire(throughJson(outer));
    const attachment = copy.attachments[0] as EmailAttachment;
    expect(attachment.content).toBeInstanceOf(EmailMultiAlternatives);
    const nested = attachment.content as EmailMultiAlternatives;
    expect(nested.subject).toBe('inner');
    expect(Buffer.from((nested.attachments[0] as EmailAttachment).content as Uint8Array)).toEqual(
      Buffer.from([0, 1, 2, 255]),
    );
    expect(normaliseBoundaries(copy.message())).toBe(normaliseBoundaries(outer.message()));
  });

  it('keeps a Date header to the millisecond and a number header as a number', () => {
    const copy = fromWire(throughJson(new EmailMessage(base)));
    expect(copy.extraHeaders.Date).toBeInstanceOf(Date);
    expect((copy.extraHeaders.Date as Date).toISOString()).toBe('2024-05-06T07:08:09.123Z');
    expect(copy.extraHeaders['X-Count']).toBe(3);
  });

  it('keeps an inline MimePart with its Content-ID, disposition, filename and headers', () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0xff]);
    const message = new EmailMultiAlternatives({
      ...base,
      alternatives: [['<img src="cid:logo@example.com">', 'text/html']],
    });
    message.mixedSubtype = 'related';
    message.attach(
      new MimePart({
        content: png,
        mimetype: 'image/png',
        disposition: 'inline',
        filename: 'logo.png',
        contentId: 'logo@example.com',
        headers: { 'X-Note': 'n' },
      }),
    );
    const part = fromWire(throughJson(message)).attachments[0] as MimePart;
    expect(part).toBeInstanceOf(MimePart);
    expect([part.mimetype, part.disposition, part.filename, part.contentId, part.headers]).toEqual([
      'image/png',
      'inline',
      'logo.png',
      'logo@example.com',
      { 'X-Note': 'n' },
    ]);
    expect(Buffer.from(part.content as Uint8Array).equals(png)).toBe(true);
  });

  it('keeps a header named __proto__ (e.g. headers parsed from JSON) as a header', () => {
    const headers = JSON.parse('{"__proto__": "kept", "X-Other": "also"}') as Record<string, HeaderValue>;
    const message = new EmailMessage({ ...base, headers: { ...base.headers, ...headers } });
    const copy = fromWire(throughJson(message));
    expect(Object.keys(copy.extraHeaders)).toEqual(Object.keys(message.extraHeaders));
    expect(normaliseBoundaries(copy.message())).toBe(normaliseBoundaries(message.message()));
  });

  it('keeps a header whose value is Infinity, NaN or -0 exactly, as a number, after JSON', () => {
    // JSON.stringify turns non-finite numbers into null and -0 into 0; the wire carries numbers as text.
    const message = new EmailMessage({
      ...base,
      headers: { ...base.headers, 'X-Inf': Number.POSITIVE_INFINITY, 'X-NaN': Number.NaN, 'X-Zero': -0 },
    });
    const copy = fromWire(throughJson(message));
    expect(copy.extraHeaders['X-Inf']).toBe(Number.POSITIVE_INFINITY);
    expect(copy.extraHeaders['X-NaN']).toBeNaN();
    expect(Object.is(copy.extraHeaders['X-Zero'], -0)).toBe(true);
    expect(normaliseBoundaries(copy.message())).toBe(normaliseBoundaries(message.message()));
  });
});

describe('no credentials on the wire', () => {
  const password = 'hunter2-S3cret-Passw0rd';

  it('leaves out the connection of an SMTP backend with a password', () => {
    const connection = new SmtpBackend({ host: 'smtp.example.com', username: 'mailer', password });
    const message = new EmailMessage({ subject: 's', body: 'b', to: ['a@example.com'], connection });
    const json = JSON.stringify(toWire(message, { failSilently: true }));
    expect(json).not.toContain(password);
    expect(json).not.toContain('connection');
    expect(json).not.toContain('smtp.example.com');
  });

  it('leaves out a connection from getConnection() with credentials, in nested messages too', () => {
    const connection = getConnection('smtp', { username: 'mailer', password });
    const inner = new EmailMessage({ subject: 'inner', to: ['a@example.com'], connection });
    const message = new EmailMultiAlternatives({
      subject: 's',
      to: ['a@example.com'],
      connection,
      attachments: [new EmailAttachment(null, inner, 'message/rfc822')],
    });
    expect(JSON.stringify(toWire(message))).not.toContain(password);
    expect(fromWire(throughJson(message)).connection).toBeNull();
  });
});

describe('decodeWire rejects malformed input with a ValidationError naming the field', () => {
  const valid = throughJson(
    new EmailMultiAlternatives({
      subject: 's',
      body: 'b',
      to: ['a@example.com', 'b@example.com'],
      headers: { Date: new Date(0) },
      alternatives: [['<p>b</p>', 'text/html']],
      attachments: [['a.bin', Buffer.from([1, 2, 3]), 'application/octet-stream']],
    }),
  ) as Record<string, unknown>;
  const nestedValid = { ...valid } as Record<string, unknown>;
  delete nestedValid.v;
  const nested = (content: unknown) => ({
    ...valid,
    attachments: [{ type: 'attachment', filename: null, mimetype: 'message/rfc822', content }],
  });

  const cases: [string, unknown, string, RegExp][] = [
    ['a string', 'hello', 'message', /expected a wire message object, got string/],
    ['a number', 42, 'message', /got number/],
    ['null', null, 'message', /got object|null/],
    ['an array', [valid], 'message', /got array/],
    ['no version', { ...valid, v: undefined }, 'message.v', /version undefined/],
    ['version 2', { ...valid, v: 2 }, 'message.v', /version 2 in message\.v; this build reads v1/],
    ['version "1" as a string', { ...valid, v: '1' }, 'message.v', /version "1"/],
    [
      'a number among the recipients',
      { ...valid, to: ['a@example.com', 5] },
      'message.to[1]',
      /expected string/,
    ],
    ['a string where a list is expected', { ...valid, cc: 'a@example.com' }, 'message.cc', /expected array/],
    ['a missing subject', { ...valid, subject: undefined }, 'message.subject', /expected string/],
    ['an unknown kind', { ...valid, kind: 'letter' }, 'message.kind', /message|alternatives/],
    ['an extra field', { ...valid, password: 'x' }, 'message.password', /password/],
    [
      'bad base64',
      {
        ...valid,
        attachments: [{ type: 'attachment', filename: 'a', mimetype: null, content: { base64: '!!!' } }],
      },
      'message.attachments[0].content.base64',
      /base64/,
    ],
    [
      'a bad ISO date in a header',
      { ...valid, headers: [['Date', { date: 'yesterday' }]] },
      'message.headers[0][1].date',
      /datetime/i,
    ],
    [
      'a header number that is not a number',
      { ...valid, headers: [['X-N', { number: null }]] },
      'message.headers[0][1].number',
      /expected string/,
    ],
    [
      'a header number written as words',
      { ...valid, headers: [['X-N', { number: 'twelve' }]] },
      'message.headers[0][1].number',
      /must be a number/,
    ],
    [
      'a MimePart with a malformed mimetype',
      {
        ...valid,
        attachments: [
          {
            type: 'part',
            mimetype: 'png',
            content: { base64: '' },
            charset: null,
            disposition: null,
            filename: null,
            contentId: null,
            headers: {},
          },
        ],
      },
      'message.attachments[0].mimetype',
      /MIME type/,
    ],
    [
      'an unknown attachment type',
      { ...valid, attachments: [{ type: 'file' }] },
      'message.attachments[0].type',
      /attachment/,
    ],
    [
      'a bad field inside a nested message/rfc822 message',
      nested({ message: { ...nestedValid, to: ['a@example.com', 7] } }),
      'message.attachments[0].content.message.to[1]',
      /expected string/,
    ],
    [
      'a version inside a nested message',
      nested({ message: { ...nestedValid, v: 1 } }),
      'message.attachments[0].content.message.v',
      /v/,
    ],
    [
      'a bad alternative',
      { ...valid, alternatives: [{ content: { text: 'x' }, mimetype: 5 }] },
      'message.alternatives[0].mimetype',
      /expected string/,
    ],
  ];

  it.each(cases)('%s', (_label, data, field, reason) => {
    let thrown: unknown;
    try {
      decodeWire(data);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ValidationError);
    const error = thrown as ValidationError;
    expect(error.field).toBe(field);
    expect(error.message).toContain(field);
    expect(error.message).toMatch(reason);
  });

  it('reads its own version', () => {
    expect(valid.v).toBe(WIRE_VERSION);
    expect(decodeWire(valid).message.to).toEqual(['a@example.com', 'b@example.com']);
  });

  it('rejects arbitrary non-wire input with a ValidationError, never a crash', () => {
    fc.assert(
      fc.property(fc.anything(), (data) => {
        expect(() => decodeWire(data)).toThrow(ValidationError);
      }),
      { numRuns: 300 },
    );
  });

  it('never crashes on a valid payload with one field replaced by anything', () => {
    const paths: (string | number)[][] = [];
    const walk = (value: unknown, path: (string | number)[]) => {
      paths.push(path);
      if (Array.isArray(value)) for (const [index, entry] of value.entries()) walk(entry, [...path, index]);
      else if (value !== null && typeof value === 'object') {
        for (const [key, entry] of Object.entries(value)) walk(entry, [...path, key]);
      }
    };
    const sample = throughJson(
      new EmailMultiAlternatives({
        subject: 's',
        to: ['a@example.com'],
        headers: { Date: new Date(0), 'X-N': 1 },
        alternatives: [['<p>x</p>', 'text/html']],
        attachments: [
          ['a.bin', Buffer.from([1]), 'application/octet-stream'],
          new MimePart({ content: Buffer.from([2]), mimetype: 'image/png', contentId: 'c@x' }),
          new EmailAttachment(
            null,
            new EmailMessage({ subject: 'inner', to: ['b@example.com'] }),
            'message/rfc822',
          ),
        ],
      }),
    );
    walk(sample, []);
    let rejected = 0;
    fc.assert(
      fc.property(
        fc.constantFrom(...paths.filter((path) => path.length > 0)),
        fc.anything(),
        (path, replacement) => {
          const data = structuredClone(sample) as Record<string | number, unknown>;
          let target = data;
          for (const key of path.slice(0, -1)) target = target[key] as Record<string | number, unknown>;
          target[path.at(-1) as string | number] = replacement;
          try {
            decodeWire(data);
          } catch (error) {
            expect(error).toBeInstanceOf(ValidationError);
            expect((error as ValidationError).field).toMatch(/^message/);
            rejected++;
          }
        },
      ),
      { numRuns: 500 },
    );
    // Most replacements are invalid; the few that are not (e.g. another string) decode fine.
    expect(rejected).toBeGreaterThan(250);
  });
});

describe('alternatives given as plain objects', () => {
  it('serializes { content, mimetype } objects as rendering accepts them', () => {
    const message = new EmailMultiAlternatives('Hi', 'Text', 'a@example.com', ['b@example.com']);
    message.alternatives = [{ content: '<p>Hi</p>', mimetype: 'text/html' } as EmailAlternative];
    const copy = fromWire(JSON.parse(JSON.stringify(toWire(message))));
    expect(copy).toBeInstanceOf(EmailMultiAlternatives);
    expect((copy as EmailMultiAlternatives).alternatives).toEqual([
      new EmailAlternative('<p>Hi</p>', 'text/html'),
    ]);
  });
});
