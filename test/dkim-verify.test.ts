/**
 * DKIM signatures of the SMTP backend checked by an independent verifier: dkimpy (Debian's
 * python3-dkim, test/support/dkim-verify.py) verifies each message exactly as smtp-server received
 * it, with the test key published through a stub DNS lookup. Plain, 8-bit, multipart, attachment,
 * List-Unsubscribe and long non-ASCII Subject messages, over the worker's pipelined path
 * (deliverStream), sendMessages() and deliver(); a tampered message must fail, and a backend without
 * DKIM must sign nothing.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  configure,
  DKIM_SIGNED_HEADERS,
  type DkimOptions,
  EmailMessage,
  EmailMultiAlternatives,
  resetSettings,
  SmtpBackend,
  type SmtpBackendOptions,
} from '@mailroom/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type ReceivedMessage, type SmtpTestServer, startSmtpServer } from './support/smtp-server.js';

/** Debian's python3, which sees python3-dkim (a python3 first on PATH may not). */
const PYTHON = '/usr/bin/python3';
const VERIFY = fileURLToPath(new URL('./support/dkim-verify.py', import.meta.url));
const DOMAIN = 'mail.example.com';
const SELECTOR = 'mailroom2024';
const SENDER = 'news@mail.example.com';

/** What dkim-verify.py prints. */
interface Verdict {
  verified: boolean;
  /** The names the stub DNS was asked for. */
  queries: string[];
  signature: Record<string, string> | null;
  /** The h= field names, lower case. */
  headers: string[];
  log: string[];
}

interface TestKey {
  privateKey: string;
  /** base64 of the DER SubjectPublicKeyInfo: the p= of the DNS record. */
  publicKey: string;
}

function rsaKey(): TestKey {
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateKey: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKey: pair.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
  };
}

/** Verifies `raw` with dkimpy, the stub DNS publishing `key` at SELECTOR._domainkey.DOMAIN. */
function verifyWithDkimpy(raw: Buffer, key: TestKey): Promise<Verdict> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      PYTHON,
      [VERIFY, '--domain', DOMAIN, '--selector', SELECTOR, '--public-key', key.publicKey],
      { encoding: 'utf8', timeout: 20_000 },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`dkim-verify.py failed: ${stderr || error.message}`));
          return;
        }
        resolve(JSON.parse(stdout) as Verdict);
      },
    );
    child.stdin?.end(raw);
  });
}

/** A message about to be sent, with the bytes the backend rendered for it. */
interface Sent {
  kind: string;
  message: EmailMessage;
  /** The bytes message() returned when the backend rendered it. */
  rendered(): Buffer;
}

/** Records the renderings of `message` (Date, Message-ID and boundaries change at each one). */
function track(kind: string, message: EmailMessage): Sent {
  const renderings: Buffer[] = [];
  const render = message.message.bind(message);
  message.message = () => {
    const bytes = render();
    renderings.push(bytes);
    return bytes;
  };
  return {
    kind,
    message,
    rendered() {
      const last = renderings.at(-1);
      if (!last) throw new Error(`the ${kind} message was never rendered`);
      return last;
    },
  };
}

let sequence = 0;
function recipient(kind: string): string {
  sequence += 1;
  return `${kind}-${sequence}@example.net`;
}

const LONG_SUBJECT = 'Grüße aus Köln — 你好, ça va ? Ünïcödé in a subject long enough to be folded '.repeat(
  3,
);

/** One message of each kind the issue names. */
function batch(): Sent[] {
  const alternative = new EmailMultiAlternatives('Multipart', 'The text part.\n', SENDER, [
    recipient('multipart'),
  ]);
  alternative.attachAlternative('<p>The <b>HTML</b> part.</p>', 'text/html');
  const attachments = new EmailMultiAlternatives('Attachments', 'See the attachments.\n', SENDER, [
    recipient('attachments'),
  ]);
  attachments.attachAlternative('<p>See the attachments.</p>', 'text/html');
  attachments.attach('data.bin', randomBytes(24 * 1024), 'application/octet-stream');
  attachments.attach('notes.txt', 'Notes\n.with a line starting with a dot\n', 'text/plain');
  return [
    track(
      'plain',
      new EmailMessage('Plain ASCII', 'Hello,\n.a line that starts with a dot\n..and two\nBye.\n', SENDER, [
        recipient('plain'),
      ]),
    ),
    track(
      '8bit',
      new EmailMessage('8-bit body', 'Grüße aus Köln — 你好, ça va ?\n.Ünïcödé after a dot\n', SENDER, [
        recipient('8bit'),
      ]),
    ),
    track('multipart', alternative),
    track('attachments', attachments),
    track(
      'list-unsubscribe',
      new EmailMessage({
        subject: 'Newsletter',
        body: 'This month.\n',
        fromEmail: SENDER,
        to: [recipient('list')],
        cc: ['copy@example.net'],
        replyTo: ['help@mail.example.com'],
        headers: {
          'List-Unsubscribe':
            '<https://mail.example.com/u/42>, <mailto:unsubscribe@mail.example.com?subject=42>',
          'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
        },
      }),
    ),
    track(
      'long-subject',
      new EmailMessage(LONG_SUBJECT, 'A folded subject.\n', SENDER, [recipient('subject')]),
    ),
  ];
}

/** The header block of `bytes` (up to the empty line), as text. */
function headerBlock(bytes: Buffer): string {
  return bytes.subarray(0, bytes.indexOf('\r\n\r\n')).toString('latin1');
}

/** Names of the header fields of `bytes`, lower case. */
function fieldNames(bytes: Buffer): string[] {
  return headerBlock(bytes)
    .split('\r\n')
    .filter((line) => !/^[ \t]/.test(line))
    .map((line) => line.slice(0, line.indexOf(':')).toLowerCase());
}

/**
 * `raw` is the DKIM-Signature field followed by exactly the bytes core rendered: nothing was
 * re-encoded after signing and dot-stuffing was undone by the server.
 */
function expectSignedIntact(raw: Buffer, sent: Sent): void {
  const rendered = sent.rendered();
  expect(raw.length, `${sent.kind}: size`).toBeGreaterThan(rendered.length);
  expect(raw.subarray(raw.length - rendered.length).equals(rendered), `${sent.kind}: bytes intact`).toBe(
    true,
  );
  const prefix = raw.subarray(0, raw.length - rendered.length).toString('latin1');
  expect(prefix, `${sent.kind}: one DKIM-Signature field`).toMatch(
    /^DKIM-Signature: (?:[^\r\n]|\r\n[ \t])*\r\n$/,
  );
}

function byRecipient(server: SmtpTestServer, sent: Sent): ReceivedMessage {
  const [to] = sent.message.recipients();
  const received = server.messages.find((message) => message.to.includes(to as string));
  if (!received) throw new Error(`${sent.kind}: not received`);
  return received;
}

let server: SmtpTestServer;
let key: TestKey;
const backends: SmtpBackend[] = [];
let dir: string | undefined;

beforeAll(async () => {
  key = rsaKey();
  server = await startSmtpServer();
});

afterEach(async () => {
  for (const backend of backends.splice(0)) await backend.close();
  resetSettings();
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

afterAll(async () => {
  await server.close();
});

function dkimOptions(privateKey = key.privateKey): DkimOptions {
  return { domain: DOMAIN, selector: SELECTOR, privateKey };
}

function backend(options: SmtpBackendOptions = {}): SmtpBackend {
  const made = new SmtpBackend({ ...server.clientOptions, timeout: 10, ...options });
  backends.push(made);
  return made;
}

/** Sends `sent` over one connection the way the worker does: deliverStream(), pipelined. */
async function deliverStream(smtp: SmtpBackend, sent: readonly Sent[]): Promise<void> {
  let next = 0;
  const outcomes: unknown[] = [];
  const result = await smtp.deliverStream(
    () => {
      const item = sent[next++];
      return item ? { message: item.message } : undefined;
    },
    (_item, outcome) => {
      outcomes.push(outcome);
    },
    { window: 8 },
  );
  expect(result.error).toBeUndefined();
  expect(outcomes).toHaveLength(sent.length);
  expect(outcomes.every((outcome) => (outcome as { delivered: boolean }).delivered)).toBe(true);
}

describe('DKIM signatures of the SMTP backend, verified by dkimpy after smtp-server received them', () => {
  it('verify for plain, 8-bit, multipart, attachment, List-Unsubscribe and long-Subject messages sent pipelined', async () => {
    const sent = batch();
    await deliverStream(backend({ dkim: dkimOptions() }), sent);
    const received = sent.map((item) => byRecipient(server, item));
    const verdicts = await Promise.all(received.map((message) => verifyWithDkimpy(message.raw, key)));
    sent.forEach((item, index) => {
      const raw = (received[index] as ReceivedMessage).raw;
      const verdict = verdicts[index] as Verdict;
      expectSignedIntact(raw, item);
      expect(verdict.verified, `${item.kind}: ${verdict.log.join(' | ')}`).toBe(true);
      expect(verdict.queries).toEqual([`${SELECTOR}._domainkey.${DOMAIN}.`]);
      expect(verdict.signature).toMatchObject({
        a: 'rsa-sha256',
        c: 'relaxed/relaxed',
        d: DOMAIN,
        s: SELECTOR,
      });
      // Every field of the message that the list names is covered.
      const covered = DKIM_SIGNED_HEADERS.map((name) => name.toLowerCase());
      const expected = fieldNames(item.rendered()).filter((name) => covered.includes(name));
      expect(verdict.headers.sort(), item.kind).toEqual([...new Set(expected)].sort());
    });
    const kinds = Object.fromEntries(sent.map((item, index) => [item.kind, index]));
    const at = (kind: string) => ({
      sent: sent[kinds[kind] as number] as Sent,
      index: kinds[kind] as number,
    });

    // The 8-bit message really is 8bit on the wire, sent with BODY=8BITMIME.
    const eightBit = at('8bit');
    expect(headerBlock(eightBit.sent.rendered())).toContain('Content-Transfer-Encoding: 8bit');
    expect((received[eightBit.index] as ReceivedMessage).bodyType).toBe('8bitmime');
    // The attachment message carries its binary attachment.
    expect(headerBlock(at('attachments').sent.rendered())).toContain('multipart/mixed');
    // List-Unsubscribe and List-Unsubscribe-Post are both in h= (RFC 8058 §4), with Cc and Reply-To.
    expect((verdicts[at('list-unsubscribe').index] as Verdict).headers).toEqual(
      expect.arrayContaining(['list-unsubscribe', 'list-unsubscribe-post', 'cc', 'reply-to', 'from', 'to']),
    );
    // The long Subject is folded over several lines of RFC 2047 words.
    expect(headerBlock(at('long-subject').sent.rendered())).toMatch(
      /\r\nSubject:[^\r\n]*(?:\r\n [^\r\n]+){2,}\r\nFrom:/,
    );
  });

  it('verify for messages sent by sendMessages() and by deliver()', async () => {
    const viaSendMessages = track(
      'sendMessages',
      new EmailMessage('Via sendMessages', 'Body.\n', SENDER, [recipient('send')]),
    );
    const viaDeliver = track(
      'deliver',
      new EmailMessage('Via deliver', 'Bödy.\n', SENDER, [recipient('deliver')]),
    );
    const smtp = backend({ dkim: dkimOptions() });
    expect(await smtp.sendMessages([viaSendMessages.message])).toBe(1);
    expect((await smtp.deliver(viaDeliver.message)).delivered).toBe(true);
    for (const sent of [viaSendMessages, viaDeliver]) {
      const raw = byRecipient(server, sent).raw;
      expectSignedIntact(raw, sent);
      const verdict = await verifyWithDkimpy(raw, key);
      expect(verdict.verified, `${sent.kind}: ${verdict.log.join(' | ')}`).toBe(true);
    }
  });

  it('verify when the EMAIL_DKIM_* settings name the key by its file path', async () => {
    dir = await mkdtemp(join(tmpdir(), 'mailroom-dkim-'));
    const path = join(dir, 'dkim.pem');
    await writeFile(path, key.privateKey, { mode: 0o600 });
    configure({ EMAIL_DKIM_DOMAIN: DOMAIN, EMAIL_DKIM_SELECTOR: SELECTOR, EMAIL_DKIM_PRIVATE_KEY: path });
    const sent = track(
      'settings',
      new EmailMessage('From settings', 'Body.\n', SENDER, [recipient('settings')]),
    );
    expect(await backend().sendMessages([sent.message])).toBe(1);
    const verdict = await verifyWithDkimpy(byRecipient(server, sent).raw, key);
    expect(verdict.verified, verdict.log.join(' | ')).toBe(true);
  });
});

describe('dkimpy refuses what it must', () => {
  /** A signed plain message as the server received it. */
  async function signedPlain(): Promise<Buffer> {
    const sent = track(
      'tamper',
      new EmailMessage('Original subject', 'Hello,\nthe original body.\n', SENDER, [recipient('tamper')]),
    );
    expect(await backend({ dkim: dkimOptions() }).sendMessages([sent.message])).toBe(1);
    return byRecipient(server, sent).raw;
  }

  it('a message with one body byte changed after receipt', async () => {
    const raw = Buffer.from(await signedPlain());
    const at = raw.indexOf('original body');
    raw[at] = 'O'.charCodeAt(0);
    const verdict = await verifyWithDkimpy(raw, key);
    expect(verdict.verified).toBe(false);
    expect(verdict.log.join('\n')).toContain('body hash mismatch');
  });

  it('a message with a signed header value changed after receipt', async () => {
    const raw = Buffer.from(
      (await signedPlain()).toString('latin1').replace('Original subject', 'Altered subject'),
      'latin1',
    );
    const verdict = await verifyWithDkimpy(raw, key);
    expect(verdict.verified).toBe(false);
    expect(verdict.log.join('\n')).toMatch(/valid: False/);
  });

  it('a signature checked against another published key', async () => {
    const verdict = await verifyWithDkimpy(await signedPlain(), rsaKey());
    expect(verdict.verified).toBe(false);
  });

  it('the same message untouched (the control of the three above)', async () => {
    expect((await verifyWithDkimpy(await signedPlain(), key)).verified).toBe(true);
  });
});

describe('without DKIM', () => {
  it('a backend with no EMAIL_DKIM_* settings, or with dkim: null, sends no DKIM-Signature', async () => {
    const unsetting = track('unset', new EmailMessage('Unsigned', 'Body.\n', SENDER, [recipient('unset')]));
    expect(await backend().sendMessages([unsetting.message])).toBe(1);
    configure({
      EMAIL_DKIM_DOMAIN: DOMAIN,
      EMAIL_DKIM_SELECTOR: SELECTOR,
      EMAIL_DKIM_PRIVATE_KEY: key.privateKey,
    });
    const off = track('off', new EmailMessage('Unsigned too', 'Body.\n', SENDER, [recipient('off')]));
    expect(await backend({ dkim: null }).sendMessages([off.message])).toBe(1);
    for (const sent of [unsetting, off]) {
      const raw = byRecipient(server, sent).raw;
      expect(raw.equals(sent.rendered()), `${sent.kind}: sent as rendered`).toBe(true);
      expect(fieldNames(raw)).not.toContain('dkim-signature');
      expect((await verifyWithDkimpy(raw, key)).verified).toBe(false);
    }
  });
});
