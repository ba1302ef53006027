import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigError,
  configure,
  DeliveryError,
  EmailMessage,
  MailError,
  type MassMailTuple,
  resetSettings,
  SmtpBackend,
  type SmtpBackendOptions,
  sendMail,
  sendMassMail,
} from '@mailroom/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  parse,
  type SmtpServerOptions,
  type SmtpTestServer,
  selfSignedCertificate,
  startSmtpServer,
} from '../../../test/support/smtp-server.js';

const servers: SmtpTestServer[] = [];
const backends: SmtpBackend[] = [];
const dirs: string[] = [];

async function serve(options: SmtpServerOptions = {}): Promise<SmtpTestServer> {
  const server = await startSmtpServer(options);
  servers.push(server);
  return server;
}

function backendFor(server: SmtpTestServer, options: SmtpBackendOptions = {}): SmtpBackend {
  const backend = new SmtpBackend({ ...server.clientOptions, timeout: 10, ...options });
  backends.push(backend);
  return backend;
}

function message(subject: string, to: string[] = ['to@example.com'], extra = {}): EmailMessage {
  return new EmailMessage({
    subject,
    body: `Body of ${subject}`,
    fromEmail: 'from@example.com',
    to,
    ...extra,
  });
}

/** The test certificate and its key written to PEM files in a temp dir (removed after the test). */
async function clientCertificateFiles(): Promise<{ certfile: string; keyfile: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mailroom-client-cert-'));
  dirs.push(dir);
  const { key, cert } = await selfSignedCertificate();
  await writeFile(join(dir, 'cert.pem'), cert);
  await writeFile(join(dir, 'key.pem'), key);
  return { certfile: join(dir, 'cert.pem'), keyfile: join(dir, 'key.pem') };
}

afterEach(async () => {
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
  await Promise.all(servers.splice(0).map((server) => server.close()));
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  resetSettings();
});

describe('TLS', () => {
  it('useTls upgrades with STARTTLS before MAIL FROM', async () => {
    const server = await serve({ tls: 'starttls', requireTls: true });
    const backend = backendFor(server, { useTls: true });
    expect(await backend.sendMessages([message('over starttls')])).toBe(1);
    expect(server.messages[0]?.secure).toBe(true);
    expect(server.commands.map((entry) => entry.command).slice(0, 3)).toEqual(['EHLO', 'STARTTLS', 'EHLO']);
  });

  it('does not upgrade without useTls, even when the server offers STARTTLS (as Django)', async () => {
    const server = await serve({ tls: 'starttls' });
    const backend = backendFor(server, { useTls: false });
    expect(await backend.sendMessages([message('plain')])).toBe(1);
    expect(server.messages[0]?.secure).toBe(false);
    expect(server.commandCount('STARTTLS')).toBe(0);
  });

  it('useTls fails to open when the server does not offer STARTTLS', async () => {
    const server = await serve();
    const backend = backendFor(server, { useTls: true });
    const error = await backend.open().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeliveryError);
    expect((error as DeliveryError).code).toBe('ETLS');
    expect(server.messages).toHaveLength(0);
  });

  it('useSsl speaks TLS from the first byte', async () => {
    const server = await serve({ tls: 'implicit' });
    const backend = backendFor(server, { useSsl: true });
    expect(await backend.sendMessages([message('over smtps')])).toBe(1);
    expect(server.messages[0]?.secure).toBe(true);
  });

  it('verifies the server certificate by default', async () => {
    const server = await serve({ tls: 'implicit' });
    const backend = backendFor(server, { useSsl: true, tlsOptions: {} });
    const error = await backend.open().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeliveryError);
    expect((error as Error).message).toMatch(/self[- ]signed/i);
    expect(server.messages).toHaveLength(0);
  });

  it('accepts an unverified certificate with tlsOptions.rejectUnauthorized = false', async () => {
    const server = await serve({ tls: 'starttls' });
    const backend = backendFor(server, { useTls: true, tlsOptions: { rejectUnauthorized: false } });
    expect(await backend.sendMessages([message('unverified')])).toBe(1);
    expect(server.messages[0]?.secure).toBe(true);
  });

  it('presents sslCertfile and sslKeyfile as the client certificate', async () => {
    const server = await serve({ tls: 'implicit', requestClientCertificate: true });
    const { certfile, keyfile } = await clientCertificateFiles();
    const backend = backendFor(server, {
      useSsl: true,
      sslCertfile: certfile,
      sslKeyfile: keyfile,
    });
    expect(await backend.sendMessages([message('with client cert')])).toBe(1);
    expect(server.messages[0]?.clientCertificate).toBe('localhost');
  });

  it('useTls together with useSsl is a ConfigError at construction', () => {
    expect(() => new SmtpBackend({ useTls: true, useSsl: true })).toThrow(ConfigError);
    expect(() => new SmtpBackend({ useTls: true, useSsl: true })).toThrow(/mutually exclusive/);
  });

  it('EMAIL_USE_TLS together with EMAIL_USE_SSL is a ConfigError at construction', () => {
    configure({ EMAIL_USE_TLS: true, EMAIL_USE_SSL: true });
    expect(() => new SmtpBackend()).toThrow(ConfigError);
  });
});

describe('AUTH', () => {
  const auth = { username: 'mailer', password: 's3cret-pass' };

  it('authenticates when username and password are both set', async () => {
    const server = await serve({ auth });
    const backend = backendFor(server, { ...auth });
    expect(await backend.sendMessages([message('authenticated')])).toBe(1);
    expect(server.authentications).toEqual([expect.objectContaining({ username: 'mailer', success: true })]);
    expect(server.messages[0]?.user).toBe('mailer');
  });

  it('authenticates with AUTH LOGIN when that is all the server offers', async () => {
    const server = await serve({ auth, authMethods: ['LOGIN'] });
    const backend = backendFor(server, { ...auth });
    expect(await backend.sendMessages([message('login')])).toBe(1);
    expect(server.authentications).toEqual([expect.objectContaining({ method: 'LOGIN', success: true })]);
  });

  it('does not authenticate when the password is empty', async () => {
    const server = await serve({ auth });
    const backend = backendFor(server, { username: 'mailer', password: '' });
    expect(await backend.sendMessages([message('anonymous')])).toBe(1);
    expect(server.commandCount('AUTH')).toBe(0);
    expect(server.messages[0]?.user).toBeUndefined();
  });

  it('does not authenticate when the username is empty', async () => {
    const server = await serve({ auth });
    const backend = backendFor(server, { username: '', password: 's3cret-pass' });
    expect(await backend.sendMessages([message('anonymous')])).toBe(1);
    expect(server.commandCount('AUTH')).toBe(0);
  });

  it('a wrong password fails to open with code EAUTH and reply 535, without showing the password', async () => {
    const server = await serve({ auth });
    const backend = backendFor(server, { username: 'mailer', password: 'wrong-pass' });
    const error = await backend.open().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeliveryError);
    expect(error).toMatchObject({ code: 'EAUTH', responseCode: 535 });
    expect(String(error)).not.toContain('wrong-pass');
    expect(backend.isOpen).toBe(false);
  });

  it('a wrong password with failSilently sends nothing and returns 0', async () => {
    const server = await serve({ auth });
    const backend = backendFor(server, { username: 'mailer', password: 'wrong-pass', failSilently: true });
    expect(await backend.sendMessages([message('refused login')])).toBe(0);
    expect(server.messages).toHaveLength(0);
  });

  it('sendMail authenticates with authUser and authPassword', async () => {
    const server = await serve({ auth, authRequired: true });
    configure({ EMAIL_HOST: server.host, EMAIL_PORT: server.port });
    const sent = await sendMail('hello', 'body', 'from@example.com', ['to@example.com'], {
      authUser: 'mailer',
      authPassword: 's3cret-pass',
    });
    expect(sent).toBe(1);
    expect(server.messages[0]?.user).toBe('mailer');
  });
});

describe('timeouts', () => {
  it('a greeting slower than timeout fails with ETIMEDOUT, and in under 5 s', async () => {
    const server = await serve({ greetingDelayMs: 30_000 });
    const backend = backendFor(server, { timeout: 0.3 });
    const started = performance.now();
    const error = await backend.open().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeliveryError);
    expect((error as DeliveryError).code).toBe('ETIMEDOUT');
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it('a reply slower than timeout mid-session is a transient timeout for that message', async () => {
    const server = await serve({
      onMailFrom: () => new Promise<void>((resolve) => setTimeout(resolve, 3000).unref()),
    });
    const backend = backendFor(server, { timeout: 0.3 });
    await backend.open();
    const outcome = await backend.deliver(message('stuck'));
    expect(outcome.delivered).toBe(false);
    expect(outcome.error).toMatchObject({ code: 'ETIMEDOUT' });
    expect(outcome.classification).toEqual({ transient: true, reason: 'timeout' });
    expect(backend.isOpen).toBe(false);
  });
});

describe('envelope', () => {
  it('punycodes IDN domains in MAIL FROM and RCPT TO as the server sees them', async () => {
    const server = await serve();
    const backend = backendFor(server);
    const mail = new EmailMessage('idn', 'body', 'Sender <from@exämple.com>', ['to@bücher.example']);
    expect(await backend.sendMessages([mail])).toBe(1);
    const lines = server.commands.map((entry) => entry.line);
    expect(lines.find((line) => line.startsWith('MAIL FROM:'))).toMatch(
      /^MAIL FROM:<from@xn--exmple-cua\.com>/,
    );
    expect(lines).toContain('RCPT TO:<to@xn--bcher-kva.example>');
  });

  it('sends Bcc recipients the message without a Bcc header', async () => {
    const server = await serve();
    const backend = backendFor(server);
    const mail = message('blind', ['to@example.com'], {
      cc: ['cc@example.com'],
      bcc: ['hidden@example.com'],
    });
    expect(await backend.sendMessages([mail])).toBe(1);
    const received = server.messages[0]!;
    expect(received.to).toEqual(['to@example.com', 'cc@example.com', 'hidden@example.com']);
    expect(received.raw.toString('latin1')).not.toMatch(/^bcc:/im);
    expect(received.raw.toString('latin1')).not.toContain('hidden@example.com');
    const parsed = await parse(received.raw);
    expect(parsed.bcc).toBeUndefined();
  });

  it('sends an 8-bit body with BODY=8BITMIME and it arrives intact', async () => {
    const server = await serve();
    const backend = backendFor(server);
    expect(await backend.sendMessages([message('8bit', undefined, { body: 'Grüße aus Köln\n' })])).toBe(1);
    expect(server.messages[0]?.bodyType).toBe('8bitmime');
    expect((await parse(server.messages[0]!.raw)).text).toBe('Grüße aus Köln\n');
  });

  it('sends EHLO with clientName', async () => {
    const server = await serve();
    const backend = backendFor(server, { clientName: 'mailer.example.com' });
    await backend.open();
    expect(server.commands[0]?.line).toBe('EHLO mailer.example.com');
  });
});

describe('one connection per sendMessages', () => {
  it('sendMassMail sends 50 messages over exactly one connection', async () => {
    const server = await serve();
    configure({ EMAIL_HOST: server.host, EMAIL_PORT: server.port });
    const datatuple: MassMailTuple[] = Array.from({ length: 50 }, (_, index) => [
      `mass ${index}`,
      'body',
      'from@example.com',
      [`rcpt${index}@example.com`],
    ]);
    expect(await sendMassMail(datatuple)).toBe(50);
    expect(server.connectionCount).toBe(1);
    expect(server.messages).toHaveLength(50);
    expect(new Set(server.messages.map((received) => received.connectionId)).size).toBe(1);
    expect(server.commandCount('QUIT')).toBe(1);
  });

  const refuseThird = {
    onRcpt: (address: string) =>
      address === 'rcpt2@example.com' ? { code: 550, message: 'No such user' } : undefined,
  };
  const tenMessages = () =>
    Array.from({ length: 10 }, (_, index) => message(`message ${index}`, [`rcpt${index}@example.com`]));

  it('a refused recipient in message 3 of 10 leaves 9 delivered over the same connection (failSilently)', async () => {
    const server = await serve(refuseThird);
    const backend = backendFor(server, { failSilently: true });
    expect(await backend.sendMessages(tenMessages())).toBe(9);
    expect(server.connectionCount).toBe(1);
    expect(server.messages).toHaveLength(9);
    expect(new Set(server.messages.map((received) => received.connectionId))).toEqual(
      new Set(server.connectionIds),
    );
    expect(server.messages.map((received) => received.to[0])).not.toContain('rcpt2@example.com');
  });

  it('deliver() reports message 3 refused with reply 550 and the recipient, the other 9 delivered', async () => {
    const server = await serve(refuseThird);
    const backend = backendFor(server);
    await backend.open();
    const outcomes = [];
    for (const mail of tenMessages()) outcomes.push(await backend.deliver(mail));
    expect(outcomes.map((outcome) => outcome.delivered)).toEqual([
      true,
      true,
      false,
      true,
      true,
      true,
      true,
      true,
      true,
      true,
    ]);
    const third = outcomes[2]!;
    expect(third.error).toMatchObject({ responseCode: 550 });
    expect(third.classification).toEqual({ transient: false, reason: 'rejected' });
    expect(third.refused).toEqual([
      expect.objectContaining({ recipient: 'rcpt2@example.com', responseCode: 550, transient: false }),
    ]);
    expect(server.connectionCount).toBe(1);
  });

  it('sends RSET after a refusal, before the next MAIL, and the next message goes over the same connection', async () => {
    const server = await serve(refuseThird);
    const backend = backendFor(server);
    await backend.open();
    expect((await backend.deliver(message('first'))).delivered).toBe(true);
    await backend.deliver(message('refused', ['rcpt2@example.com']));
    expect((await backend.deliver(message('accepted'))).delivered).toBe(true);
    const verbs = server.commands.map((entry) => entry.command).filter((verb) => verb !== 'EHLO');
    // RSET only where needed: not after the delivered message, once after the refused one.
    expect(verbs).toEqual(['MAIL', 'RCPT', 'DATA', 'MAIL', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'DATA']);
    expect(server.connectionCount).toBe(1);
  });

  it('throws a DeliveryError with the reply code for a refused message without failSilently, after sending the earlier ones', async () => {
    const server = await serve(refuseThird);
    const backend = backendFor(server);
    const error = await backend.sendMessages(tenMessages()).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeliveryError);
    expect(error).toBeInstanceOf(MailError);
    expect(error).toMatchObject({ responseCode: 550, command: 'RCPT TO', recipient: 'rcpt2@example.com' });
    expect(server.messages).toHaveLength(2);
    expect(backend.isOpen).toBe(false);
  });

  it('reports a refused sender as rejected and goes on with the next message', async () => {
    const server = await serve({
      onMailFrom: (address) =>
        address === 'blocked@example.com' ? { code: 553, message: 'Sender blocked' } : undefined,
    });
    const backend = backendFor(server);
    await backend.open();
    const blocked = message('blocked');
    blocked.fromEmail = 'blocked@example.com';
    const outcome = await backend.deliver(blocked);
    expect(outcome.error).toMatchObject({ responseCode: 553, command: 'MAIL FROM' });
    expect(outcome.classification).toEqual({ transient: false, reason: 'rejected' });
    expect((await backend.deliver(message('allowed'))).delivered).toBe(true);
    expect(server.connectionCount).toBe(1);
  });

  it('a partial refusal delivers to the other recipient and reports the refused one', async () => {
    const server = await serve({
      onRcpt: (address) =>
        address === 'gone@example.com' ? { code: 550, message: 'Mailbox gone' } : undefined,
    });
    const backend = backendFor(server);
    await backend.open();
    const outcome = await backend.deliver(message('partial', ['gone@example.com', 'here@example.com']));
    expect(outcome.delivered).toBe(true);
    expect(outcome.accepted).toEqual(['here@example.com']);
    expect(outcome.refused).toEqual([
      {
        recipient: 'gone@example.com',
        responseCode: 550,
        response: '550 Mailbox gone',
        transient: false,
        reason: 'rejected',
      },
    ]);
    expect(server.messages[0]?.to).toEqual(['here@example.com']);
  });

  it('sendMessages counts a partially refused message as sent', async () => {
    const server = await serve({
      onRcpt: (address) => (address === 'gone@example.com' ? { code: 550 } : undefined),
    });
    const backend = backendFor(server);
    expect(await backend.sendMessages([message('partial', ['gone@example.com', 'here@example.com'])])).toBe(
      1,
    );
  });

  it('classifies a 4xx refusal as transient', async () => {
    const server = await serve({ onRcpt: () => ({ code: 451, message: 'Try again later' }) });
    const backend = backendFor(server);
    await backend.open();
    const outcome = await backend.deliver(message('deferred'));
    expect(outcome.delivered).toBe(false);
    expect(outcome.classification).toEqual({ transient: true, reason: 'deferred' });
    expect(outcome.refused).toEqual([expect.objectContaining({ responseCode: 451, transient: true })]);
  });

  it('reports a message refused after DATA and goes on with the next one', async () => {
    const server = await serve({
      onData: (received) =>
        received.raw.includes('Subject: spam') ? { code: 554, message: 'Looks like spam' } : undefined,
    });
    const backend = backendFor(server);
    await backend.open();
    const refused = await backend.deliver(message('spam'));
    expect(refused.error).toMatchObject({ responseCode: 554 });
    expect(refused.classification).toEqual({ transient: false, reason: 'rejected' });
    expect((await backend.deliver(message('ham'))).delivered).toBe(true);
    expect(server.connectionCount).toBe(1);
  });

  it('reports a message over the server SIZE limit as too-large and goes on with the next one', async () => {
    const server = await serve({ size: 2000 });
    const backend = backendFor(server);
    await backend.open();
    const big = await backend.deliver(message('big', undefined, { body: `${'x'.repeat(70)}\n`.repeat(100) }));
    expect(big.delivered).toBe(false);
    expect(big.classification).toEqual({ transient: false, reason: 'too-large' });
    expect((await backend.deliver(message('small'))).delivered).toBe(true);
    expect(server.messages.map((received) => received.raw.length < 2000)).toEqual([true]);
    expect(server.connectionCount).toBe(1);
  });

  it('a 421 that closes the connection costs that message only; the rest go over a new connection', async () => {
    const server = await serve({
      onRcpt: (address) => (address === 'rcpt1@example.com' ? { code: 421, message: 'Closing' } : undefined),
    });
    const backend = backendFor(server, { failSilently: true });
    const messages = [0, 1, 2].map((index) => message(`m${index}`, [`rcpt${index}@example.com`]));
    expect(await backend.sendMessages(messages)).toBe(2);
    expect(server.connectionCount).toBe(2);
    expect(backend.isOpen).toBe(false);
  });

  it('reconnects when the server dropped an idle connection', async () => {
    const server = await serve();
    const backend = backendFor(server);
    await backend.open();
    expect((await backend.deliver(message('before drop'))).delivered).toBe(true);
    server.dropConnections();
    await vi.waitFor(() => expect(backend.isOpen).toBe(false));
    expect((await backend.deliver(message('after drop'))).delivered).toBe(true);
    expect(server.connectionCount).toBe(2);
    expect(backend.connectionsOpened).toBe(2);
  });
});

describe('refused connections', () => {
  it('a server that answers the greeting with 554 fails open() with that reply', async () => {
    const server = await serve({ onConnect: () => ({ code: 554, message: 'No SMTP service here' }) });
    const error = await backendFor(server)
      .open()
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeliveryError);
    expect(error).toMatchObject({ responseCode: 554, command: 'CONN' });
  });

  it('a server that answers the greeting with 421 fails open(), and returns 0 with failSilently', async () => {
    const server = await serve({ onConnect: () => ({ code: 421, message: 'Too busy' }) });
    expect(await backendFor(server, { failSilently: true }).sendMessages([message('busy')])).toBe(0);
    const error = await backendFor(server)
      .open()
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ responseCode: 421 });
  });
});

describe('configuration', () => {
  it('reads EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD and EMAIL_TIMEOUT', async () => {
    const server = await serve({ auth: { username: 'u', password: 'p' }, authRequired: true });
    configure({
      EMAIL_HOST: server.host,
      EMAIL_PORT: server.port,
      EMAIL_HOST_USER: 'u',
      EMAIL_HOST_PASSWORD: 'p',
      EMAIL_TIMEOUT: 5,
    });
    const backend = new SmtpBackend({ tlsOptions: {} });
    backends.push(backend);
    expect({
      host: backend.host,
      port: backend.port,
      username: backend.username,
      timeout: backend.timeout,
    }).toEqual({
      host: '127.0.0.1',
      port: server.port,
      username: 'u',
      timeout: 5,
    });
    expect(await backend.sendMessages([message('configured')])).toBe(1);
    expect(server.messages[0]?.user).toBe('u');
  });

  it('EMAIL_USE_SSL with EMAIL_SSL_CERTFILE reads the client certificate from the settings', async () => {
    const server = await serve({ tls: 'implicit', requestClientCertificate: true });
    const { certfile, keyfile } = await clientCertificateFiles();
    configure({
      EMAIL_HOST: server.host,
      EMAIL_PORT: server.port,
      EMAIL_USE_SSL: true,
      EMAIL_SSL_CERTFILE: certfile,
      EMAIL_SSL_KEYFILE: keyfile,
    });
    const backend = new SmtpBackend({ tlsOptions: server.clientOptions.tlsOptions });
    backends.push(backend);
    expect(backend.useSsl).toBe(true);
    expect(await backend.sendMessages([message('settings tls')])).toBe(1);
    expect(server.messages[0]?.clientCertificate).toBe('localhost');
  });

  it('a port outside 1..65535 is a ConfigError at construction', () => {
    expect(() => new SmtpBackend({ port: 70000 })).toThrow(ConfigError);
  });

  it('close() sends QUIT once and connectionsOpened counts the connections opened', async () => {
    const server = await serve();
    const backend = backendFor(server);
    await backend.open();
    await backend.close();
    await backend.close();
    await backend.open();
    await backend.close();
    expect(server.commandCount('QUIT')).toBe(2);
    expect(backend.connectionsOpened).toBe(2);
  });
});

describe('SMTPUTF8 from the headers', () => {
  it('sends SMTPUTF8 for a message whose only UTF-8 address is in a header (Reply-To), and not for an ASCII one', async () => {
    const server = await serve();
    const backend = backendFor(server, { failSilently: true });
    const sent = await backend.sendMessages([
      message('utf8 reply-to', ['to@example.com'], { replyTo: ['jöran@example.com'] }),
      message('ascii'),
    ]);
    expect(sent).toBe(2);
    expect(server.messages.map((received) => received.smtpUtf8)).toEqual([true, false]);
    expect(server.messages[0]?.raw.includes(Buffer.from('Reply-To: jöran@example.com', 'utf8'))).toBe(true);
  });
});
