/** The placeholders a campaign's templates use, checked against the recipients' columns and values. */
import { ValidationError } from '@mailroom/core';
import type { CampaignTemplate, CampaignUnsubscribe } from './campaign.js';
import { compileTemplate, type TemplateVariables } from './template.js';

/** A placeholder and the template field that uses it. */
export interface PlaceholderUse {
  /** The template field: `template.subject`, `template.text`, `template.html`, `template.headers.<Name>`, `unsubscribe.url`, `unsubscribe.mailto`. */
  field: string;
  /** The dotted path inside the braces: `name`, `plan.renews`. */
  placeholder: string;
}

/** What a recipient's value for a used placeholder may be: `error` (missing or empty: an invalid row), `allow` (rendered empty). */
export type EmptyValuePolicy = 'error' | 'allow';

/** The columns every recipient has whatever its data: its address. */
const ALWAYS_PRESENT = 'email';
/** Filled by mailroom itself, per recipient, when `unsubscribe.endpoint` is set. */
const SIGNED_LINK = 'unsubscribe_url';

/**
 * Every placeholder of a campaign's templates, in the order subject, text, html, headers,
 * unsubscribe.url, unsubscribe.mailto. Throws ValidationError naming the field for a malformed
 * placeholder (as startCampaign does).
 */
export function campaignPlaceholders(
  template: CampaignTemplate,
  unsubscribe?: CampaignUnsubscribe,
): PlaceholderUse[] {
  const sources: [string, string | undefined][] = [
    ['template.subject', template.subject],
    ['template.text', template.text],
    ['template.html', template.html],
    ...Object.entries(template.headers ?? {}).map(([name, value]): [string, string] => [
      `template.headers.${name}`,
      value,
    ]),
    ['unsubscribe.url', unsubscribe?.url],
    ['unsubscribe.mailto', unsubscribe?.mailto],
  ];
  const uses: PlaceholderUse[] = [];
  for (const [field, source] of sources) {
    if (typeof source !== 'string') continue;
    for (const placeholder of compileTemplate(source, 'none', field).variables)
      uses.push({ field, placeholder });
  }
  return uses;
}

/** The column a placeholder reads: the first segment of its path (`plan` of `plan.name`). */
function columnOf(placeholder: string): string {
  return placeholder.split('.', 1)[0] as string;
}

/**
 * Checks that every placeholder of the templates reads a column the recipients have (the first
 * segment of its path: `{{ plan.name }}` needs a `plan` column). `email` always exists,
 * `unsubscribe_url` when `unsubscribe.endpoint` is set. Returns the placeholders used. Throws one
 * ValidationError naming the field of the first unknown placeholder and listing every unknown one,
 * with a hint when a column differs only in case (`{{ name }}` vs `Name`) or by a small typo
 * (`{{ nmae }}` vs `name`).
 */
export function checkPlaceholders(
  options: { template: CampaignTemplate; unsubscribe?: CampaignUnsubscribe | undefined },
  columns: readonly string[],
): PlaceholderUse[] {
  const uses = campaignPlaceholders(options.template, options.unsubscribe);
  const known = new Set([...columns, ALWAYS_PRESENT]);
  if (options.unsubscribe?.endpoint !== undefined) known.add(SIGNED_LINK);
  const unknown = uses.filter(({ placeholder }) => !known.has(columnOf(placeholder)));
  const first = unknown[0];
  if (first === undefined) return uses;
  const problems = unknown.slice(0, 5).map(({ field, placeholder }) => {
    const hint = columnHint(columnOf(placeholder), [...known]);
    return `${field} uses {{ ${placeholder} }}, which matches no recipient column${hint}`;
  });
  const more = unknown.length > problems.length ? `; and ${unknown.length - problems.length} more` : '';
  const listed = [...known].slice(0, 20).join(', ');
  throw new ValidationError(`${problems.join('; ')}${more} (columns: ${listed})`, { field: first.field });
}

/** ` (did you mean Name? placeholders are case-sensitive)`, ` (did you mean name?)`, or ''. */
function columnHint(column: string, known: readonly string[]): string {
  const sameLetters = known.find((candidate) => candidate.toLowerCase() === column.toLowerCase());
  if (sameLetters !== undefined) return ` (did you mean ${sameLetters}? placeholders are case-sensitive)`;
  // Within 1 edit for names of up to 4 characters, 2 beyond: a wild guess helps nobody.
  const limit = column.length <= 4 ? 1 : 2;
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const candidate of known) {
    const distance = editDistance(column.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best === undefined ? '' : ` (did you mean ${best}?)`;
}

/**
 * The optimal string alignment distance: insertions, deletions, substitutions and transpositions of
 * two neighbours cost 1, so `nmae` is 1 from `name` (as the CLI's flag suggestions count).
 */
function editDistance(a: string, b: string): number {
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(
        (previous[j] as number) + 1,
        (current[j - 1] as number) + 1,
        (previous[j - 1] as number) + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, (before[j - 2] as number) + 1);
      }
      current.push(best);
    }
    before = previous;
    previous = current;
  }
  return previous[b.length] as number;
}

/**
 * The placeholders whose values the empty-value policy checks for each recipient: every one used,
 * except `email` (an empty address is judged as an address) and the signed `unsubscribe_url`.
 */
export function valuePlaceholders(
  uses: readonly PlaceholderUse[],
  unsubscribe?: CampaignUnsubscribe,
): string[] {
  const paths = new Set<string>();
  for (const { placeholder } of uses) {
    if (placeholder === ALWAYS_PRESENT) continue;
    if (placeholder === SIGNED_LINK && unsubscribe?.endpoint !== undefined) continue;
    paths.add(placeholder);
  }
  return [...paths];
}

function lookup(values: TemplateVariables, path: string): unknown {
  let value: unknown = values;
  for (const key of path.split('.')) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

/**
 * Under the `error` policy: throws ValidationError (field `placeholder.<path>`) when the recipient
 * has no value, or only whitespace, for one of `paths` — it would get a message with a blank where
 * its name should be.
 */
export function checkPlaceholderValues(paths: readonly string[], recipient: TemplateVariables): void {
  for (const path of paths) {
    const value = lookup(recipient, path);
    if (value === undefined || value === null || (typeof value === 'string' && value.trim() === '')) {
      throw new ValidationError(
        `no value for {{ ${path} }} (emptyValues 'error'; 'allow' renders it empty)`,
        { field: `placeholder.${path}` },
      );
    }
  }
}
