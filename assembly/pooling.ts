// Pooling kernels on NHWC float32 maps. Each thread takes a contiguous range of OUTPUT pixels, so the
// result does not depend on the thread count (max is exact anyway).
import { splitStart } from "./math";

/**
 * 2x2 max pooling, stride 2, floor mode (torch MaxPool2d(2)): x [B, H, W, C] -> out [B, H/2, W/2, C]
 * (odd last rows/columns are dropped). out[b, i, j, c] = max of x[b, 2i+di, 2j+dj, c], di, dj in {0, 1}.
 * NaN inputs propagate (f32x4.max / max return NaN when either operand is NaN).
 */
export function maxpool2d_f32(tid: i32, nt: i32, x: usize, out: usize, B: i32, H: i32, W: i32, C: i32): void {
  const Ho = H >> 1;
  const Wo = W >> 1;
  const total = B * Ho * Wo;
  const p0 = splitStart(total, tid, nt);
  const p1 = splitStart(total, tid + 1, nt);
  const rowStride = usize(W) * usize(C) << 2; // bytes between input rows
  const pixStride = usize(C) << 2; // bytes between input pixels
  for (let p = p0; p < p1; p++) {
    const b = p / (Ho * Wo);
    const r = p - b * Ho * Wo;
    const i = r / Wo;
    const j = r - i * Wo;
    const s00 = x + ((usize(b) * usize(H) + usize(2 * i)) * usize(W) + usize(2 * j)) * usize(C) * 4;
    const s01 = s00 + pixStride;
    const s10 = s00 + rowStride;
    const s11 = s10 + pixStride;
    const o = out + usize(p) * usize(C) * 4;
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const k = usize(c) << 2;
      const m0 = f32x4.max(v128.load(s00 + k), v128.load(s01 + k));
      const m1 = f32x4.max(v128.load(s10 + k), v128.load(s11 + k));
      v128.store(o + k, f32x4.max(m0, m1));
    }
    for (; c < C; c++) {
      const k = usize(c) << 2;
      const m0 = max<f32>(load<f32>(s00 + k), load<f32>(s01 + k));
      const m1 = max<f32>(load<f32>(s10 + k), load<f32>(s11 + k));
      store<f32>(o + k, max<f32>(m0, m1));
    }
  }
}

