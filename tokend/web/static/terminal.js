// The tokend terminal: a live view of /ws/logs. ES modules served as they are: no
// framework, no build step. This module wires the parts: the vocabulary the server
// serves, the entry list, the stream and the controls.
import { Stream } from "./connection.js";
import { EntryList } from "./entries.js";
import { setup, updateStatus } from "./controls.js";
import { load } from "./vocabulary.js";

const TOKEN_KEY = "tokend.token";
const $ = (id) => document.getElementById(id);
const configured = parseInt(document.body.dataset.maxEntries, 10);
const maxEntries = Number.isFinite(configured) && configured > 0 ? configured : 2000;

function setConn(name, text) {
  $("conn").dataset.state = name;
  $("conn-text").textContent = text || name;
}

const vocabulary = await load(() => setConn("reconnecting", "server unreachable"));
setConn("offline", "offline");

let token = sessionStorage.getItem(TOKEN_KEY);
const list = new EntryList({
  log: $("log"), maxEntries, vocabulary, onChange: () => updateStatus(list),
});
const stream = new Stream({
  closeCodes: vocabulary.close_codes,
  onEntry: (entry) => list.receive(entry),
  onDropped: (count) => list.receiveDropped(count),
  onState: setConn,
  onRefused: () => forget("The server refused this token."),
});

function connect() { stream.connect(token, () => list.lastId); }

// While the login dialog is open, the page behind it is out of reach (Tab stays in it).
function setBehindInert(on) {
  for (const node of document.querySelectorAll("header, main, footer, #debug-result, #jump")) {
    node.inert = on;
  }
}

function showLogin(message) {
  setBehindInert(true);
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

function forget(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  stream.disconnect();
  showLogin(message);
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const given = $("token").value.trim();
  if (!given) return;
  token = given;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  setBehindInert(false);
  connect();
});

setup({
  list, vocabulary,
  session: { token: () => token, lock: () => forget(""), refused: () => forget("The server refused this token.") },
});
updateStatus(list);
if (token) connect(); else showLogin("");
