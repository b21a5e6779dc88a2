// Backward of the fused attention and the last-dim softmax (src/nn/attention.ts), over the kernels in
// assembly/attention_backward.ts.
import type { Tensor } from "../../runtime/tensor.ts";
import { ATT_BQ, attBK } from "../attention.ts";

/** Keys per dK/dV work unit (must match ATT_BWD_KB in assembly/attention_backward.ts). */
export const ATT_BWD_KB = 64;

/** Queries per tile of the dK/dV pass for head dim D (must match attBwdQTile in the kernel file). */
export function attBwdQTile(D: number): number {
  return D <= 24 ? 128 : D <= 48 ? 64 : D <= 96 ? 32 : 16;
}

/** Scratch floats one thread of the attention backward kernels uses for head dim D (the larger pass). */
export function attBwdScratchFloats(D: number): number {
  const Dp = (D + 7) & ~7;
  const SPS = 128;
  const bqa = attBwdQTile(D);
  const dkdv = 4 * ATT_BWD_KB * Dp + 4 * bqa * Dp + 8 * SPS + 2 * bqa + 16;
  const dq = 3 * attBK(D) * Dp + 3 * ATT_BQ * Dp + 4 * SPS + 2 * ATT_BQ + 16;
  return Math.max(dkdv, dq);
}

export interface AttentionBackwardOptions {
  /** The forward's causal flag. */
  causal?: boolean;
  /** The forward's score scale (default 1/sqrt(D)). */
  scale?: number;
}

export interface AttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

/**
 * Backward of attention(q, k, v, heads, opts): dOut [B,Lq,H*D] the gradient of its output; q [B,Lq,H*D],
 * k, v [B,Lk,H*D] its inputs, out its output and lse [B,H,Lq] the log-sum-exp it saved
 * (attention(q, k, v, heads, { lse })). Returns dq, dk, dv (new tensors, shaped like q, k, v), computed
 * flash-style: P is recomputed tile by tile from q, k and lse, the score matrix never exists.
 * Three kernel calls: rowsum(dOut o out) per query, dK/dV (units of 64 keys, queries summed in order),
 * dQ (units of 64 queries, keys summed in order). Scratch: B*H*Lq + threads * attBwdScratchFloats(D) floats.
 */
export function attentionBackward(dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, heads: number, opts: AttentionBackwardOptions = {}): AttentionGrads {
  const name = "attentionBackward";
  for (const [n, t] of [["dOut", dOut], ["q", q], ["k", k], ["v", v], ["out", out]] as const) {
    if (t.dtype !== "f32") throw new TypeError(`${name}: ${n} must be f32, got ${t.dtype}`);
    if (t.shape.length !== 3) throw new Error(`${name}: ${n} must be [B, L, heads*D], got [${t.shape}]`);
  }
  const [B, Lq, HD] = q.shape;
  const Lk = k.shape[1];
  const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
  if (!same(out.shape, q.shape) || !same(dOut.shape, q.shape)) throw new Error(`${name}: out [${out.shape}] and dOut [${dOut.shape}] must match q [${q.shape}]`);
  if (k.shape[0] !== B || k.shape[2] !== HD || !same(v.shape, k.shape)) throw new Error(`${name}: k [${k.shape}] and v [${v.shape}] must be [${B}, Lk, ${HD}]`);
  if (!Number.isInteger(heads) || heads < 1 || HD % heads !== 0) throw new Error(`${name}: ${HD} channels are not divisible into ${heads} heads`);
  if (Lk === 0 && Lq > 0) throw new Error(`${name}: no keys (Lk = 0)`);
  if (lse.dtype !== "f32" || lse.size !== B * heads * Lq) throw new Error(`${name}: lse must be f32 with ${B * heads * Lq} values (the forward's opts.lse)`);
  const D = HD / heads;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const causal = opts.causal ? 1 : 0;
  const eng = q.engine;
  const dq = eng.empty(q.shape);
  const dk = eng.empty(k.shape);
  const dv = eng.empty(v.shape);
  if (Lq === 0 || B === 0 || HD === 0) {
    // no queries: nothing reaches k or v
    new Float32Array(eng.memory.buffer, dk.ptr, dk.size).fill(0);
    new Float32Array(eng.memory.buffer, dv.ptr, dv.size).fill(0);
    return { dq, dk, dv };
  }
  const dvec = eng.alloc(B * heads * Lq * 4);
  const scratch = eng.alloc(eng.threads * attBwdScratchFloats(D) * 4);
  try {
    eng.run("attention_backward_prep_f32", out.ptr, dOut.ptr, dvec, B, heads, Lq, D, HD, HD);
    eng.run("attention_backward_dkdv_f32", q.ptr, k.ptr, v.ptr, dOut.ptr, lse.ptr, dvec, dk.ptr, dv.ptr, scratch, B, heads, Lq, Lk, D, HD, HD, HD, HD, HD, HD, scale, causal);
    eng.run("attention_backward_dq_f32", q.ptr, k.ptr, v.ptr, dOut.ptr, lse.ptr, dvec, dq.ptr, scratch, B, heads, Lq, Lk, D, HD, HD, HD, HD, HD, scale, causal);
  } finally {
    eng.free(scratch);
    eng.free(dvec);
  }
  return { dq, dk, dv };
}

/** Backward of softmax(x) over the last dim, from its output y: dx = y o (dy - rowsum(dy o y)). */
export function softmaxBackward(dy: Tensor, y: Tensor): Tensor {
  if (dy.dtype !== "f32" || y.dtype !== "f32") throw new TypeError("softmaxBackward: expected f32 tensors");
  if (y.shape.length < 1 || dy.shape.length !== y.shape.length || dy.shape.some((d, i) => d !== y.shape[i]))
    throw new Error(`softmaxBackward: dy [${dy.shape}] must match y [${y.shape}]`);
  const N = y.shape[y.shape.length - 1];
  const dx = y.engine.empty(y.shape);
  if (y.size > 0) y.engine.run("softmax_backward_f32", y.ptr, dy.ptr, dx.ptr, y.size / N, N);
  return dx;
}
