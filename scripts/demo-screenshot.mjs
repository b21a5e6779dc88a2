#!/usr/bin/env node
// Makes docs/demo.png: starts `stepq serve` (build first: npm run build), opens the demo page in headless
// Chromium (Debian's /usr/bin/chromium or $STEPQ_CHROMIUM, through puppeteer-core; never a downloaded browser)
// with a mixed-precision run, waits until it is done and screenshots the page.
//   node scripts/demo-screenshot.mjs [out.png] [query string]
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.resolve(process.argv[2] ?? path.join(root, "docs", "demo.png"));
const query = process.argv[3] ?? "prompt=a+photo+of+a+bag&seed=3&steps=50&guidance=4&precision=mixed:5&threads=2&autorun=1";

const server = spawn(process.execPath, [path.join(root, "bin", "stepq.js"), "serve", "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
const url = await new Promise((resolve, reject) => {
  let text = "";
  server.stdout.on("data", (d) => {
    text += d;
    const m = /http:\/\/\S+/.exec(text);
    if (m) resolve(m[0]);
  });
  server.on("exit", (c) => reject(new Error(`stepq serve exited with ${c}`)));
});
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-shot-"));
const browser = await puppeteer.launch({
  executablePath: process.env.STEPQ_CHROMIUM ?? "/usr/bin/chromium",
  headless: false, // the flag below is the headless mode
  userDataDir: profile,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 720 });
  await page.goto(`${url}?${query}`);
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), { timeout: 120_000 });
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state !== "done") throw new Error(`the page ended in ${state}: ${await page.evaluate(() => document.getElementById("error").textContent)}`);
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  server.kill("SIGTERM");
  fs.rmSync(profile, { recursive: true, force: true });
}
