// Emulated BF16 GEMM and convolution (implicit GEMM), with the numerics of PyTorch's BF16 autocast on
// CPU: operands rounded to bf16, products accumulated in f32, output rounded to bf16.
//
// Operands
//   A: f32 activations (rows, or an NHWC image for the conv). Each thread packs the 4-row tiles of its
//      current row block x K block into scratch, rounding every value to bf16 on the way (RNE, as
//      bf16_round_f32 in quantize.ts), interleaved by k: ap[k*4 + r] = bf16(A[r][k0 + k]) as f32, so the
//      inner loop broadcasts from one pointer with constant offsets.
//   B: bf16 weights (u16 bit patterns) in panels of 8 output channels: panel p holds K rows of 8 u16,
//      packed[(p * K + k) * 8 + j] = bf16(W[p*8 + j][k]) (padding zero). A row is one 16-byte load, widened
//      to two f32x4 by moving each u16 into the high half of a 32-bit lane (exact: bf16 is the top half
//      of an f32).
//   bias: f32 values (bf16-rounded by the caller, as autocast casts the bias), padded to panels * 8.
// Result, for every output element, in this order:
//   acc = 0; for k = 0..K-1: acc = acc + a[k] * w[k]    (f32; fused or not makes no difference: the
//                                                        product of two bf16 values is exact in f32,
//                                                        unless it underflows below 2^-126)
//   y = bf16(acc + bias)                                 (f32 add, then round to nearest even, as f32)
// so the relaxed (fused madd) and baseline (mul + add) builds give the same bits, and results do not
// depend on the thread count, the tiling, the panel blocking or the K blocking (partials are stored in y
// between K blocks, which every tile visits in increasing order).
//
// Tile 4 rows x 8 channels (8 f32x4 accumulators), one k per loop step: V8 issues all loads of a loop
// body first, so the live set is 8 accumulators + 2 widened weights + 4 broadcast activations + the zero
// vector = 15 of x64's 16 xmm registers (a 6 x 8 tile spills). For the conv the packing gathers the
// kernel window from the NHWC input (taps in the padding read a zero buffer of kw*Cin floats).
import { splitStart, madd, loadPart, storePart, rowPtr, bf16Round4, bf16Round1, storeTransposed4x4 } from "./math";

// @ts-nocheck (AssemblyScript)

/** Weight bytes per panel block (half of a 1 MiB L2). */
const BF16_W_BLOCK: i32 = 1 << 19;

/** Lanes 0..3 of 8 u16 as f32 bit patterns u << 16. */
@inline function bWidenLo(w: v128): v128 {
  return i8x16.shuffle(i32x4.splat(0), w, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
}

/** Lanes 4..7 of 8 u16 as f32 bit patterns u << 16. */
@inline function bWidenHi(w: v128): v128 {
  return i8x16.shuffle(i32x4.splat(0), w, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
}

/**
 * Packs one 4-row tile (rows m0..m0+3, clamped to M-1) for k in [k0, k1), rounded to bf16:
 * ap[(k - k0)*4 + r] = bf16(A[row r][k]). Conv rows gather the kernel window (padding reads zero).
 */
function bPackTile(
  x: usize, pixB: usize, H: i32, W: i32, Cin: i32, M: i32, HoWo: i32, Wo: i32,
  kw: i32, stride: i32, padT: i32, padL: i32, zero: usize, m0: i32, k0: i32, k1: i32, ap: usize,
): void {
  const HWB = usize(H) * usize(W) * pixB;
  const r0 = min(m0 + 0, M - 1);
  const n0 = r0 / HoWo, q0 = r0 - n0 * HoWo, oy0 = q0 / Wo, ox0 = q0 - oy0 * Wo;
  const base0 = x + usize(n0) * HWB, iy0 = oy0 * stride - padT, ix0 = ox0 * stride - padL;
  const r1 = min(m0 + 1, M - 1);
  const n1 = r1 / HoWo, q1 = r1 - n1 * HoWo, oy1 = q1 / Wo, ox1 = q1 - oy1 * Wo;
  const base1 = x + usize(n1) * HWB, iy1 = oy1 * stride - padT, ix1 = ox1 * stride - padL;
  const r2 = min(m0 + 2, M - 1);
  const n2 = r2 / HoWo, q2 = r2 - n2 * HoWo, oy2 = q2 / Wo, ox2 = q2 - oy2 * Wo;
  const base2 = x + usize(n2) * HWB, iy2 = oy2 * stride - padT, ix2 = ox2 * stride - padL;
  const r3 = min(m0 + 3, M - 1);
  const n3 = r3 / HoWo, q3 = r3 - n3 * HoWo, oy3 = q3 / Wo, ox3 = q3 - oy3 * Wo;
  const base3 = x + usize(n3) * HWB, iy3 = oy3 * stride - padT, ix3 = ox3 * stride - padL;
  const hok = (kw == 1 || pixB == usize(Cin) << 2) && ix0 >= 0 && ix0 + kw <= W && ix1 >= 0 && ix1 + kw <= W && ix2 >= 0 && ix2 + kw <= W && ix3 >= 0 && ix3 + kw <= W;
  const rowK = kw * Cin;
  let k = k0;
  while (k < k1) {
    const ky = k / rowK;
    const within = k - ky * rowK;
    let dx = 0, off = within, len = min(k1, (ky + 1) * rowK) - k;
    if (!hok) {
      dx = within / Cin;
      off = within - dx * Cin;
      len = min(k1 - k, Cin - off);
    }
    const offB = usize(off) << 2;
    let a0 = rowPtr(base0, iy0 + ky, ix0 + dx, H, W, pixB, offB, zero);
    let a1 = rowPtr(base1, iy1 + ky, ix1 + dx, H, W, pixB, offB, zero);
    let a2 = rowPtr(base2, iy2 + ky, ix2 + dx, H, W, pixB, offB, zero);
    let a3 = rowPtr(base3, iy3 + ky, ix3 + dx, H, W, pixB, offB, zero);
    k += len;
    for (; len >= 4; len -= 4) {
      storeTransposed4x4(ap, bf16Round4(v128.load(a0)), bf16Round4(v128.load(a1)), bf16Round4(v128.load(a2)), bf16Round4(v128.load(a3)));
      a0 += 16; a1 += 16; a2 += 16; a3 += 16;
      ap += 64;
    }
    for (; len > 0; len--) {
      store<f32>(ap, bf16Round1(load<f32>(a0)));
      store<f32>(ap, bf16Round1(load<f32>(a1)), 4);
      store<f32>(ap, bf16Round1(load<f32>(a2)), 8);
      store<f32>(ap, bf16Round1(load<f32>(a3)), 12);
      a0 += 4; a1 += 4; a2 += 4; a3 += 4;
      ap += 16;
    }
  }
}

/** One 4 x 8 tile from packed activations ap: rows m0..m0+3 (clamped to M-1), panel p, k in [k0, k1). */
function bTile(ap: usize, wp: usize, bias: usize, y: usize, ldyB: usize, M: i32, N: i32, K: i32, m0: i32, p: i32, k0: i32, k1: i32): void {
  const cp0 = y + usize(min(m0 + 0, M - 1)) * ldyB + (usize(p) << 5);
  const cp1 = y + usize(min(m0 + 1, M - 1)) * ldyB + (usize(p) << 5);
  const cp2 = y + usize(min(m0 + 2, M - 1)) * ldyB + (usize(p) << 5);
  const cp3 = y + usize(min(m0 + 3, M - 1)) * ldyB + (usize(p) << 5);
  const ncols = N - (p << 3);
  const z = f32x4.splat(0);
  let c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
  if (k0 > 0) {
    c00 = loadPart(cp0, ncols); c01 = loadPart(cp0 + 16, ncols - 4);
    c10 = loadPart(cp1, ncols); c11 = loadPart(cp1 + 16, ncols - 4);
    c20 = loadPart(cp2, ncols); c21 = loadPart(cp2 + 16, ncols - 4);
    c30 = loadPart(cp3, ncols); c31 = loadPart(cp3 + 16, ncols - 4);
  }
  let bq = wp + ((usize(p) * usize(K) + usize(k0)) << 4);
  const end = ap + (usize(k1 - k0) << 4);
  let w: v128, b0: v128, b1: v128, a: v128;
  if (ASC_FEATURE_RELAXED_SIMD) {
    for (; ap < end; ap += 16) {
      w = v128.load(bq); b0 = bWidenLo(w); b1 = bWidenHi(w);
      a = v128.load32_splat(ap); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
      a = v128.load32_splat(ap, 4); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
      a = v128.load32_splat(ap, 8); c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
      a = v128.load32_splat(ap, 12); c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
      bq += 16;
    }
  } else {
    // mul + add needs a temporary register per update: broadcast the 4 rows from one vector load
    // (pshufd next to its use) instead of 4 hoisted broadcast loads, so nothing spills
    for (; ap < end; ap += 16) {
      w = v128.load(bq); b0 = bWidenLo(w); b1 = bWidenHi(w);
      const av = v128.load(ap);
      a = i32x4.shuffle(av, av, 0, 0, 0, 0); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
      a = i32x4.shuffle(av, av, 1, 1, 1, 1); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
      a = i32x4.shuffle(av, av, 2, 2, 2, 2); c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
      a = i32x4.shuffle(av, av, 3, 3, 3, 3); c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
      bq += 16;
    }
  }
  if (k1 == K) {
    const bb = bias + (usize(p) << 5);
    const v0 = v128.load(bb), v1 = v128.load(bb, 16);
    c00 = bf16Round4(f32x4.add(c00, v0)); c01 = bf16Round4(f32x4.add(c01, v1));
    c10 = bf16Round4(f32x4.add(c10, v0)); c11 = bf16Round4(f32x4.add(c11, v1));
    c20 = bf16Round4(f32x4.add(c20, v0)); c21 = bf16Round4(f32x4.add(c21, v1));
    c30 = bf16Round4(f32x4.add(c30, v0)); c31 = bf16Round4(f32x4.add(c31, v1));
  }
  if (ncols >= 8) {
    v128.store(cp0, c00); v128.store(cp0, c01, 16);
    v128.store(cp1, c10); v128.store(cp1, c11, 16);
    v128.store(cp2, c20); v128.store(cp2, c21, 16);
    v128.store(cp3, c30); v128.store(cp3, c31, 16);
  } else {
    storePart(cp0, c00, ncols); storePart(cp0 + 16, c01, ncols - 4);
    storePart(cp1, c10, ncols); storePart(cp1 + 16, c11, ncols - 4);
    storePart(cp2, c20, ncols); storePart(cp2 + 16, c21, ncols - 4);
    storePart(cp3, c30, ncols); storePart(cp3 + 16, c31, ncols - 4);
  }
}

/**
 * Driver: static split of 4-row tiles (or 8-channel panels when that balances better) over threads;
 * inside a thread, row blocks of mcT tiles x K blocks of kc, each block packed (and rounded) once into
 * the thread's scratch (mcT * 4 * kc floats at scratch + tid * scrStride bytes).
 */
function bgemm(
  tid: i32, nt: i32, x: usize, pixB: usize, Bn: i32, H: i32, W: i32, Cin: i32,
  wp: usize, bias: usize, y: usize, ldyB: usize, Ho: i32, Wo: i32, N: i32,
  kh: i32, kw: i32, stride: i32, padT: i32, padL: i32, zero: usize, kc: i32, mcT: i32, pb: i32, scratch: usize, scrStride: usize,
): void {
  const HoWo = Ho * Wo;
  const M = Bn * HoWo;
  const K = kh * kw * Cin;
  if (M <= 0 || N <= 0) return;
  const mt = (M + 3) >> 2;
  const np = (N + 7) >> 3;
  if (kc <= 0 || kc > K) kc = K;
  if (mcT <= 0) mcT = mt;
  const cm = i64((mt + nt - 1) / nt), cn = i64((np + nt - 1) / nt);
  let t0 = 0, t1 = mt, p0 = 0, p1 = np;
  if (i64(mt) * cn >= i64(np) * cm) {
    t0 = splitStart(mt, tid, nt);
    t1 = splitStart(mt, tid + 1, nt);
  } else {
    p0 = splitStart(np, tid, nt);
    p1 = splitStart(np, tid + 1, nt);
  }
  const ap = scratch + usize(tid) * scrStride;
  if (K == 0) {
    for (let t = t0; t < t1; t++)
      for (let p = p0; p < p1; p++)
        bTile(ap, wp, bias, y, ldyB, M, N, K, t << 2, p, 0, 0);
    return;
  }
  // Panel blocks as in the INT8 driver (assembly/gemm_int8.ts): weights of at most BF16_W_BLOCK bytes per
  // K block; with several, K blocks run outside the row blocks so each weight block stays in L2.
  const pbMax = pb > 0 ? pb : max(1, BF16_W_BLOCK / (kc << 4));
  if (p1 - p0 <= pbMax) {
    for (let mb = t0; mb < t1; mb += mcT)
      for (let k0 = 0; k0 < K; k0 += kc)
        bBlock(ap, x, pixB, H, W, Cin, M, HoWo, Wo, kw, stride, padT, padL, zero, wp, bias, y, ldyB, N, K, mb, min(mb + mcT, t1), k0, min(k0 + kc, K), p0, p1);
  } else {
    for (let pb0 = p0; pb0 < p1; pb0 += pbMax)
      for (let k0 = 0; k0 < K; k0 += kc)
        for (let mb = t0; mb < t1; mb += mcT)
          bBlock(ap, x, pixB, H, W, Cin, M, HoWo, Wo, kw, stride, padT, padL, zero, wp, bias, y, ldyB, N, K, mb, min(mb + mcT, t1), k0, min(k0 + kc, K), pb0, min(pb0 + pbMax, p1));
  }
}

/** Packs (rounding to bf16) row tiles [mb, me) x K range [k0, k1) into ap, then runs panels [pa, pe) over them. */
function bBlock(
  ap: usize, x: usize, pixB: usize, H: i32, W: i32, Cin: i32, M: i32, HoWo: i32, Wo: i32, kw: i32, stride: i32,
  padT: i32, padL: i32, zero: usize, wp: usize, bias: usize, y: usize, ldyB: usize,
  N: i32, K: i32, mb: i32, me: i32, k0: i32, k1: i32, pa: i32, pe: i32,
): void {
  const tileB = usize(k1 - k0) << 4;
  for (let t = mb; t < me; t++)
    bPackTile(x, pixB, H, W, Cin, M, HoWo, Wo, kw, stride, padT, padL, zero, t << 2, k0, k1, ap + usize(t - mb) * tileB);
  for (let p = pa; p < pe; p++)
    for (let t = mb; t < me; t++)
      bTile(ap + usize(t - mb) * tileB, wp, bias, y, ldyB, M, N, K, t << 2, p, k0, k1);
}

/**
 * y[M, N] (row stride ldy floats) = bf16(bf16(A[M, K]) (f32, row stride lda floats) x W^T + bias), W packed
 * as bf16 panels (see top). kc: K block (0 = all); mcT: row block in 4-row tiles (0 = all); pb: panels per
 * panel block (0 = as many as fit BF16_W_BLOCK weight bytes per K block); scratch: nt
 * blocks of scrStride >= mcT * 4 * kc * 4 bytes (kc clamped to K, mcT = 0 meaning all of a thread's tiles).
 */
export function gemm_bf16_packed(
  tid: i32, nt: i32, a: usize, lda: i32, wp: usize, bias: usize, y: usize, ldy: i32,
  M: i32, N: i32, K: i32, kc: i32, mcT: i32, pb: i32, scratch: usize, scrStride: i32,
): void {
  bgemm(tid, nt, a, usize(lda) << 2, 1, 1, M, K, wp, bias, y, usize(ldy) << 2, 1, M, N, 1, 1, 1, 0, 0, 0, kc, mcT, pb, scratch, usize(scrStride));
}

/**
 * NHWC BF16 convolution. x: [Bn, H, W, Cin] f32 (contiguous; rounded to bf16 as it is packed), y: [Bn, Ho,
 * Wo, *] with pixel stride ldy floats, weights packed as bf16 panels over K = (ky, kx, ci), zero: kw*Cin
 * zero floats. kc, mcT, pb, scratch as gemm_bf16_packed.
 */
export function conv2d_bf16(
  tid: i32, nt: i32, x: usize, Bn: i32, H: i32, W: i32, Cin: i32,
  wp: usize, bias: usize, y: usize, ldy: i32, Ho: i32, Wo: i32, Cout: i32,
  kh: i32, kw: i32, stride: i32, padT: i32, padL: i32, zero: usize, kc: i32, mcT: i32, pb: i32, scratch: usize, scrStride: i32,
): void {
  bgemm(tid, nt, x, usize(Cin) << 2, Bn, H, W, Cin, wp, bias, y, usize(ldy) << 2, Ho, Wo, Cout, kh, kw, stride, padT, padL, zero, kc, mcT, pb, scratch, usize(scrStride));
}
