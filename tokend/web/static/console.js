// The tokend console: loops, providers and accounts over the admin API, kept live by the
// log stream (/ws/logs) and a light poll. ES modules served as they are: no build step.
import { Stream, setConn } from "./connection.js";
import { load } from "./vocabulary.js";
import { AccountQuery, PAGE_SIZE } from "./console-state.js";
import { Login, Session } from "./session.js";
import {
  pushRecent, renderAccounts, renderChanged, renderLoops, renderProviders, tick,
} from "./console-render.js";
import { setupActions, setupFilters, toast } from "./console-controls.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 5000;           // loops and providers: counts may poll
const RELOAD_DELAY_MS = 600;    // entries for accounts on screen come in bursts
const SEEN_MAX = 10000;         // entry ids remembered against replays; a long day forgets

const vocabulary = await load(() => setConn("reconnecting", "server unreachable"));
setConn("offline", "offline");

const session = new Session({ onRefused: () => showLogin("The server refused this token.") });
const query = new AccountQuery();
let connectLinks = false;
let pollTimer = null;
let reloadTimer = null;
let shown = new Set();
let lastEntryId = -1;
const seen = new Set();

const stream = new Stream({
  closeCodes: vocabulary.close_codes,
  onEntry: (entry) => {
    if (entry.id != null) {  // a reconnect resumes after the last id: show each entry once
      if (seen.has(entry.id)) return;
      if (seen.size >= SEEN_MAX) seen.clear();
      seen.add(entry.id);
      lastEntryId = Math.max(lastEntryId, entry.id);
    }
    pushRecent($("recent"), entry, vocabulary.sources);
    if (entry.account_id && shown.has(entry.account_id)) scheduleReload();
    if (!entry.account_id) reloadLoops();  // a cycle's summary or heartbeat: no account
  },
  onDropped: () => scheduleReload(),
  onState: setConn,
  onRefused: () => showLogin("The server refused this token."),
});

function scheduleReload() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(reloadAccounts, RELOAD_DELAY_MS);
}

async function reloadLoops() {
  try {
    const response = await fetch("/loop-status", { cache: "no-store" });
    if (!response.ok) return;
    const report = await response.json();
    renderChanged($("loops"), report.loops, () => renderLoops($("loops"), report));
  } catch (_) { /* the next poll tries again */ }
}

async function reloadProviders() {
  try {
    const { providers } = await session.call("GET", "/api/providers");
    renderChanged($("providers"), providers, () => renderProviders($("providers"), providers));
    const select = $("provider");
    const known = new Set([...select.options].map((o) => o.value));
    for (const p of providers) {
      if (!known.has(p.name)) select.append(new Option(p.name, p.name));
    }
  } catch (_) { /* 401 shows the login; anything else: the next poll */ }
}

async function reloadAccounts() {
  clearTimeout(reloadTimer);
  try {
    const { accounts, next_cursor: nextCursor } = await session.call("GET", query.path());
    query.nextCursor = nextCursor;
    shown = new Set(accounts.map((a) => a.id));
    const rows = $("account-rows");
    if (renderChanged(rows, accounts, () => renderAccounts(rows, accounts, { connectLinks }))) {
      tick(rows);
    }
    $("prev").disabled = query.page === 1;
    $("next").disabled = !nextCursor;
    const first = (query.page - 1) * PAGE_SIZE + 1;
    $("page-info").textContent = accounts.length
      ? `page ${query.page} · ${first}–${first + accounts.length - 1}` : `page ${query.page}`;
  } catch (err) {
    if (err.status !== 401) toast(`accounts: ${err.message}`, true);
  }
}

async function start() {
  connectLinks = await session.hasRoute("/api/connect-links").catch(() => false);
  stream.connect(session.token, () => (lastEntryId >= 0 ? lastEntryId : null));
  await Promise.all([reloadLoops(), reloadProviders(), reloadAccounts()]);
  clearInterval(pollTimer);
  pollTimer = setInterval(() => { reloadLoops(); reloadProviders(); }, POLL_MS);
}

const login = new Login({
  behind: "header, main",
  accept: async (given) => {
    session.set(given);
    // Check the token before the dialog closes, so a wrong one is said at once.
    try {
      await session.call("GET", "/api/accounts?limit=1");
    } catch (err) {
      if (err.status !== 401) login.error(`server: ${err.message}`);
      return false;
    }
    return true;
  },
  opened: start,
});

function showLogin(message) {
  session.forget();
  stream.disconnect();
  clearInterval(pollTimer);
  login.show(message);
}

$("lock").addEventListener("click", () => showLogin(""));
setupFilters({ query, reload: reloadAccounts });
setupActions({ session, reload: reloadAccounts, reloadProviders });
setInterval(() => tick(document.body), 1000);
if (session.token) start(); else showLogin("");
