// The rustorium-broker binary as a child process for the tests (as tests/common/broker_process.rs
// does): a config file in a temp dir, `--bind 127.0.0.1:PORT` (0: a free port), the address
// read from the `listening on` banner line; stopped with SIGTERM (1001 to every client) or
// SIGKILL. The binary: $RUSTORIUM_BROKER_BIN, else target/debug/rustorium-broker of the repo.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const BIN =
  process.env.RUSTORIUM_BROKER_BIN ?? fileURLToPath(new URL("../../../target/debug/rustorium-broker", import.meta.url));

/** The keys every test broker has. */
export const KEYS = {
  sub: "sub-secret-0001", // subscribe + command
  pub: "pub-secret-0001", // publish
  all: "all-secret-0001", // subscribe + publish + command
};

const WAIT = 15000;

// Every broker still running when the test file's process exits (a failed test skips its
// stop()) is killed with it.
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

function config(extra) {
  return `
[[keys]]
name = "sub"
secret = "${KEYS.sub}"
roles = ["subscribe", "command"]
max_connections = 1000

[[keys]]
name = "pub"
secret = "${KEYS.pub}"
roles = ["publish"]

[[keys]]
name = "all"
secret = "${KEYS.all}"
roles = ["subscribe", "publish", "command"]
max_connections = 1000

[limits]
publish_events_per_second = 1000000

[ledger]
block_interval_ms = 200
empty_blocks = false

[demo]
enabled = false
${extra}`;
}

/**
 * Starts a broker; `port` 0 picks a free one. `args` are extra flags, `extra` extra TOML
 * (tables after [demo]). Resolves with { port, url(path, key), http, stop(), kill() }.
 */
export async function startBroker({ port = 0, args = [], extra = "" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "rustorium-js-"));
  const file = join(dir, "broker.toml");
  writeFileSync(file, config(extra));
  const env = { ...process.env, RUST_LOG: "warn" };
  delete env.RUSTORIUM_CONFIG;
  const child = spawn(BIN, ["--config", file, "--bind", `127.0.0.1:${port}`, ...args], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  const log = [];
  createInterface({ input: child.stderr }).on("line", (l) => log.length < 1000 && log.push(l));
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const bound = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner in ${WAIT} ms: ${log.join("\n")}`)), WAIT);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /^rustorium-broker listening on 127\.0\.0\.1:(\d+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    exited.then(({ code }) => reject(new Error(`broker exited ${code}: ${log.join("\n")}`)));
  });
  const b = {
    port: bound,
    log,
    http: `http://127.0.0.1:${bound}`,
    /** A WebSocket URL of this broker (or of `via`, a proxy port) for `path` (/ws, /v1). */
    url: (path, via = bound) => `ws://127.0.0.1:${via}${path}`,
    /** SIGTERM: closes every connection with 1001, then exits. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), WAIT);
      await exited;
      clearTimeout(t);
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
  return b;
}

/** POST /api/publish with the publisher key; the ids. */
export async function publish(broker, events, key = KEYS.pub) {
  const res = await fetch(`${broker.http}/api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(events),
  });
  const body = await res.json();
  if (!body.success) throw new Error(`publish refused: ${res.status} ${JSON.stringify(body)}`);
  return body.data.ids;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `fn()` is truthy, polling; fails after `within` ms with `what`. */
export async function until(fn, what, within = WAIT) {
  const deadline = Date.now() + within;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export const block = (n) => ({ channel: "blocks", data: { number: n, hash: `0x${n.toString(16)}` } });
export const tx = (n, i) => ({
  channel: "transactions",
  data: { tx_hash: `0x${(n * 16 + i).toString(16).padStart(8, "0")}`, block_number: n, confirmations: 1 },
});
export const state = (n) => ({
  channel: "state",
  data: { key: `0x${n.toString(16)}`, value: "AQ==", block_number: n },
});
