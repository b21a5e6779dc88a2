// Per-step precision: the schedule parser (fp32 | bf16 | int8 | mixed:K | bf16*5,int8*40,...), the mapping
// of UNet calls to denoising steps (PNDM runs N + 1 calls), and a UNet holding several precisions at once
// (unet-sd15-tiny golden): bf16 within ~1e-2 of fp32, calibrated int8 within a looser bound, switching
// between calls, each precision deterministic, and the errors for precisions not loaded / not calibrated.
import { loadUNet } from "../src/models/loader.ts";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { UNet } from "../src/models/unet.ts";
import { openGolden, maxAbsRelToMax } from "../src/io/golden.ts";
import { sharedDir } from "../src/io/places.ts";
import { tensorFromNCHW, tensorToNCHW } from "../src/models/layout.ts";
import { CALIBRATION_FORMAT, MinMaxObserver, MissingCalibrationError, type Calibration } from "../src/models/calibration.ts";
import { weightsForQuantized } from "../src/models/converted.ts";
import { callSteps, formatSchedule, parsePrecisionSchedule, parsePrecisionSpec, precisionsForSpec, PrecisionScheduleError } from "../src/pipeline/schedule.ts";
import { createScheduler } from "../src/pipeline/schedulers.ts";
import { quantizeWeightsPerChannel } from "../src/nn/quant.ts";
import { Rng } from "../src/runtime/random.ts";
import { recommendK } from "../src/tools/sensitivity.ts";

describe("precision schedules", () => {
  it("fp32 / bf16 / int8 / mixed:K / lists", async () => {
    expect(parsePrecisionSpec("bf16", 3)).toEqual(["bf16", "bf16", "bf16"]);
    expect(parsePrecisionSpec(" INT8 ", 2)).toEqual(["int8", "int8"]);
    expect(parsePrecisionSpec("mixed:2", 6)).toEqual(["bf16", "bf16", "int8", "int8", "bf16", "bf16"]);
    expect(parsePrecisionSpec("mixed:0", 3)).toEqual(["int8", "int8", "int8"]);
    expect(parsePrecisionSpec("mixed:2", 4)).toEqual(["bf16", "bf16", "bf16", "bf16"]);
    expect(parsePrecisionSpec("bf16*2,int8*3,fp32", 6)).toEqual(["bf16", "bf16", "int8", "int8", "int8", "fp32"]);
    const m5 = parsePrecisionSpec("mixed:5", 50);
    expect(formatSchedule(m5)).toBe("bf16*5,int8*40,bf16*5");
    expect(parsePrecisionSpec("bf16*5,int8*40,bf16*5", 50)).toEqual(m5);
    expect(formatSchedule(parsePrecisionSpec("fp32", 7))).toBe("fp32");
    expect(precisionsForSpec("mixed:5")).toEqual(["bf16", "int8"]);
    expect(precisionsForSpec("mixed:25", 50)).toEqual(["bf16"]);
    expect(precisionsForSpec("int8*3,fp32*2")).toEqual(["fp32", "int8"]);
  });

  it("clear errors", async () => {
    const err = (spec: string, steps: number) => {
      try {
        parsePrecisionSpec(spec, steps);
      } catch (e) {
        expect(e).toBeInstanceOf(PrecisionScheduleError);
        return (e as Error).message;
      }
      throw new Error(`${spec} with ${steps} steps did not throw`);
    };
    expect(err("mixed:30", 50)).toMatch(/mixed:30 needs at least 2\*30 = 60 steps .* the run has 50; use K <= 25/);
    expect(err("int9*3", 3)).toMatch(/unknown precision "int9" in "int9\*3"/);
    expect(err("bf16*5,int8*40,bf16*4", 50)).toMatch(/covers 49 steps but the run has 50/);
    expect(err("bf16*5,int8*40,bf16*6", 50)).toMatch(/covers 51 steps/);
    expect(err("mixed:-1", 50)).toMatch(/K must be a non-negative integer/);
    expect(err("mixed:x", 50)).toMatch(/K must be a non-negative integer/);
    expect(err("frob", 50)).toMatch(/unknown precision "frob" \(expected fp32, bf16, int8/);
    expect(err("bf16*0,int8*2", 2)).toMatch(/must be a positive integer/);
    expect(err("bf16*2,,int8", 3)).toMatch(/empty entry/);
    expect(err("", 3)).toMatch(/empty precision/);
  });

  it("PNDM's extra UNet call runs at its denoising step's precision", async () => {
    const pndm = createScheduler("pndm", { _class_name: "PNDMScheduler", skip_prk_steps: true, steps_offset: 1, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 });
    pndm.setTimesteps(50);
    expect(pndm.timesteps.length).toBe(51);
    const steps = callSteps(pndm.timesteps, 50);
    expect(steps.slice(0, 5)).toEqual([0, 1, 1, 2, 3]);
    expect(steps[50]).toBe(49);
    const calls = parsePrecisionSchedule("mixed:5", 50, pndm.timesteps);
    expect(calls.length).toBe(51);
    // steps 1-5 bf16 = calls 0-5 (step 2 is two calls), steps 6-45 int8 = calls 6-45, steps 46-50 bf16
    expect(calls.filter((p) => p === "bf16").length).toBe(11);
    expect(calls.slice(0, 6).every((p) => p === "bf16") && calls[6] === "int8" && calls[45] === "int8" && calls[46] === "bf16").toBe(true);
    // one call per step: identity
    expect(callSteps([900, 800, 700], 3)).toEqual([0, 1, 2]);
    expect(parsePrecisionSchedule("mixed:1", 3)).toEqual(["bf16", "int8", "bf16"]);
  });
});

describe("sensitivity recommendation", () => {
  it("smallest K whose INT8 steps are all within the target", async () => {
    expect(recommendK([0.2, 0.04, 0.03, 0.04, 0.3], 0.05)).toBe(1);
    expect(recommendK([0.2, 0.06, 0.03, 0.04, 0.3], 0.05)).toBe(2);
    expect(recommendK([0.01, 0.01, 0.01], 0.05)).toBe(0);
    expect(recommendK([0.1, 0.1, 0.1, 0.1], 0.05)).toBe(2); // nothing fits: all BF16
  });
});

describe("int8 weights from stored q and scales", () => {
  it("weightsForQuantized reproduces the per-channel quantisation exactly", async () => {
    const rng = new Rng(3);
    const out = 37, per = 29;
    const w = rng.normal(out * per).map((v, i) => (i % 7 === 0 ? v * 1e-3 : v * (1 + (i % out))));
    w.fill(0, 5 * per, 6 * per); // an all-zero channel
    const a = quantizeWeightsPerChannel(w, out, per);
    const b = quantizeWeightsPerChannel(weightsForQuantized(a.q, a.scales, out, per), out, per);
    expect(Array.from(b.scales)).toEqual(Array.from(a.scales));
    expect(Array.from(b.q)).toEqual(Array.from(a.q));
  });
});

const goldenDir = path.join(sharedDir(), "golden");
const golden = await openGolden(goldenDir, "cases");
const cases = (golden.json.cases as any[]).filter((c) => c.kind === "unet" && c.model === "unet-sd15-tiny");
const unetDir = path.join(goldenDir, "unet-sd15-tiny");

describe("UNet at a per-step precision (unet-sd15-tiny)", () => {
  let eng: Engine;
  let calibration: Calibration;
  beforeAll(async () => {
    eng = await Engine.create({ threads: 2, memoryBytes: 256 << 20 });
    // calibrate on the golden inputs
    const obs = new MinMaxObserver("minmax");
    const u = await loadUNet(eng, unetDir, { precisions: ["fp32"] });
    u.precisionContext!.observe = (name, x) => obs.observe(name, x);
    for (const c of cases)
      eng.scope(() => {
        u.forward(tensorFromNCHW(eng, golden.get(c.inputs.sample).data, golden.get(c.inputs.sample).shape), c.inputs.timestep, eng.fromArray(golden.get(c.inputs.encoder_hidden_states).data, golden.get(c.inputs.encoder_hidden_states).shape));
        obs.endCall();
      });
    calibration = { format: CALIBRATION_FORMAT, version: 1, model: unetDir, steps: 0, guidance: 0, scheduler: "", prompts: 0, unetCalls: obs.calls, seed0: 0, observer: obs.info, actQmax: 127, created: "", layers: obs.layers() };
  });
  afterAll(() => eng?.close());

  const run = (u: UNet, c: any) =>
    eng.scope(() => {
      const s = golden.get(c.inputs.sample);
      const ctx = golden.get(c.inputs.encoder_hidden_states);
      return tensorToNCHW(u.forward(tensorFromNCHW(eng, s.data, s.shape), c.inputs.timestep, eng.fromArray(ctx.data, ctx.shape))).data;
    });

  it("the calibration saw every conv/linear layer once per call", async () => {
    const names = Object.keys(calibration.layers);
    expect(names.length).toBeGreaterThan(50);
    expect(names).toContain("conv_in");
    expect(names).toContain("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k");
    for (const r of Object.values(calibration.layers)) expect(r.count).toBe(cases.length);
  });

  it("fp32 + bf16 + int8 resident: bf16 ~1e-2 of fp32, int8 looser, switching per call, each deterministic", async () => {
    const u0 = eng.stats().used;
    const plain = await loadUNet(eng, unetDir);
    const fp32Bytes = eng.stats().used - u0;
    const before = eng.stats().used;
    const u = await loadUNet(eng, unetDir, { precisions: ["int8", "bf16", "fp32"], calibration });
    const held = eng.stats().used - before;
    expect(u.precisions).toEqual(["fp32", "bf16", "int8"]);
    expect(u.precision).toBe("fp32");
    for (const c of cases) {
      const ref = golden.get(c.expected.sample).data;
      const p32 = run(plain, c);
      u.setPrecision("fp32");
      const f = run(u, c);
      expect(Array.from(f)).toEqual(Array.from(p32)); // the fp32 variant is the plain model
      u.setPrecision("bf16");
      const b = run(u, c);
      u.setPrecision("int8");
      const q = run(u, c);
      const q2 = run(u, c);
      u.setPrecision("bf16");
      const b2 = run(u, c);
      const eb = maxAbsRelToMax(b, ref);
      const eq = maxAbsRelToMax(q, ref);
      console.log(`[precision] t=${c.inputs.timestep}: bf16 ${eb.toExponential(2)}, int8 ${eq.toExponential(2)} (max_abs_rel_to_max vs diffusers fp32)`);
      expect(eb).toBeLessThan(1.5e-2);
      expect(eb).toBeGreaterThan(0); // it did run bf16
      expect(eq).toBeLessThan(0.1);
      expect(eq).toBeGreaterThan(eb);
      expect(Array.from(b)).not.toEqual(Array.from(f)); // switching changes the output
      expect(Array.from(q)).not.toEqual(Array.from(b));
      expect(Array.from(q2)).toEqual(Array.from(q));
      expect(Array.from(b2)).toEqual(Array.from(b));
    }
    // the three variants are resident together: about 1 + 1/2 + 1/4 of the fp32 weights (norms once)
    console.log(`[precision] fp32 weights ${fp32Bytes} B, fp32+bf16+int8 ${held} B (${(held / fp32Bytes).toFixed(2)}x)`);
    expect(held / fp32Bytes).toBeGreaterThan(1.5);
    expect(held / fp32Bytes).toBeLessThan(2);
  });

  it("INT8 attention (setInt8Attention): only the int8 calls change, close to f32 attention, deterministic", async () => {
    const u = await loadUNet(eng, unetDir, { precisions: ["bf16", "int8"], calibration });
    expect(u.int8Attention).toBe(false);
    for (const c of cases) {
      const ref = golden.get(c.expected.sample).data;
      u.setInt8Attention(false);
      u.setPrecision("int8");
      const q = run(u, c);
      u.setPrecision("bf16");
      const b = run(u, c);
      u.setInt8Attention(true);
      const b2 = run(u, c);
      u.setPrecision("int8");
      const qa = run(u, c);
      const qa2 = run(u, c);
      expect(Array.from(b2)).toEqual(Array.from(b)); // bf16 steps keep f32 attention
      expect(Array.from(qa)).not.toEqual(Array.from(q)); // int8 steps now run INT8 attention
      expect(Array.from(qa2)).toEqual(Array.from(qa));
      const eq = maxAbsRelToMax(q, ref), ea = maxAbsRelToMax(qa, ref);
      console.log(`[precision] t=${c.inputs.timestep}: int8 ${eq.toExponential(2)}, int8 + INT8 attention ${ea.toExponential(2)} (vs diffusers fp32)`);
      expect(ea).toBeLessThan(Math.max(2 * eq, 0.1));
    }
    u.setInt8Attention(false);
    const f = await loadUNet(eng, unetDir, { precisions: ["bf16"] });
    expect(() => f.setInt8Attention(true)).toThrow(/needs the int8 precision loaded/);
  });

  it("only the listed precisions are built; errors name what is missing", async () => {
    const u = await loadUNet(eng, unetDir, { precisions: ["bf16"] });
    expect(u.precision).toBe("bf16");
    expect(() => u.setPrecision("int8")).toThrow(/precision int8 is not loaded \(loaded: bf16\)/);
    expect(() => u.setPrecision("fp32")).toThrow(/not loaded/);
    const plain = await loadUNet(eng, unetDir);
    expect(plain.precisions).toEqual(["fp32"]);
    expect(() => plain.setPrecision("bf16")).toThrow(/load it with precisions \[bf16\]/);
    await expect(loadUNet(eng, unetDir, { precisions: ["int8"] })).rejects.toThrow(MissingCalibrationError);
    await expect(loadUNet(eng, unetDir, { precisions: ["int8"] })).rejects.toThrow(/stepq-calibration\.json does not exist; make it with: stepq calibrate/);
    // random weights: int8 only with an explicit synthetic range (benchmarks)
    await expect(UNet.fromConfig(eng, plain.config, "random", 0, { precisions: ["int8"] })).rejects.toThrow(MissingCalibrationError);
    const r = await UNet.fromConfig(eng, plain.config, "random", 0, { precisions: ["int8"], calibration: "synthetic" });
    expect(r.precision).toBe("int8");
  });
});
