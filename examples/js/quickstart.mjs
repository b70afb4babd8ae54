// Flywheel from JavaScript, Node's fetch only: rank, then send the feedback.
//
//   node examples/js/quickstart.mjs [BASE_URL] [APP_KEY]
//
// Prints the decision and the feedback's answer as JSON lines. A retry of a
// rank request with the same event_id is answered with the same decision,
// and a retry of a feedback with the same feedback_id counts once, so both
// are safe to repeat: this script chooses both ids itself and retries on
// network errors, 429 and 5xx.
import { randomUUID } from "node:crypto";

const base = process.argv[2] ?? "http://127.0.0.1:8080";
const key = process.argv[3] ?? "";

async function call(path, body, attempts = 4) {
  const headers = { "Content-Type": "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let wait = 50;
  for (let attempt = 0; ; attempt++) {
    try {
      const resp = await fetch(base + path, { method: "POST", headers, body: JSON.stringify(body), signal: AbortSignal.timeout(5000) });
      if (resp.ok) return await resp.json();
      if (![429, 502, 503, 504].includes(resp.status) || attempt === attempts - 1) {
        throw new Error(`${path}: ${resp.status} ${await resp.text()}`);
      }
    } catch (e) {
      if (attempt === attempts - 1 || e.message.startsWith(path)) throw e;
    }
    await new Promise((r) => setTimeout(r, wait));
    wait *= 2;
  }
}

const eventId = randomUUID().replaceAll("-", "");
const decision = await call("/v1/rank", {
  model: "homepage",
  event_id: eventId,
  context: { user: { segment: "gamers", age: 31 } },
  actions: [
    { id: "a1", features: { item: { category: "games", price: 49.9 } } },
    { id: "a2", features: { item: { category: "books", price: 12 } } },
  ],
});
console.log(JSON.stringify({ decision }));
const answer = await call("/v1/feedback", { event_id: decision.event_id, feedback_id: `click-${eventId}`, reward: 1, type: "click" });
console.log(JSON.stringify({ feedback: answer }));
