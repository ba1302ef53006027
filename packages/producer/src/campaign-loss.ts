/** What campaigns do when Redis lost their records: refuse to resend, and say "lost" rather than "no such campaign". */
import { MailError, ValidationError } from '@mailroom/core';
import {
  CAMPAIGN_FIELDS,
  DataLossError,
  describeProgress,
  type LostCampaign,
  lostCampaign,
  lostCampaignField,
  type QueueKeys,
  readEpochMarker,
} from '@mailroom/core/protocol';
import type { Producer } from './producer.js';

const iso = (ms: number) => new Date(ms).toISOString();

/** How to send a lost campaign again on purpose, in the API's words and the CLI's. */
const START_OVER = 'start it over (startOver: true; CLI: mailroom campaign start --start-over)';

function lastKnown(lost: LostCampaign): string {
  const progress = describeProgress(lost);
  return progress === 'progress unknown' ? 'its progress then is unknown' : `last known: ${progress}`;
}

/**
 * The error for a campaign lost with Redis's data: `start` (nothing was enqueued), `status` (the
 * record is gone) or `enqueue` (enqueueing stopped when the loss was noticed).
 */
export function campaignLostError(
  producer: Producer,
  lost: LostCampaign,
  use: 'start' | 'status' | 'enqueue',
): DataLossError {
  const where = `Campaign ${JSON.stringify(lost.id)} on queue ${JSON.stringify(producer.queue)}`;
  const at = iso(lost.lostAt);
  const message =
    use === 'start'
      ? `${where} was lost with Redis's data at ${at}: its record, its progress and its list of ` +
        `recipients already sent to are gone (${lastKnown(lost)}). Nothing was enqueued: starting it ` +
        'again with the same id would send to every recipient again, including those already ' +
        `delivered. To send it to everyone anyway, ${START_OVER}; to reach only those not yet ` +
        'delivered, start it with a recipient list that leaves out the addresses your mail ' +
        "server's logs show as delivered."
      : use === 'status'
        ? `${where} was lost with Redis's data at ${at}: its record and progress are gone ` +
          `(${lastKnown(lost)}). Starting it again with the same id is refused unless you ` +
          `${START_OVER}, which sends to every recipient again.`
        : `Redis lost its data at ${at} while ${where.charAt(0).toLowerCase()}${where.slice(1)} was ` +
          'being enqueued: its record, its progress, its list of recipients already sent to and ' +
          `its waiting batches are gone (${lastKnown(lost)}); enqueueing stopped. Starting it again ` +
          `with the same id is refused unless you ${START_OVER}, which sends to every recipient again.`;
  return new DataLossError(message, { lostAt: lost.lostAt, campaign: lost });
}

/**
 * Runs before a campaign is registered. Looks at the epoch marker (creating it, or noticing a loss
 * this producer lived through). When the campaign has no record but the marker says it was lost
 * with Redis's data, throws {@link DataLossError} (code EDATALOST) and writes nothing: "starting an
 * id again resumes it" would otherwise send to everyone already delivered, because the list of
 * addresses sent to went with the record. With `startOver`, removes what writes after the loss left
 * under the campaign's keys and the loss entry, so that it starts afresh. `startOver` on a campaign
 * whose record exists throws ValidationError: it would resend a campaign that is not lost.
 */
export async function guardCampaignStart(
  producer: Producer,
  id: string,
  options: { startOver: boolean; name: string; keys: QueueKeys },
): Promise<void> {
  const { redis } = producer;
  // The campaign's own keys (its shard); the epoch marker is the queue's (home shard).
  const { keys } = options;
  await producer.epoch.check(true);
  const state = await redis.hget(keys.campaign(id), CAMPAIGN_FIELDS.state);
  if (state !== null) {
    if (options.startOver) {
      throw new ValidationError(
        `Campaign ${JSON.stringify(id)} exists (${state}): startOver is only for a campaign lost with ` +
          "Redis's data. Start it without startOver to resume it (nobody gets a second message), or use another id.",
        { field: 'startOver' },
      );
    }
  } else if (options.startOver) {
    // Batches in flight at the loss go on counting into the (recreated) hash: not the new run's.
    await redis.del(
      keys.campaign(id),
      keys.campaignFailures(id),
      keys.campaignRate(id),
      keys.campaignChunks(id),
    );
    await redis.hdel(producer.keys.epoch, lostCampaignField(id));
  } else {
    const lost = lostCampaign(producer.epoch.marker, id);
    if (lost) throw campaignLostError(producer, lost, 'start');
  }
  producer.epoch.noteCampaign(id, { name: options.name });
}

/**
 * The error for a campaign without a record: {@link DataLossError} when the epoch marker says it was
 * lost with Redis's data, else MailError ENOTFOUND.
 */
export async function missingCampaignError(producer: Producer, id: string): Promise<MailError> {
  const lost = lostCampaign(await readEpochMarker(producer.redis, producer.keys), id);
  if (lost) return campaignLostError(producer, lost, 'status');
  return new MailError(`No campaign ${JSON.stringify(id)} on queue ${producer.queue}`, { code: 'ENOTFOUND' });
}

/**
 * For the enqueueing loop, when the campaign's record vanished: throws {@link DataLossError} when
 * Redis lost its data since `since` (epoch ms; the loss is recorded naming this campaign), so that it
 * is not taken for a cancel. Returns when the record went some other way.
 */
export async function failIfCampaignLost(producer: Producer, id: string, since: number): Promise<void> {
  await producer.epoch.check(true);
  const loss = producer.epoch.lossSince(since);
  if (!loss) return;
  const lost = loss.campaigns.find((campaign) => campaign.id === id) ??
    lostCampaign(loss.marker, id) ?? { id, lostAt: loss.recorded.lostAt };
  throw campaignLostError(producer, lost, 'enqueue');
}
