/** Before a campaign is sent: its placeholders checked against the columns, one recipient previewed, the whole list dry-run. */
import { createHash } from 'node:crypto';
import { type EmailMessage, ValidationError } from '@mailroom/core';
import { SuppressionList } from '@mailroom/core/protocol';
import {
  buildMessage,
  type CampaignOptions,
  type CampaignRecipient,
  type CompiledCampaign,
  checkTemplate,
  compileCampaign,
  type InvalidRow,
  invalidRow,
  normalizeRecipient,
} from './campaign.js';
import { producerDefaults } from './defaults.js';
import { campaignPlaceholders, checkPlaceholders, type PlaceholderUse } from './placeholders.js';
import type { Producer } from './producer.js';
import type { TemplateVariables } from './template.js';

export { checkPlaceholders, type EmptyValuePolicy, type PlaceholderUse } from './placeholders.js';

/** What a campaign's message is made from: the options of startCampaign that shape a message. */
export type CampaignMessageOptions = Pick<
  CampaignOptions,
  'id' | 'template' | 'unsubscribe' | 'render' | 'columns' | 'emptyValues'
>;

/** Where and how a preview or dry run renders, when no producer says it. */
export interface CampaignCheckSettings {
  /** A producer: its queue signs the unsubscribe links, its maxMessageBytes caps the messages, its suppression list is looked up (dry run). */
  producer?: Producer;
  /** Queue the one-click links are signed for without a producer. Default producerDefaults.queue. */
  queue?: string;
  /** Message size cap without a producer. Default producerDefaults.maxMessageBytes. */
  maxMessageBytes?: number;
}

/** A rendered message of a campaign: the message and its wire form (an .eml file). */
export interface CampaignPreview {
  message: EmailMessage;
  /** The RFC 5322 bytes the recipient's server would receive (message.message()). */
  eml: Buffer;
}

interface Renderer {
  /** Every placeholder the templates use. */
  placeholders: PlaceholderUse[];
  /** Checks the placeholders against these columns (once the columns are known). */
  checkColumns(columns: readonly string[]): PlaceholderUse[];
  /** The checked message of a recipient; throws what makes the recipient an invalid row. */
  render(item: CampaignRecipient): { message: EmailMessage; eml: Buffer };
}

/** Compiles and checks the template once (as startCampaign does), for previews and dry runs. */
function renderer(options: CampaignMessageOptions, settings: CampaignCheckSettings): Renderer {
  const queue = settings.producer?.queue ?? settings.queue ?? producerDefaults.queue;
  const maxMessageBytes =
    settings.producer?.options.maxMessageBytes ??
    settings.maxMessageBytes ??
    producerDefaults.maxMessageBytes;
  // The campaign id only goes into the signed unsubscribe tokens.
  const compiled: CompiledCampaign | undefined = options.render
    ? undefined
    : compileCampaign(options, queue, options.id ?? 'preview');
  if (compiled) checkTemplate(compiled, options.template, maxMessageBytes);
  return {
    placeholders: compiled ? campaignPlaceholders(options.template, options.unsubscribe) : [],
    checkColumns: (columns) => (compiled ? checkPlaceholders(options, columns) : []),
    render(item) {
      const { message } = buildMessage(compiled, options, normalizeRecipient(item), item, maxMessageBytes);
      return { message, eml: message.message() };
    },
  };
}

/** The columns of a recipient given as an object (its keys); a bare address has none to check. */
function columnsOf(item: CampaignRecipient): string[] | undefined {
  return item !== null && typeof item === 'object' ? Object.keys(item) : undefined;
}

/**
 * Renders a campaign's message for one recipient exactly as startCampaign would (same templates,
 * checks, signed unsubscribe link). The placeholders are checked against `options.columns`, else the
 * recipient's own keys. Throws ValidationError for a bad template or placeholder (naming the template
 * field), and for a recipient whose message cannot be built: its message and field are those
 * startCampaign would record as an invalid row (`to`, `subject`, `placeholder.name`...).
 */
export function previewCampaign(
  options: CampaignMessageOptions,
  recipient: CampaignRecipient,
  settings: CampaignCheckSettings = {},
): CampaignPreview {
  const render = renderer(options, settings);
  const columns = options.columns ?? columnsOf(recipient);
  if (columns !== undefined) render.checkColumns(columns);
  try {
    return render.render(recipient);
  } catch (error) {
    const row = invalidRow(1, normalizeRecipient(recipient).email, error);
    throw new ValidationError(`${row.field}: ${row.reason}`, { field: row.field, cause: error });
  }
}

/** Options of {@link dryRunCampaign}: startCampaign's, without the ones about sending. */
export interface DryRunOptions extends CampaignMessageOptions {
  /** The recipients, streamed as startCampaign reads them. */
  recipients: AsyncIterable<CampaignRecipient> | Iterable<CampaignRecipient>;
  /** Invalid rows kept in the summary (all are counted). Default 100. */
  invalidRowsKept?: number;
  /** Called for each invalid recipient, with the item as `recipients` gave it. */
  onInvalid?: (row: InvalidRow, recipient: CampaignRecipient) => void;
  /** Stops reading; the summary then covers what was read. */
  signal?: AbortSignal;
}

/** What a campaign would do with its recipients; see {@link dryRunCampaign}. */
export interface DryRunSummary {
  /** Recipients read (duplicates included). */
  recipients: number;
  /** Distinct recipients whose message renders and passes every check enqueue makes. */
  valid: number;
  /** Distinct recipients whose message could not be built (startCampaign counts them failed `invalid`). */
  invalid: number;
  /** The first `invalidRowsKept` invalid recipients, with row, field and reason. */
  invalidRows: InvalidRow[];
  /** Recipients skipped because their address came before (case-insensitive). */
  duplicates: number;
  /** Recipients on the suppression list; undefined without a producer (not looked up). */
  suppressed: number | undefined;
  /** The columns the placeholders were checked against; undefined when the recipients are bare addresses. */
  columns: string[] | undefined;
  /** Every placeholder the templates use, with its field. */
  placeholders: PlaceholderUse[];
  /** False when `signal` stopped the reading early. */
  complete: boolean;
}

/** Recipients rendered per suppression lookup: one round trip per this many. */
const LOOKUP_CHUNK = 500;

/**
 * Reads every recipient and checks everything startCampaign would, without writing anything: the
 * placeholders against the columns (`options.columns`, else the first object recipient's keys),
 * each message rendered and checked (address, sizes, headers, empty values), duplicates counted and,
 * given a producer, suppressed addresses looked up (read-only). Streams: one chunk of recipients in
 * memory, plus 8 bytes of hash per distinct address to count duplicates (a false duplicate is a
 * 64-bit hash collision: about 1 in 10^7 for a million addresses). Throws ValidationError for a bad
 * template or placeholder, as startCampaign would, before the second recipient is read.
 */
export async function dryRunCampaign(
  options: DryRunOptions,
  settings: CampaignCheckSettings = {},
): Promise<DryRunSummary> {
  const render = renderer(options, settings);
  const kept = options.invalidRowsKept ?? 100;
  const suppression = settings.producer
    ? new SuppressionList(settings.producer.redis, settings.producer.keys)
    : undefined;
  if (settings.producer) await settings.producer.ready();
  const seen = new Set<string>();
  const summary: DryRunSummary = {
    recipients: 0,
    valid: 0,
    invalid: 0,
    invalidRows: [],
    duplicates: 0,
    suppressed: suppression ? 0 : undefined,
    columns: options.columns === undefined ? undefined : [...options.columns],
    placeholders: render.placeholders,
    complete: true,
  };
  if (options.columns !== undefined) render.checkColumns(options.columns);
  let checkedColumns = options.columns !== undefined;
  let chunk: { item: CampaignRecipient; recipient: { email: string } & TemplateVariables; row: number }[] =
    [];

  const flush = async () => {
    const records = suppression ? await suppression.lookup(chunk.map((c) => c.recipient.email)) : [];
    chunk.forEach(({ item, recipient, row }, index) => {
      if (records[index] !== undefined) {
        summary.suppressed = (summary.suppressed ?? 0) + 1;
        return;
      }
      try {
        render.render(item);
        summary.valid++;
      } catch (error) {
        const invalid = invalidRow(row, recipient.email, error);
        summary.invalid++;
        if (summary.invalidRows.length < kept) summary.invalidRows.push(invalid);
        options.onInvalid?.(invalid, item);
      }
    });
    chunk = [];
  };

  for await (const item of options.recipients) {
    if (options.signal?.aborted) {
      summary.complete = false;
      break;
    }
    if (!checkedColumns) {
      checkedColumns = true;
      const columns = columnsOf(item);
      if (columns !== undefined) {
        summary.columns = columns;
        render.checkColumns(columns);
      }
    }
    summary.recipients++;
    const recipient = normalizeRecipient(item);
    // 8 bytes of SHA-1 per address, not the address: a million recipients take about 45 MB.
    const key = createHash('sha1').update(recipient.email.toLowerCase()).digest().toString('latin1', 0, 8);
    if (seen.has(key)) {
      summary.duplicates++;
      continue;
    }
    seen.add(key);
    chunk.push({ item, recipient, row: summary.recipients });
    if (chunk.length >= LOOKUP_CHUNK) await flush();
  }
  if (chunk.length > 0) await flush();
  return summary;
}
