// The entry vocabulary as the server defines it (GET /api/vocabulary): sources, actions,
// the fields of an entry's error, the stream's close codes. The page keeps no copy of them.

const RETRY_MS = 2000;

export async function load(onRetry) {
  for (;;) {
    try {
      const response = await fetch("/api/vocabulary", { cache: "no-store" });
      if (response.ok) return Object.freeze(await response.json());
    } catch (_) { /* the server is not reachable yet */ }
    onRetry();
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}
