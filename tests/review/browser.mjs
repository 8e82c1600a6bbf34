// Debian's Chromium through playwright-core, headless, with the flags that work offline
// (../shared/docs/FACTS.md): without the background-networking ones Chromium keeps trying hosts
// this network refuses. CHROMIUM overrides the executable.
import { chromium } from "playwright-core";

export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           ...extraArgs],
  });
}
