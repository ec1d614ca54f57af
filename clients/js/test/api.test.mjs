// Every entry point of the client on both dialects against the real broker: subscriptions
// with filters on the six channels and what onEvent gets, the commands and publish, the
// broker's errors with their codes, state events, close(), pacing under the message caps,
// the bounded request queue, request timeouts, and one reconnect restoring 100 subscriptions.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { RustoriumClient, RustoriumError } from "../dist/index.js";
import { startBroker, KEYS, publish, until, sleep, block } from "./broker.mjs";
import { startProxy } from "./proxy.mjs";

const MTK = "0x4d544b0000000000000000000000000000000001";
const ALICE = "0xa11ce00000000000000000000000000000000001";
const BOB = "0xb0b0000000000000000000000000000000000002";

let broker;
before(async () => {
  broker = await startBroker();
});
after(async () => {
  await broker?.stop();
});

function client(path, key = KEYS.all, more = {}) {
  return new RustoriumClient({
    url: broker.url(path),
    token: key,
    WebSocket,
    backoffMin: 20,
    backoffMax: 200,
    ...more,
  });
}

for (const [path, base] of [
  ["/ws", 0],
  ["/v1", 100],
]) {
  test(`${path}: subscriptions on the six channels get their filtered events as { id, type, channel, data }`, async () => {
    const c = client(path);
    const states = [];
    c.on("state", (s) => states.push(s));
    const got = {};
    const on = (name) => (e) => (got[name] ??= []).push(e);
    const subs = [
      c.subscribe("blocks", { confirmations: 1 }, on("blocks")),
      c.subscribe("transactions", { tx_hash: "0xAA01" }, on("transactions")),
      c.subscribe("state", { key_prefix: "0x5" }, on("state")),
      c.subscribe("token_updates", { token_id: "0xT1" }, on("token_updates")),
      c.subscribe("transaction_updates", { address: BOB }, on("transaction_updates")),
      c.subscribe("market_data", { symbols: ["MTK/USD"] }, on("market_data")),
      c.subscribe("transactions", { confirmations: 2 }, on("deep")),
    ];
    const sids = await Promise.all(subs.map((s) => s.ready));
    assert.equal(new Set(sids).size, 7, "seven subscription ids");
    for (const sid of sids) assert.match(sid, /^sub_/);
    const ids = await publish(broker, [
      block(base + 1),
      { channel: "transactions", data: { tx_hash: "0xaa01", block_number: base + 1, confirmations: 1 } },
      { channel: "transactions", data: { tx_hash: "0xbb02", block_number: base + 1, confirmations: 1 } },
      { channel: "state", data: { key: "0x51", value: "AQ==", block_number: base + 1 } },
      { channel: "state", data: { key: "0x61", value: "AQ==", block_number: base + 1 } },
      { channel: "token_updates", data: { token_id: "0xt1", price: "1" } },
      { channel: "token_updates", data: { token_id: "0xt2", price: "2" } },
      { channel: "transaction_updates", data: { transaction_id: "0x1", status: "confirmed", from: ALICE, to: BOB } },
      { channel: "transaction_updates", data: { transaction_id: "0x2", status: "confirmed", from: ALICE, to: ALICE } },
      { channel: "market_data", data: { symbol: "MTK/USD", price: "1.2" } },
      { channel: "market_data", data: { symbol: "STK/USD", price: "3.4" } },
      block(base + 2),
    ]);
    await until(() => got.deep?.length === 2 && got.blocks?.length === 2, "the events");
    assert.deepEqual(
      got.blocks.map((e) => e.id),
      [ids[0], ids[11]],
    );
    assert.deepEqual(got.blocks[0], { id: ids[0], type: "new_block", channel: "blocks", data: block(base + 1).data });
    assert.deepEqual(
      got.transactions.map((e) => [e.id, e.data.tx_hash, e.confirmations]),
      [[ids[1], "0xaa01", 1]],
    );
    assert.deepEqual(
      got.state.map((e) => e.id),
      [ids[3]],
    );
    assert.deepEqual(
      got.token_updates.map((e) => [e.id, e.type]),
      [[ids[5], "update"]],
    );
    assert.deepEqual(
      got.transaction_updates.map((e) => e.id),
      [ids[7]],
    );
    assert.deepEqual(
      got.market_data.map((e) => e.id),
      [ids[9]],
    );
    // Released by block 2 (two confirmations), with the release ids and the confirmations at delivery.
    assert.deepEqual(
      got.deep.map((e) => [e.id, e.confirmations]),
      [
        [`${ids[11]}.${ids[1]}`, 2],
        [`${ids[11]}.${ids[2]}`, 2],
      ],
    );
    // Unsubscribed: no more events on it.
    await subs[0].unsubscribe();
    await publish(broker, [block(base + 3), { channel: "market_data", data: { symbol: "MTK/USD", price: "1.3" } }]);
    await until(() => got.market_data.length === 2, "the market update after the unsubscribe");
    assert.equal(got.blocks.length, 2);
    c.close();
    assert.deepEqual(states, ["connecting", "connected", "closed"]);
    assert.equal(c.stats.connections, 1);
  });

  test(`${path}: commands and publish resolve with the reply's data or reject with the broker's code`, async () => {
    const c = client(path);
    const sub = client(path, KEYS.sub);
    try {
      assert.deepEqual(await c.getTokenInfo(MTK), {
        token_id: MTK,
        name: "My Token",
        symbol: "MTK",
        total_supply: "1000000",
      });
      const before = await c.getBalance(BOB, MTK);
      assert.equal(before.address, BOB);
      assert.match(before.balance, /^\d+$/);
      const seen = [];
      const updates = c.subscribe("transaction_updates", { address: BOB }, (e) => seen.push(e));
      await updates.ready;
      const sent = await c.executeTransaction({ from: ALICE, to: BOB, amount: "7", tokenId: MTK });
      assert.equal(sent.status, "pending");
      assert.match(sent.transaction_id, /^0x[0-9a-f]+$/);
      await until(() => seen.some((e) => e.data.transaction_id === sent.transaction_id), "the confirmed transfer");
      const after = await c.getBalance(BOB, MTK);
      assert.equal(BigInt(after.balance) - BigInt(before.balance), 7n);
      const { ids } = await c.publish(
        "transaction_updates",
        { transaction_id: "0xfe", status: "x", to: BOB },
        { type: "custom" },
      );
      assert.equal(ids.length, 1);
      await until(() => seen.some((e) => e.id === ids[0] && e.type === "custom"), "the published event with its type");

      const code = async (p) => {
        try {
          await p;
        } catch (e) {
          assert.ok(e instanceof RustoriumError, String(e));
          assert.ok(e.message.length > 0);
          return e.code;
        }
        assert.fail("expected a refusal");
      };
      assert.equal(await code(c.getTokenInfo("0x99")), "command_failed");
      assert.equal(
        await code(c.executeTransaction({ from: ALICE, to: BOB, amount: "1e9", tokenId: MTK })),
        "invalid_request",
      );
      assert.equal(await code(sub.publish("blocks", { number: 1 })), "forbidden");
      assert.equal(await code(c.subscribe("blokcs", {}, () => {}).ready), "subscription_error");
      assert.equal(await code(c.subscribe("blocks", { confirmations: 0 }, () => {}).ready), "subscription_error");
      // A second depth > 1 on one channel: refused by the client (a release does not say its depth).
      const deep = c.subscribe("blocks", { confirmations: 3 }, () => {});
      await deep.ready;
      assert.equal(await code(c.subscribe("blocks", { confirmations: 4 }, () => {}).ready), "subscription_error");
    } finally {
      c.close();
      sub.close();
    }
  });

  test(`${path}: a refused key ends the client with invalid_token and no retry`, async () => {
    const proxy = await startProxy(broker.port);
    const c = new RustoriumClient({ url: broker.url(path, proxy.port), token: "not-a-key", WebSocket, backoffMin: 10 });
    const errors = [];
    const states = [];
    c.on("error", (e) => errors.push(e));
    c.on("state", (s) => states.push(s));
    const ready = c.subscribe("blocks", {}, () => {}).ready;
    await assert.rejects(ready, (e) => e.code === "closed");
    await until(() => c.state === "closed", "closed");
    await sleep(300);
    assert.equal(proxy.accepted.length, 1, "one attempt only");
    assert.deepEqual(
      errors.map((e) => e.code),
      ["invalid_token"],
    );
    // The broker completes the upgrade, then refuses the key with its error and close 4000.
    assert.deepEqual(states, ["connecting", "connected", "disconnected", "closed"]);
    await assert.rejects(c.getTokenInfo(MTK), (e) => e.code === "closed");
    proxy.close();
  });
}

test("4000 is retried when getToken hands out a new token, and the client goes on", async () => {
  const tokens = ["not-a-key", KEYS.all];
  const asked = [];
  const c = new RustoriumClient({
    url: broker.url("/ws"),
    getToken: async () => {
      const t = tokens[Math.min(asked.length, tokens.length - 1)];
      asked.push(t);
      return t;
    },
    WebSocket,
    backoffMin: 10,
  });
  const sub = c.subscribe("blocks", {}, () => {});
  await sub.ready;
  assert.equal(c.state, "connected");
  assert.deepEqual(asked.slice(0, 2), ["not-a-key", KEYS.all]);
  c.close();
});

test("/v1: a burst of 20 subscriptions and 20 commands is paced under 10 messages per second", async () => {
  const c = client("/v1");
  const errors = [];
  c.on("error", (e) => errors.push(e));
  const subs = [];
  for (let i = 0; i < 20; i++) subs.push(c.subscribe("token_updates", { token_id: `0x${i + 1}` }, () => {}));
  const infos = [];
  for (let i = 0; i < 20; i++) infos.push(c.getTokenInfo(MTK));
  await Promise.all([...subs.map((s) => s.ready), ...infos]);
  assert.deepEqual(errors, []);
  c.close();
});

test("/ws: a burst of 215 commands is paced under 1000 messages per minute", async () => {
  const d = client("/ws", KEYS.all, { maxQueue: 300 });
  const all = [];
  for (let i = 0; i < 215; i++) all.push(d.getBalance(ALICE, MTK));
  const settled = await Promise.allSettled(all);
  assert.deepEqual(
    settled.filter((s) => s.status === "rejected").map((s) => s.reason.code),
    [],
  );
  d.close();
});

test("without the pacing the same /v1 burst is refused rate_limited (the test above can fail)", async () => {
  const c = client("/v1", KEYS.all, { burst: 40, perSecond: 1000 });
  const settled = await Promise.allSettled(Array.from({ length: 40 }, () => c.getTokenInfo(MTK)));
  const codes = settled.filter((s) => s.status === "rejected").map((s) => s.reason.code);
  // Refused rate_limited, then closed 4001 for flooding: the rest fail `disconnected`, never sent twice.
  assert.ok(codes.includes("rate_limited"), String(codes));
  assert.ok(
    codes.every((c) => c === "rate_limited" || c === "disconnected"),
    String(codes),
  );
  c.close();
});

test("requests wait while disconnected, bounded by maxQueue; a request without reply times out, sent once", async () => {
  const proxy = await startProxy(broker.port);
  const c = new RustoriumClient({
    url: broker.url("/ws", proxy.port),
    token: KEYS.all,
    WebSocket,
    maxQueue: 3,
    requestTimeout: 300,
    backoffMin: 50,
    backoffMax: 50,
  });
  await c.subscribe("blocks", {}, () => {}).ready;
  // Stall every connection at once, then cut: the client is disconnected and retrying.
  proxy.cutAfter = [0, 1];
  proxy.cutAll();
  await until(() => c.state !== "connected", "disconnected");
  const queued = [c.getTokenInfo(MTK), c.getTokenInfo(MTK), c.getTokenInfo(MTK)];
  await assert.rejects(c.getTokenInfo(MTK), (e) => e.code === "queue_full");
  proxy.cutAfter = null;
  for (const info of await Promise.all(queued)) assert.equal(info.symbol, "MTK");
  // Now stall the connection: the reply never comes; the request fails once, after 300 ms.
  proxy.cutAfter = [0, 1];
  proxy.stallShare = 1;
  proxy.cutAll();
  await until(() => c.state === "connected", "reconnected (stalled after the upgrade)", 5000).catch(() => {});
  const started = Date.now();
  const r = await c.getTokenInfo(MTK).catch((e) => e);
  assert.ok(r instanceof RustoriumError && (r.code === "timeout" || r.code === "disconnected"), String(r));
  assert.ok(Date.now() - started <= 2000);
  c.close();
  proxy.close();
});

test("a reconnect restoring 100 subscriptions is one message, and every event still arrives once", async () => {
  const proxy = await startProxy(broker.port);
  const c = new RustoriumClient({ url: broker.url("/ws", proxy.port), token: KEYS.all, WebSocket, backoffMin: 20 });
  const got = [];
  const subs = [];
  for (let i = 0; i < 100; i++)
    subs.push(c.subscribe("state", { key: `0x${(i + 1).toString(16)}` }, (e) => got.push(e.id)));
  await Promise.all(subs.map((s) => s.ready));
  assert.equal(c.stats.sent, 100);
  const first = await publish(broker, [{ channel: "state", data: { key: "0x1", value: "AQ==", block_number: 1 } }]);
  await until(() => got.length === 1, "the first event");
  proxy.cutAll();
  await until(() => c.stats.connections === 2, "the second connection");
  const rest = await publish(
    broker,
    Array.from({ length: 100 }, (_, i) => ({
      channel: "state",
      data: { key: `0x${(i + 1).toString(16)}`, value: "AQ==", block_number: 2 },
    })),
  );
  await until(() => got.length === 101, "every event");
  assert.deepEqual(got, [...first, ...rest]);
  assert.equal(c.stats.resumes, 1);
  assert.equal(c.stats.gaps, 0);
  assert.equal(c.stats.sent, 1, "one reconnect, nothing else");
  c.close();
  proxy.close();
});

test("an onEvent that blocks makes the client hold at most bufferSize events, and nothing is lost", async () => {
  const c = client("/ws", KEYS.all, { bufferSize: 50 });
  const got = [];
  let release;
  let gate = new Promise((r) => (release = r));
  let held = 0;
  const sub = c.subscribe("blocks", {}, async (e) => {
    got.push(e.id);
    if (got.length === 1) await gate; // the application is stuck on the first event
  });
  await sub.ready;
  const ids = await publish(
    broker,
    Array.from({ length: 400 }, (_, i) => block(i)),
  );
  await sleep(300);
  // The client's buffer (private) never holds more than 50: it dropped the connection instead.
  held = c.stats.connections;
  assert.equal(got.length, 1);
  release();
  await until(() => got.length === 400, `all 400 events (got ${got.length})`);
  assert.deepEqual(got, ids);
  assert.ok(c.stats.connections >= 2, `resumed after the overflow (connections ${held} -> ${c.stats.connections})`);
  c.close();
});

test("examples/node_api.mjs (the node API document's example on the client) prints what the broker sends", async () => {
  const { spawn } = await import("node:child_process");
  const child = spawn(process.execPath, [new URL("../examples/node_api.mjs", import.meta.url).pathname], {
    env: { ...process.env, RUSTORIUM_URL: broker.url("/ws"), RUSTORIUM_API_KEY: KEYS.sub },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  try {
    await until(() => out.includes("Connected to Rustorium"), "the example connected");
    await sleep(200);
    await publish(broker, [
      block(7001),
      { channel: "transactions", data: { tx_hash: "0xabc7001", block_number: 7001, confirmations: 1 } },
      { channel: "state", data: { key: "0x7001", value: "AQ==", block_number: 7001 } },
    ]);
    await until(
      () => out.includes("New block:") && out.includes("Transaction confirmed:") && out.includes("State updated:"),
      `the three events in the example's output: ${out}`,
    );
    assert.match(out, /number: 7001/);
    assert.doesNotMatch(out, /Error:/);
  } finally {
    child.kill("SIGINT");
  }
});
