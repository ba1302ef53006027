/**
 * DKIM signing (dkim.ts) and its settings: the key checked at construction, errors that name the
 * setting and never show the key, the header fields a signature covers, and the SMTP backend never
 * sending a message it could not sign. The signatures themselves are verified by dkimpy in
 * test/dkim-verify.test.ts.
 */
import crypto, { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import {
  ConfigError,
  classifyDeliveryError,
  configure,
  createDkimSigner,
  DKIM_SIGNED_HEADERS,
  type DkimOptions,
  EmailMessage,
  resetSettings,
  SmtpBackend,
  settings,
  ValidationError,
} from '@mailroom/core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { type SmtpTestServer, startSmtpServer } from '../../../test/support/smtp-server.js';

const DKIM_NAMES = ['EMAIL_DKIM_DOMAIN', 'EMAIL_DKIM_SELECTOR', 'EMAIL_DKIM_PRIVATE_KEY'] as const;

let rsa: { privateKey: KeyObject; publicKey: KeyObject };
let pem: string;
let dir: string;
let savedEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  pem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  dir = await mkdtemp(join(tmpdir(), 'mailroom-dkim-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  savedEnv = { ...process.env };
  for (const name of DKIM_NAMES) delete process.env[name];
  resetSettings();
});

afterEach(() => {
  vi.restoreAllMocks();
  process.env = savedEnv;
  resetSettings();
});

function options(overrides: Partial<DkimOptions> = {}): DkimOptions {
  return { domain: 'example.com', selector: 'mr1', privateKey: pem, ...overrides };
}

function message(extra: Record<string, unknown> = {}): EmailMessage {
  return new EmailMessage({
    subject: 'Hello',
    body: 'Hello,\nthis is the body.\n',
    fromEmail: 'news@example.com',
    to: ['ann@example.net'],
    ...extra,
  });
}

/** The tags of the DKIM-Signature field at the top of `signed`, unfolded. */
function signatureTags(signed: Buffer): Record<string, string> {
  const text = signed.toString('latin1');
  const match = /^DKIM-Signature:((?:[^\r\n]|\r\n[ \t])*)\r\n/.exec(text);
  if (!match) throw new Error(`no DKIM-Signature at the top of ${JSON.stringify(text.slice(0, 80))}`);
  const tags: Record<string, string> = {};
  for (const part of (match[1] as string).replace(/\s+/g, '').split(';')) {
    const at = part.indexOf('=');
    if (at > 0) tags[part.slice(0, at)] = part.slice(at + 1);
  }
  return tags;
}

/** The lines of the key's base64 body: none may show up in anything an error or a signer prints. */
function keyLines(text: string): string[] {
  return text.split('\n').filter((line) => line.length >= 16 && !line.startsWith('-----'));
}

function expectNoKey(printed: string, key = pem): void {
  for (const line of keyLines(key)) expect(printed).not.toContain(line);
}

/** The ConfigError `run` throws, checked to show the key nowhere: message, inspect (with cause), JSON. */
function configError(run: () => unknown, key = pem): ConfigError {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(ConfigError);
  const error = caught as ConfigError;
  expect(error.code).toBe('ECONFIG');
  expectNoKey(error.message, key);
  expectNoKey(inspect(error, { depth: 10 }), key);
  expectNoKey(JSON.stringify(error), key);
  return error;
}

async function keyFile(name: string, content: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

describe('createDkimSigner()', () => {
  it('signs rsa-sha256, relaxed/relaxed, for the domain and selector given', async () => {
    const tags = signatureTags(await createDkimSigner(options()).sign(message().message()));
    expect(tags).toMatchObject({ v: '1', a: 'rsa-sha256', c: 'relaxed/relaxed', d: 'example.com', s: 'mr1' });
    expect(tags.b).toMatch(/^[A-Za-z0-9+/]{300,}={0,2}$/);
  });

  it('puts one header field before the message and changes no byte of it', async () => {
    const bytes = message({ body: 'Grüße\n.a line with a dot\n' }).message();
    const signed = await createDkimSigner(options()).sign(bytes);
    const prefix = signed.subarray(0, signed.length - bytes.length).toString('latin1');
    expect(signed.subarray(signed.length - bytes.length).equals(bytes)).toBe(true);
    expect(prefix).toMatch(/^DKIM-Signature: (?:[^\r\n]|\r\n[ \t])*\r\n$/);
  });

  it('covers From, To, Cc, Reply-To, Subject, Date, Message-ID, the MIME fields and both List-Unsubscribe fields', async () => {
    const bytes = message({
      cc: ['bob@example.net'],
      replyTo: ['help@example.com'],
      headers: {
        'List-Unsubscribe': '<https://example.com/u/42>, <mailto:unsubscribe@example.com?subject=42>',
        'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
      },
    }).message();
    const tags = signatureTags(await createDkimSigner(options()).sign(bytes));
    expect(tags.h?.split(':').sort()).toEqual(
      [
        'from',
        'to',
        'cc',
        'reply-to',
        'subject',
        'date',
        'message-id',
        'mime-version',
        'content-type',
        'content-transfer-encoding',
        'list-unsubscribe',
        'list-unsubscribe-post',
      ].sort(),
    );
  });

  it('lists List-Unsubscribe-Post among the fields it signs (RFC 8058 §4)', () => {
    expect(DKIM_SIGNED_HEADERS).toEqual(
      expect.arrayContaining(['List-Unsubscribe', 'List-Unsubscribe-Post']),
    );
  });

  it('leaves out of h= the fields the message does not have, and signs no Bcc', async () => {
    const tags = signatureTags(
      await createDkimSigner(options()).sign(message({ bcc: ['hidden@example.net'] }).message()),
    );
    expect(tags.h?.split(':')).not.toContain('cc');
    expect(tags.h?.split(':')).not.toContain('bcc');
    expect(tags.h?.split(':')).not.toContain('list-unsubscribe');
  });

  it('gives the DNS name and TXT record of the public key', () => {
    const signer = createDkimSigner(options());
    const spki = rsa.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    expect(signer.dnsName).toBe('mr1._domainkey.example.com');
    expect(signer.dnsRecord).toBe(`v=DKIM1; k=rsa; p=${spki}`);
  });

  it('punycodes an IDN domain in d=', async () => {
    const signer = createDkimSigner(options({ domain: 'bücher.example' }));
    expect(signer.domain).toBe('xn--bcher-kva.example');
    expect(signatureTags(await signer.sign(message().message())).d).toBe('xn--bcher-kva.example');
  });

  it('reads the key from the PEM file a path names', async () => {
    const signer = createDkimSigner(options({ privateKey: await keyFile('key.pem', pem) }));
    expect(signatureTags(await signer.sign(message().message())).s).toBe('mr1');
  });

  it('takes a PKCS#1 key (BEGIN RSA PRIVATE KEY)', () => {
    const pkcs1 = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    expect(createDkimSigner(options({ privateKey: pkcs1 })).selector).toBe('mr1');
  });

  it('takes a PEM written on one line with \\n escapes, as one-line environment files hold it', () => {
    const oneLine = pem.trim().replaceAll('\n', '\\n');
    expect(createDkimSigner(options({ privateKey: oneLine })).domain).toBe('example.com');
  });

  it('shows no key when printed or serialised', () => {
    const signer = createDkimSigner(options());
    expectNoKey(inspect(signer, { depth: 10, showHidden: true }));
    expectNoKey(JSON.stringify(signer));
    expectNoKey(String(signer));
  });
});

describe('createDkimSigner() refuses a key it cannot sign with, naming EMAIL_DKIM_PRIVATE_KEY and never showing it', () => {
  it('a path that names no file', () => {
    const error = configError(() => createDkimSigner(options({ privateKey: join(dir, 'missing.pem') })));
    expect(error.message).toBe(
      'EMAIL_DKIM_PRIVATE_KEY is neither PEM text (starting with -----BEGIN) nor the path of a readable file (ENOENT)',
    );
  });

  it('key material without its BEGIN line (taken for a path, and not shown)', () => {
    const body = keyLines(pem).join('\n');
    const error = configError(() => createDkimSigner(options({ privateKey: body })));
    expect(error.message).toContain('EMAIL_DKIM_PRIVATE_KEY is neither PEM text');
  });

  it('a PEM cut short', () => {
    const cut = pem.slice(0, 600);
    const error = configError(() => createDkimSigner(options({ privateKey: cut })), cut);
    expect(error.message).toMatch(
      /^EMAIL_DKIM_PRIVATE_KEY cannot be used: it is not an unencrypted PEM private key/,
    );
  });

  it('a file that holds no key, naming the file', async () => {
    const path = await keyFile('not-a-key.pem', 'hello\n');
    const error = configError(() => createDkimSigner(options({ privateKey: path })));
    expect(error.message).toContain(`the file "${path}" named by EMAIL_DKIM_PRIVATE_KEY cannot be used`);
  });

  it('the public key instead of the private one', () => {
    const publicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const error = configError(() => createDkimSigner(options({ privateKey: publicPem })), publicPem);
    expect(error.message).toContain('it is a public key: give the private key');
  });

  it('an encrypted key', () => {
    const encrypted = rsa.privateKey.export({
      type: 'pkcs8',
      format: 'pem',
      cipher: 'aes-256-cbc',
      passphrase: 'secret passphrase',
    }) as string;
    const error = configError(() => createDkimSigner(options({ privateKey: encrypted })), encrypted);
    expect(error.message).toContain('it is encrypted');
  });

  it('an Ed25519 key: nodemailer signs rsa-sha256 only', () => {
    const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const error = configError(() => createDkimSigner(options({ privateKey: ed })), ed);
    expect(error.message).toBe(
      "EMAIL_DKIM_PRIVATE_KEY is a key of type ed25519; the DKIM signer (nodemailer's) signs rsa-sha256 only: use an RSA key of 2048 bits",
    );
  });

  it('an RSA key under 1024 bits (RFC 8301)', () => {
    const small = generateKeyPairSync('rsa', { modulusLength: 512 }).privateKey.export({
      type: 'pkcs8',
      format: 'pem',
    }) as string;
    const error = configError(() => createDkimSigner(options({ privateKey: small })), small);
    expect(error.message).toContain('is a 512-bit RSA key; verifiers refuse keys under 1024 bits');
  });

  it('a domain or selector that cannot go in the signature, naming the setting', () => {
    expect(configError(() => createDkimSigner(options({ domain: 'exa;mple.com' }))).message).toMatch(
      /^EMAIL_DKIM_DOMAIN="exa;mple.com" is not a domain name/,
    );
    expect(configError(() => createDkimSigner(options({ selector: 'mr1; d=evil.example' }))).message).toMatch(
      /^EMAIL_DKIM_SELECTOR="mr1; d=evil.example" is not a DKIM selector/,
    );
  });
});

describe('a message that cannot be signed', () => {
  /**
   * Makes the key unusable the way nodemailer's signer handles quietly: crypto's sign() throws, and
   * nodemailer's sign.js returns no signature and passes the message on unsigned.
   */
  function breakSigning(): void {
    vi.spyOn(crypto, 'createSign').mockImplementation(
      () =>
        ({
          update() {
            return this;
          },
          sign() {
            throw new Error('signing is broken for this test');
          },
        }) as unknown as crypto.Sign,
    );
  }

  it('is refused by sign() with a permanent ValidationError (EDKIM), not passed on unsigned', async () => {
    const signer = createDkimSigner(options());
    breakSigning();
    const error = await signer.sign(message().message()).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({
      code: 'EDKIM',
      message: 'DKIM signing for mr1._domainkey.example.com failed: no signature was made',
    });
    expect(classifyDeliveryError(error)).toEqual({ transient: false, reason: 'invalid' });
  });

  it("is refused by sign() when nodemailer's signer fails with an error", async () => {
    const signer = createDkimSigner(options());
    vi.spyOn(crypto, 'createSign').mockImplementation(() => {
      throw new Error('no such digest');
    });
    const error = await signer.sign(message().message()).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({
      code: 'EDKIM',
      message: 'DKIM signing for mr1._domainkey.example.com failed: Unsupported DKIM hash algorithm "sha256"',
    });
  });

  describe('over SMTP', () => {
    let server: SmtpTestServer;
    beforeAll(async () => {
      server = await startSmtpServer();
    });
    afterAll(async () => {
      await server.close();
    });

    it('fails for good and never reaches the server, by sendMessages(), deliver() and deliverStream()', async () => {
      server.clear();
      const backend = new SmtpBackend({ ...server.clientOptions, timeout: 10, dkim: options() });
      breakSigning();
      await expect(backend.sendMessages([message()])).rejects.toMatchObject({ code: 'EDKIM' });
      try {
        const outcome = await backend.deliver(message());
        expect(outcome).toMatchObject({
          delivered: false,
          error: { code: 'EDKIM' },
          classification: { transient: false, reason: 'invalid' },
        });
        const settled: unknown[] = [];
        let given = false;
        const result = await backend.deliverStream(
          () => {
            if (given) return undefined;
            given = true;
            return { message: message() };
          },
          (_item, streamed) => {
            settled.push(streamed);
          },
        );
        expect(result).toEqual({ error: undefined, unsent: [] });
        expect(settled).toMatchObject([{ delivered: false, error: { code: 'EDKIM' } }]);
      } finally {
        await backend.close();
      }
      expect(server.messages).toHaveLength(0);
    });
  });
});

describe('the EMAIL_DKIM_* settings', () => {
  it('are unset by default, and the SMTP backend then signs nothing', () => {
    expect([
      settings.EMAIL_DKIM_DOMAIN,
      settings.EMAIL_DKIM_SELECTOR,
      settings.EMAIL_DKIM_PRIVATE_KEY,
    ]).toEqual([null, null, null]);
    expect(new SmtpBackend().dkimSigner).toBeNull();
  });

  it('are read from the environment by the SMTP backend, the key as a file path', async () => {
    process.env.EMAIL_DKIM_DOMAIN = 'example.com';
    process.env.EMAIL_DKIM_SELECTOR = 'env1';
    process.env.EMAIL_DKIM_PRIVATE_KEY = await keyFile('env.pem', pem);
    resetSettings();
    const signer = new SmtpBackend().dkimSigner;
    expect(signer?.dnsName).toBe('env1._domainkey.example.com');
    expect(signatureTags(await signer!.sign(message().message())).s).toBe('env1');
  });

  it('are set together by configure(), and turned off together with empty values', () => {
    configure({ EMAIL_DKIM_DOMAIN: 'example.com', EMAIL_DKIM_SELECTOR: 'cfg1', EMAIL_DKIM_PRIVATE_KEY: pem });
    expect(new SmtpBackend().dkimSigner?.selector).toBe('cfg1');
    configure({ EMAIL_DKIM_DOMAIN: '', EMAIL_DKIM_SELECTOR: '', EMAIL_DKIM_PRIVATE_KEY: '' });
    expect(new SmtpBackend().dkimSigner).toBeNull();
  });

  it('refuse a partial set, naming the settings that are missing', () => {
    process.env.EMAIL_DKIM_DOMAIN = 'example.com';
    resetSettings();
    const error = configError(() => settings.EMAIL_HOST);
    expect(error.message).toBe(
      'EMAIL_DKIM_SELECTOR and EMAIL_DKIM_PRIVATE_KEY are not set while EMAIL_DKIM_DOMAIN is: ' +
        'DKIM signing needs EMAIL_DKIM_DOMAIN, EMAIL_DKIM_SELECTOR, EMAIL_DKIM_PRIVATE_KEY all set (or none, to send unsigned)',
    );
    const keyOnly = configError(() =>
      configure({ EMAIL_DKIM_DOMAIN: 'example.com', EMAIL_DKIM_PRIVATE_KEY: pem }),
    );
    expect(keyOnly.message).toMatch(
      /^EMAIL_DKIM_SELECTOR is not set while EMAIL_DKIM_DOMAIN and EMAIL_DKIM_PRIVATE_KEY are/,
    );
  });

  it('refuse a domain or selector that cannot be signed for, naming it', () => {
    expect(
      configError(() =>
        configure({
          EMAIL_DKIM_DOMAIN: 'not a domain',
          EMAIL_DKIM_SELECTOR: 's',
          EMAIL_DKIM_PRIVATE_KEY: pem,
        }),
      ).message,
    ).toMatch(/^EMAIL_DKIM_DOMAIN="not a domain" is not a domain name/);
    expect(
      configError(() =>
        configure({
          EMAIL_DKIM_DOMAIN: 'example.com',
          EMAIL_DKIM_SELECTOR: '-s',
          EMAIL_DKIM_PRIVATE_KEY: pem,
        }),
      ).message,
    ).toMatch(/^EMAIL_DKIM_SELECTOR="-s" is not a DKIM selector/);
  });

  it('never show EMAIL_DKIM_PRIVATE_KEY in a validation error', () => {
    const error = configError(() => configure({ EMAIL_DKIM_PRIVATE_KEY: { pem } as unknown as string }));
    expect(error.message).toBe('EMAIL_DKIM_PRIVATE_KEY=(hidden) must be a string');
  });
});

describe('SmtpBackend with DKIM', () => {
  it('refuses a bad key in its constructor (start-up), naming EMAIL_DKIM_PRIVATE_KEY, from the settings or the option', async () => {
    const damaged = pem.slice(0, 700);
    configure({
      EMAIL_DKIM_DOMAIN: 'example.com',
      EMAIL_DKIM_SELECTOR: 's1',
      EMAIL_DKIM_PRIVATE_KEY: damaged,
    });
    expect(configError(() => new SmtpBackend(), damaged).message).toMatch(
      /^EMAIL_DKIM_PRIVATE_KEY cannot be used/,
    );
    resetSettings();
    expect(
      configError(() => new SmtpBackend({ dkim: options({ privateKey: damaged }) }), damaged).message,
    ).toMatch(/^EMAIL_DKIM_PRIVATE_KEY cannot be used/);
  });

  it('signs nothing with dkim: null, whatever the settings say', () => {
    configure({ EMAIL_DKIM_DOMAIN: 'example.com', EMAIL_DKIM_SELECTOR: 's1', EMAIL_DKIM_PRIVATE_KEY: pem });
    expect(new SmtpBackend({ dkim: null }).dkimSigner).toBeNull();
    expect(new SmtpBackend().dkimSigner?.domain).toBe('example.com');
  });

  it('shows no key when printed or serialised', () => {
    const backend = new SmtpBackend({ dkim: options() });
    expectNoKey(inspect(backend, { depth: 10, showHidden: true }));
    expectNoKey(JSON.stringify(backend));
  });
});
