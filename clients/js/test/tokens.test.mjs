// Signed tokens against the real broker (PROTOCOL.md section 12), on both dialects: the
// broker has an HS256 issuer; getToken mints tokens here (node:crypto's HMAC, the same
// signature any JWT library makes) that expire 3 s after they are made, while a publisher
// sends a block every 50 ms. The client refreshes each token in place before it expires:
// every event arrives once and in order on one connection, with no resume, and the
// broker accepted every refresh (a refused one would be an `error`, and the token would
// then expire and close the connection 4000, which would show as a second connection).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { WebSocket } from "ws";
import { RustoriumClient } from "../dist/index.js";
import { startBroker, publish, sleep, until, block } from "./broker.mjs";

const SECRET = "a-test-secret-of-at-least-32-bytes-0123456789";
const TTL_S = 3;
const STREAM_MS = 7000;

const part = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");

/** An HS256 JWT with `claims`, signed with the issuer's secret. */
function mint(claims) {
  const signed = `${part({ alg: "HS256", typ: "JWT", kid: "app" })}.${part(claims)}`;
  return `${signed}.${createHmac("sha256", SECRET).update(signed).digest("base64url")}`;
}

const ISSUER = `
[[token_issuers]]
name = "app"
algorithm = "HS256"
secret = "${SECRET}"
leeway_ms = 500
`;

for (const path of ["/ws", "/v1"]) {
  test(`${path}: tokens that expire every ${TTL_S} s are refreshed in place during a stream`, async () => {
    const broker = await startBroker({ extra: ISSUER });
    const minted = [];
    const c = new RustoriumClient({
      url: broker.url(path),
      getToken: () => {
        minted.push(Date.now());
        return mint({ sub: "wallet-1", exp: Math.floor(Date.now() / 1000) + TTL_S, roles: ["subscribe"] });
      },
      WebSocket,
    });
    const errors = [];
    const states = [];
    c.on("error", (e) => errors.push(`${e.code}: ${e.message}`));
    c.on("state", (s) => states.push(s));
    const got = [];
    await c.subscribe("blocks", {}, (ev) => got.push(ev.id)).ready;

    const sent = [];
    const started = Date.now();
    for (let n = 1; Date.now() - started < STREAM_MS; n++) {
      sent.push(...(await publish(broker, [block(n)])));
      await sleep(50);
    }
    await until(() => got.length >= sent.length, `${sent.length} events`, 10000);
    await sleep(200);

    assert.deepEqual(got, sent, "every event once, in order");
    assert.deepEqual(errors, [], "every refresh accepted");
    assert.equal(c.stats.connections, 1, `one connection (states: ${states.join(", ")})`);
    assert.equal(c.stats.resumes, 0);
    // Asked once to connect, then before each expiry: a 7 s stream outlives two tokens.
    assert.ok(minted.length >= 3, `getToken asked ${minted.length} times`);
    c.close();
    await broker.stop();
  });
}
