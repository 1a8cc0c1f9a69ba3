// The list of entries on screen: dedupe, pause, batching per frame, trimming to the newest
// `maxEntries`, the filters (sources, text, failures only) and following the bottom.
import { el, entryNode, isFailure, searchText } from "./render.js";

export class EntryList {
  constructor({ log, maxEntries, vocabulary, onChange }) {
    this.log = log;
    this.maxEntries = maxEntries;
    this.knownSources = vocabulary.sources;
    this.errorFields = vocabulary.error_fields;
    this.onChange = onChange;
    this.lastId = null;
    this.seen = new Set();
    this.items = [];      // {kind: "entry"|"dropped", data, el, hay}
    this.pending = [];    // received, waiting for the next animation frame
    this.held = [];       // received while paused
    this.paused = false;
    this.following = true;
    this.unseenBelow = 0;
    this.interactiveHeads = false;
    this.filter = { sources: new Set(this.knownSources), text: "", failuresOnly: false };
    log.addEventListener("scroll", () => this.checkBottom());
  }

  visible(item) {
    if (item.kind !== "entry") return true;
    const e = item.data;
    const f = this.filter;
    if (this.knownSources.includes(e.source) && !f.sources.has(e.source)) return false;
    if (f.failuresOnly && !isFailure(e)) return false;
    return !f.text || item.hay.includes(f.text);
  }

  setFilter(change) {
    Object.assign(this.filter, change);
    for (const item of this.items) item.el.hidden = !this.visible(item);
    this.onChange();
    this.checkBottom();
  }

  receive(entry) {
    if (entry.id != null) {
      if (this.seen.has(entry.id)) return;
      this.seen.add(entry.id);
      if (this.lastId === null || entry.id > this.lastId) this.lastId = entry.id;
    }
    this.hold({ kind: "entry", data: entry, el: null, hay: searchText(entry, this.errorFields) });
  }

  receiveDropped(count) { this.hold({ kind: "dropped", data: { count }, el: null }); }

  hold(item) {
    if (!this.paused) { this.push(item); return; }
    this.held.push(item);
    if (this.held.length > this.maxEntries) this.held.shift();
    this.onChange();
  }

  togglePause() {
    this.paused = !this.paused;
    if (!this.paused) for (const item of this.held.splice(0)) this.push(item);
    this.onChange();
  }

  push(item) {
    this.pending.push(item);
    // Only the newest maxEntries survive trimming anyway: a hidden tab must not pile up more.
    if (this.pending.length > this.maxEntries) this.pending.shift();
    if (this.pending.length === 1) {
      if (document.hidden) setTimeout(() => this.flush(), 250);
      else requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    const batch = this.pending.splice(0);
    if (!batch.length) return;
    const fragment = document.createDocumentFragment();
    for (const item of batch) {
      item.el = item.kind === "entry" ? entryNode(item.data, this.knownSources)
        : el("div", "dropped", `… skipped ${item.data.count} entries (this page fell behind)`);
      if (item.kind === "entry" && this.interactiveHeads) interactive(item.el, true);
      item.el.hidden = !this.visible(item);
      this.items.push(item);
      fragment.append(item.el);
    }
    this.log.append(fragment);
    this.trim();
    if (this.following) this.log.scrollTop = this.log.scrollHeight;
    else this.unseenBelow += batch.length;
    this.onChange();
  }

  trim() {
    const excess = this.items.length - this.maxEntries;
    if (excess <= 0) return;
    for (const item of this.items.splice(0, excess)) item.el.remove();
    if (this.seen.size > this.maxEntries * 4) {
      let drop = this.seen.size - this.maxEntries * 2;
      for (const id of this.seen) {
        if (drop-- <= 0) break;
        this.seen.delete(id);
      }
    }
  }

  clear() {
    for (const item of this.items) item.el.remove();
    this.items = [];
    this.unseenBelow = 0;
    this.onChange();
    this.checkBottom();
  }

  visibleItems() { return this.items.filter((i) => !i.el.hidden); }

  counts() {
    const entries = this.items.filter((i) => i.kind === "entry");
    return { shown: entries.filter((i) => !i.el.hidden).length, total: entries.length };
  }

  // In compact mode each head line opens its entry: a button for the keyboard too.
  setInteractiveHeads(on) {
    this.interactiveHeads = on;
    for (const item of this.items) if (item.kind === "entry") interactive(item.el, on);
  }

  // Following resumes whenever the bottom is in view: scrolled there, or the list shrank.
  checkBottom() {
    const log = this.log;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    if (atBottom !== this.following) {
      this.following = atBottom;
      if (atBottom) this.unseenBelow = 0;
      this.onChange();
    }
  }

  follow() {
    this.following = true;
    this.unseenBelow = 0;
    this.log.scrollTop = this.log.scrollHeight;
    this.onChange();
  }
}

function interactive(entryEl, on) {
  const head = entryEl.querySelector(".head");
  if (on) {
    head.tabIndex = 0;
    head.setAttribute("role", "button");
    head.setAttribute("aria-expanded", String(entryEl.classList.contains("open")));
  } else {
    head.removeAttribute("tabindex");
    head.removeAttribute("role");
    head.removeAttribute("aria-expanded");
  }
}

export function toggleOpen(head) {
  const open = head.parentElement.classList.toggle("open");
  if (head.hasAttribute("role")) head.setAttribute("aria-expanded", String(open));
}
