/** The dashboard's pages: server-rendered HTML, every value from Redis escaped by the html helper. */
import { SUPPRESSION_REASONS, type Suppression } from '@mailroom/core/protocol';
import type { CampaignFailure, CampaignStatus } from '@mailroom/producer';
import { formatCount, formatSeconds } from '../cli/common.js';
import { formatRate, percentDone } from '../cli/progress.js';
import type { FailedJobList } from '../dead-letters.js';
import type { CampaignRow, DeadLetter, Overview, OverviewState, SuppressionSearch } from './data.js';
import { OVERVIEW_STATES } from './data.js';
import { html, type SafeHtml } from './html.js';

/** What every page's frame needs from the request. */
export interface PageContext {
  /** The CSRF token of the session, for every form; '' when there is no session (an API client). */
  csrf: string;
  /** Show the logout button (token logins only: a Basic login ends with the browser). */
  canLogout: boolean;
  flash?: { kind: 'ok' | 'error'; text: string } | undefined;
}

type Section = 'queues' | 'campaigns' | 'dead-letters' | 'suppression';

const NAV: [Section | 'jobs', string, string][] = [
  ['queues', 'Queues', '/'],
  ['campaigns', 'Campaigns', '/campaigns'],
  ['dead-letters', 'Dead letters', '/dead-letters'],
  ['suppression', 'Suppression', '/suppression'],
  ['jobs', 'Jobs', '/jobs/'],
];

/** `2026-01-31 12:00:00 UTC`, or `--`. */
export function formatTime(ms: number | null | undefined): string {
  if (!ms) return '--';
  return new Date(ms)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, ' UTC');
}

/** The hidden CSRF field of a form. */
function csrfField(context: PageContext): SafeHtml {
  return html`<input type="hidden" name="csrf" value="${context.csrf}">`;
}

/** A POST form of one button. */
function actionForm(
  context: PageContext,
  action: string,
  name: string,
  label: string,
  options: { confirm?: string; danger?: boolean; fields?: Record<string, string> } = {},
): SafeHtml {
  const fields = Object.entries(options.fields ?? {}).map(
    ([field, value]) => html`<input type="hidden" name="${field}" value="${value}">`,
  );
  return html`<form method="post" action="${action}" data-action="${name}"${options.confirm ? html` data-confirm="${options.confirm}"` : ''}>${csrfField(context)}${fields}<button type="submit"${options.danger ? html` class="danger"` : ''}>${label}</button></form>`;
}

/** The frame of every page: head (CSP-safe: no inline script or style), header with the nav, flash. */
export function layout(
  context: PageContext,
  options: { title: string; section?: Section; live?: { url: string; kind: string; interval: number } },
  content: SafeHtml,
): string {
  const nav = NAV.map(
    ([section, label, href]) =>
      html`<a href="${href}"${section === options.section ? html` aria-current="page"` : ''}>${label}</a>`,
  );
  const logout = context.canLogout
    ? html`<form method="post" action="/logout" data-action="logout">${csrfField(context)}<button type="submit">Log out</button></form>`
    : '';
  const flash = context.flash
    ? html`<p class="flash${context.flash.kind === 'error' ? ' error' : ''}" role="status">${context.flash.text}</p>`
    : '';
  const live = options.live
    ? html` data-live="${options.live.url}" data-kind="${options.live.kind}" data-interval="${options.live.interval}"`
    : '';
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>${options.title} · mailroom</title>
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard.js" defer></script>
</head>
<body>
<header><span class="brand">mailroom</span><nav aria-label="Sections">${nav}</nav>${logout}</header>
<main${live}>
${flash}${content}
</main>
</body>
</html>
`.toString();
}

/** The login form (token mode), with a message after a wrong token. */
export function loginPage(error: string | undefined): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>Log in · mailroom</title>
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body>
<main class="login">
<h1>mailroom dashboard</h1>
${error ? html`<p class="flash error" role="alert">${error}</p>` : ''}
<form id="login" method="post" action="/login">
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
<p class="muted">The token is the value of MAILROOM_DASHBOARD_TOKEN where the dashboard runs.</p>
</main>
</body>
</html>
`.toString();
}

/** A short page for an error (404, 400, 403...). */
export function messagePage(context: PageContext, title: string, text: string, back?: string): string {
  return layout(
    context,
    { title },
    html`<h1>${title}</h1><p>${text}</p>${back ? html`<p><a href="${back}">Back</a></p>` : ''}`,
  );
}

const STATE_LABELS: Record<OverviewState, string> = {
  waiting: 'Waiting',
  delayed: 'Delayed (retries, scheduled)',
  active: 'Active (in flight)',
  failed: 'Failed (dead letters)',
  completed: 'Completed',
};

/** `GET /`: batches and messages per state, the send rate, the live workers. */
export function overviewPage(context: PageContext, overview: Overview): string {
  const cards = OVERVIEW_STATES.map((state) => {
    const { batches, messages } = overview.states[state];
    return html`<li class="card"><span class="label">${STATE_LABELS[state]}</span><span class="value" data-state="${state}">${batches}</span><span class="sub" data-messages="${state}">${messages === null ? 'batches' : `${formatCount(messages)} messages`}</span></li>`;
  });
  const workers = overview.workers.map(
    (worker) =>
      html`<tr data-worker="${worker.id}"><td class="wrap" data-label="Worker">${worker.id}</td><td data-label="Host">${worker.host}</td><td data-label="PID">${worker.pid}</td><td data-label="Batches at once">${worker.concurrency}</td><td data-label="Version">${worker.version}</td><td data-label="Up since">${formatTime(worker.startedAt)}</td><td data-label="Last seen">${formatTime(worker.lastSeenAt)}</td></tr>`,
  );
  return layout(
    context,
    { title: 'Queues', section: 'queues', live: { url: '/api/overview', kind: 'overview', interval: 2000 } },
    html`<h1>Queue ${overview.queue}</h1>
<ul class="cards" id="queue-counts">${cards}</ul>
<ul class="cards">
<li class="card"><span class="label">Sent per second (10 s, campaigns)</span><span class="value" id="queue-rate">${formatRate(overview.rate)}</span></li>
<li class="card"><span class="label">Batches in flight</span><span class="value" id="queue-in-flight">${overview.states.active.batches}</span><span class="sub">one SMTP connection each</span></li>
<li class="card"><span class="label">Live workers</span><span class="value" id="worker-count">${overview.workers.length}</span></li>
<li class="card"><span class="label">Running campaigns</span><span class="value" id="queue-running-campaigns">${overview.runningCampaigns}</span></li>
</ul>
<h2>Live workers</h2>
<table id="workers" class="stack"><thead><tr><th>Worker</th><th>Host</th><th>PID</th><th>Batches at once</th><th>Version</th><th>Up since</th><th>Last seen</th></tr></thead>
<tbody>${workers.length > 0 ? workers : html`<tr><td colspan="7">No live worker: nothing is being sent.</td></tr>`}</tbody></table>
<p class="muted" id="live-status">live</p>`,
  );
}

/** `GET /campaigns`: every campaign of the queue, newest first. */
export function campaignsPage(context: PageContext, rows: CampaignRow[]): string {
  const body = rows.map(
    (row) =>
      html`<tr data-campaign="${row.id}"><td class="wrap" data-label="Campaign"><a href="/campaigns/${encodeURIComponent(row.id)}">${row.id}</a></td><td class="wrap" data-label="Name">${row.name}</td><td data-label="State"><span class="state state-${row.state}">${row.state}</span></td><td class="num" data-label="Done">${row.percent}%</td><td class="num" data-label="Sent">${formatCount(row.sent)}</td><td class="num" data-label="Failed">${formatCount(row.failed)}</td><td class="num" data-label="Total">${formatCount(row.total)}</td><td data-label="Started">${formatTime(row.startedAt)}</td></tr>`,
  );
  return layout(
    context,
    { title: 'Campaigns', section: 'campaigns' },
    html`<h1>Campaigns</h1>
<table id="campaigns" class="stack"><thead><tr><th>Campaign</th><th>Name</th><th>State</th><th class="num">Done</th><th class="num">Sent</th><th class="num">Failed</th><th class="num">Total</th><th>Started</th></tr></thead>
<tbody>${body.length > 0 ? body : html`<tr><td colspan="8">No campaign on this queue (campaigns are kept 30 days).</td></tr>`}</tbody></table>`,
  );
}

/** `GET /campaigns/<id>`: live progress, counts by outcome, actions, failures. */
export function campaignPage(
  context: PageContext,
  status: CampaignStatus,
  failures: { failures: CampaignFailure[]; more: boolean },
): string {
  const id = status.id;
  const base = `/campaigns/${encodeURIComponent(id)}`;
  const total = Math.max(status.total, status.enqueueFinished ? 0 : (status.expectedTotal ?? 0));
  const settled = status.sent + status.failed + status.cancelled;
  const active = status.state === 'running' || status.state === 'paused';
  const reasons = Object.entries(status.failedByReason).sort(([a], [b]) => a.localeCompare(b));
  const failureRows = failures.failures.map(
    (failure) =>
      html`<tr data-address="${failure.address}"><td class="wrap" data-label="Address">${failure.address}</td><td data-label="Reason">${failure.reason}${failure.transient ? ' (transient)' : ''}</td><td class="num" data-label="Code">${failure.code ?? ''}</td><td class="wrap" data-label="Reply">${failure.reply ?? ''}</td><td class="num" data-label="Attempts">${failure.attempts}</td><td data-label="When">${formatTime(failure.at)}</td></tr>`,
  );
  const invalidRows = status.invalidRows.map(
    (row) =>
      html`<tr><td data-label="Row" class="num">${row.row}</td><td class="wrap" data-label="Address">${row.email}</td><td data-label="Field">${row.field}</td><td class="wrap" data-label="Why">${row.reason}</td></tr>`,
  );
  return layout(
    context,
    {
      title: `Campaign ${id}`,
      section: 'campaigns',
      live: { url: `/api/campaigns/${encodeURIComponent(id)}`, kind: 'campaign', interval: 1000 },
    },
    html`<h1>Campaign ${status.name === id ? id : html`${status.name} <span class="muted">(${id})</span>`}</h1>
<p><span id="campaign-state" class="state state-${status.state}">${status.state}</span> <span class="muted" id="live-status">live</span></p>
${status.enqueueError ? html`<p class="flash error">Reading the recipients stopped: ${status.enqueueError}</p>` : ''}
<progress id="campaign-progress" value="${Math.min(settled, Math.max(total, 1))}" max="${Math.max(total, 1)}">${percentDone(status)}%</progress>
<div class="progress-line"><strong id="campaign-percent">${percentDone(status)}%</strong><span>Rate <span id="campaign-rate">${formatRate(status.rate)}</span></span><span>ETA <span id="campaign-eta">${active ? formatSeconds(status.etaSeconds) : '--'}</span></span></div>
<ul class="cards">
<li class="card"><span class="label">Sent</span><span class="value" id="campaign-sent">${formatCount(status.sent)}</span></li>
<li class="card"><span class="label">Failed</span><span class="value" id="campaign-failed">${formatCount(status.failed)}</span></li>
<li class="card"><span class="label">Cancelled</span><span class="value" id="campaign-cancelled">${formatCount(status.cancelled)}</span></li>
<li class="card"><span class="label">Remaining</span><span class="value" id="campaign-remaining">${formatCount(status.remaining)}</span></li>
<li class="card"><span class="label">Total</span><span class="value" id="campaign-total">${formatCount(status.total)}</span>${status.expectedTotal !== undefined && !status.enqueueFinished ? html`<span class="sub">of ${formatCount(status.expectedTotal)} expected</span>` : ''}</li>
<li class="card"><span class="label">Enqueued</span><span class="value" id="campaign-queued">${formatCount(status.queued)}</span></li>
</ul>
<div class="actions">
${actionForm(context, `${base}/pause`, 'pause', 'Pause')}
${actionForm(context, `${base}/resume`, 'resume', 'Resume')}
${actionForm(context, `${base}/cancel`, 'cancel', 'Cancel', { confirm: `Cancel campaign ${id}? Nothing more of it will be sent.`, danger: true })}
${actionForm(context, `${base}/retry-transient`, 'retry-transient', 'Retry transient failures')}
</div>
<h2>Outcomes</h2>
<table id="outcomes" class="stack"><thead><tr><th>Outcome</th><th class="num">Messages</th></tr></thead><tbody>
<tr><td data-label="Outcome">sent</td><td class="num" data-label="Messages">${formatCount(status.sent)}</td></tr>
${reasons.map(([reason, count]) => html`<tr><td data-label="Outcome">failed: ${reason}</td><td class="num" data-label="Messages" data-reason="${reason}">${formatCount(count)}</td></tr>`)}
<tr><td data-label="Outcome">cancelled</td><td class="num" data-label="Messages">${formatCount(status.cancelled)}</td></tr>
<tr><td data-label="Outcome">duplicates skipped</td><td class="num" data-label="Messages">${formatCount(status.duplicates)}</td></tr>
<tr><td data-label="Outcome">suppressed skipped</td><td class="num" data-label="Messages">${formatCount(status.suppressed)}</td></tr>
</tbody></table>
<dl class="headers">
<dt>Started</dt><dd id="campaign-started">${formatTime(status.startedAt)}</dd>
<dt>Finished</dt><dd id="campaign-finished">${formatTime(status.finishedAt)}</dd>
${status.sendAt ? html`<dt>Sends from</dt><dd>${formatTime(status.sendAt)}</dd>` : ''}
</dl>
<h2>Failures</h2>
<p class="muted" id="failures-stale"></p>
<table id="failures" class="stack" data-failed="${status.failed}"><thead><tr><th>Address</th><th>Reason</th><th class="num">Code</th><th>Reply</th><th class="num">Attempts</th><th>When</th></tr></thead>
<tbody>${failureRows.length > 0 ? failureRows : html`<tr><td colspan="6">No failed recipient.</td></tr>`}</tbody></table>
${failures.more ? html`<p class="muted">Showing the newest of the first ${failures.failures.length} failures read. All of them: <code>mailroom campaign failures ${id} --csv</code>.</p>` : ''}
${invalidRows.length > 0 ? html`<h2>Invalid recipients</h2><table id="invalid" class="stack"><thead><tr><th class="num">Row</th><th>Address</th><th>Field</th><th>Why</th></tr></thead><tbody>${invalidRows}</tbody></table>` : ''}`,
  );
}

/** `GET /dead-letters`: the newest failed batch jobs. */
export function deadLettersPage(context: PageContext, list: FailedJobList): string {
  const rows = list.jobs.map(
    (job) =>
      html`<tr data-job="${job.id}"><td class="wrap" data-label="Job"><a href="/dead-letters/${encodeURIComponent(job.id)}">${job.id}</a></td><td data-label="Failed at">${job.failedAt ? formatTime(Date.parse(job.failedAt)) : '--'}</td><td class="num" data-label="Messages">${job.messages}</td><td data-label="Failed">${job.failures.length}</td><td class="wrap" data-label="Campaign">${job.campaign ?? ''}</td><td class="wrap" data-label="Reason">${job.failedReason}</td></tr>`,
  );
  return layout(
    context,
    { title: 'Dead letters', section: 'dead-letters' },
    html`<h1>Dead letters</h1>
<p class="muted">Batch jobs that failed for good: ${formatCount(list.total)} in all${list.total > list.jobs.length ? html`, the newest ${list.jobs.length} shown` : ''}. A retry sends again only what was not delivered and was not refused for good.</p>
<table id="dead-letters" class="stack"><thead><tr><th>Job</th><th>Failed at</th><th class="num">Messages</th><th>Failed</th><th>Campaign</th><th>Reason</th></tr></thead>
<tbody>${rows.length > 0 ? rows : html`<tr><td colspan="6">No dead letter.</td></tr>`}</tbody></table>`,
  );
}

/** `GET /dead-letters/<id>`: each message's headers and outcome (never its body), retry and delete. */
export function deadLetterPage(context: PageContext, job: DeadLetter): string {
  const base = `/dead-letters/${encodeURIComponent(job.id)}`;
  const messages =
    job.messages === null
      ? html`<p class="flash error">The payload of this job cannot be read: it has no messages to show or send.</p>`
      : job.messages.map(
          (message) =>
            html`<section class="message" data-message="${message.index}"><h2>Message ${message.index + 1}: <span class="state">${message.outcome}</span></h2>
<dl class="headers">${message.headers.map(([name, value]) => html`<dt>${name}</dt><dd>${value}</dd>`)}</dl>
${message.reason || message.detail ? html`<p>${message.reason ?? ''}${message.code ? html` ${message.code}` : ''}${message.detail ? html`: ${message.detail}` : ''}</p>` : ''}
<p class="muted">Body not shown${message.alternatives > 0 ? html`; ${message.alternatives} alternative part(s)` : ''}${message.attachments > 0 ? html`; ${message.attachments} attachment(s)` : ''}.</p></section>`,
        );
  return layout(
    context,
    { title: `Dead letter ${job.id}`, section: 'dead-letters' },
    html`<h1>Dead letter ${job.id}</h1>
<dl class="headers">
<dt>State</dt><dd id="job-state">${job.state}</dd>
<dt>Failed at</dt><dd>${formatTime(job.failedAt)}</dd>
<dt>Reason</dt><dd>${job.failedReason}</dd>
<dt>Attempts</dt><dd>${job.attempts}</dd>
<dt>Campaign</dt><dd>${job.campaign ? html`<a href="/campaigns/${encodeURIComponent(job.campaign)}">${job.campaign}</a>` : 'none'}</dd>
<dt>To send again</dt><dd>${job.unsettled} message(s)</dd>
</dl>
<div class="actions">
${actionForm(context, `${base}/retry`, 'retry', 'Retry')}
${actionForm(context, `${base}/delete`, 'delete', 'Delete', { confirm: `Delete dead letter ${job.id}? Its unsent messages are dropped.`, danger: true })}
</div>
${messages}`,
  );
}

/** `GET /suppression`: search, add, remove. */
export function suppressionPage(context: PageContext, query: string, search: SuppressionSearch): string {
  const rows = search.entries.map(
    (entry: Suppression) =>
      html`<tr data-address="${entry.address}"><td class="wrap" data-label="Address">${entry.address}</td><td data-label="Reason">${entry.reason}</td><td data-label="Since">${formatTime(entry.at)}</td><td data-label="Source">${entry.source}</td><td data-label="">${actionForm(context, '/suppression/remove', 'remove', 'Remove', { fields: { address: entry.address }, confirm: `Remove ${entry.address} from the suppression list? Campaigns will mail it again.` })}</td></tr>`,
  );
  const reasons = SUPPRESSION_REASONS.map(
    (reason) => html`<option value="${reason}"${reason === 'manual' ? ' selected' : ''}>${reason}</option>`,
  );
  return layout(
    context,
    { title: 'Suppression', section: 'suppression' },
    html`<h1>Suppression list</h1>
<p class="muted">${formatCount(search.total)} address(es): campaigns never mail them.</p>
<form method="get" action="/suppression" class="inline" role="search" id="suppression-search">
<input type="search" name="q" value="${query}" placeholder="Address or part of one" aria-label="Search">
<button type="submit">Search</button>
</form>
<form method="post" action="/suppression/add" data-action="add" class="inline">
${csrfField(context)}
<input type="email" name="address" placeholder="someone@example.com" required aria-label="Address to add">
<select name="reason" aria-label="Reason">${reasons}</select>
<button type="submit">Add</button>
</form>
<table id="suppression" class="stack"><thead><tr><th>Address</th><th>Reason</th><th>Since</th><th>Source</th><th></th></tr></thead>
<tbody>${rows.length > 0 ? rows : html`<tr><td colspan="5">${query ? 'No address matches.' : 'The list is empty.'}</td></tr>`}</tbody></table>
${search.capped ? html`<p class="muted" id="suppression-capped">Showing ${search.entries.length} result(s) after looking at ${formatCount(search.scanned)} of ${formatCount(search.total)} addresses: narrow the search to see others. <code>mailroom suppress export</code> lists them all.</p>` : ''}`,
  );
}
