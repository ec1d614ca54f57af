// Speed benchmark (not a test): events per second handed to the application by
// rustorium-client in Node, beside a bare `ws` reader that only calls JSON.parse, on the same
// broker and workload: a release broker (target/release/rustorium-broker, or
// $RUSTORIUM_BROKER_BIN) started on 127.0.0.1:0, one reader subscribed to `blocks`, a publisher
// in a worker thread sending EVENTS events in batches of 1000 over one WebSocket (8 batches in
// flight). The clock runs from the first event the reader gets to the last. Runs alternate
// (bare, client, bare, client, ...), ROUNDS each; the median is reported.
//
//   cargo build --release && npm run build && node bench/speed.mjs [EVENTS] [ROUNDS]
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const BATCH = 1000;
const IN_FLIGHT = 8;

if (!isMainThread) {
  // The publisher.
  const { url, events } = workerData;
  const ws = new WebSocket(url);
  await new Promise((r) => ws.once("open", r));
  let sent = 0,
    acked = 0,
    n = 0;
  const batch = () => ({
    type: "publish",
    id: String(n),
    data: {
      events: Array.from({ length: BATCH }, () => ({
        channel: "blocks",
        data: { number: ++n, hash: "0x9abc" + n.toString(16).padStart(60, "0"), timestamp: "2024-01-23T12:34:56Z" },
      })),
    },
  });
  const pump = () => {
    while (sent < events && sent - acked < IN_FLIGHT * BATCH) {
      ws.send(JSON.stringify(batch()));
      sent += BATCH;
    }
  };
  ws.on("message", (d) => {
    const m = JSON.parse(d);
    if (m.type === "heartbeat") return;
    if (m.type !== "publish_success") throw new Error(String(d));
    acked += BATCH;
    if (acked >= events) {
      ws.close();
      parentPort.postMessage("done");
    } else pump();
  });
  pump();
} else {
  const { RustoriumClient } = await import("../dist/index.js");
  const { startBroker, KEYS } = await import("../test/broker.mjs");
  const EVENTS = Number(process.argv[2] ?? 200000);
  const ROUNDS = Number(process.argv[3] ?? 3);
  process.env.RUSTORIUM_BROKER_BIN ??= fileURLToPath(
    new URL("../../../target/release/rustorium-broker", import.meta.url),
  );

  const publish = (broker) =>
    new Promise((resolve, reject) => {
      const w = new Worker(fileURLToPath(import.meta.url), {
        workerData: { url: `${broker.url("/ws")}?token=${KEYS.pub}`, events: EVENTS },
      });
      w.once("message", resolve);
      w.once("error", reject);
    });

  /** Resolves with events/s once EVENTS events reached the reader. */
  function counter() {
    let count = 0,
      first = 0,
      done;
    const finished = new Promise((r) => (done = r));
    return {
      finished,
      tick() {
        if (count++ === 0) first = performance.now();
        if (count === EVENTS) done((EVENTS - 1) / ((performance.now() - first) / 1000));
      },
    };
  }

  async function bare(broker) {
    const c = counter();
    const ws = new WebSocket(`${broker.url("/ws")}?token=${KEYS.sub}`);
    await new Promise((r) => ws.once("open", r));
    ws.on("message", (d) => {
      const m = JSON.parse(d);
      if (m.channel !== undefined) c.tick();
    });
    ws.send(JSON.stringify({ type: "subscribe", id: "1", data: { channel: "blocks" } }));
    await new Promise((r) => ws.once("message", r));
    await publish(broker);
    const rate = await c.finished;
    ws.close(1000);
    return rate;
  }

  async function client(broker) {
    const c = counter();
    const rc = new RustoriumClient({ url: broker.url("/ws"), token: KEYS.sub, WebSocket });
    await rc.subscribe("blocks", {}, () => c.tick()).ready;
    await publish(broker);
    const rate = await c.finished;
    rc.close();
    return rate;
  }

  const broker = await startBroker({ extra: "" });
  const rates = { bare: [], client: [] };
  await bare(broker); // warm-up
  for (let i = 0; i < ROUNDS; i++) {
    rates.bare.push(await bare(broker));
    rates.client.push(await client(broker));
  }
  await broker.stop();
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const b = median(rates.bare),
    c = median(rates.client);
  console.log(`broker: ${process.env.RUSTORIUM_BROKER_BIN}; ${EVENTS} events per run, ${ROUNDS} runs each`);
  console.log(`bare ws + JSON.parse: ${Math.round(b)} events/s (runs: ${rates.bare.map(Math.round).join(", ")})`);
  console.log(`rustorium-client:     ${Math.round(c)} events/s (runs: ${rates.client.map(Math.round).join(", ")})`);
  console.log(`ratio: ${(c / b).toFixed(2)}`);
}
