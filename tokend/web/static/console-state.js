// The console's state: the accounts query with its stack of keyset cursors (one per page
// seen). The token and the API calls are session.js's, shared with the terminal.

export const PAGE_SIZE = 50;

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
