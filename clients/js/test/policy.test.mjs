// The reconnect policy against the real broker: the waits between attempts while the broker
// is down, measured against the backoff settings; 200 clients dropped by a broker restart
// come back spread out by the jitter, and resume (the restarted broker has no history: the
// gap is reported and the subscription made again); a JWT is refreshed in place at its
// share of life. Plus the pure functions behind them.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { RustoriumClient, backoffDelay, compareIds, refreshDelay, tokenExpiry } from "../dist/index.js";
import { startBroker, KEYS, publish, until, sleep, block } from "./broker.mjs";
import { startProxy } from "./proxy.mjs";

test("ids compare by their place in the sequence: X at (X, 0), B.E at (B, E)", () => {
  assert.ok(compareIds("9", "10") < 0);
  assert.ok(compareIds("10", "10.9") < 0);
  assert.ok(compareIds("10.9", "10.10") < 0);
  assert.ok(compareIds("10.99", "11") < 0);
  assert.equal(compareIds("1796580839042795.1796580839042793", "1796580839042795.1796580839042793"), 0);
  assert.ok(compareIds("99999999999999999999", "100000000000000000000") < 0, "past 2^53");
});

test("backoff: min plus a random share of min * 2^failures, at most max", () => {
  assert.equal(backoffDelay(0, 1000, 30000, 0), 1000);
  assert.equal(backoffDelay(0, 1000, 30000, 0.999999), 1999.999);
  assert.equal(Math.round(backoffDelay(3, 1000, 30000, 1)), 9000);
  assert.equal(backoffDelay(4, 1000, 30000, 1), 17000);
  assert.equal(backoffDelay(5, 1000, 30000, 1), 30000);
  assert.equal(backoffDelay(1000, 1000, 30000, 0.5), 16000);
});

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt = (claims) => `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}.c2ln`;

test("a JWT's exp sets the refresh at a share of its remaining life; other tokens are not refreshed", () => {
  const now = 1_700_000_000_000;
  assert.equal(tokenExpiry(jwt({ exp: 1_700_000_100, sub: "a" })), 1_700_000_100);
  assert.equal(refreshDelay(jwt({ exp: 1_700_000_100 }), now, 0.8), 80_000);
  assert.equal(refreshDelay(jwt({ exp: 1_699_999_000 }), now, 0.8), 0, "expired: at once");
  assert.equal(refreshDelay(jwt({ sub: "no exp" }), now, 0.8), undefined);
  assert.equal(refreshDelay("a-plain-api-key", now, 0.8), undefined);
  assert.equal(refreshDelay("a.b.c", now, 0.8), undefined, "not base64url JSON");
  assert.equal(refreshDelay(jwt({ exp: 1e12 }), now, 0.8), 2 ** 31 - 1, "held by one timer");
});

test("while the broker is down the waits between attempts follow the backoff settings", async () => {
  const min = 100,
    max = 800;
  let broker = await startBroker();
  const port = broker.port;
  const proxy = await startProxy(port);
  const c = new RustoriumClient({
    url: broker.url("/ws", proxy.port),
    token: KEYS.sub,
    WebSocket,
    backoffMin: min,
    backoffMax: max,
  });
  const gaps = [];
  c.on("gap", (g) => gaps.push(g));
  const got = [];
  await c.subscribe("blocks", {}, (e) => got.push(e.id)).ready;
  const before = await publish(broker, [block(1)]);
  await until(() => got.length === 1, "the first block");
  await sleep(min); // up a while: the drop is retried at once, then the waits grow
  await broker.kill();
  await until(() => proxy.accepted.length >= 7, "seven attempts", 15000);
  const times = proxy.accepted.slice(1, 7);
  const waits = times.slice(1).map((t, i) => t - times[i]);
  waits.forEach((w, n) => {
    const least = backoffDelay(n, min, max, 0);
    const most = backoffDelay(n, min, max, 1) + 150;
    assert.ok(w >= least - 5 && w <= most, `wait ${n} was ${w} ms, not within ${least}..${most}: ${waits}`);
  });
  console.log(`waits between attempts while the broker was down: ${waits.map(Math.round).join(", ")} ms`);
  // Back on the same port with no history: the gap is said, the subscription made again.
  broker = await startBroker({ port });
  await until(() => gaps.length === 1, "the gap");
  assert.deepEqual(gaps[0].lastMessageId, before[0]);
  assert.deepEqual(gaps[0].resubscribed, ["blocks"]);
  await until(() => c.state === "connected" && c.stats.sent >= 2, "subscribed again");
  await sleep(100);
  const after = await publish(broker, [block(2)]);
  await until(() => got.length === 2, "the block after the restart");
  assert.equal(got[1], after[0]);
  c.close();
  proxy.close();
  await broker.stop();
});

test("200 clients dropped by a broker restart come back spread by the jitter", { timeout: 60000 }, async () => {
  const CLIENTS = 200;
  const min = 1000,
    max = 8000;
  let broker = await startBroker();
  const port = broker.port;
  const clients = [];
  const back = [];
  for (let i = 0; i < CLIENTS; i++) {
    const c = new RustoriumClient({
      url: broker.url("/ws"),
      token: KEYS.sub,
      WebSocket,
      backoffMin: min,
      backoffMax: max,
    });
    clients.push(c);
  }
  await Promise.all(clients.map((c) => c.subscribe("blocks", {}, () => {}).ready));
  await sleep(min); // up a while: each retries at once on 1001, finds the broker down, then backs off
  const restart = performance.now();
  await broker.stop(); // 1001 to every client
  broker = await startBroker({ port });
  const upAgain = performance.now() - restart;
  clients.forEach((c) => c.on("state", (s) => s === "connected" && back.push(performance.now() - restart)));
  await until(() => back.length >= CLIENTS, `all ${CLIENTS} back (${back.length})`, 30000);
  back.sort((a, b) => a - b);
  // The first wait is min + up to min: a 100 ms window should hold about a tenth of them.
  // No 100 ms holds more than a quarter (without jitter all would come back together).
  let most = 0;
  for (let i = 0, j = 0; i < back.length; i++) {
    while (back[i] - back[j] > 100) j++;
    most = Math.max(most, i - j + 1);
  }
  const q = (p) => Math.round(back[Math.floor((back.length - 1) * p)]);
  console.log(
    `broker back after ${Math.round(upAgain)} ms; ${CLIENTS} clients reconnected from ${q(0)} to ${q(1)} ms ` +
      `(10th percentile ${q(0.1)}, median ${q(0.5)}, 90th ${q(0.9)}); at most ${most} within 100 ms`,
  );
  assert.ok(most <= CLIENTS / 4, `${most} of ${CLIENTS} within 100 ms`);
  assert.ok(q(0.9) - q(0.1) >= min / 2, "spread over the backoff window");
  clients.forEach((c) => c.close());
  await broker.stop();
});

test("a JWT is refreshed in place at its share of life with a token from getToken", async () => {
  // A configured key shaped like a JWT lets the client schedule the refresh; the broker
  // refuses `refresh` on a connection made with a configured key (`forbidden`), on the open
  // connection. Refresh with real signed tokens is tokens.test.mjs.
  const exp = Math.floor(Date.now() / 1000) + 2;
  const first = jwt({ sub: "t", exp });
  const second = jwt({ sub: "t", exp: exp + 3600 });
  const broker = await startBroker({ args: ["--key", `jwt:${first}:subscribe`] });
  const asked = [];
  const c = new RustoriumClient({
    url: broker.url("/v1"),
    getToken: () => {
      asked.push(Date.now());
      return asked.length === 1 ? first : second;
    },
    WebSocket,
    refreshAt: 0.5,
  });
  const replies = [];
  c.on("error", (e) => replies.push(e.code));
  await c.subscribe("blocks", {}, () => {}).ready;
  const connected = Date.now();
  await until(() => asked.length === 2, "getToken asked for the refresh", 5000);
  const at = asked[1] - connected;
  assert.ok(at >= 300 && at <= 1500, `refresh asked ${at} ms after connecting (half of ~2 s)`);
  await until(() => replies.length > 0 || c.stats.sent >= 2, "the refresh sent and answered", 5000);
  await sleep(200);
  assert.equal(c.stats.sent, 2, "subscribe, then refresh");
  assert.ok(
    replies.every((r) => r === "invalid_request" || r === "forbidden"),
    String(replies),
  );
  assert.equal(c.state, "connected", "the connection stays");
  c.close();
  await broker.stop();
});
