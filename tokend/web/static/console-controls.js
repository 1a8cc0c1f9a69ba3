// The console's controls: the account filters, sort and pager, the per-account actions,
// Resume on a paused provider, and the debug panel. Buttons and links only, so Tab reaches
// every one of them.
import { copyText } from "./clipboard.js";
import { debugNodes } from "./render.js";

const $ = (id) => document.getElementById(id);
const SEARCH_DELAY_MS = 250;

export function toast(message, bad) {
  const node = $("toast");
  node.textContent = message;
  node.classList.toggle("bad", Boolean(bad));
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 2600);
}

export function setupFilters({ query, reload }) {
  let timer = null;
  const text = (id, name) => $(id).addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { query.change({ filters: { [name]: $(id).value.trim() } }); reload(); },
      SEARCH_DELAY_MS);
  });
  text("q", "q");
  text("org", "org");
  $("account-filters").addEventListener("submit", (event) => event.preventDefault());
  for (const name of ["state", "provider"]) {
    $(name).addEventListener("change", () => { query.change({ filters: { [name]: $(name).value } }); reload(); });
  }
  $("sort").addEventListener("change", () => { query.change({ sort: $("sort").value }); reload(); });
  $("order").addEventListener("click", () => {
    const order = query.order === "asc" ? "desc" : "asc";
    query.change({ order });
    $("order-text").textContent = order === "asc" ? "↑ asc" : "↓ desc";
    reload();
  });
  $("next").addEventListener("click", () => { query.next(); reload(); });
  $("prev").addEventListener("click", () => { query.prev(); reload(); });
}

export function setupActions({ session, reload, reloadProviders }) {
  const accountPath = (id, action) => `/api/accounts/${encodeURIComponent(id)}/${action}`;

  async function debugRefresh(id, button) {
    button.disabled = true;
    button.textContent = "Refreshing…";
    let status = 200, answer;
    try {
      answer = await session.call("POST", accountPath(id, "refresh"), { debug: true });
    } catch (err) {
      if (err.status === 401) return;
      status = err.status || 0;
      answer = err.body || { error: err.message };
    } finally {
      button.disabled = false;
      button.textContent = "Refresh";
    }
    debugNodes($("debug-title"), $("debug-body"), id, status, answer);
    $("debug-result").hidden = false;
    $("debug-result").focus();
    reload();
  }

  async function connectLink(id, button) {
    const row = button.closest("tr");
    const account = row && row.account;
    try {
      const answer = await session.call("POST", "/api/connect-links",
        { provider: account.provider, org: account.org, account_id: id });
      const link = answer.url || answer.link;
      toast(link && await copyText(link) ? `reconnect link for ${id} copied` : `link: ${link}`);
    } catch (err) {
      if (err.status !== 401) toast(`reconnect link failed: ${err.message}`, true);
    }
  }

  async function simple(id, action, done) {
    try {
      await session.call("POST", accountPath(id, action));
      toast(done);
    } catch (err) {
      if (err.status !== 401) toast(`${action} ${id}: ${err.message}`, true);
    }
    reload();
  }

  $("account-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const id = button.dataset.id;
    const action = button.dataset.action;
    if (action === "debug-refresh") debugRefresh(id, button);
    else if (action === "connect-link") connectLink(id, button);
    else if (action === "disable") simple(id, "disable", `${id} disabled`);
    else if (action === "enable") simple(id, "enable", `${id} enabled`);
    else if (action === "clear-backoff") simple(id, "clear-backoff", `${id} is due now`);
  });

  $("providers").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action=resume]");
    if (!button) return;
    const name = button.dataset.provider;
    try {
      await session.call("POST", `/api/providers/${encodeURIComponent(name)}/resume`);
      toast(`${name} resumed`);
    } catch (err) {
      if (err.status !== 401) toast(`resume ${name}: ${err.message}`, true);
    }
    reloadProviders();
  });

  $("debug-close").addEventListener("click", () => { $("debug-result").hidden = true; });
}
