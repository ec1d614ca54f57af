// A TCP proxy on 127.0.0.1:0 in front of the broker (as tests/common/proxy.rs): it forwards
// both ways, and on command cuts each new connection after a random number of bytes towards
// the client or stalls it there (keeps it open, forwards nothing either way), cuts every open
// connection, and records when each connection was accepted.
import net from "node:net";

const MAX_CONNECTIONS = 10000;

export async function startProxy(upstreamPort) {
  const open = new Set();
  const p = {
    accepted: [],
    cuts: 0,
    stalls: 0,
    /** [min, max) bytes towards the client before a cut; null: never. */
    cutAfter: null,
    /** Share (0-1) of budgeted connections that stall at their budget instead of being cut. */
    stallShare: 0,
    port: 0,
    /** Cuts every open connection now. */
    cutAll() {
      for (const c of open) c.cut();
    },
    close() {
      server.close();
      for (const c of open) c.destroy();
    },
  };
  const server = net.createServer((client) => {
    if (p.accepted.length >= MAX_CONNECTIONS) return client.destroy();
    p.accepted.push(performance.now());
    const upstream = net.connect(upstreamPort, "127.0.0.1");
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    let budget = p.cutAfter ? p.cutAfter[0] + Math.floor(Math.random() * (p.cutAfter[1] - p.cutAfter[0])) : Infinity;
    const stall = Math.random() < p.stallShare;
    let stalled = false;
    const c = {
      cut() {
        if (!client.destroyed) p.cuts++;
        c.destroy();
      },
      destroy() {
        open.delete(c);
        client.destroy();
        upstream.destroy();
      },
    };
    open.add(c);
    client.on("data", (d) => stalled || upstream.write(d));
    upstream.on("data", (d) => {
      if (stalled) return;
      if (d.length < budget) {
        budget -= d.length;
        client.write(d);
        return;
      }
      client.write(d.subarray(0, budget));
      budget = 0;
      if (stall) {
        stalled = true;
        p.stalls++;
        upstream.pause();
      } else c.cut();
    });
    client.on("error", () => c.destroy());
    upstream.on("error", () => c.destroy());
    client.on("close", () => c.destroy());
    upstream.on("close", () => (stalled ? undefined : c.destroy()));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  p.port = server.address().port;
  return p;
}
