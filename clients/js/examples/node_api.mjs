// The node API document's JavaScript example (docs/seeds, "Examples / JavaScript") on
// rustorium-client: blocks (with confirmations), transactions and state over one connection,
// with the reconnection logic the document leaves to the reader done by the client
// (backoff, resume from the last event, nothing lost or repeated).
//
//   RUSTORIUM_API_KEY=KEY node examples/node_api.mjs      (RUSTORIUM_URL: default ws://localhost:9072/ws)
import WebSocket from "ws"; // Node 20; on Node 22 and later the global WebSocket works as is
import { RustoriumClient } from "rustorium-client";

const client = new RustoriumClient({
  url: process.env.RUSTORIUM_URL ?? "ws://localhost:9072/ws",
  token: process.env.RUSTORIUM_API_KEY ?? "API_KEY",
  WebSocket,
});

client.on("state", (state) => {
  if (state === "connected") console.log("Connected to Rustorium");
  if (state === "disconnected") console.log("Connection lost: resuming from the last event");
});

// Subscribe to blocks
client.subscribe("blocks", { confirmations: 1 }, (message) => {
  console.log("New block:", message.data);
});

client.subscribe("transactions", {}, (message) => {
  console.log("Transaction confirmed:", message.data);
});

client.subscribe("state", {}, (message) => {
  console.log("State updated:", message.data);
});

client.on("error", (error) => {
  console.error("Error:", error.code ?? "", error.message);
});

process.on("SIGINT", () => client.close());
