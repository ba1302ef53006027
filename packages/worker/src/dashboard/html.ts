/** The dashboard's one HTML template helper: a tagged template that escapes every value it is given. */
import { escapeHtml } from '@mailroom/producer';

/** HTML that is already safe to write as it is: what {@link html} returns, or {@link raw} marks. */
export class SafeHtml {
  readonly #text: string;
  constructor(text: string) {
    this.#text = text;
  }
  toString(): string {
    return this.#text;
  }
}

/** A value a template takes: text and numbers are escaped, SafeHtml is kept, arrays are joined, null/undefined/false write nothing. */
export type HtmlValue = SafeHtml | string | number | boolean | null | undefined | readonly HtmlValue[];

function render(value: HtmlValue): string {
  if (value === null || value === undefined || value === false) return '';
  if (value instanceof SafeHtml) return value.toString();
  if (Array.isArray(value)) return value.map((item: HtmlValue) => render(item)).join('');
  // Everything read from Redis (campaign names, addresses, SMTP replies) comes through here.
  return escapeHtml(String(value));
}

/**
 * `html\`<td>${value}</td>\``: the literal parts are written as they are, every interpolated value is
 * HTML-escaped (quotes too, so a value is safe inside a quoted attribute) unless it is SafeHtml.
 */
export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): SafeHtml {
  let out = strings[0] ?? '';
  values.forEach((value, index) => {
    out += render(value) + (strings[index + 1] ?? '');
  });
  return new SafeHtml(out);
}

/** Marks text the dashboard wrote itself (never anything read from Redis or a request) as HTML. */
export function raw(text: string): SafeHtml {
  return new SafeHtml(text);
}
