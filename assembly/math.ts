// Private SIMD math, work-splitting and load/store helpers shared by all kernel files (ops, GEMM, conv).
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

// GELU via erfc: Phi(x) = 1 - h for x >= 0 and h for x < 0, with h = erfc(|x| / sqrt 2) / 2, so the
// small tail Phi(x) for x < 0 keeps full relative accuracy (no 1 + erf(x) cancellation). erfc(z) for
// z >= 0 is t exp(-z^2 + P(t)), t = 1 / (1 + z/2) (Numerical Recipes' erfcc, Chebyshev fit: relative
// error < 1.2e-7 for every z >= 0). Measured GELU error in f32: see test/elementwise.test.ts.
const EC0: f32 = -1.26551223;
const EC1: f32 = 1.00002368;
const EC2: f32 = 0.37409196;
const EC3: f32 = 0.09678418;
const EC4: f32 = -0.18628806;
const EC5: f32 = 0.27886807;
const EC6: f32 = -1.13520398;
const EC7: f32 = 1.48851587;
const EC8: f32 = -0.82215223;
const EC9: f32 = 0.17087277;

/** erfc(z) / 2 for z >= 0. */
@inline export function halfErfc4(z: v128): v128 {
  const t = f32x4.div(kc(6), madd(z, kc(16), kc(6))); // 1 / (1 + 0.5 z)
  // P(t) = EC1 + t (EC2 + ... + t EC9), by Estrin in t^2 / t^4 / t^8 to keep the chain short
  const t2 = f32x4.mul(t, t);
  const t4 = f32x4.mul(t2, t2);
  const p12 = madd(t, kc(19), kc(18)); // EC1 + EC2 t
  const p34 = madd(t, kc(21), kc(20)); // EC3 + EC4 t
  const p56 = madd(t, kc(23), kc(22)); // EC5 + EC6 t
  const p78 = madd(t, kc(25), kc(24)); // EC7 + EC8 t
  const lo = madd(t2, p34, p12); // EC1..EC4
  const hi = madd(t2, p78, p56); // EC5..EC8
  const p18 = madd(t4, hi, lo); // EC1..EC8
  const p = madd(f32x4.mul(t4, t4), kc(26), p18); // + EC9 t^8
  const arg = madd(t, p, f32x4.sub(kc(17), f32x4.mul(z, z))); // -z^2 + EC0 + t P(t)
  return f32x4.mul(f32x4.mul(t, kc(16)), exp4(arg));
}

/**
 * Exact (erf) GELU: x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)). Measured in f32 against an f64 reference:
 * max |error| 3.8e-7 (at x ~ 4.9, i.e. ~1 ulp), relative error <= 1.7e-6 wherever |gelu(x)| > 1e-3
 * (the x < 0 tail keeps full relative accuracy), <= 5e-7 relative near 0.
 * (An erf Taylor branch near 0 made it 1e-7 better there but 30% slower: V8 spills the ~30 constants.)
 */
@inline export function gelu4(x: v128): v128 {
  const z = f32x4.mul(v128.andnot(x, kc(27)), kc(15)); // |x| / sqrt 2 (clear the sign bit)
  const h = halfErfc4(z);
  const phi = v128.bitselect(h, f32x4.sub(kc(6), h), f32x4.lt(x, f32x4.splat(0)));
  return f32x4.mul(x, phi);
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
  0.70710678118654752, // 15
  0.5, // 16
  EC0, // 17
  EC1, // 18
  EC2, // 19
  EC3, // 20
  EC4, // 21
  EC5, // 22
  EC6, // 23
  EC7, // 24
  EC8, // 25
  EC9, // 26
  reinterpret<f32>(0x80000000) /* sign bit */, // 27
  reinterpret<f32>(0x00010001) /* i16 lanes of 1 */, // 28
]);

@inline function kc(i: i32): v128 {
  return v128.load32_splat(KTAB + (usize(i) << 2));
}

/**
 * i16x8 lanes of 1 (the widening operand of the split INT8 dot), loaded from the table: V8 15 (Deno 2)
 * rematerialises a v128.const at every use inside a loop, which made the INT8 kernels 1.6x slower there.
 */
@inline export function onesI16x8(): v128 {
  return kc(28);
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the GEMM / conv kernels (f32, bf16, int8).

/** Loads 32-bit lanes [0, n) at ptr (n may be <= 0 or >= 4), zero in the other lanes (bit moves only). */
@inline export function loadPart(ptr: usize, n: i32): v128 {
  if (n >= 4) return v128.load(ptr);
  let v = i32x4.splat(0);
  if (n > 0) v = i32x4.replace_lane(v, 0, load<i32>(ptr));
  if (n > 1) v = i32x4.replace_lane(v, 1, load<i32>(ptr, 4));
  if (n > 2) v = i32x4.replace_lane(v, 2, load<i32>(ptr, 8));
  return v;
}

/** Stores 32-bit lanes [0, n) of v to ptr (n may be <= 0 or >= 4). */
@inline export function storePart(ptr: usize, v: v128, n: i32): void {
  if (n >= 4) {
    v128.store(ptr, v);
    return;
  }
  if (n > 0) store<i32>(ptr, i32x4.extract_lane(v, 0));
  if (n > 1) store<i32>(ptr, i32x4.extract_lane(v, 1), 4);
  if (n > 2) store<i32>(ptr, i32x4.extract_lane(v, 2), 8);
}

/**
 * Stores the 4x4 transpose of 32-bit lanes: rows v0..v3 (4 lanes each) go to ap as 4 vectors, the i-th holding
 * lane i of v0..v3 (the packed-A layout of the GEMMs: 4 rows interleaved per k, or per int8 k-group).
 */
@inline export function storeTransposed4x4(ap: usize, v0: v128, v1: v128, v2: v128, v3: v128): void {
  const t0 = i32x4.shuffle(v0, v1, 0, 4, 1, 5), t1 = i32x4.shuffle(v2, v3, 0, 4, 1, 5);
  const t2 = i32x4.shuffle(v0, v1, 2, 6, 3, 7), t3 = i32x4.shuffle(v2, v3, 2, 6, 3, 7);
  v128.store(ap, i32x4.shuffle(t0, t1, 0, 1, 4, 5));
  v128.store(ap, i32x4.shuffle(t0, t1, 2, 3, 6, 7), 16);
  v128.store(ap, i32x4.shuffle(t2, t3, 0, 1, 4, 5), 32);
  v128.store(ap, i32x4.shuffle(t2, t3, 2, 3, 6, 7), 48);
}

/** Implicit-GEMM conv: the input run for kernel row iy, column ix, or the padding buffer when outside the image. */
@inline export function rowPtr(base: usize, iy: i32, ix: i32, H: i32, W: i32, pixB: usize, off: usize, pad: usize): usize {
  return <u32>iy < <u32>H && <u32>ix < <u32>W ? base + usize(iy * W + ix) * pixB + off : pad + off;
}

/** Rounds 4 f32 lanes to bf16 (round to nearest even; NaN stays a quiet NaN), kept as f32 bit patterns. */
@inline export function bf16Round4(v: v128): v128 {
  const hiMask = i32x4.splat(0xffff0000);
  const lsb = v128.and(i32x4.shr_u(v, 16), i32x4.splat(1));
  const r = v128.and(i32x4.add(i32x4.add(v, i32x4.splat(0x7fff)), lsb), hiMask);
  const qnan = v128.and(v128.or(v, i32x4.splat(0x00400000)), hiMask);
  return v128.bitselect(qnan, r, f32x4.ne(v, v));
}

/** Scalar bf16Round4. */
@inline export function bf16Round1(v: f32): f32 {
  const u = reinterpret<u32>(v);
  if (v != v) return reinterpret<f32>((u | 0x00400000) & 0xffff0000);
  return reinterpret<f32>((u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000);
}
