// QAT + KD (weights-tools/qat.ts, stepq qat) on fashion-sd-tiny:
// - overfitting: 50 steps on one fixed batch drive the student's noise loss down by at least 10x;
// - `stepq qat` runs 3 steps and writes a pipeline folder that generate loads (mixed:5), and the run's own
//   export check passed: the exported INT8 UNet computes bit for bit what the student computed (also with
//   learned per-step scales, which need the version-2 converted format); per-step ranges taken from a per-step
//   calibration file (--init-ranges with --per-step-scales) reach the exported file;
// - interrupted (a checkpoint, as on Ctrl-C) and resumed, a run gives exactly the weights of an uninterrupted run;
// - the memory plan refuses what cannot fit the engine, with the numbers (SD 1.5; a too-small --memory);
// - a training step stays within the memory plan.
import { engineFlags } from "../bin/engine-flags.js";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sharedDir } from "../src/io/places.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { SD15_UNET_CONFIG, loadUNetConfig } from "../src/models/config.ts";
import { planRefusal, qat, qatMemoryPlan, type QatOptions } from "../weights-tools/qat.ts";
import { actParamsFromRange } from "../src/nn/quant.ts";

const root = path.resolve(import.meta.dirname, "..");
const bin = path.join(root, "bin", "stepq.js");
const model = path.join(sharedDir(), "models", "fashion-sd-tiny");
const data = path.join(sharedDir(), "data", "fashion-mnist");
let tmp: string;

beforeAll(() => {
  if (!fs.existsSync(path.join(root, "dist", "cli.js"))) spawnSync(process.execPath, [path.join(root, "scripts", "build.mjs")], { cwd: root, stdio: "inherit" });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-qat-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function stepq(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: tmp, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every tensor of a safetensors file, raw bytes by name. */
async function tensors(file: string): Promise<Map<string, Uint8Array>> {
  const st = await SafetensorsFile.open(file);
  try {
    const m = new Map<string, Uint8Array>();
    for (const t of st.tensors.values()) m.set(t.name, (await st.readRaw(t.name)).slice());
    return m;
  } finally {
    st.close();
  }
}

const base = (out: string, extra: Partial<QatOptions> = {}): QatOptions => ({ model, out: path.join(tmp, out), data, batch: 2, threads: 2, link: "symlink", valBatches: 0, ...extra });

describe("QAT + KD", () => {
  it("overfits one fixed batch: 50 steps drive the noise loss down >= 10x", async () => {
    const losses: number[] = [];
    await qat(base("overfit", { steps: 50, lr: 2e-3, kdWeight: 0, ema: false, calibrationBatches: 2, fixedBatch: true, checkpointEvery: 0, onProgress: (p) => p.phase === "train" && losses.push(p.noiseLoss!) }));
    expect(losses.length).toBe(50);
    const first = losses[0], last = Math.min(...losses.slice(-5));
    expect(last, `noise loss ${first} -> ${losses.slice(-5).join(", ")}`).toBeLessThan(first / 10);
  });

  it("stepq qat runs 3 steps; the output loads for mixed:5, and its INT8 UNet is the student bit for bit", () => {
    const out = path.join(tmp, "cli3");
    const r = stepq("qat", "--model", model, "--data", data, "--out", out, "--steps", "3", "--batch", "2", "--threads", "2", "--link", "symlink", "--val-batches", "2");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/memory per step \(UNet 8\.6M parameters\): teacher weights .* gradients .* AdamW state .* activations/);
    expect(r.stderr).toMatch(/step 3\/3 {2}noise \S+ {2}kd \S+ .* samples\/s {2}ETA/);
    expect(r.stderr).toMatch(/export check: the INT8 UNet .* computes bit for bit what the student computed/);
    expect(r.stderr).toMatch(/held-out batches \(2\) after calibration: noise loss \S+, KD loss \S+/);
    expect(r.stderr).toMatch(/held-out batches \(2\) with the exported weights: noise loss \S+, KD loss \S+/);
    for (const f of ["model_index.json", "vae", "unet/config.json", "unet/stepq-int8.safetensors", "unet/stepq-qat.json", "unet/stepq-qat-log.jsonl"]) expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    expect(fs.existsSync(path.join(out, "stepq-qat-checkpoint.safetensors"))).toBe(false);
    const log = fs.readFileSync(path.join(out, "unet", "stepq-qat-log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(log.map((e) => e.step)).toEqual([1, 2, 3]);
    const rec = JSON.parse(fs.readFileSync(path.join(out, "unet", "stepq-qat.json"), "utf8"));
    expect([rec.act_qmax, rec.weight_qmax]).toEqual([255, 63]);
    const g = stepq("generate", "--model", out, "--precision", "mixed:5", "--prompt", "a photo of a bag", "--steps", "12", "--seed", "1", "--out", path.join(tmp, "bag.png"), "--threads", "2");
    expect(g.code, g.stderr).toBe(0);
    expect(g.stderr).toMatch(/\[int8\]/);
  });

  it("the shipped models/fashion-sd-tiny-qat loads (relative symlinks into fashion-sd-tiny) and runs mixed precision", () => {
    const shipped = path.join(root, "models", "fashion-sd-tiny-qat");
    for (const f of ["vae", "text_encoder", "unet/diffusion_pytorch_model.safetensors"]) expect(path.isAbsolute(fs.readlinkSync(path.join(shipped, f))), f).toBe(false);
    const rec = JSON.parse(fs.readFileSync(path.join(shipped, "unet", "stepq-qat.json"), "utf8"));
    expect([rec.act_qmax, rec.weight_qmax]).toEqual([255, 63]);
    const g = stepq("generate", "--model", shipped, "--precision", "mixed:2", "--prompt", "a photo of a bag", "--steps", "6", "--seed", "1", "--out", path.join(tmp, "shipped.png"), "--threads", "1");
    expect(g.code, g.stderr).toBe(0);
    expect(g.stderr).toMatch(/\[int8\]/);
  });

  it("--out: refused before any work inside the model or data folder (symlinks resolved) or over a folder of other files; an earlier output is fine", () => {
    const link = path.join(tmp, "model-link");
    fs.symlinkSync(model, link);
    const other = path.join(tmp, "other");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "notes.txt"), "mine");
    for (const [out, re] of [
      [path.join(link, "sub"), /--out .*model-link\/sub: is inside the model folder .* being read/],
      [path.join(data, "x"), /--out .*fashion-mnist\/x: is inside the data folder .*fashion-mnist being read/],
      [other, /--out .*other: the folder exists and holds files that are not an earlier stepq qat output \(notes\.txt\)/],
    ] as const) {
      const r = stepq("qat", "--model", model, "--data", data, "--out", out, "--steps", "1", "--batch", "1");
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(re);
      expect(r.stderr).not.toMatch(/memory per step/); // nothing started
    }
    expect(fs.existsSync(path.join(model, "sub"))).toBe(false);
    expect(fs.readdirSync(other)).toEqual(["notes.txt"]);
    // the folder the 3-step test wrote is an earlier output: accepted (the plan line shows the run started)
    const again = stepq("qat", "--model", model, "--data", data, "--out", path.join(tmp, "cli3"), "--steps", "1", "--batch", "1", "--calibration-batches", "0", "--val-batches", "0", "--link", "symlink");
    expect(again.code, again.stderr).toBe(0);
  });

  it("learned per-step scales (LSQ): the version-2 INT8 file reproduces the student bit for bit", async () => {
    const msgs: string[] = [];
    const out = path.join(tmp, "lsq");
    await qat(base("lsq", { steps: 2, scales: "lsq", perStepScales: true, samplerSteps: 10, calibrationBatches: 2, onMessage: (m) => msgs.push(m) }));
    expect(msgs.join("\n")).toMatch(/export check: .* bit for bit .* at t=/);
    const st = await SafetensorsFile.open(path.join(out, "unet", "stepq-int8.safetensors"));
    try {
      expect(st.metadata.stepq_format_version).toBe("2");
      expect(JSON.parse(st.metadata.timesteps).length).toBe(10);
      expect(st.info("conv_in.input_scale_steps").shape).toEqual([10]);
    } finally {
      st.close();
    }
  });

  it("per-step ranges from a per-step calibration file start (and, frozen, stay) each step's range", async () => {
    // a per-step file with two timesteps: 999 has the global ranges, 0 half of them
    const cal = JSON.parse(fs.readFileSync(path.join(root, "models", "fashion-sd-tiny", "unet", "stepq-calibration.json"), "utf8"));
    cal.timesteps = [999, 0];
    for (const r of Object.values(cal.layers) as { min: number; max: number; steps?: unknown }[])
      r.steps = [{ min: r.min, max: r.max }, { min: r.min / 2, max: r.max / 2 }];
    const file = path.join(tmp, "cal-steps.json");
    fs.writeFileSync(file, JSON.stringify(cal));
    const out = path.join(tmp, "steps-from-file");
    await qat(base("steps-from-file", { steps: 1, perStepScales: true, samplerSteps: 10, initRanges: file, observeDuringTraining: false }));
    const st = await SafetensorsFile.open(path.join(out, "unet", "stepq-int8.safetensors"));
    try {
      const ts: number[] = JSON.parse(st.metadata.timesteps);
      const scales = await st.readF32("conv_in.input_scale_steps");
      const { min, max } = cal.layers.conv_in;
      ts.forEach((t, i) => {
        const want = actParamsFromRange(Math.fround(t >= 500 ? min : min / 2), Math.fround(t >= 500 ? max : max / 2), cal.actQmax, cal.weightQmax).scale;
        expect(scales[i]).toBe(Math.fround(want));
      });
    } finally {
      st.close();
    }
  });

  for (const mode of ["data", "data-free"] as const)
  it(`interrupted and resumed gives exactly the weights of an uninterrupted run (${mode})`, async () => {
    // data-free: 3 calls per trajectory (PNDM, 2 steps), so the resumed run recomputes the teacher's trajectory
    const o: Partial<QatOptions> = { steps: 4, calibrationBatches: 2, checkpointEvery: 0, ...(mode === "data-free" ? { data: undefined, dataFree: true, samplerSteps: 2 } : {}) };
    const whole = `whole-${mode}`, parts = `parts-${mode}`;
    await qat(base(whole, o));
    let done = 0;
    const stopped = await qat(base(parts, { ...o, onProgress: (p) => p.phase === "train" && done++, shouldStop: () => done >= 2 }));
    expect(stopped.stopped).toBe(true);
    expect(stopped.step).toBe(2);
    expect(fs.existsSync(stopped.checkpoint!)).toBe(true);
    await expect(qat(base(parts, o))).rejects.toThrow(/--resume/);
    await expect(qat(base(parts, { ...o, lr: 2e-5, resume: true }))).rejects.toThrow(/other settings \(lr/);
    const resumed = await qat(base(parts, { ...o, resume: true }));
    expect(resumed.stopped).toBe(false);
    expect(resumed.step).toBe(4);
    const a = await tensors(path.join(tmp, whole, "unet", "stepq-int8.safetensors"));
    const b = await tensors(path.join(tmp, parts, "unet", "stepq-int8.safetensors"));
    expect([...b.keys()]).toEqual([...a.keys()]);
    const differ = [...a].filter(([k, v]) => Buffer.compare(Buffer.from(v), Buffer.from(b.get(k)!)) !== 0).map(([k]) => k);
    expect(differ).toEqual([]);
    const la = fs.readFileSync(path.join(tmp, whole, "unet", "stepq-qat-log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const lb = fs.readFileSync(path.join(tmp, parts, "unet", "stepq-qat-log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lb.map((e) => [e.step, e.noise_loss, e.kd_loss, e.grad_norm])).toEqual(la.map((e) => [e.step, e.noise_loss, e.kd_loss, e.grad_norm]));
  });

  it("Ctrl-C: stepq qat finishes the step, writes a checkpoint and exits 130; --resume completes the run", async () => {
    const out = path.join(tmp, "sigint");
    const args = ["qat", "--model", model, "--data", data, "--out", out, "--steps", "12", "--batch", "1", "--threads", "1", "--link", "symlink", "--calibration-batches", "1", "--val-batches", "0"];
    // the CLI itself, with the flags this Node needs (bin/stepq.js passes the same)
    const child = spawn(process.execPath, [...engineFlags(), path.join(root, "dist", "cli.js"), ...args], { cwd: tmp });
    let err = "";
    const code = await new Promise<number | null>((resolve) => {
      child.stderr.on("data", (d) => {
        err += d;
        if (/step 1\/12/.test(err) && !child.killed) child.kill("SIGINT");
      });
      child.on("exit", (c) => resolve(c));
    });
    expect(code, err).toBe(130);
    expect(err).toMatch(/interrupted: finishing this step and writing a checkpoint/);
    const m = /stopped at step (\d+)\/12: checkpoint (\S+); continue with the same command and --resume/.exec(err);
    expect(m, err).not.toBeNull();
    expect(Number(m![1])).toBeLessThan(12);
    expect(fs.existsSync(m![2].replace(/;$/, ""))).toBe(true);
    const r = stepq(...args, "--resume");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`resumed from .* at step ${m![1]} of 12`));
  });

  it("refuses what cannot fit the engine's memory, with the numbers", async () => {
    const p = qatMemoryPlan(SD15_UNET_CONFIG, { batch: 4 });
    expect(p.fits).toBe(false);
    expect(p.params).toBe(859_520_964);
    const msg = planRefusal(p);
    expect(msg).toMatch(/does not fit the engine's memory: a step needs \d+\.\d+ GiB of engine memory and the engine has at most 4\.00 GiB/);
    expect(msg).toMatch(/859\.5M/);
    const tiny = qatMemoryPlan(await loadUNetConfig(path.join(model, "unet")), { batch: 4 });
    expect(tiny.fits).toBe(true);
    const r = stepq("qat", "--model", model, "--data", data, "--out", path.join(tmp, "small"), "--steps", "3", "--memory", "64M");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^stepq qat: full QAT of this UNet does not fit the engine's memory: a step needs \d+\.\d MiB .* at most 64\.0 MiB/m);
  });

  it("a training step stays within the plan", async () => {
    const r = await qat(base("peak", { steps: 1, batch: 4, calibrationBatches: 1 }));
    expect(r.peakEngineBytes).toBeLessThan(r.plan.engineTotal);
    expect(r.peakEngineBytes).toBeGreaterThan(0.3 * r.plan.engineTotal);
  });
});
