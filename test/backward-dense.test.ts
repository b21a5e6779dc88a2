// Backward of linear and conv2d (src/nn/backward/*, assembly/gemm_backward.ts): the f64 references
// against central finite differences of the f64 forwards, the kernels against the references (<= 1e-4
// relative to the largest reference value) on both builds at 1, 2 and 4 threads, bit-identical gradients
// for every thread count and dW block size, the kernels' dX against finite differences of the engine's own
// forward, accumulate vs overwrite, and the repack helpers against prepareLinear / prepareConv2d.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { conv2d, prepareConv2d } from "../src/nn/conv.ts";
import { type Padding4 } from "../src/nn/pack.ts";
import { linear, prepareLinear } from "../src/nn/linear.ts";
import { conv2dBackward, conv2dBackwardInput, conv2dBackwardWeight, repackConv2dWeight, type ConvBackwardGeometry } from "../src/nn/backward/conv.ts";
import { linearBackward, linearBackwardInput, linearBackwardWeight, repackLinearWeight } from "../src/nn/backward/linear.ts";
import { conv2dBackwardRef, conv2dForwardF64, linearBackwardRef, linearForwardF64 } from "../src/nn/reference/dense-backward.ts";
import type { Conv2dRefShape } from "../src/nn/reference/gemm.ts";

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
/** max |got - ref| / max |ref|. */
function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  expect(got.length).toBe(ref.length);
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

interface ConvCase {
  name: string;
  b: number; h: number; w: number; cin: number; cout: number; k: number; stride: number; pad: Padding4;
}
const P1: Padding4 = [1, 1, 1, 1];
const P0: Padding4 = [0, 0, 0, 0];
/** VAE Downsample2D: F.pad (0, 1, 0, 1) then a 3x3 stride-2 conv: [top, left, bottom, right] = [0, 0, 1, 1]. */
const VAE_DOWN: Padding4 = [0, 0, 1, 1];
const CONV_CASES: ConvCase[] = [
  { name: "3x3 s1 p1 (resnet)", b: 2, h: 6, w: 5, cin: 20, cout: 18, k: 3, stride: 1, pad: P1 },
  { name: "3x3 s1 p1, 16-aligned channels", b: 1, h: 5, w: 6, cin: 32, cout: 16, k: 3, stride: 1, pad: P1 },
  { name: "3x3 s1 p1 conv_in (cin 4)", b: 2, h: 5, w: 5, cin: 4, cout: 9, k: 3, stride: 1, pad: P1 },
  { name: "3x3 s1 p1 conv_out (cout 4)", b: 1, h: 4, w: 6, cin: 24, cout: 4, k: 3, stride: 1, pad: P1 },
  { name: "3x3 s1 p1 cin 3 (VAE conv_in)", b: 1, h: 5, w: 4, cin: 3, cout: 8, k: 3, stride: 1, pad: P1 },
  { name: "1x1 (shortcut / proj)", b: 2, h: 3, w: 5, cin: 19, cout: 21, k: 1, stride: 1, pad: P0 },
  { name: "3x3 s2 p1 even (UNet downsample)", b: 2, h: 8, w: 6, cin: 12, cout: 10, k: 3, stride: 2, pad: P1 },
  { name: "3x3 s2 p1 odd sizes", b: 1, h: 7, w: 9, cin: 5, cout: 7, k: 3, stride: 2, pad: P1 },
  { name: "3x3 s2 pad (0,1,0,1) even (VAE downsample)", b: 2, h: 8, w: 10, cin: 9, cout: 12, k: 3, stride: 2, pad: VAE_DOWN },
  { name: "3x3 s2 pad (0,1,0,1) odd", b: 1, h: 7, w: 5, cin: 4, cout: 17, k: 3, stride: 2, pad: VAE_DOWN },
  { name: "1x1 s2 (phases without taps)", b: 1, h: 5, w: 6, cin: 6, cout: 5, k: 1, stride: 2, pad: P0 },
  { name: "3x3 s1 p1 on 1x1 spatial", b: 3, h: 1, w: 1, cin: 5, cout: 7, k: 3, stride: 1, pad: P1 },
  { name: "3x3 s1 no padding", b: 1, h: 6, w: 7, cin: 6, cout: 5, k: 3, stride: 1, pad: P0 },
  { name: "3x3 s1 p1, cin 1", b: 1, h: 4, w: 4, cin: 1, cout: 3, k: 3, stride: 1, pad: P1 },
];

interface LinCase {
  M: number; inF: number; out: number;
}
const LIN_CASES: LinCase[] = [
  { M: 1, inF: 3, out: 1 },
  { M: 7, inF: 33, out: 5 },
  { M: 16, inF: 16, out: 16 },
  { M: 37, inF: 40, out: 19 },
  { M: 64, inF: 20, out: 70 },
  { M: 2, inF: 64, out: 256 },
];

function shapeOf(c: ConvCase): Conv2dRefShape {
  return { batch: c.b, h: c.h, w: c.w, cin: c.cin, cout: c.cout, kh: c.k, kw: c.k, stride: c.stride, padding: c.pad };
}
function geomOf(c: ConvCase): ConvBackwardGeometry {
  return { cout: c.cout, cin: c.cin, kh: c.k, kw: c.k, stride: c.stride, padding: c.pad };
}

describe("dense backward references vs central finite differences (f64)", () => {
  // L = sum dY * y(x, W, b) is linear in each argument, so central differences in f64 agree to ~1e-10
  const H = 1e-3;
  function check(n: number, fwdLoss: (i: number, d: number) => number, grad: Float64Array) {
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const fd = (fwdLoss(i, H) - fwdLoss(i, -H)) / (2 * H);
      worst = Math.max(worst, Math.abs(fd - grad[i]) / (1 + Math.abs(grad[i])));
    }
    expect(worst).toBeLessThan(1e-8);
  }
  const dot = (a: Float64Array, b: ArrayLike<number>) => a.reduce((s, v, i) => s + v * b[i], 0);

  it("linear: dx, dw, db", () => {
    const M = 5, inF = 7, out = 6;
    const x = Float64Array.from(randn(M * inF, 1)), w = Float64Array.from(randn(out * inF, 2)), b = Float64Array.from(randn(out, 3)), dy = randn(M * out, 4);
    const g = linearBackwardRef(x, w, dy, M, inF, out);
    const loss = (xx: ArrayLike<number>, ww: ArrayLike<number>, bb: ArrayLike<number>) => dot(linearForwardF64(xx, ww, bb, M, inF, out), dy);
    const bump = (a: Float64Array, i: number, d: number) => {
      const c = a.slice();
      c[i] += d;
      return c;
    };
    check(x.length, (i, d) => loss(bump(x, i, d), w, b), g.dx);
    check(w.length, (i, d) => loss(x, bump(w, i, d), b), g.dw);
    check(b.length, (i, d) => loss(x, w, bump(b, i, d)), g.db);
  });

  for (const c of CONV_CASES.filter((c) => c.h * c.w * c.cin <= 300))
    it(`conv ${c.name}: dx, dw, db`, () => {
      const s = shapeOf(c);
      const x = Float64Array.from(randn(c.b * c.h * c.w * c.cin, 5)), w = Float64Array.from(randn(c.cout * c.cin * c.k * c.k, 6)), b = Float64Array.from(randn(c.cout, 7));
      const { ho, wo } = conv2dForwardF64(x, w, b, s);
      const dy = randn(c.b * ho * wo * c.cout, 8);
      const g = conv2dBackwardRef(x, w, dy, s);
      const loss = (xx: ArrayLike<number>, ww: ArrayLike<number>, bb: ArrayLike<number>) => dot(conv2dForwardF64(xx, ww, bb, s).y, dy);
      const bump = (a: Float64Array, i: number, d: number) => {
        const cp = a.slice();
        cp[i] += d;
        return cp;
      };
      check(x.length, (i, d) => loss(bump(x, i, d), w, b), g.dx);
      check(w.length, (i, d) => loss(x, bump(w, i, d), b), g.dw);
      check(b.length, (i, d) => loss(x, w, bump(b, i, d)), g.db);
    });
});

const THREADS = [1, 2, 4];

for (const simd of ["baseline", "relaxed"] as const) {
  describe(`dense backward kernels (${simd})`, () => {
    const engines: Engine[] = [];
    beforeAll(async () => {
      for (const threads of THREADS) engines.push(await Engine.create({ threads, simd, memoryBytes: 64 << 20 }));
    });
    afterAll(() => engines.forEach((e) => e.close()));

    for (const c of LIN_CASES)
      it(`linear M=${c.M} in=${c.inF} out=${c.out}: dx, dw, db match the reference, bit-identical for 1, 2, 4 threads`, () => {
        const seed = c.M * 131 + c.inF * 7 + c.out;
        const x = randn(c.M * c.inF, seed), w = randn(c.out * c.inF, seed + 1), dy = randn(c.M * c.out, seed + 2);
        const ref = linearBackwardRef(x, w, dy, c.M, c.inF, c.out);
        const outs = engines.map((e) =>
          e.scope(() => {
            const dw = e.empty([c.out, c.inF]), db = e.empty([c.out]);
            const dx = linearBackward(e.fromArray(x, [c.M, c.inF]), e.fromArray(w, [c.out, c.inF]), e.fromArray(dy, [c.M, c.out]), { dw, db })!;
            expect(dx.shape).toEqual([c.M, c.inF]);
            return [dx.toArray(), dw.toArray(), db.toArray()];
          }),
        );
        expect(relErr(outs[0][0], ref.dx)).toBeLessThanOrEqual(1e-4);
        expect(relErr(outs[0][1], ref.dw)).toBeLessThanOrEqual(1e-4);
        expect(relErr(outs[0][2], ref.db)).toBeLessThanOrEqual(1e-4);
        for (let t = 1; t < outs.length; t++)
          for (let k = 0; k < 3; k++) expect(bitsEqual(outs[0][k], outs[t][k]), `${["dx", "dw", "db"][k]}: ${THREADS[t]} threads differ from 1`).toBe(true);
      });

    for (const c of CONV_CASES)
      it(`conv ${c.name}: dx, dw, db match the reference, bit-identical for 1, 2, 4 threads`, () => {
        const s = shapeOf(c), g = geomOf(c);
        const seed = c.h * 7919 + c.w * 131 + c.cin * 17 + c.cout + c.k * 3 + c.stride;
        const x = randn(c.b * c.h * c.w * c.cin, seed), w = randn(c.cout * c.cin * c.k * c.k, seed + 1);
        const { ho, wo } = conv2dForwardF64(x, w, null, s);
        const dy = randn(c.b * ho * wo * c.cout, seed + 2);
        const ref = conv2dBackwardRef(x, w, dy, s);
        const outs = engines.map((e) =>
          e.scope(() => {
            const dw = e.empty([c.cout, c.cin, c.k, c.k]), db = e.empty([c.cout]);
            const xt = e.fromArray(x, [c.b, c.h, c.w, c.cin]);
            const dx = conv2dBackward(xt, e.fromArray(w, [c.cout, c.cin, c.k, c.k]), e.fromArray(dy, [c.b, ho, wo, c.cout]), g, { dw, db })!;
            expect(dx.shape).toEqual(xt.shape);
            return [dx.toArray(), dw.toArray(), db.toArray()];
          }),
        );
        expect(relErr(outs[0][0], ref.dx)).toBeLessThanOrEqual(1e-4);
        expect(relErr(outs[0][1], ref.dw)).toBeLessThanOrEqual(1e-4);
        expect(relErr(outs[0][2], ref.db)).toBeLessThanOrEqual(1e-4);
        for (let t = 1; t < outs.length; t++)
          for (let k = 0; k < 3; k++) expect(bitsEqual(outs[0][k], outs[t][k]), `${["dx", "dw", "db"][k]}: ${THREADS[t]} threads differ from 1`).toBe(true);
      });

    it("dW does not change a single bit with the block size mc (conv and linear)", () => {
      const c = CONV_CASES[0], s = shapeOf(c), g = geomOf(c);
      const x = randn(c.b * c.h * c.w * c.cin, 11), dyN = c.b * c.h * c.w * c.cout, dy = randn(dyN, 12);
      const ref = conv2dBackwardRef(x, new Float32Array(c.cout * c.cin * 9), dy, s);
      const results: Float32Array[] = [];
      for (const e of engines)
        for (const mc of [1, 3, 7, 16, 60, 1000])
          results.push(
            e.scope(() => {
              const dw = e.empty([c.cout, c.cin, 3, 3]);
              conv2dBackwardWeight(e.fromArray(x, [c.b, c.h, c.w, c.cin]), e.fromArray(dy, [c.b, c.h, c.w, c.cout]), g, dw, null, { mc });
              return dw.toArray();
            }),
          );
      expect(relErr(results[0], ref.dw)).toBeLessThanOrEqual(1e-4);
      for (const r of results) expect(bitsEqual(results[0], r)).toBe(true);
      // accumulating over several m-blocks: the first gathers dW, the middle ones use the scratch, the last scatters
      const dw0 = randn(c.cout * c.cin * 9, 15);
      const acc: Float32Array[] = [];
      for (const e of engines)
        for (const mc of [2, 7, 60, 1000])
          acc.push(
            e.scope(() => {
              const dw = e.fromArray(dw0, [c.cout, c.cin, 3, 3]);
              conv2dBackwardWeight(e.fromArray(x, [c.b, c.h, c.w, c.cin]), e.fromArray(dy, [c.b, c.h, c.w, c.cout]), g, dw, null, { mc, accumulate: true });
              return dw.toArray();
            }),
          );
      expect(relErr(acc[0], ref.dw.map((v, i) => v + dw0[i]))).toBeLessThanOrEqual(1e-4);
      for (const r of acc) expect(bitsEqual(acc[0], r)).toBe(true);
      const M = 45, inF = 21, out = 13;
      const lx = randn(M * inF, 13), ldy = randn(M * out, 14);
      const lres: Float32Array[] = [];
      for (const e of engines)
        for (const mc of [1, 4, 9, 256])
          lres.push(
            e.scope(() => {
              const dw = e.empty([out, inF]);
              linearBackwardWeight(e.fromArray(lx, [M, inF]), e.fromArray(ldy, [M, out]), dw, null, { mc });
              return dw.toArray();
            }),
          );
      for (const r of lres) expect(bitsEqual(lres[0], r)).toBe(true);
    });

    it("accumulate adds to dW, db and dX; overwrite ignores what was there", () => {
      const e = engines[1];
      for (const c of [CONV_CASES[0], CONV_CASES[6], CONV_CASES[10]]) {
        const s = shapeOf(c), g = geomOf(c);
        const x = randn(c.b * c.h * c.w * c.cin, 21), w = randn(c.cout * c.cin * c.k * c.k, 22);
        const { ho, wo } = conv2dForwardF64(x, w, null, s);
        const dy = randn(c.b * ho * wo * c.cout, 23);
        const ref = conv2dBackwardRef(x, w, dy, s);
        const dw0 = randn(w.length, 24), db0 = randn(c.cout, 25), dx0 = randn(x.length, 26);
        e.scope(() => {
          const xt = e.fromArray(x, [c.b, c.h, c.w, c.cin]), wt = e.fromArray(w, [c.cout, c.cin, c.k, c.k]), dyt = e.fromArray(dy, [c.b, ho, wo, c.cout]);
          const dw = e.fromArray(dw0, [c.cout, c.cin, c.k, c.k]), db = e.fromArray(db0, [c.cout]), dx = e.fromArray(dx0, xt.shape);
          conv2dBackwardWeight(xt, dyt, g, dw, db, { accumulate: true });
          conv2dBackwardInput(dyt, wt, g, xt.shape, { out: dx, accumulate: true });
          expect(relErr(dw.toArray(), ref.dw.map((v, i) => v + dw0[i]))).toBeLessThanOrEqual(1e-4);
          expect(relErr(db.toArray(), ref.db.map((v, i) => v + db0[i]))).toBeLessThanOrEqual(1e-4);
          expect(relErr(dx.toArray(), ref.dx.map((v, i) => v + dx0[i]))).toBeLessThanOrEqual(1e-4);
          // overwrite into the same (now non-zero) buffers
          conv2dBackwardWeight(xt, dyt, g, dw, db);
          conv2dBackwardInput(dyt, wt, g, xt.shape, { out: dx });
          expect(relErr(dw.toArray(), ref.dw)).toBeLessThanOrEqual(1e-4);
          expect(relErr(db.toArray(), ref.db)).toBeLessThanOrEqual(1e-4);
          expect(relErr(dx.toArray(), ref.dx)).toBeLessThanOrEqual(1e-4);
        });
      }
      const M = 9, inF = 10, out = 11;
      const x = randn(M * inF, 31), w = randn(out * inF, 32), dy = randn(M * out, 33);
      const ref = linearBackwardRef(x, w, dy, M, inF, out);
      const dw0 = randn(out * inF, 34), dx0 = randn(M * inF, 35);
      e.scope(() => {
        const dw = e.fromArray(dw0, [out, inF]), dx = e.fromArray(dx0, [M, inF]);
        linearBackwardWeight(e.fromArray(x, [M, inF]), e.fromArray(dy, [M, out]), dw, null, { accumulate: true });
        linearBackwardInput(e.fromArray(dy, [M, out]), e.fromArray(w, [out, inF]), out, inF, { out: dx, accumulate: true });
        expect(relErr(dw.toArray(), ref.dw.map((v, i) => v + dw0[i]))).toBeLessThanOrEqual(1e-4);
        expect(relErr(dx.toArray(), ref.dx.map((v, i) => v + dx0[i]))).toBeLessThanOrEqual(1e-4);
      });
    });

    it("kernel gradients agree with central differences of the engine's own forward (directional)", () => {
      // L(x, W, b) = sum dY * forward(x, W, b) with the engine's f32 forward; since L is linear in each
      // argument a large step keeps the f32 rounding of L small relative to the difference
      const e = engines[2];
      const h = 0.25;
      for (const c of [CONV_CASES[0], CONV_CASES[8], CONV_CASES[5]]) {
        const s = shapeOf(c), g = geomOf(c);
        const x = randn(c.b * c.h * c.w * c.cin, 41), w = randn(c.cout * c.cin * c.k * c.k, 42), b = randn(c.cout, 43);
        const { ho, wo } = conv2dForwardF64(x, w, null, s);
        const dy = randn(c.b * ho * wo * c.cout, 44);
        const vx = randn(x.length, 45), vw = randn(w.length, 46), vb = randn(b.length, 47);
        const loss = (xs: Float32Array, ws: Float32Array, bs: Float32Array) =>
          e.scope(() => {
            const cw = prepareConv2d(e, ws, bs, { cout: c.cout, cin: c.cin, kh: c.k, kw: c.k }, { stride: c.stride, padding: 0 });
            const y = conv2d(e.fromArray(xs, [c.b, c.h, c.w, c.cin]), cw, { padding: c.pad }).toArray();
            let l = 0;
            for (let i = 0; i < y.length; i++) l += y[i] * dy[i];
            return l;
          });
        const along = (a: Float32Array, v: Float32Array, t: number) => a.map((q, i) => q + t * v[i]);
        const { dx, dw, db } = e.scope(() => {
          const dwT = e.empty([c.cout, c.cin, c.k, c.k]), dbT = e.empty([c.cout]);
          const dxT = conv2dBackward(e.fromArray(x, [c.b, c.h, c.w, c.cin]), e.fromArray(w, [c.cout, c.cin, c.k, c.k]), e.fromArray(dy, [c.b, ho, wo, c.cout]), g, { dw: dwT, db: dbT })!;
          return { dx: dxT.toArray(), dw: dwT.toArray(), db: dbT.toArray() };
        });
        const dotf = (a: Float32Array, v: Float32Array) => a.reduce((acc, q, i) => acc + q * v[i], 0);
        const fdX = (loss(along(x, vx, h), w, b) - loss(along(x, vx, -h), w, b)) / (2 * h);
        const fdW = (loss(x, along(w, vw, h), b) - loss(x, along(w, vw, -h), b)) / (2 * h);
        const fdB = (loss(x, w, along(b, vb, h)) - loss(x, w, along(b, vb, -h))) / (2 * h);
        expect(Math.abs(fdX - dotf(dx, vx)) / Math.abs(fdX)).toBeLessThan(1e-4);
        expect(Math.abs(fdW - dotf(dw, vw)) / Math.abs(fdW)).toBeLessThan(1e-4);
        expect(Math.abs(fdB - dotf(db, vb)) / Math.abs(fdB)).toBeLessThan(1e-4);
      }
      const M = 12, inF = 24, out = 20;
      const x = randn(M * inF, 51), w = randn(out * inF, 52), dy = randn(M * out, 53), vx = randn(M * inF, 54), vw = randn(out * inF, 55);
      const loss = (xs: Float32Array, ws: Float32Array) =>
        e.scope(() => {
          const y = linear(e.fromArray(xs, [M, inF]), prepareLinear(e, ws, null, out, inF)).toArray();
          return y.reduce((acc, q, i) => acc + q * dy[i], 0);
        });
      const along = (a: Float32Array, v: Float32Array, t: number) => a.map((q, i) => q + t * v[i]);
      const { dx, dw } = e.scope(() => {
        const dwT = e.empty([out, inF]);
        const dxT = linearBackward(e.fromArray(x, [M, inF]), e.fromArray(w, [out, inF]), e.fromArray(dy, [M, out]), { dw: dwT })!;
        return { dx: dxT.toArray(), dw: dwT.toArray() };
      });
      const dotf = (a: Float32Array, v: Float32Array) => a.reduce((acc, q, i) => acc + q * v[i], 0);
      const fdX = (loss(along(x, vx, h), w) - loss(along(x, vx, -h), w)) / (2 * h);
      const fdW = (loss(x, along(w, vw, h)) - loss(x, along(w, vw, -h))) / (2 * h);
      expect(Math.abs(fdX - dotf(dx, vx)) / Math.abs(fdX)).toBeLessThan(1e-4);
      expect(Math.abs(fdW - dotf(dw, vw)) / Math.abs(fdW)).toBeLessThan(1e-4);
    });

    it("repack helpers give the same packed weights as prepareLinear / prepareConv2d (1, 2, 4 threads)", () => {
      for (const e of engines) e.scope(() => {
        const w = randn(37 * 11, 61), b = randn(37, 62);
        const ref = prepareLinear(e, w, b, 37, 11);
        const dst = prepareLinear(e, new Float32Array(37 * 11), null, 37, 11);
        repackLinearWeight(e.fromArray(w, [37, 11]), e.fromArray(b, [37]), dst);
        expect(bitsEqual(dst.packed.toArray(), ref.packed.toArray())).toBe(true);
        expect(bitsEqual(dst.bias.toArray(), ref.bias.toArray())).toBe(true);
        const cw = randn(20 * 6 * 9, 63);
        const cref = prepareConv2d(e, cw, null, { cout: 20, cin: 6, kh: 3, kw: 3 }, { padding: 1 });
        const cdst = prepareConv2d(e, new Float32Array(20 * 6 * 9), randn(20, 64), { cout: 20, cin: 6, kh: 3, kw: 3 }, { padding: 1 });
        repackConv2dWeight(e.fromArray(cw, [20, 6, 3, 3]), null, cdst);
        expect(bitsEqual(cdst.packed.toArray(), cref.packed.toArray())).toBe(true);
        expect(bitsEqual(cdst.bias.toArray(), cref.bias.toArray())).toBe(true);
      });
    });
  });
}

describe("dense backward argument checks", () => {
  let e: Engine;
  beforeAll(async () => {
    e = await Engine.create({ threads: 1, memoryBytes: 32 << 20 });
  });
  afterAll(() => e.close());
  it("rejects mismatched shapes", () => {
    e.scope(() => {
      const g: ConvBackwardGeometry = { cout: 4, cin: 3, kh: 3, kw: 3, stride: 1, padding: P1 };
      const x = e.zeros([1, 5, 5, 3]);
      expect(() => conv2dBackwardWeight(x, e.zeros([1, 4, 5, 4]), g, e.zeros([4, 3, 3, 3]), null)).toThrow(/expected dY/);
      expect(() => conv2dBackwardInput(e.zeros([1, 5, 5, 4]), e.zeros([4, 3, 3, 2]), g, x.shape)).toThrow(/expected a weight/);
      expect(() => linearBackwardWeight(e.zeros([2, 3]), e.zeros([3, 4]), e.zeros([4, 3]), null)).toThrow(/expected dY/);
      expect(() => linearBackwardInput(e.zeros([2, 4]), e.zeros([4, 2]), 4, 3)).toThrow(/expected a weight/);
      expect(x).toBeInstanceOf(Tensor);
    });
  });
});
