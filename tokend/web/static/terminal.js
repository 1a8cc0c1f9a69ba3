// The tokend terminal: a live view of /ws/logs. ES modules served as they are: no
// framework, no build step. This module wires the parts: the vocabulary the server
// serves, the entry list, the stream and the controls.
import { Stream, setConn } from "./connection.js";
import { EntryList } from "./terminal-entries.js";
import { setup, updateStatus } from "./terminal-controls.js";
import { Login, Session } from "./session.js";
import { load } from "./vocabulary.js";

const $ = (id) => document.getElementById(id);
const configured = parseInt(document.body.dataset.maxEntries, 10);
const maxEntries = Number.isFinite(configured) && configured > 0 ? configured : 2000;

const vocabulary = await load(() => setConn("reconnecting", "server unreachable"));
setConn("offline", "offline");

const session = new Session({ onRefused: () => forget("The server refused this token.") });
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

function connect() { stream.connect(session.token, () => list.lastId); }

const login = new Login({
  behind: "header, main, footer, #debug-result, #jump",
  accept: (given) => { session.set(given); return true; },
  opened: connect,
});

function forget(message) {
  session.forget();
  stream.disconnect();
  login.show(message);
}

setup({
  list, vocabulary,
  session: { token: () => session.token, lock: () => forget(""), refused: () => forget("The server refused this token.") },
});
updateStatus(list);
if (session.token) connect(); else login.show("");
