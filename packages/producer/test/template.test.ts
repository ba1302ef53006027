/**
 * compileTemplate: the campaign placeholder language. Dotted paths, escaping per output (HTML, URL,
 * none), `{{{ raw }}}`, missing values, malformed placeholders, the promise that nothing in a
 * template reaches code or prototypes, and the cap on what one render may build.
 */
import { ValidationError } from '@mailroom/core';
import { compileTemplate, escapeHtml, producerDefaults } from '@mailroom/producer';
import { describe, expect, it } from 'vitest';

function compileError(source: string, escaping: 'none' | 'html' | 'url', field?: string): ValidationError {
  try {
    compileTemplate(source, escaping, field);
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error(`compileTemplate(${JSON.stringify(source)}) did not throw`);
}

describe('compileTemplate placeholders', () => {
  it('fills top-level and dotted paths, with or without spaces inside the braces', () => {
    const template = compileTemplate('Hi {{name}}, from {{ company.address.city }}!', 'none');
    expect(template.render({ name: 'Ada', company: { address: { city: 'London' } } })).toBe(
      'Hi Ada, from London!',
    );
    expect(template.variables.sort()).toEqual(['company.address.city', 'name']);
  });

  it('renders the same placeholder as often as it appears and leaves text without placeholders alone', () => {
    expect(compileTemplate('{{ x }}-{{x}}-{{ x }}', 'none').render({ x: 7 })).toBe('7-7-7');
    expect(compileTemplate('no placeholders } here {', 'none').render({})).toBe('no placeholders } here {');
  });

  it('renders numbers, booleans and dates as text', () => {
    const template = compileTemplate('{{ n }} {{ yes }} {{ when }}', 'none');
    expect(template.render({ n: 0, yes: false, when: new Date('2024-05-01T10:00:00Z') })).toBe(
      '0 false 2024-05-01T10:00:00.000Z',
    );
  });

  it('renders a missing value, a null, or a path through a non-object as an empty string', () => {
    const template = compileTemplate(
      '[{{ missing }}|{{ gone.deeper }}|{{ nothing }}|{{ name.first }}]',
      'html',
    );
    expect(template.render({ nothing: null, name: 'Ada' })).toBe('[|||]');
  });
});

describe('compileTemplate escaping', () => {
  it('HTML-escapes values in html mode: tags, both quotes and ampersands', () => {
    const template = compileTemplate('<p title="{{ name }}">{{ name }}</p>', 'html');
    const value = `<script>alert("x")</script> & 'you'`;
    expect(template.render({ name: value })).toBe(
      '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;you&#39;">' +
        '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;you&#39;</p>',
    );
  });

  it('escapes an ampersand that already looks like an entity (values are text, not HTML)', () => {
    expect(compileTemplate('{{ v }}', 'html').render({ v: '&amp; &lt;' })).toBe('&amp;amp; &amp;lt;');
    expect(escapeHtml('&amp;')).toBe('&amp;amp;');
  });

  it('leaves the template text itself unescaped in html mode', () => {
    expect(compileTemplate('<b>&nbsp;{{ v }}</b>', 'html').render({ v: 'x' })).toBe('<b>&nbsp;x</b>');
  });

  it('percent-encodes values in url mode, so a value cannot add parameters or change the path', () => {
    const template = compileTemplate('https://example.com/u/{{ id }}?email={{ email }}', 'url');
    expect(template.render({ id: '../admin', email: 'a+b&c=d é@example.com' })).toBe(
      'https://example.com/u/..%2Fadmin?email=a%2Bb%26c%3Dd%20%C3%A9%40example.com',
    );
  });

  it('inserts values as they are in none mode', () => {
    expect(compileTemplate('{{ v }}', 'none').render({ v: `<b>"&'</b>` })).toBe(`<b>"&'</b>`);
  });

  it('inserts {{{ raw }}} values unescaped in html and url modes, and escapes the {{ }} ones next to them', () => {
    const html = compileTemplate('{{{ snippet }}} {{ snippet }}', 'html');
    expect(html.render({ snippet: '<em>hi</em>' })).toBe('<em>hi</em> &lt;em&gt;hi&lt;/em&gt;');
    const url = compileTemplate('{{{ base }}}?q={{ q }}', 'url');
    expect(url.render({ base: 'https://example.com/a b', q: 'a b' })).toBe('https://example.com/a b?q=a%20b');
  });

  it('renders a missing {{{ raw }}} value as an empty string', () => {
    expect(compileTemplate('<div>{{{ missing }}}</div>', 'html').render({})).toBe('<div></div>');
  });
});

describe('compileTemplate malformed placeholders', () => {
  it.each([
    ['an unclosed placeholder', 'Hi {{ name'],
    ['an empty placeholder', 'Hi {{ }}'],
    ['a path starting with a digit', 'Hi {{ 1st }}'],
    ['a space inside the path', 'Hi {{ first name }}'],
    ['a filter (not supported)', 'Hi {{ name | upper }}'],
    ['a call', 'Hi {{ name() }}'],
    ['an index', 'Hi {{ list[0] }}'],
    ['an empty path segment', 'Hi {{ a..b }}'],
    ['a raw placeholder closed by two braces', 'Hi {{{ name }}'],
    ['a placeholder closed by three braces', 'Hi {{ name }}}'],
  ])('rejects %s with a ValidationError naming the field', (_label, source) => {
    const error = compileError(source, 'html', 'template.html');
    expect(error.field).toBe('template.html');
    expect(error.message).toContain('template.html');
  });

  it('names the default field when none is given', () => {
    expect(compileError('{{ oops', 'none').field).toBe('template');
  });

  it('rejects a malformed placeholder even after valid ones', () => {
    const error = compileError('{{ a }} {{ b }} {{ c', 'none', 'template.subject');
    expect(error.field).toBe('template.subject');
    expect(error.message).toContain('{{ c');
  });
});

describe('compileTemplate runs no code', () => {
  it('does not reach constructors: {{ constructor.constructor }} and friends render empty', () => {
    const template = compileTemplate(
      '[{{ constructor.constructor }}|{{ constructor.name }}|{{ name.constructor }}|{{ company.constructor.constructor }}]',
      'none',
    );
    expect(template.render({ name: 'Ada', company: { city: 'London' } })).toBe('[|||]');
  });

  it('does not read inherited members: toString, valueOf, hasOwnProperty render empty', () => {
    const template = compileTemplate(
      '[{{ toString }}|{{ valueOf }}|{{ hasOwnProperty }}|{{ name.length }}]',
      'none',
    );
    expect(template.render({ name: 'Ada' })).toBe('[|||]');
  });

  it('does not follow __proto__ paths, and rendering them changes no prototype', () => {
    const template = compileTemplate(
      '[{{ __proto__ }}|{{ __proto__.polluted }}|{{ company.__proto__.toString }}|{{ constructor.prototype }}]',
      'html',
    );
    expect(template.render({ company: { city: 'London' } })).toBe('[|||]');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.hasOwn(Object.prototype, 'polluted')).toBe(false);
  });

  it('does not read getters a variables object inherits from its class', () => {
    let calls = 0;
    class Recipient {
      email = 'ada@example.com';
      get secret(): string {
        calls++;
        return 'leaked';
      }
    }
    const template = compileTemplate('{{ email }}:{{ secret }}', 'none');
    expect(template.render(new Recipient() as unknown as Record<string, unknown>)).toBe('ada@example.com:');
    expect(calls).toBe(0);
  });

  it('treats template text that looks like code as text', () => {
    // A JavaScript template literal, a shell command and an ERB tag: none of them is evaluated.
    const code = ['$', '{process.exit(1)}'].join('');
    const source = `${code} {{ name }} \`rm -rf\` <%= 1 + 1 %>`;
    expect(compileTemplate(source, 'none').render({ name: 'x' })).toBe(`${code} x \`rm -rf\` <%= 1 + 1 %>`);
  });
});

describe('compileTemplate size cap (issue 9)', () => {
  const MB = 1024 * 1024;

  it('stops a 1 MB value used 600 times at maxLength with a ValidationError naming the field, not a RangeError', () => {
    // Unbounded, this passed V8's string limit (2^29 - 24 characters): "RangeError: Invalid string length".
    const template = compileTemplate('{{ bio }}'.repeat(600), 'none', 'template.text');
    let thrown: unknown;
    try {
      template.render({ bio: 'x'.repeat(MB) });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ValidationError);
    expect(thrown).toMatchObject({
      field: 'template.text',
      message: `template.text renders to more than ${producerDefaults.maxMessageBytes} characters`,
    });
  });

  it('renders a result of exactly maxLength and refuses one character more', () => {
    const template = compileTemplate('ab{{ v }}', 'none', 'template.subject');
    expect(template.render({ v: 'cde' }, 5)).toBe('abcde');
    expect(() => template.render({ v: 'cdef' }, 5)).toThrow(
      'template.subject renders to more than 5 characters',
    );
  });

  it('counts the text as escaped: an HTML-escaped value longer than the cap is refused', () => {
    const template = compileTemplate('{{ v }}', 'html', 'template.html');
    // 4 characters, 16 once escaped.
    expect(() => template.render({ v: '<<<<' }, 10)).toThrow(ValidationError);
    expect(template.render({ v: '<<<<' }, 16)).toBe('&lt;&lt;&lt;&lt;');
  });

  it('refuses template text alone longer than the cap', () => {
    expect(() => compileTemplate('x'.repeat(11), 'none', 'template.text').render({}, 10)).toThrow(
      'template.text renders to more than 10 characters',
    );
  });
});
