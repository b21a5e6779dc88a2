// The INT8 dot sequences that the INT8 GEMM/conv kernels (gemm_int8.ts) and INT8 attention (attention_int8.ts)
// share (the activation transpose they pack with is math.ts storeTransposed4x4, shared with the BF16 GEMM).
// Internal: not re-exported by index.ts.

// @ts-nocheck (AssemblyScript)

/** relaxed dot: weights (i8) first, activations (7-bit) second. */
@inline export function qdot(w: v128, a: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return i32x4.relaxed_dot_i8x16_i7x16_add_s(w, a, c);
  } else {
    return c; // never used: the baseline build always takes the i16 path
  }
}

/**
 * The same sum as qdot in three instructions that lower well on x86 without VNNI: the i16 relaxed dot
 * (pmaddubsw: exact while every pair sum stays below 2^15: 7-bit activations x int8 weights, 2*127*127, or
 * 8-bit activations x 7-bit weights, 2*255*63; the startup probe checks it),
 * widened pairwise to i32 by i32x4.dot_i16x8_s with ones (pmaddwd), then added. (V8 expands the fused
 * instruction to five, rebuilding the ones vector every time.)
 */
@inline export function qdotSplit(w: v128, a: v128, c: v128, ones: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return i32x4.add(c, i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(w, a), ones));
  } else {
    return c;
  }
}


/** acc + (channel j's k0,k1 . a0,a1) + (k2,k3 . a2,a3), lanes j = 0..3, via i16 dots. */
@inline export function qdot16(wP: v128, wQ: v128, aP: v128, aQ: v128, c: v128): v128 {
  return i32x4.add(c, i32x4.add(i32x4.dot_i16x8_s(wP, aP), i32x4.dot_i16x8_s(wQ, aQ)));
}
