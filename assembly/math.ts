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
  const s = f32x4.pmax(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
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

/**
 * exp(r) for |r| <= ln2/2 (the polynomial part of expf): 1 + r + r^2 q(r), q of degree 5 evaluated by
 * Estrin's scheme (dependency depth 3 instead of 5: these loops are latency-bound in V8).
 */
@inline function expPoly(r: v128): v128 {
  const r2 = f32x4.mul(r, r);
  const a = madd(kc(4), r, kc(5));
  const b = madd(kc(2), r, kc(3));
  const c = madd(kc(0), r, kc(1));
  const r4 = f32x4.mul(r2, r2);
  const q = madd(r4, c, madd(r2, b, a));
  return f32x4.add(madd(q, r2, r), kc(6));
}

// Rounding by the magic-number trick: t = y + (1.5 * 2^23 + 127) rounds y to the nearest integer n and
// leaves n + 127 in the low mantissa bits of t, so (bits(t) << 23) is the f32 2^n (for n in [-126, 127])
// and t - MAGIC is n as a float. Cheaper in V8 than nearest + trunc_sat + add.
const MAGIC: f32 = 12583039.0; // 1.5 * 2^23 + 127

/** exp(x) lane-wise, ~1 ulp. */
@inline export function exp4(x: v128): v128 {
  const xc = f32x4.pmin(f32x4.pmax(x, kc(7)), kc(8));
  const t = f32x4.add(f32x4.mul(xc, kc(9)), kc(10));
  const n = f32x4.sub(t, kc(10));
  // r = x - n*ln2 in two steps (n*LN2_HI is exact: LN2_HI has 9 significant bits, |n| <= 127)
  let r = madd(n, kc(11), xc);
  r = madd(n, kc(12), r);
  const y = f32x4.mul(expPoly(r), i32x4.shl(t, 23));
  // underflow to exactly 0 (also exp(-inf) = 0)
  return v128.andnot(y, f32x4.lt(x, kc(7)));
}

/** 2^x lane-wise for x <= 0 (softmax: x = score - running max, or -inf for masked keys). */
@inline export function exp2neg4(x: v128): v128 {
  const xc = f32x4.pmax(x, kc(13));
  const t = f32x4.add(xc, kc(10));
  const n = f32x4.sub(t, kc(10));
  const r = f32x4.mul(f32x4.sub(xc, n), kc(14)); // |r| <= ln2/2
  const y = f32x4.mul(expPoly(r), i32x4.shl(t, 23));
  return v128.andnot(y, f32x4.lt(x, kc(13)));
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
  return f32x4.div(x, f32x4.add(kc(6), e));
}

@inline export function silu4(x: v128): v128 {
  const e = exp4(f32x4.neg(x));
  return f32x4.div(x, f32x4.add(kc(6), e));
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
  const xc = f32x4.pmin(f32x4.pmax(x, kc(15)), kc(16));
  const x2 = f32x4.mul(xc, xc);
  let p = madd(x2, kc(17), kc(18));
  p = madd(p, x2, kc(19));
  p = madd(p, x2, kc(20));
  p = madd(p, x2, kc(21));
  p = madd(p, x2, kc(22));
  p = madd(p, x2, kc(23));
  p = f32x4.mul(p, xc);
  let q = madd(x2, kc(24), kc(25));
  q = madd(q, x2, kc(26));
  q = madd(q, x2, kc(27));
  q = madd(q, x2, kc(28));
  return f32x4.div(p, q);
}

/** Exact (erf) GELU: 0.5 x (1 + erf(x / sqrt 2)). */
@inline export function gelu4(x: v128): v128 {
  const e = erf4(f32x4.mul(x, kc(29)));
  const h = f32x4.mul(x, kc(30));
  return madd(h, e, h);
}

// ---------------------------------------------------------------------------------------------
// Read-only table of the splatted constants above (a static data segment). Kernels load them with
// v128.load32_splat (one broadcast load) instead of v128.const: V8 rematerialises every SIMD constant
// inside loops with several instructions, which made exp-heavy loops 2-3x slower.
const KTAB: usize = memory.data<f32>([
  P0, // 0
  P1, // 1
  P2, // 2
  P3, // 3
  P4, // 4
  P5, // 5
  1.0, // 6
  EXP_LO, // 7
  EXP_HI, // 8
  LOG2E, // 9
  MAGIC, // 10
  -LN2_HI, // 11
  -LN2_LO, // 12
  -126.0, // 13
  0.69314718055994531, // 14
  -4.0, // 15
  4.0, // 16
  EA0, // 17
  EA1, // 18
  EA2, // 19
  EA3, // 20
  EA4, // 21
  EA5, // 22
  EA6, // 23
  EB0, // 24
  EB1, // 25
  EB2, // 26
  EB3, // 27
  EB4, // 28
  0.70710678118654752, // 29
  0.5, // 30
]);

@inline function kc(i: i32): v128 {
  return v128.load32_splat(KTAB + (usize(i) << 2));
}
