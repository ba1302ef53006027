/**
 * mailroom without a queue, the counterpart of baseline (a) (baselines/nodemailer-direct.ts): one
 * process, `new SmtpBackend({ failSilently: true })`, one `sendMessages` over every message of a
 * request, so ONE connection, opened and closed by the call as Django's send_messages does. With
 * failSilently the backend may keep its whole pipeline window of messages in flight; without it,
 * Django's "stop at the first failure" holds it to one.
 *
 * Forked by the harness (IPC), same protocol as nodemailer-direct.ts. Environment: SINK_PORT (the
 * SMTP server's port on 127.0.0.1: the sink, or a latency proxy). Requests: `{type:'send', tag, from,
 * count}` sends messages [from, from+count) and answers `{type:'sent', startedAt, finishedAt, cpuMs,
 * failed}` (monotonic ms; the clock and CPU reading start once the messages are built, as Django's
 * baseline builds them before its clock too); `{type:'exit'}` exits.
 */
import { SmtpBackend } from '@mailroom/core';
import { monoMs } from './common.js';
import { newsletterMessage } from './newsletter.js';

type Request = { type: 'send'; tag: string; from: number; count: number } | { type: 'exit' };

const backend = new SmtpBackend({
  host: '127.0.0.1',
  port: Number(process.env.SINK_PORT),
  timeout: 30,
  failSilently: true,
});

process.on('message', (request: Request) => {
  if (request.type === 'exit') process.exit(0);
  void (async () => {
    const messages = [];
    for (let index = request.from; index < request.from + request.count; index++) {
      messages.push(newsletterMessage(request.tag, index));
    }
    const cpu = process.cpuUsage();
    const startedAt = monoMs();
    const sent = await backend.sendMessages(messages);
    const finishedAt = monoMs();
    const used = process.cpuUsage(cpu);
    process.send?.({
      type: 'sent',
      startedAt,
      finishedAt,
      failed: request.count - sent,
      cpuMs: (used.user + used.system) / 1000,
    });
  })();
});
process.on('disconnect', () => process.exit(0));
process.send?.({ type: 'ready' });
