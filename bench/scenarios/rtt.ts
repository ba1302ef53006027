/**
 * Per-connection throughput across a network round trip: a latency proxy (its own process) adds
 * the RTT in front of the server, and ONE connection sends the same N newsletter messages for each
 * system, each system in its own process:
 *   - Django's send_messages (bench/baselines/django-send.py; skipped when no Python imports Django),
 *   - nodemailer, a pool of one connection, every sendMail handed over at once (baseline (a)),
 *   - mailroom, SmtpBackend({ failSilently: true }).sendMessages (its whole pipeline window in flight).
 * For each server: the bench sink (smtp-server: PIPELINING, no CHUNKING) and a private Postfix
 * (test/support/postfix.ts, discard transport: PIPELINING and CHUNKING), and each RTT of the
 * config. A rate is N over the time of the send call, connection set-up included; every message is
 * counted as accepted by the server.
 */
import { startPostfix } from '../../test/support/postfix.js';
import { monoMs, runTag, sleep } from '../common.js';
import type { RttStep } from '../config.js';
import type { Delays } from '../latency-proxy.js';
import { newsletterFields } from '../newsletter.js';
import {
  type DirectSender,
  type DirectSendResult,
  findDjango,
  type LatencyProxyProcess,
  sendWithDjango,
  startDirectSender,
  startLatencyProxy,
  startMailroomSender,
} from '../processes.js';
import { type Context, type Figures, type RunResult, rotate } from './types.js';

/** The servers of the rtt scenario, in the order measured. */
export const RTT_SERVERS = ['smtp-server', 'postfix'] as const;
type RttServer = (typeof RTT_SERVERS)[number];

type System = 'mailroom' | 'nodemailer' | 'django';

/** Sends messages [0, count) of run `tag` over ONE connection to 127.0.0.1:`port`. */
type Send = (port: number, tag: string, count: number) => Promise<DirectSendResult>;

/** An SMTP server under the proxy: where it listens and how many messages it accepted so far. */
interface Peer {
  host: string;
  port: number;
  accepted(): Promise<number>;
  stop(): Promise<void>;
}

async function startPeer(context: Context, server: RttServer): Promise<Peer> {
  if (server === 'smtp-server') {
    const { sink } = context;
    await sink.reset({ recordCommands: false });
    return {
      host: sink.host,
      port: sink.port,
      accepted: async () => (await sink.report()).messages,
      // The sink is the harness's: put its defaults back.
      stop: () => sink.reset(),
    };
  }
  // Installs the Debian package first when it is missing.
  const postfix = await startPostfix();
  return {
    host: postfix.host,
    port: postfix.port,
    accepted: () => postfix.accepted(),
    stop: () => postfix.stop(),
  };
}

/**
 * Messages accepted since `before`, once `expected` are in or 15 s passed (Postfix counts from its
 * log, written a moment after its reply).
 */
async function acceptedSince(peer: Peer, before: number, expected: number): Promise<number> {
  const deadline = monoMs() + 15_000;
  for (;;) {
    const accepted = (await peer.accepted()) - before;
    if (accepted >= expected || monoMs() > deadline) return accepted;
    await sleep(50);
  }
}

/**
 * The RTT split between the directions in whole milliseconds, the proxy's timer granularity: RTT/2
 * each way, an odd millisecond on the client's side (1 ms is 1 + 0: half a millisecond each way
 * would become about 1 ms each way, doubling the round trip).
 */
function splitRtt(rttMs: number): Delays {
  const clientToServerMs = Math.ceil(rttMs / 2);
  return { clientToServerMs, serverToClientMs: rttMs - clientToServerMs };
}

/** A send through a sender process started for it (outside the measured time) and stopped after. */
function throughProcess(start: (port: number) => Promise<DirectSender>): Send {
  return async (port, tag, count) => {
    const sender = await start(port);
    try {
      return await sender.send(tag, 0, count);
    } finally {
      await sender.stop();
    }
  };
}

/** The systems compared: Django only when a Python imports it. */
function systems(python: string | undefined): [System, Send][] {
  const compared: [System, Send][] = [
    ['mailroom', throughProcess((port) => startMailroomSender({ port }))],
    ['nodemailer', throughProcess((port) => startDirectSender({ connections: 1, port }))],
  ];
  if (python !== undefined) {
    compared.push([
      'django',
      (port, tag, count) =>
        sendWithDjango(
          python,
          port,
          Array.from({ length: count }, (_, index) => newsletterFields(tag, index)),
        ),
    ]);
  }
  return compared;
}

/** One server at one RTT: every system in turn through the proxy; figures under `<server>.rtt<ms>.`. */
async function measureStep(
  context: Context,
  server: RttServer,
  peer: Peer,
  proxy: LatencyProxyProcess,
  step: RttStep,
  compared: [System, Send][],
  run: number,
): Promise<Figures> {
  const prefix = `${server}.rtt${step.rttMs}`;
  const delays = splitRtt(step.rttMs);
  const figures: Figures = {};
  const measuredRtts: number[] = [];
  context.log(
    `  ${server}, RTT ${step.rttMs} ms (${delays.clientToServerMs} + ${delays.serverToClientMs}), ` +
      `${step.messages} messages over 1 connection`,
  );
  for (const [system, send] of rotate(compared, run)) {
    const before = await peer.accepted();
    await proxy.configure(delays);
    const result = await send(proxy.port, runTag(`rtt-${system}`, run), step.messages);
    const { stats, cpuMs: proxyCpuMs } = await proxy.report();
    const accepted = await acceptedSince(peer, before, step.messages);
    if (result.failed > 0 || accepted !== step.messages || stats.connections !== 1) {
      throw new Error(
        `${system} via ${server} at ${step.rttMs} ms: ${step.messages - result.failed} of ${step.messages} ` +
          `sent over ${stats.connections} connection(s), ${accepted} accepted by the server`,
      );
    }
    const elapsedMs = result.finishedAt - result.startedAt;
    const rate = (step.messages * 1000) / elapsedMs;
    // Shares of a core during the send: a process near 100 % bounds the rate (the proxy included).
    const clientCpuPercent = (result.cpuMs * 100) / elapsedMs;
    const proxyCpuPercent = (proxyCpuMs * 100) / elapsedMs;
    const measuredRtt = stats.clientToServer.meanDelayMs + stats.serverToClient.meanDelayMs;
    measuredRtts.push(measuredRtt);
    figures[`${prefix}.${system}.rate`] = rate;
    figures[`${prefix}.${system}.clientCpuPercent`] = clientCpuPercent;
    figures[`${prefix}.${system}.proxyCpuPercent`] = proxyCpuPercent;
    figures[`${prefix}.${system}.measuredRttMs`] = measuredRtt;
    context.log(
      `    ${system}: ${rate.toFixed(1)} msg/s; CPU, % of a core: client ${clientCpuPercent.toFixed(0)}, ` +
        `proxy ${proxyCpuPercent.toFixed(0)}; RTT added ${measuredRtt.toFixed(2)} ms (mean per chunk)`,
    );
  }
  figures[`${prefix}.measuredRttMs`] =
    measuredRtts.reduce((sum, value) => sum + value, 0) / measuredRtts.length;
  const mailroom = figures[`${prefix}.mailroom.rate`] as number;
  figures[`${prefix}.ratio.vsNodemailer`] = mailroom / (figures[`${prefix}.nodemailer.rate`] as number);
  const django = figures[`${prefix}.django.rate`];
  if (django !== undefined) figures[`${prefix}.ratio.vsDjango`] = mailroom / django;
  return figures;
}

/** Every server, every RTT of the config, every system: one run's figures (see the module comment). */
export async function rttScenario(context: Context, run: number): Promise<RunResult> {
  const django = findDjango();
  if (!django) context.log('  Django: neither python3 nor /usr/bin/python3 imports it; skipped');
  const compared = systems(django?.python);
  const figures: Figures = {};
  for (const server of RTT_SERVERS) {
    const peer = await startPeer(context, server);
    try {
      const proxy = await startLatencyProxy({ host: peer.host, port: peer.port });
      try {
        for (const step of context.config.rttSteps) {
          Object.assign(figures, await measureStep(context, server, peer, proxy, step, compared, run));
        }
      } finally {
        await proxy.stop();
      }
    } finally {
      await peer.stop();
    }
  }
  return { figures, details: { django: django ?? 'not importable' } };
}
