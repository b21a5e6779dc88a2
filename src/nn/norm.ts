// GroupNorm (NHWC) and LayerNorm over the kernels in assembly/norm.ts.
import type { Tensor } from "../runtime/tensor.ts";
import { gnTiles } from "./tiling.ts";
import { recorder } from "./record.ts";
import { groupNormBackward, layerNormBackward } from "./backward/norm.ts";

export interface GroupNormOptions {
  /** Fuse SiLU into the output: silu(groupNorm(x)). */
  silu?: boolean;
  /** Receives the per-(batch, group) mean [B, G] (f32) for a backward pass. */
  mean?: Tensor;
  /** Receives the per-(batch, group) 1/sqrt(var + eps) [B, G] (f32) for a backward pass. */
  rstd?: Tensor;
}

function checkVec(name: string, what: string, t: Tensor, C: number): void {
  if (t.dtype !== "f32" || t.size !== C) throw new Error(`${name}: ${what} must be f32 with ${C} values, got ${t.dtype} [${t.shape}]`);
}

/**
 * GroupNorm over an NHWC map x [B,H,W,C] (also accepts [B,L,C] or [B,C]): channels are split into
 * `groups` consecutive groups; each (batch, group) is normalised over its channels and all positions,
 * then y = norm * gamma[c] + beta[c]. Two-pass channel-parallel: statistics kernel (f64 shifted sums
 * per channel and spatial tile), a tiny per-group reduction, then the normalisation pass (optionally
 * with SiLU fused).
 */
export function groupNorm(x: Tensor, groups: number, gamma: Tensor, beta: Tensor, eps: number, opts: GroupNormOptions = {}): Tensor {
  const rec = recorder(x.engine, x, gamma, beta);
  if (!rec) return groupNormForward(x, groups, gamma, beta, eps, opts);
  // training: keep the statistics the backward pass needs
  const eng = x.engine;
  const mean = opts.mean ?? eng.empty([x.shape[0], groups]);
  const rstd = opts.rstd ?? eng.empty([x.shape[0], groups]);
  const y = groupNormForward(x, groups, gamma, beta, eps, { ...opts, mean, rstd });
  rec.record({
    name: "groupNorm",
    inputs: [x, gamma, beta],
    outputs: [y],
    saved: [x, gamma, beta, mean, rstd],
    backward: ([dy]) => {
      const g = groupNormBackward(dy, x, groups, gamma, beta, mean, rstd, { silu: !!opts.silu });
      return [g.dx, g.dGamma, g.dBeta];
    },
  });
  return y;
}

function groupNormForward(x: Tensor, groups: number, gamma: Tensor, beta: Tensor, eps: number, opts: GroupNormOptions): Tensor {
  if (x.dtype !== "f32") throw new TypeError(`groupNorm: expected f32 input, got ${x.dtype}`);
  if (x.shape.length < 2) throw new Error(`groupNorm: expected NHWC [B,H,W,C], got [${x.shape}]`);
  const B = x.shape[0];
  const C = x.shape[x.shape.length - 1];
  const HW = x.shape.slice(1, -1).reduce((a, b) => a * b, 1);
  if (!Number.isInteger(groups) || groups < 1 || C % groups !== 0)
    throw new Error(`groupNorm: ${C} channels are not divisible into ${groups} groups`);
  checkVec("groupNorm", "gamma", gamma, C);
  checkVec("groupNorm", "beta", beta, C);
  for (const [k, t] of [["mean", opts.mean], ["rstd", opts.rstd]] as const)
    if (t && (t.dtype !== "f32" || t.size !== B * groups)) throw new Error(`groupNorm: opts.${k} must be f32 with ${B * groups} values`);
  const eng = x.engine;
  const out = eng.empty(x.shape);
  if (x.size === 0) return out;
  const nT = gnTiles(HW);
  const part = eng.alloc(B * nT * 2 * C * 8);
  const coef = eng.alloc(B * 3 * C * 4);
  try {
    eng.run("groupnorm_stats_f32", x.ptr, part, B, HW, C);
    eng.run("groupnorm_finalize_f32", x.ptr, part, gamma.ptr, beta.ptr, coef, opts.mean?.ptr ?? 0, opts.rstd?.ptr ?? 0, B, HW, C, groups, eps);
    eng.run("groupnorm_apply_f32", x.ptr, coef, out.ptr, B, HW, C, opts.silu ? 1 : 0);
  } finally {
    eng.free(coef);
    eng.free(part);
  }
  return out;
}

export interface LayerNormOptions {
  /** Receives the per-row mean [rows] (f32) for a backward pass. */
  mean?: Tensor;
  /** Receives the per-row 1/sqrt(var + eps) [rows] (f32). */
  rstd?: Tensor;
}

/** LayerNorm over the last dim of x [..., C]: (x - mean) / sqrt(var + eps) * gamma + beta. */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: number, opts: LayerNormOptions = {}): Tensor {
  const rec = recorder(x.engine, x, gamma, beta);
  if (!rec) return layerNormForward(x, gamma, beta, eps, opts);
  const eng = x.engine;
  const rows = x.shape[x.shape.length - 1] === 0 ? 0 : x.size / x.shape[x.shape.length - 1];
  const mean = opts.mean ?? eng.empty([rows]);
  const rstd = opts.rstd ?? eng.empty([rows]);
  const y = layerNormForward(x, gamma, beta, eps, { mean, rstd });
  rec.record({
    name: "layerNorm",
    inputs: [x, gamma, beta],
    outputs: [y],
    saved: [x, gamma, mean, rstd],
    backward: ([dy]) => {
      const g = layerNormBackward(dy, x, gamma, mean, rstd);
      return [g.dx, g.dGamma, g.dBeta];
    },
  });
  return y;
}

function layerNormForward(x: Tensor, gamma: Tensor, beta: Tensor, eps: number, opts: LayerNormOptions): Tensor {
  if (x.dtype !== "f32") throw new TypeError(`layerNorm: expected f32 input, got ${x.dtype}`);
  if (x.shape.length < 1) throw new Error(`layerNorm: expected [..., C], got [${x.shape}]`);
  const C = x.shape[x.shape.length - 1];
  const rows = C === 0 ? 0 : x.size / C;
  checkVec("layerNorm", "gamma", gamma, C);
  checkVec("layerNorm", "beta", beta, C);
  for (const [k, t] of [["mean", opts.mean], ["rstd", opts.rstd]] as const)
    if (t && (t.dtype !== "f32" || t.size !== rows)) throw new Error(`layerNorm: opts.${k} must be f32 with ${rows} values`);
  const out = x.engine.empty(x.shape);
  if (x.size > 0) x.engine.run("layernorm_f32", x.ptr, gamma.ptr, beta.ptr, out.ptr, rows, C, eps, opts.mean?.ptr ?? 0, opts.rstd?.ptr ?? 0);
  return out;
}
