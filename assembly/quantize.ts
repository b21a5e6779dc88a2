// Low-precision conversion kernels: activation quantisation (f32 -> u8 with a per-tensor scale and
// zero point) for the INT8 GEMM/conv, and BF16 rounding (f32 -> nearest bf16 value, kept as f32) for the
// emulated BF16 GEMM/conv. Both are elementwise, split by rows (or 4-float vectors) over threads, and
// give the same bits for any thread count and both builds (no relaxed ops are used here).
//
// Quantisation (per tensor, asymmetric):  q = clamp(nearest(x * invScale) + zp, 0, qmax)
//   nearest = round half to even (f32.nearest); the product x * invScale is one f32 multiply;
//   clamping is done in float before the integer conversion (so huge values saturate), NaN -> zp.
// BF16 rounding: round to nearest even on the bit pattern; NaN stays NaN (quiet bit set, sign and
//   the top 6 payload bits kept); overflow rounds to +-Inf; subnormals round like any other value.
import { splitStart, bf16Round4, bf16Round1 } from "./math";

// @ts-nocheck (AssemblyScript)

/**
 * Quantises rows of x (rows x C floats, row stride ldx floats) into y (rows x Cp bytes, Cp >= C):
 * y[r, c] = clamp(nearest(x[r, c] * invScale) + zp, 0, qmax) for c < C, and y[r, c] = zp for C <= c < Cp
 * (the padding channels represent 0.0). qmax <= 255, 0 <= zp <= qmax.
 */
export function quantize_act_u8(
  tid: i32, nt: i32, x: usize, ldx: i32, rows: i32, C: i32, y: usize, Cp: i32, invScale: f32, zp: i32, qmax: i32,
): void {
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitStart(rows, tid + 1, nt);
  const lo = <f32>(-zp);
  const hi = <f32>(qmax - zp);
  const vinv = f32x4.splat(invScale);
  const vlo = f32x4.splat(lo);
  const vhi = f32x4.splat(hi);
  const vzp = i32x4.splat(zp);
  for (let r = r0; r < r1; r++) {
    const src = x + ((usize(r) * usize(ldx)) << 2);
    const dst = y + usize(r) * usize(Cp);
    let c = 0;
    for (; c + 16 <= C; c += 16) {
      const s = src + (usize(c) << 2);
      const q0 = i32x4.add(i32x4.trunc_sat_f32x4_s(f32x4.pmin(f32x4.pmax(f32x4.nearest(f32x4.mul(v128.load(s), vinv)), vlo), vhi)), vzp);
      const q1 = i32x4.add(i32x4.trunc_sat_f32x4_s(f32x4.pmin(f32x4.pmax(f32x4.nearest(f32x4.mul(v128.load(s, 16), vinv)), vlo), vhi)), vzp);
      const q2 = i32x4.add(i32x4.trunc_sat_f32x4_s(f32x4.pmin(f32x4.pmax(f32x4.nearest(f32x4.mul(v128.load(s, 32), vinv)), vlo), vhi)), vzp);
      const q3 = i32x4.add(i32x4.trunc_sat_f32x4_s(f32x4.pmin(f32x4.pmax(f32x4.nearest(f32x4.mul(v128.load(s, 48), vinv)), vlo), vhi)), vzp);
      v128.store(dst + usize(c), i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)));
    }
    for (; c < C; c++) {
      let v = nearest<f32>(load<f32>(src + (usize(c) << 2)) * invScale);
      if (v != v) v = 0;
      else if (v < lo) v = lo;
      else if (v > hi) v = hi;
      store<u8>(dst + usize(c), <u8>(<i32>v + zp));
    }
    for (; c < Cp; c++) store<u8>(dst + usize(c), <u8>zp);
  }
}

/** y[i] = bf16(x[i]) as f32, i < n (y may equal x). Threads take contiguous runs of whole 4-float vectors. */
export function bf16_round_f32(tid: i32, nt: i32, x: usize, y: usize, n: i32): void {
  const nv = (n + 3) >> 2;
  const v0 = splitStart(nv, tid, nt);
  const v1 = splitStart(nv, tid + 1, nt);
  let i = v0 << 2;
  const end = min(v1 << 2, n);
  for (; i + 4 <= end; i += 4) {
    const o = usize(i) << 2;
    v128.store(y + o, bf16Round4(v128.load(x + o)));
  }
  for (; i < end; i++) {
    const o = usize(i) << 2;
    store<f32>(y + o, bf16Round1(load<f32>(x + o)));
  }
}
