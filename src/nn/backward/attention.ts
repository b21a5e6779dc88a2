// Backward of the fused attention and the last-dim softmax (src/nn/attention.ts), over the kernels in
// assembly/attention_backward.ts.
import type { Tensor } from "../../runtime/tensor.ts";
import { attBwdScratchFloats } from "../tiling.ts";


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
 * Two kernel calls: rowsum(dOut o out) per query, then one work unit per (batch, head) that walks the key
 * blocks and query tiles in order (so every sum has a fixed order). Parallelism is B*heads units.
 * Scratch: B*H*Lq + threads * attBwdScratchFloats(D, Lq) floats, freed on return.
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
  const scratch = eng.alloc(eng.threads * attBwdScratchFloats(D, Lq) * 4);
  try {
    eng.run("attention_backward_prep_f32", out.ptr, dOut.ptr, dvec, B, heads, Lq, D, HD, HD);
    eng.run("attention_backward_f32", q.ptr, k.ptr, v.ptr, dOut.ptr, lse.ptr, dvec, dq.ptr, dk.ptr, dv.ptr, scratch, B, heads, Lq, Lk, D, HD, HD, HD, HD, HD, HD, HD, scale, causal);
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
