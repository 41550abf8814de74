// The Stratus dashboard: the Jobs page (`/dashboard`) and a page per job
// (`/dashboard/jobs/{id}`), drawn from the JSON API with the user's bearer token.
//
// Rules this file keeps:
// - Job data is written with textContent, never as HTML (names and logs are user input).
// - The token comes from the URL fragment `#token=...` that `stratus dashboard` prints, is
//   kept in sessionStorage, and is removed from the address bar at once.
// - Refreshes use fetch() on timers chained with setTimeout, one page at a time: changing
//   page bumps `generation`, and every loop of the old page stops at its next tick.
// - Rows are kept by key and updated in place, so a refresh does not flicker, keep the
//   focus, or detach an element someone is about to click.
'use strict';

(() => {
  const REFRESH_MS = 2000;
  const DONE_REFRESH_MS = 10000;
  const LOG_POLL_MS = 1000;
  const JOBS_LIMIT = 500;
  const TOKEN_KEY = 'stratus.dashboard.token';
  const STATUSES = [
    'PENDING', 'STARTING', 'RUNNING', 'RECOVERING', 'CANCELLING', 'SUCCEEDED', 'CANCELLED',
    'FAILED', 'FAILED_SETUP', 'FAILED_PRECHECKS', 'FAILED_NO_RESOURCE', 'FAILED_CONTROLLER',
  ];
  const ACTIVE = new Set(['PENDING', 'STARTING', 'RUNNING', 'RECOVERING', 'CANCELLING']);

  const $ = (id) => document.getElementById(id);
  let generation = 0;

  // ---- Token and API --------------------------------------------------------------------

  class Unauthorized extends Error {}

  function takeTokenFromUrl() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (match) {
      if (match[1]) sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(history.state, '', location.pathname + location.search);
    }
  }

  async function api(path, options) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new Unauthorized();
    const init = Object.assign({ cache: 'no-store' }, options || {});
    init.headers = Object.assign({ Authorization: 'Bearer ' + token }, init.headers || {});
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new Error('cannot reach the Stratus API (' + e.message + ')');
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw new Unauthorized();
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error((body && body.error) || 'the API answered HTTP ' + response.status);
    }
    return body;
  }

  // ---- Formatting (as `stratus jobs queue` prints) ----------------------------------------

  function duration(ms) {
    const secs = Math.floor(ms / 1000);
    const d = Math.floor(secs / 86400);
    const h = Math.floor(secs / 3600) % 24;
    const m = Math.floor(secs / 60) % 60;
    const s = secs % 60;
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + s + 's';
    return s + 's';
  }

  function ago(at) {
    const secs = Math.max(0, Math.floor((Date.now() - at) / 1000));
    if (secs < 60) return secs + ' secs ago';
    if (secs < 3600) return Math.floor(secs / 60) + ' mins ago';
    if (secs < 86400) return Math.floor(secs / 3600) + ' hrs ago';
    return Math.floor(secs / 86400) + ' days ago';
  }

  function when(at) {
    return at == null ? '-' : new Date(at).toLocaleString();
  }

  function clockTime(at) {
    return new Date(at).toLocaleTimeString();
  }

  function statusClass(status) {
    if (status === 'SUCCEEDED') return 's-ok';
    if (status === 'RUNNING') return 's-run';
    if (status === 'PENDING' || status === 'STARTING' || status === 'RECOVERING') return 's-wait';
    if (status.startsWith('FAILED')) return 's-fail';
    return 's-off';
  }

  // ---- DOM helpers ------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function setText(node, text, title) {
    if (node.childElementCount > 0 || node.textContent !== text) node.textContent = text;
    if (title !== undefined && node.title !== title) node.title = title;
  }

  function setStatus(node, status) {
    let badge = node.classList.contains('status') ? node : node.firstElementChild;
    if (!badge) {
      badge = el('span');
      node.replaceChildren(badge);
    }
    const className = 'status ' + statusClass(status);
    if (badge.className !== className) badge.className = className;
    if (badge.dataset.status !== status) badge.dataset.status = status;
    setText(badge, status);
  }

  function setLink(node, text, href) {
    let link = node.firstElementChild;
    if (!link) {
      link = el('a');
      link.dataset.nav = '';
      node.replaceChildren(link);
    }
    if (link.getAttribute('href') !== href) link.setAttribute('href', href);
    setText(link, text);
  }

  // `$0.4200` under a dollar, `$12.40` above: as `stratus jobs queue` prints costs.
  function usd(value) {
    const v = Number(value) || 0;
    if (v === 0) return '$0.00';
    return '$' + v.toFixed(v < 1 ? 4 : 2);
  }

  function cells(row, count) {
    while (row.cells.length < count) row.append(el('td'));
    return row.cells;
  }

  function showError(message) {
    const node = $('error');
    node.textContent = message;
    node.hidden = !message;
  }

  function setRefreshed() {
    $('refreshed').textContent = 'Updated ' + new Date().toLocaleTimeString();
  }

  function fail(error, gen) {
    if (gen !== generation) return false;
    if (error instanceof Unauthorized) {
      signIn();
      return false;
    }
    showError(error.message);
    return true;
  }

  function signIn() {
    generation += 1;
    for (const id of ['jobs-page', 'job-page']) $(id).hidden = true;
    showError('');
    $('signin').hidden = false;
    $('refreshed').textContent = '';
  }

  function later(gen, ms, fn) {
    setTimeout(() => {
      if (gen === generation) fn();
    }, ms);
  }

  // ---- Navigation -------------------------------------------------------------------------

  function navigate(href) {
    history.pushState(null, '', href);
    route();
  }

  function route() {
    generation += 1;
    showError('');
    $('signin').hidden = true;
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      signIn();
      return;
    }
    const match = /^\/dashboard\/jobs\/(\d+)\/?$/.exec(location.pathname);
    if (match) {
      showJob(Number(match[1]));
    } else {
      showJobs();
    }
  }

  document.addEventListener('click', (event) => {
    const link = event.target.closest('a[data-nav]');
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    navigate(link.getAttribute('href'));
  });
  window.addEventListener('popstate', route);
  // The link can also be opened over a page already showing (a fragment change, no reload).
  window.addEventListener('hashchange', () => {
    if (/(?:^#|&)token=/.test(location.hash)) {
      takeTokenFromUrl();
      route();
    }
  });

  // ---- The Jobs page ----------------------------------------------------------------------

  const expanded = new Set();
  let jobs = [];
  let more = false;

  function setUpFilters() {
    const select = $('status-filter');
    for (const status of STATUSES) select.append(new Option(status, status));
    for (const id of ['status-filter', 'user-filter']) $(id).addEventListener('change', renderJobs);
    $('search').addEventListener('input', renderJobs);
    $('jobs').tBodies[0].addEventListener('click', (event) => {
      const toggle = event.target.closest('[data-toggle]');
      if (!toggle) return;
      const id = Number(toggle.dataset.toggle);
      if (expanded.has(id)) expanded.delete(id);
      else expanded.add(id);
      renderJobs();
    });
  }

  function showJobs() {
    document.title = 'Managed jobs · Stratus';
    $('job-page').hidden = true;
    $('jobs-page').hidden = false;
    refreshJobs(generation);
  }

  async function refreshJobs(gen) {
    try {
      const list = await api('/api/v1/jobs?all_users=true&limit=' + JOBS_LIMIT);
      if (gen !== generation) return;
      jobs = list.jobs;
      more = list.next != null;
      showError('');
      renderJobs();
      setRefreshed();
    } catch (error) {
      if (!fail(error, gen)) return;
    }
    later(gen, REFRESH_MS, () => refreshJobs(gen));
  }

  function updateUsers() {
    const select = $('user-filter');
    const owners = [...new Set(jobs.map((j) => j.owner))].sort();
    const have = [...select.options].slice(1).map((o) => o.value);
    if (have.join('\n') === owners.join('\n')) return;
    const chosen = select.value;
    select.replaceChildren(new Option('All users', ''));
    for (const owner of owners) select.append(new Option(owner, owner));
    select.value = owners.includes(chosen) ? chosen : '';
  }

  function matches(job, status, user, search) {
    if (status === 'active' && !ACTIVE.has(job.status)) return false;
    if (status === 'finished' && ACTIVE.has(job.status)) return false;
    if (status && status !== 'active' && status !== 'finished' && job.status !== status) {
      return false;
    }
    if (user && job.owner !== user) return false;
    if (!search) return true;
    return [job.name, ...job.tasks.map((t) => t.name)].some((name) =>
      name.toLowerCase().includes(search));
  }

  function renderJobs() {
    updateUsers();
    const status = $('status-filter').value;
    const user = $('user-filter').value;
    const search = $('search').value.trim().toLowerCase();
    const body = $('jobs').tBodies[0];
    const existing = new Map([...body.rows].map((row) => [row.dataset.key, row]));
    const wanted = [];
    for (const job of jobs.filter((j) => matches(j, status, user, search))) {
      const pipeline = job.tasks.length > 1;
      const row = existing.get('job-' + job.id) || el('tr', 'job');
      row.dataset.key = 'job-' + job.id;
      fillJobRow(row, job, pipeline);
      wanted.push(row);
      if (pipeline) {
        for (const task of job.tasks) {
          const key = 'task-' + job.id + '-' + task.index;
          const sub = existing.get(key) || el('tr', 'task');
          sub.dataset.key = key;
          fillTaskRow(sub, job, task);
          sub.hidden = !expanded.has(job.id);
          wanted.push(sub);
        }
      }
    }
    // Put the rows in order, moving (not recreating) the ones that exist.
    let cursor = body.firstElementChild;
    for (const row of wanted) {
      if (row === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        body.insertBefore(row, cursor);
      }
    }
    while (cursor) {
      const next = cursor.nextElementSibling;
      cursor.remove();
      cursor = next;
    }
    $('empty').hidden = wanted.length > 0;
    const active = jobs.filter((j) => ACTIVE.has(j.status)).length;
    $('summary').textContent = jobs.length + (more ? '+' : '') + ' jobs, ' + active
      + ' in progress' + (more ? ' (latest ' + JOBS_LIMIT + ' shown)' : '');
  }

  function fillJobRow(row, job, pipeline) {
    row.dataset.jobId = job.id;
    row.dataset.status = job.status;
    row.classList.toggle('pipeline', pipeline);
    const c = cells(row, 13);
    if (pipeline) {
      let toggle = c[0].firstElementChild;
      if (!toggle) {
        toggle = el('button', 'toggle');
        toggle.type = 'button';
        c[0].replaceChildren(toggle);
      }
      const open = expanded.has(job.id);
      toggle.dataset.toggle = job.id;
      toggle.setAttribute('aria-expanded', String(open));
      toggle.setAttribute('aria-label', (open ? 'Collapse' : 'Expand') + ' the tasks of job '
        + job.id);
      setText(toggle, open ? '▾' : '▸');
    } else {
      setText(c[0], '');
    }
    const first = job.tasks[0] || {};
    setLink(c[1], String(job.id), '/dashboard/jobs/' + job.id);
    setText(c[2], '-');
    setLink(c[3], job.name, '/dashboard/jobs/' + job.id);
    setText(c[4], job.owner);
    setText(c[5], pipeline ? '-' : first.requested);
    setText(c[6], pipeline ? '-' : first.infra || '-');
    setText(c[7], ago(job.submitted_at), when(job.submitted_at));
    setText(c[8], duration(job.total_duration_ms));
    setText(c[9], job.started_at != null ? duration(job.job_duration_ms) : '-');
    setText(c[10], String(job.recoveries));
    setText(c[11], usd(job.cost && job.cost.usd), 'estimate');
    setStatus(c[12], job.status);
    c[12].title = job.failure_reason || '';
  }

  function fillTaskRow(row, job, task) {
    row.dataset.parent = job.id;
    row.dataset.task = task.index;
    row.dataset.status = task.status;
    const c = cells(row, 13);
    setText(c[0], '');
    setText(c[1], '↳');
    setText(c[2], String(task.index));
    setText(c[3], task.name);
    setText(c[4], '');
    setText(c[5], task.requested);
    setText(c[6], task.infra || '-');
    setText(c[7], task.submitted_at != null ? ago(task.submitted_at) : '-',
      when(task.submitted_at));
    const end = task.ended_at != null ? task.ended_at : Date.now();
    setText(c[8], task.submitted_at != null ? duration(end - task.submitted_at) : '-');
    setText(c[9], task.started_at != null ? duration(task.job_duration_ms) : '-');
    setText(c[10], String(task.recoveries));
    setText(c[11], usd(task.cost && task.cost.usd), 'estimate');
    setStatus(c[12], task.status);
    c[12].title = task.failure_reason || '';
  }

  // ---- A job's page -----------------------------------------------------------------------

  let current = null;

  function showJob(id) {
    document.title = 'Job ' + id + ' · Stratus';
    $('jobs-page').hidden = true;
    $('job-page').hidden = false;
    current = {
      id, job: null, after: null, lineStart: new Map(), logStarted: false,
    };
    $('job-title').textContent = 'Job ' + id;
    $('job-status').replaceChildren();
    $('job-status').className = 'status';
    $('job-facts').replaceChildren();
    $('job-failure').hidden = true;
    $('tasks').tBodies[0].replaceChildren();
    $('attempts').tBodies[0].replaceChildren();
    $('events').replaceChildren();
    const log = $('log');
    log.replaceChildren();
    delete log.dataset.done;
    $('log-state').textContent = '';
    const cancel = $('cancel');
    cancel.hidden = true;
    cancel.disabled = false;
    cancel.textContent = 'Cancel job';
    refreshJob(generation, current);
  }

  async function refreshJob(gen, page) {
    let terminal = false;
    try {
      const [job, events] = await Promise.all([
        api('/api/v1/jobs/' + page.id),
        api('/api/v1/jobs/' + page.id + '/events'),
      ]);
      if (gen !== generation) return;
      page.job = job;
      terminal = !ACTIVE.has(job.status);
      showError('');
      renderJob(job);
      renderEvents(events);
      setRefreshed();
      // The log starts once the tasks' names are known: they prefix its lines.
      if (!page.logStarted) {
        page.logStarted = true;
        followLog(gen, page);
      }
    } catch (error) {
      if (!fail(error, gen)) return;
    }
    later(gen, terminal ? DONE_REFRESH_MS : REFRESH_MS, () => refreshJob(gen, page));
  }

  function renderJob(job) {
    document.title = 'Job ' + job.id + ' · ' + job.name + ' · Stratus';
    setText($('job-title'), 'Job ' + job.id + ' · ' + job.name);
    setStatus($('job-status'), job.status);
    const facts = [
      ['User', job.owner],
      ['Submitted', when(job.submitted_at) + ' (' + ago(job.submitted_at) + ')'],
      ['Started', when(job.started_at)],
      ['Ended', when(job.ended_at)],
      ['Tot. duration', duration(job.total_duration_ms)],
      ['Job duration', job.started_at != null ? duration(job.job_duration_ms) : '-'],
      ['#Recoveries', String(job.recoveries)],
      ['Est. cost', usd(job.cost && job.cost.usd)
        + (job.max_cost != null ? ' of max ' + usd(job.max_cost) : '')],
      ['Depends on', (job.depends_on || []).join(', ') || '-'],
      ['Job array', job.array
        ? 'rank ' + job.array.rank + ' of ' + job.array.size + ' (array ' + job.array.id
          + ', at most ' + job.array.max_parallel + ' at once)'
        : '-'],
    ];
    const list = $('job-facts');
    if (list.children.length !== facts.length * 2) {
      list.replaceChildren(...facts.flatMap(([k]) => [el('dt', null, k), el('dd')]));
    }
    facts.forEach(([, value], i) => setText(list.children[i * 2 + 1], value));
    const failure = $('job-failure');
    failure.hidden = !job.failure_reason;
    setText(failure, job.failure_reason || '');

    const body = $('tasks').tBodies[0];
    job.tasks.forEach((task, i) => {
      const row = body.rows[i] || body.appendChild(el('tr', 'task'));
      row.dataset.task = task.index;
      row.dataset.status = task.status;
      const c = cells(row, 11);
      setText(c[0], String(task.index));
      setText(c[1], task.name);
      setText(c[2], task.requested);
      setText(c[3], task.infra || '-');
      setText(c[4], task.instance_type ? task.instance_type + (task.use_spot ? ' (spot)' : '') : '-');
      setText(c[5], task.cluster || '-');
      setText(c[6], task.started_at != null ? duration(task.job_duration_ms) : '-');
      setText(c[7], String(task.recoveries));
      setText(c[8], String(task.restarts));
      setText(c[9], usd(task.cost && task.cost.usd), 'estimate');
      setStatus(c[10], task.status);
      c[10].title = task.failure_reason || '';
    });

    const attempts = job.tasks.flatMap((task) => (task.attempts || []).map((a) => [task, a]));
    const ledger = $('attempts').tBodies[0];
    attempts.forEach(([task, a], i) => {
      const row = ledger.rows[i] || ledger.appendChild(el('tr', 'attempt'));
      const c = cells(row, 8);
      setText(c[0], String(task.index));
      setText(c[1], String(a.attempt));
      setText(c[2], a.cluster);
      setText(c[3], a.infra || '-');
      setText(c[4], (a.instance_type || '-') + (a.use_spot ? ' (spot)' : ''));
      setText(c[5], usd(a.hourly_usd));
      setText(c[6], duration(a.machine_ms));
      setText(c[7], usd(a.cost_usd), 'estimate');
    });
    while (ledger.rows.length > attempts.length) ledger.deleteRow(-1);

    const cancel = $('cancel');
    const active = ACTIVE.has(job.status) && job.status !== 'CANCELLING';
    cancel.hidden = !active;
    if (active && cancel.dataset.pending !== 'true') cancel.disabled = false;
  }

  function eventKind(message) {
    if (/preempt/i.test(message)) return 'k-preempt';
    if (/recover/i.test(message)) return 'k-recover';
    if (/fail/i.test(message)) return 'k-fail';
    if (/^Launching|launched/i.test(message)) return 'k-launch';
    if (/cancel/i.test(message)) return 'k-cancel';
    if (/^Cleanup/.test(message)) return 'k-cleanup';
    if (/succeeded/i.test(message)) return 'k-ok';
    return 'k-info';
  }

  function renderEvents(events) {
    const list = $('events');
    // The controller log only grows: append what is new.
    for (const event of events.slice(list.children.length)) {
      const item = el('li', 'event ' + eventKind(event.message));
      item.dataset.status = event.status;
      const time = el('time', null, clockTime(event.at));
      time.dateTime = new Date(event.at).toISOString();
      time.title = when(event.at);
      const head = el('div', 'event-head');
      const badge = el('span');
      setStatus(badge, event.status);
      head.append(time, el('span', 'muted', 'task ' + event.task), badge);
      item.append(head, el('div', 'event-message', event.message));
      list.append(item);
    }
    if (events.length === 0 && list.children.length === 0) {
      list.dataset.empty = 'No controller events yet.';
    } else {
      delete list.dataset.empty;
    }
  }

  async function followLog(gen, page) {
    let wait = LOG_POLL_MS;
    try {
      // `follow`: while someone watches, the job's nodes send their output within a second.
      const query = '?follow=true&after=' + encodeURIComponent(page.after || '');
      const logs = await api('/api/v1/jobs/' + page.id + '/logs' + query);
      if (gen !== generation) return;
      appendLog(page, logs.pieces);
      page.after = logs.next;
      if (logs.done) {
        $('log').dataset.done = 'true';
        $('log-state').textContent = '(' + logs.status + ': complete)';
        if ($('log').childNodes.length === 0) $('log').textContent = '(no output)';
        return;
      }
      $('log-state').textContent = '(following)';
      // A long log comes a page at a time: read the rest at once.
      if (logs.more) wait = 0;
      else if (logs.pieces.length > 0) wait = 200;
    } catch (error) {
      if (!fail(error, gen)) return;
    }
    later(gen, wait, () => followLog(gen, page));
  }

  function appendLog(page, pieces) {
    if (pieces.length === 0) return;
    const log = $('log');
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const names = page.job ? page.job.tasks.map((t) => t.name) : [];
    const multiNode = page.job
      ? page.job.tasks.map((t) => !t.requested.startsWith('1x')) : [];
    let text = '';
    for (const piece of pieces) {
      const key = [piece.task, piece.attempt, piece.phase, piece.rank].join('/');
      const who = piece.phase === 'setup' ? 'setup' : names[piece.task] || 'task ' + piece.task;
      const prefix = multiNode[piece.task] ? '(' + who + ', rank=' + piece.rank + ') '
        : '(' + who + ') ';
      let start = page.lineStart.has(key) ? page.lineStart.get(key) : true;
      for (const line of piece.data.split(/(?<=\n)/)) {
        if (line === '') continue;
        text += (start ? prefix : '') + line;
        start = line.endsWith('\n');
      }
      page.lineStart.set(key, start);
    }
    // The whole log stays (a 10 MB log is a few text nodes); nothing is trimmed.
    log.append(document.createTextNode(text));
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  async function cancelJob() {
    const page = current;
    if (!page || !page.job) return;
    if (!window.confirm('Cancel managed job ' + page.id + ' (' + page.job.name + ')?')) return;
    const button = $('cancel');
    button.disabled = true;
    button.dataset.pending = 'true';
    button.textContent = 'Cancelling…';
    const gen = generation;
    try {
      const job = await api('/api/v1/jobs/' + page.id + '/cancel', { method: 'POST' });
      if (gen === generation) renderJob(job);
    } catch (error) {
      fail(error, gen);
      button.disabled = false;
    } finally {
      delete button.dataset.pending;
      button.textContent = 'Cancel job';
    }
  }

  // ---- Start ------------------------------------------------------------------------------

  function start() {
    takeTokenFromUrl();
    setUpFilters();
    $('cancel').addEventListener('click', cancelJob);
    route();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
