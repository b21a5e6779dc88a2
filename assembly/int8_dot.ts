// The INT8 dot sequences and the activation transpose that the INT8 GEMM/conv kernels (gemm_int8.ts) and INT8
// attention (attention_int8.ts) share. Internal: not re-exported by index.ts.

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

/** Stores 4 rows of 4 k-group bytes each (v0..v3 = 16 bytes of rows 0..3) interleaved by k-group. */
@inline export function qTranspose4(ap: usize, v0: v128, v1: v128, v2: v128, v3: v128): void {
  const t0 = i32x4.shuffle(v0, v1, 0, 4, 1, 5), t1 = i32x4.shuffle(v2, v3, 0, 4, 1, 5);
  const t2 = i32x4.shuffle(v0, v1, 2, 6, 3, 7), t3 = i32x4.shuffle(v2, v3, 2, 6, 3, 7);
  v128.store(ap, i32x4.shuffle(t0, t1, 0, 1, 4, 5));
  v128.store(ap, i32x4.shuffle(t0, t1, 2, 3, 6, 7), 16);
  v128.store(ap, i32x4.shuffle(t2, t3, 0, 1, 4, 5), 32);
  v128.store(ap, i32x4.shuffle(t2, t3, 2, 3, 6, 7), 48);
}
