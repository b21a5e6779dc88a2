// Private SIMD helpers of the backward kernels: derivatives of the activations. Like math.ts this file
// is imported by kernel files but not re-exported by index.ts; everything is @inline.
import { madd, exp4, halfErfc4 } from "./math";

// Splatted constants come from a read-only table (one broadcast load each), not v128.const: V8
// rematerialises SIMD constants inside loops (see the table in math.ts).
const GTAB: usize = memory.data<f32>([
  1.0, // 0
  0.70710678118654752, // 1: 1/sqrt(2)
  0.39894228040143268, // 2: 1/sqrt(2 pi)
  -0.5, // 3
  reinterpret<f32>(0x80000000) /* sign bit */, // 4
  0.0, // 5
]);

@inline export function gc(i: i32): v128 {
  return v128.load32_splat(GTAB + (usize(i) << 2));
}

/** 1 / (1 + exp(-x)) lane-wise (exp4: ~1 ulp; saturates cleanly to 0 and 1). */
@inline export function sigmoid4(x: v128): v128 {
  return f32x4.div(gc(0), f32x4.add(gc(0), exp4(f32x4.neg(x))));
}

/**
 * d/dx [x sigmoid(alpha x)] = s (1 + alpha x (1 - s)) with s = sigmoid(alpha x): SiLU (alpha = 1) and
 * quick GELU (alpha = 1.702).
 */
@inline export function siluAGrad4(x: v128, alpha: v128): v128 {
  const ax = f32x4.mul(x, alpha);
  const s = sigmoid4(ax);
  return f32x4.mul(s, madd(ax, f32x4.sub(gc(0), s), gc(0)));
}

/** d/dy silu(y) = s (1 + y (1 - s)), s = sigmoid(y). */
@inline export function siluGrad4(y: v128): v128 {
  const s = sigmoid4(y);
  return f32x4.mul(s, madd(y, f32x4.sub(gc(0), s), gc(0)));
}

/** Phi(x), the standard normal CDF, by the same erfc as gelu4 in math.ts (the x < 0 tail keeps its relative accuracy). */
@inline export function normCdf4(x: v128): v128 {
  const h = halfErfc4(f32x4.mul(v128.andnot(x, gc(4)), gc(1))); // erfc(|x| / sqrt 2) / 2
  return v128.bitselect(h, f32x4.sub(gc(0), h), f32x4.lt(x, gc(5)));
}

/** phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the standard normal density. */
@inline export function normPdf4(x: v128): v128 {
  return f32x4.mul(exp4(f32x4.mul(f32x4.mul(x, x), gc(3))), gc(2));
}

/** d/dx of the exact GELU x Phi(x): Phi(x) + x phi(x). */
@inline export function geluGrad4(x: v128): v128 {
  return madd(x, normPdf4(x), normCdf4(x));
}
