// Times the review desk with a full queue (run by scripts/review_load.sh): BASE_URL, WAITING
// (how many jobs the queue must show), RUNS. For each run: a fresh page, /review until WAITING
// queue entries are drawn (queue_ms), then the first entry opened until its page image is
// drawn (open_ms). Prints one JSON line; exits non-zero on a console error.
import { launch } from "./browser.mjs";

const base = process.env.BASE_URL;
const waiting = Number(process.env.WAITING);
const runs = Number(process.env.RUNS || 3);
const browser = await launch();
const errors = [];
const out = { waiting, runs: [] };
try {
  for (let i = 0; i < runs; i++) {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    const t0 = Date.now();
    await page.goto(`${base}/review`);
    await page.waitForFunction((n) => document.querySelectorAll("#queue button").length >= n, waiting, { timeout: 120000 });
    const queue_ms = Date.now() - t0;
    const t1 = Date.now();
    const [image] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/image")),
      page.locator("#queue button").first().click(),
    ]);
    const imageBytes = Number(await image.headerValue("content-length"));
    await page.waitForFunction(() => document.getElementById("page").naturalWidth > 0 && document.querySelectorAll("#boxes polygon").length > 0);
    const open_ms = Date.now() - t1;
    out.runs.push({ queue_ms, open_ms, image_bytes: imageBytes });
    await page.close();
  }
} finally {
  await browser.close();
}
out.errors = errors;
console.log(JSON.stringify(out));
if (errors.length) process.exitCode = 1;
