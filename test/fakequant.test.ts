// Fake quantisation for QAT (src/nn/backward/fakequant.ts, assembly/quantize_backward.ts):
// - the student layer's INT8 weight (quantised and packed on the engine from f32 master weights) equals what
//   prepareLinearInt8 / prepareConv2dInt8 build, and the student forward is BIT-IDENTICAL to the engine's INT8
//   ops (linearInt8 / conv2dInt8), on both builds, 7-bit and 8-bit activations, 1, 2 and 4 threads; also with
//   scales other than the engine's own (clamping), against the converted-weights route (weightsForQuantized);
// - the fake-quant kernels against the plain TS references (src/nn/reference/fakequant.ts): dequantised
//   activations bit for bit, STE masks bit for bit, LSQ sums to f32 accuracy, all bit-identical across threads;
// - the student layers' backward against the f64 dense references on the dequantised values with the masks;
// - the observers' arithmetic (torch.ao moving average in float32) and the engine's weight-scale formula.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import type { Padding4 } from "../src/nn/pack.ts";
import { conv2dInt8, linearInt8, prepareConv2dInt8, prepareLinearInt8, type ConvWeightInt8, type LinearWeightInt8 } from "../src/nn/int8.ts";
import { quantizeActRef } from "../src/nn/reference/lowp.ts";
import { actParamsFromRange, normalizeActParams, quantizeWeightsPerChannel, type ActQuantParams } from "../src/nn/quant.ts";
import { weightsForQuantized } from "../src/models/converted.ts";
import {
  OBSERVER_AVERAGING_CONSTANT,
  channelRanges,
  createFakeQuantConv2d,
  createFakeQuantLinear,
  fakeQuantActivations,
  fakeQuantActivationsBackward,
  fakeQuantConv2d,
  fakeQuantConv2dBackward,
  fakeQuantLinear,
  fakeQuantLinearBackward,
  fakeQuantWeightsBackward,
  freeFakeQuant,
  movingAverageMinMax,
  movingAverageMinMaxPerChannel,
  tensorRange,
  updateFakeQuantConv2d,
  updateFakeQuantLinear,
  weightScalesFromRanges,
  weightScalesOf,
} from "../src/nn/backward/fakequant.ts";
import { fakeQuantActBackwardRef, fakeQuantActRef, fakeQuantWeightBackwardRef, quantizeWeightsWithScalesRef } from "../src/nn/reference/fakequant.ts";
import { conv2dBackwardRef, linearBackwardRef } from "../src/nn/reference/dense-backward.ts";
import { convOutSize } from "../src/nn/reference/gemm.ts";

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function randArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}
function expectBits(got: ArrayLike<number> & { buffer: ArrayBufferLike; byteOffset: number; length: number }, want: typeof got, what: string, bytes = 4) {
  expect(got.length, `${what}: length`).toBe(want.length);
  const A = bytes === 4 ? Uint32Array : Uint8Array;
  const g = new A(got.buffer as ArrayBuffer, got.byteOffset, got.length), w = new A(want.buffer as ArrayBuffer, want.byteOffset, want.length);
  let first = -1, n = 0;
  for (let i = 0; i < g.length; i++)
    if (g[i] !== w[i]) {
      if (first < 0) first = i;
      n++;
    }
  if (n) throw new Error(`${what}: ${n} of ${g.length} differ, first at ${first}: got ${got[first]}, want ${want[first]}`);
}
function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let maxRef = 0, maxDiff = 0;
  for (let i = 0; i < ref.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
    const d = Math.abs(got[i] - ref[i]);
    maxDiff = Number.isNaN(d) ? Infinity : Math.max(maxDiff, d);
  }
  return maxDiff / (maxRef || 1);
}

const CONFIGS = [
  { simd: "relaxed", threads: 1 },
  { simd: "relaxed", threads: 2 },
  { simd: "relaxed", threads: 4 },
  { simd: "baseline", threads: 1 },
  { simd: "baseline", threads: 2 },
  { simd: "baseline", threads: 4 },
] as const;

// wq: the weights' range (default 127, int8); 63 = 7-bit weights with 8-bit activations, the calibration default
interface LinCase { M: number; inF: number; out: number; qmax: 127 | 255; wq?: 127 | 63 }
const LIN_CASES: LinCase[] = [
  { M: 9, inF: 7, out: 5, qmax: 127 },
  { M: 33, inF: 64, out: 40, qmax: 127 },
  { M: 20, inF: 33, out: 17, qmax: 255 },
  { M: 2, inF: 256, out: 64, qmax: 127 },
  { M: 21, inF: 40, out: 19, qmax: 255, wq: 63 },
  { M: 3, inF: 128, out: 24, qmax: 255, wq: 63 },
];
interface ConvCase { name: string; b: number; h: number; w: number; cin: number; cout: number; k: number; stride: number; pad: Padding4; qmax: 127 | 255; wq?: 127 | 63 }
const CONV_CASES: ConvCase[] = [
  { name: "3x3 s1 p1, cin 4 (conv_in)", b: 2, h: 6, w: 5, cin: 4, cout: 12, k: 3, stride: 1, pad: [1, 1, 1, 1], qmax: 127 },
  { name: "3x3 s1 p1, cin 10 (Cp padding)", b: 1, h: 5, w: 7, cin: 10, cout: 9, k: 3, stride: 1, pad: [1, 1, 1, 1], qmax: 127 },
  { name: "3x3 s2 p1", b: 2, h: 8, w: 6, cin: 8, cout: 16, k: 3, stride: 2, pad: [1, 1, 1, 1], qmax: 255 },
  { name: "3x3 s2 pad (0,1,0,1) (VAE downsample)", b: 1, h: 7, w: 8, cin: 5, cout: 6, k: 3, stride: 2, pad: [0, 0, 1, 1], qmax: 127 },
  { name: "1x1", b: 2, h: 3, w: 4, cin: 19, cout: 11, k: 1, stride: 1, pad: [0, 0, 0, 0], qmax: 255 },
  { name: "3x3 s1 p1, 7-bit weights", b: 2, h: 5, w: 6, cin: 12, cout: 10, k: 3, stride: 1, pad: [1, 1, 1, 1], qmax: 255, wq: 63 },
  { name: "3x3 s2 p1, 7-bit weights", b: 1, h: 8, w: 8, cin: 6, cout: 9, k: 3, stride: 2, pad: [1, 1, 1, 1], qmax: 255, wq: 63 },
];

/** Activation params for data in [lo, hi] (the engine's formula) at the given qmax and weight range. */
function actFor(lo: number, hi: number, qmax: number, wq = 127): ActQuantParams {
  return actParamsFromRange(lo, hi, qmax, wq);
}
const bits = (c: { qmax: number; wq?: number }) => `${c.qmax === 255 ? 8 : 7}-bit activations x ${(c.wq ?? 127) === 63 ? 7 : 8}-bit weights`;

/** Random weights with an all-zero channel (scale 1, q = 0). (Exact .5 ties are exercised by the quantize_weight_i8_packed test.) */
function weightsFor(out: number, per: number, seed: number): Float32Array {
  const w = randArray(out * per, seed, -0.5, 0.5);
  if (out > 2) w.fill(0, per, 2 * per);
  return w;
}

function sameInt8(a: LinearWeightInt8 | ConvWeightInt8, b: LinearWeightInt8 | ConvWeightInt8, what: string) {
  expect(a.i16Path, `${what}: i16 path`).toBe(b.i16Path);
  expectBits(a.packed.i8(), b.packed.i8(), `${what}: packed weights`, 1);
  expectBits(a.corr.i32(), b.corr.i32(), `${what}: corr`);
  expectBits(a.scale.f32(), b.scale.f32(), `${what}: epilogue scales`);
  expectBits(a.bias.f32(), b.bias.f32(), `${what}: bias`);
  expectBits(a.weightScales, b.weightScales, `${what}: weight scales`);
  expectBits(a.weightSums, b.weightSums, `${what}: weight sums`);
  expect(a.act).toEqual(b.act);
}

describe("fake quantisation: student forward = engine INT8", () => {
  const engines: Engine[] = [];
  beforeAll(async () => {
    for (const c of CONFIGS) engines.push(await Engine.create({ threads: c.threads, simd: c.simd, memoryBytes: 64 << 20 }));
  });
  afterAll(() => engines.forEach((e) => e.close()));

  for (const c of LIN_CASES)
    it(`linear M=${c.M} in=${c.inF} out=${c.out}, ${bits(c)}: same INT8 weight as prepareLinearInt8, bit-identical output`, () => {
      const seed = c.M * 31 + c.inF * 7 + c.out;
      const x = randArray(c.M * c.inF, seed, -1.5, 2.5), w = weightsFor(c.out, c.inF, seed + 1), bias = randArray(c.out, seed + 2);
      const wq = c.wq ?? 127;
      const act = actFor(-1.2, 2.0, c.qmax, wq); // some inputs clamp at both ends
      const outs: Float32Array[] = [];
      for (const e of engines)
        outs.push(
          e.scope(() => {
            const wt = e.fromArray(w, [c.out, c.inF]);
            const scales = weightScalesOf(wt, c.out, wq);
            expectBits(scales, quantizeWeightsPerChannel(w, c.out, c.inF, wq).scales, "engine weight scales");
            if (wq === 63) expect(quantizeWeightsWithScalesRef(w, c.out, c.inF, scales, 63).q.some((v) => v === 63 || v === -63)).toBe(true);
            const ref = prepareLinearInt8(e, w, bias, c.out, c.inF, act);
            const fq = createFakeQuantLinear(e, c.out, c.inF, act);
            updateFakeQuantLinear(fq, wt, e.fromArray(bias, [c.out]), scales);
            sameInt8(fq.int8, ref, `${e.simd}/${e.threads}`);
            const xt = e.fromArray(x, [c.M, c.inF]);
            const y = fakeQuantLinear(xt, fq).toArray();
            expectBits(y, linearInt8(xt, ref).toArray(), `${e.simd}/${e.threads}: student vs linearInt8`);
            freeFakeQuant(fq);
            return y;
          }),
        );
      for (const o of outs) expectBits(o, outs[0], "across builds and thread counts");
    });

  for (const c of CONV_CASES)
    it(`conv ${c.name}, ${bits(c)}: same INT8 weight as prepareConv2dInt8, bit-identical output`, () => {
      const seed = c.h * 131 + c.cin * 17 + c.cout + c.stride;
      const x = randArray(c.b * c.h * c.w * c.cin, seed, -1, 3), per = c.cin * c.k * c.k, w = weightsFor(c.cout, per, seed + 1), bias = randArray(c.cout, seed + 2);
      const wq = c.wq ?? 127;
      const act = actFor(-0.8, 2.6, c.qmax, wq);
      const g = { cout: c.cout, cin: c.cin, kh: c.k, kw: c.k, stride: c.stride, padding: c.pad };
      const outs: Float32Array[] = [];
      for (const e of engines)
        outs.push(
          e.scope(() => {
            const wt = e.fromArray(w, [c.cout, c.cin, c.k, c.k]);
            const ref = prepareConv2dInt8(e, w, bias, { cout: c.cout, cin: c.cin, kh: c.k, kw: c.k }, { stride: c.stride, padding: c.pad }, act);
            const fq = createFakeQuantConv2d(e, g, act);
            updateFakeQuantConv2d(fq, wt, e.fromArray(bias, [c.cout]), weightScalesOf(wt, c.cout, wq));
            sameInt8(fq.int8, ref, `${e.simd}/${e.threads}`);
            expectBits(fq.int8.padBuf.u8(), ref.padBuf.u8(), "zero-point padding", 1);
            const xt = e.fromArray(x, [c.b, c.h, c.w, c.cin]);
            const y = fakeQuantConv2d(xt, fq).toArray();
            expectBits(y, conv2dInt8(xt, ref).toArray(), `${e.simd}/${e.threads}: student vs conv2dInt8`);
            freeFakeQuant(fq);
            return y;
          }),
        );
      for (const o of outs) expectBits(o, outs[0], "across builds and thread counts");
    });

  it("scales other than max|w|/127 (moving-average observer, learned): bit-identical to the converted-weights route", () => {
    // the converted format stores q and scales; weightsForQuantized rebuilds f32 weights that the engine
    // re-quantises to exactly them (it needs a +-127 in each channel: scales below max|w|/127 clamp)
    for (const e of [engines[1], engines[4]]) {
      e.scope(() => {
        const M = 13, inF = 21, out = 10;
        const x = randArray(M * inF, 5, -1, 1), w = randArray(out * inF, 6, -0.4, 0.4);
        const act = actFor(-1, 1, 127);
        const base = quantizeWeightsPerChannel(w, out, inF).scales;
        const scales = base.map((s, i) => s * (0.6 + 0.03 * i));
        const q = quantizeWeightsWithScalesRef(w, out, inF, scales);
        expect(q.q.some((v) => v === 127 || v === -127)).toBe(true);
        const fq = createFakeQuantLinear(e, out, inF, act);
        updateFakeQuantLinear(fq, e.fromArray(w, [out, inF]), null, scales);
        const ref = prepareLinearInt8(e, weightsForQuantized(q.q, Float32Array.from(scales), out, inF), null, out, inF, act);
        sameInt8(fq.int8, ref, e.simd);
        const xt = e.fromArray(x, [M, inF]);
        expectBits(fakeQuantLinear(xt, fq).toArray(), linearInt8(xt, ref).toArray(), "student vs converted INT8");
        expectBits(fq.wdq.f32(), q.wdq, "dequantised weights");
        expectBits(fq.wsum.i32(), q.wsum, "weight sums");
        // changing the activation params on update rewrites the epilogue terms like the engine
        const act2 = actFor(-0.5, 1.7, 127);
        updateFakeQuantLinear(fq, e.fromArray(w, [out, inF]), null, scales, act2);
        const ref2 = prepareLinearInt8(e, weightsForQuantized(q.q, Float32Array.from(scales), out, inF), null, out, inF, act2);
        sameInt8(fq.int8, ref2, `${e.simd} act2`);
        expectBits(fakeQuantLinear(xt, fq).toArray(), linearInt8(xt, ref2).toArray(), "student vs converted INT8, new act params");
        expect(() => updateFakeQuantLinear(fq, e.fromArray(w, [out, inF]), null, scales, actFor(-1, 1, 255))).toThrow(/qmax/);
        expect(() => fakeQuantLinearBackward(xt, e.fromArray(w, [out, inF]), e.zeros([M + 1, out]), fq, { db: e.zeros([out]) })).toThrow(/same rows/);
        expect(() => updateFakeQuantLinear(fq, e.fromArray(w, [out, inF]), null, scales.map(() => 0))).toThrow(/positive/);
        freeFakeQuant(fq);
      });
    }
  });
});

describe("fake quantisation kernels vs the TS references", () => {
  const engines: Engine[] = [];
  beforeAll(async () => {
    for (const c of CONFIGS) engines.push(await Engine.create({ threads: c.threads, simd: c.simd, memoryBytes: 64 << 20 }));
  });
  afterAll(() => engines.forEach((e) => e.close()));

  /** Activations with clamped values at both ends, exact ties, signed zeros, NaN and +-Inf. */
  function activations(n: number, act: ActQuantParams, seed: number): Float32Array {
    const { scale, zeroPoint } = normalizeActParams(act);
    const x = randArray(n, seed, -3, 5);
    for (let i = 0; i < n; i += 7) x[i] = (Math.round(x[i] / scale) + 0.5) * scale; // ties
    x[1] = NaN;
    x[2] = Infinity;
    x[3] = -Infinity;
    x[4] = -0;
    x[5] = -zeroPoint * scale;
    return x;
  }

  for (const qmax of [127, 255] as const)
    it(`activations (qmax ${qmax}): x^, the STE mask and the LSQ sums; bit-identical across builds and threads`, () => {
      const n = 10007; // several chunks and a scalar tail
      const act = actFor(-1.1, 3.3, qmax);
      const x = activations(n, act, 3), dy = randArray(n, 4);
      const refY = fakeQuantActRef(x, act);
      // x^ is the dequantised u8 the INT8 op uses
      const { scale, zeroPoint } = normalizeActParams(act);
      const u8 = quantizeActRef(x, act);
      for (let i = 0; i < n; i++) expect(refY[i]).toBe(Math.fround((u8[i] - zeroPoint) * scale));
      const ref = fakeQuantActBackwardRef(x, dy, act);
      let outside = 0;
      for (let i = 0; i < n; i++) if (ref.dx[i] === 0 && x[i] === x[i]) outside++;
      expect(outside).toBeGreaterThan(n / 20); // the test exercises the clamp
      const outs = engines.map((e) =>
        e.scope(() => {
          const xt = e.fromArray(x, [n]);
          const y = fakeQuantActivations(xt, act).toArray();
          expectBits(y, refY, `${e.simd}/${e.threads}: x^`);
          const { dx, lsq } = fakeQuantActivationsBackward(xt, e.fromArray(dy, [n]), act, { lsq: true, gradScale: 1 });
          expectBits(dx.toArray(), ref.dx, `${e.simd}/${e.threads}: dx`);
          expect(Math.abs(lsq!.scale - ref.dScale)).toBeLessThan(1e-4 * (1 + Math.abs(ref.dScale)) * Math.sqrt(n));
          expect(Math.abs(lsq!.offset - ref.dOffset)).toBeLessThan(1e-5 * (1 + Math.abs(ref.dOffset)) * Math.sqrt(n));
          // accumulate, and the default gradient scale g = 1 / sqrt(numel * qmax)
          const dx2 = e.fromArray(dy, [n]);
          const r2 = fakeQuantActivationsBackward(xt, e.fromArray(dy, [n]), act, { out: dx2, accumulate: true, lsq: true });
          const d2 = dx2.toArray();
          for (let i = 0; i < n; i++) expect(d2[i]).toBe(Math.fround(dy[i] + ref.dx[i]));
          expect(r2.lsq!.scale).toBeCloseTo(lsq!.scale / Math.sqrt(n * qmax), 12);
          return [y, dx.toArray(), new Float32Array([lsq!.scale, lsq!.offset])];
        }),
      );
      for (const o of outs) for (let k = 0; k < 3; k++) expectBits(o[k], outs[0][k], "across builds and threads");
    });

  it("activations exactly on the grid: the LSQ scale gradient is the clamped values' bounds only", () => {
    const e = engines[1];
    const act = actFor(-1, 1, 127);
    const { scale, zeroPoint } = normalizeActParams(act);
    const n = 64;
    const x = Float32Array.from({ length: n }, (_, i) => (i - zeroPoint) * scale * 1.5); // multiples of scale*1.5 ...
    for (let i = 0; i < n; i += 2) x[i] = Math.fround((i - zeroPoint) * scale); // ... and exact grid points
    const dy = new Float32Array(n).fill(1);
    const ref = fakeQuantActBackwardRef(x, dy, act);
    e.scope(() => {
      const { lsq } = fakeQuantActivationsBackward(e.fromArray(x, [n]), e.fromArray(dy, [n]), act, { lsq: true, gradScale: 1 });
      expect(lsq!.scale).toBeCloseTo(ref.dScale, 3);
      expect(lsq!.offset).toBe(ref.dOffset);
    });
  });

  for (const wq of [127, 63] as const)
  it(`weights (range ${wq}): the STE mask and the per-channel LSQ sums; bit-identical across builds and threads`, () => {
    const N = 13, K = 75;
    const w = randArray(N * K, 7, -0.6, 0.6), dwq = randArray(N * K, 8);
    const base = quantizeWeightsPerChannel(w, N, K, wq).scales;
    const scales = base.map((s, i) => (i % 3 === 0 ? s : s * 0.7)); // a third exact, the rest clamp
    const ref = fakeQuantWeightBackwardRef(w, dwq, N, K, scales, wq);
    let masked = 0;
    for (let i = 0; i < N * K; i++) if (ref.dw[i] === 0) masked++;
    expect(masked).toBeGreaterThan(10);
    const outs = engines.map((e) =>
      e.scope(() => {
        const dw = e.empty([N, K]);
        const sg = fakeQuantWeightsBackward(e.fromArray(w, [N, K]), e.fromArray(dwq, [N, K]), e.fromArray(scales, [N]), dw, { lsq: true, gradScale: 1, weightQmax: wq })!;
        expectBits(dw.toArray(), ref.dw, `${e.simd}/${e.threads}: dw`);
        for (let n = 0; n < N; n++) expect(Math.abs(sg[n] - ref.dScale[n])).toBeLessThan(1e-4 * (1 + Math.abs(ref.dScale[n])));
        const dwAcc = e.fromArray(dwq, [N, K]);
        fakeQuantWeightsBackward(e.fromArray(w, [N, K]), e.fromArray(dwq, [N, K]), e.fromArray(scales, [N]), dwAcc, { accumulate: true, weightQmax: wq });
        const a = dwAcc.toArray();
        for (let i = 0; i < N * K; i++) expect(a[i]).toBe(Math.fround(dwq[i] + ref.dw[i]));
        return [dw.toArray(), sg];
      }),
    );
    for (const o of outs) for (let k = 0; k < 2; k++) expectBits(o[k], outs[0][k], "across builds and threads");
  });

  it("engine ranges (minmax_chunks_f32, both builds, 1, 2, 4 threads): tensorRange ignores NaN; per-channel ranges and scales match quantizeWeightsPerChannel", () => {
    for (const e of engines) e.scope(() => {
      const x = randArray(20000, 31, -2, 5);
      x[17] = NaN;
      x[19999] = 7;
      x[4096] = -9;
      expect(tensorRange(e.fromArray(x, [20000]))).toEqual({ min: -9, max: 7 });
      const N = 7, K = 37;
      const w = randArray(N * K, 32, -0.3, 0.2);
      w.fill(0, K, 2 * K);
      const r = channelRanges(e.fromArray(w, [N, K]), N);
      for (let n = 0; n < N; n++) {
        const row = w.subarray(n * K, (n + 1) * K);
        expect(r.min[n]).toBe(Math.min(...row));
        expect(r.max[n]).toBe(Math.max(...row));
      }
      expectBits(weightScalesFromRanges(r), quantizeWeightsPerChannel(w, N, K).scales, "scales from ranges");
      expect(weightScalesFromRanges(r)[1]).toBe(1); // all-zero channel
    });
  });

  for (const [qmax, wq] of [[127, 127], [255, 63]] as const)
  it(`quantize_weight_i8_packed, weights in [-${wq}, ${wq}]: q, q*s and sum q as the engine's quantiser (ties round half to even, clamping)`, () => {
    const e = engines[0];
    const N = 6, per = 3 * 9;
    const w = randArray(N * per, 9, -1, 1);
    const scales = Float32Array.from({ length: N }, (_, i) => 0.004 + 0.001 * i);
    for (let k = 0; k < per; k += 4) w[k] = Math.fround((Math.floor(k / 2) - 6 + 0.5) * scales[0]); // exact .5 ties in channel 0
    const ref = quantizeWeightsWithScalesRef(w, N, per, scales, wq);
    expect(ref.q.some((v) => v === wq) && ref.q.some((v) => v === -wq)).toBe(true); // the clamp is exercised
    e.scope(() => {
      const fq = createFakeQuantConv2d(e, { cout: N, cin: 3, kh: 3, kw: 3, stride: 1, padding: [1, 1, 1, 1] }, actFor(-1, 1, qmax, wq));
      updateFakeQuantConv2d(fq, e.fromArray(w, [N, 3, 3, 3]), null, scales);
      expectBits(fq.wdq.f32(), ref.wdq, "q * s");
      expectBits(fq.wsum.i32(), ref.wsum, "sum q");
      freeFakeQuant(fq);
    });
  });
});

describe("student layers' backward (masked STE) vs the dense references on dequantised values", () => {
  const engines: Engine[] = [];
  beforeAll(async () => {
    for (const c of CONFIGS) engines.push(await Engine.create({ threads: c.threads, simd: c.simd, memoryBytes: 64 << 20 }));
  });
  afterAll(() => engines.forEach((e) => e.close()));

  function masked(g: Float64Array, mask: Float32Array): Float64Array {
    return g.map((v, i) => (mask[i] !== 0 ? v : 0));
  }

  for (const [qmax, wq] of [[127, 127], [255, 63]] as const)
  it(`linear, ${bits({ qmax, wq })}: dx = mask_x (dY W^), dw = mask_w (dY^T x^), db, LSQ grads; bit-identical across threads`, () => {
    const M = 24, inF = 18, out = 14;
    const x = randArray(M * inF, 11, -2, 3), w = randArray(out * inF, 12, -0.5, 0.5), dy = randArray(M * out, 13);
    const act = actFor(-1, 2, qmax, wq);
    const scales = quantizeWeightsPerChannel(w, out, inF, wq).scales.map((s, i) => (i % 2 ? s * 0.8 : s));
    const q = quantizeWeightsWithScalesRef(w, out, inF, scales, wq);
    const xq = fakeQuantActRef(x, act);
    const ref = linearBackwardRef(xq, q.wdq, dy, M, inF, out);
    const maskX = fakeQuantActBackwardRef(x, new Float32Array(x.length).fill(1), act).dx;
    const maskW = fakeQuantWeightBackwardRef(w, new Float32Array(w.length).fill(1), out, inF, scales, wq).dw;
    const outs = engines.map((e) =>
      e.scope(() => {
        const fq = createFakeQuantLinear(e, out, inF, act);
        const wt = e.fromArray(w, [out, inF]);
        updateFakeQuantLinear(fq, wt, null, scales);
        const dw = e.empty([out, inF]), db = e.empty([out]);
        const r = fakeQuantLinearBackward(e.fromArray(x, [M, inF]), wt, e.fromArray(dy, [M, out]), fq, { dw, db, lsq: true });
        freeFakeQuant(fq);
        expect(relErr(r.dx!.toArray(), masked(ref.dx, maskX))).toBeLessThanOrEqual(1e-4);
        expect(relErr(dw.toArray(), masked(ref.dw, maskW))).toBeLessThanOrEqual(1e-4);
        expect(relErr(db.toArray(), ref.db)).toBeLessThanOrEqual(1e-4);
        expect(r.weightScaleGrads!.length).toBe(out);
        return [r.dx!.toArray(), dw.toArray(), db.toArray(), r.weightScaleGrads!, new Float32Array([r.act!.scale, r.act!.offset])];
      }),
    );
    for (let t = 1; t < outs.length; t++)
      if (CONFIGS[t].simd === CONFIGS[0].simd) for (let k = 0; k < 5; k++) expectBits(outs[t][k], outs[0][k], `output ${k}: ${CONFIGS[t].threads} threads vs 1`);
    // LSQ grads agree with the references applied to the dequantised-weight gradient
    const dwq = Float32Array.from(ref.dw);
    const wRef = fakeQuantWeightBackwardRef(w, dwq, out, inF, scales, wq);
    const g = 1 / Math.sqrt(inF * wq);
    for (let n = 0; n < out; n++) expect(Math.abs(outs[0][3][n] - wRef.dScale[n] * g)).toBeLessThan(1e-4 * (1 + Math.abs(wRef.dScale[n] * g)));
    const aRef = fakeQuantActBackwardRef(x, Float32Array.from(ref.dx), act);
    const ga = 1 / Math.sqrt(M * inF * qmax);
    expect(Math.abs(outs[0][4][0] - aRef.dScale * ga)).toBeLessThan(1e-4 * (1 + Math.abs(aRef.dScale * ga)));
    expect(Math.abs(outs[0][4][1] - aRef.dOffset * ga)).toBeLessThan(1e-4 * (1 + Math.abs(aRef.dOffset * ga)));
  });

  for (const c of [CONV_CASES[0], CONV_CASES[3], CONV_CASES[2]])
    it(`conv ${c.name}: dx, dw, db (accumulate) vs the references; bit-identical across threads`, () => {
      const s = { batch: c.b, h: c.h, w: c.w, cin: c.cin, cout: c.cout, kh: c.k, kw: c.k, stride: c.stride, padding: c.pad };
      const [ho, wo] = convOutSize(c.h, c.w, c.k, c.k, c.stride, c.pad);
      const per = c.cin * c.k * c.k;
      const x = randArray(c.b * c.h * c.w * c.cin, 21, -1, 3), w = randArray(c.cout * per, 22, -0.5, 0.5), dy = randArray(c.b * ho * wo * c.cout, 23);
      const dw0 = randArray(c.cout * per, 24), db0 = randArray(c.cout, 25);
      const act = actFor(-0.5, 2.2, c.qmax);
      const scales = quantizeWeightsPerChannel(w, c.cout, per).scales.map((v, i) => (i % 3 ? v : v * 0.75));
      const q = quantizeWeightsWithScalesRef(w, c.cout, per, scales);
      const ref = conv2dBackwardRef(fakeQuantActRef(x, act), q.wdq, dy, s);
      const maskX = fakeQuantActBackwardRef(x, new Float32Array(x.length).fill(1), act).dx;
      const maskW = fakeQuantWeightBackwardRef(w, new Float32Array(w.length).fill(1), c.cout, per, scales).dw;
      const g = { cout: c.cout, cin: c.cin, kh: c.k, kw: c.k, stride: c.stride, padding: c.pad };
      const outs = engines.map((e) =>
        e.scope(() => {
          const fq = createFakeQuantConv2d(e, g, act);
          const wt = e.fromArray(w, [c.cout, c.cin, c.k, c.k]);
          updateFakeQuantConv2d(fq, wt, null, scales);
          const dw = e.fromArray(dw0, [c.cout, c.cin, c.k, c.k]), db = e.fromArray(db0, [c.cout]);
          const r = fakeQuantConv2dBackward(e.fromArray(x, [c.b, c.h, c.w, c.cin]), wt, e.fromArray(dy, [c.b, ho, wo, c.cout]), fq, { dw, db, accumulate: true });
          freeFakeQuant(fq);
          expect(r.dx!.shape).toEqual([c.b, c.h, c.w, c.cin]);
          expect(relErr(r.dx!.toArray(), masked(ref.dx, maskX))).toBeLessThanOrEqual(1e-4);
          expect(relErr(dw.toArray(), masked(ref.dw, maskW).map((v, i) => v + dw0[i]))).toBeLessThanOrEqual(1e-4);
          expect(relErr(db.toArray(), ref.db.map((v, i) => v + db0[i]))).toBeLessThanOrEqual(1e-4);
          return [r.dx!.toArray(), dw.toArray(), db.toArray()];
        }),
      );
      for (let t = 1; t < outs.length; t++)
        if (CONFIGS[t].simd === CONFIGS[0].simd) for (let k = 0; k < 3; k++) expectBits(outs[t][k], outs[0][k], `output ${k}: ${CONFIGS[t].threads} threads vs 1`);
    });
});

describe("observers (torch.ao moving average)", () => {
  it("moving-average min/max in float32 with averaging constant 0.01 (torch.ao)", () => {
    expect(OBSERVER_AVERAGING_CONSTANT).toBe(0.01);
    let r = movingAverageMinMax(null, { min: -1, max: 2 });
    expect(r).toEqual({ min: -1, max: 2 });
    r = movingAverageMinMax(r, { min: -3, max: 1 });
    // torch: min + 0.01 * (cur - min) in float32: -1 + 0.01 * -2 = -1.02, 2 + 0.01 * -1 = 1.99
    expect(r.min).toBe(Math.fround(-1.02));
    expect(r.max).toBe(Math.fround(1.99));
    // a constant observation converges geometrically: after n steps, 0.99^n of the gap remains
    let s = { min: 0, max: 0 };
    for (let i = 0; i < 100; i++) s = movingAverageMinMax(s, { min: -1, max: 1 });
    expect(s.max).toBeCloseTo(1 - 0.99 ** 100, 5);
    expect(s.min).toBeCloseTo(-(1 - 0.99 ** 100), 5);
    const pc = movingAverageMinMaxPerChannel({ min: new Float32Array([-1, 0]), max: new Float32Array([1, 4]) }, { min: new Float32Array([-2, -1]), max: new Float32Array([3, 2]) }, 0.5);
    expect(Array.from(pc.min)).toEqual([-1.5, -0.5]);
    expect(Array.from(pc.max)).toEqual([2, 3]);
  });
});
