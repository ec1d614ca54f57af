// Builds dist/: the ES module (index.js), the CommonJS build (index.cjs), the minified
// browser build (rustorium-client.min.js, an ES module; rustorium-client.iife.min.js, the
// global `Rustorium` for a plain <script>), and the .d.ts declarations (tsc).
//   node build.mjs
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { readFileSync } from "node:fs";

const here = new URL(".", import.meta.url).pathname;
rmSync(here + "dist", { recursive: true, force: true });
const common = { entryPoints: [here + "src/index.ts"], bundle: true, target: "es2020", logLevel: "warning" };
// Private members are named _x; minifying renames them too (the .d.ts keeps them private).
const small = { minify: true, mangleProps: /^_/ };
await Promise.all([
  build({ ...common, format: "esm", outfile: here + "dist/index.js" }),
  build({ ...common, format: "cjs", outfile: here + "dist/index.cjs" }),
  build({ ...common, ...small, format: "esm", outfile: here + "dist/rustorium-client.min.js" }),
  build({
    ...common,
    ...small,
    format: "iife",
    globalName: "Rustorium",
    outfile: here + "dist/rustorium-client.iife.min.js",
  }),
]);
execFileSync(process.execPath, [here + "node_modules/typescript/bin/tsc", "-p", here + "tsconfig.json"], {
  stdio: "inherit",
});
const min = readFileSync(here + "dist/rustorium-client.min.js");
console.log(`dist/rustorium-client.min.js: ${min.length} bytes, ${gzipSync(min, { level: 9 }).length} gzipped`);
