// The built CLI (node bin/stepq.js → dist/cli.js): help texts, usage errors (one line, exit 2),
// generate from --latents (same PNG as the library), --latents shape errors, verify's summary line.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openGolden } from "../src/io/golden.ts";
import { sharedDir } from "../src/io/places.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { encodePng } from "../src/io/png.ts";

const root = path.resolve(import.meta.dirname, "..");
const bin = path.join(root, "bin", "stepq.js");
const modelDir = path.join(sharedDir(), "models", "fashion-sd-tiny");
let tmp: string;

function stepq(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: tmp, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  if (!fs.existsSync(path.join(root, "dist", "cli.js"))) spawnSync(process.execPath, [path.join(root, "scripts", "build.mjs")], { cwd: root, stdio: "inherit" });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-cli-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("stepq CLI", () => {
  it("--help lists the commands; no command is a usage error", async () => {
    const r = stepq("--help");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: stepq <command>/);
    expect(r.stdout).toMatch(/generate\s+generate an image/);
    expect(r.stdout).toMatch(/verify\s+check the engine/);
    expect(stepq().code).toBe(2);
    expect(stepq("--version").stdout).toMatch(/^stepq \d+\.\d+\.\d+/);
  });

  it("every command has --help", async () => {
    for (const cmd of ["generate", "verify"]) {
      const r = stepq(cmd, "--help");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: stepq ${cmd}`));
    }
    expect(stepq("generate", "--help").stdout).toMatch(/--negative-prompt[^]*--scheduler[^]*--latents[^]*--out/);
  });

  it("bad flags and values: one line on stderr, exit 2", async () => {
    const cases: [string[], RegExp][] = [
      [["generate", "--bogus"], /^stepq generate: Unknown option '--bogus' \(see stepq generate --help\)\n$/],
      [["generate", "--prompt", "x", "--steps", "abc"], /--steps must be an integer from 1 to 1000, got "abc"/],
      [["generate", "--prompt", "x", "--width", "30"], /--width must be a multiple of 8, got 30/],
      [["generate", "--prompt", "x", "--scheduler", "lms"], /--scheduler must be one of pndm, ddim, euler, dpm\+\+, got "lms"/],
      [["generate"], /--prompt is required/],
      [["frobnicate"], /unknown command "frobnicate"/],
      [["verify"], /DIR is required/],
    ];
    for (const [args, re] of cases) {
      const r = stepq(...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(re);
      expect(r.stderr.trim().split("\n").length, args.join(" ")).toBe(1);
    }
    const missing = stepq("generate", "--prompt", "x", "--model", path.join(tmp, "nope"));
    // a missing input named by a flag is a usage error (exit 2), naming the flag and the path
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--model \S*nope: model folder not found/);
  });

  it("generate --latents writes the same PNG as the library and reports progress", async () => {
    const g = await openGolden(path.join(sharedDir(), "golden"), "e2e");
    const init = g.get("e2e2.initial_latents");
    writeSafetensors(path.join(tmp, "init.safetensors"), [{ name: "latents", dtype: "F32", shape: init.shape, data: init.data }]);
    const r = stepq("generate", "--model", modelDir, "--prompt", "a bag", "--steps", "20", "--guidance", "4", "--scheduler", "ddim", "--latents", "init.safetensors", "--threads", "2", "--out", "bag.png");
    expect(r.stderr).toMatch(/step 20\/20 +\d+\.\d+ s\/step +ETA 0\.00 s/);
    expect(r.stderr).toMatch(/done in .*: wrote bag\.png\n$/);
    expect(r.code).toBe(0);
    const pipe = await StableDiffusionPipeline.load(modelDir, { threads: 1 });
    try {
      const res = await pipe.generate({ prompt: "a bag", steps: 20, guidance: 4, scheduler: "ddim", latents: init.data });
      expect(Buffer.from(encodePng(res.image, res.width, res.height)).equals(fs.readFileSync(path.join(tmp, "bag.png")))).toBe(true);
    } finally {
      pipe.close();
    }

    writeSafetensors(path.join(tmp, "bad.safetensors"), [{ name: "x", dtype: "F32", shape: [4, 8, 8], data: new Float32Array(256) }]);
    const bad = stepq("generate", "--model", modelDir, "--prompt", "x", "--latents", "bad.safetensors");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--latents bad.safetensors: tensor x has shape \[4,8,8\], expected \[1,4,h,w\]/);
    writeSafetensors(path.join(tmp, "bad3.safetensors"), [{ name: "x", dtype: "F32", shape: [1, 3, 8, 8], data: new Float32Array(192) }]);
    const bad3 = stepq("generate", "--model", modelDir, "--prompt", "x", "--latents", "bad3.safetensors");
    expect(bad3.code).toBe(2);
    expect(bad3.stderr).toMatch(/has 3 channels; this model's latents are \[1,4,H\/4,W\/4\]/);
  });

  it("verify prints one line per case and the summary", async () => {
    const r = stepq("verify", path.join(sharedDir(), "golden"), "--models", path.join(sharedDir(), "models"), "--only", "scheduler", "--threads", "1");
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines.length).toBe(10);
    expect(lines[0]).toMatch(/^PASS scheduler pndm-20  max_err /);
    expect(lines.at(-1)).toMatch(/^verify: 9 passed, 0 failed/);
  });
});
