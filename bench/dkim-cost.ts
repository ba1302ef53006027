/** DKIM signing cost per message: mailroom's signer (nodemailer's) against the bare RSA-2048 and Ed25519 signatures. */
import { generateKeyPairSync, sign } from 'node:crypto';
import { createDkimSigner, EmailMessage } from '@mailroom/core';

const MESSAGES = 1000;
const RUNS = 5;

/** CPU milliseconds per call of `work`, median of RUNS runs of MESSAGES calls. */
async function cpuPerCall(work: () => unknown): Promise<number> {
  const runs: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const start = process.cpuUsage();
    for (let i = 0; i < MESSAGES; i++) await work();
    const used = process.cpuUsage(start);
    runs.push((used.user + used.system) / 1000 / MESSAGES);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(RUNS / 2)] as number;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const ed25519 = generateKeyPairSync('ed25519').privateKey;
const signer = createDkimSigner({
  domain: 'example.com',
  selector: 'bench',
  privateKey: rsa.export({ type: 'pkcs8', format: 'pem' }).toString(),
});
const bytes = new EmailMessage({
  subject: 'June news',
  body: `${'Hello, here is the news of the month. '.repeat(80)}\n`,
  fromEmail: 'news@example.com',
  to: ['reader@example.com'],
}).message();
const header = Buffer.alloc(400, 'a');

const signed = await cpuPerCall(() => signer.sign(bytes));
const bareRsa = await cpuPerCall(() => sign('sha256', header, rsa));
const bareEd = await cpuPerCall(() => sign(null, header, ed25519));
console.log(`message: ${bytes.length} bytes; median of ${RUNS} runs of ${MESSAGES}`);
console.log(`mailroom DKIM sign (rsa-sha256, nodemailer): ${signed.toFixed(3)} ms CPU per message`);
console.log(`bare RSA-2048 signature (node:crypto):       ${bareRsa.toFixed(3)} ms CPU`);
console.log(`bare Ed25519 signature (node:crypto):        ${bareEd.toFixed(3)} ms CPU`);
