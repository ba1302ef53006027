/**
 * The dashboard's stylesheet and script, served as /static/dashboard.css and /static/dashboard.js:
 * plain text kept in the source, so there is no bundler or asset copy at install or build time.
 */

/**
 * The stylesheet. Phone first: below 40rem every table turns into one block per row with each
 * cell labelled (`data-label`), so a 375 px screen shows everything without scrolling sideways.
 */
export const DASHBOARD_CSS = `:root{color-scheme:light;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--soft:#f6f8fa;--accent:#0969da;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:var(--fg);color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;align-items:center;gap:.25rem 1rem}
header .brand{font-weight:600;margin-right:.5rem}
nav{display:flex;flex-wrap:wrap;gap:.25rem .9rem;flex:1}
nav a{color:#fff;text-decoration:none;padding:.2rem 0;border-bottom:2px solid transparent}
nav a[aria-current=page]{border-bottom-color:#fff}
header form{margin:0}
header button{background:transparent;color:#fff;border:1px solid #fff8;padding:.15rem .6rem}
main{padding:1rem;max-width:72rem;margin:0 auto}
h1{font-size:1.35rem;margin:.2rem 0 1rem;overflow-wrap:anywhere}
h2{font-size:1.1rem;margin:1.5rem 0 .6rem}
a{color:var(--accent)}
code{overflow-wrap:anywhere}
.muted{color:var(--muted)}
.flash{padding:.6rem .8rem;border-radius:.35rem;margin:0 0 1rem;background:#dafbe1;border:1px solid #aceebb;overflow-wrap:anywhere}
.flash.error{background:#ffebe9;border-color:#ffcecb}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(9rem,1fr));gap:.6rem;margin:0 0 1rem;padding:0;list-style:none}
.card{border:1px solid var(--line);border-radius:.4rem;padding:.55rem .75rem;background:var(--soft);min-width:0}
.card .label{display:block;color:var(--muted);font-size:.85rem}
.card .value{display:block;font-size:1.45rem;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.card .sub{display:block;color:var(--muted);font-size:.8rem}
table{width:100%;border-collapse:collapse;margin:0 0 1rem;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:break-word}
td.wrap{overflow-wrap:anywhere}
th{background:var(--soft);font-weight:600;font-size:.9rem}
td.num,th.num{text-align:right}
progress{width:100%;height:1.1rem;margin:.3rem 0}
.progress-line{display:flex;flex-wrap:wrap;gap:.2rem 1rem;align-items:baseline}
.state{display:inline-block;padding:.05rem .5rem;border-radius:1rem;background:var(--soft);border:1px solid var(--line);font-size:.9rem}
.state-running{color:var(--ok);border-color:#aceebb}.state-paused{color:var(--warn)}.state-cancelled,.state-interrupted{color:var(--bad)}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:1rem 0}
.actions form{margin:0}
button{font:inherit;padding:.4rem .9rem;border-radius:.35rem;border:1px solid var(--line);background:var(--soft);color:var(--fg);cursor:pointer}
button.danger{color:var(--bad);border-color:#ffcecb}
button:focus-visible,a:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
input,select{font:inherit;padding:.35rem .5rem;border:1px solid var(--line);border-radius:.35rem;max-width:100%;min-width:0}
.inline{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:0 0 1rem}
.inline input[type=search],.inline input[type=email],.inline input[type=text]{flex:1 1 12rem}
form.row-action{margin:0}
dl.headers{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:0 0 .5rem}
dl.headers dt{font-weight:600}dl.headers dd{margin:0;overflow-wrap:anywhere}
.message{border:1px solid var(--line);border-radius:.4rem;padding:.6rem .8rem;margin:0 0 .8rem}
.login{max-width:24rem;margin:12vh auto}
.login input{width:100%;margin:.3rem 0 .8rem}
#live-status{font-size:.8rem}
@media (max-width:40rem){
  main{padding:.75rem}
  table.stack thead{display:none}
  table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}
  table.stack tr{border:1px solid var(--line);border-radius:.4rem;margin:0 0 .6rem;padding:.3rem .1rem}
  table.stack td{border:0;padding:.15rem .6rem;text-align:left}
  table.stack td::before{content:attr(data-label);display:inline-block;min-width:6.5rem;color:var(--muted);font-size:.85rem}
  dl.headers{grid-template-columns:1fr}
  dl.headers dd{margin:0 0 .3rem}
}
`;

/**
 * The script: asks before a form with `data-confirm` is sent, and keeps the page live. A page whose
 * `<main>` has `data-live="/api/..."` polls that URL (every second for a campaign, every 2 s for the
 * overview) and writes the numbers into the elements by id, without reloading. Text goes in with
 * textContent only, so nothing read from Redis is ever parsed as HTML.
 */
export const DASHBOARD_JS = `'use strict';
(function () {
  document.addEventListener('submit', function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute('data-confirm');
    if (question && !window.confirm(question)) event.preventDefault();
  });

  var main = document.querySelector('main[data-live]');
  if (!main) return;
  var url = main.getAttribute('data-live');
  var interval = Number(main.getAttribute('data-interval')) || 1000;
  var statusLine = document.getElementById('live-status');

  function set(id, text) {
    var element = document.getElementById(id);
    if (element && element.textContent !== String(text)) element.textContent = String(text);
  }
  function count(n) { return Number(n).toLocaleString('en-US'); }
  function rate(r) { return (r > 0 && r < 10 ? r.toFixed(1) : count(Math.round(r))) + '/s'; }
  function seconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return '--';
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + 's';
    var m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + String(s % 60).padStart(2, '0') + 's';
    return Math.floor(m / 60) + 'h ' + String(m % 60).padStart(2, '0') + 'm';
  }
  function time(ms) { return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\\.\\d+Z$/, ' UTC') : '--'; }

  function percent(status) {
    if (status.state === 'completed') return 100;
    var settled = status.sent + status.failed + status.cancelled;
    var total = Math.max(status.total, status.enqueueFinished ? 0 : (status.expectedTotal || 0));
    if (total === 0) return status.state === 'cancelled' ? 100 : 0;
    return Math.min(100, Math.floor((settled * 100) / total));
  }

  function campaign(status) {
    var total = Math.max(status.total, status.enqueueFinished ? 0 : (status.expectedTotal || 0));
    var settled = status.sent + status.failed + status.cancelled;
    var state = document.getElementById('campaign-state');
    if (state) {
      set('campaign-state', status.state);
      state.className = 'state state-' + status.state;
    }
    var bar = document.getElementById('campaign-progress');
    if (bar) {
      bar.max = Math.max(total, 1);
      bar.value = Math.min(settled, Math.max(total, 1));
    }
    set('campaign-percent', percent(status) + '%');
    set('campaign-sent', count(status.sent));
    set('campaign-failed', count(status.failed));
    set('campaign-total', count(status.total));
    set('campaign-cancelled', count(status.cancelled));
    set('campaign-remaining', count(status.remaining));
    set('campaign-queued', count(status.queued));
    set('campaign-rate', rate(status.rate));
    set('campaign-eta', status.state === 'running' || status.state === 'paused' ? seconds(status.etaSeconds) : '--');
    set('campaign-finished', time(status.finishedAt));
    var outcomes = document.querySelector('#outcomes tbody');
    if (outcomes) {
      var reasons = status.failedByReason || {};
      var lines = [['sent', status.sent]]
        .concat(Object.keys(reasons).sort().map(function (reason) { return ['failed: ' + reason, reasons[reason]]; }))
        .concat([['cancelled', status.cancelled], ['duplicates skipped', status.duplicates], ['suppressed skipped', status.suppressed]]);
      outcomes.replaceChildren.apply(outcomes, lines.map(function (line) {
        var tr = document.createElement('tr');
        var name = document.createElement('td');
        name.setAttribute('data-label', 'Outcome');
        name.textContent = line[0];
        var value = document.createElement('td');
        value.className = 'num';
        value.setAttribute('data-label', 'Messages');
        value.textContent = count(line[1] || 0);
        tr.appendChild(name);
        tr.appendChild(value);
        return tr;
      }));
    }
    // The failures table is read when the page loads; say when it no longer holds them all.
    var listed = document.getElementById('failures');
    if (listed) {
      var shown = Number(listed.getAttribute('data-failed'));
      set('failures-stale', status.failed > shown ? count(status.failed) + ' failed now: reload to list the new ones.' : '');
    }
  }

  function overview(data) {
    Object.keys(data.states).forEach(function (name) {
      var cell = document.querySelector('#queue-counts [data-state="' + name + '"]');
      if (cell && cell.textContent !== String(data.states[name].batches)) cell.textContent = String(data.states[name].batches);
      var messages = document.querySelector('[data-messages="' + name + '"]');
      if (messages && data.states[name].messages !== null) messages.textContent = count(data.states[name].messages) + ' messages';
    });
    set('queue-rate', rate(data.rate));
    set('worker-count', count(data.workers.length));
    var body = document.querySelector('#workers tbody');
    if (!body) return;
    var rows = data.workers.map(function (w) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-worker', w.id);
      [['Worker', w.id], ['Host', w.host], ['PID', w.pid], ['Batches at once', w.concurrency], ['Version', w.version],
       ['Up since', time(w.startedAt)], ['Last seen', time(w.lastSeenAt)]].forEach(function (pair) {
        var td = document.createElement('td');
        td.setAttribute('data-label', pair[0]);
        td.textContent = String(pair[1]);
        tr.appendChild(td);
      });
      return tr;
    });
    if (rows.length === 0) {
      var tr = document.createElement('tr');
      var td = document.createElement('td');
      td.colSpan = 7;
      td.textContent = 'No live worker: nothing is being sent.';
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);
  }

  function poll() {
    fetch(url, { headers: { accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); throw new Error('logged out'); }
        if (!response.ok) throw new Error('HTTP ' + response.status);
        return response.json();
      })
      .then(function (data) {
        if (main.getAttribute('data-kind') === 'campaign') campaign(data); else overview(data);
        if (statusLine) statusLine.textContent = 'live, updated ' + new Date().toLocaleTimeString();
      })
      .catch(function (error) {
        if (statusLine) statusLine.textContent = 'not updating: ' + error.message;
      })
      .finally(function () { setTimeout(poll, interval); });
  }
  setTimeout(poll, interval);
})();
`;
