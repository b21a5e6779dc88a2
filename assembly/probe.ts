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
 * Probe of the relaxed dot sequences on full 8-bit activations (src/nn/int8.ts int8Capabilities): for each
 * case c of ncases, with w_c, a_c, acc_c the 48 bytes at inp + 48c (weights i8 first, activations second,
 * as the INT8 GEMM calls them), writes the fused i32x4.relaxed_dot_i8x16_i7x16_add_s(w_c, a_c, acc_c) and
 * the split acc_c + i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(w_c, a_c), ones) to
 * out + (tid * ncases + c) * 32 (fused) and + 16 (split). The activations have the top bit set, so the
 * results show how this engine reads them: AVX-VNNI vpdpbusd gives the exact u8 x s8 dot; x86 without it
 * (pmaddubsw + pmaddwd) saturates each pair sum to i16 (exact for 7-bit weights); AVX-VNNI-INT8
 * (vpdpbssd) and Arm's sdot read them as signed. Every thread runs it, so every worker's code is checked.
 */
export function probe_dot_u8(tid: i32, nt: i32, inp: usize, ncases: i32, out: usize): void {
  const o = out + usize(tid) * usize(ncases) * 32;
  const ones = i16x8.splat(1);
  for (let c = 0; c < ncases; c++) {
    const p = inp + usize(c) * 48;
    const w = v128.load(p), a = v128.load(p, 16), acc = v128.load(p, 32);
    if (ASC_FEATURE_RELAXED_SIMD) {
      v128.store(o + (usize(c) << 5), i32x4.relaxed_dot_i8x16_i7x16_add_s(w, a, acc));
      v128.store(o + (usize(c) << 5), i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(w, a), ones)), 16);
    } else {
      v128.store(o + (usize(c) << 5), i32x4.splat(0));
      v128.store(o + (usize(c) << 5), i32x4.splat(0), 16);
    }
  }
}
