// INT8 attention (src/nn/attention-int8.ts over assembly/attention_int8.ts): bit for bit against the plain
// TypeScript reference on every kernel path (i16 on both builds, the split and fused relaxed dots where they
// are exact for the scheme), at 1, 2 and 4 threads; accuracy against f64 attention (including K and V with
// large channel offsets, which the smoothing removes); the op's plan and its errors.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { attention } from "../src/nn/attention.ts";
import { attInt8KeysPerTile, attInt8ScratchBytes, int8AttentionPlan, type Int8AttentionOptions, type Int8AttentionScheme } from "../src/nn/attention-int8.ts";
import { exactSequences } from "../src/nn/int8.ts";
import { attentionInt8Ref, exp2sRef, expQRef } from "../src/nn/reference/attention-int8.ts";
import * as ref from "../src/nn/reference/ops.ts";

const THREADS = [1, 2, 4];
const engines: Record<"baseline" | "relaxed", Engine[]> = { baseline: [], relaxed: [] };

beforeAll(async () => {
  for (const simd of ["baseline", "relaxed"] as const) engines[simd] = await Promise.all(THREADS.map((threads) => Engine.create({ threads, simd, memoryBytes: 64 << 20 })));
});
afterAll(() => Object.values(engines).flat().forEach((e) => e.close()));

function run(eng: Engine, q: Float32Array, k: Float32Array, v: Float32Array, B: number, Lq: number, Lk: number, H: number, D: number, int8: Int8AttentionOptions, scale?: number): Float32Array {
  return eng.scope(() => attention(eng.fromArray(q, [B, Lq, H * D]), eng.fromArray(k, [B, Lk, H * D]), eng.fromArray(v, [B, Lk, H * D]), H, { int8, scale }).toArray() as Float32Array);
}

function firstDiff(got: Float32Array, want: Float32Array): string | null {
  const bits = ref.firstBitDiff(got, want);
  return bits < 0 ? null : `first difference at ${bits}: ${got[bits]} vs ${want[bits]}`;
}

// [B, H, Lq, Lk, D, K channel offset, scale?]
const cases: [number, number, number, number, number, number, number?][] = [
  [1, 1, 1, 1, 8, 0],
  [2, 2, 77, 77, 40, 0], // one partial key tile
  [1, 2, 70, 300, 40, 3], // several tiles, a partial last one, K offsets
  [2, 1, 33, 77, 64, 0], // cross-attention shape
  [1, 2, 130, 130, 80, 0],
  [1, 1, 65, 150, 160, 0], // D > 96: 64-key tiles
  [1, 3, 17, 70, 5, 0], // D not a multiple of 4
  [1, 2, 19, 41, 12, 0], // D a multiple of 4, not of 8
  [1, 1, 50, 200, 20, 0, 1.0], // large logits: the online max rescaling matters
  [1, 4, 9, 1, 16, 0], // one key
];

/** The kernel paths to compare with the reference on an engine: all that are exact there. */
function paths(eng: Engine, scheme: Int8AttentionScheme): { name: string; opts: Int8AttentionOptions }[] {
  const list: { name: string; opts: Int8AttentionOptions }[] = [{ name: "i16", opts: { scheme, path: "i16" } }];
  if (eng.simd !== "relaxed") return list;
  const ex = scheme === "a8w7" ? exactSequences(eng, 255, 63) : exactSequences(eng, 127, 127);
  if (ex.split) list.push({ name: "split", opts: { scheme, dot: "split" } });
  if (ex.fused) list.push({ name: "fused", opts: { scheme, dot: "fused" } });
  return list;
}

describe("INT8 attention: kernel = reference, bit for bit", () => {
  for (const scheme of ["a8w7", "a7w8"] as const)
    for (const [B, H, Lq, Lk, D, off, scale] of cases)
      it(`${scheme} B=${B} H=${H} Lq=${Lq} Lk=${Lk} D=${D}${off ? ` K offset ${off}` : ""}${scale ? ` scale ${scale}` : ""}`, () => {
        const r = ref.rng(B * 7 + H * 131 + Lq * 3 + Lk + D);
        const q = r.normals(B * Lq * H * D, scale ? 2.5 : 1);
        const k = r.normals(B * Lk * H * D, scale ? 2.5 : 1);
        for (let i = 0; i < k.length; i++) k[i] += off * (((i % (H * D)) % 3) - 1);
        const v = r.normals(B * Lk * H * D, 1, 0.5);
        const want = attentionInt8Ref(q, k, v, B, Lq, Lk, H, D, scheme, scale);
        let ran = 0;
        for (const simd of ["baseline", "relaxed"] as const)
          for (const [ti, eng] of engines[simd].entries())
            for (const p of paths(eng, scheme)) {
              const got = run(eng, q, k, v, B, Lq, Lk, H, D, p.opts, scale);
              expect(firstDiff(got, want), `${simd} ${p.name}, ${THREADS[ti]} threads`).toBeNull();
              ran++;
            }
        expect(ran).toBeGreaterThanOrEqual(2 * THREADS.length);
      });
});

describe("INT8 attention: accuracy", () => {
  /** RMS error against f64 attention, relative to the RMS of the output around V's channel means. */
  function rmsErr(B: number, H: number, Lq: number, Lk: number, D: number, off: number, scheme: Int8AttentionScheme, seed: number): number {
    const r = ref.rng(seed);
    const q = r.normals(B * Lq * H * D, 1.5);
    const k = r.normals(B * Lk * H * D, 1.5);
    const v = r.normals(B * Lk * H * D);
    const vOff = (i: number) => off * Math.cos(i % (H * D));
    for (let i = 0; i < k.length; i++) {
      k[i] += off * Math.sin(i % (H * D));
      v[i] += vOff(i);
    }
    const exact = ref.refAttention(q, k, v, B, Lq, Lk, H, D).out;
    const got = run(engines.relaxed[1], q, k, v, B, Lq, Lk, H, D, { scheme });
    let se = 0, so = 0;
    for (let i = 0; i < got.length; i++) {
      se += (got[i] - exact[i]) ** 2;
      so += (exact[i] - vOff(i)) ** 2;
    }
    const err = Math.sqrt(se / so);
    if (process.env.SHOW_ERR) console.log(`ERR ${scheme} ${Lq}x${Lk} D${D} off ${off}: ${err.toExponential(2)}`);
    return err;
  }
  // measured on these inputs (SHOW_ERR=1): 2-4% (the schemes' rounding: QK, P and V contribute about equally)
  for (const scheme of ["a8w7", "a7w8"] as const) {
    it(`${scheme}: RMS error of a few percent`, () => {
      expect(rmsErr(1, 2, 64, 256, 40, 0, scheme, 1)).toBeLessThan(0.05);
      expect(rmsErr(1, 1, 32, 512, 80, 0, scheme, 2)).toBeLessThan(0.05);
    });
    it(`${scheme}: K and V channel offsets of 20 std cost nothing (smoothing)`, () => {
      const base = rmsErr(1, 2, 64, 256, 40, 0, scheme, 3);
      expect(rmsErr(1, 2, 64, 256, 40, 20, scheme, 3)).toBeLessThan(1.25 * base);
    });
  }
});

describe("INT8 attention: pieces", () => {
  it("the exp of P: pmax exactly at 0, monotone, within rounding of pmax * 2^x; 0 far below", () => {
    for (const pmax of [255, 127]) {
      expect(expQRef(0, pmax)).toBe(pmax);
      expect(expQRef(-Infinity, pmax)).toBe(0);
      expect(expQRef(-10, pmax)).toBe(0);
      let prev = pmax;
      for (let x = 0; x >= -12; x -= 1 / 64) {
        const p = expQRef(Math.fround(x), pmax);
        expect(p).toBeLessThanOrEqual(prev);
        expect(Math.abs(p - pmax * 2 ** x)).toBeLessThanOrEqual(0.5 + pmax * 2 ** x * 1.3e-4);
        prev = p;
      }
    }
  });
  it("the rescaling exp: 1 at 0, 0 at -inf, relative error < 3e-7", () => {
    expect(exp2sRef(0)).toBe(1);
    expect(exp2sRef(-Infinity)).toBe(0);
    for (let x = 0; x > -100; x -= 0.37) expect(Math.abs(exp2sRef(Math.fround(x)) / 2 ** Math.fround(x) - 1)).toBeLessThan(3e-7);
  });
  it("tile and scratch sizes agree with the kernel's", () => {
    const ex = engines.relaxed[0].pool.exports;
    const scratch = ex.abi_att_int8_scratch_bytes as (d: number) => number;
    const keys = ex.abi_att_int8_keys_per_tile as (d: number) => number;
    for (let D = 1; D <= 512; D++) {
      expect(attInt8ScratchBytes(D), `D=${D}`).toBe(scratch(D));
      expect(attInt8KeysPerTile(D), `D=${D}`).toBe(keys(D));
    }
  });
  it("the plan: i16 on the baseline build; a8w7 on a relaxed sequence where exact, else a7w8", () => {
    expect(int8AttentionPlan(engines.baseline[0])).toMatchObject({ scheme: "a8w7", path: "i16" });
    const eng = engines.relaxed[0];
    const ex = exactSequences(eng, 255, 63);
    const plan = int8AttentionPlan(eng);
    if (ex.fused || ex.split) expect(plan.scheme).toBe("a8w7");
    else expect(plan.scheme).toBe("a7w8");
    expect(plan.path).not.toBe("i16");
    expect(int8AttentionPlan(eng, { path: "i16" }).path).toBe("i16");
  });
  it("causal, lse and gradients are refused", () => {
    const eng = engines.relaxed[0];
    eng.scope(() => {
      const x = eng.zeros([1, 4, 8]);
      expect(() => attention(x, x, x, 1, { int8: true, causal: true })).toThrow(/causal/);
      expect(() => attention(x, x, x, 1, { int8: true, lse: eng.zeros([1, 1, 4]) })).toThrow(/lse/);
    });
  });
});
