/** Interop of mailroom's SMTP client with three independent real servers: smtp-server, Postfix and aiosmtpd. */
import { isAscii } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { domainToASCII } from 'node:url';
import {
  type DeliveryOutcome,
  EmailMessage,
  EmailMultiAlternatives,
  envelopeAddress,
  SmtpBackend,
  type SmtpBackendOptions,
} from '@mailroom/core';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type AiosmtpdMessage, type AiosmtpdPeer, startAiosmtpd } from './support/aiosmtpd.js';
import { type PostfixPeer, startPostfix } from './support/postfix.js';
import { parse, type ReceivedMessage, type SmtpTestServer, startSmtpServer } from './support/smtp-server.js';
import { waitUntil } from './support/wait.js';

// ---- Messages ---------------------------------------------------------------------------------

/** What a test message is made to exercise. */
type Kind = 'ascii' | '8bit' | 'smtputf8' | 'multipart' | '20mb';

/** A message about to be sent, with the bytes the backend rendered for it once it did. */
interface Sent {
  kind: Kind;
  message: EmailMessage;
  /** Its one envelope recipient, as the server should see it (domain punycoded). */
  recipient: string;
  /** Whether it needs SMTPUTF8 (a UTF-8 local part). */
  smtpUtf8: boolean;
  /** The bytes EmailMessage.message() returned when the backend rendered it (throws if it never did). */
  rendered(): Buffer;
}

const SENDER = 'sender@example.com';
let sequence = 0;

/** A tag unique in this file, so that each test finds its own messages on a shared server. */
function uniqueTag(label: string): string {
  sequence += 1;
  return `${label}${sequence}`;
}

/**
 * Wraps message(): Date, Message-ID and MIME boundaries change at every rendering, so the reference
 * for the byte check is the very rendering the backend sent.
 */
function track(kind: Kind, message: EmailMessage): Sent {
  const renderings: Buffer[] = [];
  const render = message.message.bind(message);
  message.message = () => {
    const bytes = render();
    renderings.push(bytes);
    return bytes;
  };
  const [to] = message.recipients();
  return {
    kind,
    message,
    recipient: envelopeAddress(to!),
    smtpUtf8: message.needsSmtpUtf8(),
    rendered() {
      const last = renderings.at(-1);
      if (!last) throw new Error(`the ${kind} message was never rendered`);
      return last;
    },
  };
}

/** Attachment bytes of the multipart message (binary: they travel base64). */
const ATTACHMENT = randomBytes(48 * 1024);
let twentyMegabytes: Buffer | undefined;

/**
 * The four messages every mode sends: plain ASCII (with a line starting with a dot, which DATA
 * must stuff and BDAT must not), an 8-bit UTF-8 body (Content-Transfer-Encoding: 8bit), an SMTPUTF8
 * message (UTF-8 local part; `用户.tag@例子.广告` unless another is given) and a multipart message
 * (text, an HTML alternative and a binary attachment).
 */
function standardBatch(tag: string, utf8Recipient = `用户.${tag}@例子.广告`): Sent[] {
  const multipart = new EmailMultiAlternatives(`multipart ${tag}`, 'See the attached report.\n', SENDER, [
    `${tag}-multipart@example.com`,
  ]);
  multipart.attachAlternative('<p>See the <b>attached</b> report.</p>', 'text/html');
  multipart.attach('report.bin', ATTACHMENT, 'application/octet-stream');
  return [
    track(
      'ascii',
      new EmailMessage(`ascii ${tag}`, 'Hello,\n.a line that starts with a dot\n..and two\nBye.\n', SENDER, [
        `${tag}-ascii@example.com`,
      ]),
    ),
    track(
      '8bit',
      new EmailMessage(`8bit ${tag}`, 'Grüße aus Köln — 你好, ça va ?\n.Ünïcödé after a dot\n', SENDER, [
        `${tag}-8bit@example.com`,
      ]),
    ),
    track('smtputf8', new EmailMessage(`smtputf8 ${tag}`, 'Für dich.\n', SENDER, [utf8Recipient])),
    track('multipart', multipart),
  ];
}

/** A message with a 20 MB binary attachment (about 27 MB once base64 encoded). */
function twentyMegabyteMessage(tag: string): Sent {
  twentyMegabytes ??= randomBytes(20_000_000);
  const message = new EmailMessage(`20 MB ${tag}`, 'The archive is attached.\n', SENDER, [
    `${tag}-big@example.com`,
  ]);
  message.attach('archive.bin', twentyMegabytes, 'application/octet-stream');
  return track('20mb', message);
}

/** An SmtpBackend for `target`, failing silently with a window of 8 unless told otherwise. */
function backendFor(target: { host: string; port: number }, options: SmtpBackendOptions = {}): SmtpBackend {
  return new SmtpBackend({
    host: target.host,
    port: target.port,
    failSilently: true,
    pipelineWindow: 8,
    timeout: 30,
    ...options,
  });
}

/** Sends with deliverStream() over a connection of its own; resolves with each message's outcome. */
async function deliverStream(
  backend: SmtpBackend,
  batch: readonly Sent[],
): Promise<Map<Sent, DeliveryOutcome>> {
  const outcomes = new Map<Sent, DeliveryOutcome>();
  let next = 0;
  try {
    const result = await backend.deliverStream(
      () => {
        const sent = batch[next++];
        return sent ? { message: sent.message, sent } : undefined;
      },
      (item, outcome) => {
        outcomes.set(item.sent, outcome);
      },
      { window: 8 },
    );
    expect(result).toEqual({ error: undefined, unsent: [] });
  } finally {
    await backend.close();
  }
  return outcomes;
}

// ---- Byte checks --------------------------------------------------------------------------------

/** Where two buffers first differ, with some context, or undefined when they are equal. */
function firstDifference(actual: Buffer, expected: Buffer): string | undefined {
  if (actual.equals(expected)) return undefined;
  let index = 0;
  while (index < actual.length && index < expected.length && actual[index] === expected[index]) index++;
  const around = (bytes: Buffer) =>
    JSON.stringify(bytes.subarray(Math.max(0, index - 40), index + 40).toString('latin1'));
  return `lengths ${actual.length} and ${expected.length}, first difference at byte ${index}: ${around(actual)} vs ${around(expected)}`;
}

/** One trace header field (RFC 5321 §4.4: Received, Return-Path), folded lines included. */
const TRACE_HEADER = /^(Received|Return-Path): [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*/;

/**
 * The bytes that arrived are the rendered message, preceded by exactly `traceHeaders` trace header
 * fields the servers added (Postfix: one Received:), and by nothing else.
 */
function expectIntact(raw: Buffer, sent: Sent, traceHeaders: number): void {
  const rendered = sent.rendered();
  const offset = raw.length - rendered.length;
  expect(offset, `${sent.kind}: fewer bytes arrived than were rendered`).toBeGreaterThanOrEqual(0);
  let prefix = raw.subarray(0, offset).toString('latin1');
  for (let index = 0; index < traceHeaders; index++) {
    const match = TRACE_HEADER.exec(prefix);
    expect(
      match,
      `${sent.kind}: trace header ${index + 1} in ${JSON.stringify(prefix.slice(0, 200))}`,
    ).not.toBeNull();
    prefix = prefix.slice(match![0].length);
  }
  expect(prefix, `${sent.kind}: bytes added before the message`).toBe('');
  expect(firstDifference(raw.subarray(offset), rendered), `${sent.kind}: message bytes`).toBeUndefined();
}

/** The multipart message, parsed: the text, the HTML alternative and the attachment bytes are all there. */
async function expectMultipartParsed(raw: Buffer): Promise<void> {
  const parsed = await parse(raw);
  expect(parsed.text?.trim()).toBe('See the attached report.');
  expect(parsed.html).toContain('<b>attached</b>');
  expect(parsed.attachments).toHaveLength(1);
  expect(parsed.attachments[0]!.filename).toBe('report.bin');
  expect(firstDifference(parsed.attachments[0]!.content, ATTACHMENT)).toBeUndefined();
}

/** What a server recorded of one message, whichever server it was. */
interface Arrival {
  to: readonly string[];
  raw: Buffer;
  /** Whether MAIL FROM carried BODY=8BITMIME, where the server tells. */
  eightBitMime?: boolean;
  /** Whether MAIL FROM carried SMTPUTF8, where the server tells. */
  smtpUtf8?: boolean;
}

/** An address with its domain in ASCII (smtp-server reports IDN domains decoded, `例子.广告`). */
function asciiDomain(address: string): string {
  const at = address.lastIndexOf('@');
  return at === -1 ? address : `${address.slice(0, at)}@${domainToASCII(address.slice(at + 1))}`;
}

function fromSmtpServer(message: ReceivedMessage): Arrival {
  return {
    to: message.to.map(asciiDomain),
    raw: message.raw,
    eightBitMime: message.bodyType === '8bitmime',
    smtpUtf8: message.smtpUtf8,
  };
}

function fromAiosmtpd(message: AiosmtpdMessage): Arrival {
  return {
    to: message.to,
    raw: message.raw,
    eightBitMime: message.mailOptions.includes('BODY=8BITMIME'),
    smtpUtf8: message.mailOptions.includes('SMTPUTF8'),
  };
}

/**
 * Every message of `batch` arrived once, to its recipient, byte for byte (after `traceHeaders`
 * added trace headers); BODY=8BITMIME came with exactly the messages that have 8-bit bytes and
 * SMTPUTF8 with exactly the ones that need it, where the server records them.
 */
async function expectDelivered(
  arrivals: readonly Arrival[],
  batch: readonly Sent[],
  traceHeaders = 0,
): Promise<void> {
  for (const sent of batch) {
    const matching = arrivals.filter((arrival) => arrival.to.includes(sent.recipient));
    expect(matching, `${sent.kind} message to ${sent.recipient}`).toHaveLength(1);
    const arrival = matching[0]!;
    expect(arrival.to).toEqual([sent.recipient]);
    expectIntact(arrival.raw, sent, traceHeaders);
    if (arrival.eightBitMime !== undefined) {
      expect(arrival.eightBitMime, `${sent.kind}: BODY=8BITMIME`).toBe(!isAscii(sent.rendered()));
    }
    if (arrival.smtpUtf8 !== undefined)
      expect(arrival.smtpUtf8, `${sent.kind}: SMTPUTF8`).toBe(sent.smtpUtf8);
    if (sent.kind === 'multipart') await expectMultipartParsed(arrival.raw);
  }
}

// ---- A recording TCP proxy ----------------------------------------------------------------------

/** A plain TCP relay in front of a server, keeping what each client wrote, chunk by chunk as read. */
interface RecordingProxy {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** One entry per connection: the client's bytes in the chunks they arrived in. */
  readonly connections: Buffer[][];
  /** The MAIL FROM transactions clients began: parameters and recipients, in order. */
  transactions(): { from: string; parameters: string[]; recipients: string[] }[];
  /** Whether a client ever wrote a command in the same read as an earlier command (pipelining). */
  sawPipelining(): boolean;
  /** Whether a client ever wrote a message's commands in the same read as another message's. */
  sawMessagesBackToBack(): boolean;
  clear(): void;
  close(): Promise<void>;
}

const COMMAND_LINE = /^(MAIL FROM:<([^>]*)>([^\r\n]*)|RCPT TO:<([^>]*)>[^\r\n]*)\r\n/gm;

/**
 * Starts a relay on 127.0.0.1 at a free port that forwards every connection to `target`. A command
 * that shares a read with the one before it was written without waiting for its reply: lock-step
 * clients can never produce that, pipelining ones do.
 */
async function startRecordingProxy(target: { host: string; port: number }): Promise<RecordingProxy> {
  const connections: Buffer[][] = [];
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const chunks: Buffer[] = [];
    connections.push(chunks);
    const upstream = connect(target.port, target.host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.setNoDelay(true);
      socket.once('close', () => sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => chunks.push(chunk));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('the proxy did not bind a TCP port');
  return {
    host: '127.0.0.1',
    port: address.port,
    connections,
    transactions() {
      const found: { from: string; parameters: string[]; recipients: string[] }[] = [];
      for (const chunks of connections) {
        for (const match of Buffer.concat(chunks).toString('utf8').matchAll(COMMAND_LINE)) {
          if (match[2] !== undefined) {
            found.push({ from: match[2], parameters: match[3]!.trim().split(/\s+/), recipients: [] });
          } else found.at(-1)?.recipients.push(match[4]!);
        }
      }
      return found;
    },
    sawPipelining() {
      return connections.some((chunks) =>
        chunks.some((chunk) =>
          /^(MAIL FROM|RCPT TO):[^\r\n]*\r\n(RCPT TO|DATA|BDAT)/m.test(chunk.toString('latin1')),
        ),
      );
    },
    sawMessagesBackToBack() {
      return connections.some((chunks) =>
        chunks.some((chunk) => {
          const text = chunk.toString('latin1');
          // BDAT: two transactions in one write; DATA: a body's end and the next MAIL FROM together.
          return (text.match(/^MAIL FROM:/gm)?.length ?? 0) >= 2 || text.includes('\r\n.\r\nMAIL FROM:');
        }),
      );
    },
    clear() {
      connections.length = 0;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/** The proxy saw exactly `batch` begin, each with BODY=8BITMIME and SMTPUTF8 exactly where due. */
function expectMailParameters(proxy: RecordingProxy, batch: readonly Sent[]): void {
  const transactions = proxy.transactions();
  expect(transactions).toHaveLength(batch.length);
  for (const sent of batch) {
    const transaction = transactions.find((candidate) => candidate.recipients.includes(sent.recipient));
    expect(transaction, `MAIL FROM of the ${sent.kind} message`).toBeDefined();
    expect(transaction!.from).toBe(SENDER);
    const { parameters } = transaction!;
    expect(parameters.includes('BODY=8BITMIME'), `${sent.kind}: BODY=8BITMIME`).toBe(
      !isAscii(sent.rendered()),
    );
    expect(parameters.includes('SMTPUTF8'), `${sent.kind}: SMTPUTF8`).toBe(sent.smtpUtf8);
  }
}

// ---- smtp-server --------------------------------------------------------------------------------

const USER = 'mailroom';
const PASSWORD = 's3cret-Pässword';

describe('smtp-server (PIPELINING, 8BITMIME, SMTPUTF8; no CHUNKING)', () => {
  let plain: SmtpTestServer;
  let starttls: SmtpTestServer;
  let implicit: SmtpTestServer;
  let withoutSmtpUtf8: SmtpTestServer;
  let proxy: RecordingProxy;

  beforeAll(async () => {
    const credentials = { username: USER, password: PASSWORD };
    [plain, starttls, implicit, withoutSmtpUtf8] = await Promise.all([
      startSmtpServer({ auth: credentials }),
      startSmtpServer({ tls: 'starttls', auth: credentials }),
      startSmtpServer({ tls: 'implicit' }),
      startSmtpServer({ smtpUtf8: false }),
    ]);
    proxy = await startRecordingProxy(plain);
  });
  afterAll(async () => {
    await proxy?.close();
    await Promise.all([plain, starttls, implicit, withoutSmtpUtf8].map((server) => server?.close()));
  });
  beforeEach(() => {
    for (const server of [plain, starttls, implicit, withoutSmtpUtf8]) server.clear();
    proxy.clear();
  });

  it('delivers ASCII, 8-bit, SMTPUTF8 and multipart messages intact, pipelined over one connection', async () => {
    const batch = standardBatch(uniqueTag('ss'));
    const backend = backendFor(proxy);
    expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(4);
    await expectDelivered(plain.messages.map(fromSmtpServer), batch);
    expect(plain.connectionCount).toBe(1);
    expect(new Set(plain.messages.map((message) => message.connectionId)).size).toBe(1);
    expect(proxy.sawPipelining()).toBe(true);
    expect(proxy.sawMessagesBackToBack()).toBe(true);
    expectMailParameters(proxy, batch);
    // smtp-server has no CHUNKING: every message went with DATA.
    expect(plain.commandCount('DATA')).toBe(4);
    expect(plain.commandCount('BDAT')).toBe(0);
  });

  it('sends in lock-step, still over one connection, when told pipelining: false', async () => {
    const batch = standardBatch(uniqueTag('ssnopipe'));
    const backend = backendFor(proxy, { pipelining: false });
    expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(4);
    await expectDelivered(plain.messages.map(fromSmtpServer), batch);
    expect(plain.connectionCount).toBe(1);
    expect(proxy.connections).toHaveLength(1);
    expect(proxy.sawPipelining()).toBe(false);
    expect(proxy.sawMessagesBackToBack()).toBe(false);
    expectMailParameters(proxy, batch);
  });

  it('reports a 250 outcome per message through deliverStream', async () => {
    const batch = standardBatch(uniqueTag('ssstream'));
    const outcomes = await deliverStream(backendFor(plain), batch);
    for (const sent of batch) {
      expect(outcomes.get(sent), sent.kind).toMatchObject({
        delivered: true,
        accepted: [sent.recipient],
        refused: [],
        response: expect.stringMatching(/^250 /),
      });
    }
    await expectDelivered(plain.messages.map(fromSmtpServer), batch);
    expect(plain.connectionCount).toBe(1);
  });

  it('delivers a 20 MB attachment intact, and the message behind it on the same connection', async () => {
    const tag = uniqueTag('ssbig');
    const batch = [twentyMegabyteMessage(tag), standardBatch(tag)[0]!];
    const backend = backendFor(plain);
    expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(2);
    expect(batch[0]!.rendered().length).toBeGreaterThan(26_000_000);
    await expectDelivered(plain.messages.map(fromSmtpServer), batch);
    expect(plain.connectionCount).toBe(1);
  });

  it('upgrades with STARTTLS, verifying the certificate against the test CA', async () => {
    const batch = standardBatch(uniqueTag('sstls'));
    // Only the CA: the name checked is the host, 127.0.0.1 (the certificate's IP subjectAltName).
    const backend = backendFor(starttls, { useTls: true, tlsOptions: { ca: starttls.certificate! } });
    expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(4);
    await expectDelivered(starttls.messages.map(fromSmtpServer), batch);
    expect(starttls.messages.every((message) => message.secure)).toBe(true);
    expect(starttls.connectionCount).toBe(1);
    expect(starttls.commandCount('STARTTLS')).toBe(1);
    expect(starttls.commandCount('EHLO')).toBe(2);
  });

  it('refuses a certificate it cannot verify (STARTTLS), by default, before any MAIL FROM', async () => {
    const batch = standardBatch(uniqueTag('ssuntrusted'));
    const backend = backendFor(starttls, { useTls: true, failSilently: false });
    await expect(backend.sendMessages(batch.map((sent) => sent.message))).rejects.toMatchObject({
      code: 'ETLS',
      message: expect.stringMatching(/self[- ]signed certificate/i),
    });
    expect(starttls.commandCount('STARTTLS')).toBe(1);
    expect(starttls.commandCount('MAIL')).toBe(0);
    expect(starttls.messages).toHaveLength(0);
  });

  it('refuses a certificate it cannot verify (implicit TLS), by default', async () => {
    const backend = backendFor(implicit, { useSsl: true, failSilently: false });
    await expect(
      backend.sendMessages(standardBatch(uniqueTag('ssbadssl')).map((sent) => sent.message)),
    ).rejects.toMatchObject({
      code: 'ETLS',
    });
    expect(implicit.commandCount('EHLO')).toBe(0);
    expect(implicit.messages).toHaveLength(0);
  });

  it('delivers over implicit TLS with the certificate verified', async () => {
    const batch = standardBatch(uniqueTag('ssssl'));
    const backend = backendFor(implicit, { useSsl: true, tlsOptions: { ca: implicit.certificate! } });
    expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(4);
    await expectDelivered(implicit.messages.map(fromSmtpServer), batch);
    expect(implicit.messages.every((message) => message.secure)).toBe(true);
    expect(implicit.connectionCount).toBe(1);
    expect(implicit.commandCount('STARTTLS')).toBe(0);
  });

  for (const method of ['PLAIN', 'LOGIN'] as const) {
    it(`authenticates with AUTH ${method} after STARTTLS and sends as that user`, async () => {
      const batch = standardBatch(uniqueTag(`ssauth${method}`));
      const backend = backendFor(starttls, {
        useTls: true,
        tlsOptions: { ca: starttls.certificate! },
        username: USER,
        password: PASSWORD,
        authMethod: method,
      });
      expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(4);
      expect(starttls.authentications).toEqual([
        { connectionId: starttls.connectionIds[0], method, username: USER, success: true },
      ]);
      await expectDelivered(starttls.messages.map(fromSmtpServer), batch);
      expect(starttls.messages.map((message) => message.user)).toEqual([USER, USER, USER, USER]);
      expect(starttls.connectionCount).toBe(1);
    });
  }

  it('refuses a wrong password with EAUTH and sends nothing', async () => {
    const batch = standardBatch(uniqueTag('sswrong'));
    const loud = backendFor(plain, { username: USER, password: 'wrong', failSilently: false });
    await expect(loud.sendMessages(batch.map((sent) => sent.message))).rejects.toMatchObject({
      code: 'EAUTH',
      responseCode: 535,
    });
    const silent = backendFor(plain, { username: USER, password: 'wrong' });
    expect(await silent.sendMessages(batch.map((sent) => sent.message))).toBe(0);
    expect(plain.authentications.map((attempt) => attempt.success)).toEqual([false, false]);
    expect(plain.commandCount('MAIL')).toBe(0);
    expect(plain.messages).toHaveLength(0);
  });

  it('fails only the SMTPUTF8 message, permanently, where SMTPUTF8 is not offered (sendMessages)', async () => {
    const [ascii, eightBit, utf8, multipart] = standardBatch(uniqueTag('ssnoutf8'));
    const batch = [ascii!, utf8!, eightBit!, multipart!];
    const backend = backendFor(withoutSmtpUtf8);
    // BackendOptions.failSilently: a message the server cannot take is swallowed (only validation
    // errors throw), not counted, and the rest go on.
    expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(3);
    await expectDelivered(withoutSmtpUtf8.messages.map(fromSmtpServer), [ascii!, eightBit!, multipart!]);
    expect(withoutSmtpUtf8.messages).toHaveLength(3);
    expect(withoutSmtpUtf8.connectionCount).toBe(1);
  });

  it('fails only the SMTPUTF8 message, permanently, where SMTPUTF8 is not offered (deliverStream)', async () => {
    const [ascii, eightBit, utf8, multipart] = standardBatch(uniqueTag('ssnoutf8stream'));
    const batch = [ascii!, utf8!, eightBit!, multipart!];
    const outcomes = await deliverStream(backendFor(withoutSmtpUtf8), batch);
    expect(outcomes.get(utf8!)).toMatchObject({
      delivered: false,
      error: { code: 'EENVELOPE', message: expect.stringContaining('SMTPUTF8') },
      classification: { transient: false },
    });
    for (const sent of [ascii!, eightBit!, multipart!])
      expect(outcomes.get(sent)?.delivered, sent.kind).toBe(true);
    await expectDelivered(withoutSmtpUtf8.messages.map(fromSmtpServer), [ascii!, eightBit!, multipart!]);
    expect(withoutSmtpUtf8.messages).toHaveLength(3);
    expect(withoutSmtpUtf8.commandCount('MAIL')).toBe(3);
  });
});

// ---- smtp-server with XOAUTH2 -------------------------------------------------------------------

/** An smtp-server offering only AUTH XOAUTH2 (required), which accepts one user with one bearer token. */
async function startXoauth2Server(user: string, token: string) {
  const attempts: { user: string | undefined; token: string | undefined }[] = [];
  const messages: ReceivedMessage[] = [];
  let connections = 0;
  const server = new SMTPServer({
    earlyTalkerDelay: 0, // our patch of smtp-server; see support/smtp-server.ts
    logger: false,
    disableReverseLookup: true,
    disabledCommands: ['STARTTLS'],
    authMethods: ['XOAUTH2'],
    allowInsecureAuth: true,
    authOptional: false,
    onConnect(_session, callback) {
      connections++;
      callback();
    },
    onAuth(auth, _session, callback) {
      attempts.push({ user: auth.username, token: auth.accessToken });
      if (auth.method === 'XOAUTH2' && auth.username === user && auth.accessToken === token) {
        return callback(null, { user });
      }
      // smtp-server answers 334 with this JSON challenge, then 535 to the client's empty line.
      return callback(null, { data: { status: '401', schemes: 'bearer', scope: 'https://mail.example/' } });
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks);
        messages.push({
          connectionId: session.id,
          transaction: session.transaction,
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((recipient) => recipient.address),
          raw,
          size: raw.length,
          secure: session.secure,
          user: typeof session.user === 'string' ? session.user : undefined,
          bodyType: session.envelope.bodyType ?? '7bit',
          smtpUtf8: session.envelope.smtpUtf8 ?? false,
          clientCertificate: undefined,
        });
        callback();
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.server.address();
  if (!address || typeof address === 'string') throw new Error('smtp-server did not bind a TCP port');
  return {
    host: '127.0.0.1',
    port: address.port,
    attempts,
    messages,
    get connections() {
      return connections;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('smtp-server with AUTH XOAUTH2', () => {
  const token = 'ya29.a0-test-bearer-token';
  let server: Awaited<ReturnType<typeof startXoauth2Server>>;

  beforeAll(async () => {
    server = await startXoauth2Server(USER, token);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('authenticates with a bearer token asked for once per connection, and delivers', async () => {
    const batch = standardBatch(uniqueTag('xoauth'));
    let asked = 0;
    const backend = backendFor(server, {
      username: USER,
      accessToken: () => {
        asked++;
        return token;
      },
    });
    expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(4);
    expect(asked).toBe(1);
    expect(server.attempts).toEqual([{ user: USER, token }]);
    await expectDelivered(server.messages.map(fromSmtpServer), batch);
    expect(server.messages.every((message) => message.user === USER)).toBe(true);
    expect(server.connections).toBe(1);
  });

  it('refuses a wrong token with EAUTH (after the 334 challenge) and sends nothing', async () => {
    const before = server.messages.length;
    const backend = backendFor(server, { username: USER, accessToken: 'expired', failSilently: false });
    await expect(
      backend.sendMessages(standardBatch(uniqueTag('xoauthbad')).map((sent) => sent.message)),
    ).rejects.toMatchObject({ code: 'EAUTH', responseCode: 535 });
    expect(server.attempts.at(-1)).toEqual({ user: USER, token: 'expired' });
    expect(server.messages).toHaveLength(before);
  });
});

// ---- Postfix --------------------------------------------------------------------------------------

/** The `key=value` counters of an smtpd "disconnect from" log line: `mail=4`, `bdat=4`, `rcpt=0/1`. */
type PostfixSession = Record<string, string>;

/**
 * The smtpd sessions of Postfix's log, once every session that began has ended there (postlogd
 * writes a moment after the fact, and a refused TLS handshake ends a session late).
 */
async function settledSessions(postfix: PostfixPeer): Promise<PostfixSession[]> {
  let sessions: PostfixSession[] = [];
  await waitUntil(
    async () => {
      const log = await postfix.log();
      const begun = log.match(/postfix\/smtpd\[\d+\]: connect from /g)?.length ?? 0;
      sessions = [...log.matchAll(/postfix\/smtpd\[\d+\]: disconnect from \S+ ([^\n]*)/g)].map((match) =>
        Object.fromEntries(match[1]!.split(' ').map((pair) => pair.split('=') as [string, string])),
      );
      return sessions.length === begun;
    },
    'Postfix to log the end of every session',
    10_000,
  );
  return sessions;
}

/** Runs `action` and resolves with the smtpd sessions Postfix logged for it (at least one). */
async function sessionsDuring(postfix: PostfixPeer, action: () => Promise<void>): Promise<PostfixSession[]> {
  const before = (await settledSessions(postfix)).length;
  await action();
  let sessions: PostfixSession[] = [];
  await waitUntil(
    async () => {
      sessions = (await settledSessions(postfix)).slice(before);
      return sessions.length > 0;
    },
    'Postfix to log the session',
    10_000,
  );
  return sessions;
}

/**
 * Postfix (PIPELINING, CHUNKING, 8BITMIME, SMTPUTF8, STARTTLS) relaying every message to an
 * smtp-server sink, so that the bytes it passed on can be compared with what was rendered: Postfix
 * adds exactly one Received: header on top. AUTH is not tested against Postfix: its smtpd delegates
 * SASL to a Cyrus or Dovecot daemon, which this private instance does not run (smtp-server and
 * aiosmtpd cover AUTH).
 */
describe('Postfix (relaying to an smtp-server sink)', () => {
  let sink: SmtpTestServer;
  let full: PostfixPeer;
  let withoutChunking: PostfixPeer;
  let lockStep: PostfixPeer;
  const proxies = new Map<PostfixPeer, RecordingProxy>();

  beforeAll(async () => {
    sink = await startSmtpServer({ recordCommands: false });
    const deliverTo = { host: sink.host, port: sink.port };
    [full, withoutChunking, lockStep] = await Promise.all([
      startPostfix({ deliverTo, starttls: true }),
      startPostfix({ deliverTo, chunking: false }),
      startPostfix({ deliverTo, pipelining: false, chunking: false }),
    ]);
    for (const postfix of [full, withoutChunking, lockStep]) {
      proxies.set(postfix, await startRecordingProxy(postfix));
      // startPostfix's own probe (greeting, QUIT) is a session too: let it reach the log first.
      await waitUntil(
        async () => (await settledSessions(postfix)).length >= 1,
        'the startup probe in the log',
      );
    }
  });
  afterAll(async () => {
    for (const proxy of proxies.values()) await proxy.close();
    await Promise.all([full, withoutChunking, lockStep].map((postfix) => postfix?.stop()));
    await sink?.close();
  });

  /** Waits until the sink received every message of `batch` from Postfix. */
  async function relayed(batch: readonly Sent[], timeoutMs = 20_000): Promise<Arrival[]> {
    const mine = () =>
      sink.messages
        .map(fromSmtpServer)
        .filter((arrival) => batch.some((sent) => arrival.to.includes(sent.recipient)));
    await waitUntil(
      () => mine().length >= batch.length,
      `Postfix to relay ${batch.length} messages`,
      timeoutMs,
    );
    // The sink's MAIL FROM parameters are Postfix's, not ours: MAIL FROM is checked at the proxy.
    return mine().map(({ to, raw }) => ({ to, raw }));
  }

  /** Sends `batch` with sendMessages through `postfix`'s proxy; resolves with the new smtpd session's counters. */
  async function sendThroughProxy(
    postfix: PostfixPeer,
    batch: readonly Sent[],
    options: SmtpBackendOptions = {},
  ) {
    const proxy = proxies.get(postfix)!;
    proxy.clear();
    const backend = backendFor(proxy, options);
    const sessions = await sessionsDuring(postfix, async () => {
      expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(batch.length);
    });
    expect(backend.connectionsOpened).toBe(1);
    expect(proxy.connections).toHaveLength(1);
    expect(sessions).toHaveLength(1);
    return { proxy, session: sessions[0]! };
  }

  it('takes pipelined MAIL/RCPT/BDAT n LAST (PIPELINING + CHUNKING) and relays the bytes unchanged', async () => {
    const batch = standardBatch(uniqueTag('pf'));
    const { proxy, session } = await sendThroughProxy(full, batch);
    expect(session).toMatchObject({ ehlo: '1', mail: '4', rcpt: '4', bdat: '4', quit: '1' });
    expect(session.data).toBeUndefined();
    expect(proxy.sawPipelining()).toBe(true);
    expect(proxy.sawMessagesBackToBack()).toBe(true);
    expectMailParameters(proxy, batch);
    await expectDelivered(await relayed(batch), batch, 1);
    expect(await full.log()).not.toMatch(/improper command pipelining/);
  });

  it('uses DATA, still pipelined, where CHUNKING is not offered', async () => {
    const batch = standardBatch(uniqueTag('pfdata'));
    const { proxy, session } = await sendThroughProxy(withoutChunking, batch);
    expect(session).toMatchObject({ mail: '4', rcpt: '4', data: '4' });
    expect(session.bdat).toBeUndefined();
    expect(proxy.sawPipelining()).toBe(true);
    expect(proxy.sawMessagesBackToBack()).toBe(true);
    expectMailParameters(proxy, batch);
    await expectDelivered(await relayed(batch), batch, 1);
    expect(await withoutChunking.log()).not.toMatch(/improper command pipelining/);
  });

  it('sends in lock-step where PIPELINING is not offered (Postfix sees no improper pipelining)', async () => {
    const batch = standardBatch(uniqueTag('pflock'));
    const { proxy, session } = await sendThroughProxy(lockStep, batch);
    expect(session).toMatchObject({ mail: '4', rcpt: '4', data: '4' });
    expect(proxy.sawPipelining()).toBe(false);
    expect(proxy.sawMessagesBackToBack()).toBe(false);
    expectMailParameters(proxy, batch);
    await expectDelivered(await relayed(batch), batch, 1);
    expect(await lockStep.log()).not.toMatch(/improper command pipelining/);
  });

  it('uses DATA when told chunking: false, and reports each outcome through deliverStream', async () => {
    const batch = standardBatch(uniqueTag('pfstream'));
    let outcomes = new Map<Sent, DeliveryOutcome>();
    const sessions = await sessionsDuring(full, async () => {
      outcomes = await deliverStream(backendFor(full, { chunking: false }), batch);
    });
    expect(sessions).toEqual([expect.objectContaining({ mail: '4', rcpt: '4', data: '4' })]);
    for (const sent of batch) {
      expect(outcomes.get(sent), sent.kind).toMatchObject({
        delivered: true,
        accepted: [sent.recipient],
        response: expect.stringMatching(/^250 2\.0\.0 Ok: queued as \w+/),
      });
    }
    await expectDelivered(await relayed(batch), batch, 1);
  });

  it('upgrades with STARTTLS verified against the test CA, and keeps SMTPUTF8 on the way through', async () => {
    const batch = standardBatch(uniqueTag('pftls'));
    const backend = backendFor(full, { useTls: true, tlsOptions: { ca: full.ca! } });
    const sessions = await sessionsDuring(full, async () => {
      expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(4);
    });
    expect(sessions).toEqual([
      expect.objectContaining({ ehlo: '2', starttls: '1', mail: '4', rcpt: '4', bdat: '4' }),
    ]);
    await expectDelivered(await relayed(batch), batch, 1);
    expect(await full.log()).toMatch(/TLS connection established from/);
    // Postfix passes SMTPUTF8 on only when our MAIL FROM asked for it (the proxy cannot read TLS).
    const utf8 = sink.messages
      .map(fromSmtpServer)
      .find((arrival) => arrival.to.includes(batch[2]!.recipient));
    expect(utf8?.smtpUtf8).toBe(true);
  });

  it('refuses the Postfix certificate without the test CA', async () => {
    const backend = backendFor(full, { useTls: true, failSilently: false });
    const sessions = await sessionsDuring(full, async () => {
      await expect(
        backend.sendMessages(standardBatch(uniqueTag('pfuntrusted')).map((sent) => sent.message)),
      ).rejects.toMatchObject({ code: 'ETLS' });
    });
    // The handshake failed right after STARTTLS (Postfix counts it as 0 of 1): no MAIL FROM followed.
    expect(sessions).toEqual([{ ehlo: '1', starttls: '0/1', commands: '1/2' }]);
  });

  it('takes a 20 MB attachment with BDAT and relays it intact, with the next message', async () => {
    const tag = uniqueTag('pfbig');
    const batch = [twentyMegabyteMessage(tag), standardBatch(tag)[1]!];
    const backend = backendFor(full);
    const sessions = await sessionsDuring(full, async () => {
      expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(2);
    });
    expect(sessions).toEqual([expect.objectContaining({ mail: '2', rcpt: '2', bdat: '2' })]);
    await expectDelivered(await relayed(batch, 40_000), batch, 1);
  });
});

// ---- aiosmtpd -------------------------------------------------------------------------------------

describe('aiosmtpd (no PIPELINING, no CHUNKING: lock-step)', () => {
  let peer: AiosmtpdPeer;
  let withoutSmtpUtf8: AiosmtpdPeer;
  let proxy: RecordingProxy;

  beforeAll(async () => {
    [peer, withoutSmtpUtf8] = await Promise.all([
      startAiosmtpd({ auth: { username: USER, password: PASSWORD }, starttls: true }),
      startAiosmtpd({ smtputf8: false }),
    ]);
    proxy = await startRecordingProxy(peer);
  });
  afterAll(async () => {
    await proxy?.close();
    await Promise.all([peer?.stop(), withoutSmtpUtf8?.stop()]);
  });
  beforeEach(() => proxy.clear());

  /** The messages `peer` accepted for the recipients of `batch`. */
  async function arrived(server: AiosmtpdPeer, batch: readonly Sent[]): Promise<Arrival[]> {
    const mine = () =>
      server.messages.filter((message) => batch.some((sent) => message.to.includes(sent.recipient)));
    await waitUntil(
      () => mine().length >= batch.length,
      `aiosmtpd to report ${batch.length} messages`,
      10_000,
    );
    return mine().map(fromAiosmtpd);
  }

  it('delivers ASCII, 8-bit, SMTPUTF8 and multipart messages intact in lock-step over one connection', async () => {
    const tag = uniqueTag('aio');
    const batch = standardBatch(tag, `jöran.${tag}@example.com`);
    expect(await backendFor(proxy).sendMessages(batch.map((sent) => sent.message))).toBe(4);
    await expectDelivered(await arrived(peer, batch), batch);
    expect(proxy.connections).toHaveLength(1);
    expect(proxy.sawPipelining()).toBe(false);
    expect(proxy.sawMessagesBackToBack()).toBe(false);
    expectMailParameters(proxy, batch);
  });

  it('reports a 250 outcome per message through deliverStream, one message at a time', async () => {
    const batch = standardBatch(uniqueTag('aiostream'));
    const outcomes = await deliverStream(backendFor(proxy), batch);
    for (const sent of batch) {
      expect(outcomes.get(sent), sent.kind).toMatchObject({ delivered: true, response: '250 OK' });
    }
    await expectDelivered(await arrived(peer, batch), batch);
    expect(proxy.connections).toHaveLength(1);
    expect(proxy.sawPipelining()).toBe(false);
  });

  for (const method of ['PLAIN', 'LOGIN'] as const) {
    it(`upgrades with STARTTLS (test CA) and authenticates with AUTH ${method}`, async () => {
      const batch = standardBatch(uniqueTag(`aioauth${method}`));
      const backend = backendFor(proxy, {
        useTls: true,
        tlsOptions: { ca: peer.ca! },
        username: USER,
        password: PASSWORD,
        authMethod: method,
      });
      expect(await backend.sendMessages(batch.map((sent) => sent.message))).toBe(4);
      await expectDelivered(await arrived(peer, batch), batch);
      const received = peer.messages.filter((message) =>
        batch.some((sent) => message.to.includes(sent.recipient)),
      );
      expect(received.map((message) => [message.secure, message.user])).toEqual(
        batch.map(() => [true, USER]),
      );
      expect(proxy.connections).toHaveLength(1);
      // Everything after the STARTTLS line was encrypted: no MAIL FROM in clear.
      const clear = Buffer.concat(proxy.connections[0]!).toString('latin1');
      expect(clear).toContain('STARTTLS\r\n');
      expect(clear).not.toContain('MAIL FROM');
    });
  }

  it('refuses a wrong password with EAUTH and sends nothing', async () => {
    const before = peer.messages.length;
    const backend = backendFor(peer, { username: USER, password: 'wrong', failSilently: false });
    await expect(
      backend.sendMessages(standardBatch(uniqueTag('aiowrong')).map((sent) => sent.message)),
    ).rejects.toMatchObject({ code: 'EAUTH', responseCode: 535 });
    expect(peer.messages).toHaveLength(before);
  });

  it('fails only the SMTPUTF8 message, permanently, where SMTPUTF8 is not offered', async () => {
    const tag = uniqueTag('aionoutf8');
    const [ascii, eightBit, utf8, multipart] = standardBatch(tag, `jöran.${tag}@example.com`);
    const others = [ascii!, eightBit!, multipart!];
    const outcomes = await deliverStream(backendFor(withoutSmtpUtf8), [ascii!, utf8!, eightBit!, multipart!]);
    expect(outcomes.get(utf8!)).toMatchObject({
      delivered: false,
      error: { code: 'EENVELOPE' },
      classification: { transient: false },
    });
    for (const sent of others) expect(outcomes.get(sent)?.delivered, sent.kind).toBe(true);
    await expectDelivered(await arrived(withoutSmtpUtf8, others), others);
    expect(withoutSmtpUtf8.messages.some((message) => message.to.includes(utf8!.recipient))).toBe(false);
  });
});
