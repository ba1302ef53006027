/** Campaign templates: `{{ path }}` placeholders, escaped for their output, with a size cap; no code runs. */
import { ValidationError } from '@mailroom/core';
import { producerDefaults } from './defaults.js';

/** Per-recipient values a template can use: `{{ name }}`, `{{ company.city }}`. */
export type TemplateVariables = Record<string, unknown>;

/** How a value is written into the output. */
export type Escape = 'none' | 'html' | 'url';

type Part = string | { path: string[]; raw: boolean };

/** A template compiled once and rendered per recipient (plain string concatenation). */
export interface CompiledTemplate {
  readonly source: string;
  /** Variable paths the template uses. */
  readonly variables: string[];
  /**
   * Fills the placeholders from `variables`. Throws ValidationError naming the template's field when
   * the result would be longer than `maxLength` characters (UTF-16 code units; default
   * producerDefaults.maxMessageBytes), before the longer string is built.
   */
  render(variables: TemplateVariables, maxLength?: number): string;
}

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => HTML_ESCAPES[char] as string);
}

function lookup(variables: TemplateVariables, path: string[]): unknown {
  let value: unknown = variables;
  for (const key of path) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function stringify(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/**
 * Compiles a template with `{{ path }}` placeholders (dotted paths into the recipient's variables).
 * Values are escaped for the output (`html`: HTML-escaped; `url`: percent-encoded; `none`: as is),
 * except in `{{{ path }}}`, which inserts the value unescaped (for trusted HTML only). A missing
 * value renders as an empty string, as in Django templates. Nothing in a template runs code.
 */
export function compileTemplate(source: string, escaping: Escape, field = 'template'): CompiledTemplate {
  const parts: Part[] = [];
  const variables = new Set<string>();
  const pattern = /\{\{(\{)?\s*([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)\s*(\})?\}\}/g;
  let last = 0;
  for (const match of source.matchAll(pattern)) {
    const raw = match[1] === '{';
    if (raw !== (match[3] === '}')) {
      throw new ValidationError(`${field}: unbalanced braces in ${JSON.stringify(match[0])}`, { field });
    }
    parts.push(source.slice(last, match.index));
    parts.push({ path: (match[2] as string).split('.'), raw });
    variables.add(match[2] as string);
    last = match.index + match[0].length;
  }
  parts.push(source.slice(last));
  const leftover = parts.find((part) => typeof part === 'string' && part.includes('{{'));
  if (leftover !== undefined) {
    const at = (leftover as string).slice(
      (leftover as string).indexOf('{{'),
      (leftover as string).indexOf('{{') + 30,
    );
    throw new ValidationError(`${field}: malformed placeholder near ${JSON.stringify(at)}`, { field });
  }
  const encode =
    escaping === 'html' ? escapeHtml : escaping === 'url' ? encodeURIComponent : (text: string) => text;
  return {
    source,
    variables: [...variables],
    render(values, maxLength = producerDefaults.maxMessageBytes) {
      // Checked before every append: a 1 MB value used 600 times would otherwise grow a string to
      // V8's limit (2^29 - 24 characters) and die there with an unnamed "RangeError: Invalid string
      // length", after holding hundreds of MB. Escaping never shortens a value, so the raw length is
      // checked before it is escaped too.
      const tooLong = () =>
        new ValidationError(`${field} renders to more than ${maxLength} characters`, { field });
      let out = '';
      for (const part of parts) {
        let text = typeof part === 'string' ? part : stringify(lookup(values, part.path));
        if (out.length + text.length > maxLength) throw tooLong();
        if (typeof part !== 'string' && !part.raw) text = encode(text);
        if (out.length + text.length > maxLength) throw tooLong();
        out += text;
      }
      return out;
    },
  };
}
