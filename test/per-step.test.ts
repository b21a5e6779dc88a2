// Per-timestep INT8 activation ranges (stepq calibrate --per-step): the observer's per-step running
// min/max, the file format (round trip, validation, version-1 files without per-step fields), the selection
// of the nearest calibrated timestep, INT8 layers re-prepared for another range being bit-identical to layers
// prepared with that range, and a small per-step calibration + generation of fashion-sd-tiny.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { sharedDir } from "../src/io/places.ts";
import { calibrationJson, hasPerStepRanges, MinMaxObserver, readCalibration, validateCalibration, writeCalibration, type Calibration } from "../src/models/calibration.ts";
import { createPrecisionContext, nearestTimestepIndex, setCallTimestep } from "../src/models/precision.ts";
import { actParamsFromRange } from "../src/nn/quant.ts";
import { conv2dInt8, linearInt8, prepareConv2dInt8, prepareLinearInt8, setInt8ActParams, type ConvWeightInt8 } from "../src/nn/int8.ts";
import { linear, type LinearWeightSwitch } from "../src/nn/linear.ts";
import { conv2d, type ConvWeightSwitch } from "../src/nn/conv.ts";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { calibrate } from "../weights-tools/calibrate.ts";
import { defaultCalibrationPrompts } from "../src/tools/prompts.ts";
import { run as calibrateCli } from "../src/cli/calibrate.ts";
import { UsageError } from "../src/cli/args.ts";

const model = path.join(sharedDir(), "models", "fashion-sd-tiny");

function randArray(n: number, seed: number, lo: number, hi: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((hi - lo) * s) / 4294967296;
  });
}

function sameBits(a: Float32Array | Int32Array, b: Float32Array | Int32Array): boolean {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return ua.every((v, i) => v === ub[i]);
}

function baseCalibration(layers: Calibration["layers"], extra: Partial<Calibration> = {}): Calibration {
  return { format: "stepq-calibration", version: 1, model: "m", steps: 2, guidance: 4, scheduler: "pndm", prompts: 1, unetCalls: 3, seed0: 0, observer: { type: "minmax", per: "UNet call" }, actQmax: 127, created: "", layers, ...extra };
}

describe("per-step observer", () => {
  it("running min/max per timestep, in the order first seen; the global range as without per-step", async () => {
    const o = new MinMaxObserver("minmax", 0.99, true);
    const plain = new MinMaxObserver("minmax");
    const calls: [number, number, number][] = [[981, -1, 2], [961, -3, 1], [961, -2, 4], [981, -0.5, 3]];
    for (const [t, mn, mx] of calls) {
      o.record("a", mn, mx);
      o.endCall(t);
      plain.record("a", mn, mx);
      plain.endCall();
    }
    expect(o.timesteps()).toEqual([981, 961]);
    expect(o.layers().a.steps).toEqual([{ min: -1, max: 3 }, { min: -3, max: 4 }]);
    const { steps, ...global } = o.layers().a;
    void steps;
    expect(global).toEqual(plain.layers().a);
    expect(plain.timesteps()).toBeNull();
    expect(plain.layers().a.steps).toBeUndefined();
    o.record("a", 0, 1);
    expect(() => o.endCall()).toThrow(/needs the call's timestep/);
    expect(() => new MinMaxObserver("ema-minmax", 0.99, true)).toThrow(/running min\/max/);
    // a layer missing at one timestep cannot be written
    const g = new MinMaxObserver("minmax", 0.99, true);
    g.record("a", 0, 1);
    g.record("b", 0, 1);
    g.endCall(1);
    g.record("a", 0, 1);
    g.endCall(2);
    expect(() => g.layers()).toThrow(/layer b was not observed at timestep 2/);
  });
});

describe("per-step calibration file", () => {
  const perStep = baseCalibration(
    { a: { min: -3, max: 4, absMin: -3, absMax: 4, count: 3, steps: [{ min: -1, max: 2 }, { min: -3, max: 4 }] }, b: { min: 0, max: 1, steps: [{ min: 0, max: 1 }, { min: 0, max: 0.5 }] } },
    { timesteps: [981, 961] },
  );
  let tmp: string;
  beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-perstep-"))));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("round trip; each per-step array on one line", async () => {
    const f = path.join(tmp, "c.json");
    writeCalibration(f, perStep);
    expect(await readCalibration(f)).toEqual(perStep);
    expect(hasPerStepRanges(await readCalibration(f))).toBe(true);
    const text = fs.readFileSync(f, "utf8");
    expect(text).toContain('\n "timesteps": [981,961]\n');
    expect(text).toContain('"steps": [{"min":-1,"max":2},{"min":-3,"max":4}]');
    expect(JSON.parse(calibrationJson(perStep))).toEqual(perStep);
  });

  it("version-1 files without per-step fields still load (the shipped calibration)", async () => {
    const shipped = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "models", "fashion-sd-tiny", "unet", "stepq-calibration.json");
    const c = await readCalibration(shipped);
    expect(c.version).toBe(1);
    expect(hasPerStepRanges(c)).toBe(false);
    expect(Object.keys(c.layers).length).toBeGreaterThan(100);
    // and a file written without per-step ranges has none
    const f = path.join(tmp, "static.json");
    const { timesteps, ...rest } = perStep;
    void timesteps;
    const plain = { ...rest, layers: { a: { min: -3, max: 4 } } };
    writeCalibration(f, plain);
    expect(await readCalibration(f)).toEqual(plain);
  });

  it("validation names the problem", async () => {
    const v = (c: unknown) => () => validateCalibration(c, "f");
    expect(v({ ...perStep, timesteps: [] })).toThrow(/"timesteps" must be a non-empty array/);
    expect(v({ ...perStep, timesteps: [981, 981] })).toThrow(/lists a timestep twice/);
    expect(v({ ...perStep, timesteps: [981, 961, 941] })).toThrow(/layer a needs "steps" with one range per timestep \(3\), has 2/);
    expect(v({ ...perStep, layers: { a: { min: 0, max: 1, steps: [{ min: 0, max: 1 }, { min: 2, max: 1 }] } } })).toThrow(/layer a has a bad range at timestep 961/);
    expect(v({ ...perStep, timesteps: undefined })).toThrow(/layer a has per-step "steps" but the file has no "timesteps"/);
  });

  it("selection: the exact timestep, else the nearest (ties: the one listed first)", async () => {
    const ts = [981, 961, 941, 21, 1];
    expect(nearestTimestepIndex(ts, 961)).toBe(1);
    expect(nearestTimestepIndex(ts, 960)).toBe(1);
    expect(nearestTimestepIndex(ts, 951)).toBe(1); // tie between 961 and 941
    expect(nearestTimestepIndex(ts, 999)).toBe(0);
    expect(nearestTimestepIndex(ts, 0)).toBe(4);
    expect(nearestTimestepIndex(ts, 500)).toBe(2);
    expect(nearestTimestepIndex([10.5, 3.25], 3.3)).toBe(1);
    const ctx = createPrecisionContext(["bf16", "int8"]);
    setCallTimestep(ctx, [961, 961]);
    expect(ctx.stepIndex).toBe(-1); // no per-step table: global ranges
    ctx.stepTimesteps = ts;
    setCallTimestep(ctx, [940, 940]);
    expect(ctx.stepIndex).toBe(2);
    ctx.current = "bf16";
    setCallTimestep(ctx, [961, 941]);
    expect(ctx.stepIndex).toBe(-1);
    ctx.current = "int8";
    expect(() => setCallTimestep(ctx, [961, 941])).toThrow(/one timestep per UNet call, got 961, 941/);
  });
});

describe("INT8 layers re-prepared for another range", () => {
  let engines: Engine[];
  beforeAll(async () => {
    engines = [await Engine.create({ simd: "relaxed", threads: 2, memoryBytes: 64 << 20 }), await Engine.create({ simd: "baseline", threads: 1, memoryBytes: 64 << 20 })];
  });
  afterAll(() => engines?.forEach((e) => e.close()));

  const ranges: [number, number][] = [[-0.7, 1.5], [-3, 0.4], [0, 2], [-0.2, 0.1]];

  it("linear and conv: bit-identical to a layer prepared with that range, in any order, both builds", async () => {
    for (const eng of engines) {
      const M = 13, K = 37, N = 21;
      const w = randArray(N * K, 1, -0.3, 0.3);
      const b = randArray(N, 2, -0.5, 0.5);
      const x = eng.fromArray(randArray(M * K, 3, -2.5, 1.8), [M, K]);
      const B = 2, H = 5, W = 6, cin = 7, cout = 10;
      const cwF = randArray(cout * cin * 9, 4, -0.3, 0.3);
      const cb = randArray(cout, 5, -0.5, 0.5);
      const xc = eng.fromArray(randArray(B * H * W * cin, 6, -2, 2.2), [B, H, W, cin]);
      const lin = prepareLinearInt8(eng, w, b, N, K, actParamsFromRange(-1, 1));
      const conv = prepareConv2dInt8(eng, cwF, cb, { cout, cin, kh: 3, kw: 3 }, { padding: 1 }, actParamsFromRange(-1, 1));
      for (const [lo, hi] of [...ranges, ...ranges.slice().reverse()]) {
        const act = actParamsFromRange(lo, hi);
        setInt8ActParams(lin, act);
        setInt8ActParams(conv, act);
        const lin2 = prepareLinearInt8(eng, w, b, N, K, act);
        const conv2 = prepareConv2dInt8(eng, cwF, cb, { cout, cin, kh: 3, kw: 3 }, { padding: 1 }, act);
        expect(lin.act).toEqual(lin2.act);
        expect(sameBits(lin.corr.i32(), lin2.corr.i32()) && sameBits(lin.scale.f32(), lin2.scale.f32())).toBe(true);
        expect(Buffer.from(conv.padBuf.u8()).equals(Buffer.from(conv2.padBuf.u8()))).toBe(true);
        expect(sameBits(linearInt8(x, lin).f32(), linearInt8(x, lin2).f32()), `${eng.simd} linear [${lo}, ${hi}]`).toBe(true);
        expect(sameBits(conv2dInt8(xc, conv).f32(), conv2dInt8(xc, conv2).f32()), `${eng.simd} conv [${lo}, ${hi}]`).toBe(true);
      }
      expect(() => setInt8ActParams(lin, actParamsFromRange(-1, 1, 255))).toThrow(/prepared for qmax 127/);
    }
  });

  it("a switch weight runs the range of ctx.stepIndex (global when -1)", async () => {
    const eng = engines[0];
    const M = 6, K = 20, N = 9;
    const w = randArray(N * K, 7, -0.3, 0.3);
    const x = eng.fromArray(randArray(M * K, 8, -2, 2), [M, K]);
    const global = actParamsFromRange(-3, 3);
    const steps = ranges.map(([lo, hi]) => actParamsFromRange(lo, hi));
    const ctx = createPrecisionContext(["int8"]);
    ctx.stepTimesteps = [900, 600, 300, 1];
    const sw: LinearWeightSwitch = { kind: "switch", name: "l", out: N, inF: K, ctx, variants: { int8: prepareLinearInt8(eng, w, null, N, K, global) }, int8Steps: { global, steps } };
    const direct = (act: typeof global) => linearInt8(x, prepareLinearInt8(eng, w, null, N, K, act)).f32();
    for (const [t, want] of [[600, steps[1]], [2, steps[3]], [900, steps[0]], [-1, global]] as const) {
      if (t === -1) ctx.stepIndex = -1;
      else setCallTimestep(ctx, [t]);
      expect(sameBits(linear(x, sw).f32(), direct(want)), `t=${t}`).toBe(true);
    }
    // convs likewise (padding buffer included)
    const cin = 5, cout = 6;
    const cw = randArray(cout * cin * 9, 9, -0.3, 0.3);
    const xc = eng.fromArray(randArray(1 * 4 * 4 * cin, 10, -2, 2), [1, 4, 4, cin]);
    const cs: ConvWeightSwitch = {
      kind: "switch", name: "c", cout, cin, kh: 3, kw: 3, stride: 1, padding: [1, 1, 1, 1], ctx,
      variants: { int8: prepareConv2dInt8(eng, cw, null, { cout, cin, kh: 3, kw: 3 }, { padding: 1 }, global) },
      int8Steps: { global, steps },
    };
    setCallTimestep(ctx, [290]);
    const want = conv2dInt8(xc, prepareConv2dInt8(eng, cw, null, { cout, cin, kh: 3, kw: 3 }, { padding: 1 }, steps[2]) as ConvWeightInt8).f32();
    expect(sameBits(conv2d(xc, cs).f32(), want)).toBe(true);
    expect((cs.variants.int8 as ConvWeightInt8).act.zeroPoint).toBe(actParamsFromRange(...ranges[2]).zeroPoint);
  });
});

describe("per-step calibration of fashion-sd-tiny", () => {
  let tmp: string;
  let cal: Calibration;
  let file: string;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-perstep-e2e-"));
    file = path.join(tmp, "per-step.json");
    cal = await calibrate({ model, prompts: defaultCalibrationPrompts(model, 2), steps: 3, guidance: 4, threads: 2, perStep: true });
    writeCalibration(file, cal);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("one range per layer and timestep; their union is the global range", async () => {
    // PNDM, 3 steps: 4 UNet calls per prompt at 3 distinct timesteps (the second one runs twice)
    expect(cal.unetCalls).toBe(8);
    expect(cal.timesteps!.length).toBe(3);
    expect(await readCalibration(file)).toEqual(cal);
    for (const [k, r] of Object.entries(cal.layers)) {
      expect(r.steps!.length, k).toBe(3);
      expect(Math.min(...r.steps!.map((s) => s.min)), k).toBe(r.min);
      expect(Math.max(...r.steps!.map((s) => s.max)), k).toBe(r.max);
    }
    // the ranges do drift with the timestep: some layer's step range is clearly narrower than its global one
    const ratios = Object.values(cal.layers).map((r) => Math.min(...r.steps!.map((s) => s.max - s.min)) / (r.max - r.min));
    expect(Math.min(...ratios)).toBeLessThan(0.75);
  });

  it("generate: each call uses its timestep's range, bit-identical to a static calibration holding that range", async () => {
    const ts = cal.timesteps!;
    const j = 1;
    // one calibrated timestep only: every call takes it (nearest), so this must equal a static file with its ranges
    const single: Calibration = { ...cal, timesteps: [ts[j]], layers: Object.fromEntries(Object.entries(cal.layers).map(([k, r]) => [k, { ...r, steps: [r.steps![j]] }])) };
    const { timesteps: _ts, ...settings } = cal;
    void _ts;
    const staticJ: Calibration = { ...settings, layers: Object.fromEntries(Object.entries(cal.layers).map(([k, r]) => [k, { min: r.steps![j].min, max: r.steps![j].max }])) };
    const globalOnly: Calibration = { ...staticJ, layers: Object.fromEntries(Object.entries(cal.layers).map(([k, r]) => [k, { min: r.min, max: r.max }])) };
    const gen = async (c: Calibration | string) => {
      const pipe = await StableDiffusionPipeline.load(model, { threads: 2, precisions: ["int8"], calibration: typeof c === "string" ? c : writeTmp(c) });
      try {
        expect(pipe.unet.precisionContext!.stepTimesteps).toEqual(typeof c !== "string" && c.timesteps ? c.timesteps : typeof c === "string" ? ts : null);
        return (await pipe.generate({ prompt: "a photo of a sneaker", steps: 3, guidance: 4, seed: 5, precision: "int8" })).image;
      } finally {
        pipe.close();
      }
    };
    let n = 0;
    const writeTmp = (c: Calibration) => {
      const f = path.join(tmp, `c${n++}.json`);
      writeCalibration(f, c);
      return f;
    };
    const a = await gen(single);
    const b = await gen(staticJ);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const perStepImg = await gen(file);
    const globalImg = await gen(globalOnly);
    expect(Buffer.from(perStepImg).equals(Buffer.from(globalImg))).toBe(false);
    expect(Buffer.from(perStepImg).equals(Buffer.from(a))).toBe(false);
    // deterministic
    expect(Buffer.from(await gen(file)).equals(Buffer.from(perStepImg))).toBe(true);
  });

  it("stepq calibrate --per-step: the flag, and --observer ema is refused", async () => {
    const out = path.join(tmp, "cli.json");
    expect(await calibrateCli(["--model", model, "--n", "1", "--steps", "1", "--threads", "1", "--per-step", "--out", out, "-q"])).toBe(0);
    const c = await readCalibration(out);
    expect(c.timesteps!.length).toBe(1);
    expect(Object.values(c.layers).every((r) => r.steps!.length === 1)).toBe(true);
    await expect(calibrateCli(["--model", model, "--per-step", "--observer", "ema", "--out", out])).rejects.toThrow(UsageError);
    await expect(calibrateCli(["--model", model, "--per-step", "--observer", "ema", "--out", out])).rejects.toThrow(/--per-step records running min\/max \(or mse\) ranges per timestep; --observer ema does not apply/);
    await expect(calibrate({ model, prompts: ["x"], steps: 1, observer: "ema-minmax", perStep: true })).rejects.toThrow(/the ema observer does not apply/);
  });
});
