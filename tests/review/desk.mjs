// Drives the review desk in Debian's Chromium with playwright-core (run by tests/review_desk.rs).
// Environment: BASE_URL, JOB_ID, LINE (0-based), CORRECTION, REVIEWER, SCREENSHOT, CHROMIUM.
// Opens /review, finds the job in the queue, selects the line by clicking its box on the page,
// types the correction, presses Enter, takes a screenshot, presses Approve and waits for the
// desk to say so. Prints one JSON line; exits non-zero on any failure or console error.
import { launch } from "./browser.mjs";

const env = (k) => {
  const v = process.env[k];
  if (v === undefined) throw new Error(`missing ${k}`);
  return v;
};
const base = env("BASE_URL");
const job = env("JOB_ID");
const line = Number(env("LINE"));
const correction = env("CORRECTION");
const reviewer = env("REVIEWER");

const browser = await launch();
const errors = [];
const out = { job, line };
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));

  const t0 = Date.now();
  await page.goto(`${base}/review`);
  const entry = page.locator(`#queue button[data-job="${job}"]`);
  await entry.waitFor({ timeout: 30000 });
  out.queue_ms = Date.now() - t0;
  out.waiting = await page.locator("#waiting").textContent();

  await page.fill("#reviewer", reviewer);
  await entry.click();
  const box = page.getByRole("textbox", { name: `Line ${line + 1}`, exact: true });
  await box.waitFor({ timeout: 30000 });
  await page.waitForFunction(() => document.getElementById("page").naturalWidth > 0);
  out.open_ms = Date.now() - t0;
  out.image = await page.evaluate(() => {
    const i = document.getElementById("page");
    return { width: i.naturalWidth, height: i.naturalHeight };
  });
  out.boxes = await page.locator("#boxes polygon").count();

  // Select the line by its box on the page: the desk focuses its textbox.
  await page.locator(`#boxes polygon[data-line="${line}"]`).click({ force: true });
  await page.waitForFunction((n) => document.activeElement?.dataset?.line === String(n), line);
  out.marked_low = await page.locator("#marked .lowc").count();
  await box.fill(correction);
  await box.press("Enter");
  // Enter accepts the line and moves to the next one.
  out.after_enter = await page.evaluate(() => document.activeElement?.getAttribute("aria-label"));
  await page.screenshot({ path: env("SCREENSHOT") });
  // A small copy for docs/api.md (docs/review-desk.jpg is this, committed).
  await page.screenshot({ path: env("SCREENSHOT").replace(/\.png$/, ".jpg"), type: "jpeg", quality: 70 });

  await page.getByRole("button", { name: "Approve", exact: true }).click();
  await page.getByText(`Approved ${job}`).waitFor({ timeout: 30000 });
  out.status = await page.locator("#status").textContent();
  out.errors = errors;
  console.log(JSON.stringify(out));
} catch (e) {
  out.errors = errors;
  out.failure = String(e);
  console.log(JSON.stringify(out));
  process.exitCode = 1;
} finally {
  await browser.close();
}
if (errors.length) process.exitCode = 1;
