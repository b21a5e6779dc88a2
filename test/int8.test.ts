// INT8 linear / conv2d kernels against the plain TS integer reference (src/nn/reference/lowp.ts).
// Everything is compared EXACTLY: the integer accumulators (raw kernel output) and the f32 outputs bit
// for bit (the epilogue is f32(acc) * scale then + bias, unfused, in kernel and reference alike), on
// both builds (relaxed dot with 7-bit activations, baseline i16 dots) and 1, 2, 4 threads.
import { describe, it, expect, afterAll, beforeAll } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { ACT_QMAX_DEFAULT, actParamsFromRange, normalizeActParams, quantizeActValue, quantizeActivations, quantizeWeightsPerChannel, roundHalfEven, type ActQuantParams } from "../src/nn/quant.ts";
import { conv2dInt8, linearInt8, prepareConv2dInt8, prepareLinearInt8 } from "../src/nn/int8.ts";
import { freeWeightTensors } from "../src/nn/pack.ts";
import type { Padding4 } from "../src/nn/pack.ts";
import { conv2dInt8Ref, linearInt8Ref, quantizeActRef } from "../src/nn/reference/lowp.ts";

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

/** Exact bitwise equality with a useful message on the first mismatch. */
function expectBits(got: Float32Array | Int32Array, want: Float32Array | Int32Array, what: string) {
  expect(got.length, `${what}: length`).toBe(want.length);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < g.length; i++)
    if (g[i] !== w[i]) throw new Error(`${what}: first mismatch at ${i}: got ${got[i]} (0x${g[i].toString(16)}), want ${want[i]} (0x${w[i].toString(16)}); ${countDiff(g, w)} of ${g.length} differ`);
}

function countDiff(a: Uint32Array, b: Uint32Array) {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

const CONFIGS = [
  { simd: "relaxed", threads: 1 },
  { simd: "relaxed", threads: 2 },
  { simd: "relaxed", threads: 4 },
  { simd: "baseline", threads: 1 },
  { simd: "baseline", threads: 2 },
  { simd: "baseline", threads: 4 },
] as const;

const engines = new Map<string, Engine>();
beforeAll(async () => {
  for (const c of CONFIGS) engines.set(`${c.simd}/${c.threads}`, await Engine.create({ simd: c.simd, threads: c.threads, memoryBytes: 96 << 20 }));
});
afterAll(() => engines.forEach((e) => e.close()));

describe("INT8 quantisation helpers", () => {
  it("round half to even", async () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001, -3.5, 7].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, 3, -4, 7]);
  });

  it("per-channel symmetric weights: scale = max|w| / 127, q = round(w / scale)", async () => {
    const w = Float32Array.from([0.5, -1, 0.25, 0.003, 0, 0, 0, 0, 2, 1, -2, 0.0079]);
    const { q, scales } = quantizeWeightsPerChannel(w, 3, 4);
    expect(Array.from(scales)).toEqual([Math.fround(1 / 127), 1, Math.fround(2 / 127)]);
    expect(Array.from(q)).toEqual([64, -127, 32, 0, 0, 0, 0, 0, 127, 64, -127, 1]);
  });

  it("activation params: 0 is exactly representable, 7-bit by default", async () => {
    expect(ACT_QMAX_DEFAULT).toBe(127);
    for (const [lo, hi] of [[-1, 3], [0.5, 2], [-4, -1], [-0.3, 0.7], [0, 0]]) {
      for (const qmax of [127, 255]) {
        const p = actParamsFromRange(lo, hi, qmax);
        const n = normalizeActParams(p);
        expect(quantizeActValue(0, n.invScale, n.zeroPoint, n.qmax)).toBe(p.zeroPoint);
        expect(p.zeroPoint).toBeGreaterThanOrEqual(0);
        expect(p.zeroPoint).toBeLessThanOrEqual(qmax);
        expect(p.scale).toBe(Math.fround(p.scale));
      }
    }
    expect(actParamsFromRange(-1, 3)).toEqual({ scale: Math.fround(4 / 127), zeroPoint: 32, qmax: 127, weightQmax: 127 });
    expect(actParamsFromRange(-1, 3, 255)).toEqual({ scale: Math.fround(4 / 255), zeroPoint: 64, qmax: 255, weightQmax: 127 });
    expect(actParamsFromRange(-1, 3, 255, 63).weightQmax).toBe(63);
    expect(() => actParamsFromRange(-1, 3, 255, 100)).toThrow(/weight qmax/);
    expect(() => actParamsFromRange(-1, 3, 200)).toThrow(/qmax/);
  });

  for (const qmax of [127, 255])
    it(`quantize_act_u8 kernel = scalar reference (qmax ${qmax}, awkward values and lengths)`, async () => {
      const special = [NaN, Infinity, -Infinity, 0, -0, 1e30, -1e30, 3.4e38];
      const act = actParamsFromRange(-1.3, 2.1, qmax);
      const n = normalizeActParams(act);
      // exact ties: (k + 0.5) * scale quantises through a tie when x * invScale lands on .5
      const ties = Array.from({ length: 40 }, (_, i) => Math.fround((i - 20 + 0.5) / n.invScale));
      for (const C of [1, 3, 4, 15, 16, 17, 45]) {
        const rows = 7;
        const x = randArray(rows * C, C, -2, 3);
        for (let i = 0; i < x.length; i += 5) x[i] = special[(i / 5) % special.length];
        for (let i = 2; i < x.length; i += 3) x[i] = ties[i % ties.length];
        const want = quantizeActRef(x, act);
        for (const [key, eng] of engines) {
          const xt = eng.fromArray(x, [rows, C]);
          const Cp = ((C + 3) & ~3) + (C === 45 ? 4 : 0);
          const q = quantizeActivations(eng, xt, act, Cp);
          const got = q.u8();
          for (let r = 0; r < rows; r++) {
            expect(Array.from(got.subarray(r * Cp, r * Cp + C)), `${key} C=${C} row ${r}`).toEqual(Array.from(want.subarray(r * C, (r + 1) * C)));
            for (let c = C; c < Cp; c++) expect(got[r * Cp + c]).toBe(act.zeroPoint);
          }
          xt.free();
          q.free();
        }
      }
    });
});

const LINEAR_SHAPES: [M: number, K: number, N: number][] = [
  [1, 5, 3],
  [1, 64, 8],
  [7, 19, 13],
  [13, 32, 40],
  [50, 130, 17],
  [9, 77, 9],
  [67, 320, 24],
  [2, 48, 70], // threads split the output by channel panels
];

describe("INT8 linear", () => {
  for (const [M, K, N] of LINEAR_SHAPES)
    for (const qmax of [127, 255])
      it(`M=${M} K=${K} N=${N} qmax=${qmax}: exact accumulators and outputs, all builds and thread counts`, async () => {
        const x = randArray(M * K, M * 1000 + K, -1.5, 2.5);
        const w = randArray(N * K, N * 77 + K, -0.2, 0.2);
        const bias = N % 2 ? randArray(N, N, -1, 1) : null;
        const act: ActQuantParams = actParamsFromRange(-1.2, 2.3, qmax); // some inputs clamp
        const ref = linearInt8Ref(x, w, bias, M, K, N, act);
        for (const [key, eng] of engines) {
          const lw = prepareLinearInt8(eng, w, bias, N, K, act);
          const xt = eng.fromArray(x, [M, K]);
          const acc = linearInt8(xt, lw, { raw: true });
          expectBits(acc.i32(), ref.acc, `${key} acc`);
          const y = linearInt8(xt, lw);
          expect(y.shape).toEqual([M, N]);
          expectBits(y.f32(), ref.y, `${key} y`);
          // K blocking and row blocking change nothing
          const yb = linearInt8(xt, lw, { kc: 8, mcT: 2 });
          expectBits(yb.f32(), ref.y, `${key} y blocked`);
          // panel blocks (K blocks outside row blocks) too
          expectBits(linearInt8(xt, lw, { kc: 8, mcT: 2, pb: 1 }).f32(), ref.y, `${key} y panel-blocked`);
          for (const dot of ["fused", "split"] as const) expectBits(linearInt8(xt, lw, { dot, raw: true }).i32(), ref.acc, `${key} acc ${dot}`);
          [acc, y, yb, xt].forEach((t) => t.free());
          freeWeightTensors(lw);
        }
      });

  it("leading dims are kept ([2, 3, K] -> [2, 3, N])", async () => {
    const eng = engines.get("relaxed/2")!;
    const x = randArray(6 * 10, 5);
    const w = randArray(7 * 10, 6);
    const act = actParamsFromRange(-1, 1);
    const lw = prepareLinearInt8(eng, w, null, 7, 10, act);
    const y = linearInt8(eng.fromArray(x, [2, 3, 10]), lw);
    expect(y.shape).toEqual([2, 3, 7]);
    expectBits(y.f32(), linearInt8Ref(x, w, null, 6, 10, 7, act).y, "y");
  });

  it("quantisation error is small (sanity vs f32)", async () => {
    const eng = engines.get("relaxed/1")!;
    const M = 16, K = 256, N = 32;
    const x = randArray(M * K, 1, -1, 1);
    const w = randArray(N * K, 2, -0.1, 0.1);
    const lw = prepareLinearInt8(eng, w, null, N, K, actParamsFromRange(-1, 1));
    const y = linearInt8(eng.fromArray(x, [M, K]), lw).f32();
    let err = 0, mag = 0;
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
        err = Math.max(err, Math.abs(s - y[m * N + n]));
        mag = Math.max(mag, Math.abs(s));
      }
    expect(err / mag).toBeLessThan(0.03);
  });
});

interface ConvCase {
  B: number; H: number; W: number; cin: number; cout: number; k: number; stride: number; pad: Padding4;
}

const CONV_CASES: ConvCase[] = [
  { B: 2, H: 7, W: 9, cin: 3, cout: 5, k: 3, stride: 1, pad: [1, 1, 1, 1] },
  { B: 1, H: 9, W: 8, cin: 8, cout: 16, k: 3, stride: 2, pad: [1, 1, 1, 1] },
  { B: 1, H: 8, W: 8, cin: 12, cout: 9, k: 3, stride: 2, pad: [0, 0, 1, 1] },
  { B: 1, H: 6, W: 5, cin: 6, cout: 11, k: 1, stride: 1, pad: [0, 0, 0, 0] },
  { B: 1, H: 5, W: 7, cin: 32, cout: 20, k: 3, stride: 1, pad: [1, 1, 1, 1] },
  { B: 2, H: 4, W: 4, cin: 5, cout: 8, k: 3, stride: 1, pad: [2, 0, 1, 2] },
  { B: 1, H: 3, W: 11, cin: 4, cout: 3, k: 3, stride: 1, pad: [0, 1, 0, 1] },
];

describe("INT8 conv2d (implicit GEMM, zero-point padding)", () => {
  for (const c of CONV_CASES)
    it(`B=${c.B} ${c.H}x${c.W} cin=${c.cin} cout=${c.cout} k=${c.k} s=${c.stride} pad=[${c.pad}]: exact, all builds and threads`, async () => {
      const { B, H, W, cin, cout, k, stride, pad } = c;
      const x = randArray(B * H * W * cin, H * 31 + cin, -0.8, 1.7);
      const w = randArray(cout * cin * k * k, cout * 13 + cin, -0.3, 0.3);
      const bias = randArray(cout, cout, -0.5, 0.5);
      const act = actParamsFromRange(-0.7, 1.5); // 7-bit, zero point > 0 so padding matters
      const ref = conv2dInt8Ref(x, w, bias, { batch: B, h: H, w: W, cin, cout, kh: k, kw: k, stride, padding: pad }, act);
      for (const [key, eng] of engines) {
        const cw = prepareConv2dInt8(eng, w, bias, { cout, cin, kh: k, kw: k }, { stride, padding: pad }, act);
        const xt = eng.fromArray(x, [B, H, W, cin]);
        const acc = conv2dInt8(xt, cw, { raw: true });
        expect(acc.shape).toEqual([B, ref.ho, ref.wo, cout]);
        expectBits(acc.i32(), ref.acc, `${key} acc`);
        expectBits(conv2dInt8(xt, cw).f32(), ref.y, `${key} y`);
        expectBits(conv2dInt8(xt, cw, { kc: 12, mcT: 1 }).f32(), ref.y, `${key} y blocked`);
        expectBits(conv2dInt8(xt, cw, { kc: 12, mcT: 1, pb: 1 }).f32(), ref.y, `${key} y panel-blocked`);
        for (const dot of ["fused", "split"] as const) expectBits(conv2dInt8(xt, cw, { dot, kc: 40 }).f32(), ref.y, `${key} y ${dot}`);
        freeWeightTensors(cw);
      }
    });

  it("padding given at call time overrides the prepared padding; qmax 255", async () => {
    const B = 1, H = 6, W = 6, cin = 7, cout = 10, k = 3;
    const x = randArray(B * H * W * cin, 9, -1, 1);
    const w = randArray(cout * cin * k * k, 10, -0.3, 0.3);
    const act = actParamsFromRange(-1, 1, 255);
    const pad: Padding4 = [0, 1, 1, 0];
    const ref = conv2dInt8Ref(x, w, null, { batch: B, h: H, w: W, cin, cout, kh: k, kw: k, stride: 2, padding: pad }, act);
    for (const [key, eng] of engines) {
      const cw = prepareConv2dInt8(eng, w, null, { cout, cin, kh: k, kw: k }, { stride: 2, padding: 1 }, act);
      const y = conv2dInt8(eng.fromArray(x, [B, H, W, cin]), cw, { padding: pad });
      expectBits(y.f32(), ref.y, key);
    }
  });
});
