// Private SIMD math and work-splitting helpers for the FP32 op kernels (elementwise, norm, attention).
// This file is imported by kernel files but NOT re-exported by index.ts, so nothing here becomes a
// wasm export. Everything is @inline: no calls in inner loops.

// ---------------------------------------------------------------------------------------------
// Work splitting. Every split depends only on (n, tid, nt) and partitions OUTPUT, so each output
// element is produced by exactly one thread with the same arithmetic whatever nt is.

/** Start of thread tid's share of n units out of nt (balanced contiguous ranges). */
@inline export function splitStart(n: i32, tid: i32, nt: i32): i32 {
  const per = n / nt;
  const rem = n % nt;
  return tid * per + min(tid, rem);
}

/** End (exclusive) of thread tid's share of n units out of nt. */
@inline export function splitEnd(n: i32, tid: i32, nt: i32): i32 {
  return splitStart(n, tid + 1, nt);
}

/** Start of thread tid's share of n elements, rounded to whole vectors of 4 (so SIMD stays aligned). */
@inline export function vecSplitStart(n: i32, tid: i32, nt: i32): i32 {
  return min(splitStart((n + 3) >> 2, tid, nt) << 2, n);
}

/** End of thread tid's share of n elements (see vecSplitStart). */
@inline export function vecSplitEnd(n: i32, tid: i32, nt: i32): i32 {
  return min(splitStart((n + 3) >> 2, tid + 1, nt) << 2, n);
}

// ---------------------------------------------------------------------------------------------
// Fused multiply-add: relaxed_madd in the relaxed build (fused on x86 with FMA), mul+add otherwise.
// Either way the result depends only on the build, never on the thread count.

@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(f32x4.mul(a, b), c);
  }
}

/** Horizontal sum of the 4 lanes, in the fixed order (l0 + l2) + (l1 + l3). */
@inline export function hsum(v: v128): f32 {
  const s = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

/** Horizontal max of the 4 lanes. */
@inline export function hmax(v: v128): f32 {
  const s = f32x4.max(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return max(f32x4.extract_lane(s, 0), f32x4.extract_lane(s, 1));
}

// ---------------------------------------------------------------------------------------------
// exp. Cephes expf: n = round(x / ln2), r = x - n ln2 (Cody-Waite, two constants, exact enough),
// exp(r) by a degree-7 polynomial on |r| <= ln2/2, then scale by 2^n via the exponent bits.
// Max error ~1 ulp for the normal range. x < -87.33 gives 0 (no denormals), x > 88 saturates at
// exp(88) (~1.7e38; only used as 1 + exp(-x) in sigmoid, where that is harmless). NaN stays NaN.

const EXP_LO: f32 = -87.33654;
const EXP_HI: f32 = 88.0;
const LOG2E: f32 = 1.44269504088896341;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;
const P0: f32 = 1.9875691500e-4;
const P1: f32 = 1.3981999507e-3;
const P2: f32 = 8.3334519073e-3;
const P3: f32 = 4.1665795894e-2;
const P4: f32 = 1.6666665459e-1;
const P5: f32 = 5.0000001201e-1;

/** exp(r) for |r| <= ln2/2 (the polynomial part of expf). */
@inline function expPoly(r: v128): v128 {
  let p = madd(f32x4.splat(P0), r, f32x4.splat(P1));
  p = madd(p, r, f32x4.splat(P2));
  p = madd(p, r, f32x4.splat(P3));
  p = madd(p, r, f32x4.splat(P4));
  p = madd(p, r, f32x4.splat(P5));
  const r2 = f32x4.mul(r, r);
  return f32x4.add(madd(p, r2, r), f32x4.splat(1.0));
}

/** 2^n for integral-valued n in [-126, 127] (as f32 lanes). */
@inline function pow2i(n: v128): v128 {
  const e = i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127));
  return i32x4.shl(e, 23);
}

/** exp(x) lane-wise, ~1 ulp. */
@inline export function exp4(x: v128): v128 {
  const xc = f32x4.min(f32x4.max(x, f32x4.splat(EXP_LO)), f32x4.splat(EXP_HI));
  const n = f32x4.nearest(f32x4.mul(xc, f32x4.splat(LOG2E)));
  // r = x - n*ln2 in two steps (n*LN2_HI is exact: LN2_HI has 9 significant bits, |n| <= 127)
  let r = f32x4.sub(xc, f32x4.mul(n, f32x4.splat(LN2_HI)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(LN2_LO)));
  const y = f32x4.mul(expPoly(r), pow2i(n));
  // underflow to exactly 0 (also exp(-inf) = 0)
  return v128.andnot(y, f32x4.lt(x, f32x4.splat(EXP_LO)));
}

/** 2^x lane-wise for x <= 0 (softmax: x = score - running max, or -inf for masked keys). */
@inline export function exp2neg4(x: v128): v128 {
  const xc = f32x4.max(x, f32x4.splat(-126.0));
  const n = f32x4.nearest(xc);
  const r = f32x4.mul(f32x4.sub(xc, n), f32x4.splat(0.69314718055994531)); // |r| <= ln2/2
  const y = f32x4.mul(expPoly(r), pow2i(n));
  return v128.andnot(y, f32x4.lt(x, f32x4.splat(-126.0)));
}

/** Scalar exp(x) with the same algorithm (lane 0 of exp4). */
@inline export function exp1(x: f32): f32 {
  return f32x4.extract_lane(exp4(f32x4.splat(x)), 0);
}

/** Scalar 2^x for x <= 0 (lane 0 of exp2neg4). */
@inline export function exp2neg1(x: f32): f32 {
  return f32x4.extract_lane(exp2neg4(f32x4.splat(x)), 0);
}

// ---------------------------------------------------------------------------------------------
// sigmoid, SiLU, GELU

/** x * sigmoid(alpha * x) = x / (1 + exp(-alpha x)). alpha = 1: SiLU; alpha = 1.702: quick GELU. */
@inline export function siluA4(x: v128, alpha: v128): v128 {
  const e = exp4(f32x4.neg(f32x4.mul(x, alpha)));
  return f32x4.div(x, f32x4.add(f32x4.splat(1.0), e));
}

@inline export function silu4(x: v128): v128 {
  const e = exp4(f32x4.neg(x));
  return f32x4.div(x, f32x4.add(f32x4.splat(1.0), e));
}

// erf(x): rational minimax approximation x * P(x^2) / Q(x^2) on [-4, 4] (clamped; erf(4) = 1 - 1.5e-8),
// the coefficients used by Eigen and XNNPACK. Approximation error 6.5e-8, with f32 rounding
// max |error| ~4e-7 (at |x| ~ 3.3, where erf ~ 0.999997).
const EA0: f32 = -2.72614225801306e-10;
const EA1: f32 = 2.77068142495902e-08;
const EA2: f32 = -2.10102402082508e-06;
const EA3: f32 = -5.69250639462346e-05;
const EA4: f32 = -7.34990630326855e-04;
const EA5: f32 = -2.95459980854025e-03;
const EA6: f32 = -1.60960333262415e-02;
const EB0: f32 = -1.45660718464996e-05;
const EB1: f32 = -2.13374055278905e-04;
const EB2: f32 = -1.68282697438203e-03;
const EB3: f32 = -7.37332916720468e-03;
const EB4: f32 = -1.42647390514189e-02;

@inline export function erf4(x: v128): v128 {
  const xc = f32x4.min(f32x4.max(x, f32x4.splat(-4.0)), f32x4.splat(4.0));
  const x2 = f32x4.mul(xc, xc);
  let p = madd(x2, f32x4.splat(EA0), f32x4.splat(EA1));
  p = madd(p, x2, f32x4.splat(EA2));
  p = madd(p, x2, f32x4.splat(EA3));
  p = madd(p, x2, f32x4.splat(EA4));
  p = madd(p, x2, f32x4.splat(EA5));
  p = madd(p, x2, f32x4.splat(EA6));
  p = f32x4.mul(p, xc);
  let q = madd(x2, f32x4.splat(EB0), f32x4.splat(EB1));
  q = madd(q, x2, f32x4.splat(EB2));
  q = madd(q, x2, f32x4.splat(EB3));
  q = madd(q, x2, f32x4.splat(EB4));
  return f32x4.div(p, q);
}

/** Exact (erf) GELU: 0.5 x (1 + erf(x / sqrt 2)). */
@inline export function gelu4(x: v128): v128 {
  const e = erf4(f32x4.mul(x, f32x4.splat(0.70710678118654752)));
  const h = f32x4.mul(x, f32x4.splat(0.5));
  return madd(h, e, h);
}
