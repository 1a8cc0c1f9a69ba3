// The WebSocket to /ws/logs: hello with the token and the last id seen, entries in either
// frame shape, and reconnection with jittered backoff. A refused token is not retried.

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

// The connection badge both pages show (#conn, #conn-text): its state and what it says.
export function setConn(name, text) {
  document.getElementById("conn").dataset.state = name;
  document.getElementById("conn-text").textContent = text || name;
}

export class Stream {
  constructor({ closeCodes, onEntry, onDropped, onState, onRefused }) {
    this.closeCodes = closeCodes;
    this.on = { onEntry, onDropped, onState, onRefused };
    this.ws = null;
    this.retryTimer = null;
    this.backoffMs = BACKOFF_MIN_MS;
  }

  connect(token, since) {
    clearTimeout(this.retryTimer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/logs`);
    this.ws = ws;
    this.on.onState("connecting", "connecting…");
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "hello", token, since: since(), sources: null }));
    };
    ws.onmessage = (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      if (msg.type === "ready") {
        this.backoffMs = BACKOFF_MIN_MS;
        this.on.onState("live", "live");
      } else if (msg.type === "entry") {
        this.on.onEntry(msg);
      } else if (msg.type === "entries") {
        for (const entry of msg.entries || []) this.on.onEntry(entry);
      } else if (msg.type === "dropped") {
        this.on.onDropped(msg.count);
      }
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (event.code === this.closeCodes.unauthorized) {
        this.on.onRefused();
        return;
      }
      const delay = Math.round(this.backoffMs * (0.8 + Math.random() * 0.4));
      this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
      this.on.onState("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s`);
      this.retryTimer = setTimeout(() => this.connect(token, since), delay);
    };
  }

  disconnect() {
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    this.on.onState("offline", "offline");
  }
}
