/** SMTP replies (RFC 5321 §4.2): read from the byte stream, one reply per command, multi-line aware. */
import { DeliveryError } from '../errors.js';

/** One complete reply of the server. */
export interface SmtpReply {
  /** The three-digit reply code. */
  code: number;
  /** The enhanced status code (RFC 3463) of the first line, e.g. `5.1.1`, when the server sent one. */
  enhanced: string | undefined;
  /** The text of every line, without code and separator. */
  lines: string[];
}

/** Longest reply line accepted: far beyond RFC 5321's 512 octets, short enough to bound memory. */
const MAX_LINE = 64 * 1024;
/** Most lines of one reply (EHLO lists a few dozen at most). */
const MAX_LINES = 1000;
const ENHANCED = /^([245]\.\d{1,3}\.\d{1,3})(?=\s|$)/;

/** `550 5.1.1 No such user`: a reply as one line, for errors, outcomes and logs. */
export function replyText(reply: SmtpReply): string {
  return `${reply.code} ${reply.lines.join(' ')}`.trimEnd();
}

/** Whether the reply is a positive completion (2yz). */
export function isPositive(reply: SmtpReply): boolean {
  return reply.code >= 200 && reply.code < 300;
}

/** A reply that breaks the protocol: the connection cannot be trusted any further. */
export function protocolError(message: string): DeliveryError {
  return new DeliveryError(`SMTP protocol error: ${message}`, { code: 'EPROTOCOL', command: 'CONN' });
}

/**
 * Splits the server's byte stream into replies. `push()` returns the replies a chunk completed; a
 * malformed line (no three-digit code, codes that change inside one reply, an endless line) sets
 * `error`, a protocol error.
 */
export class ReplyParser {
  #partial = '';
  #code = 0;
  /** Set once a malformed line was read; nothing after it is parsed. */
  error: Error | undefined;
  #lines: string[] = [];

  /** Bytes received but not yet part of a complete line (must be none at a STARTTLS upgrade). */
  get buffered(): number {
    return this.#partial.length + this.#lines.length;
  }

  /**
   * The replies `chunk` completes. A malformed line stops the parsing: the replies completed before
   * it are still returned (the server did send them), and {@link ReplyParser.error} is set; the
   * connection must then be failed, since every later reply would be matched to the wrong command.
   */
  push(chunk: Buffer): SmtpReply[] {
    if (this.error) return [];
    const text = this.#partial + chunk.toString('utf8');
    const replies: SmtpReply[] = [];
    let start = 0;
    try {
      for (let end = text.indexOf('\n'); end !== -1; end = text.indexOf('\n', start)) {
        const line = text.charCodeAt(end - 1) === 13 ? text.slice(start, end - 1) : text.slice(start, end);
        start = end + 1;
        const reply = this.#line(line);
        if (reply) replies.push(reply);
      }
      this.#partial = text.slice(start);
      if (this.#partial.length > MAX_LINE) throw protocolError('a reply line longer than 64 KiB');
    } catch (error) {
      this.error = error as Error;
    }
    return replies;
  }

  #line(line: string): SmtpReply | undefined {
    const code = Number(line.slice(0, 3));
    const separator = line.charAt(3);
    if (
      !/^[2-5]\d\d$/.test(line.slice(0, 3)) ||
      (separator !== '' && separator !== ' ' && separator !== '-')
    ) {
      throw protocolError(`unexpected reply line ${JSON.stringify(line.slice(0, 80))}`);
    }
    if (this.#lines.length > 0 && code !== this.#code) {
      throw protocolError(`reply code changed from ${this.#code} to ${code} inside one reply`);
    }
    if (this.#lines.length >= MAX_LINES) throw protocolError(`a reply of more than ${MAX_LINES} lines`);
    this.#code = code;
    this.#lines.push(line.slice(4));
    if (separator === '-') return undefined;
    const lines = this.#lines;
    this.#lines = [];
    const enhanced = code >= 200 ? ENHANCED.exec(lines[0] ?? '')?.[1] : undefined;
    return { code, enhanced, lines };
  }
}
