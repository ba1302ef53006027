/**
 * The printed results: the machine, and the table `metric | mailroom | baseline | ratio | target |
 * met?` built from the medians of every scenario's figures. Targets are issue 6's.
 */
import { cpus, loadavg, release, totalmem } from 'node:os';
import type { BenchConfig, ScenarioName } from './config.js';
import { RTT_SERVERS } from './scenarios/rtt.js';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGb: number;
  node: string;
  redis: string;
  os: string;
  loadAverage: number[];
}

export function describeMachine(redisVersion: string): Machine {
  const cpu = cpus();
  return {
    cpu: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    memoryGb: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    redis: redisVersion,
    os: `Linux ${release()}`,
    loadAverage: loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

export function formatMachine(machine: Machine): string {
  return (
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGb} GB RAM, ${machine.os}; ` +
    `Node ${machine.node}; Redis ${machine.redis}; load average ${machine.loadAverage.join(' ')}`
  );
}

/** Medians of each scenario's figures. */
export type Medians = Partial<Record<ScenarioName, Record<string, number>>>;

export interface Row {
  metric: string;
  mailroom: string;
  baseline: string;
  ratio: string;
  target: string;
  met: string;
}

function format(value: number | undefined, digits = 0): string {
  if (value === undefined || Number.isNaN(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const yes = (ok: boolean | undefined) => (ok === undefined ? 'n/a' : ok ? 'yes' : 'NO');

/** Targets of the rtt scenario: mailroom / nodemailer per server at a given RTT. */
const RTT_TARGETS: readonly { server: string; rttMs: number; ratio: number }[] = [
  { server: 'smtp-server', rttMs: 10, ratio: 1.8 },
  { server: 'postfix', rttMs: 10, ratio: 8 },
];

/** The table rows for the scenarios that ran (a failed scenario shows as such). */
export function tableRows(config: BenchConfig, medians: Medians, failed: Map<ScenarioName, string>): Row[] {
  const rows: Row[] = [];
  const n = (count: number) => (count >= 1000 ? `${count / 1000}k` : String(count));
  const C = config.concurrency;
  const fail = (scenario: ScenarioName, metric: string) =>
    rows.push({
      metric,
      mailroom: 'failed',
      baseline: '',
      ratio: '',
      target: failed.get(scenario) ?? '',
      met: 'NO',
    });

  for (const scenario of config.scenarios) {
    if (failed.has(scenario)) {
      fail(scenario, `${scenario} (scenario failed)`);
      continue;
    }
    const m = medians[scenario];
    if (!m) continue;
    const get = (key: string) => m[key];
    const ratio = (a: string, b: string) => {
      const x = get(a);
      const y = get(b);
      return x === undefined || y === undefined ? undefined : x / y;
    };
    switch (scenario) {
      case 'enqueue': {
        const rate = get('mailroom.rate');
        const r = get('ratio.rate');
        rows.push({
          metric: `Enqueue msg/s (${n(config.enqueueMessages)}, ${config.chunk}/call) vs (b) addBulk`,
          mailroom: format(rate),
          baseline: format(get('bullmq.rate')),
          ratio: `${format(r, 2)}x`,
          target: '>= 50,000/s and >= 3x (b)',
          met: yes(rate !== undefined && r !== undefined ? rate >= 50_000 && r >= 3 : undefined),
        });
        rows.push({
          metric: 'Enqueue CPU µs/message (producer process)',
          mailroom: format(get('mailroom.cpuUsPerMessage'), 1),
          baseline: format(get('bullmq.cpuUsPerMessage'), 1),
          ratio: `${format(ratio('mailroom.cpuUsPerMessage', 'bullmq.cpuUsPerMessage'), 2)}x`,
          target: '',
          met: '',
        });
        const memoryRatio = get('mailroom.memoryRatio');
        rows.push({
          metric: 'Redis B/waiting message (MEMORY USAGE) vs serialized size',
          mailroom: format(get('mailroom.keyBytesPerMessage')),
          baseline: `${format(get('mailroom.wireSize'))} (wire JSON)`,
          ratio: `${format(memoryRatio, 2)}x`,
          target: '<= 2x serialized',
          met: yes(memoryRatio === undefined ? undefined : memoryRatio <= 2),
        });
        const usedRatio = ratio('mailroom.usedMemoryPerMessage', 'mailroom.wireSize');
        rows.push({
          metric: 'Redis B/waiting message (INFO used_memory delta)',
          mailroom: format(get('mailroom.usedMemoryPerMessage')),
          baseline: `${format(get('mailroom.wireSize'))} (wire JSON)`,
          ratio: `${format(usedRatio, 2)}x`,
          target: '<= 2x serialized',
          met: yes(usedRatio === undefined ? undefined : usedRatio <= 2),
        });
        rows.push({
          metric: '(b) Redis B/waiting job (MEMORY USAGE) vs job data JSON',
          mailroom: '',
          baseline: `${format(get('bullmq.keyBytesPerMessage'))} / ${format(get('bullmq.jobDataSize'))}`,
          ratio: `${format(get('bullmq.memoryRatio'), 2)}x`,
          target: '',
          met: '',
        });
        break;
      }
      case 'drain-1':
      case 'drain-2': {
        const P = scenario === 'drain-1' ? 1 : 2;
        const vsDirect = get('ratio.vsDirect');
        const vsBullmq = get('ratio.vsBullmq');
        rows.push({
          metric: `Drain msg/s (${n(config.drainMessages)}), ${P} proc x ${C} vs (a) pool of ${P * C}`,
          mailroom: format(get('mailroom.rate')),
          baseline: format(get('direct.rate')),
          ratio: `${format(vsDirect, 2)}x`,
          target: '>= 1.5x (a)',
          met: yes(vsDirect === undefined ? undefined : vsDirect >= 1.5),
        });
        rows.push({
          metric: `Drain msg/s (${n(config.drainMessages)}), ${P} proc x ${C} vs (b) ${P} proc x ${C}`,
          mailroom: format(get('mailroom.rate')),
          baseline: format(get('bullmq.rate')),
          ratio: `${format(vsBullmq, 2)}x`,
          target: '> 1x (b)',
          met: yes(vsBullmq === undefined ? undefined : vsBullmq > 1),
        });
        const workerCpu = get('mailroom.cpuUsPerMessage');
        rows.push({
          metric: `  worker CPU µs/message (drain-${P}) vs (a) process`,
          mailroom: format(workerCpu),
          baseline: format(get('direct.cpuUsPerMessage')),
          ratio: `${format(ratio('mailroom.cpuUsPerMessage', 'direct.cpuUsPerMessage'), 2)}x`,
          target: '<= 200 µs',
          met: yes(workerCpu === undefined ? undefined : workerCpu <= 200),
        });
        rows.push({
          metric: `  worker CPU µs/message (drain-${P}) vs (b) workers`,
          mailroom: format(get('mailroom.cpuUsPerMessage')),
          baseline: format(get('bullmq.cpuUsPerMessage')),
          ratio: `${format(ratio('mailroom.cpuUsPerMessage', 'bullmq.cpuUsPerMessage'), 2)}x`,
          target: '',
          met: '',
        });
        rows.push({
          metric: `  sink CPU µs/message (drain-${P}): mailroom | (a)`,
          mailroom: format(get('mailroom.sinkCpuUsPerMessage')),
          baseline: format(get('direct.sinkCpuUsPerMessage')),
          ratio: '',
          target: '',
          met: '',
        });
        rows.push({
          metric: `  SMTP connections opened | client writes (chunks) per message`,
          mailroom: `${format(get('mailroom.connections'))} | ${format(get('mailroom.clientChunksPerMessage'), 2)}`,
          baseline: `${format(get('direct.connections'))} | ${format(get('direct.clientChunksPerMessage'), 2)} (a)`,
          ratio: '',
          target: '',
          met: '',
        });
        const ledgerKeys = get('mailroom.residueLedgerKeys') ?? 0;
        const jobKeys = (get('mailroom.residueJobKeys') ?? 0) + ledgerKeys;
        const ttl = get('mailroom.residueLedgerTtlSeconds') ?? 0;
        rows.push({
          metric: `Left in Redis after drain-${P}, B/message: per-batch keys`,
          mailroom: `${format(get('mailroom.residueLedgerBytesPerMessage'), 1)} (${format(ledgerKeys)} ledgers, TTL ${format(ttl / 60)} min)`,
          baseline: `${format(get('bullmq.residueJobKeys'))} job keys`,
          ratio: '',
          target: 'completed work does not accumulate',
          met: jobKeys === 0 ? 'yes' : ledgerKeys > 0 ? 'NO (1 h TTL)' : 'NO',
        });
        rows.push({
          metric: '  + BullMQ event stream growth (capped ~10k events), B/message',
          mailroom: format(get('mailroom.residueEventsBytesPerMessage'), 1),
          baseline: format(get('bullmq.residueEventsBytesPerMessage'), 1),
          ratio: '',
          target: '',
          met: '',
        });
        const extra =
          (get('mailroom.extraMessages') ?? 0) +
          (get('bullmq.extraMessages') ?? 0) +
          (get('direct.extraMessages') ?? 0);
        if (extra !== 0) {
          rows.push({
            metric: `  DUPLICATES at the sink (drain-${P})`,
            mailroom: format(get('mailroom.extraMessages')),
            baseline: `${format(get('direct.extraMessages'))} (a), ${format(get('bullmq.extraMessages'))} (b)`,
            ratio: '',
            target: '0',
            met: 'NO',
          });
        }
        break;
      }
      case 'latency': {
        const p50 = get('mailroom.p50');
        const p99 = get('mailroom.p99');
        rows.push({
          metric: `Latency idle p50 ms (${config.latencySends} sends) vs (b)`,
          mailroom: format(p50, 2),
          baseline: format(get('bullmq.p50'), 2),
          ratio: `${format(ratio('mailroom.p50', 'bullmq.p50'), 2)}x`,
          target: '<= 10 ms',
          met: yes(p50 === undefined ? undefined : p50 <= 10),
        });
        rows.push({
          metric: `Latency idle p99 ms (${config.latencySends} sends) vs (b)`,
          mailroom: format(p99, 2),
          baseline: format(get('bullmq.p99'), 2),
          ratio: `${format(ratio('mailroom.p99', 'bullmq.p99'), 2)}x`,
          target: '<= 50 ms',
          met: yes(p99 === undefined ? undefined : p99 <= 50),
        });
        rows.push({
          metric: '  (a) sendMail on a warm pool, p50 / p99 ms',
          mailroom: '',
          baseline: `${format(get('direct.p50'), 2)} / ${format(get('direct.p99'), 2)}`,
          ratio: '',
          target: '',
          met: '',
        });
        break;
      }
      case 'memory': {
        const peak = get('mailroom.peakRssMb');
        rows.push({
          metric: `Worker peak RSS MB (VmHWM), drain ${n(config.memoryMessages)} vs (b) worker`,
          mailroom: format(peak, 1),
          baseline: format(get('bullmq.peakRssMb'), 1),
          ratio: `${format(ratio('mailroom.peakRssMb', 'bullmq.peakRssMb'), 2)}x`,
          target: '<= 150 MB',
          met: yes(peak === undefined ? undefined : peak <= 150),
        });
        rows.push({
          metric: '  worker idle RSS MB before the drain (mailroom built; (b) via tsx)',
          mailroom: format(get('mailroom.idleRssMb'), 1),
          baseline: format(get('bullmq.idleRssMb'), 1),
          ratio: '',
          target: '',
          met: '',
        });
        rows.push({
          metric: `  drain msg/s of that run (1 proc x ${C})`,
          mailroom: format(get('mailroom.rate')),
          baseline: format(get('bullmq.rate')),
          ratio: `${format(ratio('mailroom.rate', 'bullmq.rate'), 2)}x`,
          target: '',
          met: '',
        });
        break;
      }
      case 'delay': {
        rows.push({
          metric: `Per-connection msg/s, ${config.replyDelayMs} ms reply delay, vs (a) maxConnections 1`,
          mailroom: format(get('mailroom.rate'), 1),
          baseline: format(get('direct.rate'), 1),
          ratio: `${format(get('ratio.rate'), 2)}x`,
          target: 'report (bound: round trips)',
          met: 'n/a',
        });
        rows.push({
          metric: '  round trips per message (client turns + greetings)',
          mailroom: format(get('mailroom.roundTripsPerMessage'), 3),
          baseline: format(get('direct.roundTripsPerMessage'), 3),
          ratio: '',
          target: '2 with PIPELINING',
          met: '',
        });
        rows.push({
          metric: '  connections opened / EHLO per message',
          mailroom: `${format(get('mailroom.connections'))} / ${format(get('mailroom.ehloPerMessage'), 3)}`,
          baseline: `${format(get('direct.connections'))} / ${format(get('direct.ehloPerMessage'), 3)}`,
          ratio: '',
          target: '',
          met: '',
        });
        break;
      }
      case 'rtt': {
        for (const server of RTT_SERVERS) {
          for (const { rttMs, messages } of config.rttSteps) {
            const prefix = `${server}.rtt${rttMs}`;
            const mailroom = format(get(`${prefix}.mailroom.rate`), 1);
            const vsNodemailer = get(`${prefix}.ratio.vsNodemailer`);
            const target = RTT_TARGETS.find((each) => each.server === server && each.rttMs === rttMs);
            const measured = format(get(`${prefix}.measuredRttMs`), 1);
            rows.push({
              metric: `${server}, RTT ${rttMs} ms (${measured} measured), ${n(messages)}/connection: msg/s vs (a) pool of 1`,
              mailroom,
              baseline: format(get(`${prefix}.nodemailer.rate`), 1),
              ratio: `${format(vsNodemailer, 2)}x`,
              target: target ? `>= ${target.ratio}x (a)` : '',
              met: target ? yes(vsNodemailer === undefined ? undefined : vsNodemailer >= target.ratio) : '',
            });
            const django = get(`${prefix}.django.rate`);
            rows.push({
              metric: '  vs Django send_messages',
              mailroom,
              baseline: django === undefined ? 'skipped (no Django)' : format(django, 1),
              ratio: django === undefined ? '' : `${format(get(`${prefix}.ratio.vsDjango`), 2)}x`,
              target: '',
              met: '',
            });
            const cpu = (system: string) =>
              `${format(get(`${prefix}.${system}.clientCpuPercent`))}; ` +
              format(get(`${prefix}.${system}.proxyCpuPercent`));
            rows.push({
              metric: '  CPU during the send, % of a core: client; proxy',
              mailroom: cpu('mailroom'),
              baseline: `${cpu('nodemailer')} (a)${django === undefined ? '' : `, ${cpu('django')} Django`}`,
              ratio: '',
              target: '',
              met: '',
            });
          }
        }
        break;
      }
      case 'profile':
        break;
    }
  }
  return rows;
}

export function formatTable(rows: Row[]): string {
  const header: Row = {
    metric: 'metric',
    mailroom: 'mailroom',
    baseline: 'baseline',
    ratio: 'ratio',
    target: 'target',
    met: 'met?',
  };
  const columns = Object.keys(header) as (keyof Row)[];
  const widths = columns.map((column) => Math.max(...[header, ...rows].map((row) => row[column].length)));
  const line = (row: Row) =>
    columns.map((column, index) => row[column].padEnd(widths[index] as number)).join(' | ');
  return [line(header), widths.map((width) => '-'.repeat(width)).join('-|-'), ...rows.map(line)].join('\n');
}
