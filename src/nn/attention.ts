// Fused multi-head attention and softmax over the kernels in assembly/attention.ts.
import type { Tensor } from "../runtime/tensor.ts";
import { attScratchFloats } from "./tiling.ts";
import { recorder } from "./record.ts";
import { attentionBackward, softmaxBackward } from "./backward/attention.ts";
import { attentionInt8, type Int8AttentionOptions } from "./attention-int8.ts";

export interface AttentionOptions {
  /** Mask keys j > i for query i (top-left aligned, like torch's is_causal). */
  causal?: boolean;
  /** Score scale (default 1/sqrt(D)). */
  scale?: number;
  /** Receives logsumexp_j(scale * q_i . k_j) per [B, heads, Lq] (f32), for a backward pass. */
  lse?: Tensor;
  /** INT8 QK^T and P.V (src/nn/attention-int8.ts; the INT8 denoising steps): inference only, no causal, no lse. */
  int8?: boolean | Int8AttentionOptions;
}

/**
 * softmax(scale * Q K^T) V per head, fused: q [B,Lq,H*D], k and v [B,Lk,H*D] with heads interleaved
 * in the last dim. Returns [B,Lq,H*D]. The score matrix is never materialised.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, heads: number, opts: AttentionOptions = {}): Tensor {
  const rec = recorder(q.engine, q, k, v);
  if (rec && opts.int8) throw new Error("attention: INT8 attention is inference only (no gradients)");
  if (!rec) return attentionForward(q, k, v, heads, opts);
  // training: keep the log-sum-exp; backward recomputes the scores from it
  const lse = opts.lse ?? q.engine.empty([q.shape[0], heads, q.shape[1]]);
  const out = attentionForward(q, k, v, heads, { ...opts, lse });
  rec.record({
    name: "attention",
    inputs: [q, k, v],
    outputs: [out],
    saved: [q, k, v, out, lse],
    backward: ([dOut]) => {
      const g = attentionBackward(dOut, q, k, v, out, lse, heads, { causal: opts.causal, scale: opts.scale });
      return [g.dq, g.dk, g.dv];
    },
  });
  return out;
}

function attentionForward(q: Tensor, k: Tensor, v: Tensor, heads: number, opts: AttentionOptions): Tensor {
  for (const [n, t] of [["q", q], ["k", k], ["v", v]] as const) {
    if (t.dtype !== "f32") throw new TypeError(`attention: ${n} must be f32, got ${t.dtype}`);
    if (t.shape.length !== 3) throw new Error(`attention: ${n} must be [B, L, heads*D], got [${t.shape}]`);
  }
  const [B, Lq, HD] = q.shape;
  const Lk = k.shape[1];
  if (k.shape[0] !== B || v.shape[0] !== B) throw new Error(`attention: batch mismatch q [${q.shape}], k [${k.shape}], v [${v.shape}]`);
  if (k.shape[2] !== HD) throw new Error(`attention: q and k dims differ: q [${q.shape}], k [${k.shape}]`);
  if (v.shape[1] !== Lk || v.shape[2] !== HD) throw new Error(`attention: v [${v.shape}] must match k [${k.shape}]`);
  if (!Number.isInteger(heads) || heads < 1 || HD % heads !== 0) throw new Error(`attention: ${HD} channels are not divisible into ${heads} heads`);
  const D = HD / heads;
  if (Lk === 0 && Lq > 0) throw new Error("attention: no keys (Lk = 0)");
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  if (opts.lse && (opts.lse.dtype !== "f32" || opts.lse.size !== B * heads * Lq)) throw new Error(`attention: opts.lse must be f32 with ${B * heads * Lq} values`);
  if (opts.int8) {
    if (opts.causal || opts.lse) throw new Error("attention: INT8 attention supports neither causal masking nor lse");
    return attentionInt8(q, k, v, heads, scale, opts.int8 === true ? {} : opts.int8);
  }
  const eng = q.engine;
  const out = eng.empty([B, Lq, HD]);
  if (out.size === 0) return out;
  const scratch = eng.alloc(eng.threads * attScratchFloats(D) * 4);
  try {
    eng.run("attention_f32", q.ptr, k.ptr, v.ptr, out.ptr, opts.lse?.ptr ?? 0, scratch, B, heads, Lq, Lk, D, HD, HD, HD, HD, scale, opts.causal ? 1 : 0);
  } finally {
    eng.free(scratch);
  }
  return out;
}

/** Numerically stable softmax over the last dim. */
export function softmax(x: Tensor): Tensor {
  if (x.dtype !== "f32") throw new TypeError(`softmax: expected f32, got ${x.dtype}`);
  if (x.shape.length < 1) throw new Error("softmax: expected at least one dim");
  const N = x.shape[x.shape.length - 1];
  const out = x.engine.empty(x.shape);
  if (x.size > 0) x.engine.run("softmax_f32", x.ptr, out.ptr, x.size / N, N);
  recorder(x.engine, x)?.record({ name: "softmax", inputs: [x], outputs: [out], saved: [out], backward: ([dy]) => [softmaxBackward(dy, out)] });
  return out;
}
