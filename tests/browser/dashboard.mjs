// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): a non-admin key is refused with the broker's reason, an admin key logs
// in and sees the numbers change while the Rust test publishes, the page asks nothing of
// any other origin and never puts the key in a URL, and a screenshot is saved.
//
//   node tests/browser/dashboard.mjs BASE_URL ADMIN_KEY OTHER_KEY SCREENSHOT_PATH
//
// Prints one JSON line (`{"ok":true,...}` or `{"ok":false,"error":...}`); exit code 0 or 1.
// Every wait is bounded.
import { createRequire } from "node:module";

// playwright-core is installed (pinned) in tests/clients/ by scripts/test.
const require = createRequire(new URL("../clients/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [base, adminKey, otherKey, screenshot] = process.argv.slice(2);
const WAIT = 15000;
const result = { ok: false, requests: [], console_errors: [] };

function number(text) {
  return Number(String(text).replace(/[^0-9.]/g, ""));
}

async function logIn(page, key) {
  await page.goto(base + "/dashboard", { timeout: WAIT });
  await page.fill("#key", key, { timeout: WAIT });
  await page.click("#login-button", { timeout: WAIT });
}

let browser;
try {
  if (!base || !adminKey || !otherKey || !screenshot) {
    throw new Error("usage: dashboard.mjs BASE_URL ADMIN_KEY OTHER_KEY SCREENSHOT_PATH");
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox"],
    timeout: WAIT,
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("request", (r) => result.requests.push(r.url()));
  // The refused login's 403 is logged by Chromium itself; anything else is the page's fault.
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 40[13]/.test(m.text())) result.console_errors.push(m.text());
  });
  page.on("pageerror", (e) => result.console_errors.push(String(e)));

  // 1. A key without the admin role: refused, with the broker's reason, no dashboard.
  await logIn(page, otherKey);
  await page.waitForFunction(() => document.getElementById("error").textContent.length > 0, null, { timeout: WAIT });
  result.refused_message = await page.textContent("#error");
  if (await page.isVisible("#dashboard")) throw new Error("the dashboard showed for a non-admin key");
  if ((await page.textContent("#status")) !== "refused") throw new Error("status is not 'refused'");

  // 2. The admin key: live, and the totals move while the publisher runs.
  await logIn(page, adminKey);
  await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: WAIT });
  await page.waitForFunction(() => Number(document.getElementById("events-in-total").textContent.replace(/[^0-9]/g, "")) > 0, null, { timeout: WAIT });
  result.events_in_first = number(await page.textContent("#events-in-total"));
  let last = result.events_in_first;
  let updates = 0;
  const deadline = Date.now() + WAIT;
  while (updates < 2 && Date.now() < deadline) {
    await page.waitForTimeout(250);
    const now = number(await page.textContent("#events-in-total"));
    if (now > last) { updates += 1; last = now; }
  }
  if (updates < 2) throw new Error(`the events-in total changed ${updates} times in ${WAIT} ms`);
  result.events_in_last = last;
  result.updates_seen = updates;
  result.connections = number(await page.textContent("#connections"));
  result.events_in_rate = number(await page.textContent("#events-in-rate"));
  result.keys_table = await page.textContent("#keys");
  result.nodes_table = await page.textContent("#nodes");
  // Let the chart draw a few more points for the picture.
  await page.waitForTimeout(1500);

  // 3. Nothing asked of another origin; the key in no URL.
  const origin = new URL(base).origin;
  for (const url of result.requests) {
    if (new URL(url).origin !== origin) throw new Error(`a request left the broker: ${url}`);
    if (url.includes(adminKey) || url.includes(otherKey)) throw new Error(`a key in a URL: ${url}`);
  }
  if (result.console_errors.length > 0) throw new Error(`console errors: ${result.console_errors.join("; ")}`);

  // 4. The picture.
  await page.screenshot({ path: screenshot, fullPage: true });
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message ? e.message : e);
} finally {
  if (browser) await browser.close().catch(() => {});
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
