import { describe, it, expect } from "vitest";
import type { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { groupNorm, layerNorm } from "../src/nn/norm.ts";
import * as ref from "../src/nn/reference/ops.ts";
import { engineMatrix, VARIANTS } from "./support/engine-matrix.ts";

const { engines, check: checkAll } = engineMatrix(32 << 20);
const check = (simd: string, f: (e: Engine) => Tensor[], expected: (ArrayLike<number> | null)[], tol = 1e-5) => checkAll(simd, f, expected, tol);

describe("groupNorm (NHWC)", () => {
  // [B, H, W, C, groups]
  const cases: [number, number, number, number, number][] = [
    [2, 8, 8, 32, 8],
    [1, 5, 7, 12, 3],
    [2, 3, 3, 6, 6], // groups == C, C not a multiple of 4
    [1, 1, 1, 8, 2], // 1x1 spatial
    [2, 9, 10, 20, 1], // one group, several spatial tiles
    [1, 16, 16, 64, 32],
    [1, 4, 4, 7, 7],
    [1, 13, 11, 36, 4],
    [1, 130, 130, 8, 2], // > 16384 positions: longer statistics tiles
  ];
  for (const simd of VARIANTS)
    for (const [B, H, W, C, G] of cases)
      for (const silu of [false, true])
        it(`[${B},${H},${W},${C}] groups=${G}${silu ? " +silu" : ""} (${simd})`, async () => {
          const r = ref.rng(B * 1000 + H * 100 + C + G);
          const x = r.normals(B * H * W * C, 1.5, 0.3);
          const gamma = r.normals(C, 0.5, 1);
          const beta = r.normals(C, 0.5);
          const e = ref.refGroupNorm(x, B, H * W, C, G, gamma, beta, 1e-5, silu);
          check(
            simd,
            (eng) => {
              const mean = eng.empty([B, G]);
              const rstd = eng.empty([B, G]);
              const out = groupNorm(eng.fromArray(x, [B, H, W, C]), G, eng.fromArray(gamma, [C]), eng.fromArray(beta, [C]), 1e-5, { silu, mean, rstd });
              return [out, mean, rstd];
            },
            [e.out, e.mean, e.rstd],
          );
        });

  for (const simd of VARIANTS)
    it(`large mean with small noise stays accurate (${simd})`, async () => {
      const [B, H, W, C, G] = [2, 12, 12, 16, 4];
      const r = ref.rng(99);
      // 1000 + noise of std 0.01 (f32 resolution at 1000 is 6e-5); one channel group offset to -5000
      const x = Float32Array.from({ length: B * H * W * C }, (_, i) => ((i % C) < 4 ? -5000 : 1000) + 0.01 * r.normal());
      const gamma = r.normals(C, 0.5, 1);
      const beta = r.normals(C, 0.5);
      const e = ref.refGroupNorm(x, B, H * W, C, G, gamma, beta, 1e-6);
      check(simd, (eng) => [groupNorm(eng.fromArray(x, [B, H, W, C]), G, eng.fromArray(gamma, [C]), eng.fromArray(beta, [C]), 1e-6)], [e.out]);
      // a group whose channels have very different means (variance dominated by the between-channel part)
      const y = Float32Array.from({ length: B * H * W * C }, (_, i) => 1000 * (i % 3) + 1e4 + r.normal());
      const e2 = ref.refGroupNorm(y, B, H * W, C, 2, gamma, beta, 1e-5);
      check(simd, (eng) => [groupNorm(eng.fromArray(y, [B, H * W, C]), 2, eng.fromArray(gamma, [C]), eng.fromArray(beta, [C]), 1e-5)], [e2.out]);
    });

  it("constant input gives beta (variance 0, never negative)", async () => {
    const eng = engines.relaxed[1];
    eng.scope(() => {
      const C = 8;
      const out = groupNorm(eng.fromArray(new Float32Array(4 * 4 * C).fill(777.25), [1, 4, 4, C]), 2, eng.fromArray(new Float32Array(C).fill(3), [C]), eng.fromArray(Float32Array.from({ length: C }, (_, i) => i), [C]), 1e-5);
      const o = out.toArray();
      for (let i = 0; i < o.length; i++) expect(o[i]).toBe(i % C);
    });
  });

  it("bad arguments throw clear errors", async () => {
    const eng = engines.baseline[0];
    eng.scope(() => {
      const g = eng.zeros([12]);
      expect(() => groupNorm(eng.zeros([1, 2, 2, 12]), 5, g, g, 1e-5)).toThrow(/12 channels are not divisible into 5 groups/);
      expect(() => groupNorm(eng.zeros([1, 2, 2, 12]), 4, eng.zeros([8]), g, 1e-5)).toThrow(/gamma must be f32 with 12 values/);
      expect(() => layerNorm(eng.zeros([3, 12]), g, eng.zeros([3]), 1e-5)).toThrow(/beta must be f32 with 12 values/);
    });
  });
});

describe("layerNorm", () => {
  const cases: [number, number][] = [[7, 320], [3, 13], [1, 1], [77, 768], [5, 4], [2, 1280]];
  for (const simd of VARIANTS)
    for (const [rows, C] of cases)
      it(`[${rows}, ${C}] (${simd})`, async () => {
        const r = ref.rng(rows * 7 + C);
        const x = r.normals(rows * C, 2, -0.5);
        const gamma = r.normals(C, 0.5, 1);
        const beta = r.normals(C, 0.5);
        const e = ref.refLayerNorm(x, rows, C, gamma, beta, 1e-5);
        check(
          simd,
          (eng) => {
            const mean = eng.empty([rows]);
            const rstd = eng.empty([rows]);
            return [layerNorm(eng.fromArray(x, [rows, C]), eng.fromArray(gamma, [C]), eng.fromArray(beta, [C]), 1e-5, { mean, rstd }), mean, rstd];
          },
          C === 1 ? [e.out, e.mean] : [e.out, e.mean, e.rstd],
        );
      });
  for (const simd of VARIANTS)
    it(`large mean with small noise (${simd})`, async () => {
      const [rows, C] = [9, 320];
      const r = ref.rng(5);
      const x = Float32Array.from({ length: rows * C }, (_, i) => 1000 + 0.01 * r.normal() + (i % C === 0 ? 0.2 : 0));
      const gamma = r.normals(C, 0.5, 1);
      const beta = r.normals(C, 0.5);
      const e = ref.refLayerNorm(x, rows, C, gamma, beta, 1e-6);
      check(simd, (eng) => [layerNorm(eng.fromArray(x, [3, 3, C]), eng.fromArray(gamma, [C]), eng.fromArray(beta, [C]), 1e-6)], [e.out]);
    });
});
