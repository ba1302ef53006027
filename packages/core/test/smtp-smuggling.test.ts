/** SMTP smuggling: bodies built to end the data early reach the server as exactly one message, byte for byte; framePayload's rules. */

import net from 'node:net';
import {
  type DeliveryOutcome,
  EmailMessage,
  framePayload,
  MAX_LINE_OCTETS,
  type PayloadMode,
  SmtpBackend,
  SmtpSession,
  type SmtpTransaction,
  ValidationError,
} from '@mailroom/core';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { type ScriptedServer, startScriptedServer } from '../../../test/support/scripted-smtp.js';
import { parse, type SmtpTestServer, startSmtpServer } from '../../../test/support/smtp-server.js';

// ---- Reference model ------------------------------------------------------------------------------

/** What a message must look like on the server: CRLF for every CR, LF and CRLF, and a final CRLF. */
function normalised(bytes: Buffer): Buffer {
  const text = bytes.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
  return Buffer.from(text.length > 0 && !text.endsWith('\r\n') ? `${text}\r\n` : text, 'latin1');
}

/** The longest line of {@link normalised} bytes, in octets without its CRLF. */
function longestLine(bytes: Buffer): number {
  return Math.max(
    0,
    ...normalised(bytes)
      .toString('latin1')
      .split('\r\n')
      .map((line) => line.length),
  );
}

/** Undoes DATA framing as a strict receiver does: the body before the terminating "." line, dot-unstuffed. */
function unframeData(framed: Buffer): Buffer {
  const text = framed.toString('latin1');
  expect(text.endsWith('.\r\n')).toBe(true);
  const body = text.slice(0, -3);
  if (body === '') return Buffer.alloc(0);
  expect(body.endsWith('\r\n')).toBe(true);
  const lines = body.slice(0, -2).split('\r\n');
  return Buffer.from(
    `${lines.map((line) => (line.startsWith('.') ? line.slice(1) : line)).join('\r\n')}\r\n`,
    'latin1',
  );
}

const concat = (chunks: readonly Buffer[]) => Buffer.concat(chunks);

/** Every CR is followed by LF and every LF preceded by CR: nothing a lenient reader could take for a line end. */
function onlyCrlf(bytes: Buffer): boolean {
  for (let index = 0; index < bytes.length; index++) {
    if (bytes[index] === 0x0d && bytes[index + 1] !== 0x0a) return false;
    if (bytes[index] === 0x0a && bytes[index - 1] !== 0x0d) return false;
  }
  return true;
}

// ---- Bodies built to smuggle -----------------------------------------------------------------------

const INJECTION = 'MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n.\r\n';
const BODIES: { name: string; body: string }[] = [
  { name: 'a lone "\\n.\\n"', body: 'Hello\n.\nafter the dot\n' },
  { name: '"\\r\\n.\\r\\n"', body: 'Hello\r\n.\r\nafter the dot\r\n' },
  { name: '"\\n.\\r\\n"', body: 'Hello\n.\r\nafter the dot\r\n' },
  { name: '"\\r.\\r"', body: 'Hello\r.\rafter the dot\r' },
  { name: '"\\r.\\r\\n"', body: 'Hello\r.\r\nafter the dot\r\n' },
  { name: 'bare CRs', body: 'one\rtwo\rthree' },
  { name: 'NUL bytes', body: 'nul\0in\0the middle\0\r\n' },
  { name: 'a body that is just "."', body: '.' },
  { name: 'a body ending without a newline', body: 'no newline at the end' },
  { name: 'an empty body', body: '' },
  { name: 'commands after "\\r\\n.\\r\\n"', body: `Hello\r\n.\r\n${INJECTION}` },
  { name: 'commands after "\\n.\\n"', body: `Hello\n.\n${INJECTION.replaceAll('\r\n', '\n')}` },
  { name: 'commands after "\\n.\\r\\n"', body: `Hello\n.\r\n${INJECTION}` },
  { name: 'commands after "\\r.\\r"', body: `Hello\r.\r${INJECTION.replaceAll('\r\n', '\r')}` },
  { name: 'a line of dots', body: '..\r\n...\r\n.\r\n' },
];

// ---- Peers -----------------------------------------------------------------------------------------

/** What the tests need from a server: its address, what it accepted and the envelope commands it saw. */
interface Peer {
  host: string;
  port: number;
  /** Raw bytes and envelope of each accepted message. */
  accepted(): { raw: Buffer; from: string; to: string[] }[];
  /** Every MAIL and RCPT line it saw. */
  envelopeLines(): string[];
  close(): Promise<void>;
}

interface PeerKind {
  name: string;
  /** The framing the client uses with it. */
  mode: PayloadMode;
  start(): Promise<Peer>;
}

function scriptedPeer(name: string, extensions: string[], lineEnding: 'crlf' | 'lenient'): PeerKind {
  return {
    name,
    mode: extensions.includes('CHUNKING') ? 'bdat' : 'data',
    async start() {
      const server: ScriptedServer = await startScriptedServer({ extensions, lineEnding });
      return {
        host: server.host,
        port: server.port,
        accepted: () => server.accepted.map(({ raw, from, to }) => ({ raw, from, to })),
        envelopeLines: () =>
          server.commands
            .filter((command) => command.verb === 'MAIL' || command.verb === 'RCPT')
            .map((command) => command.line),
        close: () => server.close(),
      };
    },
  };
}

const PEERS: PeerKind[] = [
  scriptedPeer('scripted server, BDAT', ['PIPELINING', 'CHUNKING', '8BITMIME'], 'crlf'),
  scriptedPeer('scripted server, DATA', ['PIPELINING', '8BITMIME'], 'crlf'),
  // The lenient reader ends lines at bare CR or LF, so "\n.\n" would end its data: what smuggling exploits.
  scriptedPeer('scripted server, DATA, lenient line ends', ['PIPELINING', '8BITMIME'], 'lenient'),
  scriptedPeer('scripted server, BDAT, lenient line ends', ['PIPELINING', 'CHUNKING', '8BITMIME'], 'lenient'),
  scriptedPeer('scripted server, lock-step DATA, lenient line ends', ['8BITMIME'], 'lenient'),
  {
    name: 'smtp-server (DATA)',
    mode: 'data',
    async start() {
      const server: SmtpTestServer = await startSmtpServer();
      return {
        host: server.host,
        port: server.port,
        accepted: () => server.messages.map(({ raw, from, to }) => ({ raw, from, to })),
        envelopeLines: () =>
          server.commands
            .filter((command) => command.command === 'MAIL' || command.command === 'RCPT')
            .map((command) => command.line),
        close: () => server.close(),
      };
    },
  },
];

const peers: Peer[] = [];
const rawServers: ScriptedServer[] = [];
const sessions: SmtpSession[] = [];
const backends: SmtpBackend[] = [];

afterEach(async () => {
  for (const session of sessions.splice(0)) session.destroy();
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
  await Promise.all(peers.splice(0).map((peer) => peer.close()));
  await Promise.all(rawServers.splice(0).map((server) => server.close()));
});

async function startPeer(kind: PeerKind): Promise<Peer> {
  const peer = await kind.start();
  peers.push(peer);
  return peer;
}

async function connect(peer: Peer): Promise<SmtpSession> {
  const session = await SmtpSession.connect({
    host: peer.host,
    port: peer.port,
    timeout: 10_000,
    clientName: 'client.test',
  });
  sessions.push(session);
  return session;
}

const FOLLOWER = Buffer.from('Subject: the next message\r\n\r\nIntact.\r\n', 'latin1');

/** Sends `messages` (raw bytes) in one pipelined stream and returns each one's outcome, in order. */
async function sendRaw(session: SmtpSession, messages: Buffer[]): Promise<DeliveryOutcome[]> {
  const outcomes: DeliveryOutcome[] = [];
  let index = 0;
  const result = await session.stream<number>(
    (): SmtpTransaction<number> | undefined => {
      const bytes = messages[index];
      if (bytes === undefined) return undefined;
      const item = index++;
      return {
        item,
        envelope: { from: `sender-${item}@example.com`, to: [`rcpt-${item}@example.com`] },
        bytes,
      };
    },
    (item, outcome) => {
      expect(outcomes[item], `message ${item} settled twice`).toBeUndefined();
      outcomes[item] = outcome;
    },
    8,
  );
  expect(result.error).toBeUndefined();
  return outcomes;
}

/** The server saw exactly our envelopes: one MAIL and one RCPT per message, none smuggled. */
function expectOnlyOurEnvelopes(peer: Peer, count: number): void {
  const lines = peer.envelopeLines();
  expect(lines.filter((line) => /^MAIL/i.test(line))).toEqual(
    Array.from({ length: count }, (_, item) =>
      expect.stringMatching(new RegExp(`^MAIL FROM:<sender-${item}@example\\.com>`)),
    ),
  );
  expect(lines.filter((line) => /^RCPT/i.test(line))).toEqual(
    Array.from({ length: count }, (_, item) => `RCPT TO:<rcpt-${item}@example.com>`),
  );
  expect(lines.join('\n')).not.toMatch(/evil|victim/);
}

describe.each(PEERS)('$name', (kind) => {
  describe('raw bytes straight into SmtpSession.stream', () => {
    it.each(BODIES)(
      '$name: one message, stored as the CRLF-normalised bytes, and the next message intact',
      async ({ body }) => {
        const peer = await startPeer(kind);
        const session = await connect(peer);
        const bytes = Buffer.from(body, 'latin1');
        const outcomes = await sendRaw(session, [bytes, FOLLOWER]);

        expect(outcomes.map((outcome) => outcome.delivered)).toEqual([true, true]);
        const accepted = peer.accepted();
        expect(accepted).toHaveLength(2);
        expect(accepted[0]!.raw.toString('latin1')).toBe(normalised(bytes).toString('latin1'));
        expect(accepted[1]!.raw.equals(FOLLOWER)).toBe(true);
        expect(accepted.map((message) => [message.from, message.to])).toEqual([
          ['sender-0@example.com', ['rcpt-0@example.com']],
          ['sender-1@example.com', ['rcpt-1@example.com']],
        ]);
        expectOnlyOurEnvelopes(peer, 2);
      },
    );

    it(`a line of exactly ${MAX_LINE_OCTETS} octets goes out whole`, async () => {
      const peer = await startPeer(kind);
      const session = await connect(peer);
      const line = `${'z'.repeat(MAX_LINE_OCTETS)}\r\n`;
      const outcomes = await sendRaw(session, [Buffer.from(`Subject: long\r\n\r\n${line}`, 'latin1')]);
      expect(outcomes[0]?.delivered).toBe(true);
      expect(peer.accepted()[0]?.raw.toString('latin1')).toBe(`Subject: long\r\n\r\n${line}`);
    });

    it.each([
      { name: `${MAX_LINE_OCTETS + 1} octets`, length: MAX_LINE_OCTETS + 1 },
      { name: '100,000 characters', length: 100_000 },
    ])(
      'a line of $name is refused (ValidationError, permanent), never sent nor split; the next message goes',
      async ({ length }) => {
        const peer = await startPeer(kind);
        const session = await connect(peer);
        const long = Buffer.from(`Subject: long\r\n\r\nshort line\r\n${'w'.repeat(length)}\r\n`, 'latin1');
        const outcomes = await sendRaw(session, [long, FOLLOWER]);

        expect(outcomes[0]?.delivered).toBe(false);
        expect(outcomes[0]?.error).toBeInstanceOf(ValidationError);
        expect(outcomes[0]?.error?.message).toMatch(/line 4 .*998/);
        expect(outcomes[0]?.classification).toEqual({ transient: false, reason: 'invalid' });
        expect(outcomes[1]?.delivered).toBe(true);
        // Never sent: no envelope for it, and the one message stored is the next one.
        expect(peer.envelopeLines().filter((line) => /^MAIL/i.test(line))).toEqual([
          expect.stringMatching(/^MAIL FROM:<sender-1@example\.com>/),
        ]);
        expect(peer.accepted().map((message) => message.raw.toString('latin1'))).toEqual([
          FOLLOWER.toString('latin1'),
        ]);
      },
    );
  });

  describe('through EmailMessage (core renders and encodes, the backend sends)', () => {
    it.each([...BODIES, { name: 'a 100,000-character line', body: 'y'.repeat(100_000) }])(
      '$name: one message, the bytes core rendered, and the body text intact',
      async ({ body }) => {
        const peer = await startPeer(kind);
        const backend = new SmtpBackend({ host: peer.host, port: peer.port, timeout: 10 });
        backends.push(backend);
        const message = new EmailMessage({
          subject: 'smuggling',
          body,
          fromEmail: 'sender-0@example.com',
          to: ['rcpt-0@example.com'],
          // Fixed, so that rendering twice gives the same bytes.
          headers: { 'Message-ID': '<smuggling@example.com>', Date: 'Wed, 02 Dec 2026 12:00:00 +0000' },
        });
        const rendered = message.message();
        // Core's own rendering is already safe to send: CRLF only, no line over 998 octets.
        expect(onlyCrlf(rendered)).toBe(true);
        expect(longestLine(rendered)).toBeLessThanOrEqual(MAX_LINE_OCTETS);

        expect(await backend.sendMessages([message])).toBe(1);
        const accepted = peer.accepted();
        expect(accepted).toHaveLength(1);
        expect(accepted[0]!.raw.toString('latin1')).toBe(rendered.toString('latin1'));
        expectOnlyOurEnvelopes(peer, 1);
        const text = body.replace(/\r\n|\r|\n/g, '\n');
        expect((await parse(accepted[0]!.raw)).text).toBe(text.endsWith('\n') ? text : `${text}\n`);
      },
    );
  });
});

// ---- The oracle itself ----------------------------------------------------------------------------

describe('the lenient scripted server (the oracle of these tests)', () => {
  /** Writes `text` on a raw connection and waits for the server to close it after QUIT. */
  async function talk(server: ScriptedServer, text: string): Promise<void> {
    const socket = net.connect(server.port, server.host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => socket.end(text));
      socket.on('data', () => undefined);
      socket.once('close', () => resolve());
      socket.once('error', reject);
    });
  }

  it('ends DATA at "\\n.\\n", so an unnormalised body would show up as a second, smuggled transaction', async () => {
    const server = await startScriptedServer({ extensions: ['PIPELINING'], lineEnding: 'lenient' });
    rawServers.push(server);
    await talk(
      server,
      `EHLO raw\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nHello\n.\n${INJECTION.replaceAll('\r\n', '\n')}QUIT\r\n`,
    );
    expect(
      server.commands.filter((command) => command.verb === 'MAIL').map((command) => command.line),
    ).toEqual(['MAIL FROM:<a@example.com>', 'MAIL FROM:<evil@x>']);
    expect(server.accepted).toHaveLength(2);
  });
});

// ---- framePayload ----------------------------------------------------------------------------------

describe('framePayload', () => {
  const bytes = (text: string) => Buffer.from(text, 'latin1');
  const framed = (text: string, mode: PayloadMode) =>
    concat(framePayload(bytes(text), mode)).toString('latin1');

  it('hands clean bytes over without a copy (BDAT: the bytes; DATA: the bytes and the terminator)', () => {
    const clean = bytes('Subject: x\r\n\r\nbody\r\n');
    const bdat = framePayload(clean, 'bdat');
    expect(bdat).toHaveLength(1);
    expect(bdat[0]).toBe(clean);
    const data = framePayload(clean, 'data');
    expect(data[0]).toBe(clean);
    expect(concat(data).toString('latin1')).toBe('Subject: x\r\n\r\nbody\r\n.\r\n');
  });

  it('dot-stuffs every line that starts with "." for DATA, and only for DATA (RFC 5321 §4.5.2)', () => {
    expect(framed('.a\r\n..b\r\nc.\r\n.\r\n', 'data')).toBe('..a\r\n...b\r\nc.\r\n..\r\n.\r\n');
    expect(framed('.a\r\n..b\r\nc.\r\n.\r\n', 'bdat')).toBe('.a\r\n..b\r\nc.\r\n.\r\n');
  });

  it('turns bare CR, bare LF and CRLF alike into CRLF, and adds a final CRLF', () => {
    expect(framed('a\rb\nc\r\nd', 'bdat')).toBe('a\r\nb\r\nc\r\nd\r\n');
    expect(framed('a\n.\nb', 'data')).toBe('a\r\n..\r\nb\r\n.\r\n');
    expect(framed('\r\r\n\n', 'bdat')).toBe('\r\n\r\n\r\n');
  });

  it('frames an empty message as an empty chunk (BDAT 0 LAST) or the terminator alone', () => {
    expect(framed('', 'bdat')).toBe('');
    expect(framed('', 'data')).toBe('.\r\n');
  });

  it(`refuses a line over ${MAX_LINE_OCTETS} octets in both modes, naming the line`, () => {
    for (const mode of ['data', 'bdat'] as const) {
      expect(() => framePayload(bytes(`ok\r\n${'x'.repeat(MAX_LINE_OCTETS + 1)}\r\n`), mode)).toThrow(
        ValidationError,
      );
      expect(() => framePayload(bytes(`ok\n${'x'.repeat(MAX_LINE_OCTETS + 1)}`), mode)).toThrow(/line 2/);
      expect(framed(`${'x'.repeat(MAX_LINE_OCTETS)}\r\n`, mode).startsWith('x'.repeat(MAX_LINE_OCTETS))).toBe(
        true,
      );
    }
  });

  it(`accepts a ${MAX_LINE_OCTETS}-octet line starting with "." for DATA: the doubled dot does not count (RFC 5321 §4.5.3.1.6)`, () => {
    const line = `.${'x'.repeat(MAX_LINE_OCTETS - 1)}`;
    expect(framed(`${line}\r\n`, 'bdat')).toBe(`${line}\r\n`);
    expect(framed(`${line}\r\n`, 'data')).toBe(`.${line}\r\n.\r\n`);
  });

  /** Bytes rich in what framing is about: CR, LF, ".", NUL, 8-bit. */
  const edgyBytes = fc
    .array(fc.constantFrom(0x0d, 0x0a, 0x2e, 0x2e, 0x00, 0x41, 0x7a, 0x20, 0xff), { maxLength: 200 })
    .map((values) => Buffer.from(values));

  it('property: DATA framing, unstuffed and without its terminator, is the CRLF-normalised input, with no end of data before the end', () => {
    fc.assert(
      fc.property(edgyBytes, (input) => {
        const out = concat(framePayload(input, 'data'));
        expect(onlyCrlf(out)).toBe(true);
        // A receiver ends the data at the first CRLF "." CRLF, counting the CRLF that ended the DATA line.
        const stream = Buffer.concat([bytes('\r\n'), out]);
        expect(stream.indexOf('\r\n.\r\n')).toBe(stream.length - 5);
        expect(unframeData(out).toString('latin1')).toBe(normalised(input).toString('latin1'));
      }),
      { numRuns: 2000 },
    );
  });

  it('property: BDAT framing is the CRLF-normalised input', () => {
    fc.assert(
      fc.property(edgyBytes, (input) => {
        const out = concat(framePayload(input, 'bdat'));
        expect(out.toString('latin1')).toBe(normalised(input).toString('latin1'));
      }),
      { numRuns: 2000 },
    );
  });

  it(`property: framing refuses the input exactly when a line is over ${MAX_LINE_OCTETS} octets, in both modes`, () => {
    const line = fc
      .tuple(
        fc.boolean(),
        fc.integer({ min: MAX_LINE_OCTETS - 3, max: MAX_LINE_OCTETS + 2 }),
        fc.constantFrom('\r\n', '\n', '\r', ''),
      )
      .map(([dot, length, end]) => `${dot ? '.' : ''}${'q'.repeat(length - (dot ? 1 : 0))}${end}`);
    fc.assert(
      fc.property(
        fc.array(fc.oneof(line, fc.constantFrom('short\r\n', '.\r\n', '\n')), { maxLength: 4 }),
        fc.constantFrom<PayloadMode>('data', 'bdat'),
        (lines, mode) => {
          const input = bytes(lines.join(''));
          const tooLong = longestLine(input) > MAX_LINE_OCTETS;
          if (tooLong) {
            expect(() => framePayload(input, mode)).toThrow(ValidationError);
          } else {
            const out = concat(framePayload(input, mode));
            const body = mode === 'data' ? unframeData(out) : out;
            expect(body.toString('latin1')).toBe(normalised(input).toString('latin1'));
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
