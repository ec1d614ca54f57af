// No loss, no duplicate, in order, across connections cut and stalled at random points: a
// TCP proxy between the client and the broker cuts each connection after a random number of
// bytes towards the client (inside the upgrade, a frame, a resume's reply or its replay) or
// stalls it there (the client must find it dead by silence), while a publisher sends 5,000
// events over three channels, one subscribed with `confirmations: 3`. The application must
// see exactly what a client connected straight to the broker sees: the same ids, in order.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { RustoriumClient, compareIds } from "../dist/index.js";
import { startBroker, KEYS, publish, until, sleep, block, tx, state } from "./broker.mjs";
import { startProxy } from "./proxy.mjs";

// Rounds of a block, two transactions naming it and two state updates; at least that many
// cuts and stalls. The full run on /ws; /v1 (the same client code, the other dialect) shorter.
const RUNS = [
  ["/ws", 1000, 200],
  ["/v1", 300, 50],
];
const PER_PUBLISH = 2; // rounds per HTTP publish

for (const [path, ROUNDS, CUTS] of RUNS) {
  test(
    `${path}: ${5 * ROUNDS + 2} events across at least ${CUTS} cuts and stalls: each once, in id order`,
    { timeout: 200000 },
    async () => {
      const broker = await startBroker({ args: ["--heartbeat-interval-ms", "100"] });
      const proxy = await startProxy(broker.port);
      const settings = {
        WebSocket,
        token: KEYS.sub,
        backoffMin: 5,
        backoffMax: 40,
        silenceTimeout: 250,
        connectTimeout: 1000,
      };
      const direct = new RustoriumClient({ url: broker.url(path), ...settings });
      const cut = new RustoriumClient({ url: broker.url(path, proxy.port), ...settings });
      const want = [];
      const got = [];
      const gaps = [];
      cut.on("gap", (g) => gaps.push(g));
      let last = Date.now();
      const acc = {};
      const trail = [];
      cut.on("error", (e) => trail.push(`error ${e.code} ${e.message}`));
      cut.on("state", (s) => {
        trail.push(`${Date.now() % 100000} ${s}`);
        if (trail.length > 20) trail.shift();
        const now = Date.now();
        acc[s] = (acc[s] ?? 0) + (now - last);
        acc[`longest before ${s}`] = Math.max(acc[`longest before ${s}`] ?? 0, now - last);
        last = now;
      });
      const subscribe = (c, into) =>
        Promise.all([
          c.subscribe("blocks", {}, (e) => into.push(e.id)).ready,
          c.subscribe("state", {}, (e) => into.push(e.id)).ready,
          c.subscribe("transactions", { confirmations: 3 }, (e) => into.push(e.id)).ready,
        ]);
      await subscribe(direct, want);
      await subscribe(cut, got);
      proxy.cutAfter = [150, 5000];
      proxy.stallShare = 0.05;
      proxy.cutAll();

      const t0 = Date.now();
      const published = { blocks: [], state: [], tx: [] };
      for (let n = 1; n <= ROUNDS; n += PER_PUBLISH) {
        const events = [];
        for (let r = n; r < n + PER_PUBLISH; r++)
          events.push(block(r), tx(r, 0), tx(r, 1), state(r * 2), state(r * 2 + 1));
        const ids = await publish(broker, events);
        ids.forEach((id, i) => published[["blocks", "tx", "tx", "state", "state"][i % 5]].push(id));
        await sleep(12);
      }
      // Two more blocks release the last transactions (three confirmations).
      published.blocks.push(...(await publish(broker, [block(ROUNDS + 1), block(ROUNDS + 2)])));
      const tPublished = Date.now() - t0;
      const total = published.blocks.length + published.state.length + published.tx.length;
      assert.equal(total, 5 * ROUNDS + 2);
      await until(() => want.length === total, `the direct client's ${total} events (has ${want.length})`, 30000);
      await until(
        () => got.length >= total,
        `the cut client's ${total} events (has ${got.length}; now ${Date.now() % 100000}: ${trail.join(", ")}; ${JSON.stringify(cut.stats)})`,
        150000,
      );
      const tCaughtUp = Date.now() - t0;
      await sleep(200);

      assert.equal(got.length, total, "nothing more than the direct client");
      assert.deepEqual(got, want, "exactly what the direct client saw, in the same order");
      for (let i = 1; i < got.length; i++) assert.ok(compareIds(got[i - 1], got[i]) < 0, `in order at ${i}`);
      const plain = got.filter((id) => !id.includes("."));
      assert.deepEqual(plain, [...published.blocks, ...published.state].sort(compareIds));
      const released = got.filter((id) => id.includes(".")).map((id) => id.split(".")[1]);
      assert.deepEqual([...released].sort(compareIds), published.tx, "each transaction released once");
      assert.deepEqual(gaps, []);
      const interruptions = proxy.cuts + proxy.stalls;
      assert.ok(interruptions >= CUTS, `only ${proxy.cuts} cuts and ${proxy.stalls} stalls`);
      console.log(
        `${path}: ${got.length} events checked over ${proxy.cuts} cuts and ${proxy.stalls} stalls; ` +
          `published in ${tPublished} ms, all received after ${tCaughtUp} ms; ` +
          `ms before each state: ${JSON.stringify(acc)}; ` +
          `${cut.stats.connections} connections, ${cut.stats.resumes} resumes, ${cut.stats.duplicates} duplicate frames dropped`,
      );
      direct.close();
      cut.close();
      proxy.close();
      await broker.stop();
    },
  );
}
