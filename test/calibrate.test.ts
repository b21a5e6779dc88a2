// INT8 calibration: the moving-average min/max observer, the least-MSE range search (against quantising the
// values for real) and the mse observer (global and per step), a calibration run of fashion-sd-tiny (ranges
// finite and ordered, one per conv/linear layer, file round trip), the CLI, and a pipeline that uses the
// calibration for a mixed:K schedule.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sharedDir } from "../src/io/places.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { HistogramObserver, MinMaxObserver, mseRange, readCalibration, validateCalibration, writeCalibration, type Calibration } from "../src/models/calibration.ts";
import { StableDiffusionPipeline, PipelineError } from "../src/pipeline/pipeline.ts";
import { calibrate } from "../weights-tools/calibrate.ts";
import { defaultCalibrationPrompts, readPromptsFile } from "../src/tools/prompts.ts";
import { run as calibrateCli } from "../src/cli/calibrate.ts";
import { UsageError } from "../src/cli/args.ts";
import { runSensitivity } from "../src/tools/sensitivity.ts";
import { Rng } from "../src/runtime/random.ts";
import { actParamsFromRange, normalizeActParams, quantizeActValue } from "../src/nn/quant.ts";

// The mean squared error of quantising xs exactly as the INT8 kernels do with the range [min, max].
function quantMse(xs: Float32Array, min: number, max: number, qmax: number): number {
  const p = normalizeActParams(actParamsFromRange(min, max, qmax, 63));
  let e = 0;
  for (const x of xs) e += ((quantizeActValue(x, p.invScale, p.zeroPoint, qmax) - p.zeroPoint) * p.scale - x) ** 2;
  return e / xs.length;
}

const model = path.join(sharedDir(), "models", "fashion-sd-tiny");

describe("MinMaxObserver", () => {
  it("EMA per UNet call as torch's MovingAverageMinMaxObserver (momentum 0.9); minmax keeps extremes", async () => {
    const o = new MinMaxObserver("ema-minmax", 0.9);
    o.record("a", -1, 2);
    o.record("a", -3, 1); // same call: extremes of the call are [-3, 2]
    o.endCall();
    o.record("a", -1, 4);
    o.endCall();
    const r = o.layers().a;
    expect(r.min).toBeCloseTo(-3 + 0.1 * (-1 - -3), 12);
    expect(r.max).toBeCloseTo(2 + 0.1 * (4 - 2), 12);
    expect([r.absMin, r.absMax, r.count]).toEqual([-3, 4, 2]);
    expect(o.calls).toBe(2);
    const m = new MinMaxObserver("minmax");
    m.record("a", -1, 2);
    m.endCall();
    m.record("a", -3, 1);
    m.endCall();
    expect(m.layers().a).toMatchObject({ min: -3, max: 2 });
    expect(() => o.record("b", NaN, 1)).toThrow(/non-finite/);
    expect(() => new MinMaxObserver("ema-minmax", 1)).toThrow(/momentum/);
  });
});

describe("mseRange (the mse observer's range search)", () => {
  const histogram = (xs: Float32Array, min: number, max: number, bins: number) => {
    const h = new Float64Array(bins);
    for (const x of xs) h[Math.min(bins - 1, Math.max(0, Math.floor(((x - min) / (max - min)) * bins)))]++;
    return h;
  };
  it("clips rare outliers: a lower quantisation error than min/max, measured on the values themselves", () => {
    const rng = new Rng(1);
    // two outliers in 2M values make min/max ~5x wider than the bulk needs (at 8 bits clipping pays only for
    // values this rare: the clipped error p * d^2 must stay below the rounding noise it saves)
    const xs = rng.normal(2000000);
    xs[5] = 40;
    xs[6] = -12;
    let mn = Infinity, mx = -Infinity;
    for (const x of xs) (mn = Math.min(mn, x)), (mx = Math.max(mx, x));
    const r = mseRange(histogram(xs, mn, mx, 2048), mn, mx, 255);
    expect(r.min).toBeLessThanOrEqual(0);
    expect(r.max).toBeGreaterThanOrEqual(0);
    // clipped on both sides, but not into the bulk
    expect(r.max).toBeLessThan(0.8 * mx);
    expect(r.min).toBeGreaterThan(0.8 * mn);
    expect(Math.min(r.max, -r.min)).toBeGreaterThan(3); // 8-bit optimum for a unit normal: ~3.9
    expect(r.mse).toBeLessThan(r.minmaxMse);
    // the model of the error (rounding noise s^2 / 12 inside, clipping outside) agrees with quantising for real
    expect(quantMse(xs, r.min, r.max, 255)).toBeLessThan(0.5 * quantMse(xs, mn, mx, 255));
    expect(quantMse(xs, r.min, r.max, 255) / r.mse).toBeGreaterThan(0.8);
    expect(quantMse(xs, r.min, r.max, 255) / r.mse).toBeLessThan(1.25);
  });
  it("keeps the whole range of uniform values, and zero inside the range", () => {
    const rng = new Rng(2);
    const xs = new Float32Array(100000);
    for (let i = 0; i < xs.length; i++) xs[i] = 0.5 + 3 * rng.uniform();
    const r = mseRange(histogram(xs, 0.5, 3.5, 2048), 0.5, 3.5, 255);
    expect(r.min).toBe(0); // all positive: the range still contains zero, as the asymmetric grid needs
    expect(r.max).toBeGreaterThan(3.45);
    expect(mseRange(new Float64Array(16), -1, 1, 255)).toMatchObject({ min: -1, max: 1, mse: 0 });
  });
  it("HistogramObserver needs every layer the min/max pass saw", () => {
    const h = new HistogramObserver({ a: { min: -1, max: 1 } }, 64);
    expect(() => h.layers(255)).toThrow(/not observed/);
  });
});

describe("calibration of fashion-sd-tiny", () => {
  let tmp: string;
  let cal: Calibration;
  let file: string;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-cal-"));
    file = path.join(tmp, "cal.json");
    cal = await calibrate({ model, prompts: defaultCalibrationPrompts(model, 2), steps: 3, guidance: 4, threads: 2 });
    writeCalibration(file, cal);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("one range per conv/linear layer, finite and ordered, every UNet call observed", async () => {
    // PNDM: 3 steps = 4 UNet calls per prompt
    expect(cal.unetCalls).toBe(8);
    expect(cal).toMatchObject({ steps: 3, guidance: 4, prompts: 2, scheduler: "pndm", actQmax: 255, weightQmax: 63 });
    // the default observer: running min/max (onnxruntime's MinMax); min/max are the extremes seen
    expect(cal.observer).toMatchObject({ type: "minmax" });
    const st = await SafetensorsFile.open(path.join(model, "unet", "diffusion_pytorch_model.safetensors"));
    const layers = [...st.tensors.values()].filter((t) => t.name.endsWith(".weight") && (t.shape.length === 2 || t.shape.length === 4)).map((t) => t.name.slice(0, -7));
    st.close();
    expect(Object.keys(cal.layers).sort()).toEqual(layers.sort());
    for (const [k, r] of Object.entries(cal.layers)) {
      for (const v of [r.min, r.max, r.absMin!, r.absMax!]) expect(Number.isFinite(v), k).toBe(true);
      expect(r.min, k).toBeLessThanOrEqual(r.max);
      expect(r.absMin!, k).toBeLessThanOrEqual(r.min);
      expect(r.max, k).toBeLessThanOrEqual(r.absMax!);
      expect(r.max - r.min, k).toBeGreaterThan(0);
      expect(r.count, k).toBe(8);
      expect([r.min, r.max], k).toEqual([r.absMin, r.absMax]);
    }
    // the context (CLIP states) feeds every to_k / to_v: the same range for all of them
    expect(cal.layers["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"]).toEqual(cal.layers["up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_v"]);
  });

  it("file round trip and validation", async () => {
    expect(await readCalibration(file)).toEqual(cal);
    expect(() => validateCalibration({ ...cal, format: "x" }, "f")).toThrow(/not a stepq calibration file/);
    expect(() => validateCalibration({ ...cal, layers: { a: { min: 1, max: 0 } } }, "f")).toThrow(/layer a has a bad range/);
    await expect(readCalibration(path.join(tmp, "none.json"))).rejects.toThrow(/does not exist; make it with: stepq calibrate/);
  });

  it("a pipeline runs mixed:K with it: per-call precisions, progress, errors", async () => {
    const pipe = await StableDiffusionPipeline.load(model, { threads: 2, precisions: ["bf16", "int8"], calibration: file });
    try {
      expect(pipe.precisions).toEqual(["bf16", "int8"]);
      const seen: string[] = [];
      const r = await pipe.generate({ prompt: "a photo of a bag", steps: 4, guidance: 4, seed: 3, precision: "mixed:1", onStep: (s) => seen.push(`${s.denoisingStep}:${s.precision}`) });
      // PNDM, 4 steps = 5 calls; step 2 runs twice
      expect(seen).toEqual(["1:bf16", "2:int8", "2:int8", "3:int8", "4:bf16"]);
      expect(r.precisions).toEqual(["bf16", "int8", "int8", "int8", "bf16"]);
      expect(r.schedule).toBe("bf16,int8*2,bf16");
      const again = await pipe.generate({ prompt: "a photo of a bag", steps: 4, guidance: 4, seed: 3, schedule: "bf16,int8*2,bf16" });
      expect(Buffer.from(again.image).equals(Buffer.from(r.image))).toBe(true);
      await expect(pipe.generate({ prompt: "x", steps: 4, precision: "fp32" })).rejects.toThrow(/uses fp32 but this pipeline loaded bf16, int8 weights; load it with precisions \[fp32, bf16, int8\]/);
      await expect(pipe.generate({ prompt: "x", steps: 4 })).rejects.toThrow(PipelineError);
      await expect(pipe.generate({ prompt: "x", steps: 4, precision: "mixed:3" })).rejects.toThrow(/use K <= 2/);
      expect(pipe.supportsPrecision("mixed:5")).toBe(true);
      expect(pipe.supportsPrecision("fp32")).toBe(false);
    } finally {
      pipe.close();
    }
  });

  it("stepq sensitivity: a per-step INT8 error curve and a K", async () => {
    const r = await runSensitivity({ model, steps: 4, prompts: ["a photo of a coat"], guidance: 4, ref: "bf16", target: 0.05, seed0: 0, calibration: file, threads: 2 });
    expect(r.errors.length).toBe(4);
    for (const e of r.errors) expect(e > 0 && e < 1).toBe(true);
    expect(r.recommended_k).toBeGreaterThanOrEqual(0);
    expect(r.recommended_k).toBeLessThanOrEqual(2);
    expect(r.int8_steps).toBe(4 - 2 * r.recommended_k);
  });

  it("stepq calibrate: writes the file, prompts from a file, usage errors", async () => {
    const prompts = path.join(tmp, "prompts.txt");
    fs.writeFileSync(prompts, "# calibration prompts\na photo of a coat\n\na photo of a sandal\n");
    expect(await readPromptsFile(prompts)).toEqual(["a photo of a coat", "a photo of a sandal"]);
    const out = path.join(tmp, "cli.json");
    expect(await calibrateCli(["--model", model, "--prompts", prompts, "--steps", "1", "--threads", "1", "--observer", "minmax", "--out", out, "-q"])).toBe(0);
    const c = await readCalibration(out);
    expect(c).toMatchObject({ prompts: 2, steps: 1, unetCalls: 2, observer: { type: "minmax" } });
    // --observer ema: torch's MovingAverageMinMaxObserver constant (averaging_constant 0.01) unless --momentum
    const ema = path.join(tmp, "ema.json");
    expect(await calibrateCli(["--model", model, "--prompts", prompts, "--steps", "1", "--threads", "1", "--observer", "ema", "--out", ema, "-q"])).toBe(0);
    expect((await readCalibration(ema)).observer).toMatchObject({ type: "ema-minmax", momentum: 0.99 });
    expect(await calibrateCli(["--model", model, "--prompts", prompts, "--steps", "1", "--threads", "1", "--observer", "ema", "--momentum", "0.9", "--out", ema, "-q"])).toBe(0);
    expect((await readCalibration(ema)).observer).toMatchObject({ type: "ema-minmax", momentum: 0.9 });
    // --observer mse: min/max pass, histogram pass; ranges within the extremes, clipped where it pays
    const mse = path.join(tmp, "mse.json");
    expect(await calibrateCli(["--model", model, "--prompts", prompts, "--steps", "1", "--threads", "1", "--observer", "mse", "--out", mse, "-q"])).toBe(0);
    const m = await readCalibration(mse);
    expect(m).toMatchObject({ unetCalls: 2, observer: { type: "mse", bins: 2048 } });
    expect(Object.keys(m.layers)).toEqual(Object.keys(c.layers));
    let clipped = 0;
    for (const [k, r] of Object.entries(m.layers)) {
      expect(r.min).toBeGreaterThanOrEqual(Math.min(0, c.layers[k].min));
      expect(r.max).toBeLessThanOrEqual(Math.max(0, c.layers[k].max));
      expect([r.absMin, r.absMax]).toEqual([c.layers[k].absMin, c.layers[k].absMax]);
      if (r.max - r.min < 0.99 * (c.layers[k].max - c.layers[k].min)) clipped++;
    }
    expect(clipped).toBeGreaterThan(0);
    // per step: each timestep's range is searched in its own histogram (global bins), within a bin of that timestep's min/max
    expect(await calibrateCli(["--model", model, "--prompts", prompts, "--steps", "2", "--threads", "1", "--observer", "mse", "--per-step", "--out", mse, "-q"])).toBe(0);
    expect(await calibrateCli(["--model", model, "--prompts", prompts, "--steps", "2", "--threads", "1", "--per-step", "--out", out, "-q"])).toBe(0);
    const [ms, mm] = [await readCalibration(mse), await readCalibration(out)];
    expect(ms.timesteps).toEqual(mm.timesteps);
    for (const [k, r] of Object.entries(ms.layers))
      r.steps!.forEach((sr, i) => {
        expect(sr.min).toBeGreaterThanOrEqual(Math.min(0, mm.layers[k].steps![i].min) - (mm.layers[k].max - mm.layers[k].min) / 1024);
        expect(sr.max).toBeLessThanOrEqual(Math.max(0, mm.layers[k].steps![i].max) + (mm.layers[k].max - mm.layers[k].min) / 1024);
      });
    await expect(calibrateCli(["--model", model, "--observer", "ema", "--per-step", "--out", mse])).rejects.toThrow(/--observer ema does not apply/);
    await expect(calibrateCli(["--model", model, "--momentum", "0.9", "--out", out])).rejects.toThrow(/--observer ema only/);
    await expect(calibrateCli(["--model", model, "--n", "2", "--prompts", prompts])).rejects.toThrow(/not both/);
    await expect(calibrateCli(["--model", model, "--observer", "avg", "--out", out])).rejects.toThrow(UsageError);
    await expect(calibrateCli(["--model", model, "--out", "/nonexistent/x.json"])).rejects.toThrow(/does not exist/);
  });
});
