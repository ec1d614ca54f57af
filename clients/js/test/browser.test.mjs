// The browser build in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core from tests/clients/, as tests/browser/dashboard.mjs does): the wallet
// example, served from another origin than the broker's, loads dist/rustorium-client.min.js,
// subscribes to one address's transaction_updates and to blocks, receives the built-in
// ledger's transfers, survives a cut made by the proxy and resumes with no gap: the page's
// record equals what a Node client connected straight to the broker received; offline it
// makes no attempt, and the online event reconnects it at once. Saves the
// screenshot docs/js-wallet.png. Skipped without Chromium unless RUSTORIUM_REQUIRE_CHROMIUM is set.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { RustoriumClient } from "../dist/index.js";
import { startBroker, KEYS, until, sleep } from "./broker.mjs";
import { startProxy } from "./proxy.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const DRIVER = new URL("../../../tests/clients/package.json", import.meta.url);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SHOT = fileURLToPath(new URL("../../../docs/js-wallet.png", import.meta.url));
const MTK = "0x4d544b0000000000000000000000000000000001";
const ALICE = "0xa11ce00000000000000000000000000000000001";
const BOB = "0xb0b0000000000000000000000000000000000002";
const WAIT = 15000;

const available = existsSync(CHROMIUM) && existsSync(fileURLToPath(new URL("node_modules/playwright-core", DRIVER)));
if (!available && process.env.RUSTORIUM_REQUIRE_CHROMIUM)
  throw new Error(`RUSTORIUM_REQUIRE_CHROMIUM is set but ${CHROMIUM} or tests/clients' playwright-core is missing`);

/** A static server of clients/js on 127.0.0.1:0: another origin than the broker's. */
async function serve() {
  const types = { ".html": "text/html", ".js": "text/javascript" };
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (!/^\/(examples|dist)\/[\w.-]+$/.test(path)) return res.writeHead(404).end();
    try {
      const body = readFileSync(ROOT + path.slice(1));
      res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return server;
}

test(
  "the wallet page in headless Chromium receives, survives a proxy cut and resumes with no gap",
  { skip: !available && "chromium or playwright-core is not installed", timeout: 90000 },
  async () => {
    const { chromium } = createRequire(DRIVER)("playwright-core");
    const broker = await startBroker({ extra: "" });
    const proxy = await startProxy(broker.port);
    const site = await serve();
    const direct = new RustoriumClient({ url: broker.url("/v1"), token: KEYS.all, WebSocket });
    const want = [];
    let txs = 0;
    await Promise.all([
      direct.subscribe("transaction_updates", { address: BOB }, (e) => txs++ + want.push(e.id)).ready,
      direct.subscribe("blocks", {}, (e) => want.push(e.id)).ready,
    ]);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox"],
      timeout: WAIT,
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 640 } });
      const pageErrors = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));
      const origin = `http://127.0.0.1:${site.address().port}`;
      await page.goto(
        `${origin}/examples/wallet.html?url=${encodeURIComponent(broker.url("/v1", proxy.port))}&address=${BOB}`,
        { timeout: WAIT },
      );
      await page.fill("#key", KEYS.sub);
      await page.click("#go");
      await page.waitForFunction(() => document.getElementById("state").textContent === "connected", null, {
        timeout: WAIT,
      });
      await sleep(200);
      const transfer = async (from, to, amount) => {
        await direct.executeTransaction({ from, to, amount, tokenId: MTK });
      };
      // Transfers to and from the address; the ledger confirms each in its next block.
      for (let i = 1; i <= 3; i++) await transfer(ALICE, BOB, String(100 * i));
      await until(() => txs === 3, "the first transfers confirmed", WAIT);
      await page.waitForFunction((n) => window.recorded.ids.length >= n, want.length, { timeout: WAIT });
      // Cut the page's connection, and keep the ledger busy while it is down and resuming.
      // Every attempt is cut too until the ledger has confirmed these: the page must get them by resume.
      proxy.cutAfter = [0, 1];
      proxy.cutAll();
      await page.waitForFunction(() => document.getElementById("state").textContent !== "connected", null, {
        timeout: WAIT,
      });
      const missed = want.length;
      for (let i = 1; i <= 3; i++) await transfer(BOB, ALICE, String(i));
      await transfer(ALICE, BOB, "5000");
      await until(() => txs === 7, "the later transfers confirmed", WAIT);
      assert.equal(await page.evaluate(() => window.recorded.ids.length), missed, "nothing reached the page while cut");
      proxy.cutAfter = null;
      await sleep(500);
      await page.waitForFunction((n) => window.recorded.ids.length >= n, want.length, { timeout: WAIT });
      await sleep(300);
      const recorded = await page.evaluate(() => window.recorded);
      assert.deepEqual(recorded.ids, want, "the page saw exactly what the direct client saw, in order");
      assert.deepEqual(recorded.gaps, []);
      assert.deepEqual(recorded.errors, []);
      assert.deepEqual(pageErrors, []);
      assert.ok(proxy.cuts >= 1 && proxy.accepted.length >= 2, "cut and reconnected through the proxy");
      assert.deepEqual(recorded.states.slice(0, 2), ["connecting", "connected"]);
      assert.ok(recorded.states.includes("disconnected"), String(recorded.states));
      assert.equal(recorded.states.at(-1), "connected");
      console.log(
        `the page received ${recorded.ids.length} events over ${proxy.accepted.length} connections (${proxy.cuts} cut); states ${recorded.states.join(" > ")}`,
      );
      await page.screenshot({ path: SHOT });

      // Offline: no attempt while the browser says so; back online, a reconnect at once.
      await page.context().setOffline(true);
      assert.equal(await page.evaluate(() => navigator.onLine), false);
      const attempts = proxy.accepted.length;
      const statesBefore = (await page.evaluate(() => window.recorded.states)).length;
      proxy.cutAll();
      await page.waitForFunction(() => document.getElementById("state").textContent === "disconnected", null, {
        timeout: WAIT,
      });
      await sleep(2500); // longer than any wait of the default backoff's first step (1-2 s)
      assert.equal(proxy.accepted.length, attempts, "no connection attempt while offline");
      // Not even one the browser would refuse: the client did not try (no "connecting").
      assert.deepEqual((await page.evaluate(() => window.recorded.states)).slice(statesBefore), ["disconnected"]);
      const online = performance.now();
      await page.context().setOffline(false);
      await page.waitForFunction(() => document.getElementById("state").textContent === "connected", null, {
        timeout: WAIT,
      });
      const back = performance.now() - online;
      assert.ok(back < 900, `reconnected ${Math.round(back)} ms after the online event`);
      assert.equal(proxy.accepted.length, attempts + 1);
      console.log(`offline: no attempt for 2.5 s; online: connected again after ${Math.round(back)} ms`);
    } finally {
      await browser.close().catch(() => {});
      direct.close();
      proxy.close();
      site.close();
      await broker.stop();
    }
  },
);
