// Startup probe for relaxed SIMD: runs each relaxed op used by the kernels on fixed inputs and
// writes the lane results to out, so the runtime can check them against the spec's allowed results.
// (Node 20's Liftoff computes relaxed_dot_i8x16_i7x16_add_s wrongly; a failed probe selects baseline.)

export function probe_relaxed(out: usize): void {
  if (ASC_FEATURE_RELAXED_SIMD) {
    // i32x4.relaxed_dot_i8x16_i7x16_add_s: a = 1..16, b = 2 (7-bit), c = 1000 + lane
    const a = i8x16(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    const b = i8x16.splat(2);
    const c = i32x4(1000, 1001, 1002, 1003);
    v128.store(out, i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c));
    // f32x4.relaxed_madd: (1 + 2^-23) * (1 - 2^-23) + (-1): fused gives -2^-46, unfused gives 0
    const x = f32x4.splat(reinterpret<f32>(0x3f800001));
    const y = f32x4.splat(reinterpret<f32>(0x3f7ffffe));
    const z = f32x4.splat(-1.0);
    v128.store(out, f32x4.relaxed_madd(x, y, z), 16);
  } else {
    v128.store(out, i32x4.splat(0));
    v128.store(out, i32x4.splat(0), 16);
  }
}

/**
 * Probe of the fused dot on full 8-bit activations (src/nn/int8.ts u8DotExact): for each case c of
 * ncases, out[tid][c] = i32x4.relaxed_dot_i8x16_i7x16_add_s(w_c, a_c, acc_c), with w_c, a_c, acc_c the
 * 48 bytes at inp + 48c (weights i8 first, activations second, as the INT8 GEMM calls it). The activations
 * have the top bit set, so the result tells how this engine treats them: AVX-VNNI vpdpbusd gives the exact
 * u8 x s8 dot; the x86 fallback (pmaddubsw + pmaddwd) saturates each pair sum to i16; Arm's sdot reads
 * them as signed. Every thread runs it, so every worker's compiled code is checked. out: ncases * 16
 * bytes per thread.
 */
export function probe_dot_u8(tid: i32, nt: i32, inp: usize, ncases: i32, out: usize): void {
  const o = out + usize(tid) * usize(ncases) * 16;
  for (let c = 0; c < ncases; c++) {
    const p = inp + usize(c) * 48;
    if (ASC_FEATURE_RELAXED_SIMD) {
      v128.store(o + (usize(c) << 4), i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(p), v128.load(p, 16), v128.load(p, 32)));
    } else {
      v128.store(o + (usize(c) << 4), i32x4.splat(0));
    }
  }
}
