import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { prepareConv2d, conv2d } from "../src/nn/conv.ts";
import { type Padding4 } from "../src/nn/pack.ts";
import { conv2dRef } from "../src/nn/reference/gemm.ts";

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
function randn(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
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
function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

interface Case {
  name: string;
  b: number; h: number; w: number; cin: number; cout: number; kh: number; kw: number;
  stride: number;
  pad: number;
  /** per-call padding override [top, left, bottom, right] */
  pad4?: Padding4;
  bias?: boolean;
}

const CASES: Case[] = [
  { name: "1x1 stride 1", b: 2, h: 5, w: 7, cin: 13, cout: 9, kh: 1, kw: 1, stride: 1, pad: 0 },
  { name: "1x1 stride 2, no bias", b: 1, h: 7, w: 6, cin: 8, cout: 16, kh: 1, kw: 1, stride: 2, pad: 0, bias: false },
  { name: "3x3 pad 1", b: 2, h: 9, w: 11, cin: 16, cout: 20, kh: 3, kw: 3, stride: 1, pad: 1 },
  { name: "3x3 Cin=3 Cout=4", b: 1, h: 6, w: 5, cin: 3, cout: 4, kh: 3, kw: 3, stride: 1, pad: 1 },
  { name: "3x3 on 1x1 spatial", b: 3, h: 1, w: 1, cin: 5, cout: 7, kh: 3, kw: 3, stride: 1, pad: 1 },
  { name: "1x1 on 1x1 spatial", b: 1, h: 1, w: 1, cin: 6, cout: 3, kh: 1, kw: 1, stride: 1, pad: 0 },
  { name: "3x3 stride 2 pad 1 odd sizes", b: 2, h: 9, w: 7, cin: 12, cout: 10, kh: 3, kw: 3, stride: 2, pad: 1 },
  { name: "3x3 stride 2 asym (0,1,0,1) even", b: 2, h: 8, w: 10, cin: 9, cout: 12, kh: 3, kw: 3, stride: 2, pad: 0, pad4: [0, 0, 1, 1] },
  { name: "3x3 stride 2 asym (0,1,0,1) odd", b: 1, h: 7, w: 9, cin: 4, cout: 17, kh: 3, kw: 3, stride: 2, pad: 0, pad4: [0, 0, 1, 1] },
  { name: "3x3 no padding", b: 1, h: 8, w: 9, cin: 10, cout: 8, kh: 3, kw: 3, stride: 1, pad: 0 },
  { name: "5x3 pad 2", b: 1, h: 6, w: 8, cin: 7, cout: 11, kh: 5, kw: 3, stride: 1, pad: 2 },
  { name: "4x4 stride 2 pad 1", b: 2, h: 8, w: 8, cin: 6, cout: 5, kh: 4, kw: 4, stride: 2, pad: 1 },
  { name: "7x7 pad 3 on 5x5 (windows larger than the image)", b: 1, h: 5, w: 5, cin: 2, cout: 9, kh: 7, kw: 7, stride: 1, pad: 3 },
  { name: "Cin=1", b: 1, h: 6, w: 6, cin: 1, cout: 8, kh: 3, kw: 3, stride: 1, pad: 1 },
  { name: "3x3 wider channels", b: 1, h: 10, w: 12, cin: 64, cout: 40, kh: 3, kw: 3, stride: 1, pad: 1 },
  { name: "asymmetric override [1,2,0,1]", b: 1, h: 6, w: 7, cin: 5, cout: 6, kh: 3, kw: 3, stride: 1, pad: 0, pad4: [1, 2, 0, 1] },
];

const THREADS = [1, 2, 4];

for (const simd of ["baseline", "relaxed"] as const) {
  describe(`conv2d NHWC implicit GEMM (${simd})`, () => {
    const engines: Engine[] = [];
    beforeAll(async () => {
      for (const threads of THREADS) engines.push(await Engine.create({ threads, simd, memoryBytes: 64 << 20 }));
    });
    afterAll(() => engines.forEach((e) => e.close()));

    for (const c of CASES)
      it(`${c.name}: matches the reference, bit-identical for 1, 2, 4 threads`, async () => {
        const seed = c.h * 7919 + c.w * 131 + c.cin * 17 + c.cout + c.kh * 3;
        const x = randn(c.b * c.h * c.w * c.cin, seed);
        const wt = randn(c.cout * c.cin * c.kh * c.kw, seed + 1);
        const bias = c.bias === false ? null : randn(c.cout, seed + 2);
        const pad4: Padding4 = c.pad4 ?? [c.pad, c.pad, c.pad, c.pad];
        const ref = conv2dRef(x, wt, bias, { batch: c.b, h: c.h, w: c.w, cin: c.cin, cout: c.cout, kh: c.kh, kw: c.kw, stride: c.stride, padding: pad4 });
        const outs = engines.map((e) =>
          e.scope(() => {
            const cw = prepareConv2d(e, wt, bias, { cout: c.cout, cin: c.cin, kh: c.kh, kw: c.kw }, { stride: c.stride, padding: c.pad });
            const y = conv2d(e.fromArray(x, [c.b, c.h, c.w, c.cin]), cw, c.pad4 ? { padding: c.pad4 } : {});
            expect(y.shape).toEqual([c.b, ref.ho, ref.wo, c.cout]);
            return y.toArray();
          }),
        );
        expect(relErr(outs[0], ref.y)).toBeLessThanOrEqual(1e-5);
        for (let i = 1; i < outs.length; i++) expect(bitsEqual(outs[0], outs[i]), `${THREADS[i]} threads differ from 1`).toBe(true);
      });

    it("K, M and panel blocking (kc, mcT, pb) do not change a single bit", async () => {
      const c = { b: 2, h: 7, w: 9, cin: 11, cout: 37, kh: 3, kw: 3 };
      const x = randn(c.b * c.h * c.w * c.cin, 99), wt = randn(c.cout * c.cin * 9, 98), bias = randn(c.cout, 97);
      const ref = conv2dRef(x, wt, bias, { batch: c.b, h: c.h, w: c.w, cin: c.cin, cout: c.cout, kh: 3, kw: 3, stride: 1, padding: [1, 1, 1, 1] });
      const results: Float32Array[] = [];
      for (const e of engines)
        for (const [kc, mcT, pb] of [[0, 0, 0], [5, 1, 0], [11, 2, 0], [33, 7, 0], [50, 0, 0], [5, 1, 1], [33, 7, 2]])
          results.push(
            e.scope(() => {
              const cw = prepareConv2d(e, wt, bias, { cout: c.cout, cin: c.cin, kh: 3, kw: 3 }, { padding: 1 });
              const xt = e.fromArray(x, [c.b, c.h, c.w, c.cin]);
              const y = e.empty([c.b, c.h, c.w, c.cout]);
              e.run("conv2d_f32", xt.ptr, c.b, c.h, c.w, c.cin, cw.packed.ptr, cw.bias.ptr, y.ptr, c.cout, c.h, c.w, c.cout, 3, 3, 1, 1, 1, cw.zero.ptr, kc, mcT, pb);
              return y.toArray();
            }),
          );
      expect(relErr(results[0], ref.y)).toBeLessThanOrEqual(1e-5);
      for (const r of results) expect(bitsEqual(results[0], r)).toBe(true);
    });
  });
}

describe("conv2d input errors", () => {
  let e: Engine;
  beforeAll(async () => {
    e = await Engine.create({ threads: 1, memoryBytes: 32 << 20 });
  });
  afterAll(() => e.close());

  it("shape mismatches name expected and got", async () => {
    const cw = prepareConv2d(e, new Float32Array(8 * 4 * 9), null, { cout: 8, cin: 4, kh: 3, kw: 3 }, { padding: 1 });
    expect(() => conv2d(e.zeros([1, 5, 5, 3]), cw)).toThrow(/expected NHWC input \[B, H, W, 4\].*got \[1,5,5,3\]/);
    expect(() => conv2d(e.zeros([5, 5, 4]), cw)).toThrow(/expected NHWC input .*got \[5,5,4\]/);
    expect(() => prepareConv2d(e, new Float32Array(10), null, { cout: 8, cin: 4, kh: 3, kw: 3 })).toThrow(/expected weight of 8x4x3x3 = 288 values, got 10/);
    expect(() => conv2d(e.zeros([1, 1, 1, 4]), prepareConv2d(e, new Float32Array(8 * 4 * 9), null, { cout: 8, cin: 4, kh: 3, kw: 3 }))).toThrow(/does not fit/);
    expect(() => conv2d(e.zeros([1, 4, 4, 4]), cw, { padding: [1, 1, 1] as unknown as Padding4 })).toThrow(/padding must be 4/);
  });
});
