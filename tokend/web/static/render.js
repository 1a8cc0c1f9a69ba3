// One entry, from the same fields `tokend logs` prints: a head line, the message, the HTTP
// exchange (masked by the server), then the error. One model feeds both the DOM and the
// plain text (copy), so the two cannot drift apart.

export function el(tag, cls, text) {
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

// `code: description`, or the code alone: the server's vocabulary.error_text rule.
export function errorText(error) {
  if (!error) return "";
  if (typeof error !== "object") return String(error);
  const code = error.code || "error";
  return error.description ? `${code}: ${error.description}` : code;
}

// A failure's message is its error's description: say it once, on the ERROR line.
function errorDescription(entry) {
  return entry.error && typeof entry.error === "object" ? entry.error.description : undefined;
}

// The server's vocabulary.failed rule: an error, a 4xx/5xx answer, or a cycle with failures.
export function isFailure(entry) {
  const status = entry.response && entry.response.status;
  return Boolean(entry.error) || (typeof status === "number" && status >= 400) ||
    Boolean(entry.details && entry.details.error_count);
}

// What the text filter looks through: who, what, and why it failed (every field of the
// error as the server's vocabulary lists them, and the accounts a cycle counted as failed).
export function searchText(entry, errorFields) {
  const error = entry.error && typeof entry.error === "object" ? entry.error : {};
  const failedCodes = ((entry.details && entry.details.errors) || [])
    .map((e) => `${e.account_id || ""} ${e.error_code || ""}`);
  return [entry.account_id, entry.org_id, entry.action, entry.source, entry.provider,
    entry.message, typeof entry.error === "string" ? entry.error : "",
    ...errorFields.map((name) => error[name]), entry.response && entry.response.status,
    ...failedCodes]
    .filter((v) => v !== undefined && v !== null && v !== "").join(" ").toLowerCase();
}

// The model: head parts ({cls, text, plain}) and the sections below it.
function model(entry, knownSources) {
  const source = knownSources.includes(entry.source) ? entry.source : "other";
  const label = String(entry.source).toUpperCase();
  const head = [
    { cls: "time", text: clock(entry.created_at), plain: entry.created_at, title: entry.created_at },
    { cls: `badge s-${source}`, text: label, plain: `[${label}]` },
    { cls: "action", text: entry.action },
  ];
  if (entry.org_id) head.push({ cls: "org", text: `${entry.org_id} ›`, plain: `${entry.org_id} >` });
  if (entry.account_id) head.push({ cls: "acct", text: entry.account_id });
  const where = [entry.provider, entry.environment].filter(Boolean).join(" ");
  if (where) head.push({ cls: "env", text: where, plain: `(${where})` });
  if (entry.duration_ms != null) head.push({ cls: "dur", text: `${Math.round(entry.duration_ms)} ms` });
  head.push({ cls: "eid", text: `#${entry.id}` });
  const errors = entry.details && entry.details.error_count;
  return {
    source, head,
    message: entry.message !== errorDescription(entry) ? entry.message || "" : "",
    failedCount: errors ? `${errors} account(s) failed` : "",
    exchange: exchange(entry.request, entry.response),
    error: entry.error ? `ERROR ${errorText(entry.error)}` : "",
  };
}

function exchange(request, response) {
  const sections = [];
  if (request) {
    sections.push({ title: "=== HTTP REQUEST ===", cls: "reqline",
      first: `${request.method || ""} ${request.url || ""}`.trim(),
      headers: Object.entries(request.headers || {}), body: bodyText(request.body) });
  }
  if (response) {
    const bad = typeof response.status === "number" && response.status >= 400;
    sections.push({ title: "=== HTTP RESPONSE ===", cls: bad ? "status-bad" : "status-ok",
      first: `HTTP ${response.status ?? ""} ${response.reason ?? ""}`.trim(),
      headers: Object.entries(response.headers || {}), body: bodyText(response.body) });
  }
  return sections;
}

function exchangeNodes(parent, sections) {
  for (const s of sections) {
    parent.append(el("div", "section", s.title));
    const pre = el("pre", "http");
    pre.append(el("span", s.cls, s.first), "\n");
    for (const [k, v] of s.headers) pre.append(el("span", "hname", `${k}:`), ` ${v}\n`);
    if (s.body) pre.append("\n", s.body);
    parent.append(pre);
  }
}

export function entryNode(entry, knownSources) {
  const m = model(entry, knownSources);
  const node = el("article", `entry s-${m.source}`);
  if (isFailure(entry)) node.classList.add("failed");
  if (!entry.request && !entry.response && !entry.error) node.classList.add("quiet");
  node.dataset.id = entry.id;
  const head = el("div", "head");
  for (const part of m.head) {
    const span = el("span", part.cls, part.text);
    if (part.title) span.title = part.title;
    head.append(span);
  }
  node.append(head);
  if (m.message) node.append(el("div", "msg", m.message));
  if (m.failedCount) node.append(el("div", "error", m.failedCount));
  exchangeNodes(node, m.exchange);
  if (m.error) node.append(el("div", "error", m.error));
  return node;
}

export function entryText(entry, knownSources) {
  const m = model(entry, knownSources);
  const lines = [m.head.map((p) => p.plain ?? p.text).join("  ")];
  if (m.message) lines.push(m.message);
  if (m.failedCount) lines.push(m.failedCount);
  for (const s of m.exchange) {
    lines.push(s.title, s.first, ...s.headers.map(([k, v]) => `${k}: ${v}`));
    if (s.body) lines.push("", s.body);
  }
  if (m.error) lines.push(m.error);
  return lines.join("\n");
}

// A debug refresh's answer ({success, error, error_description, request, response}).
export function debugNodes(title, body, accountId, status, answer) {
  title.replaceChildren(el("span", "badge s-debug", "DEBUG"), " ", el("span", "acct", accountId), "  ");
  if (status !== 200) {
    title.append(el("span", "error", `HTTP ${status}: ${answer.error || "error"}`));
  } else if (answer.success) {
    title.append(el("span", "status-ok", "refreshed"));
  } else {
    title.append(el("span", "error",
      errorText({ code: answer.error, description: answer.error_description })));
  }
  body.replaceChildren();
  exchangeNodes(body, exchange(answer.request, answer.response));
}
