// The launcher (bin/stepq.js): the flags it passes per Node version, that it runs the command in-process and
// through a child (never exit 0 without running it), and the child path's signal handling: SIGINT/SIGTERM
// are forwarded (no child left running), a child killed by a signal is reported and gives 128 + signal.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engineFlags } from "../bin/engine-flags.js";
import { Engine } from "../src/runtime/engine.ts";

const root = path.resolve(import.meta.dirname, "..");
const bin = path.join(root, "bin", "stepq.js");
let tmp: string;

function stepq(env: Record<string, string>, ...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: tmp, encoding: "utf8", timeout: 60_000, env: { ...process.env, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  if (!fs.existsSync(path.join(root, "dist", "cli.js"))) spawnSync(process.execPath, [path.join(root, "scripts", "build.mjs")], { cwd: root, stdio: "inherit" });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-launcher-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const MODES: Record<string, Record<string, string>> = {
  default: { STEPQ_NO_RESPAWN: "", STEPQ_RESPAWN: "" },
  "in-process": { STEPQ_NO_RESPAWN: "1", STEPQ_RESPAWN: "" },
  child: { STEPQ_NO_RESPAWN: "", STEPQ_RESPAWN: "1" },
};

describe("launcher", () => {
  it("passes the relaxed-SIMD flag and --no-liftoff on Node 20 only, never under Deno", () => {
    expect(engineFlags({ node: "20.20.2" })).toEqual(["--experimental-wasm-relaxed-simd", "--no-liftoff"]);
    expect(engineFlags({ node: "22.23.5" })).toEqual([]);
    expect(engineFlags({ node: "24.22.3" })).toEqual([]);
    expect(engineFlags({ node: "20.11.1", deno: "2.9.6" })).toEqual([]);
  });

  it("with those flags (vitest.config.ts passes them) this Node runs the relaxed build", async () => {
    const eng = await Engine.create({ threads: 1, memoryBytes: 8 << 20 });
    try {
      expect(eng.probe).toEqual({ ok: true, reason: "relaxed dot and fused madd verified" });
      expect(eng.simd).toBe("relaxed");
    } finally {
      eng.close();
    }
  });

  for (const [mode, env] of Object.entries(MODES)) {
    it(`runs the command (${mode})`, () => {
      const v = stepq(env, "--version");
      expect(v.stderr).toBe("");
      expect(v.stdout).toMatch(/^stepq \d+\.\d+\.\d+\n$/);
      expect(v.code).toBe(0);
      const bad = stepq(env, "frobnicate");
      expect(bad.stderr).toMatch(/^stepq: unknown command "frobnicate"/);
      expect(bad.code).toBe(2);
    });
  }

  it("runs under a Node that already has the flags, without a second process", () => {
    const r = spawnSync(process.execPath, [...engineFlags(), bin, "frobnicate"], { cwd: tmp, encoding: "utf8", timeout: 60_000 });
    expect(r.stderr).toMatch(/unknown command "frobnicate"/);
    expect(r.status).toBe(2);
  });

  // A slow generate through the child path; `kill(launcher, child)` sends the signal once step 1 is printed.
  async function interrupted(kill: (launcher: number, child: number) => void) {
    const out = path.join(tmp, `never-${Math.random().toString(36).slice(2)}.png`);
    const p = spawn(process.execPath, [bin, "generate", "--prompt", "a bag", "--steps", "500", "--threads", "1", "--seed", "1", "--out", out], {
      cwd: tmp,
      env: { ...process.env, STEPQ_RESPAWN: "1", STEPQ_NO_RESPAWN: "" },
    });
    let stderr = "";
    let child = 0;
    const done = new Promise<number | null>((resolve) => p.on("exit", (code) => resolve(code)));
    p.stderr.on("data", (d) => {
      stderr += d;
      if (!child && /^step 1\//m.test(stderr)) {
        // the launcher's only child is the Node running dist/cli.js
        child = Number(fs.readFileSync(`/proc/${p.pid}/task/${p.pid}/children`, "utf8").trim().split(/\s+/)[0]);
        kill(p.pid!, child);
      }
    });
    const code = await done;
    expect(child).toBeGreaterThan(0);
    let childAlive = true;
    try {
      process.kill(child, 0);
    } catch {
      childAlive = false;
    }
    return { code, stderr, childAlive, wrote: fs.existsSync(out) };
  }

  it.runIf(process.platform === "linux")("forwards SIGTERM and SIGINT to the child and exits 128 + signal", async () => {
    for (const [sig, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
      const r = await interrupted((launcher) => process.kill(launcher, sig));
      expect(r.childAlive).toBe(false);
      expect(r.wrote).toBe(false);
      expect(r.stderr).toMatch(new RegExp(`\\nstepq: killed by ${sig}\\n$`));
      expect(r.code).toBe(code);
    }
  });

  it.runIf(process.platform === "linux")("reports a child killed by SIGKILL and exits 137", async () => {
    const r = await interrupted((_, child) => process.kill(child, "SIGKILL"));
    expect(r.stderr).toMatch(/\nstepq: killed by SIGKILL \(out of memory\?\)\n$/);
    expect(r.code).toBe(137);
    expect(r.wrote).toBe(false);
  });
});
