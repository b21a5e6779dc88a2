import { describe, it, expect } from "vitest";
import type { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { add, mul, addScaled, silu, gelu, quickGelu, scale, geglu, upsample2x, concatChannels } from "../src/nn/elementwise.ts";
import { broadcastPlan } from "../src/nn/tiling.ts";
import * as ref from "../src/nn/reference/ops.ts";
import { engineMatrix, VARIANTS } from "./support/engine-matrix.ts";

const { engines, check: checkAll } = engineMatrix(32 << 20);

/** Runs f on every thread count of one SIMD variant; checks error vs reference and bit-identity. */
function check(simd: string, f: (e: Engine) => Tensor, expected: ArrayLike<number>, tol = 1e-5): Float32Array {
  return checkAll(simd, (e) => [f(e)], [expected], tol)[0];
}

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

describe("broadcast add / mul / addScaled", () => {
  const cases: [number[], number[]][] = [
    [[1003], [1003]],
    [[3, 5, 7], [3, 5, 7]],
    [[2, 4, 4, 6], [6]],
    [[2, 4, 4, 6], [1, 6]],
    [[2, 3, 3, 5], [2, 1, 1, 5]],
    [[2, 7, 9], [2, 1, 9]],
    [[2, 3, 3, 5], [2, 3, 3, 1]],
    [[2, 3, 3, 5], [1]],
    [[1, 1, 1, 3], [1, 1, 1, 3]],
    [[2, 16, 16, 320], [2, 1, 1, 320]],
  ];
  for (const simd of VARIANTS)
    for (const [as, bs] of cases)
      it(`[${as}] op [${bs}] (${simd})`, async () => {
        const r = ref.rng(as.length * 31 + bs.length);
        const a = r.normals(size(as));
        const b = r.normals(size(bs));
        check(simd, (e) => add(e.fromArray(a, as), e.fromArray(b, bs)), ref.refAdd(a, as, b, bs), 0);
        check(simd, (e) => mul(e.fromArray(a, as), e.fromArray(b, bs)), ref.refMul(a, as, b, bs), 0);
        const s = 0.37;
        const expectedScaled = ref.refBinary(a, as, b, bs, (x, y) => Math.fround(x + Math.fround(y * Math.fround(s))));
        check(simd, (e) => addScaled(e.fromArray(a, as), e.fromArray(b, bs), s), expectedScaled, 0);
      });

  it("bad broadcasts throw clear errors", async () => {
    const e = engines.baseline[0];
    e.scope(() => {
      expect(() => add(e.zeros([2, 3]), e.zeros([3, 2]))).toThrow(/cannot broadcast b \[3,2\] over a \[2,3\]/);
      expect(() => mul(e.zeros([4]), e.zeros([2, 4]))).toThrow(/more dims/);
      expect(() => add(e.zeros([2, 3, 4, 5]), e.zeros([2, 1, 4, 1]))).toThrow(/only one run/);
    });
    expect(broadcastPlan([2, 3, 4, 5], [2, 1, 1, 5])).toEqual({ P: 2, M: 12, N: 5 });
    expect(broadcastPlan([2, 3, 4], [2, 3, 4])).toEqual({ P: 1, M: 1, N: 24 });
  });
});

describe("activations", () => {
  // mix of typical values, tails and extremes
  const r = ref.rng(7);
  const x = Float32Array.from({ length: 2051 }, (_, i) => (i % 97 === 0 ? (r.uniform() - 0.5) * 400 : (r.uniform() - 0.5) * 24));
  x[0] = 0;
  x[1] = -0;
  x[2] = 1e-30;
  x[3] = -88.5;
  x[4] = 88.5;
  const pointwise = (got: Float32Array, exp: Float32Array, tol: number) => {
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - exp[i]) / Math.max(1, Math.abs(exp[i])));
    expect(worst).toBeLessThanOrEqual(tol);
  };
  for (const simd of VARIANTS) {
    it(`silu, quickGelu, gelu, scale (${simd})`, async () => {
      pointwise(check(simd, (e) => silu(e.fromArray(x, [x.length])), ref.refSilu(x)), ref.refSilu(x), 1e-6);
      pointwise(check(simd, (e) => quickGelu(e.fromArray(x, [x.length])), ref.refQuickGelu(x)), ref.refQuickGelu(x), 1e-6);
      pointwise(check(simd, (e) => gelu(e.fromArray(x, [x.length])), ref.refGelu(x)), ref.refGelu(x), 1e-6);
      check(simd, (e) => scale(e.fromArray(x, [x.length]), -0.3), Float32Array.from(x, (v) => v * Math.fround(-0.3)), 0);
    });
    it(`geglu (${simd})`, async () => {
      for (const shape of [[2, 5, 14], [4, 80], [3, 2], [1, 2 * 1280]]) {
        const N = shape[shape.length - 1] / 2;
        const rows = size(shape) / (2 * N);
        const xs = ref.rng(shape[0] + shape.length).normals(size(shape), 2);
        const out = check(simd, (e) => geglu(e.fromArray(xs, shape)), ref.refGeglu(xs, rows, N));
        expect(out.length).toBe(rows * N);
      }
      const e = engines[simd][0];
      e.scope(() => expect(() => geglu(e.zeros([2, 3]))).toThrow(/even/));
    });
  }
});

describe("layout ops", () => {
  for (const simd of VARIANTS) {
    it(`upsample2x (${simd})`, async () => {
      for (const [B, H, W, C] of [[2, 3, 5, 7], [1, 1, 1, 3], [1, 4, 4, 8]]) {
        const xs = ref.rng(C).normals(B * H * W * C);
        const out = check(simd, (e) => upsample2x(e.fromArray(xs, [B, H, W, C])), ref.refUpsample2x(xs, B, H, W, C), 0);
        expect(out.length).toBe(B * 4 * H * W * C);
      }
    });
    it(`concatChannels (${simd})`, async () => {
      for (const [B, H, W, ca, cb] of [[2, 3, 4, 5, 3], [1, 1, 1, 1, 2], [1, 4, 4, 320, 640]]) {
        const r = ref.rng(ca * cb);
        const a = r.normals(B * H * W * ca);
        const b = r.normals(B * H * W * cb);
        check(simd, (e) => concatChannels(e.fromArray(a, [B, H, W, ca]), e.fromArray(b, [B, H, W, cb])), ref.refConcatChannels(a, b, B * H * W, ca, cb), 0);
      }
      const e = engines[simd][0];
      e.scope(() => expect(() => concatChannels(e.zeros([1, 2, 2, 3]), e.zeros([1, 2, 3, 3]))).toThrow(/differ outside the last/));
    });
  }
});
