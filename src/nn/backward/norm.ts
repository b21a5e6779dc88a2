// Backward of GroupNorm (NHWC, optionally with SiLU fused) and LayerNorm, over the kernels in
// assembly/norm_backward.ts. The forwards (src/nn/norm.ts) save what these need: pass
// { mean, rstd } tensors to groupNorm / layerNorm.
import type { Tensor } from "../../runtime/tensor.ts";
import { gnTiles, lnBlockRows } from "../tiling.ts";

/** Gradients of a normalisation layer: input, scale and shift. New tensors in the caller's scope. */
export interface NormGrads {
  dx: Tensor;
  dGamma: Tensor;
  dBeta: Tensor;
}

function checkF32(name: string, what: string, t: Tensor, size: number): void {
  if (t.dtype !== "f32" || t.size !== size) throw new Error(`${name}: ${what} must be f32 with ${size} values, got ${t.dtype} [${t.shape}]`);
}

/**
 * GroupNorm backward. dy: the gradient of the forward's output (of silu(norm) when the forward fused
 * SiLU: pass the same `silu`), shaped like x (NHWC [B,H,W,C], or [B,L,C] / [B,C]); x: the forward's
 * input; gamma, beta [C]; mean, rstd [B, groups]: the forward's saved statistics
 * (groupNorm(x, groups, gamma, beta, eps, { mean, rstd })). eps is not needed (it is inside rstd).
 * Returns dx (x's shape), dGamma, dBeta [C]; dGamma/dBeta sum over the batch in a fixed order.
 * Scratch: B * nTiles * 2 * C + B * 4 * C floats (nTiles = gnTiles(H*W), at most 256), freed on return.
 */
export function groupNormBackward(
  dy: Tensor, x: Tensor, groups: number, gamma: Tensor, beta: Tensor, mean: Tensor, rstd: Tensor, opts: { silu?: boolean } = {},
): NormGrads {
  const name = "groupNormBackward";
  if (x.dtype !== "f32" || x.shape.length < 2) throw new Error(`${name}: x must be f32 NHWC [B,H,W,C], got ${x.dtype} [${x.shape}]`);
  if (dy.dtype !== "f32" || dy.shape.length !== x.shape.length || dy.shape.some((d, i) => d !== x.shape[i]))
    throw new Error(`${name}: dy [${dy.shape}] must be f32 shaped like x [${x.shape}]`);
  const B = x.shape[0];
  const C = x.shape[x.shape.length - 1];
  const HW = x.shape.slice(1, -1).reduce((a, b) => a * b, 1);
  if (!Number.isInteger(groups) || groups < 1 || C % groups !== 0) throw new Error(`${name}: ${C} channels are not divisible into ${groups} groups`);
  checkF32(name, "gamma", gamma, C);
  checkF32(name, "beta", beta, C);
  checkF32(name, "mean", mean, B * groups);
  checkF32(name, "rstd", rstd, B * groups);
  const eng = x.engine;
  const dx = eng.empty(x.shape);
  const dGamma = eng.zeros([C]);
  const dBeta = eng.zeros([C]);
  if (x.size === 0) return { dx, dGamma, dBeta };
  const silu = opts.silu ? 1 : 0;
  const part = eng.alloc(B * gnTiles(HW) * 2 * C * 4);
  const coef = eng.alloc(B * 4 * C * 4);
  try {
    // with SiLU, pass 1 writes the norm output's gradient into dx, and pass 3 turns it into dx in place
    eng.run("groupnorm_backward_stats_f32", x.ptr, dy.ptr, mean.ptr, rstd.ptr, gamma.ptr, beta.ptr, part, B, HW, C, groups, silu, dx.ptr);
    eng.run("groupnorm_backward_finalize_f32", part, mean.ptr, rstd.ptr, gamma.ptr, coef, dGamma.ptr, dBeta.ptr, B, HW, C, groups);
    eng.run("groupnorm_backward_apply_f32", x.ptr, silu ? dx.ptr : dy.ptr, coef, dx.ptr, B, HW, C);
  } finally {
    eng.free(coef);
    eng.free(part);
  }
  return { dx, dGamma, dBeta };
}

/**
 * LayerNorm backward over the last dim: dy and x [..., C], gamma [C], mean/rstd [rows] saved by
 * layerNorm(x, gamma, beta, eps, { mean, rstd }). Returns dx (x's shape), dGamma, dBeta [C] (summed over
 * rows in fixed blocks, then the blocks in order). Scratch: ceil(rows / lnBlockRows(rows)) * 2 * C floats.
 */
export function layerNormBackward(dy: Tensor, x: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor): NormGrads {
  const name = "layerNormBackward";
  if (x.dtype !== "f32" || x.shape.length < 1) throw new Error(`${name}: x must be f32 [..., C], got ${x.dtype} [${x.shape}]`);
  if (dy.dtype !== "f32" || dy.shape.length !== x.shape.length || dy.shape.some((d, i) => d !== x.shape[i]))
    throw new Error(`${name}: dy [${dy.shape}] must be f32 shaped like x [${x.shape}]`);
  const C = x.shape[x.shape.length - 1];
  const rows = C === 0 ? 0 : x.size / C;
  checkF32(name, "gamma", gamma, C);
  checkF32(name, "mean", mean, rows);
  checkF32(name, "rstd", rstd, rows);
  const eng = x.engine;
  const dx = eng.empty(x.shape);
  const dGamma = eng.zeros([C]);
  const dBeta = eng.zeros([C]);
  if (x.size === 0) return { dx, dGamma, dBeta };
  const nBlk = Math.ceil(rows / lnBlockRows(rows));
  const part = eng.alloc(nBlk * 2 * C * 4);
  try {
    eng.run("layernorm_backward_f32", x.ptr, dy.ptr, mean.ptr, rstd.ptr, gamma.ptr, dx.ptr, part, rows, C);
    eng.run("layernorm_backward_reduce_f32", part, dGamma.ptr, dBeta.ptr, rows, C);
  } finally {
    eng.free(part);
  }
  return { dx, dGamma, dBeta };
}
