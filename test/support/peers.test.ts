/** The real SMTP peers (Postfix, aiosmtpd) work as their launchers promise, checked with a bare socket client. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AiosmtpdPeer, startAiosmtpd } from './aiosmtpd.js';
import { type PostfixPeer, startPostfix } from './postfix.js';
import { type SmtpTestServer, startSmtpServer } from './smtp-server.js';
import { waitUntil } from './wait.js';

/** One SMTP reply: its code and the text of each line (without the code and separator). */
interface Reply {
  code: number;
  lines: string[];
}

/**
 * A bare SMTP client over node:net (not mailroom's client, which these peers exist to test): writes
 * exactly what it is told and reads replies one at a time, so a test can pipeline by hand.
 */
class RawClient {
  private pending = '';
  private lines: string[] = [];
  private readonly replies: Reply[] = [];
  private wake: (() => void) | undefined;
  private ended = false;

  private constructor(private socket: Socket | TLSSocket) {
    this.listen(socket);
  }

  /** Connects to 127.0.0.1:port; resolves with the client and the greeting. */
  static async connect(port: number): Promise<{ client: RawClient; greeting: Reply }> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new RawClient(socket);
    return { client, greeting: await client.reply() };
  }

  private listen(socket: Socket | TLSSocket): void {
    socket.on('data', (chunk: Buffer) => {
      this.pending += chunk.toString('latin1');
      for (let end = this.pending.indexOf('\r\n'); end >= 0; end = this.pending.indexOf('\r\n')) {
        const line = this.pending.slice(0, end);
        this.pending = this.pending.slice(end + 2);
        this.lines.push(line.slice(4));
        // RFC 5321 §4.2.1: the last line of a reply has a space (or nothing) after the code.
        if (line[3] !== '-') {
          this.replies.push({ code: Number(line.slice(0, 3)), lines: this.lines });
          this.lines = [];
        }
      }
      this.wake?.();
    });
    const end = () => {
      this.ended = true;
      this.wake?.();
    };
    socket.once('close', end);
    socket.on('error', end);
  }

  /** The next reply; rejects if the connection ends first or nothing comes within `timeoutMs`. */
  async reply(timeoutMs = 5_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.ended) throw new Error('connection closed while waiting for a reply');
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no reply within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.replies.shift()!;
  }

  /** The next `count` replies, in order. */
  async readReplies(count: number, timeoutMs?: number): Promise<Reply[]> {
    const replies: Reply[] = [];
    for (let index = 0; index < count; index++) replies.push(await this.reply(timeoutMs));
    return replies;
  }

  write(data: string): void {
    this.socket.write(data, 'latin1');
  }

  /** Sends one command line and resolves with its reply. */
  command(line: string): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  /** EHLO; resolves with the reply's keywords, upper-cased (`PIPELINING`, `SIZE`, `AUTH`...). */
  async ehlo(): Promise<string[]> {
    const reply = await this.command('EHLO client.test');
    expect(reply.code).toBe(250);
    return reply.lines.slice(1).map((line) => line.split(' ')[0]!.toUpperCase());
  }

  /** STARTTLS, then a TLS handshake that trusts only `ca` and checks the name `localhost`. */
  async startTls(ca: string): Promise<void> {
    expect((await this.command('STARTTLS')).code).toBe(220);
    this.socket.removeAllListeners('data');
    const secure = connectTls({ socket: this.socket, ca, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.listen(secure);
  }

  /** QUIT and close. */
  async quit(): Promise<void> {
    if (!this.ended) await this.command('QUIT').catch(() => undefined);
    this.socket.destroy();
  }
}

/** Live processes whose command line mentions `text`, from /proc. */
function processesMentioning(text: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry) && Number(entry) !== process.pid)
    .filter((entry) => {
      try {
        return readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text) && isAlive(Number(entry));
      } catch {
        return false; // exited while we looked
      }
    })
    .map(Number);
}

/** Whether a process is alive (a zombie is not), from /proc. */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const body = 'Subject: peer test\r\n\r\nHello,\r\n..a line that starts with a dot\r\n';
const unstuffedBody = 'Subject: peer test\r\n\r\nHello,\r\n.a line that starts with a dot\r\n';

describe('startPostfix', () => {
  let sink: SmtpTestServer;
  let postfix: PostfixPeer;

  beforeAll(async () => {
    sink = await startSmtpServer();
    postfix = await startPostfix({
      deliverTo: { host: sink.host, port: sink.port },
      refuseRecipients: [{ pattern: '/^bounce-/', reply: '550 5.1.1 No such user' }],
    });
  });
  afterAll(async () => {
    await postfix?.stop();
    await sink?.close();
  });

  /** Resolves with the message the sink received for `recipient`. */
  async function relayedTo(recipient: string) {
    await waitUntil(
      () => sink.messages.some((message) => message.to.includes(recipient)),
      `a message for ${recipient}`,
      10_000,
    );
    return sink.messages.find((message) => message.to.includes(recipient))!;
  }

  it('greets with 220 and offers PIPELINING, CHUNKING and a 64 MiB SIZE by default', async () => {
    const { client, greeting } = await RawClient.connect(postfix.port);
    try {
      expect(greeting.code).toBe(220);
      const reply = await client.command('EHLO client.test');
      expect(reply.lines).toContain(`SIZE ${64 * 1024 * 1024}`);
      const keywords = reply.lines.slice(1).map((line) => line.split(' ')[0]);
      expect(keywords).toEqual(expect.arrayContaining(['PIPELINING', 'CHUNKING']));
      expect(keywords).not.toContain('STARTTLS');
      expect(postfix.ca).toBeUndefined();
    } finally {
      await client.quit();
    }
  });

  it('relays a message sent with pipelined MAIL, RCPT and DATA to deliverTo', async () => {
    const { client } = await RawClient.connect(postfix.port);
    try {
      await client.ehlo();
      client.write('MAIL FROM:<sender@example.test>\r\nRCPT TO:<pipelined@example.test>\r\nDATA\r\n');
      expect((await client.readReplies(3)).map((reply) => reply.code)).toEqual([250, 250, 354]);
      client.write(`${body}.\r\n`);
      const accepted = await client.reply();
      expect(accepted.code).toBe(250);
      expect(accepted.lines[0]).toMatch(/queued as [0-9A-Z]+/);
    } finally {
      await client.quit();
    }
    const message = await relayedTo('pipelined@example.test');
    expect(message.from).toBe('sender@example.test');
    // Postfix adds its Received: header and changes nothing else.
    expect(message.raw.toString('latin1')).toMatch(/^Received: from client\.test /);
    expect(message.raw.toString('latin1').endsWith(unstuffedBody)).toBe(true);
    expect(await postfix.waitForAccepted(1)).toBeGreaterThanOrEqual(1);
  });

  it('accepts a message sent with pipelined BDAT n LAST', async () => {
    const { client } = await RawClient.connect(postfix.port);
    try {
      await client.ehlo();
      // RFC 3030: BDAT carries the bytes as they are, no dot-stuffing and no terminating dot.
      client.write(
        `MAIL FROM:<sender@example.test>\r\nRCPT TO:<chunked@example.test>\r\nBDAT ${Buffer.byteLength(unstuffedBody)} LAST\r\n${unstuffedBody}`,
      );
      const replies = await client.readReplies(3);
      expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250]);
      expect(replies[2]!.lines[0]).toMatch(new RegExp(`${Buffer.byteLength(unstuffedBody)} bytes queued as`));
    } finally {
      await client.quit();
    }
    const message = await relayedTo('chunked@example.test');
    expect(message.raw.toString('latin1').endsWith(unstuffedBody)).toBe(true);
  });

  it('accepts a 20 MB message by default', async () => {
    const line = `${'QUJD'.repeat(19)}\r\n`; // 78 bytes, like a base64 attachment's lines
    const message = `Subject: big\r\n\r\n${line.repeat(Math.ceil(20_000_000 / line.length))}`;
    const { client } = await RawClient.connect(postfix.port);
    try {
      await client.ehlo();
      client.write(
        `MAIL FROM:<sender@example.test> SIZE=${message.length}\r\nRCPT TO:<big@example.test>\r\nBDAT ${message.length} LAST\r\n`,
      );
      client.write(message);
      // Postfix answers BDAT once the 20 MB are in its queue: give a busy machine time.
      const replies = await client.readReplies(3, 30_000);
      expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250]);
    } finally {
      await client.quit();
    }
  });

  it('refuses a recipient matching refuseRecipients with the configured reply', async () => {
    const { client } = await RawClient.connect(postfix.port);
    try {
      await client.ehlo();
      expect((await client.command('MAIL FROM:<sender@example.test>')).code).toBe(250);
      const refused = await client.command('RCPT TO:<bounce-1@example.test>');
      expect(refused.code).toBe(550);
      expect(refused.lines[0]).toMatch(/^5\.1\.1 .*No such user/);
      expect((await client.command('RCPT TO:<fine@example.test>')).code).toBe(250);
    } finally {
      await client.quit();
    }
  });

  describe('with pipelining and chunking off and starttls on', () => {
    let configured: PostfixPeer;

    beforeAll(async () => {
      configured = await startPostfix({ pipelining: false, chunking: false, starttls: true });
    });
    afterAll(async () => {
      await configured?.stop();
    });

    it('runs beside the other instance, on a port of its own', () => {
      expect(configured.port).not.toBe(postfix.port);
    });

    it('offers neither PIPELINING nor CHUNKING', async () => {
      const { client } = await RawClient.connect(configured.port);
      try {
        const keywords = await client.ehlo();
        expect(keywords).not.toContain('PIPELINING');
        expect(keywords).not.toContain('CHUNKING');
      } finally {
        await client.quit();
      }
    });

    it('offers STARTTLS with a certificate for localhost that peer.ca trusts', async () => {
      const { client } = await RawClient.connect(configured.port);
      try {
        expect(await client.ehlo()).toContain('STARTTLS');
        await client.startTls(configured.ca!);
        expect(await client.ehlo()).not.toContain('STARTTLS');
        expect((await client.command('MAIL FROM:<sender@example.test>')).code).toBe(250);
      } finally {
        await client.quit();
      }
    });
  });

  it('refuses options it cannot turn into configuration, before starting anything', async () => {
    await expect(
      startPostfix({ refuseRecipients: [{ pattern: '^bounce-', reply: '550 No' }] }),
    ).rejects.toThrow('refuseRecipients pattern "^bounce-" is not a /regexp/ of one line');
    await expect(
      startPostfix({ refuseRecipients: [{ pattern: '/^bounce-/', reply: 'No such user' }] }),
    ).rejects.toThrow('refuseRecipients reply "No such user" is not "4xx text" or "5xx text"');
  });

  it('stop() ends every process of the instance and removes its directory', async () => {
    const other = await startPostfix();
    // postlogd writes the log a moment after the fact (later still on a busy machine).
    const started = /postfix\/master\[\d+\]: daemon started/;
    await waitUntil(async () => started.test(await other.log()), 'the master to log its start', 15_000);
    const processes = other.processIds();
    expect(processes.length).toBeGreaterThanOrEqual(2); // master, qmgr, smtpd...
    expect(processesMentioning(other.directory).length).toBeGreaterThanOrEqual(2); // master, its guard
    await other.stop();
    expect(processes.filter(isAlive)).toEqual([]);
    expect(other.processIds()).toEqual([]);
    expect(processesMentioning(other.directory)).toEqual([]);
    expect(existsSync(other.directory)).toBe(false);
    // The log outlives the directory.
    expect(await other.log()).toMatch(started);
  });
});

describe('startAiosmtpd', () => {
  let peer: AiosmtpdPeer;

  beforeAll(async () => {
    peer = await startAiosmtpd({
      refuseRecipients: [{ prefix: 'bounce-', code: 550, message: '5.1.1 No such user' }],
    });
  });
  afterAll(async () => {
    await peer?.stop();
  });

  it('greets with 220 and offers SMTPUTF8 but neither PIPELINING, CHUNKING, STARTTLS nor AUTH by default', async () => {
    const { client, greeting } = await RawClient.connect(peer.port);
    try {
      expect(greeting.code).toBe(220);
      const keywords = await client.ehlo();
      expect(keywords).toEqual(expect.arrayContaining(['SIZE', '8BITMIME', 'SMTPUTF8']));
      for (const absent of ['PIPELINING', 'CHUNKING', 'STARTTLS', 'AUTH'])
        expect(keywords).not.toContain(absent);
    } finally {
      await client.quit();
    }
  });

  it('reports a message sent through DATA with its envelope, parameters and unstuffed bytes', async () => {
    const { client } = await RawClient.connect(peer.port);
    try {
      await client.ehlo();
      expect((await client.command('MAIL FROM:<sender@example.test> BODY=8BITMIME')).code).toBe(250);
      expect((await client.command('RCPT TO:<one@example.test>')).code).toBe(250);
      expect((await client.command('DATA')).code).toBe(354);
      client.write(`${body}.\r\n`);
      expect((await client.reply()).code).toBe(250);
    } finally {
      await client.quit();
    }
    const [message] = await peer.waitForMessages(1);
    expect(message).toEqual({
      from: 'sender@example.test',
      to: ['one@example.test'],
      mailOptions: ['BODY=8BITMIME'],
      rcptOptions: [],
      raw: Buffer.from(unstuffedBody, 'latin1'),
      secure: false,
      user: undefined,
    });
  });

  it('refuses a recipient matching refuseRecipients with the configured reply', async () => {
    const { client } = await RawClient.connect(peer.port);
    try {
      await client.ehlo();
      expect((await client.command('MAIL FROM:<sender@example.test>')).code).toBe(250);
      expect(await client.command('RCPT TO:<bounce-2@example.test>')).toEqual({
        code: 550,
        lines: ['5.1.1 No such user'],
      });
      expect((await client.command('RCPT TO:<fine@example.test>')).code).toBe(250);
    } finally {
      await client.quit();
    }
  });

  it('authenticates after STARTTLS trusted through peer.ca, and reports the user and TLS', async () => {
    const secure = await startAiosmtpd({
      auth: { username: 'mailroom', password: 's3cret' },
      starttls: true,
    });
    try {
      const { client } = await RawClient.connect(secure.port);
      try {
        expect(await client.ehlo()).toEqual(expect.arrayContaining(['STARTTLS', 'AUTH']));
        await client.startTls(secure.ca!);
        await client.ehlo();
        const wrong = Buffer.from('\0mailroom\0wrong').toString('base64');
        expect((await client.command(`AUTH PLAIN ${wrong}`)).code).toBe(535);
        const right = Buffer.from('\0mailroom\0s3cret').toString('base64');
        expect((await client.command(`AUTH PLAIN ${right}`)).code).toBe(235);
        expect((await client.command('MAIL FROM:<sender@example.test>')).code).toBe(250);
        expect((await client.command('RCPT TO:<two@example.test>')).code).toBe(250);
        expect((await client.command('DATA')).code).toBe(354);
        client.write(`${body}.\r\n`);
        expect((await client.reply()).code).toBe(250);
      } finally {
        await client.quit();
      }
      const [message] = await secure.waitForMessages(1);
      expect(message).toMatchObject({ to: ['two@example.test'], secure: true, user: 'mailroom' });
    } finally {
      await secure.stop();
    }
  });

  it('stop() ends the Python process', async () => {
    const other = await startAiosmtpd();
    expect(isAlive(other.pid)).toBe(true);
    await other.stop();
    expect(isAlive(other.pid)).toBe(false);
  });
});
