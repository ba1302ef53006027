/** The SMTP engine under faults, in BDAT, DATA and lock-step mode: the outcomes it reports match what the server really did. */
import {
  DeliveryError,
  type DeliveryOutcome,
  EmailMessage,
  SmtpBackend,
  type SmtpMessageTransaction,
  SmtpSession,
  type StreamResult,
} from '@mailroom/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type ScriptedAction,
  type ScriptedEvent,
  type ScriptedHook,
  type ScriptedServer,
  type ScriptedServerOptions,
  startScriptedServer,
} from '../../../test/support/scripted-smtp.js';

/** How the server lets the client pipeline, and which event carries a message's final reply. */
interface Mode {
  name: string;
  extensions: string[];
  /** The scripted event answered with the message's final reply: BDAT (after its bytes) or `.` (end of DATA). */
  final: 'BDAT' | '.';
}

const BDAT_MODE: Mode = {
  name: 'BDAT mode (PIPELINING + CHUNKING)',
  extensions: ['PIPELINING', 'CHUNKING', '8BITMIME'],
  final: 'BDAT',
};
const DATA_MODE: Mode = {
  name: 'DATA mode (PIPELINING only)',
  extensions: ['PIPELINING', '8BITMIME'],
  final: '.',
};
const LOCKSTEP_MODE: Mode = {
  name: 'lock-step (neither)',
  extensions: ['8BITMIME'],
  final: '.',
};
const MODES = [BDAT_MODE, DATA_MODE, LOCKSTEP_MODE];

const servers: ScriptedServer[] = [];
const sessions: SmtpSession[] = [];
const backends: SmtpBackend[] = [];

afterEach(async () => {
  for (const session of sessions.splice(0)) session.destroy();
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function serve(mode: Mode, options: ScriptedServerOptions = {}): Promise<ScriptedServer> {
  const server = await startScriptedServer({ extensions: mode.extensions, ...options });
  servers.push(server);
  return server;
}

async function connect(server: ScriptedServer, timeout = 10_000): Promise<SmtpSession> {
  const session = await SmtpSession.connect({
    host: server.host,
    port: server.port,
    timeout,
    clientName: 'client.test',
  });
  sessions.push(session);
  return session;
}

const sender = (seq: number) => `sender-${seq}@example.com`;
const rcpt = (seq: number, index?: number) =>
  index === undefined ? `rcpt-${seq}@example.com` : `rcpt-${seq}.${index}@example.com`;

/** Message `seq`: its own sender and recipient(s), and an `X-Seq` header that names it in the server's record. */
function transaction(
  seq: number,
  to: string[] = [rcpt(seq)],
  body = `Body of message ${seq}\r\n`,
): SmtpMessageTransaction<number> {
  return {
    item: seq,
    envelope: { from: sender(seq), to },
    bytes: Buffer.from(`X-Seq: ${seq}\r\nSubject: message ${seq}\r\n\r\n${body}`, 'latin1'),
  };
}

/** The sequence number a message, a MAIL/RCPT address or raw bytes carry; undefined when none. */
function seqOf(value: Buffer | string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (Buffer.isBuffer(value)) {
    const match = /^X-Seq: (\d+)/m.exec(value.toString('latin1'));
    return match ? Number(match[1]) : undefined;
  }
  const match = /-(\d+)(?:\.\d+)?@/.exec(value);
  return match ? Number(match[1]) : undefined;
}

/** The message a scripted event is about: MAIL/RCPT by address, the final reply by its bytes. */
function eventSeq(event: ScriptedEvent): number | undefined {
  if (event.message) return seqOf(event.message.raw);
  if (event.verb === 'MAIL' || event.verb === 'RCPT') return seqOf(event.address);
  return undefined;
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, index) => from + index);
const ascending = (values: Iterable<number>) => [...values].sort((a, b) => a - b);

/** What one stream did, as the caller saw it. */
interface Run {
  result: StreamResult<number>;
  /** Outcome of each settled message. */
  outcomes: Map<number, DeliveryOutcome>;
  /** Every settle call, in order (a message twice here is a bug). */
  settleCalls: number[];
  /** Every message the source handed out. */
  taken: number[];
}

async function stream(
  session: SmtpSession,
  messages: SmtpMessageTransaction<number>[],
  window: number,
): Promise<Run> {
  const outcomes = new Map<number, DeliveryOutcome>();
  const settleCalls: number[] = [];
  const taken: number[] = [];
  let index = 0;
  const result = await session.stream<number>(
    () => {
      const next = messages[index++];
      if (next) taken.push(next.item);
      return next;
    },
    (item, outcome) => {
      settleCalls.push(item);
      outcomes.set(item, outcome);
    },
    window,
  );
  return { result, outcomes, settleCalls, taken };
}

const deliveredSeqs = (run: Run) =>
  ascending([...run.outcomes].filter(([, outcome]) => outcome.delivered).map(([seq]) => seq));
const acceptedSeqs = (server: ScriptedServer) =>
  server.accepted.map((message) => seqOf(message.raw) ?? Number.NaN);

/**
 * The invariants every run keeps, whatever the fault: each message taken is settled exactly once or
 * comes back unsent (never both); the server accepted each message at most once, with the envelope
 * it was sent with; the delivered set is exactly the set the server accepted; every other message
 * not listed in `refused` is a transient failure (so it will be sent again).
 */
function expectExact(run: Run, server: ScriptedServer, refused: readonly number[] = []): void {
  expect(run.settleCalls, 'settle called twice for a message').toHaveLength(new Set(run.settleCalls).size);
  expect(
    run.result.unsent.filter((seq) => run.settleCalls.includes(seq)),
    'settled AND unsent',
  ).toEqual([]);
  expect(
    ascending([...run.settleCalls, ...run.result.unsent]),
    'taken but neither settled nor unsent',
  ).toEqual(ascending(run.taken));
  const accepted = acceptedSeqs(server);
  expect(accepted, 'the server accepted a message twice').toHaveLength(new Set(accepted).size);
  expect(deliveredSeqs(run), 'delivered set != set the server accepted').toEqual(ascending(accepted));
  for (const message of server.accepted) {
    const seq = seqOf(message.raw) ?? Number.NaN;
    expect(message.from, `envelope sender of message ${seq}`).toBe(sender(seq));
  }
  for (const [seq, outcome] of run.outcomes) {
    if (outcome.delivered || refused.includes(seq)) continue;
    expect(outcome.classification?.transient, `message ${seq}: ${outcome.error?.message}`).toBe(true);
  }
}

/**
 * What a run can promise when the server broke the protocol and the client gave the connection up:
 * each message settled once or unsent, and none reported delivered that the server did not accept.
 * (The server may have accepted more: messages already on the wire when the client stopped reading.)
 */
function expectSound(run: Run, server: ScriptedServer): void {
  expect(run.settleCalls, 'settle called twice for a message').toHaveLength(new Set(run.settleCalls).size);
  expect(
    run.result.unsent.filter((seq) => run.settleCalls.includes(seq)),
    'settled AND unsent',
  ).toEqual([]);
  expect(
    ascending([...run.settleCalls, ...run.result.unsent]),
    'taken but neither settled nor unsent',
  ).toEqual(ascending(run.taken));
  const accepted = new Set(acceptedSeqs(server));
  for (const seq of deliveredSeqs(run)) {
    expect(accepted.has(seq), `message ${seq} reported delivered, never accepted`).toBe(true);
  }
}

/** Resolves with the error that fails the session from now on; rejects if it has not failed within 5 s. */
function sessionFailure(session: SmtpSession): Promise<Error> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the session did not fail within 5 s')), 5000);
    session.onFailure((error) => {
      clearTimeout(timer);
      resolve(error);
    });
  });
}

describe.each(MODES)('$name', (mode) => {
  // ---- 1. Refused recipients in the middle of a window ------------------------------------------

  describe('a refused RCPT in the middle of a window', () => {
    const refuseGone: ScriptedHook = (event) =>
      event.verb === 'RCPT' && event.address?.startsWith('gone-')
        ? { reply: '550 5.1.1 No such user' }
        : undefined;
    const eight = () =>
      range(1, 8).map((seq) =>
        seq === 3
          ? transaction(seq, ['gone-3@example.com'])
          : seq === 6
            ? transaction(seq, ['gone-6@example.com', rcpt(6)])
            : transaction(seq),
      );

    it.each([8, 1])(
      'window %i: exactly the refused recipients fail, the others are delivered, over one connection',
      async (window) => {
        const server = await serve(mode, { onCommand: refuseGone });
        const session = await connect(server);
        const run = await stream(session, eight(), window);

        expect(run.result.error).toBeUndefined();
        expect(deliveredSeqs(run)).toEqual([1, 2, 4, 5, 6, 7, 8]);
        const third = run.outcomes.get(3)!;
        expect(third.error).toMatchObject({
          responseCode: 550,
          command: 'RCPT TO',
          recipient: 'gone-3@example.com',
        });
        expect(third.classification).toEqual({ transient: false, reason: 'rejected' });
        expect(third.refused).toEqual([
          expect.objectContaining({ recipient: 'gone-3@example.com', responseCode: 550, transient: false }),
        ]);
        const sixth = run.outcomes.get(6)!;
        expect(sixth.accepted).toEqual([rcpt(6)]);
        expect(sixth.refused).toEqual([
          {
            recipient: 'gone-6@example.com',
            responseCode: 550,
            response: '550 5.1.1 No such user',
            transient: false,
            reason: 'rejected',
          },
        ]);
        for (const seq of [1, 2, 4, 5, 7, 8])
          expect(run.outcomes.get(seq)).toMatchObject({ accepted: [rcpt(seq)], refused: [] });
        expectExact(run, server, [3]);
        // Each delivered message reached exactly its own recipients, under its own sender.
        expect(server.accepted.map((message) => [seqOf(message.raw), message.from, message.to])).toEqual(
          [1, 2, 4, 5, 6, 7, 8].map((seq) => [seq, sender(seq), [rcpt(seq)]]),
        );
        expect(server.connectionCount).toBe(1);
        expect(session.closed).toBe(false);
      },
    );
  });

  // ---- 2. 452 4.5.3 too many recipients ----------------------------------------------------------

  describe('452 4.5.3 too many recipients', () => {
    /** A server that takes at most `limit` recipients per transaction and says 452 4.5.3 to the rest. */
    const limitRecipients =
      (limit: number): ScriptedHook =>
      (event) =>
        event.verb === 'RCPT' && event.transaction && event.transaction.to.length >= limit
          ? { reply: '452 4.5.3 Error: too many recipients' }
          : undefined;

    it.each([
      { limit: 2, window: 8 },
      { limit: 2, window: 1 },
      { limit: 1, window: 8 },
    ])(
      'limit $limit, window $window: the rest go in follow-up transactions on the same connection, each recipient once',
      async ({ limit, window }) => {
        const server = await serve(mode, { onCommand: limitRecipients(limit) });
        const session = await connect(server);
        const recipients = (seq: number) => range(1, 5).map((index) => rcpt(seq, index));
        const messages = range(1, 8).map((seq) => transaction(seq, recipients(seq)));
        const run = await stream(session, messages, window);

        expect(run.result.error).toBeUndefined();
        expect(run.settleCalls).toHaveLength(8);
        for (const seq of range(1, 8)) {
          const outcome = run.outcomes.get(seq)!;
          expect(outcome.delivered, `message ${seq}`).toBe(true);
          expect(
            ascending(outcome.accepted.map((address) => Number(address.split('.')[1]?.split('@')[0]))),
          ).toEqual(range(1, 5));
          expect(outcome.refused, `message ${seq}`).toEqual([]);
        }
        // Every (message, recipient) pair reached the server exactly once, with the message's own bytes.
        const deliveries = server.accepted.flatMap((message) =>
          message.to.map((to) => `${seqOf(message.raw)} ${to}`),
        );
        expect(deliveries.sort()).toEqual(
          range(1, 8)
            .flatMap((seq) => recipients(seq).map((to) => `${seq} ${to}`))
            .sort(),
        );
        for (const message of server.accepted) {
          const seq = seqOf(message.raw)!;
          expect(message.raw.equals(messages[seq - 1]!.bytes), `bytes of message ${seq}`).toBe(true);
          expect(message.from).toBe(sender(seq));
          expect(message.to.length).toBeLessThanOrEqual(limit);
        }
        expect(server.accepted).toHaveLength(8 * Math.ceil(5 / limit));
        expect(server.connectionCount).toBe(1);
      },
    );
  });

  // ---- 3. 552 message too large -------------------------------------------------------------------

  describe('552 message too large', () => {
    it.each([8, 1])(
      'window %i: a 552 to one message fails only that one, permanently, as too-large',
      async (window) => {
        const server = await serve(mode, {
          onCommand: (event) =>
            event.verb === mode.final && eventSeq(event) === 5
              ? { reply: '552 5.3.4 Message size exceeds fixed limit' }
              : undefined,
        });
        const session = await connect(server);
        const run = await stream(
          session,
          range(1, 8).map((seq) => transaction(seq)),
          window,
        );

        expect(run.result.error).toBeUndefined();
        expect(deliveredSeqs(run)).toEqual([1, 2, 3, 4, 6, 7, 8]);
        const fifth = run.outcomes.get(5)!;
        expect(fifth.error).toMatchObject({ responseCode: 552 });
        expect(fifth.classification).toEqual({ transient: false, reason: 'too-large' });
        expectExact(run, server, [5]);
        expect(server.received.map((message) => seqOf(message.raw))).toEqual(range(1, 8));
        expect(server.connectionCount).toBe(1);
      },
    );

    it('a message over the advertised SIZE is refused locally, never sent, and the others go with SIZE=', async () => {
      const server = await serve({ ...mode, extensions: [...mode.extensions, 'SIZE 400'] });
      const session = await connect(server);
      const messages = range(1, 8).map((seq) =>
        seq === 4 ? transaction(seq, undefined, `${'x'.repeat(70)}\r\n`.repeat(10)) : transaction(seq),
      );
      const run = await stream(session, messages, 8);

      expect(run.result.error).toBeUndefined();
      const fourth = run.outcomes.get(4)!;
      expect(fourth.delivered).toBe(false);
      expect(fourth.error).toMatchObject({ code: 'EMESSAGE' });
      expect(fourth.error?.message).toContain('400');
      expect(fourth.classification).toEqual({ transient: false, reason: 'too-large' });
      expect(deliveredSeqs(run)).toEqual([1, 2, 3, 5, 6, 7, 8]);
      expectExact(run, server, [4]);
      const mails = server.commands.filter((command) => command.verb === 'MAIL');
      expect(mails.map((command) => seqOf(command.line))).toEqual([1, 2, 3, 5, 6, 7, 8]);
      for (const command of mails) {
        const seq = seqOf(command.line)!;
        expect(command.line).toContain(` SIZE=${messages[seq - 1]!.bytes.length}`);
      }
    });
  });

  // ---- 4. The connection dropped after the k-th message ----------------------------------------

  describe('the server drops the connection after the k-th message', () => {
    const ks = range(0, 8);
    /**
     * Where the server closes (gracefully: FIN after its last reply, so the client reads every reply
     * written): before answering message k+1's MAIL; right after writing message k's 250; or before
     * answering message k+1's data, which it holds in full.
     */
    const points = {
      'before the MAIL of message k+1':
        (k: number) =>
        (event: ScriptedEvent): ScriptedAction | undefined =>
          event.verb === 'MAIL' && eventSeq(event) === k + 1 ? { reply: null, close: 'end' } : undefined,
      'right after the 250 of message k':
        (k: number) =>
        (event: ScriptedEvent): ScriptedAction | undefined =>
          k === 0
            ? event.verb === 'MAIL'
              ? { reply: null, close: 'end' }
              : undefined
            : event.verb === mode.final && eventSeq(event) === k
              ? { close: 'end' }
              : undefined,
      'before the final reply of message k+1':
        (k: number) =>
        (event: ScriptedEvent): ScriptedAction | undefined =>
          event.verb === mode.final && eventSeq(event) === k + 1 ? { reply: null, close: 'end' } : undefined,
    };

    for (const window of [8, 1]) {
      for (const [point, script] of Object.entries(points)) {
        it(`window ${window}, ${point}, for every k from 0 to 8: delivered == accepted, the rest transient or unsent, each settled once`, async () => {
          for (const k of ks) {
            const server = await serve(mode, { onCommand: script(k) });
            const session = await connect(server);
            const run = await stream(
              session,
              range(1, 12).map((seq) => transaction(seq)),
              window,
            );

            expect(run.result.error, `k=${k}`).toBeInstanceOf(DeliveryError);
            expect((run.result.error as DeliveryError).code, `k=${k}`).toBe('ECONNECTION');
            expect(deliveredSeqs(run), `k=${k}`).toEqual(range(1, k));
            expectExact(run, server);
            for (const [seq, outcome] of run.outcomes) {
              if (!outcome.delivered)
                expect(outcome.classification, `k=${k}, message ${seq}`).toEqual({
                  transient: true,
                  reason: 'connection',
                });
            }
            expect(session.closed).toBe(true);
            await server.close();
          }
        });
      }
    }

    it('deliverStream settles what it wrote, hands back what it took but never wrote, and closes the backend', async () => {
      const server = await serve(mode, { onCommand: points['before the MAIL of message k+1'](3) });
      const backend = new SmtpBackend({ host: server.host, port: server.port, timeout: 10 });
      backends.push(backend);
      const messages = range(1, 12).map(
        (seq) =>
          new EmailMessage({
            subject: `message ${seq}`,
            body: 'body',
            fromEmail: sender(seq),
            to: [rcpt(seq)],
            headers: { 'X-Seq': String(seq) },
          }),
      );
      let next = 0;
      const taken: number[] = [];
      const settled = new Map<number, DeliveryOutcome>();
      const result = await backend.deliverStream(
        () => {
          const message = messages[next++];
          if (!message) return undefined;
          taken.push(next);
          return { message };
        },
        (item, outcome) => {
          const seq = Number(item.message.extraHeaders['X-Seq']);
          expect(settled.has(seq), `message ${seq} settled twice`).toBe(false);
          settled.set(seq, outcome);
        },
        { window: 8 },
      );
      expect(result.error).toMatchObject({ code: 'ECONNECTION' });
      const unsent = result.unsent.map((item) => Number(item.message.extraHeaders['X-Seq']));
      expect(ascending([...settled.keys(), ...unsent])).toEqual(ascending(taken));
      expect(ascending([...settled].filter(([, outcome]) => outcome.delivered).map(([seq]) => seq))).toEqual([
        1, 2, 3,
      ]);
      expect(ascending(acceptedSeqs(server))).toEqual([1, 2, 3]);
      if (mode === DATA_MODE) expect(unsent.length).toBeGreaterThan(0);
      expect(backend.isOpen).toBe(false);
    });
  });

  // ---- 5. 421 mid-window ------------------------------------------------------------------------

  describe('421 in the middle of a window', () => {
    const commands =
      mode === BDAT_MODE ? (['MAIL', 'RCPT', 'BDAT'] as const) : (['MAIL', 'RCPT', 'DATA', '.'] as const);
    for (const window of [8, 1]) {
      for (const verb of commands) {
        it(`window ${window}: a 421 as the reply to message k's ${verb}, for every k from 1 to 8, costs messages k and later only`, async () => {
          for (const k of range(1, 8)) {
            const server = await serve(mode, {
              onCommand: (event) => {
                const seq = event.verb === 'DATA' ? seqOf(event.transaction?.from) : eventSeq(event);
                return event.verb === verb && seq === k
                  ? { reply: '421 4.3.2 Service shutting down', close: 'end' }
                  : undefined;
              },
            });
            const session = await connect(server);
            const run = await stream(
              session,
              range(1, 12).map((seq) => transaction(seq)),
              window,
            );

            expect(run.result.error, `k=${k}`).toMatchObject({ code: 'ECONNECTION' });
            expect(deliveredSeqs(run), `k=${k}`).toEqual(range(1, k - 1));
            const kth = run.outcomes.get(k);
            expect(kth?.delivered, `k=${k}`).toBe(false);
            expect(kth?.classification?.transient, `k=${k}`).toBe(true);
            expectExact(run, server);
            await server.close();
          }
        });
      }
    }
  });

  // ---- 6. Reply timeout ------------------------------------------------------------------------

  describe('a server that stops answering mid-window', () => {
    it.each([
      { at: 'the final reply of message 4', verb: mode.final },
      { at: 'the MAIL of message 4', verb: 'MAIL' },
    ])(
      'at $at: the stream ends with a timeout error, and the delivered set is exactly messages 1 to 3',
      async ({ verb }) => {
        const server = await serve(mode, {
          onCommand: (event) => (event.verb === verb && eventSeq(event) === 4 ? { hang: true } : undefined),
        });
        const session = await connect(server, 300);
        const run = await stream(
          session,
          range(1, 12).map((seq) => transaction(seq)),
          8,
        );

        expect(run.result.error).toMatchObject({ code: 'ETIMEDOUT' });
        expect(deliveredSeqs(run)).toEqual([1, 2, 3]);
        expectExact(run, server);
        for (const [seq, outcome] of run.outcomes) {
          if (!outcome.delivered)
            expect(outcome.classification, `message ${seq}`).toEqual({ transient: true, reason: 'timeout' });
        }
      },
    );
  });

  // ---- 7. Servers out of spec -------------------------------------------------------------------

  /*
   * What the engine can and cannot guarantee when a server sends replies nobody asked for.
   *
   * SMTP replies name no command: a pipelining client matches them to its commands by order alone
   * (RFC 2920 §3.1). An extra reply (unsolicited, or a second reply to one command) is therefore
   * indistinguishable from the reply to the next command still waiting, and is taken as such.
   *
   * Guaranteed:
   * - an extra reply that arrives while no command waits fails the connection at once (EPROTOCOL, or
   *   ECONNECTION for a 421), before anything else is written;
   * - a malformed line, or a multi-line reply whose code changes, fails the connection at once;
   * - once the connection failed, no message still waiting is reported delivered;
   * - every message is settled exactly once (or handed back unsent), whatever the replies.
   *
   * Not guaranteed: between an extra reply inside a window and the moment it is noticed (a reply
   * with no command left, or a code impossible for its command), replies are matched off by one. A
   * message can then be reported delivered on its RCPT's 250 although the server later refuses its
   * data, or reported failed although the server accepted it. A reply code the command cannot have
   * (354 to anything but DATA, 2yz to DATA) reveals the shift and must fail the connection; a
   * plausible code (250 where 250 was expected) never reveals it.
   */
  describe('servers out of spec', () => {
    it('an unsolicited reply while idle fails the connection with a protocol error, and nothing is sent', async () => {
      const server = await serve(mode);
      const session = await connect(server);
      const failed = sessionFailure(session);
      server.write(1, '250 2.0.0 Nobody asked\r\n');
      expect(await failed).toMatchObject({ code: 'EPROTOCOL' });
      const run = await stream(
        session,
        range(1, 3).map((seq) => transaction(seq)),
        8,
      );
      expect(run.result.error).toMatchObject({ code: 'EPROTOCOL' });
      expect(run.taken).toEqual([]);
      expect(server.commandCount('MAIL')).toBe(0);
    });

    it('an unsolicited 421 while idle fails the connection as closed by the server', async () => {
      const server = await serve(mode);
      const session = await connect(server);
      const failed = sessionFailure(session);
      server.write(1, '421 4.3.2 Shutting down\r\n');
      expect(await failed).toMatchObject({ code: 'ECONNECTION', responseCode: 421 });
      expect(session.closed).toBe(true);
    });

    it.each([
      { what: 'a garbage reply line', reply: 'hello, this is not SMTP' },
      {
        what: 'a reply code change inside a multi-line reply',
        reply: '250-2.1.0 first line\r\n550 5.0.0 second line',
      },
      { what: 'a line without a code', reply: '2.1.0 Ok' },
    ])(
      '$what to the MAIL of message 3 fails the connection (EPROTOCOL); the messages before it delivered, none unaccepted',
      async ({ reply }) => {
        const server = await serve(mode, {
          // The delay lets the replies before it arrive on their own, so this test is about the bad line alone.
          onCommand: (event) =>
            event.verb === 'MAIL' && eventSeq(event) === 3 ? { reply, delayMs: 50 } : undefined,
        });
        const session = await connect(server);
        const run = await stream(
          session,
          range(1, 8).map((seq) => transaction(seq)),
          8,
        );

        expect(run.result.error).toMatchObject({ code: 'EPROTOCOL' });
        expect(deliveredSeqs(run)).toEqual([1, 2]);
        expectSound(run, server);
        expect(session.closed).toBe(true);
      },
    );

    it('replies completed before a malformed line in the same read still count: a 250 followed by garbage in one segment', async () => {
      const server = await serve(mode, {
        onCommand: (event) =>
          event.verb === mode.final && eventSeq(event) === 2
            ? { reply: '250 2.0.0 Ok: queued\r\nthis line is garbage' }
            : undefined,
      });
      const session = await connect(server);
      const run = await stream(
        session,
        range(1, 8).map((seq) => transaction(seq)),
        8,
      );

      expect(run.result.error).toMatchObject({ code: 'EPROTOCOL' });
      expect(acceptedSeqs(server).slice(0, 2)).toEqual([1, 2]);
      // The server accepted message 2 and said so before the garbage: reporting it failed means sending it twice.
      expect(deliveredSeqs(run)).toEqual([1, 2]);
      expectSound(run, server);
    });

    it('two replies to the last command of the stream: every message delivered as accepted, then the connection fails (EPROTOCOL)', async () => {
      const server = await serve(mode, {
        onCommand: (event) =>
          event.verb === mode.final && eventSeq(event) === 8
            ? { reply: '250 2.0.0 Ok: queued\r\n250 2.0.0 Ok: again' }
            : undefined,
      });
      const session = await connect(server);
      const failed = sessionFailure(session);
      const run = await stream(
        session,
        range(1, 8).map((seq) => transaction(seq)),
        8,
      );

      expect(await failed).toMatchObject({ code: 'EPROTOCOL' });
      expect(deliveredSeqs(run)).toEqual(range(1, 8));
      expectExact(run, server);
    });

    it('two replies to the MAIL of message 3 mid-window: the connection fails (EPROTOCOL), no message reported delivered that the server did not accept', async () => {
      const server = await serve(mode, {
        onCommand: (event) =>
          event.verb === 'MAIL' && eventSeq(event) === 3
            ? { reply: '250 2.1.0 Ok\r\n250 2.1.0 Ok' }
            : undefined,
      });
      const session = await connect(server);
      const failed = sessionFailure(session);
      const run = await stream(
        session,
        range(1, 8).map((seq) => transaction(seq)),
        8,
      );

      expect(await failed).toMatchObject({ code: 'EPROTOCOL' });
      expect(deliveredSeqs(run)).toEqual(expect.arrayContaining([1, 2]));
      expectSound(run, server);
    });

    if (mode === BDAT_MODE) {
      it('a 354 to BDAT fails the connection with a protocol error (the server may be reading DATA: nothing more may be written)', async () => {
        const server = await serve(mode, {
          onCommand: (event) =>
            event.verb === 'BDAT' && eventSeq(event) === 3 ? { reply: '354 Go ahead' } : undefined,
        });
        const session = await connect(server);
        const run = await stream(
          session,
          range(1, 12).map((seq) => transaction(seq)),
          8,
        );

        expect(run.result.error).toMatchObject({ code: 'EPROTOCOL' });
        expect(run.outcomes.get(3)?.delivered).toBe(false);
        expect(deliveredSeqs(run)).toEqual([1, 2]);
        expect(session.closed).toBe(true);
        expectSound(run, server);
        // Nothing was written after the 354 arrived: no RSET, no message beyond the first window.
        expect(server.commandCount('RSET')).toBe(0);
        expect(server.commandCount('MAIL')).toBeLessThanOrEqual(8 + 2);
      });
    }

    if (mode !== BDAT_MODE) {
      it('a 2yz reply to DATA (which must be 354 or a refusal) sends no message data and delivers nothing unaccepted', async () => {
        const server = await serve(mode, {
          onCommand: (event) =>
            event.verb === 'DATA' && seqOf(event.transaction?.from) === 3
              ? { reply: '250 2.0.0 Ok' }
              : undefined,
        });
        const session = await connect(server);
        const run = await stream(
          session,
          range(1, 6).map((seq) => transaction(seq)),
          8,
        );

        expect(run.outcomes.get(3)?.delivered).toBe(false);
        expect(server.received.map((message) => seqOf(message.raw))).not.toContain(3);
        expectExact(run, server, [3]);
      });
    }
  });

  // ---- 8. RSET only where needed ------------------------------------------------------------------

  describe('RSET only where needed', () => {
    it.each([8, 1])('window %i: a clean run sends no RSET', async (window) => {
      const server = await serve(mode);
      const session = await connect(server);
      const run = await stream(
        session,
        range(1, 10).map((seq) => transaction(seq)),
        window,
      );
      expect(deliveredSeqs(run)).toEqual(range(1, 10));
      expect(server.commandCount('RSET')).toBe(0);
    });

    it('a refused sender needs no RSET: the next message follows at once', async () => {
      const server = await serve(mode, {
        onCommand: (event) =>
          event.verb === 'MAIL' && eventSeq(event) === 3 ? { reply: '553 5.7.1 Sender refused' } : undefined,
      });
      const session = await connect(server);
      const run = await stream(
        session,
        range(1, 6).map((seq) => transaction(seq)),
        mode === BDAT_MODE ? 1 : 8,
      );
      expect(run.outcomes.get(3)?.error).toMatchObject({ responseCode: 553, command: 'MAIL FROM' });
      expect(deliveredSeqs(run)).toEqual([1, 2, 4, 5, 6]);
      expect(server.commandCount('RSET')).toBe(0);
    });

    it('after a message whose MAIL was accepted but every RCPT refused: exactly one RSET, right before the next MAIL, and the rest delivered', async () => {
      const server = await serve(mode, {
        onCommand: (event) =>
          event.verb === 'RCPT' && eventSeq(event) === 3 ? { reply: '550 5.1.1 No such user' } : undefined,
      });
      const session = await connect(server);
      // BDAT: with a window, the next messages are on the wire before the refusal is known; window 1 shows the rule.
      const run = await stream(
        session,
        range(1, 6).map((seq) => transaction(seq)),
        mode === BDAT_MODE ? 1 : 8,
      );

      expect(deliveredSeqs(run)).toEqual([1, 2, 4, 5, 6]);
      expect(run.outcomes.get(3)?.classification).toEqual({ transient: false, reason: 'rejected' });
      expectExact(run, server, [3]);
      const verbs = server.commands.map((command) => command.verb).filter((verb) => verb !== 'EHLO');
      expect(verbs.filter((verb) => verb === 'RSET')).toHaveLength(1);
      const rset = verbs.indexOf('RSET');
      expect(verbs[rset + 1]).toBe('MAIL');
      expect(seqOf(server.commands.filter((command) => command.verb === 'MAIL')[3]?.line)).toBe(4);
      expect(verbs.slice(0, rset).filter((verb) => verb === 'MAIL')).toHaveLength(3);
    });
  });

  // ---- 9. sendMessages(): Django's contract over the pipeline -----------------------------------

  describe('sendMessages() over the pipeline', () => {
    /** Ten messages; with `refuseThird`, message 3 goes to a recipient the server refuses. */
    const messages = (refuseThird = true) =>
      range(1, 10).map(
        (seq) =>
          new EmailMessage({
            subject: `message ${seq}`,
            body: `Body ${seq}`,
            fromEmail: sender(seq),
            to: [seq === 3 && refuseThird ? 'gone-3@example.com' : rcpt(seq)],
            headers: { 'X-Seq': String(seq) },
          }),
      );
    const refuseGone: ScriptedHook = (event) =>
      event.verb === 'RCPT' && event.address?.startsWith('gone-')
        ? { reply: '550 5.1.1 No such user' }
        : undefined;
    const backendFor = (server: ScriptedServer, failSilently: boolean) => {
      const backend = new SmtpBackend({
        host: server.host,
        port: server.port,
        timeout: 10,
        failSilently,
        pipelineWindow: 8,
      });
      backends.push(backend);
      return backend;
    };

    it('without failSilently: throws the refusal of message 3, and nothing after it was sent', async () => {
      const server = await serve(mode, { onCommand: refuseGone });
      const error = await backendFor(server, false)
        .sendMessages(messages())
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(DeliveryError);
      expect(error).toMatchObject({ responseCode: 550, command: 'RCPT TO', recipient: 'gone-3@example.com' });
      expect(acceptedSeqs(server)).toEqual([1, 2]);
      expect(
        server.commands.filter((command) => command.verb === 'MAIL').map((command) => seqOf(command.line)),
      ).toEqual([1, 2, 3]);
    });

    it('with failSilently: returns 9 and the server accepted those 9, over one connection', async () => {
      const server = await serve(mode, { onCommand: refuseGone });
      expect(await backendFor(server, true).sendMessages(messages())).toBe(9);
      expect(ascending(acceptedSeqs(server))).toEqual([1, 2, 4, 5, 6, 7, 8, 9, 10]);
      expect(server.connectionCount).toBe(1);
    });

    it('with failSilently and a connection dropped mid-window: the count is exactly what the server accepted, none twice', async () => {
      let dropped = false;
      const server = await serve(mode, {
        onCommand: (event) => {
          if (!dropped && event.verb === mode.final && eventSeq(event) === 5) {
            dropped = true;
            return { reply: null, close: 'end' };
          }
          return undefined;
        },
      });
      const sent = await backendFor(server, true).sendMessages(messages(false));
      const accepted = acceptedSeqs(server);
      expect(sent).toBe(accepted.length);
      expect(new Set(accepted).size).toBe(accepted.length);
      expect(accepted).not.toContain(5);
      expect(accepted).toEqual(expect.arrayContaining([1, 2, 3, 4]));
    });

    it('without failSilently and a connection dropped: throws that connection error, and opens no other connection', async () => {
      const server = await serve(mode, {
        onCommand: (event) =>
          event.verb === mode.final && eventSeq(event) === 5 ? { reply: null, close: 'end' } : undefined,
      });
      const error = await backendFor(server, false)
        .sendMessages(messages(false))
        .catch((caught: unknown) => caught);
      expect(error).toMatchObject({ code: 'ECONNECTION' });
      expect(acceptedSeqs(server)).toEqual([1, 2, 3, 4]);
      // Django stops at the first failure: nothing more is sent, and no connection is opened to send nothing.
      expect(server.connectionCount).toBe(1);
    });

    it('without failSilently and a connection dropped by a server going away: throws the failure of the message, not a reconnect error', async () => {
      let server: ScriptedServer | undefined;
      server = await serve(mode, {
        onCommand: (event) => {
          if (event.verb !== mode.final || eventSeq(event) !== 5) return undefined;
          server?.stopListening();
          return { reply: null, close: 'end' };
        },
      });
      const error = await backendFor(server, false)
        .sendMessages(messages(false))
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(DeliveryError);
      expect(error).toMatchObject({ code: 'ECONNECTION' });
      expect((error as Error).message).not.toMatch(/Could not open/);
      expect(acceptedSeqs(server)).toEqual([1, 2, 3, 4]);
    });
  });
});
