/**
 * DKIM signing (RFC 6376) of the messages the SMTP backend sends, with nodemailer's DKIM signer
 * (`nodemailer/lib/dkim`): rsa-sha256, relaxed/relaxed. Only the SMTP backend signs; the console,
 * file and memory backends show or keep messages unsigned.
 */
import {
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  sign as signWithKey,
  verify as verifyWithKey,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { domainToASCII } from 'node:url';
import DKIM from 'nodemailer/lib/dkim';
import nodemailerSign from 'nodemailer/lib/dkim/sign';
import { ConfigError, coerceError, quoteValue, ValidationError } from './errors.js';
import { invalidValue } from './setting-values.js';

/**
 * The header fields a signature covers, when the message has them: nodemailer's default list (RFC
 * 4871 §5.5) plus List-Unsubscribe-Post, which RFC 8058 §4 requires signed along with
 * List-Unsubscribe and which nodemailer's list lacks. A field the message does not have is left out
 * of `h=`; a field it has twice is signed once, its last occurrence (RFC 6376 §5.4.2).
 */
export const DKIM_SIGNED_HEADERS: readonly string[] = [
  'From',
  'Sender',
  'Reply-To',
  'Subject',
  'Date',
  'Message-ID',
  'To',
  'Cc',
  'MIME-Version',
  'Content-Type',
  'Content-Transfer-Encoding',
  'Content-ID',
  'Content-Description',
  'Resent-Date',
  'Resent-From',
  'Resent-Sender',
  'Resent-To',
  'Resent-Cc',
  'Resent-Message-ID',
  'In-Reply-To',
  'References',
  'List-Id',
  'List-Help',
  'List-Unsubscribe',
  'List-Unsubscribe-Post',
  'List-Subscribe',
  'List-Post',
  'List-Owner',
  'List-Archive',
  'OTP-Token',
];

/** What to sign with: the EMAIL_DKIM_* settings, or the SmtpBackend `dkim` option. */
export interface DkimOptions {
  /** The signing domain, `d=` (EMAIL_DKIM_DOMAIN). An IDN is punycoded. */
  domain: string;
  /** The selector, `s=` (EMAIL_DKIM_SELECTOR): the public key is published at `<selector>._domainkey.<domain>`. */
  selector: string;
  /**
   * The RSA private key (EMAIL_DKIM_PRIVATE_KEY), unencrypted PKCS#1 or PKCS#8: its PEM text (starting
   * with `-----BEGIN`; `\n` escapes of a one-line environment variable are accepted) or the path of
   * a PEM file, read once here. Never shown in an error or a log.
   */
  privateKey: string;
}

/**
 * Signs messages for one domain and selector. Holds the parsed key in a private field: printing or
 * serialising a signer shows its domain, selector and DNS record, never the private key.
 */
export interface DkimSigner {
  /** `d=`, in ASCII. */
  readonly domain: string;
  /** `s=`. */
  readonly selector: string;
  /** Where verifiers look up the public key: `<selector>._domainkey.<domain>` (a TXT record). */
  readonly dnsName: string;
  /** The TXT record to publish at {@link DkimSigner.dnsName}: `v=DKIM1; k=rsa; p=<base64 public key>`. */
  readonly dnsRecord: string;
  /**
   * The message with a DKIM-Signature header field put before its first line: rsa-sha256,
   * relaxed/relaxed, over {@link DKIM_SIGNED_HEADERS}. `bytes` is a complete message with CRLF line
   * endings, exactly as it will be sent (the signature covers the bytes before dot-stuffing).
   * Rejects with a ValidationError (code `EDKIM`, permanent) when the message could not be signed:
   * it is then never sent unsigned.
   */
  sign(bytes: Buffer): Promise<Buffer>;
}

const PEM_START = '-----BEGIN';
const SIGNATURE_FIELD = Buffer.from('DKIM-Signature:', 'latin1');
/** RFC 8301 §3.2: verifiers must not accept a signature made with an RSA key under 1024 bits. */
const MIN_KEY_BITS = 1024;
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const HOSTNAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
// RFC 6376 §3.1 makes a selector dot-separated hostname labels; underscores are accepted too, as
// DNS and the common verifiers accept them in selectors in use.
const SELECTOR_LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
const SELECTOR = new RegExp(`^${SELECTOR_LABEL}(?:\\.${SELECTOR_LABEL})*$`);

/**
 * The signing domain in ASCII (an IDN punycoded, lower case); throws ConfigError naming `name`
 * (EMAIL_DKIM_DOMAIN) for anything that is not a domain name. Nodemailer would drop the characters
 * it cannot put in `d=` and sign for another domain without a word.
 */
export function validateDkimDomain(value: string, name = 'EMAIL_DKIM_DOMAIN'): string {
  const ascii = domainToASCII(value.trim());
  if (ascii === '' || ascii.length > 253 || !HOSTNAME.test(ascii)) {
    throw invalidValue(name, value, 'is not a domain name (the d= of the DKIM signature)');
  }
  return ascii;
}

/** The selector, trimmed; throws ConfigError naming `name` (EMAIL_DKIM_SELECTOR) unless it is DNS labels. */
export function validateDkimSelector(value: string, name = 'EMAIL_DKIM_SELECTOR'): string {
  const selector = value.trim();
  if (selector.length > 253 || !SELECTOR.test(selector)) {
    throw invalidValue(
      name,
      value,
      'is not a DKIM selector: DNS labels of letters, digits, "-" and "_", separated by dots',
    );
  }
  return selector;
}

/**
 * A signer for `options`, the key checked now so that a bad one is a {@link ConfigError} at start-up
 * rather than a failure (or, with nodemailer alone, an unsigned message) at the first send: it must
 * be an RSA key of 1024 bits or more, and it signs a probe with nodemailer's signer and with
 * node:crypto, checked against its own public key. Errors name EMAIL_DKIM_PRIVATE_KEY, never its value.
 * Ed25519 keys are refused: nodemailer's signer writes rsa-sha256 only.
 */
export function createDkimSigner(options: DkimOptions): DkimSigner {
  return new NodemailerDkimSigner(
    validateDkimDomain(options.domain),
    validateDkimSelector(options.selector),
    loadPrivateKey(options.privateKey),
  );
}

class NodemailerDkimSigner implements DkimSigner {
  readonly domain: string;
  readonly selector: string;
  readonly dnsName: string;
  readonly dnsRecord: string;
  readonly #dkim: DKIM;

  constructor(domain: string, selector: string, key: KeyObject) {
    this.domain = domain;
    this.selector = selector;
    this.dnsName = `${selector}._domainkey.${domain}`;
    const publicKey = createPublicKey(key);
    this.dnsRecord = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
    const options = {
      domainName: domain,
      keySelector: selector,
      privateKey: key,
      headerFieldNames: DKIM_SIGNED_HEADERS.join(':'),
    };
    probe(options, key, publicKey);
    this.#dkim = new DKIM(options);
  }

  sign(bytes: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let length = 0;
      const output = this.#dkim.sign(bytes);
      // 'data' rather than an async iterator: each chunk as written (the body is a slice of `bytes`),
      // not concatenated by read() before the one copy below.
      output.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        length += chunk.length;
      });
      output.once('error', (error) => {
        const err = coerceError(error);
        reject(
          new ValidationError(`DKIM signing for ${this.dnsName} failed: ${err.message}`, {
            code: 'EDKIM',
            cause: err,
          }),
        );
      });
      output.once('end', () => {
        const signed = Buffer.concat(chunks, length);
        // nodemailer passes a message through unsigned when its key cannot sign (sign.js returns
        // false): such a message must fail, never go out without its signature.
        if (length <= bytes.length || !signed.subarray(0, SIGNATURE_FIELD.length).equals(SIGNATURE_FIELD)) {
          reject(
            new ValidationError(`DKIM signing for ${this.dnsName} failed: no signature was made`, {
              code: 'EDKIM',
            }),
          );
          return;
        }
        resolve(signed);
      });
    });
  }
}

/**
 * Signs a probe the way messages will be signed (nodemailer's signer returns no signature rather than
 * an error when the key does not suit it), and checks a signature against the key's own public key
 * (a PEM whose private parts were damaged can still parse). Throws ConfigError.
 */
function probe(options: DKIM.SingleKeyOptions, key: KeyObject, publicKey: KeyObject): void {
  const headers = [{ key: 'from', line: `From: probe@${options.domainName}` }];
  // The body hash of an empty body under relaxed canonicalization (RFC 6376 §3.4.4): SHA-256 of "".
  const emptyBodyHash = '47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=';
  if (!nodemailerSign(headers, 'sha256', emptyBodyHash, options)) {
    throw new ConfigError("EMAIL_DKIM_PRIVATE_KEY cannot sign: nodemailer's DKIM signer refused the key");
  }
  const data = Buffer.from('mailroom DKIM probe');
  if (!verifyWithKey('sha256', data, publicKey, signWithKey('sha256', data, key))) {
    throw new ConfigError(
      'EMAIL_DKIM_PRIVATE_KEY is damaged: its signatures do not verify with its own public key',
    );
  }
}

/** The key of EMAIL_DKIM_PRIVATE_KEY, parsed and checked; ConfigError (without the value) otherwise. */
function loadPrivateKey(value: string): KeyObject {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new ConfigError(
      'EMAIL_DKIM_PRIVATE_KEY is empty: give the PEM text of the key or the path of its file',
    );
  }
  let pem: string | Buffer;
  let origin = 'EMAIL_DKIM_PRIVATE_KEY';
  if (value.trimStart().startsWith(PEM_START)) {
    // A PEM squeezed into one line of an environment file, with "\n" written out.
    pem = value.includes('\n') ? value : value.replaceAll('\\n', '\n');
  } else {
    const path = value.trim();
    try {
      pem = readFileSync(path);
    } catch (error) {
      // The value may be key material pasted without its BEGIN line: neither it nor the error
      // (which quotes the path) may be shown.
      const code = (error as { code?: unknown }).code;
      throw new ConfigError(
        `EMAIL_DKIM_PRIVATE_KEY is neither PEM text (starting with ${PEM_START}) nor the path of a readable file` +
          (typeof code === 'string' ? ` (${code})` : ''),
      );
    }
    origin = `the file ${quoteValue(path)} named by EMAIL_DKIM_PRIVATE_KEY`;
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (error) {
    const text = typeof pem === 'string' ? pem : pem.toString('latin1');
    const why = /ENCRYPTED/.test(text)
      ? 'it is encrypted: give it without a passphrase (openssl pkey -in key.pem -out plain.pem)'
      : /BEGIN (RSA )?PUBLIC KEY/.test(text)
        ? 'it is a public key: give the private key (the public one goes in DNS)'
        : `it is not an unencrypted PEM private key (${coerceError(error).message})`;
    // OpenSSL's errors name the reason, never the input: the cause is safe to keep.
    throw new ConfigError(`${origin} cannot be used: ${why}`, { cause: error });
  }
  if (key.asymmetricKeyType !== 'rsa') {
    throw new ConfigError(
      `${origin} is a key of type ${key.asymmetricKeyType ?? 'unknown'}; the DKIM signer (nodemailer's) signs rsa-sha256 only: use an RSA key of 2048 bits`,
    );
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_KEY_BITS) {
    throw new ConfigError(
      `${origin} is a ${bits}-bit RSA key; verifiers refuse keys under ${MIN_KEY_BITS} bits (RFC 8301 §3.2): use 2048 bits`,
    );
  }
  return key;
}
