// Fused attention backward (flash-style, from the forward's saved log-sum-exp): dq, dk, dv against the f64
// reference at 1, 2 and 4 threads on both kernel builds (bit-identical across thread counts), and the
// reference against central finite differences of an f64 forward.
import { describe, it, expect } from "vitest";
import type { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { attention } from "../src/nn/attention.ts";
import { attentionBackward } from "../src/nn/backward/attention.ts";
import * as ref from "../src/nn/reference/ops.ts";
import { attentionF64, refAttentionBackward } from "../src/nn/reference/attention-backward.ts";
import { engineMatrix, VARIANTS } from "./support/engine-matrix.ts";

const { engines, check } = engineMatrix(64 << 20);

describe("fused attention backward", () => {
  // [B, H, Lq, Lk, D, causal, scale?, q/k std]
  const cases: [number, number, number, number, number, boolean, number | undefined, number][] = [
    [1, 1, 1, 1, 8, false, undefined, 1],
    [2, 8, 64, 64, 8, false, undefined, 1], // fashion-sd-tiny self-attention at 8x8, D 8
    [2, 8, 16, 77, 16, false, undefined, 1], // fashion-sd-tiny cross-attention at 4x4, D 16
    [2, 8, 64, 77, 8, false, undefined, 1], // cross-attention, 77 text tokens: two key blocks
    [1, 2, 77, 77, 40, true, undefined, 1], // causal
    [1, 2, 130, 130, 80, false, undefined, 1], // several key tiles / query tiles, D 80
    [1, 1, 65, 200, 160, false, undefined, 1], // D 160
    [1, 3, 17, 70, 5, false, undefined, 1], // D not a multiple of 4 (packed rows)
    [2, 2, 70, 70, 12, true, undefined, 1], // causal, D not a multiple of 8
    [1, 2, 50, 150, 20, false, 1.0, 2.5], // large logits, explicit scale
    [1, 1, 1, 77, 64, false, undefined, 1], // one query
    [1, 4, 77, 1, 16, false, undefined, 1], // one key
    [1, 1, 129, 129, 3, true, undefined, 1],
    [1, 2, 300, 300, 40, true, undefined, 1], // causal over several key blocks and query tiles
    [1, 2, 200, 100, 40, false, undefined, 1],
  ];
  for (const simd of VARIANTS)
    for (const [B, H, Lq, Lk, D, causal, scale, std] of cases)
      it(`B=${B} H=${H} Lq=${Lq} Lk=${Lk} D=${D}${causal ? " causal" : ""}${scale ? ` scale=${scale}` : ""} (${simd})`, () => {
        const r = ref.rng(B * 7 + H * 131 + Lq * 3 + Lk + D);
        const q = r.normals(B * Lq * H * D, std);
        const k = r.normals(B * Lk * H * D, std);
        const v = r.normals(B * Lk * H * D);
        const dO = r.normals(B * Lq * H * D);
        const e = refAttentionBackward(dO, q, k, v, B, Lq, Lk, H, D, scale ?? 1 / Math.sqrt(D), causal);
        check(
          simd,
          (eng) => {
            const qt = eng.fromArray(q, [B, Lq, H * D]);
            const kt = eng.fromArray(k, [B, Lk, H * D]);
            const vt = eng.fromArray(v, [B, Lk, H * D]);
            const lse = eng.empty([B, H, Lq]);
            const out = attention(qt, kt, vt, H, { causal, scale, lse });
            const g = attentionBackward(eng.fromArray(dO, [B, Lq, H * D]), qt, kt, vt, out, lse, H, { causal, scale });
            expect(g.dq.shape).toEqual([B, Lq, H * D]);
            expect(g.dk.shape).toEqual([B, Lk, H * D]);
            return [g.dq, g.dk, g.dv];
          },
          [e.dq, e.dk, e.dv],
          1e-4,
        );
      });

  it("reference against finite differences (self, cross, causal)", () => {
    // [B, H, Lq, Lk, D, causal]
    for (const [B, H, Lq, Lk, D, causal] of [[1, 2, 4, 4, 3, false], [2, 1, 3, 5, 2, false], [1, 2, 5, 5, 3, true]] as const) {
      const r = ref.rng(Lq * 10 + Lk);
      const q = Float64Array.from(r.normals(B * Lq * H * D));
      const k = Float64Array.from(r.normals(B * Lk * H * D));
      const v = Float64Array.from(r.normals(B * Lk * H * D));
      const w = Float64Array.from(r.normals(B * Lq * H * D));
      const scale = 0.7;
      const g = refAttentionBackward(w, q, k, v, B, Lq, Lk, H, D, scale, causal);
      const p = [q, k, v];
      const grads = [g.dq, g.dk, g.dv];
      const loss = () => {
        const o = attentionF64(p[0], p[1], p[2], B, Lq, Lk, H, D, scale, causal).out;
        let s = 0;
        for (let i = 0; i < o.length; i++) s += w[i] * o[i];
        return s;
      };
      const h = 1e-5;
      for (let t = 0; t < 3; t++) {
        let worst = 0, mx = 0;
        for (let i = 0; i < p[t].length; i++) {
          const x0 = p[t][i];
          p[t][i] = x0 + h;
          const lp = loss();
          p[t][i] = x0 - h;
          const lm = loss();
          p[t][i] = x0;
          worst = Math.max(worst, Math.abs((lp - lm) / (2 * h) - grads[t][i]));
          mx = Math.max(mx, Math.abs(grads[t][i]));
        }
        expect(worst / mx, `finite differences, ${["dq", "dk", "dv"][t]} (B=${B} Lq=${Lq} Lk=${Lk}${causal ? " causal" : ""})`).toBeLessThanOrEqual(1e-6);
      }
    }
  });

  it("bad arguments throw clear errors", () => {
    const eng = engines.baseline[0];
    eng.scope(() => {
      const q = eng.zeros([1, 4, 16]);
      const kv = eng.zeros([1, 5, 16]);
      const lse = eng.zeros([1, 2, 4]);
      expect(() => attentionBackward(q, q, kv, kv, q, eng.zeros([1, 2, 5]), 2)).toThrow(/lse must be f32 with 8 values/);
      expect(() => attentionBackward(q, q, kv, eng.zeros([1, 6, 16]), q, lse, 2)).toThrow(/k \[1,5,16\] and v \[1,6,16\]/);
      expect(() => attentionBackward(eng.zeros([1, 5, 16]), q, kv, kv, q, lse, 2)).toThrow(/dOut \[1,5,16\] must match q/);
      expect(() => attentionBackward(q, q, kv, kv, q, lse, 3)).toThrow(/not divisible into 3 heads/);
    });
  });
});
