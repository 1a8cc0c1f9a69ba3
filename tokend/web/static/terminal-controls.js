// The toolbar, the debug-refresh form and the keys. Every control is a real button or
// input, so it is reachable with Tab and shows where the focus is.
import { copyText } from "./clipboard.js";
import { toggleOpen } from "./terminal-entries.js";
import { debugNodes, el, entryText } from "./render.js";

const $ = (id) => document.getElementById(id);
const COMPACT_KEY = "tokend.compact";  // a display preference, not a secret

export function setup({ list, vocabulary, session }) {
  const sources = $("sources");
  for (const source of vocabulary.sources) {
    const button = el("button", `src src-${source}`, source);
    button.type = "button";
    button.dataset.source = source;
    button.setAttribute("aria-pressed", "true");
    button.title = `show ${source} entries`;
    button.addEventListener("click", () => {
      const on = !list.filter.sources.has(source);
      const next = new Set(list.filter.sources);
      if (on) next.add(source); else next.delete(source);
      button.setAttribute("aria-pressed", String(on));
      list.setFilter({ sources: next });
    });
    sources.append(button);
  }

  const filter = $("filter");
  filter.addEventListener("input", () => list.setFilter({ text: filter.value.trim().toLowerCase() }));
  // A link may open the terminal filtered: the console's "View log" is /terminal?q=<id>.
  const asked = new URLSearchParams(location.search).get("q");
  if (asked) {
    filter.value = asked;
    list.setFilter({ text: asked.trim().toLowerCase() });
  }

  const failures = $("failures");
  function toggleFailures() {
    const on = !list.filter.failuresOnly;
    failures.setAttribute("aria-pressed", String(on));
    list.setFilter({ failuresOnly: on });
  }
  failures.addEventListener("click", toggleFailures);

  $("pause").addEventListener("click", () => list.togglePause());

  $("copy").addEventListener("click", async () => {
    const items = list.visibleItems();
    const text = items.map((i) => i.kind === "entry" ? entryText(i.data, vocabulary.sources)
      : `… skipped ${i.data.count} entries`).join("\n\n");
    const ok = await copyText(text);
    toast(ok ? `copied ${items.filter((i) => i.kind === "entry").length} entries` : "copy failed");
  });

  $("download").addEventListener("click", () => {
    const lines = list.visibleItems().filter((i) => i.kind === "entry")
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

  $("clear").addEventListener("click", () => list.clear());
  $("lock").addEventListener("click", () => session.lock());

  function setCompact(on) {
    document.body.classList.toggle("compact", on);
    $("compact").setAttribute("aria-pressed", String(on));
    localStorage.setItem(COMPACT_KEY, on ? "1" : "");
    list.setInteractiveHeads(on);
    list.checkBottom();
  }
  $("compact").addEventListener("click", () => setCompact(!document.body.classList.contains("compact")));
  setCompact(localStorage.getItem(COMPACT_KEY) === "1");

  const log = list.log;
  log.addEventListener("click", (event) => {
    if (!document.body.classList.contains("compact")) return;
    const head = event.target.closest(".head");
    if (head) toggleOpen(head);
  });
  log.addEventListener("keydown", (event) => {
    const head = event.target.closest(".head[role=button]");
    if (head && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      toggleOpen(head);
    }
  });

  $("jump").addEventListener("click", () => list.follow());

  // The controls scroll sideways on a phone; Chromium leaves a half-visible control where
  // it is when Tab reaches it, so bring the whole of it into view.
  $("tools").addEventListener("focusin", (event) => {
    event.target.scrollIntoView({ block: "nearest", inline: "nearest" });
  });

  // The debug form stays folded until asked for: the log keeps the room.
  const debugToggle = $("debug-toggle");
  debugToggle.addEventListener("click", () => {
    const open = $("debug-form").classList.toggle("open");
    debugToggle.setAttribute("aria-expanded", String(open));
    if (open) $("debug-account").focus();
  });

  $("debug-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const accountId = $("debug-account").value.trim();
    if (!accountId || !session.token()) return;
    $("debug-run").disabled = true;
    $("debug-status").textContent = `refreshing ${accountId}…`;
    try {
      const response = await fetch(`/api/accounts/${encodeURIComponent(accountId)}/refresh`, {
        method: "POST",
        headers: { "Authorization": `Bearer ${session.token()}`, "Content-Type": "application/json" },
        body: JSON.stringify({ debug: true }),
      });
      const answer = await response.json().catch(() => ({ error: response.statusText }));
      if (response.status === 401) { session.refused(); return; }
      debugNodes($("debug-title"), $("debug-body"), accountId, response.status, answer);
      $("debug-result").hidden = false;
      $("debug-status").textContent = "";
    } catch (err) {
      $("debug-status").textContent = `request failed: ${err.message}`;
    } finally {
      $("debug-run").disabled = false;
    }
  });
  $("debug-close").addEventListener("click", () => { $("debug-result").hidden = true; });

  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement;
    const plain = !typing && !event.ctrlKey && !event.metaKey && !event.altKey;
    if (event.key === "/" && plain) { event.preventDefault(); filter.focus(); }
    else if (event.key === "Escape" && event.target === filter) {
      filter.value = "";
      list.setFilter({ text: "" });
      filter.blur();
    } else if (event.key === "p" && plain) list.togglePause();
    else if (event.key === "f" && plain) toggleFailures();
  });
}

export function updateStatus(list) {
  const { shown, total } = list.counts();
  $("count").textContent = shown === total ? `${total} entries` : `${shown} of ${total} entries`;
  $("held").textContent = list.paused ? `${list.held.length} held` : "";
  $("pause").textContent = list.paused ? `Resume (${list.held.length} held)` : "Pause";
  $("pause").classList.toggle("active", list.paused);
  $("last").textContent = list.lastId !== null ? `last #${list.lastId}` : "";
  const jump = $("jump");
  jump.hidden = list.following;
  jump.textContent = list.unseenBelow ? `↓ ${list.unseenBelow} new` : "↓ follow";
}

function toast(message) {
  const node = $("toast");
  node.textContent = message;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 1800);
}
