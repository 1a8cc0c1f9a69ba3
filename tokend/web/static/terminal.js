// The tokend terminal: a live view of /ws/logs. No framework, no build step.
"use strict";

(() => {
  const TOKEN_KEY = "tokend.token";
  const SOURCES = ["scheduled", "manual", "debug", "admin", "vend"];
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const $ = (id) => document.getElementById(id);
  const configured = parseInt(document.body.dataset.maxEntries, 10);
  const maxEntries = Number.isFinite(configured) && configured > 0 ? configured : 2000;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    ws: null,
    retryTimer: null,
    backoffMs: BACKOFF_MIN_MS,
    lastId: null,
    seen: new Set(),
    items: [],          // {kind: "entry"|"dropped", data, el}
    pending: [],        // received, waiting for the next animation frame
    held: [],           // received while paused
    paused: false,
    following: true,
    unseenBelow: 0,
    sources: new Set(SOURCES),
    filter: "",
  };

  // ---- rendering ------------------------------------------------------------------
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function pad(n, width) { return String(n).padStart(width, "0"); }

  function clock(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso || "-";
    return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}` +
      `.${pad(d.getMilliseconds(), 3)}`;
  }

  function bodyText(body) {
    if (body === null || body === undefined || body === "") return "";
    if (typeof body === "string") {
      const t = body.trim();
      if (t.startsWith("{") || t.startsWith("[")) {
        try { return JSON.stringify(JSON.parse(t), null, 2); } catch (_) { /* not JSON */ }
      }
      return body;
    }
    return JSON.stringify(body, null, 2);
  }

  function statusLine(response) {
    return `HTTP ${response.status ?? ""} ${response.reason ?? ""}`.trim();
  }

  function errorText(error) {
    if (!error) return "";
    if (typeof error === "string") return error;
    return `${error.code || "error"}: ${error.message || error.description || ""}`;
  }

  function isFailure(entry) {
    return Boolean(entry.error) || (entry.response && entry.response.status >= 400);
  }

  // The same sections `tokend logs` prints, as plain text (copy, and the debug panel).
  function entryText(entry) {
    const lines = [];
    const where = [entry.provider, entry.environment].filter(Boolean).join(" ");
    lines.push([entry.created_at, `#${entry.id}`, entry.action, `[${String(entry.source).toUpperCase()}]`,
      entry.account_id || "-", where ? `(${where})` : "",
      entry.duration_ms != null ? `${Math.round(entry.duration_ms)} ms` : ""].filter(Boolean).join("  "));
    if (entry.message) lines.push(entry.message);
    lines.push(...exchangeLines(entry.request, entry.response));
    if (entry.error) lines.push(`ERROR ${errorText(entry.error)}`);
    return lines.join("\n");
  }

  function exchangeLines(request, response) {
    const lines = [];
    if (request) {
      lines.push("=== HTTP REQUEST ===", `${request.method || ""} ${request.url || ""}`.trim());
      for (const [k, v] of Object.entries(request.headers || {})) lines.push(`${k}: ${v}`);
      const body = bodyText(request.body);
      if (body) lines.push("", body);
    }
    if (response) {
      lines.push("=== HTTP RESPONSE ===", statusLine(response));
      for (const [k, v] of Object.entries(response.headers || {})) lines.push(`${k}: ${v}`);
      const body = bodyText(response.body);
      if (body) lines.push("", body);
    }
    return lines;
  }

  function httpBlock(parent, request, response) {
    if (request) {
      parent.append(el("div", "section", "=== HTTP REQUEST ==="));
      const pre = el("pre", "http");
      pre.append(el("span", "reqline", `${request.method || ""} ${request.url || ""}`.trim()), "\n");
      headerLines(pre, request.headers);
      const body = bodyText(request.body);
      if (body) pre.append("\n", body);
      parent.append(pre);
    }
    if (response) {
      parent.append(el("div", "section", "=== HTTP RESPONSE ==="));
      const pre = el("pre", "http");
      const bad = typeof response.status === "number" && response.status >= 400;
      pre.append(el("span", bad ? "status-bad" : "status-ok", statusLine(response)), "\n");
      headerLines(pre, response.headers);
      const body = bodyText(response.body);
      if (body) pre.append("\n", body);
      parent.append(pre);
    }
  }

  function headerLines(pre, headers) {
    for (const [k, v] of Object.entries(headers || {})) {
      pre.append(el("span", "hname", `${k}:`), ` ${v}\n`);
    }
  }

  function renderEntry(entry) {
    const source = SOURCES.includes(entry.source) ? entry.source : "other";
    const node = el("article", `entry s-${source}`);
    if (isFailure(entry)) node.classList.add("failed");
    if (!entry.request && !entry.response && !entry.error) node.classList.add("quiet");
    node.dataset.id = entry.id;
    const head = el("div", "head");
    const time = el("span", "time", clock(entry.created_at));
    time.title = entry.created_at;
    head.append(time, el("span", `badge s-${source}`, String(entry.source).toUpperCase()),
      el("span", "action", entry.action));
    if (entry.org_id) head.append(el("span", "org", `${entry.org_id} ›`));
    if (entry.account_id) head.append(el("span", "acct", entry.account_id));
    const where = [entry.provider, entry.environment].filter(Boolean).join(" · ");
    if (where) head.append(el("span", "env", where));
    if (entry.duration_ms != null) head.append(el("span", "dur", `${Math.round(entry.duration_ms)} ms`));
    head.append(el("span", "eid", `#${entry.id}`));
    node.append(head);
    if (entry.message) node.append(el("div", "msg", entry.message));
    const errors = entry.details && entry.details.error_count;
    if (errors) node.append(el("div", "error", `${errors} account(s) failed`));
    httpBlock(node, entry.request, entry.response);
    if (entry.error) node.append(el("div", "error", `ERROR ${errorText(entry.error)}`));
    return node;
  }

  // ---- the list ---------------------------------------------------------------------
  const log = $("log");

  function visible(item) {
    if (item.kind !== "entry") return true;
    const e = item.data;
    if (!state.sources.has(e.source) && SOURCES.includes(e.source)) return false;
    if (!state.filter) return true;
    const hay = `${e.account_id || ""} ${e.action || ""} ${e.org_id || ""}`.toLowerCase();
    return hay.includes(state.filter);
  }

  function applyFilter() {
    for (const item of state.items) item.el.hidden = !visible(item);
    updateStatus();
    checkBottom();
  }

  function push(item) {
    state.pending.push(item);
    // Only the newest maxEntries survive trimming anyway: a hidden tab must not pile up more.
    if (state.pending.length > maxEntries) state.pending.shift();
    if (state.pending.length === 1) {
      if (document.hidden) setTimeout(flush, 250); else requestAnimationFrame(flush);
    }
  }

  function flush() {
    const batch = state.pending.splice(0);
    if (!batch.length) return;
    const fragment = document.createDocumentFragment();
    for (const item of batch) {
      item.el = item.kind === "entry" ? renderEntry(item.data)
        : el("div", "dropped", `… skipped ${item.data.count} entries (this page fell behind)`);
      item.el.hidden = !visible(item);
      state.items.push(item);
      fragment.append(item.el);
    }
    log.append(fragment);
    trim();
    if (state.following) {
      log.scrollTop = log.scrollHeight;
    } else {
      state.unseenBelow += batch.length;
    }
    updateStatus();
  }

  function trim() {
    const excess = state.items.length - maxEntries;
    if (excess <= 0) return;
    for (const item of state.items.splice(0, excess)) item.el.remove();
    if (state.seen.size > maxEntries * 4) {
      let drop = state.seen.size - maxEntries * 2;
      for (const id of state.seen) {
        if (drop-- <= 0) break;
        state.seen.delete(id);
      }
    }
  }

  function receive(entry) {
    if (entry.id != null) {
      if (state.seen.has(entry.id)) return;
      state.seen.add(entry.id);
      if (state.lastId === null || entry.id > state.lastId) state.lastId = entry.id;
    }
    const item = { kind: "entry", data: entry, el: null };
    if (state.paused) {
      state.held.push(item);
      if (state.held.length > maxEntries) state.held.shift();
      updateStatus();
    } else {
      push(item);
    }
  }

  function receiveDropped(count) {
    const item = { kind: "dropped", data: { count }, el: null };
    if (state.paused) state.held.push(item); else push(item);
  }

  function updateStatus() {
    const shown = state.items.filter((i) => i.kind === "entry" && !i.el.hidden).length;
    const total = state.items.filter((i) => i.kind === "entry").length;
    $("count").textContent = shown === total ? `${total} entries` : `${shown} of ${total} entries`;
    $("held").textContent = state.paused ? `${state.held.length} held` : "";
    $("pause").textContent = state.paused ? `Resume (${state.held.length} held)` : "Pause";
    $("pause").classList.toggle("active", state.paused);
    $("last").textContent = state.lastId !== null ? `last #${state.lastId}` : "";
    const jump = $("jump");
    jump.hidden = state.following;
    jump.textContent = state.unseenBelow ? `↓ ${state.unseenBelow} new` : "↓ follow";
  }

  // ---- connection -------------------------------------------------------------------
  function setConn(name, text) {
    $("conn").dataset.state = name;
    $("conn-text").textContent = text || name;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    if (!state.token) { showLogin(""); return; }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/logs`);
    state.ws = ws;
    setConn("connecting", "connecting…");
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "hello", token: state.token, since: state.lastId, sources: null }));
    };
    ws.onmessage = (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      if (msg.type === "ready") {
        state.backoffMs = BACKOFF_MIN_MS;
        setConn("live", "live");
      } else if (msg.type === "entry") {
        receive(msg);
      } else if (msg.type === "dropped") {
        receiveDropped(msg.count);
      }
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (event.code === 4401) {
        forgetToken("The server refused this token.");
        return;
      }
      const delay = Math.round(state.backoffMs * (0.8 + Math.random() * 0.4));
      state.backoffMs = Math.min(state.backoffMs * 2, BACKOFF_MAX_MS);
      setConn("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s`);
      state.retryTimer = setTimeout(connect, delay);
    };
  }

  function disconnect() {
    clearTimeout(state.retryTimer);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000);
    setConn("offline", "offline");
  }

  // ---- login ------------------------------------------------------------------------
  function showLogin(message) {
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function forgetToken(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    disconnect();
    showLogin(message);
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    connect();
  });

  $("lock").addEventListener("click", () => forgetToken(""));

  // ---- toolbar ----------------------------------------------------------------------
  for (const button of document.querySelectorAll("#sources .src")) {
    button.addEventListener("click", () => {
      const source = button.dataset.source;
      const on = !state.sources.has(source);
      if (on) state.sources.add(source); else state.sources.delete(source);
      button.setAttribute("aria-pressed", String(on));
      applyFilter();
    });
  }

  $("filter").addEventListener("input", (event) => {
    state.filter = event.target.value.trim().toLowerCase();
    applyFilter();
  });

  function togglePause() {
    state.paused = !state.paused;
    if (!state.paused) for (const item of state.held.splice(0)) push(item);
    updateStatus();
  }
  $("pause").addEventListener("click", togglePause);

  function visibleItems() { return state.items.filter((i) => !i.el.hidden); }

  function toast(message) {
    const node = $("toast");
    node.textContent = message;
    node.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { node.hidden = true; }, 1800);
  }

  function copyFallback(text) {
    const area = el("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    area.remove();
    return ok;
  }

  $("copy").addEventListener("click", async () => {
    const items = visibleItems();
    const text = items.map((i) => i.kind === "entry" ? entryText(i.data)
      : `… skipped ${i.data.count} entries`).join("\n\n");
    let ok = false;
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); ok = true; } catch (_) { ok = false; }
    }
    if (!ok) ok = copyFallback(text);
    toast(ok ? `copied ${items.filter((i) => i.kind === "entry").length} entries` : "copy failed");
  });

  $("download").addEventListener("click", () => {
    const lines = visibleItems().filter((i) => i.kind === "entry")
      .map((i) => JSON.stringify(i.data)).join("\n");
    const blob = new Blob([lines ? lines + "\n" : ""], { type: "application/x-ndjson" });
    const link = el("a");
    link.href = URL.createObjectURL(blob);
    link.download = `tokend-log-${new Date().toISOString().replace(/[:.]/g, "-")}.jsonl`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  });

  $("clear").addEventListener("click", () => {
    for (const item of state.items) item.el.remove();
    state.items = [];
    state.unseenBelow = 0;
    updateStatus();
    checkBottom();
  });

  const COMPACT_KEY = "tokend.compact";  // a display preference, not a secret
  function setCompact(on) {
    document.body.classList.toggle("compact", on);
    $("compact").setAttribute("aria-pressed", String(on));
    localStorage.setItem(COMPACT_KEY, on ? "1" : "");
    checkBottom();
  }
  $("compact").addEventListener("click", () => setCompact(!document.body.classList.contains("compact")));
  setCompact(localStorage.getItem(COMPACT_KEY) === "1");

  log.addEventListener("click", (event) => {
    if (!document.body.classList.contains("compact")) return;
    const head = event.target.closest(".head");
    if (head) head.parentElement.classList.toggle("open");
  });

  // ---- following the bottom -----------------------------------------------------------
  // Following resumes whenever the bottom is in view: scrolled there, or the list shrank.
  function checkBottom() {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    if (atBottom !== state.following) {
      state.following = atBottom;
      if (atBottom) state.unseenBelow = 0;
      updateStatus();
    }
  }
  log.addEventListener("scroll", checkBottom);

  $("jump").addEventListener("click", () => {
    state.following = true;
    state.unseenBelow = 0;
    log.scrollTop = log.scrollHeight;
    updateStatus();
  });

  // ---- manual debug refresh ------------------------------------------------------------
  $("debug-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const accountId = $("debug-account").value.trim();
    if (!accountId || !state.token) return;
    $("debug-run").disabled = true;
    $("debug-status").textContent = `refreshing ${accountId}…`;
    try {
      const response = await fetch(`/api/accounts/${encodeURIComponent(accountId)}/refresh`, {
        method: "POST",
        headers: { "Authorization": `Bearer ${state.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ debug: true }),
      });
      const answer = await response.json().catch(() => ({ error: response.statusText }));
      if (response.status === 401) { forgetToken("The server refused this token."); return; }
      showDebug(accountId, response.status, answer);
      $("debug-status").textContent = "";
    } catch (err) {
      $("debug-status").textContent = `request failed: ${err.message}`;
    } finally {
      $("debug-run").disabled = false;
    }
  });

  function showDebug(accountId, status, answer) {
    const title = $("debug-title");
    const body = $("debug-body");
    title.textContent = "";
    body.textContent = "";
    title.append(el("span", "badge s-debug", "DEBUG"), " ", el("span", "acct", accountId), "  ");
    if (status !== 200) {
      title.append(el("span", "error", `HTTP ${status}: ${answer.error || "error"}`));
    } else if (answer.success) {
      title.append(el("span", "status-ok", "refreshed"));
    } else {
      title.append(el("span", "error", `${answer.error}: ${answer.error_description || ""}`));
    }
    httpBlock(body, answer.request, answer.response);
    $("debug-result").hidden = false;
  }

  $("debug-close").addEventListener("click", () => { $("debug-result").hidden = true; });

  // ---- keys ---------------------------------------------------------------------------
  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement;
    if (event.key === "/" && !typing) { event.preventDefault(); $("filter").focus(); }
    else if (event.key === "Escape" && event.target === $("filter")) {
      $("filter").value = ""; state.filter = ""; applyFilter(); $("filter").blur();
    } else if (event.key === "p" && !typing && !event.ctrlKey && !event.metaKey) togglePause();
  });

  updateStatus();
  if (state.token) connect(); else showLogin("");
})();
