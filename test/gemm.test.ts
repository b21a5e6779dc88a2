import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { prepareLinear, linear, matmul } from "../src/nn/linear.ts";
import { linearRef, matmulRef } from "../src/nn/reference/gemm.ts";

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
function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
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

const THREADS = [1, 2, 4];
// [M, K, N]: awkward sizes (N, K not multiples of 4/8, M = 1, tails in every direction)
const LINEAR_SHAPES: [number, number, number][] = [
  [1, 1, 1], [1, 7, 5], [2, 3, 8], [5, 13, 9], [6, 16, 8], [7, 33, 17], [13, 8, 31], [1, 64, 300], [77, 64, 40], [154, 96, 100], [200, 130, 12],
];

for (const simd of ["baseline", "relaxed"] as const) {
  describe(`fp32 gemm kernels (${simd})`, () => {
    const engines: Engine[] = [];
    beforeAll(async () => {
      for (const threads of THREADS) engines.push(await Engine.create({ threads, simd, memoryBytes: 64 << 20 }));
    });
    afterAll(() => engines.forEach((e) => e.close()));

    it("linear matches the reference on awkward shapes, bit-identical for 1, 2, 4 threads", async () => {
      for (const [M, K, N] of LINEAR_SHAPES) {
        for (const withBias of [true, false]) {
          const seed = M * 1000003 + K * 1009 + N;
          const x = randn(M * K, seed), w = randn(N * K, seed + 1), b = withBias ? randn(N, seed + 2) : null;
          const ref = linearRef(x, w, b, M, K, N);
          const outs = engines.map((e) =>
            e.scope(() => {
              const lw = prepareLinear(e, w, b, N, K);
              const y = linear(e.fromArray(x, [M, K]), lw);
              expect(y.shape).toEqual([M, N]);
              return y.toArray();
            }),
          );
          const err = relErr(outs[0], ref);
          expect(err, `linear M=${M} K=${K} N=${N} bias=${withBias}`).toBeLessThanOrEqual(1e-5);
          for (let i = 1; i < outs.length; i++) expect(bitsEqual(outs[0], outs[i]), `M=${M} K=${K} N=${N}: ${THREADS[i]} threads differ from 1`).toBe(true);
        }
      }
    });

    it("linear keeps leading dims ([B, T, in] -> [B, T, out])", async () => {
      const e = engines[1];
      e.scope(() => {
        const x = randn(2 * 77 * 24, 5), w = randn(40 * 24, 6), b = randn(40, 7);
        const y = linear(e.fromArray(x, [2, 77, 24]), prepareLinear(e, w, b, 40, 24));
        expect(y.shape).toEqual([2, 77, 40]);
        expect(relErr(y.f32(), linearRef(x, w, b, 154, 24, 40))).toBeLessThanOrEqual(1e-5);
      });
    });

    it("K/M/panel blocking of the packed kernel does not change a single bit", async () => {
      const [M, K, N] = [61, 203, 37];
      const x = randn(M * K, 11), w = randn(N * K, 12), b = randn(N, 13);
      const results: Float32Array[] = [];
      for (const e of engines)
        for (const [kc, mcT, pb] of [[0, 0, 0], [7, 1, 0], [64, 3, 0], [200, 2, 0], [1, 100, 0], [7, 1, 1], [64, 3, 2]])
          results.push(
            e.scope(() => {
              const lw = prepareLinear(e, w, b, N, K);
              const xt = e.fromArray(x, [M, K]);
              const y = e.empty([M, N]);
              e.run("gemm_f32_packed", xt.ptr, K, lw.packed.ptr, lw.bias.ptr, y.ptr, N, M, N, K, kc, mcT, pb);
              return y.toArray();
            }),
          );
      expect(relErr(results[0], linearRef(x, w, b, M, K, N))).toBeLessThanOrEqual(1e-5);
      for (const r of results) expect(bitsEqual(results[0], r)).toBe(true);
    });

    it("packed kernel honours lda/ldc (row strides)", async () => {
      const e = engines[1];
      e.scope(() => {
        const [M, K, N, lda, ldc] = [9, 10, 11, 16, 20];
        const xs = randn(M * lda, 21), w = randn(N * K, 22);
        const x = new Float32Array(M * K);
        for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) x[i * K + k] = xs[i * lda + k];
        const lw = prepareLinear(e, w, null, N, K);
        const xt = e.fromArray(xs, [M, lda]);
        const y = e.zeros([M, ldc]);
        e.run("gemm_f32_packed", xt.ptr, lda, lw.packed.ptr, lw.bias.ptr, y.ptr, ldc, M, N, K, 0, 0, 0);
        const ref = linearRef(x, w, null, M, K, N);
        const got = new Float32Array(M * N);
        const yv = y.f32();
        for (let i = 0; i < M; i++) {
          for (let j = 0; j < N; j++) got[i * N + j] = yv[i * ldc + j];
          for (let j = N; j < ldc; j++) expect(yv[i * ldc + j]).toBe(0); // untouched
        }
        expect(relErr(got, ref)).toBeLessThanOrEqual(1e-5);
      });
    });

    it("matmul (general strided gemm_f32): plain, transposed, bias, accumulate", async () => {
      for (const [M, K, N] of [[1, 1, 1], [5, 13, 9], [33, 40, 17], [6, 8, 16], [70, 3, 130]] as const) {
        const seed = M * 7 + K * 13 + N;
        const a = randn(M * K, seed), bm = randn(K * N, seed + 1), bias = randn(N, seed + 2), c0 = randn(M * N, seed + 3);
        const aT = new Float32Array(K * M), bT = new Float32Array(N * K);
        for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) aT[k * M + i] = a[i * K + k];
        for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) bT[j * K + k] = bm[k * N + j];
        const ref = matmulRef(a, bm, M, K, N);
        const refBias = matmulRef(a, bm, M, K, N, bias);
        const refAcc = refBias.map((v, i) => v + c0[i]);
        const outs: Float32Array[][] = engines.map((e) =>
          e.scope(() => {
            const A = e.fromArray(a, [M, K]), B = e.fromArray(bm, [K, N]), At = e.fromArray(aT, [K, M]), Bt = e.fromArray(bT, [N, K]);
            const bt = e.fromArray(bias, [N]);
            const r1 = matmul(A, B).toArray();
            const r2 = matmul(At, B, { transA: true }).toArray();
            const r3 = matmul(A, Bt, { transB: true, bias: bt }).toArray();
            const r4 = matmul(At, Bt, { transA: true, transB: true, bias: bt, out: e.fromArray(c0, [M, N]), accumulate: true }).toArray();
            return [r1, r2, r3, r4];
          }),
        );
        const tag = `M=${M} K=${K} N=${N}`;
        expect(relErr(outs[0][0], ref), tag).toBeLessThanOrEqual(1e-5);
        expect(relErr(outs[0][1], ref), tag).toBeLessThanOrEqual(1e-5);
        expect(relErr(outs[0][2], refBias), tag).toBeLessThanOrEqual(1e-5);
        expect(relErr(outs[0][3], refAcc), tag).toBeLessThanOrEqual(1e-5);
        for (let t = 1; t < outs.length; t++) for (let r = 0; r < 4; r++) expect(bitsEqual(outs[0][r], outs[t][r]), `${tag} result ${r}`).toBe(true);
      }
    });

    it("peak_fma_f32 runs on every thread", async () => {
      const e = engines[2];
      const out = e.zeros([4 * 4]);
      e.run("peak_fma_f32", 1000, out.ptr);
      for (const v of out.f32()) expect(v).toBeGreaterThan(0);
      out.free();
    });
  });
}

describe("linear / matmul input errors", () => {
  let e: Engine;
  beforeAll(async () => {
    e = await Engine.create({ threads: 1, memoryBytes: 32 << 20 });
  });
  afterAll(() => e.close());

  it("shape mismatches name expected and got", async () => {
    const lw = prepareLinear(e, new Float32Array(6 * 4), null, 6, 4);
    expect(() => linear(e.zeros([3, 5]), lw)).toThrow(/expected input \[\.\.\., 4\].*got \[3,5\]/);
    expect(() => prepareLinear(e, new Float32Array(10), null, 6, 4)).toThrow(/expected weight of 6x4 = 24 values, got 10/);
    expect(() => prepareLinear(e, new Float32Array(24), new Float32Array(5), 6, 4)).toThrow(/expected bias of length 6, got 5/);
    expect(() => matmul(e.zeros([3, 4]), e.zeros([5, 2]))).toThrow(/inner dims differ: A gives K=4, B gives K=5/);
  });
});
