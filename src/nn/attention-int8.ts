// INT8 attention (issue #12 part 4): QK^T and P.V on the INT8 dot, online softmax with a cheap exp, over the
// kernels in assembly/attention_int8.ts (whose header defines the numerics); src/nn/reference/attention-int8.ts
// implements the same numerics in plain TypeScript, bit for bit.
//
// Schemes (the unsigned operand is Q and P, the signed one K and V, as the INT8 layers' activations and
// weights): "a8w7" Q and P 8-bit (Q symmetric +-127 stored with zero point 128, P on [0, 255]) x K and V 7-bit
// (+-63); "a7w8" Q +-63 (zero point 64), P [0, 127] x K, V +-127. The relaxed dot computes a7w8 exactly on
// every engine, a8w7 where the probe of src/nn/int8.ts proves it (x86: pmaddubsw pair sums 2 * 255 * 63 stay
// below 2^15); the i16 path computes both exactly (the baseline build, or asked for).
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { ATT_BQ } from "./tiling.ts";
import { INT8_FLAG_FUSED, INT8_FLAG_I16 } from "../../assembly/abi.ts";
import { exactSequences, int8Capabilities, preferFusedDot } from "./int8.ts";

export type Int8AttentionScheme = "a8w7" | "a7w8";

export interface Int8AttentionOptions {
  /** Operand bits (above); "auto" (default): a8w7 where a kernel computes it exactly, else a7w8. */
  scheme?: "auto" | Int8AttentionScheme;
  /** "auto" (default): the relaxed dot where exact for the scheme, else i16; "i16": the exact i16 path. */
  path?: "auto" | "i16";
  /** Relaxed dot sequence (same integers): "auto" (the faster on this engine, int8Capabilities), "fused", "split". */
  dot?: "auto" | "fused" | "split";
}

/** Keys per tile for head dim D (the kernel computes the same: test/attention-int8.test.ts). */
export function attInt8KeysPerTile(D: number): number {
  return D <= 96 ? 128 : 64;
}

/** Scratch bytes one thread of attention_int8 uses (the kernel computes the same: test/attention-int8.test.ts). */
export function attInt8ScratchBytes(D: number): number {
  const Dq = (D + 3) & ~3;
  const Dv = (D + 7) & ~7;
  const BK = attInt8KeysPerTile(D);
  return ATT_BQ * Dq * 2 + ATT_BQ * 4 + 16 * BK + 8 * BK + ATT_BQ * Dv * 4 + 8 * ATT_BQ + 256;
}

/** The ranges of a scheme: Q symmetric qmax (zero point qmax + 1), P [0, pmax], K and V symmetric kmax. */
export function int8AttentionRanges(scheme: Int8AttentionScheme): { qmax: number; pmax: number; kmax: number } {
  return scheme === "a8w7" ? { qmax: 127, pmax: 255, kmax: 63 } : { qmax: 63, pmax: 127, kmax: 127 };
}

export interface Int8AttentionPlan {
  scheme: Int8AttentionScheme;
  /** "i16", or the relaxed sequence: "fused" / "split". */
  path: "i16" | "fused" | "split";
  flags: number;
}

/** The scheme and kernel path INT8 attention takes on this engine for these options. */
export function int8AttentionPlan(eng: Engine, opts: Int8AttentionOptions = {}): Int8AttentionPlan {
  const relaxed = eng.simd === "relaxed" && opts.path !== "i16";
  // a8w7 unless only a7w8 runs on a relaxed sequence here (then a7w8 on it beats a8w7 on the i16 path)
  const a8w7 = exactSequences(eng, 255, 63);
  const scheme: Int8AttentionScheme = opts.scheme && opts.scheme !== "auto" ? opts.scheme : !relaxed || a8w7.fused || a8w7.split ? "a8w7" : "a7w8";
  if (!relaxed) return { scheme, path: "i16", flags: INT8_FLAG_I16 };
  const ex = scheme === "a8w7" ? a8w7 : exactSequences(eng, 127, 127);
  if (!ex.fused && !ex.split) {
    if (opts.path === undefined || opts.path === "auto") return { scheme, path: "i16", flags: INT8_FLAG_I16 };
  }
  const dot = opts.dot ?? "auto";
  if (dot === "fused" && !ex.fused) throw new RangeError(`INT8 attention: the fused dot is not exact for ${scheme} here (${int8Capabilities(eng).u8Reason})`);
  if (dot === "split" && !ex.split) throw new RangeError(`INT8 attention: the split dot is not exact for ${scheme} here (${int8Capabilities(eng).u8Reason})`);
  const fused = dot === "auto" ? ex.fused && (!ex.split || preferFusedDot(eng)) : dot === "fused";
  return { scheme, path: fused ? "fused" : "split", flags: fused ? INT8_FLAG_FUSED : 0 };
}

/**
 * softmax(scale * Q K^T) V per head with INT8 QK^T and P.V: q [B,Lq,H*D], k and v [B,Lk,H*D] (f32, heads
 * interleaved in the last dim). Returns [B,Lq,H*D] f32. Inference only (no causal mask, no lse).
 */
export function attentionInt8(q: Tensor, k: Tensor, v: Tensor, heads: number, scale: number | undefined, opts: Int8AttentionOptions = {}): Tensor {
  const [B, Lq, HD] = q.shape;
  const Lk = k.shape[1];
  const D = HD / heads;
  const eng = q.engine;
  const out = eng.empty([B, Lq, HD]);
  if (out.size === 0) return out;
  const plan = int8AttentionPlan(eng, opts);
  const { qmax, pmax, kmax } = int8AttentionRanges(plan.scheme);
  const Dq = (D + 3) & ~3, Dv = (D + 7) & ~7, Lk8 = (Lk + 7) & ~7, Lk4 = (Lk + 3) & ~3;
  const BH = B * heads;
  const ptrs: number[] = [];
  const alloc = (bytes: number) => {
    const p = eng.alloc(Math.max(16, bytes));
    ptrs.push(p);
    return p;
  };
  try {
    const kq = alloc(BH * Lk8 * Dq), ksc = alloc(BH * Lk8 * 4), kcorr = alloc(BH * Lk8 * 4);
    const vq = alloc(BH * Dv * Lk4), vsc = alloc(BH * Dv * 4), vmean = alloc(BH * Dv * 4);
    const prepScratch = alloc(eng.threads * Dv * 8);
    eng.run("attention_int8_prep", k.ptr, v.ptr, B, heads, Lk, D, HD, HD, kmax, qmax + 1, plan.flags, kq, ksc, kcorr, vq, vsc, vmean, prepScratch);
    const scratch = alloc(eng.threads * attInt8ScratchBytes(D));
    eng.run("attention_int8", q.ptr, kq, ksc, kcorr, vq, vsc, vmean, out.ptr, scratch, B, heads, Lq, Lk, D, HD, HD, scale ?? 1 / Math.sqrt(D), qmax, pmax, plan.flags);
  } finally {
    for (const p of ptrs) eng.free(p);
  }
  return out;
}
