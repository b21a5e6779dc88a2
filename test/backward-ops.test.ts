// Backward kernels of the non-weight ops (norms, activations, broadcast ops, layout ops, softmax): each kernel
// against its f64 TypeScript reference at 1, 2 and 4 threads on both kernel builds (results bit-identical
// across thread counts), and each reference against central finite differences of an f64 forward.
import { describe, it, expect } from "vitest";
import type { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { groupNorm, layerNorm } from "../src/nn/norm.ts";
import { softmax } from "../src/nn/attention.ts";
import { groupNormBackward, layerNormBackward } from "../src/nn/backward/norm.ts";
import { softmaxBackward } from "../src/nn/backward/attention.ts";
import {
  siluBackward,
  geluBackward,
  quickGeluBackward,
  reluBackward,
  scaleBackward,
  gegluBackward,
  broadcastGrad,
  addBackward,
  addScaledBackward,
  mulBackward,
  upsample2xBackward,
  concatChannelsBackward,
} from "../src/nn/backward/elementwise.ts";
import * as ref from "../src/nn/reference/ops.ts";
import * as nref from "../src/nn/reference/norm-backward.ts";
import * as eref from "../src/nn/reference/elementwise-backward.ts";
import { softmaxF64, refSoftmaxBackward } from "../src/nn/reference/attention-backward.ts";
import { engineMatrix, VARIANTS } from "./support/engine-matrix.ts";

const { engines, check: checkAll } = engineMatrix(32 << 20);
const check = (simd: string, f: (e: Engine) => Tensor[], expected: (ArrayLike<number> | null)[], tol = 1e-4) => checkAll(simd, f, expected, tol);

/**
 * Central finite differences of loss(params) = sum(w o forward(params)) against the analytic gradients, at
 * every coordinate (the cases are small): |numeric - analytic| <= tol * max|analytic| per array.
 */
function fdCheck(loss: (p: Float64Array[]) => number, params: ArrayLike<number>[], grads: ArrayLike<number>[], h = 1e-5, tol = 1e-6): void {
  const p = params.map((a) => Float64Array.from(a));
  for (let k = 0; k < p.length; k++) {
    let scale = 0;
    for (let i = 0; i < grads[k].length; i++) scale = Math.max(scale, Math.abs(grads[k][i]));
    let worst = 0;
    for (let i = 0; i < p[k].length; i++) {
      const x0 = p[k][i];
      p[k][i] = x0 + h;
      const lp = loss(p);
      p[k][i] = x0 - h;
      const lm = loss(p);
      p[k][i] = x0;
      worst = Math.max(worst, Math.abs((lp - lm) / (2 * h) - grads[k][i]));
    }
    expect(worst / Math.max(scale, 1e-300), `finite differences, parameter ${k}`).toBeLessThanOrEqual(tol);
  }
}

const dot = (w: ArrayLike<number>, y: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < y.length; i++) s += w[i] * y[i];
  return s;
};

describe("groupNorm backward (NHWC, +SiLU)", () => {
  // [B, H, W, C, groups]
  const cases: [number, number, number, number, number][] = [
    [2, 8, 8, 32, 8],
    [1, 5, 7, 12, 3],
    [2, 3, 3, 6, 6], // groups == C, C not a multiple of 4
    [1, 1, 1, 8, 2], // 1x1 spatial
    [2, 9, 10, 20, 1], // one group, several spatial tiles
    [2, 4, 4, 64, 32], // fashion-sd-tiny level 0 at 4x4
    [1, 13, 11, 36, 4],
    [1, 100, 100, 8, 2], // > 64 tiles of 64 positions... 157 tiles
    [1, 130, 130, 4, 2], // > 16384 positions: longer tiles
  ];
  for (const simd of VARIANTS)
    for (const [B, H, W, C, G] of cases)
      for (const silu of [false, true])
        it(`[${B},${H},${W},${C}] groups=${G}${silu ? " +silu" : ""} (${simd})`, () => {
          const r = ref.rng(B * 1000 + H * 100 + C + G + (silu ? 7 : 0));
          const HW = H * W;
          const x = r.normals(B * HW * C, 1.5, 0.3);
          const gamma = r.normals(C, 0.5, 1);
          const beta = r.normals(C, 0.5);
          const dy = r.normals(B * HW * C);
          const f = nref.groupNormF64(x, B, HW, C, G, gamma, beta, 1e-5, silu);
          const e = nref.refGroupNormBackward(dy, x, B, HW, C, G, gamma, beta, f.mean, f.rstd, silu);
          check(
            simd,
            (eng) => {
              const xt = eng.fromArray(x, [B, H, W, C]);
              const g = eng.fromArray(gamma, [C]);
              const b = eng.fromArray(beta, [C]);
              const mean = eng.empty([B, G]);
              const rstd = eng.empty([B, G]);
              groupNorm(xt, G, g, b, 1e-5, { silu, mean, rstd });
              const gr = groupNormBackward(eng.fromArray(dy, [B, H, W, C]), xt, G, g, b, mean, rstd, { silu });
              return [gr.dx, gr.dGamma, gr.dBeta];
            },
            [e.dx, e.dGamma, e.dBeta],
          );
        });

  it("reference against finite differences", () => {
    for (const [B, HW, C, G, silu] of [[2, 5, 6, 3, false], [1, 7, 8, 2, true], [2, 3, 4, 4, true]] as const) {
      const r = ref.rng(HW * C + G);
      const x = r.normals(B * HW * C, 1.2, 0.4);
      const gamma = r.normals(C, 0.5, 1);
      const beta = r.normals(C, 0.5);
      const w = r.normals(B * HW * C);
      const f = nref.groupNormF64(x, B, HW, C, G, gamma, beta, 1e-5, silu);
      const e = nref.refGroupNormBackward(w, x, B, HW, C, G, gamma, beta, f.mean, f.rstd, silu);
      fdCheck((p) => dot(w, nref.groupNormF64(p[0], B, HW, C, G, p[1], p[2], 1e-5, silu).y), [x, gamma, beta], [e.dx, e.dGamma, e.dBeta]);
    }
  });

  it("bad arguments throw clear errors", () => {
    const eng = engines.baseline[0];
    eng.scope(() => {
      const x = eng.zeros([1, 2, 2, 8]);
      const g = eng.zeros([8]);
      const s = eng.zeros([1, 4]);
      expect(() => groupNormBackward(eng.zeros([1, 2, 2, 4]), x, 4, g, g, s, s)).toThrow(/dy \[1,2,2,4\] must be f32 shaped like x/);
      expect(() => groupNormBackward(x, x, 4, g, g, eng.zeros([2]), s)).toThrow(/mean must be f32 with 4 values/);
      expect(() => groupNormBackward(x, x, 3, g, g, s, s)).toThrow(/not divisible into 3 groups/);
    });
  });
});

describe("layerNorm backward", () => {
  const cases: [number, number][] = [[7, 320], [3, 13], [1, 1], [77, 768], [5, 4], [1000, 24], [128, 64], [2, 1280]];
  for (const simd of VARIANTS)
    for (const [rows, C] of cases)
      it(`[${rows}, ${C}] (${simd})`, () => {
        const r = ref.rng(rows * 7 + C);
        const x = r.normals(rows * C, 2, -0.5);
        const gamma = r.normals(C, 0.5, 1);
        const beta = r.normals(C, 0.5);
        const dy = r.normals(rows * C);
        const f = nref.layerNormF64(x, rows, C, gamma, beta, 1e-5);
        const e = nref.refLayerNormBackward(dy, x, rows, C, gamma, f.mean, f.rstd);
        check(
          simd,
          (eng) => {
            const xt = eng.fromArray(x, [rows, C]);
            const g = eng.fromArray(gamma, [C]);
            const mean = eng.empty([rows]);
            const rstd = eng.empty([rows]);
            layerNorm(xt, g, eng.fromArray(beta, [C]), 1e-5, { mean, rstd });
            const gr = layerNormBackward(eng.fromArray(dy, [rows, C]), xt, g, mean, rstd);
            return [gr.dx, gr.dGamma, gr.dBeta];
          },
          // C = 1: dx is 0 in exact arithmetic, two roundings of the same product apart here (rstd is 1/sqrt(eps))
          [C === 1 ? null : e.dx, e.dGamma, e.dBeta],
        );
      });

  it("reference against finite differences", () => {
    for (const [rows, C] of [[3, 5], [4, 16], [1, 2]]) {
      const r = ref.rng(rows + C);
      const x = r.normals(rows * C, 1.5, 0.2);
      const gamma = r.normals(C, 0.5, 1);
      const beta = r.normals(C, 0.5);
      const w = r.normals(rows * C);
      const f = nref.layerNormF64(x, rows, C, gamma, beta, 1e-5);
      const e = nref.refLayerNormBackward(w, x, rows, C, gamma, f.mean, f.rstd);
      fdCheck((p) => dot(w, nref.layerNormF64(p[0], rows, C, p[1], p[2], 1e-5).y), [x, gamma, beta], [e.dx, e.dGamma, e.dBeta]);
    }
  });
});

describe("activation backward", () => {
  const n = 1031; // not a multiple of 4: the scalar tail runs too
  const r = ref.rng(5);
  const x = Float32Array.from({ length: n }, (_, i) => (i < 9 ? [0, -0, 1e-6, -12, 12, -30, 30, 5.5, -5.5][i] : 3 * r.normal()));
  const dy = r.normals(n);
  const unary: [string, (dy: Tensor, x: Tensor) => Tensor, (v: number) => number][] = [
    ["silu", siluBackward, (v) => eref.siluAGrad(v)],
    ["quickGelu", quickGeluBackward, (v) => eref.siluAGrad(v, 1.702)],
    ["gelu", geluBackward, eref.geluGrad],
    ["relu", reluBackward, (v) => (v > 0 ? 1 : 0)],
  ];
  for (const simd of VARIANTS) {
    for (const [name, fn, grad] of unary)
      it(`${name} (${simd})`, () => {
        const e = eref.refUnaryBackward(x, dy, grad);
        const out = check(simd, (eng) => [fn(eng.fromArray(dy, [n]), eng.fromArray(x, [n]))], [e], 2e-6)[0];
        // pointwise too: each element within 1e-5 of |dy| (no large relative error hiding under the max)
        for (let i = 0; i < n; i++) expect(Math.abs(out[i] - e[i]), `${name} at x=${x[i]}`).toBeLessThanOrEqual(1e-5 * Math.max(Math.abs(dy[i]), 1e-3));
      });
    it(`scale (${simd})`, () => {
      check(simd, (eng) => [scaleBackward(eng.fromArray(dy, [n]), -0.3)], [Float32Array.from(dy, (v) => v * Math.fround(-0.3))], 0);
    });
    it(`geglu (${simd})`, () => {
      for (const [rows, N] of [[7, 13], [64, 40], [3, 1]]) {
        const rr = ref.rng(rows * N);
        const xs = rr.normals(rows * 2 * N, 2);
        const d = rr.normals(rows * N);
        const e = eref.refGegluBackward(xs, d, rows, N);
        check(simd, (eng) => [gegluBackward(eng.fromArray(d, [rows, N]), eng.fromArray(xs, [rows, 2 * N]))], [e], 2e-6);
      }
    });
  }
  it("references against finite differences", () => {
    const xs = Float64Array.from([0, -0.7, 1.3, 2.9, -3.1, 0.05, 6, -6]);
    const w = Float64Array.from([0.3, -1.2, 0.8, 1, -0.4, 2, 0.5, -0.9]);
    const fwd: [(v: number) => number, (v: number) => number][] = [
      [(v) => v / (1 + Math.exp(-v)), (v) => eref.siluAGrad(v)],
      [(v) => v / (1 + Math.exp(-1.702 * v)), (v) => eref.siluAGrad(v, 1.702)],
      [eref.geluF64, eref.geluGrad],
    ];
    for (const [f, g] of fwd) fdCheck((p) => dot(w, Array.from(p[0], f)), [xs], [eref.refUnaryBackward(xs, w, g)]);
    // GEGLU: [2, 2*2]
    const xg = Float64Array.from([0.4, -1.1, 0.9, -0.3, 1.7, 0.2, -2.2, 0.6]);
    const wg = Float64Array.from([1, -0.5, 0.25, 2]);
    const geglu = (p: Float64Array) => {
      const o: number[] = [];
      for (let rr = 0; rr < 2; rr++) for (let j = 0; j < 2; j++) o.push(p[rr * 4 + j] * eref.geluF64(p[rr * 4 + 2 + j]));
      return o;
    };
    fdCheck((p) => dot(wg, geglu(p[0])), [xg], [eref.refGegluBackward(xg, wg, 2, 2)]);
  });
});

describe("broadcast backward (add / addScaled / mul)", () => {
  // [a shape, b shape]
  const cases: [number[], number[]][] = [
    [[2, 5, 5, 24], [2, 1, 1, 24]], // time embedding added to every pixel
    [[3, 7, 20], [20]], // bias suffix
    [[1, 300, 40], [40]], // many rows: blocks of 64
    [[2, 3, 3, 5], [2, 3, 3, 1]], // per-position scalars (N = 1)
    [[2, 130], [2, 1]], // per-row scalar, long rows
    [[6, 10], [6, 10]], // same shape
    [[2, 4, 4, 18], [2, 1, 1, 18]], // N not a multiple of 16
  ];
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  for (const simd of VARIANTS)
    for (const [as, bs] of cases)
      it(`[${as}] with b [${bs}] (${simd})`, () => {
        const r = ref.rng(size(as) + size(bs));
        const dy = r.normals(size(as));
        const a = r.normals(size(as));
        const b = r.normals(size(bs));
        const dbAdd = eref.refBroadcastReduce(dy, as, bs);
        const dbScaled = eref.refBroadcastReduce(dy, as, bs, -0.7);
        const dbMul = eref.refBroadcastReduce(dy, as, bs, 1, a);
        const daMul = ref.refMul(dy, as, b, bs);
        check(
          simd,
          (eng) => {
            const dyt = eng.fromArray(dy, as);
            const add = addBackward(dyt, bs);
            const sc = addScaledBackward(dyt, bs, -0.7);
            const mul = mulBackward(dyt, eng.fromArray(a, as), eng.fromArray(b, bs));
            expect(add.db.shape).toEqual(bs);
            return [add.da, add.db, sc.db, mul.da, mul.db];
          },
          [dy, dbAdd, dbScaled, daMul, dbMul],
          1e-5,
        );
      });
  it("reference against finite differences (a * b and a + s b with b broadcast)", () => {
    const as = [2, 3, 4];
    const bs = [2, 1, 4];
    const r = ref.rng(3);
    const a = Float64Array.from(r.normals(24));
    const b = Float64Array.from(r.normals(8));
    const w = Float64Array.from(r.normals(24));
    const bidx = (i: number) => Math.floor(i / 12) * 4 + (i % 4);
    const mul = (p: Float64Array[]) => dot(w, Array.from(p[0], (v, i) => v * p[1][bidx(i)]));
    fdCheck(mul, [a, b], [ref.refMul(w, as, b, bs), eref.refBroadcastReduce(w, as, bs, 1, a)]);
    const addS = (p: Float64Array[]) => dot(w, Array.from(p[0], (v, i) => v - 0.7 * p[1][bidx(i)]));
    fdCheck(addS, [a, b], [w, eref.refBroadcastReduce(w, as, bs, -0.7)]);
  });
});

describe("layout backward", () => {
  for (const simd of VARIANTS) {
    it(`upsample2x (${simd})`, () => {
      for (const [B, H, W, C] of [[2, 3, 5, 7], [1, 1, 1, 3], [1, 4, 4, 8]]) {
        const dy = ref.rng(C).normals(B * 4 * H * W * C);
        const e = eref.refUpsample2xBackward(dy, B, H, W, C);
        check(simd, (eng) => [upsample2xBackward(eng.fromArray(dy, [B, 2 * H, 2 * W, C]))], [e], 1e-6);
      }
    });
    it(`concatChannels (${simd})`, () => {
      for (const [B, H, W, ca, cb] of [[2, 3, 4, 5, 3], [1, 1, 1, 1, 2], [1, 4, 4, 320, 640]]) {
        const dy = ref.rng(ca * cb).normals(B * H * W * (ca + cb));
        const e = eref.refConcatChannelsBackward(dy, B * H * W, ca, cb);
        check(
          simd,
          (eng) => {
            const g = concatChannelsBackward(eng.fromArray(dy, [B, H, W, ca + cb]), ca);
            expect(g.da.shape).toEqual([B, H, W, ca]);
            return [g.da, g.db];
          },
          [e.da, e.db],
          0,
        );
      }
    });
  }
  it("references against finite differences", () => {
    const [B, H, W, C] = [1, 2, 3, 2];
    const r = ref.rng(11);
    const x = Float64Array.from(r.normals(B * H * W * C));
    const w = Float64Array.from(r.normals(B * 4 * H * W * C));
    // linear maps, and the forward references round to f32: a large step keeps that rounding small
    fdCheck((p) => dot(w, ref.refUpsample2x(p[0], B, H, W, C)), [x], [eref.refUpsample2xBackward(w, B, H, W, C)], 0.5, 1e-6);
    const a = Float64Array.from(r.normals(6));
    const b = Float64Array.from(r.normals(9));
    const wc = Float64Array.from(r.normals(15));
    const g = eref.refConcatChannelsBackward(wc, 3, 2, 3);
    fdCheck((p) => dot(wc, ref.refConcatChannels(p[0], p[1], 3, 2, 3)), [a, b], [g.da, g.db], 0.5, 1e-6);
  });
});

describe("softmax backward", () => {
  for (const simd of VARIANTS)
    it(`rows x N (${simd})`, () => {
      for (const [rows, N] of [[13, 77], [5, 3], [64, 64], [1, 1]]) {
        const r = ref.rng(rows * N);
        const x = r.normals(rows * N, 3);
        const dy = r.normals(rows * N);
        const y64 = softmaxF64(x, rows, N);
        const e = refSoftmaxBackward(y64, dy, rows, N);
        check(simd, (eng) => [softmaxBackward(eng.fromArray(dy, [rows, N]), softmax(eng.fromArray(x, [rows, N])))], [e], N === 1 ? 1e-6 : 1e-5);
      }
    });
  it("reference against finite differences", () => {
    const [rows, N] = [3, 6];
    const r = ref.rng(2);
    const x = Float64Array.from(r.normals(rows * N, 2));
    const w = Float64Array.from(r.normals(rows * N));
    fdCheck((p) => dot(w, softmaxF64(p[0], rows, N)), [x], [refSoftmaxBackward(softmaxF64(x, rows, N), w, rows, N)]);
  });
});
