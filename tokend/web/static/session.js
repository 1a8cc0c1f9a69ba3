// What the console and the terminal share about who is signed in: the token (this tab
// only, one for both pages), the admin API calls made with it, and the login dialog
// (login.html, which the server puts into both pages).

const TOKEN_KEY = "tokend.token";
const $ = (id) => document.getElementById(id);

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export class Session {
  constructor({ onRefused }) {
    this.token = sessionStorage.getItem(TOKEN_KEY);
    this.onRefused = onRefused;
  }

  set(token) {
    this.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
  }

  forget() {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
  }

  // JSON in and out; a 401 forgets the token, any other failure is an ApiError.
  async call(method, path, body) {
    const headers = { "Authorization": `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({ error: response.statusText }));
    if (response.status === 401) {
      this.onRefused();
      throw new ApiError(401, "the server refused this token", answer);
    }
    if (!response.ok) throw new ApiError(response.status, answer.error || response.statusText, answer);
    return answer;
  }

  // Whether a route exists at all: an unknown path is a 404, a known one answers GET with
  // 405 when it only takes POST. Nothing is sent that could change anything.
  async hasRoute(path) {
    const response = await fetch(path, { headers: { "Authorization": `Bearer ${this.token}` } });
    return response.status !== 404;
  }
}

// The login dialog. `accept(token)` says whether the token will do (it may set the
// dialog's error itself); `opened()` runs once the dialog has closed on it. While the
// dialog is open, the page behind it (`behind`, a selector) is out of reach: Tab stays in it.
export class Login {
  constructor({ behind, accept, opened }) {
    this.behind = behind;
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const given = $("token").value.trim();
      if (!given || !(await accept(given))) return;
      $("login").hidden = true;
      this.setBehindInert(false);
      opened();
    });
  }

  setBehindInert(on) {
    for (const node of document.querySelectorAll(this.behind)) node.inert = on;
  }

  show(message) {
    this.setBehindInert(true);
    $("login").hidden = false;
    this.error(message);
    $("token").value = "";
    $("token").focus();
  }

  error(message) { $("login-error").textContent = message || ""; }
}
