import {
  EmailMessage,
  type EmailMessageOptions,
  EmailMultiAlternatives,
  envelopeAddress,
  getConnection,
  InvalidAddressError,
  parseAddress,
  parseAddressList,
  ValidationError,
} from '@mailroom/core';
import { describe, expect, it } from 'vitest';
import { messageFactory } from './support/message.js';
import { decodeEncodedWords } from './support/mime-tree.js';
import { addressPairs, render } from './support/render.js';

const make = messageFactory();

const envelope = (message: EmailMessage) => getConnection('memory').envelope(message);

describe('address headers', () => {
  it('renders bare addresses and "Name <addr>" addresses', async () => {
    const { tree, parsed } = await render(
      make({
        fromEmail: 'Alice Example <alice@example.com>',
        to: ['bob@example.com', 'Carol <carol@example.com>'],
      }),
    );
    expect(tree.header('From')).toBe('Alice Example <alice@example.com>');
    expect(tree.header('To')).toBe('bob@example.com, Carol <carol@example.com>');
    expect(addressPairs(parsed.from)).toEqual([['Alice Example', 'alice@example.com']]);
    expect(addressPairs(parsed.to)).toEqual([
      ['', 'bob@example.com'],
      ['Carol', 'carol@example.com'],
    ]);
  });

  it('keeps a quoted display name with a comma as one address', async () => {
    const message = make({ to: ['"Doe, John" <john@example.com>', 'jane@example.com'] });
    const { tree, parsed } = await render(message);
    expect(tree.header('To')).toBe('"Doe, John" <john@example.com>, jane@example.com');
    expect(addressPairs(parsed.to)).toEqual([
      ['Doe, John', 'john@example.com'],
      ['', 'jane@example.com'],
    ]);
    expect(message.recipients()).toEqual(['"Doe, John" <john@example.com>', 'jane@example.com']);
    expect(envelope(message).to).toEqual(['john@example.com', 'jane@example.com']);
  });

  it('keeps a non-ASCII quoted display name with a comma as one address', async () => {
    const { tree, parsed } = await render(
      make({ cc: ['"Müller, Jürgen" <j@example.com>', 'x@example.com'] }),
    );
    expect(addressPairs(parsed.cc)).toEqual([
      ['Müller, Jürgen', 'j@example.com'],
      ['', 'x@example.com'],
    ]);
    // The comma travels inside the encoded-word, so a header parser sees one mailbox before the ','.
    expect(tree.header('Cc')).toMatch(/^=\?utf-8\?[bq]\?[^,]*\?= <j@example\.com>, x@example\.com$/);
  });

  it('escapes quotes and backslashes of an ASCII display name in a quoted-string', async () => {
    const { tree, parsed } = await render(make({ to: ['"The \\"Best\\" \\\\ Team" <t@example.com>'] }));
    expect(tree.header('To')).toBe('"The \\"Best\\" \\\\ Team" <t@example.com>');
    expect(addressPairs(parsed.to)).toEqual([['The "Best" \\ Team', 't@example.com']]);
  });

  it.each([
    ['From', 'fromEmail'],
    ['To', 'to'],
    ['Cc', 'cc'],
    ['Reply-To', 'replyTo'],
  ] as const)(
    'RFC 2047 encodes a non-ASCII display name in %s and keeps the header ASCII',
    async (header, field) => {
      const name = 'Jürgen Großmann 日本';
      const address = `${name} <jg@example.com>`;
      const options: EmailMessageOptions =
        field === 'fromEmail' ? { fromEmail: address } : { [field]: [address] };
      const { tree, parsed } = await render(make(options));
      const value = tree.header(header) ?? '';
      expect(value).toMatch(/^=\?utf-8\?[bq]\?.*<jg@example\.com>$/);
      expect(decodeEncodedWords(value)).toBe(`${name} <jg@example.com>`);
      const key = ({ From: 'from', To: 'to', Cc: 'cc', 'Reply-To': 'replyTo' } as const)[header];
      expect(addressPairs(parsed[key])).toEqual([[name, 'jg@example.com']]);
    },
  );

  it('folds a long address list between addresses, each line within 78 characters', async () => {
    const to = Array.from({ length: 12 }, (_, i) => `Person ${i} <person.${i}@example.com>`);
    const { tree, parsed } = await render(make({ to }));
    const field = tree.headers.find((header) => header.name === 'To');
    expect(field?.lines.length).toBeGreaterThan(2);
    for (const line of field?.lines ?? []) expect(line.length).toBeLessThanOrEqual(78);
    expect(tree.header('To')).toBe(to.join(', '));
    expect(addressPairs(parsed.to).map(([, address]) => address)).toEqual(
      to.map((_, i) => `person.${i}@example.com`),
    );
  });

  it('folds a long non-ASCII display name in Reply-To within 78 characters', async () => {
    const name = 'Ünïcödé Support Department of a Very Large Organisation Überall';
    const { tree, parsed } = await render(make({ replyTo: [`${name} <help@example.com>`] }));
    const field = tree.headers.find((header) => header.name === 'Reply-To');
    for (const line of field?.lines ?? []) expect(line.length).toBeLessThanOrEqual(78);
    expect(addressPairs(parsed.replyTo)).toEqual([[name, 'help@example.com']]);
  });
});

describe('IDN domains', () => {
  it('punycodes IDN domains in every address header', async () => {
    const message = make({
      fromEmail: 'Jöhn <john@exämple.com>',
      to: ['anna@bücher.de'],
      cc: ['Cé <c@mañana.com>'],
      replyTo: ['r@日本.jp'],
    });
    const { tree, parsed, headerText } = await render(message);
    expect(tree.header('From')).toMatch(/<john@xn--exmple-cua\.com>$/);
    expect(tree.header('To')).toBe('anna@xn--bcher-kva.de');
    expect(tree.header('Cc')).toMatch(/<c@xn--maana-pta\.com>$/);
    expect(tree.header('Reply-To')).toBe('r@xn--wgv71a.jp');
    // mailparser turns punycode back into Unicode: the decoded value equals the input.
    expect(addressPairs(parsed.from)).toEqual([['Jöhn', 'john@exämple.com']]);
    expect(addressPairs(parsed.to)).toEqual([['', 'anna@bücher.de']]);
    expect([...Buffer.from(headerText, 'latin1')].every((byte) => byte < 0x80)).toBe(true);
  });

  it('punycodes IDN domains in From/To overrides given in headers', async () => {
    const { tree } = await render(make({ headers: { From: 'x@bücher.de', To: 'Y <y@bücher.de>' } }));
    expect(tree.header('From')).toBe('x@xn--bcher-kva.de');
    expect(tree.header('To')).toBe('Y <y@xn--bcher-kva.de>');
  });

  it('punycodes IDN domains in the SMTP envelope of a backend', () => {
    const message = make({
      fromEmail: 'Jöhn <john@exämple.com>',
      to: ['anna@bücher.de'],
      cc: ['"Doe, J" <j@mañana.com>'],
      bcc: ['b@日本.jp'],
    });
    expect(envelope(message)).toEqual({
      from: 'john@xn--exmple-cua.com',
      to: ['anna@xn--bcher-kva.de', 'j@xn--maana-pta.com', 'b@xn--wgv71a.jp'],
    });
  });

  it('keeps an already ASCII domain and a domain literal unchanged', () => {
    expect(envelopeAddress('Name <a@mail.example.com>')).toBe('a@mail.example.com');
    expect(envelopeAddress('a@[192.0.2.1]')).toBe('a@[192.0.2.1]');
  });
});

describe('list entries and local parts', () => {
  it('skips empty list entries in headers and in recipients()', async () => {
    const message = make({
      to: ['', 'a@example.com', ''],
      cc: [''],
      bcc: ['', 'b@example.com'],
      replyTo: [''],
    });
    const { tree, parsed } = await render(message);
    expect(tree.header('To')).toBe('a@example.com');
    expect(tree.headerAll('Cc')).toEqual([]);
    expect(tree.headerAll('Reply-To')).toEqual([]);
    expect(addressPairs(parsed.to)).toEqual([['', 'a@example.com']]);
    expect(message.recipients()).toEqual(['a@example.com', 'b@example.com']);
    expect(envelope(message).to).toEqual(['a@example.com', 'b@example.com']);
  });

  it('skips empty entries of a header-style list given in headers', async () => {
    const { tree } = await render(make({ headers: { To: ' , a@example.com,, b@example.com , ' } }));
    expect(tree.header('To')).toBe('a@example.com, b@example.com');
  });

  it('writes no To header when every entry is empty', async () => {
    const { tree } = await render(make({ to: ['', ''] }));
    expect(tree.headerAll('To')).toEqual([]);
  });

  it('allows a local part without a domain', async () => {
    const message = make({ fromEmail: 'Admin <root>', to: ['postmaster'] });
    const { tree } = await render(message);
    expect(tree.header('From')).toBe('Admin <root>');
    expect(tree.header('To')).toBe('postmaster');
    expect(envelope(message)).toEqual({ from: 'root', to: ['postmaster'] });
  });

  it('keeps a quoted local part', () => {
    expect(parseAddress('"john doe"@example.com')).toEqual({
      displayName: '',
      addrSpec: '"john doe"@example.com',
    });
  });
});

describe('invalid addresses', () => {
  const INVALID = [
    ['an empty address in angle brackets', 'Name <>'],
    ['a missing local part', '@example.com'],
    ['a missing domain', 'user@'],
    ['two @ signs', 'a@b@example.com'],
    ['spaces without angle brackets', 'not an address'],
    ['non-ASCII punctuation in a local part (U+FF20 FULLWIDTH COMMERCIAL AT)', 'jürgen\uff20example.com'],
    ['an unquoted display name with a comma', 'Doe, John <john@example.com>'],
    ['two addresses in one entry', 'a@example.com, b@example.com'],
    ['an unbalanced angle bracket', 'Name a@example.com>'],
    ['an invalid IDN domain', 'Name <a@xn--a.com>'],
    ['an empty domain label', 'a@example..com'],
  ] as const;

  it.each(INVALID)('rejects %s in to at message() with InvalidAddressError', (_label, address) => {
    const message = make({ to: [address] });
    let thrown: unknown;
    try {
      message.message();
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(InvalidAddressError);
    expect(thrown).toBeInstanceOf(ValidationError);
    expect((thrown as InvalidAddressError).message).toMatch(/^Invalid address /);
    expect((thrown as InvalidAddressError).code).toBe('EADDRESS');
  });

  it.each(INVALID)(
    'rejects %s in the envelope with a message starting "Invalid address"',
    (_label, address) => {
      expect(() => envelope(make({ bcc: [address] }))).toThrow(/^Invalid address /);
    },
  );

  it.each(['fromEmail', 'cc', 'bcc', 'replyTo'] as const)(
    'rejects an invalid address in %s at message()',
    (field) => {
      const options: EmailMessageOptions = field === 'fromEmail' ? { fromEmail: 'a@' } : { [field]: ['a@'] };
      expect(() => make(options).message()).toThrow(InvalidAddressError);
    },
  );

  it('names the offending field in the error', () => {
    try {
      make({ cc: ['ok@example.com', 'bad@'] }).message();
      expect.unreachable('message() should have thrown');
    } catch (error) {
      expect((error as InvalidAddressError).field).toBe('cc[1]');
    }
  });
});

describe('address list arguments', () => {
  it.each(['to', 'cc', 'bcc', 'replyTo'] as const)(
    'rejects a string %s in the options object with a TypeError naming it',
    (field) => {
      const options = { [field]: 'someone@example.com' } as unknown as EmailMessageOptions;
      expect(() => new EmailMessage(options)).toThrow(TypeError);
      expect(() => new EmailMessage(options)).toThrow(`${field} must be an array of addresses, not a string`);
    },
  );

  it('rejects a string to in the positional constructor with a TypeError naming it', () => {
    const to = 'someone@example.com' as unknown as string[];
    expect(() => new EmailMessage('s', 'b', 'f@example.com', to)).toThrow(
      /^to must be an array of addresses/,
    );
    expect(() => new EmailMultiAlternatives('s', 'b', 'f@example.com', to)).toThrow(TypeError);
  });

  it.each(['cc', 'bcc', 'replyTo'] as const)(
    'rejects a string %s in positional options with a TypeError naming it',
    (field) => {
      const options = { [field]: 'someone@example.com' } as unknown as EmailMessageOptions;
      expect(() => new EmailMessage('s', 'b', 'f@example.com', [], options)).toThrow(
        `${field} must be an array of addresses, not a string`,
      );
    },
  );

  it.each(['to', 'cc', 'bcc', 'replyTo'] as const)(
    'rejects a string assigned to %s with a TypeError naming it',
    (field) => {
      const message = make();
      expect(() => {
        (message as unknown as Record<string, unknown>)[field] = 'someone@example.com';
      }).toThrow(new TypeError(`${field} must be an array of addresses, not a string`));
      expect(message.recipients()).toEqual(['to@example.com']);
    },
  );

  it('accepts null and undefined as empty lists', () => {
    const message = make({ to: null });
    message.cc = undefined;
    message.bcc = null;
    expect(message.to).toEqual([]);
    expect(message.cc).toEqual([]);
    expect(message.recipients()).toEqual([]);
  });

  it('copies the list it is given, so later changes to the caller array do not leak in', () => {
    const to = ['a@example.com'];
    const message = make({ to });
    to.push('b@example.com');
    expect(message.recipients()).toEqual(['a@example.com']);
  });
});

describe('parseAddress and parseAddressList', () => {
  it('parses a display name, unquoting a quoted-string', () => {
    expect(parseAddress('"Doe, John" <John@example.com>')).toEqual({
      displayName: 'Doe, John',
      addrSpec: 'John@example.com',
    });
  });

  it('splits a header-style list only at commas outside quotes and angle brackets', () => {
    expect(parseAddressList('"A, B" <a@example.com>, <b@example.com>, c@example.com', 'to')).toEqual([
      { displayName: 'A, B', addrSpec: 'a@example.com' },
      { displayName: '', addrSpec: 'b@example.com' },
      { displayName: '', addrSpec: 'c@example.com' },
    ]);
  });
});
