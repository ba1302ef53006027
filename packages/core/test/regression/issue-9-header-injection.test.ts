/**
 * Issue 9: header injection past BadHeaderError. Header text used to become bytes through latin1,
 * which keeps only the low byte of each character, so U+010D / U+FF0D arrived as CR and U+010A /
 * U+FF0A as LF in fields that allow non-ASCII (domain literals, subtypes, MimePart.disposition).
 *
 * The matrix: every header-bearing field x every dangerous character x {constructor, attribute
 * assignment, wire format}. Each case is either refused with a BadHeaderError (an
 * InvalidAddressError where an address part can hold no such character at all) naming the field, or
 * sent to a real SMTP server whose raw DATA bytes are then checked: pure printable-ASCII header lines,
 * every line a header or a folded continuation, no header the message did not set, the body intact.
 * One exception since internationalised addresses (RFC 6531/6532, test/smtputf8.test.ts): a Unicode
 * letter (U+010D, U+010A, U+0D0A) is a legitimate local-part character, so such an address is
 * accepted, and its addr-spec may appear in the header only as its own exact UTF-8 bytes.
 * (The campaign and CLI paths build the same EmailMessage; test/cli-hostile-input.test.ts drives them.)
 */
import {
  BadHeaderError,
  decodeWire,
  type EmailMessage,
  EmailMultiAlternatives,
  InvalidAddressError,
  MimePart,
  SmtpBackend,
  toWire,
  ValidationError,
  type WireMessage,
} from '@mailroom/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CONTROL_NAMES as CONTROLS,
  HOSTILE_CHARACTERS,
  headerProblems,
  inject,
} from '../../../../test/support/hostile.js';
import { type SmtpTestServer, startSmtpServer } from '../../../../test/support/smtp-server.js';

interface FieldCase {
  /** The field as an error must name it (prefix match). */
  field: string;
  /** True where no encoding exists for the position, so a look-alike must be refused too. */
  asciiOnly?: boolean;
  /** Address positions where a look-alike may be an InvalidAddressError (local-part rules, IDNA). */
  addressPart?: boolean;
  /** Sets the field to the hostile value on a fresh message. */
  set(message: EmailMultiAlternatives, value: string): void;
  /** Options for the constructor, when the field is a constructor option. */
  init?(value: string): Record<string, unknown>;
  /** Puts the hostile value into a wire message. */
  wire(wire: WireMessage, value: string): void;
}

const base = () =>
  new EmailMultiAlternatives({
    subject: 'Hello',
    body: 'the real body',
    fromEmail: 'news@example.com',
    to: ['ann@example.com'],
  });

const attachment = (wire: WireMessage) =>
  wire.attachments[0] as Extract<WireMessage['attachments'][0], { type: 'attachment' }>;
const part = (wire: WireMessage) =>
  wire.attachments[0] as Extract<WireMessage['attachments'][0], { type: 'part' }>;
const withFile = (message: EmailMultiAlternatives) => message.attach('report.txt', 'report', 'text/plain');
const withPart = (
  message: EmailMultiAlternatives,
  overrides: Partial<ConstructorParameters<typeof MimePart>[0]> = {},
) =>
  message.attach(
    new MimePart({
      content: 'png',
      mimetype: 'image/png',
      disposition: 'inline',
      filename: 'logo.png',
      contentId: 'logo@example.com',
      ...overrides,
    }),
  );

/** Each address field with the hostile text in each part of an address. */
function addressCases(name: 'fromEmail' | 'to' | 'cc' | 'bcc' | 'replyTo'): LabeledCase[] {
  const field = name === 'fromEmail' ? 'fromEmail' : `${name}[0]`;
  const shapes: { label: string; make: (c: string) => string; asciiOnly?: boolean; addressPart?: boolean }[] =
    [
      { label: 'display name', make: (c) => `"Visitor${inject(c)}" <visitor@example.com>` },
      { label: 'local part', make: (c) => `visitor${c}x@example.com`, addressPart: true },
      { label: 'domain', make: (c) => `visitor@exa${c}mple.com`, addressPart: true },
      // In angle brackets and without spaces, as the attack run sent it: only dtext can stop it.
      {
        label: 'domain literal',
        make: (c) => `Visitor <visitor@[1.2.3.4${c}Bcc:victim${c}]>`,
        asciiOnly: true,
      },
    ];
  return shapes.map((shape) => ({
    field,
    label: `${name} ${shape.label}`,
    ...(shape.asciiOnly ? { asciiOnly: true } : {}),
    ...(shape.addressPart ? { addressPart: true } : {}),
    set: (message, c) => {
      if (name === 'fromEmail') message.fromEmail = shape.make(c);
      else message[name] = [shape.make(c)];
    },
    init: (c) => ({ [name]: name === 'fromEmail' ? shape.make(c) : [shape.make(c)] }),
    wire: (wire, c) => {
      if (name === 'fromEmail') wire.fromEmail = shape.make(c);
      else wire[name] = [shape.make(c)];
    },
  }));
}

type LabeledCase = FieldCase & { label: string };

const CASES: LabeledCase[] = [
  {
    label: 'subject',
    field: 'subject',
    set: (m, c) => {
      m.subject = `Hi${inject(c)}`;
    },
    init: (c) => ({ subject: `Hi${inject(c)}` }),
    wire: (w, c) => {
      w.subject = `Hi${inject(c)}`;
    },
  },
  ...addressCases('fromEmail'),
  ...addressCases('to'),
  ...addressCases('cc'),
  ...addressCases('bcc'),
  ...addressCases('replyTo'),
  {
    label: 'extra header value',
    field: 'headers.X-Note',
    set: (m, c) => {
      m.extraHeaders = { 'X-Note': `note${inject(c)}` };
    },
    init: (c) => ({ headers: { 'X-Note': `note${inject(c)}` } }),
    wire: (w, c) => {
      w.headers = [['X-Note', `note${inject(c)}`]];
    },
  },
  {
    label: 'Reply-To given as a header',
    field: 'headers.Reply-To',
    set: (m, c) => {
      m.extraHeaders = { 'Reply-To': `<visitor@[1.2.3.4${c}Bcc:victim]>` };
    },
    init: (c) => ({ headers: { 'Reply-To': `<visitor@[1.2.3.4${c}Bcc:victim]>` } }),
    wire: (w, c) => {
      w.headers = [['Reply-To', `<visitor@[1.2.3.4${c}Bcc:victim]>`]];
    },
    asciiOnly: true,
  },
  {
    label: 'structured header (List-Unsubscribe)',
    field: 'headers.List-Unsubscribe',
    asciiOnly: true,
    set: (m, c) => {
      m.extraHeaders = { 'List-Unsubscribe': `<https://example.com/u${inject(c)}>` };
    },
    init: (c) => ({ headers: { 'List-Unsubscribe': `<https://example.com/u${inject(c)}>` } }),
    wire: (w, c) => {
      w.headers = [['List-Unsubscribe', `<https://example.com/u${inject(c)}>`]];
    },
  },
  {
    label: 'header name',
    field: 'headers.',
    asciiOnly: true,
    set: (m, c) => {
      m.extraHeaders = { [`X-A${c}Bcc`]: 'victim@attacker.example' };
    },
    init: (c) => ({ headers: { [`X-A${c}Bcc`]: 'victim@attacker.example' } }),
    wire: (w, c) => {
      w.headers = [[`X-A${c}Bcc`, 'victim@attacker.example']];
    },
  },
  ...(['contentSubtype', 'mixedSubtype', 'alternativeSubtype'] as const).map(
    (name): LabeledCase => ({
      label: name,
      field: name,
      asciiOnly: true,
      set: (m, c) => {
        withFile(m);
        m.attachAlternative('<p>alt</p>', 'text/html');
        m[name] = `html${inject(c)}`;
      },
      wire: (w, c) => {
        (w as unknown as Record<string, string>)[name] = `html${inject(c)}`;
      },
    }),
  ),
  {
    label: 'encoding (charset)',
    field: 'encoding',
    asciiOnly: true,
    set: (m, c) => {
      m.encoding = `utf-8${inject(c)}`;
    },
    wire: (w, c) => {
      w.encoding = `utf-8${inject(c)}`;
    },
  },
  {
    label: 'attachment filename',
    field: 'attachments[0].filename',
    set: (m, c) => m.attach(`report${inject(c)}.txt`, 'report', 'text/plain'),
    wire: (w, c) => {
      attachment(w).filename = `report${inject(c)}.txt`;
    },
  },
  {
    label: 'attachment mimetype',
    field: 'attachments[0].mimetype',
    asciiOnly: true,
    set: (m, c) => {
      withFile(m);
      (m.attachments[0] as { mimetype: string }).mimetype = `text/plain${inject(c)}`;
    },
    wire: (w, c) => {
      attachment(w).mimetype = `text/plain${inject(c)}`;
    },
  },
  {
    label: 'MimePart disposition',
    field: 'attachments[0].disposition',
    asciiOnly: true,
    set: (m, c) => {
      withPart(m);
      (m.attachments[0] as MimePart).disposition = `inline${inject(c)}` as 'inline';
    },
    wire: (w, c) => {
      part(w).disposition = `inline${inject(c)}` as 'inline';
    },
  },
  {
    label: 'MimePart filename',
    field: 'attachments[0].filename',
    set: (m, c) => withPart(m, { filename: `logo${inject(c)}.png` }),
    wire: (w, c) => {
      part(w).filename = `logo${inject(c)}.png`;
    },
  },
  {
    label: 'MimePart Content-ID',
    field: 'attachments[0].contentId',
    asciiOnly: true,
    set: (m, c) => withPart(m, { contentId: `logo${inject(c)}@example.com` }),
    wire: (w, c) => {
      part(w).contentId = `logo${inject(c)}@example.com`;
    },
  },
  {
    label: 'MimePart charset',
    field: 'attachments[0].charset',
    asciiOnly: true,
    set: (m, c) => withPart(m, { content: 'text', mimetype: 'text/plain', charset: `utf-8${inject(c)}` }),
    wire: (w, c) => {
      part(w).mimetype = 'text/plain';
      part(w).content = { text: 'text' };
      part(w).charset = `utf-8${inject(c)}`;
    },
  },
  {
    label: 'MimePart header value',
    field: 'attachments[0].headers.X-Part',
    set: (m, c) => withPart(m, { headers: { 'X-Part': `p${inject(c)}` } }),
    wire: (w, c) => {
      part(w).headers = { 'X-Part': `p${inject(c)}` };
    },
  },
  {
    label: 'alternative mimetype',
    field: 'alternatives[0].mimetype',
    asciiOnly: true,
    set: (m, c) => {
      m.alternatives = [{ content: '<p>x</p>', mimetype: `text/html${inject(c)}` }];
    },
    wire: (w, c) => {
      w.kind = 'alternatives';
      w.alternatives = [{ content: { text: '<p>x</p>' }, mimetype: `text/html${inject(c)}` }];
    },
  },
];

/** The baseline message a wire case starts from: the field's container already present. */
function wireBase(testCase: LabeledCase): WireMessage {
  const message = base();
  if (
    /^attachments\[0\]\.(filename|mimetype)$/.test(testCase.field) &&
    testCase.label.startsWith('attachment')
  ) {
    withFile(message);
  } else if (testCase.field.startsWith('attachments[0]')) {
    withPart(message);
  }
  if (/Subtype$/.test(testCase.field)) {
    withFile(message);
    message.attachAlternative('<p>alt</p>', 'text/html');
  }
  return toWire(message);
}

type Outcome = { refused: Error } | { bytes: Buffer; message: EmailMessage };

/**
 * The addr-spec a local-part case makes when `c` is made of Unicode letters only: RFC 6531 allows
 * letters in a local part, so `visitor${c}x@example.com` is a real (internationalised) address.
 * Undefined for every other case: a control, a separator or punctuation in a local part is refused.
 */
function utf8AddrSpecOf(testCase: LabeledCase, c: string): string | undefined {
  if (!testCase.label.endsWith('local part') || !/^\p{L}+$/u.test(c)) return undefined;
  return `visitor${c}x@example.com`.normalize('NFC');
}

/**
 * The header section of raw bytes with every occurrence of the UTF-8 bytes of `addrSpec` replaced by
 * an ASCII stand-in, and how many there were: what is left must pass {@link headerProblems}, so the
 * addr-spec's own bytes are the only non-ASCII ones and no byte of it comes from a lossy conversion.
 */
function maskUtf8AddrSpec(raw: Buffer, addrSpec: string | undefined): { raw: Buffer; count: number } {
  if (addrSpec === undefined) return { raw, count: 0 };
  const needle = Buffer.from(addrSpec, 'utf8');
  const end = raw.indexOf('\r\n\r\n');
  const chunks: Buffer[] = [];
  let count = 0;
  let from = 0;
  for (let at = raw.indexOf(needle); at !== -1 && at < end; at = raw.indexOf(needle, from)) {
    chunks.push(raw.subarray(from, at), Buffer.from('visitor-x@example.com', 'latin1'));
    from = at + needle.length;
    count++;
  }
  chunks.push(raw.subarray(from));
  return { raw: Buffer.concat(chunks), count };
}

function render(build: () => EmailMessage): Outcome {
  try {
    const message = build();
    return { bytes: message.message(), message };
  } catch (error) {
    return { refused: error as Error };
  }
}

const PATHS: Record<string, (testCase: LabeledCase, c: string) => Outcome | undefined> = {
  'constructor options': (testCase, c) => {
    const init = testCase.init;
    if (!init) return undefined;
    return render(() => {
      const options = init(c);
      const message = new EmailMultiAlternatives({
        subject: 'Hello',
        body: 'the real body',
        fromEmail: 'news@example.com',
        to: ['ann@example.com'],
        ...options,
      });
      return message;
    });
  },
  assignment: (testCase, c) =>
    render(() => {
      const message = base();
      testCase.set(message, c);
      return message;
    }),
  'wire format': (testCase, c) =>
    render(() => {
      const wire = wireBase(testCase);
      testCase.wire(wire, c);
      return decodeWire(JSON.parse(JSON.stringify(wire))).message;
    }),
};

let server: SmtpTestServer;
const accepted: { label: string; message: EmailMessage; utf8AddrSpec: string | undefined }[] = [];

beforeAll(async () => {
  server = await startSmtpServer();
});
afterAll(async () => {
  await server?.close();
});

describe('header injection matrix (issue 9)', () => {
  for (const testCase of CASES) {
    for (const [charName, c] of Object.entries(HOSTILE_CHARACTERS)) {
      for (const [path, run] of Object.entries(PATHS)) {
        if (path === 'constructor options' && !testCase.init) continue;
        it(`${testCase.label} x ${charName} via ${path}`, () => {
          const outcome = run(testCase, c) as Outcome;
          const utf8AddrSpec = utf8AddrSpecOf(testCase, c);
          if ('refused' in outcome) {
            const error = outcome.refused;
            expect(utf8AddrSpec, `a letter is allowed in a local part (RFC 6531): ${error}`).toBeUndefined();
            expect(error, String(error)).toBeInstanceOf(ValidationError);
            expect((error as ValidationError).field ?? '', String(error)).toContain(testCase.field);
            // The wire schema may stop a value before any header is built (e.g. a disposition
            // that is neither inline nor attachment): refused as invalid wire data.
            if (path === 'wire format' && /^Invalid message\./.test(error.message)) return;
            const lookAlikeInAddress = !CONTROLS.has(charName) && testCase.addressPart;
            if (lookAlikeInAddress) {
              expect(
                error instanceof BadHeaderError || error instanceof InvalidAddressError,
                String(error),
              ).toBe(true);
            } else {
              expect(error, String(error)).toBeInstanceOf(BadHeaderError);
            }
            return;
          }
          // Accepted: only possible where an encoding covers the character, never for a control.
          expect(CONTROLS.has(charName), `${charName} must be refused`).toBe(false);
          expect(testCase.asciiOnly ?? false, `${charName} must be refused in ${testCase.label}`).toBe(false);
          if (testCase.label.endsWith('local part')) {
            expect(
              utf8AddrSpec,
              `${charName} is no letter: must be refused in ${testCase.label}`,
            ).toBeDefined();
            expect(outcome.message.needsSmtpUtf8()).toBe(true);
          }
          const masked = maskUtf8AddrSpec(outcome.bytes, utf8AddrSpec);
          expect(headerProblems(masked.raw)).toEqual([]);
          // Once in its own header (From, To, Cc or Reply-To); never for Bcc, which is not rendered.
          if (utf8AddrSpec !== undefined) expect(masked.count).toBe(testCase.label.startsWith('bcc') ? 0 : 1);
          accepted.push({
            label: `${testCase.label} x ${charName} via ${path}`,
            message: outcome.message,
            utf8AddrSpec,
          });
        });
      }
    }
  }

  it('delivers every accepted case with well-formed header bytes and the real body (raw DATA)', async () => {
    expect(accepted.length).toBeGreaterThan(50);
    const backend = new SmtpBackend({ ...server.clientOptions, timeout: 10 });
    const sendable = accepted.filter(({ message }) => message.recipients().length > 0);
    const sent = await backend.sendMessages(sendable.map(({ message }) => message));
    expect(sent).toBe(sendable.length);
    const received = await server.waitForMessages(sendable.length);
    for (const [index, message] of received.entries()) {
      const label = sendable[index]?.label;
      expect(headerProblems(maskUtf8AddrSpec(message.raw, sendable[index]?.utf8AddrSpec).raw), label).toEqual(
        [],
      );
      const text = message.raw.toString('latin1');
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      expect(body.includes('the real body'), label).toBe(true);
      expect(/^<h1>attacker body/m.test(body), label).toBe(false);
      // The envelope never carries the attacker's recipient either.
      expect(message.to.join(','), label).not.toContain('attacker.example');
    }
  });
});
