import {
  BadHeaderError,
  type Classification,
  classifyDeliveryError,
  DeliveryError,
  InvalidAddressError,
  isHardBounce,
  ValidationError,
} from '@mailroom/core';
import { describe, expect, it } from 'vitest';

/** An error shaped like nodemailer's (`_formatError`): code, and for a server reply the reply in the message. */
function nodemailerError(code: string, message: string, response?: string, command?: string) {
  const error = new Error(response ? `${message}: ${response}` : message) as Error & {
    code: string;
    response?: string;
    responseCode?: number;
    command?: string;
  };
  error.code = code;
  if (response) {
    error.response = response;
    error.responseCode = Number(response.slice(0, 3));
  }
  if (command) error.command = command;
  return error;
}

/** A Node.js socket error (as net emits it). */
function socketError(code: string, syscall = 'connect') {
  return Object.assign(new Error(`${syscall} ${code} 127.0.0.1:25`), { code, errno: -1, syscall });
}

const permanent = (reason: Classification['reason']): Classification => ({ transient: false, reason });
const transient = (reason: Classification['reason']): Classification => ({ transient: true, reason });

describe('classifyDeliveryError', () => {
  describe('SMTP replies', () => {
    it.each([
      ['421 Service not available, closing channel', 'RCPT TO', transient('deferred')],
      ['450 Mailbox unavailable', 'RCPT TO', transient('deferred')],
      ['451 Local error in processing', 'DATA', transient('deferred')],
      ['452 Insufficient system storage', 'MAIL FROM', transient('deferred')],
      // 503 says the session got out of step (RFC 5321 §4.2.4), not that the message is bad.
      ['503 Bad sequence of commands', 'DATA', transient('deferred')],
      // Credentials concern the account, not the message.
      ['535 Authentication credentials invalid', 'AUTH PLAIN', transient('auth')],
      ['550 No such user', 'RCPT TO', permanent('rejected')],
      ['552 Message exceeds fixed maximum message size', 'DATA', permanent('too-large')],
      ['553 Mailbox name not allowed', 'RCPT TO', permanent('rejected')],
      ['554 Transaction failed', 'DATA', permanent('rejected')],
    ])('%s → %o', (response, command, expected) => {
      const code = command === 'DATA' ? 'EMESSAGE' : command.startsWith('AUTH') ? 'EAUTH' : 'EENVELOPE';
      expect(classifyDeliveryError(nodemailerError(code, 'Command failed', response, command))).toEqual(
        expected,
      );
    });

    it.each([
      ['554 Your IP is on a blocklist', 'CONN'],
      ['550 Go away', 'EHLO'],
      ['454 TLS not available', 'STARTTLS'],
    ])(
      'treats %s to %s (a refused session, not a message) as a transient connection failure',
      (response, command) => {
        expect(
          classifyDeliveryError(nodemailerError('EPROTOCOL', 'Session refused', response, command)),
        ).toEqual(transient('connection'));
      },
    );

    it('reads the reply code of a DeliveryError', () => {
      expect(
        classifyDeliveryError(new DeliveryError('refused', { code: 'EENVELOPE', responseCode: 550 })),
      ).toEqual(permanent('rejected'));
      expect(
        classifyDeliveryError(new DeliveryError('later', { code: 'EENVELOPE', responseCode: 451 })),
      ).toEqual(transient('deferred'));
    });

    it('treats a 5xx reply about size as too-large', () => {
      const error = nodemailerError('EMESSAGE', 'Message failed', '554 Message size exceeds limit', 'DATA');
      expect(classifyDeliveryError(error)).toEqual(permanent('too-large'));
    });
  });

  describe('nodemailer codes without a reply', () => {
    it.each([
      ['ECONNECTION', 'Connection closed unexpectedly', transient('connection')],
      ['ETIMEDOUT', 'Greeting never received', transient('timeout')],
      ['ESOCKET', 'connect ECONNREFUSED 127.0.0.1:25', transient('connection')],
      ['EDNS', 'getaddrinfo ENOTFOUND smtp.invalid', transient('connection')],
      ['ETLS', 'Error initiating TLS', transient('connection')],
      ['EAUTH', 'Missing credentials for "PLAIN"', transient('auth')],
      ['EENVELOPE', 'No recipients defined', permanent('invalid')],
      ['EMESSAGE', 'Message size larger than allowed 2000', permanent('too-large')],
    ])('%s → %o', (code, message, expected) => {
      expect(classifyDeliveryError(nodemailerError(code, message))).toEqual(expected);
    });
  });

  describe('Node socket errors', () => {
    it.each([
      ['ECONNREFUSED', transient('connection')],
      ['ECONNRESET', transient('connection')],
      ['EPIPE', transient('connection')],
      ['EHOSTUNREACH', transient('connection')],
      ['ENOTFOUND', transient('connection')],
    ])('%s → %o', (code, expected) => {
      expect(classifyDeliveryError(socketError(code))).toEqual(expected);
    });

    it('matches codes case-insensitively', () => {
      expect(classifyDeliveryError(socketError('econnreset'))).toEqual(transient('connection'));
    });

    it('reads a timeout from the message when there is no code', () => {
      expect(classifyDeliveryError(new Error('Socket timed out'))).toEqual(transient('timeout'));
    });
  });

  describe('validation errors', () => {
    it.each([
      ['ValidationError', new ValidationError('attach(): content is required')],
      ['BadHeaderError', new BadHeaderError("Header values can't contain newlines")],
      ['InvalidAddressError', new InvalidAddressError('Invalid address "x"')],
    ])('%s is permanent and invalid', (_name, error) => {
      expect(classifyDeliveryError(error)).toEqual(permanent('invalid'));
    });
  });

  describe('anything else', () => {
    it.each([
      ['a string', 'boom'],
      ['an object', { reason: 'boom' }],
      ['undefined', undefined],
      ['null', null],
      ['a number', 42],
    ])('%s thrown is transient and unknown', (_name, thrown) => {
      expect(classifyDeliveryError(thrown)).toEqual(transient('unknown'));
    });

    it('a plain Error without a code is transient and unknown', () => {
      expect(classifyDeliveryError(new Error('something odd'))).toEqual(transient('unknown'));
    });
  });
});

describe('isHardBounce', () => {
  it.each<[string, number, string]>([
    [
      '550 5.1.1 (no such mailbox)',
      550,
      '550 5.1.1 <x@example.com>: Recipient address rejected: User unknown',
    ],
    ['5.1.1 in a reply text without its basic code', 550, '5.1.1 No such user'],
    [
      'a multi-line Gmail 550-5.1.1',
      550,
      "550-5.1.1 The email account that you tried to reach does not exist. Please try 550-5.1.1 double-checking the recipient's email address",
    ],
    ['5.1.2 (no such domain)', 550, '550 5.1.2 Host unknown'],
    ['553 5.1.3 (bad address syntax)', 553, '553 5.1.3 Bad recipient address syntax'],
    ['5.1.6 (mailbox has moved)', 550, '550 5.1.6 Mailbox has moved'],
    ['5.1.10 (null MX)', 556, '556 5.1.10 Recipient address has null MX'],
    ['550 "No such user here" without an enhanced code', 550, '550 No such user here'],
    ['551 "User unknown" without an enhanced code', 551, 'User unknown'],
  ])('%s is a hard bounce', (_name, code, response) => {
    expect(isHardBounce(code, response)).toBe(true);
  });

  it.each<[string, number | undefined, string | undefined]>([
    ['5.1.0 (other address status)', 550, '550 5.1.0 Address rejected'],
    ['5.1.7 (bad sender address)', 550, '550 5.1.7 Bad sender mailbox address syntax'],
    ['5.1.8 (bad sender system)', 553, '553 5.1.8 Sender address domain does not exist'],
    ['550 5.7.1, even saying user unknown', 550, '550 5.7.1 User unknown, or you are a spammer'],
    ['554 5.7.1 (policy)', 554, '554 5.7.1 Relay access denied'],
    ['550 5.2.1 (mailbox disabled)', 550, '550 5.2.1 The email account that you tried to reach is disabled'],
    ['452 4.1.1 (transient)', 452, '452 4.1.1 Mailbox temporarily unknown'],
    ['450 4.2.0 (greylisted)', 450, '450 4.2.0 Greylisted, try again later'],
    ['550 "Message rejected as spam" without an enhanced code', 550, '550 Message rejected as spam'],
    ['554 "No such user" without an enhanced code (not 550, 551 or 553)', 554, '554 No such user'],
    ['a reply without a code', undefined, '550 5.1.1 User unknown'],
    ['a code without a reply', 550, undefined],
  ])('%s is not a hard bounce', (_name, code, response) => {
    expect(isHardBounce(code, response)).toBe(false);
  });
});
