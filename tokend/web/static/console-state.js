// The console's state: the token (this tab only, shared with the terminal), the admin API
// calls, and the accounts query with its stack of keyset cursors (one per page seen).

const TOKEN_KEY = "tokend.token";
export const PAGE_SIZE = 50;

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

export class AccountQuery {
  constructor() {
    this.filters = { q: "", state: "", provider: "", org: "" };
    this.sort = "name";
    this.order = "asc";
    this.cursors = [null];  // cursors[i] opens page i; the last one is the page on screen
    this.nextCursor = null;
  }

  get page() { return this.cursors.length; }

  // Any change of filter or sort starts again from the first page.
  change({ filters, sort, order }) {
    if (filters) Object.assign(this.filters, filters);
    if (sort) this.sort = sort;
    if (order) this.order = order;
    this.cursors = [null];
    this.nextCursor = null;
  }

  next() { if (this.nextCursor) this.cursors.push(this.nextCursor); }
  prev() { if (this.cursors.length > 1) this.cursors.pop(); }

  path() {
    const params = new URLSearchParams({ sort: this.sort, order: this.order, limit: PAGE_SIZE });
    for (const [name, value] of Object.entries(this.filters)) if (value) params.set(name, value);
    const cursor = this.cursors[this.cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    return `/api/accounts?${params}`;
  }
}
