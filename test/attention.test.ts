import { describe, it, expect } from "vitest";
import type { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { attention, softmax } from "../src/nn/attention.ts";
import * as ref from "../src/nn/reference/ops.ts";
import { engineMatrix, VARIANTS } from "./support/engine-matrix.ts";

const { engines, check } = engineMatrix(64 << 20);

describe("fused attention", () => {
  // [B, H, Lq, Lk, D, causal, scale?, data std]
  const cases: [number, number, number, number, number, boolean, number | undefined, number][] = [
    [1, 1, 1, 1, 8, false, undefined, 1],
    [2, 8, 77, 77, 8, false, undefined, 1],
    [1, 2, 77, 77, 40, true, undefined, 1], // CLIP-style causal self-attention
    [2, 1, 33, 77, 64, false, undefined, 1], // cross-attention Lq != Lk
    [1, 8, 100, 77, 40, false, undefined, 1],
    [1, 2, 130, 130, 80, false, undefined, 1],
    [1, 1, 65, 200, 160, false, undefined, 1],
    [1, 3, 17, 70, 5, false, undefined, 1], // D not a multiple of 4
    [2, 2, 70, 70, 12, true, undefined, 1], // causal, several key tiles
    [1, 2, 50, 150, 20, false, 1.0, 2.5], // large logits: online max rescaling matters
    [1, 1, 1, 77, 64, false, undefined, 1], // one query
    [1, 4, 77, 1, 16, false, undefined, 1], // one key
    [1, 1, 129, 129, 3, true, undefined, 1],
    [1, 2, 300, 300, 40, true, undefined, 1], // causal over several key tiles and query blocks
  ];
  for (const simd of VARIANTS)
    for (const [B, H, Lq, Lk, D, causal, scale, std] of cases)
      it(`B=${B} H=${H} Lq=${Lq} Lk=${Lk} D=${D}${causal ? " causal" : ""}${scale ? ` scale=${scale}` : ""} (${simd})`, () => {
        const r = ref.rng(B * 7 + H * 131 + Lq * 3 + Lk + D);
        const q = r.normals(B * Lq * H * D, std);
        const k = r.normals(B * Lk * H * D, std);
        const v = r.normals(B * Lk * H * D);
        const e = ref.refAttention(q, k, v, B, Lq, Lk, H, D, scale ?? 1 / Math.sqrt(D), causal);
        check(
          simd,
          (eng) => {
            const lse = eng.empty([B, H, Lq]);
            const out = attention(eng.fromArray(q, [B, Lq, H * D]), eng.fromArray(k, [B, Lk, H * D]), eng.fromArray(v, [B, Lk, H * D]), H, { causal, scale, lse });
            expect(out.shape).toEqual([B, Lq, H * D]);
            return [out, lse];
          },
          [e.out, e.lse],
          2e-5,
        );
      });

  it("bad shapes throw clear errors", async () => {
    const eng = engines.baseline[0];
    eng.scope(() => {
      const q = eng.zeros([1, 4, 16]);
      expect(() => attention(q, eng.zeros([1, 5, 8]), eng.zeros([1, 5, 8]), 2)).toThrow(/q and k dims differ/);
      expect(() => attention(q, eng.zeros([1, 5, 16]), eng.zeros([1, 6, 16]), 2)).toThrow(/v \[1,6,16\] must match k/);
      expect(() => attention(q, q, q, 3)).toThrow(/16 channels are not divisible into 3 heads/);
      expect(() => attention(q, eng.zeros([2, 4, 16]), eng.zeros([2, 4, 16]), 2)).toThrow(/batch mismatch/);
      expect(() => attention(eng.zeros([4, 16]), q, q, 2)).toThrow(/must be \[B, L, heads\*D\]/);
    });
  });
});

describe("softmax (last dim)", () => {
  for (const simd of VARIANTS)
    it(`rows of 77, 1, 1000 and 13, with large values and -inf (${simd})`, async () => {
      for (const [rows, N] of [[5, 77], [3, 1], [2, 1000], [4, 13]]) {
        const r = ref.rng(rows + N);
        const x = r.normals(rows * N, 20, 50);
        if (N > 2) x[1] = -Infinity;
        check(simd, (eng) => [softmax(eng.fromArray(x, [rows, N]))], [ref.refSoftmax(x, rows, N)], 1e-5);
      }
    });
});
