// A hostile web page against a server without keys on loopback, in Debian's Chromium (run by
// tests/review_desk.rs). Environment: BASE_URL (http://127.0.0.1:PORT), CHROMIUM.
// The attacker's site (http://attacker.test, served by the browser itself: no network) frames
// the review desk, sends "simple" cross-origin requests that need no preflight (a no-cors POST
// pausing the queue, a multipart form creating a job), and a page on rebind.test, a name the
// browser resolves to 127.0.0.1 (DNS rebinding), reads /v1/jobs as its own origin. Prints one
// JSON line with what the server answered each and whether the frame shows the desk; the Rust
// test checks that every one was refused and nothing changed.
import { launch } from "./browser.mjs";

const base = process.env.BASE_URL;
if (!base) throw new Error("missing BASE_URL");
const port = new URL(base).port;
// Chromium's own Local/Private Network Access checks would block a public page's requests to
// loopback before the server sees them; they are off here so that what is tested is the
// server's refusal (other browsers, older ones, and pages on the same network have no such
// check).
const browser = await launch([
  "--host-resolver-rules=MAP rebind.test 127.0.0.1",
  "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests," +
    "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults",
]);
const out = { statuses: {} };
try {
  const page = await browser.newPage();
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (u.port === port) out.statuses[`${r.request().method()} ${u.pathname}`] = r.status();
  });
  await page.route("http://attacker.test/**", (r) => r.fulfill({
    contentType: "text/html",
    body: `<!doctype html><title>attacker</title>
      <iframe id="desk" src="${base}/review" width="800" height="400"></iframe>
      <form id="job" method="POST" action="${base}/v1/jobs" enctype="multipart/form-data"
            target="sink"><input type="hidden" name="file" value="x"></form>
      <iframe name="sink"></iframe>`,
  }));
  await page.goto("http://attacker.test/");
  out.pause = await page.evaluate(async (b) => {
    try {
      const r = await fetch(`${b}/v1/admin/pause`, {
        method: "POST", mode: "no-cors", headers: { "Content-Type": "text/plain" }, body: "",
      });
      return r.type;
    } catch (e) {
      return String(e);
    }
  }, base);
  await page.evaluate(() => document.getElementById("job").submit());
  await page.waitForTimeout(2000);
  const desk = page.frames().find((f) => f !== page.mainFrame() && f.name() !== "sink");
  out.frame_url = desk ? desk.url() : null;
  try {
    out.frame_shows_desk = desk ? await desk.evaluate(() => !!document.getElementById("queue")) : false;
  } catch (e) {
    out.frame_shows_desk = false;
    out.frame_error = String(e);
  }
  const rebound = await page.goto(`http://rebind.test:${port}/v1/jobs`);
  out.rebind_status = rebound ? rebound.status() : null;
  out.rebind_body = rebound ? (await rebound.text()).slice(0, 300) : null;
  console.log(JSON.stringify(out));
} catch (e) {
  out.failure = String(e);
  console.log(JSON.stringify(out));
  process.exitCode = 1;
} finally {
  await browser.close();
}
