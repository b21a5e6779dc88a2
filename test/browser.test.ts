// The in-browser demo end to end (issue 11): `stepq serve` (the built CLI) serves the page, headless Chromium
// (Debian's /usr/bin/chromium, driven by puppeteer-core; never a downloaded browser) opens it with autorun,
// and the page's PNG must be byte-identical to `stepq generate` with the same arguments under Node:
//   - cross-origin isolated (COOP/COEP): the engine runs on 2 threads; the precision strip covers the schedule;
//   - without COOP/COEP (--no-isolation): the page says so and runs on one thread, same image;
//   - bad input (a model URL that 404s, a truncated model file, an unknown precision): a clear message,
//     data-state="error", within seconds.
// Skipped when Chromium is missing, unless STEPQ_REQUIRE_BROWSER=1 (CI), where that fails.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = path.resolve(import.meta.dirname, "..");
const bin = path.join(root, "bin", "stepq.js");
const chromium = process.env.STEPQ_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = fs.existsSync(chromium);
if (!haveChromium && process.env.STEPQ_REQUIRE_BROWSER) throw new Error(`STEPQ_REQUIRE_BROWSER is set but ${chromium} does not exist (apt-get install chromium)`);

let tmp: string;
let browser: Browser;
const servers: ChildProcess[] = [];

/** Starts `stepq serve --port 0 ...args` and resolves with the URL it prints. */
async function serve(...args: string[]): Promise<string> {
  const p = spawn(process.execPath, [bin, "serve", "--port", "0", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  servers.push(p);
  let out = "";
  let err = "";
  p.stderr!.on("data", (d) => (err += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stepq serve printed no URL in 20 s: ${out}${err}`)), 20_000);
    p.stdout!.on("data", (d) => {
      out += d;
      const m = /http:\/\/\S+/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
    p.on("exit", (code) => reject(new Error(`stepq serve exited with ${code}: ${err}`)));
  });
}

/** `stepq generate` under this Node: the PNG's bytes. */
function cliPng(name: string, args: string[]): Buffer {
  const out = path.join(tmp, `${name}.png`);
  const r = spawnSync(process.execPath, [bin, "generate", ...args, "--threads", "2", "--out", out, "-q"], { cwd: root, encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`stepq generate ${args.join(" ")} failed: ${r.stderr}`);
  return fs.readFileSync(out);
}

interface PageResult {
  state: string;
  png: Buffer | null;
  error: string;
  isolated: boolean;
  isolationNote: string | null;
  threads: string;
  simd: string;
  strip: { precision: string; done: boolean }[];
  timings: string;
  ms: number;
}

/** Waits until the page says done or error (at most timeoutMs) and reads what it shows. */
async function pageResult(page: Page, timeoutMs: number): Promise<PageResult> {
  const t0 = Date.now();
  await page.waitForFunction(() => document.body.dataset.state === "done" || document.body.dataset.state === "error", { timeout: timeoutMs, polling: 100 });
  const r = await page.evaluate(() => {
    const text = (id: string) => document.getElementById(id)!.textContent ?? "";
    const note = document.getElementById("isolation")!;
    return {
      state: document.body.dataset.state!,
      src: document.getElementById("result")!.getAttribute("src"),
      error: document.getElementById("error")!.hidden ? "" : text("error"),
      isolated: self.crossOriginIsolated,
      isolationNote: note.hidden ? null : note.textContent,
      threads: text("threads-used"),
      simd: text("simd"),
      strip: Array.from(document.querySelectorAll("#strip .cell")).map((c) => ({
        precision: /p-(\w+)/.exec(c.className)![1],
        done: c.classList.contains("done"),
      })),
      timings: (document.getElementById("timings") as HTMLElement).innerText,
    };
  });
  const m = r.src ? /^data:image\/png;base64,(.+)$/.exec(r.src) : null;
  return { ...r, png: m ? Buffer.from(m[1], "base64") : null, ms: Date.now() - t0 };
}

/** Opens url (autorun) in a new tab, waits for done or error, closes the tab; uncaught page errors fail the test. */
async function runPage(url: string, timeoutMs = 60_000, then?: (page: Page) => Promise<PageResult>): Promise<PageResult> {
  const page: Page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  try {
    await page.goto(url);
    let r = await pageResult(page, timeoutMs);
    if (then) r = await then(page);
    expect(errors).toEqual([]);
    return r;
  } finally {
    await page.close();
  }
}

const q = (params: Record<string, string | number>) => `?${new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]))}&autorun=1`;

describe.skipIf(!haveChromium)("demo page in headless Chromium", () => {
  let isolatedUrl: string;

  beforeAll(async () => {
    for (const f of ["dist/demo.html", "dist/demo-worker.js", "dist/stepq.browser.js", "dist/cli.js"])
      if (!fs.existsSync(path.join(root, f))) throw new Error(`${f} is missing: run \`npm run build\` first`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-browser-"));
    isolatedUrl = await serve();
    browser = await puppeteer.launch({
      executablePath: chromium,
      headless: false, // the flag below is the headless mode
      userDataDir: path.join(tmp, "profile"),
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  afterAll(async () => {
    await browser?.close();
    for (const p of servers) p.kill("SIGTERM");
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("serves on 127.0.0.1 by default", () => {
    expect(isolatedUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
  });

  it("cross-origin isolated, fp32 on 2 threads: the same PNG as stepq generate", async () => {
    const args = { prompt: "a photo of a sneaker", seed: 1, steps: 20 };
    const page = await runPage(isolatedUrl + q({ ...args, threads: 2 }));
    expect(page.error).toBe("");
    expect(page.state).toBe("done");
    expect(page.isolated).toBe(true);
    expect(page.isolationNote).toBeNull();
    expect(page.threads).toMatch(/^2 /);
    expect(page.simd).toMatch(/^(relaxed|baseline) \(/);
    expect(page.strip.map((c) => c.precision)).toEqual(new Array(20).fill("fp32"));
    expect(page.strip.every((c) => c.done)).toBe(true);
    expect(page.timings).toMatch(/text encoder[^]*UNet fp32\s+[\d.]+ s\s+21 calls[^]*VAE decode[^]*total/);
    const cli = cliPng("fp32", ["--prompt", args.prompt, "--seed", "1", "--steps", "20"]);
    expect(page.png!.equals(cli)).toBe(true);
  });

  it("mixed:K with another scheduler and guidance: the strip shows each step's precision; same PNG as the CLI", async () => {
    const args = { prompt: "a photo of a bag", negative: "a shoe", seed: 3, steps: 12, guidance: 4, scheduler: "ddim", precision: "mixed:3" };
    const page = await runPage(isolatedUrl + q({ ...args, threads: 2 }));
    expect(page.error).toBe("");
    expect(page.state).toBe("done");
    expect(page.strip.map((c) => c.precision)).toEqual([...new Array(3).fill("bf16"), ...new Array(6).fill("int8"), ...new Array(3).fill("bf16")]);
    expect(page.strip.every((c) => c.done)).toBe(true);
    expect(page.timings).toMatch(/UNet bf16\s+[\d.]+ s\s+6 calls[^]*UNet int8\s+[\d.]+ s\s+6 calls/);
    const cli = cliPng("mixed", ["--prompt", args.prompt, "--negative-prompt", args.negative, "--seed", "3", "--steps", "12", "--guidance", "4", "--scheduler", "ddim", "--precision", "mixed:3"]);
    expect(page.png!.equals(cli)).toBe(true);
  });

  it("without COOP/COEP: says so, runs on one thread, same PNG", async () => {
    const url = await serve("--no-isolation");
    const args = { prompt: "a photo of a dress", seed: 7, steps: 10, precision: "bf16*4,int8*2,bf16*4" };
    const page = await runPage(url + q({ ...args, threads: 4 }));
    expect(page.error).toBe("");
    expect(page.state).toBe("done");
    expect(page.isolated).toBe(false);
    expect(page.isolationNote).toMatch(/not cross-origin isolated[^]*Cross-Origin-Opener-Policy: same-origin[^]*Cross-Origin-Embedder-Policy: require-corp[^]*one thread/);
    expect(page.threads).toMatch(/^1 /);
    expect(page.strip.map((c) => c.precision).join(",")).toBe("bf16,bf16,bf16,bf16,int8,int8,bf16,bf16,bf16,bf16");
    const cli = cliPng("one-thread", ["--prompt", args.prompt, "--seed", "7", "--steps", "10", "--schedule", args.precision]);
    expect(page.png!.equals(cli)).toBe(true);
  });

  describe("bad input: a clear message, data-state=error, nothing hangs", () => {
    it("a model URL that 404s", async () => {
      const page = await runPage(isolatedUrl + q({ prompt: "x", steps: 2, model: "/no/such/model/" }), 20_000);
      expect(page.state).toBe("error");
      expect(page.error).toMatch(/could not load the model at http:\/\/127\.0\.0\.1:\d+\/no\/such\/model\/: .*model_index\.json: not found/);
      expect(page.png).toBeNull();
    });

    it("a truncated model file", async () => {
      const model = path.join(tmp, "truncated-model");
      fs.cpSync(path.join(root, "models", "fashion-sd-tiny"), model, { recursive: true });
      const weights = path.join(model, "unet", "diffusion_pytorch_model.safetensors");
      fs.truncateSync(weights, Math.floor(fs.statSync(weights).size / 2));
      const url = await serve("--model", model);
      const page = await runPage(url + q({ prompt: "x", steps: 2 }), 20_000);
      expect(page.state).toBe("error");
      expect(page.error).toMatch(/unet\/diffusion_pytorch_model\.safetensors: truncated/);
    });

    it("an unknown precision in the query string", async () => {
      const page = await runPage(isolatedUrl + q({ prompt: "x", steps: 4, precision: "fp8" }), 20_000);
      expect(page.state).toBe("error");
      expect(page.error).toMatch(/^precision: unknown precision "fp8" \(expected fp32, bf16, int8/);
    });

    it("the page recovers: after the error, a valid precision in the form runs", async () => {
      let first: PageResult | null = null;
      const page = await runPage(isolatedUrl + q({ prompt: "a photo of a shirt", seed: 2, steps: 4, precision: "int9", threads: 2 }), 20_000, async (p) => {
        first = await pageResult(p, 1000);
        await p.select("#precision-kind", "int8");
        await p.click("#run");
        await p.waitForFunction(() => document.body.dataset.state === "running", { timeout: 5000, polling: 20 }).catch(() => {});
        return pageResult(p, 60_000);
      });
      expect(first!.state).toBe("error");
      expect(first!.error).toMatch(/unknown precision "int9"/);
      expect(page.state).toBe("done");
      expect(page.error).toBe("");
      const cli = cliPng("int8", ["--prompt", "a photo of a shirt", "--seed", "2", "--steps", "4", "--precision", "int8"]);
      expect(page.png!.equals(cli)).toBe(true);
    });
  });
});
