// The console's DOM: loop cards, provider cards, account rows, the latest entries, and the
// live countdowns. Everything is built with textContent: no server text is ever parsed as HTML.
import { el, errorText, isFailure } from "./render.js";

const DAY_MS = 86400000;
const REFRESH_WARN_MS = 30 * DAY_MS;  // a refresh token within 30 days of its end is flagged

// "4m 05s", "3h 12m", "12d 4h": two units, enough to read at a glance.
export function span(ms) {
  const s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

export function relative(iso, now = Date.now()) {
  if (!iso) return "never";
  const ms = new Date(iso).getTime() - now;
  if (Math.abs(ms) < 1000) return "now";
  return ms > 0 ? `in ${span(ms)}` : `${span(ms)} ago`;
}

function local(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// A time that keeps counting: `tick` rewrites every [data-at] element once a second.
function timeNode(iso, kind) {
  const node = el("time", `t ${kind || ""}`.trim(), relative(iso));
  if (iso) {
    node.dateTime = iso;
    node.dataset.at = iso;
    node.title = local(iso);
  }
  return node;
}

export function tick(root, now = Date.now()) {
  for (const node of root.querySelectorAll("[data-at]")) {
    node.textContent = relative(node.dataset.at, now);
    const ms = new Date(node.dataset.at).getTime() - now;
    if (node.classList.contains("expiry")) {
      node.classList.toggle("expired", ms <= 0);
    } else if (node.classList.contains("refresh-expiry")) {
      node.classList.toggle("expired", ms <= 0);
      node.classList.toggle("soon", ms > 0 && ms < REFRESH_WARN_MS);
    }
  }
}

function kv(name, value) {
  const row = el("div", "kv");
  row.append(el("span", "k", name), " ");
  if (value instanceof Node) row.append(value); else row.append(el("span", "v", value));
  return row;
}

// Polls and stream-driven reloads mostly bring back what is already shown: leave the DOM
// (and the keyboard focus in it) alone then, and after a real change put the focus back on
// the same control of the same row or card.
const shownJson = new WeakMap();
// The control that takes a control's place when its action is done.
const COUNTERPART = { disable: "enable", enable: "disable" };

export function renderChanged(container, data, render) {
  const json = JSON.stringify(data);
  if (shownJson.get(container) === json) return false;
  shownJson.set(container, json);
  const focused = container.contains(document.activeElement) ? document.activeElement : null;
  const action = focused && focused.dataset.action;
  const id = focused && focused.dataset.id !== undefined ? CSS.escape(focused.dataset.id) : null;
  render();
  if (action && id !== null) {
    // The same control, its counterpart (Disable became Enable), or another of the row.
    const find = (name) => name
      && container.querySelector(`[data-action="${CSS.escape(name)}"][data-id="${id}"]`);
    const again = find(action) || find(COUNTERPART[action])
      || container.querySelector(`button[data-action][data-id="${id}"]`);
    if (again) again.focus();
  }
  return true;
}

export function renderLoops(container, report) {
  const loops = (report && report.loops) || [];
  if (!loops.length) {
    container.replaceChildren(el("p", "dim", "no loop has reported yet"));
    return;
  }
  container.replaceChildren(...loops.map((loop) => {
    const card = el("article", `card-item loop${loop.stale ? " stale" : ""}`);
    card.setAttribute("aria-label", `loop ${loop.name} on ${loop.instance}`);
    const head = el("div", "card-head");
    head.append(el("span", "card-title", `${loop.name} @ ${loop.instance}`),
      el("span", loop.stale ? "flag bad" : "flag ok", loop.stale ? "STALE" : "ok"));
    const summary = loop.last_summary || {};
    const errors = Array.isArray(summary.errors) ? summary.errors.length : summary.error_count;
    card.append(head,
      kv("status", loop.last_status || "-"),
      kv("started", timeNode(loop.last_started_at)),
      kv("finished", timeNode(loop.last_finished_at)),
      kv("interval", `${loop.interval_seconds}s`),
      kv("last cycle", summary.accounts_checked === undefined
        ? (summary.message || "-")
        : `checked ${summary.accounts_checked}, refreshed ${summary.accounts_refreshed}, errors ${errors || 0}`));
    return card;
  }));
}

export function renderProviders(container, providers) {
  if (!providers.length) {
    container.replaceChildren(el("p", "dim", "no provider is configured"));
    return;
  }
  container.replaceChildren(...providers.map((p) => {
    const card = el("article", `card-item provider${p.paused_until ? " paused" : ""}`);
    card.setAttribute("aria-label", `provider ${p.name}`);
    const head = el("div", "card-head");
    head.append(el("span", "card-title", p.name),
      el("span", p.paused_until ? "flag bad" : "flag ok", p.paused_until ? "PAUSED" : "running"));
    card.append(head);
    if (p.paused_until) {
      const pause = el("div", "kv");
      pause.append(el("span", "k", "paused"), " ", el("span", "error", p.pause_reason || "?"),
        " until ", timeNode(p.paused_until));
      const resume = el("button", "resume", "Resume");
      resume.type = "button";
      resume.dataset.action = "resume";
      resume.dataset.provider = p.name;
      resume.dataset.id = p.name;
      resume.setAttribute("aria-label", `Resume ${p.name}`);
      card.append(pause, resume);
    }
    const quota = p.daily_quota ? ` / ${p.daily_quota.toLocaleString()}` : "";
    const over = p.over_quota ? " (over quota)" : "";
    card.append(
      // An org token is not told the provider's calls: they are every org's.
      kv(p.calls_today === null ? "daily quota" : "calls today", p.calls_today === null
        ? (p.daily_quota ? p.daily_quota.toLocaleString() : "none")
        : `${p.calls_today.toLocaleString()}${quota}`),
      kv("projected", `${Math.round(p.projected_daily_calls).toLocaleString()}/day for ` +
        `${p.active_accounts} active${over}`));
    const meter = el("div", "meter");
    if (p.daily_quota && p.calls_today !== null) {
      const fill = el("span", p.over_quota ? "fill bad" : "fill");
      fill.style.width = `${Math.min(100, (100 * p.calls_today) / p.daily_quota)}%`;
      meter.append(fill);
      meter.setAttribute("role", "img");
      meter.setAttribute("aria-label", `${p.calls_today} of ${p.daily_quota} calls used today`);
      card.append(meter);
    }
    const codes = Object.entries(p.failing_by_error || {});
    card.append(kv("failing", codes.length
      ? codes.map(([code, n]) => `${code} ${n}`).join(", ") : "none"));
    return card;
  }));
}

function actionButton(label, action, account, title) {
  const button = el("button", `act act-${action}`, label);
  button.type = "button";
  button.dataset.action = action;
  button.dataset.id = account.id;
  button.setAttribute("aria-label", `${title} ${account.id}`);
  button.title = title;
  return button;
}

// No expiry stored is not "never": the provider did not say (eBay's answer to a refresh
// never does) and the account was added without --consented-at.
function unknownExpiry() {
  const node = el("span", "dim", "unknown");
  node.title = "the expiry of this refresh token is not known: reconnect the account, or "
    + "add it with --consented-at or --refresh-token-expires-at";
  return node;
}

function cell(label, ...children) {
  const td = el("td");
  td.dataset.label = label;
  td.append(...children);
  return td;
}

export function accountRow(account, { connectLinks }) {
  const tr = el("tr", `st-${account.status}`);
  tr.dataset.id = account.id;
  tr.account = account;  // the row's own data, for actions that need more than the id
  const who = el("div", "who");
  who.append(el("span", "acct", account.id), el("span", "dim", ` ${account.org} · ${account.provider}`));
  const name = el("div", "name", account.name);
  if (account.provider_user_name) name.append(el("span", "dim", ` (${account.provider_user_name})`));
  const state = el("span", `state state-${account.status}`, account.status);
  const stateCell = cell("state", state);
  if (account.state_reason) stateCell.append(el("div", "dim reason", account.state_reason));
  const log = el("a", "act act-log", "Log");
  log.dataset.action = "log";
  log.dataset.id = account.id;
  log.href = `/terminal?q=${encodeURIComponent(account.id)}`;
  log.setAttribute("aria-label", `View log of ${account.id}`);
  log.title = "view log";
  const actions = el("div", "actions");
  actions.append(log);
  if (account.state === "active") {
    actions.append(actionButton("Refresh", "debug-refresh", account, "Refresh with debug"));
    // Only failures put an account in backoff: a healthy one has none to clear.
    if (account.consecutive_failures > 0) {
      actions.append(actionButton("Clear backoff", "clear-backoff", account, "Clear backoff of"));
    }
  }
  if (connectLinks && account.state !== "deleted") {
    actions.append(actionButton("Reconnect link", "connect-link", account, "Copy reconnect link for"));
  }
  if (account.state === "disabled") actions.append(actionButton("Enable", "enable", account, "Enable"));
  else if (account.state !== "deleted") actions.append(actionButton("Disable", "disable", account, "Disable"));
  tr.append(
    cell("account", who, name),
    stateCell,
    cell("access token", timeNode(account.access_expires_at, "expiry")),
    cell("refresh token", account.refresh_expires_at
      ? timeNode(account.refresh_expires_at, "refresh-expiry")
      : account.state === "deleted" ? el("span", "dim", "-") : unknownExpiry()),
    cell("last refresh", timeNode(account.last_refresh_at)),
    cell("failures", el("span", account.consecutive_failures ? "error" : "", account.consecutive_failures)),
    cell("last error", el("span", account.last_error ? "error" : "dim", account.last_error || "-")),
    cell("next refresh", account.refresh_due_at ? timeNode(account.refresh_due_at) : el("span", "dim", "-")),
    cell("actions", actions));
  return tr;
}

export function renderAccounts(tbody, accounts, options) {
  if (!accounts.length) {
    const tr = el("tr", "empty");
    const td = el("td", "dim", "no account matches");
    td.colSpan = 9;
    tr.append(td);
    tbody.replaceChildren(tr);
    return;
  }
  tbody.replaceChildren(...accounts.map((a) => accountRow(a, options)));
}

const RECENT_MAX = 8;

export function pushRecent(list, entry, knownSources) {
  const source = knownSources.includes(entry.source) ? entry.source : "other";
  const li = el("li", `recent-item s-${source}${isFailure(entry) ? " failed" : ""}`);
  li.append(el("span", "badge", source.toUpperCase()), " ",
    el("span", "action", entry.action), " ",
    el("span", "acct", entry.account_id || ""), " ",
    el("span", "error", entry.error ? errorText(entry.error) : ""),
    timeNode(entry.created_at));
  list.prepend(li);
  while (list.children.length > RECENT_MAX) list.lastElementChild.remove();
}
