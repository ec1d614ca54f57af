// Size benchmark (not a test): the minified, gzipped browser build of rustorium-client beside
// centrifuge-js, pusher-js and nats.ws, each measured the same way: their npm packages
// installed into a temp dir (`npm install`, pinned versions below), the package's browser
// entry bundled with esbuild (bundle, minify, ESM, platform browser, es2020) with every
// dependency it pulls in, then gzip level 9. Ours also as shipped (dist/rustorium-client.min.js,
// which renames private members too).
//
//   npm run build && node bench/size.mjs        (needs the npm registry)
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const here = new URL("..", import.meta.url).pathname;
const PEERS = [
  ["centrifuge", "5.8.0", `export { Centrifuge } from "centrifuge";`],
  ["pusher-js", "8.6.0", `export { default } from "pusher-js";`],
  ["nats.ws", "1.30.3", `export { connect } from "nats.ws";`],
];

const dir = mkdtempSync(join(tmpdir(), "rustorium-size-"));
writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "size", private: true }));
execFileSync("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", ...PEERS.map(([n, v]) => `${n}@${v}`)], {
  cwd: dir,
  stdio: "inherit",
});

async function measure(name, entry, resolveDir) {
  const out = await build({
    stdin: { contents: entry, resolveDir, loader: "js" },
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    // nats.ws falls back to Node's crypto where the browser's is missing: not in a browser build.
    external: ["crypto"],
    write: false,
    logLevel: "error",
  });
  const bytes = out.outputFiles[0].contents;
  return { name, minified: bytes.length, gzipped: gzipSync(bytes, { level: 9 }).length };
}

const shipped = readFileSync(join(here, "dist/rustorium-client.min.js"));
const rows = [
  {
    name: "rustorium-client (dist/rustorium-client.min.js, as shipped)",
    minified: shipped.length,
    gzipped: gzipSync(shipped, { level: 9 }).length,
  },
  await measure(
    "rustorium-client (dist/index.js, measured like the others)",
    `export { RustoriumClient } from "./dist/index.js";`,
    here,
  ),
];
for (const [name, version, entry] of PEERS) rows.push(await measure(`${name} ${version}`, entry, dir));
console.log("| package | minified | minified + gzip |\n| --- | ---: | ---: |");
for (const r of rows)
  console.log(`| ${r.name} | ${r.minified} B | ${r.gzipped} B (${(r.gzipped / 1024).toFixed(1)} KiB) |`);
