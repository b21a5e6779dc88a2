// FP32 GEMM and convolution (implicit GEMM) kernels. (Generated shape: MR = 2 rows x NR = 16 columns.)
//
// Micro-kernel: an 2 x 16 register tile of C (2 rows x 4 f32x4 = 8 accumulators in locals),
// looping over K innermost: each k step loads one 16-wide row of the packed B panel (4 x v128),
// broadcasts 2 A values (v128.load32_splat) and does 8 multiply-adds (f32x4.relaxed_madd in the
// relaxed build, mul + add in the baseline build). The tile shape is set by what V8 (TurboFan, 16 xmm
// registers, one reserved) keeps in registers without spilling: TurboFan hoists all of an iteration's loads
// ahead of its FMAs, so accumulators + B vectors + A broadcasts must fit in 15 registers.
//
// Packed B ("panels"): N is cut into panels of 16 columns (the last zero-padded); panel p holds K rows of
// 16 floats, contiguous: packed[(p * K + k) * 16 + j] = B[k][p * 16 + j]. Bias is padded to panels * 16.
// A BF16/INT8 weight variant keeps the same blocking and only changes how a B row is loaded (u16 -> f32
// widening, or i8 with a per-column scale applied at store).
//
// Every output element is computed as bias + sum over k = 0..K-1 in increasing k order, one FMA (or
// mul+add) per k, by exactly one thread; tails are handled by clamping rows (a duplicate row computes
// the same values as the last real row and stores them to the same place) and by masking columns.
// So results depend neither on the thread count nor on the cache blocking (kc, mcT, pb).
//
// Convolution is the same loop: M = B*Ho*Wo output pixels (NHWC rows), N = Cout, K = kh*kw*Cin in
// (ky, kx, ci) order. For each k range the 2 rows get pointers straight into the NHWC input: when all
// rows' kernel windows are inside the image horizontally, a whole kernel row (kw*Cin floats) is one
// contiguous run; otherwise one tap (Cin floats) at a time. Rows that fall into the zero padding read
// from a zero buffer of kw*Cin floats instead.
// A plain GEMM with packed B is the 1x1 convolution of a [1, 1, M, K] image with pixel stride lda.
import { madd, splitStart, loadPart, storePart, rowPtr } from "./math";

/** Weight bytes per panel block (half of a 1 MiB L2). */
const F32_W_BLOCK: i32 = 1 << 19;

/**
 * One 2 x 16 tile of the implicit GEMM: output rows m0..m0+1 (clamped to M-1), panel p, k in [k0, k1).
 * k0 == 0 starts from the bias, otherwise from the partial sums already in C.
 */
function convTile(
  x: usize, pixB: usize, H: i32, W: i32, Cin: i32,
  wp: usize, bias: usize, y: usize, ldyB: usize,
  M: i32, HoWo: i32, Wo: i32, N: i32, K: i32, kw: i32, stride: i32, padT: i32, padL: i32, zero: usize,
  m0: i32, p: i32, k0: i32, k1: i32,
): void {
  const HWB = usize(H) * usize(W) * pixB;
  const r0 = min(m0 + 0, M - 1);
  const n0 = r0 / HoWo, q0 = r0 - n0 * HoWo, oy0 = q0 / Wo, ox0 = q0 - oy0 * Wo;
  const base0 = x + usize(n0) * HWB, iy0 = oy0 * stride - padT, ix0 = ox0 * stride - padL;
  const cp0 = y + usize(r0) * ldyB + usize(p) * 64;
  const r1 = min(m0 + 1, M - 1);
  const n1 = r1 / HoWo, q1 = r1 - n1 * HoWo, oy1 = q1 / Wo, ox1 = q1 - oy1 * Wo;
  const base1 = x + usize(n1) * HWB, iy1 = oy1 * stride - padT, ix1 = ox1 * stride - padL;
  const cp1 = y + usize(r1) * ldyB + usize(p) * 64;
  // whole kernel rows are contiguous runs when every row's window is horizontally inside the image
  const hok = (kw == 1 || pixB == usize(Cin) << 2) && ix0 >= 0 && ix0 + kw <= W && ix1 >= 0 && ix1 + kw <= W;
  const ncols = N - p * 16;
  const z = f32x4.splat(0);
  let c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  if (k0 == 0) {
    const bb = bias + usize(p) * 64;
    const v0 = v128.load(bb); const v1 = v128.load(bb, 16); const v2 = v128.load(bb, 32); const v3 = v128.load(bb, 48);
    c00 = v0; c01 = v1; c02 = v2; c03 = v3; c10 = v0; c11 = v1; c12 = v2; c13 = v3;
  } else if (ncols >= 16) {
    c00 = v128.load(cp0); c01 = v128.load(cp0, 16); c02 = v128.load(cp0, 32); c03 = v128.load(cp0, 48);
    c10 = v128.load(cp1); c11 = v128.load(cp1, 16); c12 = v128.load(cp1, 32); c13 = v128.load(cp1, 48);
  } else {
    c00 = loadPart(cp0, ncols); c01 = loadPart(cp0 + 16, ncols - 4); c02 = loadPart(cp0 + 32, ncols - 8); c03 = loadPart(cp0 + 48, ncols - 12);
    c10 = loadPart(cp1, ncols); c11 = loadPart(cp1 + 16, ncols - 4); c12 = loadPart(cp1 + 32, ncols - 8); c13 = loadPart(cp1 + 48, ncols - 12);
  }
  const rowK = kw * Cin;
  let bq = wp + (usize(p) * usize(K) + usize(k0)) * 64;
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
    k += len;
    let b0: v128, b1: v128, b2: v128, b3: v128, a: v128;
    for (; len > 0; len--) {
      b0 = v128.load(bq); b1 = v128.load(bq, 16); b2 = v128.load(bq, 32); b3 = v128.load(bq, 48);
      a = v128.load32_splat(a0); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01); c02 = madd(a, b2, c02); c03 = madd(a, b3, c03);
      a = v128.load32_splat(a1); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11); c12 = madd(a, b2, c12); c13 = madd(a, b3, c13);
      a0 += 4; a1 += 4;
      bq += 64;
    }
  }
  if (ncols >= 16) {
    v128.store(cp0, c00); v128.store(cp0, c01, 16); v128.store(cp0, c02, 32); v128.store(cp0, c03, 48);
    v128.store(cp1, c10); v128.store(cp1, c11, 16); v128.store(cp1, c12, 32); v128.store(cp1, c13, 48);
  } else {
    storePart(cp0, c00, ncols); storePart(cp0 + 16, c01, ncols - 4); storePart(cp0 + 32, c02, ncols - 8); storePart(cp0 + 48, c03, ncols - 12);
    storePart(cp1, c10, ncols); storePart(cp1 + 16, c11, ncols - 4); storePart(cp1 + 32, c12, ncols - 8); storePart(cp1 + 48, c13, ncols - 12);
  }
}

/**
 * Implicit-GEMM driver. Threads split the output statically: by 2-row tiles, or by 16-column panels when
 * that balances better (small M). Inside a thread: blocks of mcT tiles, K blocks of kc, panels, tiles.
 */
function igemm(
  tid: i32, nt: i32, x: usize, pixB: usize, Bn: i32, H: i32, W: i32, Cin: i32,
  wp: usize, bias: usize, y: usize, ldyB: usize, Ho: i32, Wo: i32, N: i32,
  kh: i32, kw: i32, stride: i32, padT: i32, padL: i32, zero: usize, kc: i32, mcT: i32, pb: i32,
): void {
  const HoWo = Ho * Wo;
  const M = Bn * HoWo;
  const K = kh * kw * Cin;
  if (M <= 0 || N <= 0) return;
  const mt = (M + 1) / 2;
  const np = (N + 15) / 16;
  if (kc <= 0 || kc > K) kc = K;
  if (mcT <= 0) mcT = mt;
  // balance of splitting tiles vs panels over nt threads: compare n / (nt * ceil(n / nt))
  const cm = i64((mt + nt - 1) / nt), cn = i64((np + nt - 1) / nt);
  let t0 = 0, t1 = mt, p0 = 0, p1 = np;
  if (i64(mt) * cn >= i64(np) * cm) {
    t0 = splitStart(mt, tid, nt);
    t1 = splitStart(mt, tid + 1, nt);
  } else {
    p0 = splitStart(np, tid, nt);
    p1 = splitStart(np, tid + 1, nt);
  }
  // Panel blocks of at most F32_W_BLOCK weight bytes per K block (as in assembly/gemm_int8.ts): when a
  // thread's panels hold more than twice that, K blocks run outside the row blocks so a weight block
  // stays in L2 for all of them (measured: below that the plain order is as fast or faster).
  const pbMax = pb > 0 ? pb : max(1, F32_W_BLOCK / (kc << 6));
  if (p1 - p0 <= 2 * pbMax) {
    for (let mb = t0; mb < t1; mb += mcT) {
      let k0 = 0;
      do {
        const k1 = min(k0 + kc, K);
        fBlock(x, pixB, H, W, Cin, wp, bias, y, ldyB, M, HoWo, Wo, N, K, kw, stride, padT, padL, zero, mb, min(mb + mcT, t1), k0, k1, p0, p1);
        k0 = k1;
      } while (k0 < K);
    }
  } else {
    for (let pb0 = p0; pb0 < p1; pb0 += pbMax) {
      let k0 = 0;
      do {
        const k1 = min(k0 + kc, K);
        for (let mb = t0; mb < t1; mb += mcT)
          fBlock(x, pixB, H, W, Cin, wp, bias, y, ldyB, M, HoWo, Wo, N, K, kw, stride, padT, padL, zero, mb, min(mb + mcT, t1), k0, k1, pb0, min(pb0 + pbMax, p1));
        k0 = k1;
      } while (k0 < K);
    }
  }
}

/** Tiles [mb, me) x panels [pa, pe) over k in [k0, k1). */
function fBlock(
  x: usize, pixB: usize, H: i32, W: i32, Cin: i32, wp: usize, bias: usize, y: usize, ldyB: usize,
  M: i32, HoWo: i32, Wo: i32, N: i32, K: i32, kw: i32, stride: i32, padT: i32, padL: i32, zero: usize,
  mb: i32, me: i32, k0: i32, k1: i32, pa: i32, pe: i32,
): void {
  for (let p = pa; p < pe; p++)
    for (let t = mb; t < me; t++)
      convTile(x, pixB, H, W, Cin, wp, bias, y, ldyB, M, HoWo, Wo, N, K, kw, stride, padT, padL, zero, t * 2, p, k0, k1);
}

/**
 * C[M, N] (row stride ldc floats) = A[M, K] (row stride lda floats) x B + bias, with B packed in 16-column
 * panels (see top of file) and bias padded to the panel width. kc: K block (0 = all of K);
 * mcT: row block in 2-row tiles (0 = all of the thread's rows); pb: panels per panel block (0 = as many as
 * fit F32_W_BLOCK weight bytes per K block), used when a thread has more than 2 * pb panels.
 */
export function gemm_f32_packed(
  tid: i32, nt: i32, a: usize, lda: i32, wp: usize, bias: usize, c: usize, ldc: i32,
  M: i32, N: i32, K: i32, kc: i32, mcT: i32, pb: i32,
): void {
  igemm(tid, nt, a, usize(lda) << 2, 1, 1, M, K, wp, bias, c, usize(ldc) << 2, 1, M, N, 1, 1, 1, 0, 0, 0, kc, mcT, pb);
}

/**
 * NHWC convolution as implicit GEMM. x: [Bn, H, W, Cin] (contiguous), y: [Bn, Ho, Wo, *] with pixel stride
 * ldy floats (Cout for a plain output), weights packed as panels over K = (ky, kx, ci), bias padded,
 * zero: kw*Cin zero floats (read for padding). padT/padL: top/left padding; bottom/right padding is
 * implied by Ho/Wo. kc, mcT, pb: cache blocking as for gemm_f32_packed.
 */
export function conv2d_f32(
  tid: i32, nt: i32, x: usize, Bn: i32, H: i32, W: i32, Cin: i32,
  wp: usize, bias: usize, y: usize, ldy: i32, Ho: i32, Wo: i32, Cout: i32,
  kh: i32, kw: i32, stride: i32, padT: i32, padL: i32, zero: usize, kc: i32, mcT: i32, pb: i32,
): void {
  igemm(tid, nt, x, usize(Cin) << 2, Bn, H, W, Cin, wp, bias, y, usize(ldy) << 2, Ho, Wo, Cout, kh, kw, stride, padT, padL, zero, kc, mcT, pb);
}

/** Loads B(k, j0 + 4*q .. +3) of a strided B (element (k, j) at pb + j*sbnB bytes), lanes past n zero. */
@inline function loadBStrided(pb: usize, sbnB: usize, n: i32, q: i32): v128 {
  let v = f32x4.splat(0);
  const j0 = q << 2;
  const base = pb + usize(j0) * sbnB;
  if (n > j0) v = f32x4.replace_lane(v, 0, load<f32>(base));
  if (n > j0 + 1) v = f32x4.replace_lane(v, 1, load<f32>(base + sbnB));
  if (n > j0 + 2) v = f32x4.replace_lane(v, 2, load<f32>(base + 2 * sbnB));
  if (n > j0 + 3) v = f32x4.replace_lane(v, 3, load<f32>(base + 3 * sbnB));
  return v;
}

/**
 * General strided GEMM (no packing), for backward passes and one-off products:
 * C[M, N] (row stride ldc) = (accumulate ? C : 0) + (bias ? bias[j] : 0) + sum_k A(i, k) * B(k, j),
 * A(i, k) at a + (i*sam + k*sak) floats, B(k, j) at b + (k*sbk + j*sbn) floats (so transposed operands are
 * just other strides). Fast when sbn == 1 (B rows contiguous); any strides are correct.
 * Each C element: init, then one multiply-add per k in increasing k order (thread-count independent).
 */
export function gemm_f32(
  tid: i32, nt: i32, M: i32, N: i32, K: i32,
  a: usize, sam: i32, sak: i32, b: usize, sbk: i32, sbn: i32,
  c: usize, ldc: i32, bias: usize, accumulate: i32,
): void {
  if (M <= 0 || N <= 0) return;
  const mt = (M + 1) / 2;
  const np = (N + 15) / 16;
  const cm = i64((mt + nt - 1) / nt), cn = i64((np + nt - 1) / nt);
  let t0 = 0, t1 = mt, p0 = 0, p1 = np;
  if (i64(mt) * cn >= i64(np) * cm) {
    t0 = splitStart(mt, tid, nt);
    t1 = splitStart(mt, tid + 1, nt);
  } else {
    p0 = splitStart(np, tid, nt);
    p1 = splitStart(np, tid + 1, nt);
  }
  const samB = usize(sam) << 2, sakB = usize(sak) << 2, sbkB = usize(sbk) << 2, sbnB = usize(sbn) << 2;
  const ldcB = usize(ldc) << 2;
  const z = f32x4.splat(0);
  for (let t = t0; t < t1; t++) {
    const m0 = t * 2;
    const cr0 = usize(min(m0 + 0, M - 1));
    const cr1 = usize(min(m0 + 1, M - 1));
    for (let p = p0; p < p1; p++) {
      const j0 = p * 16;
      const ncols = min(16, N - j0);
      const cp0 = c + cr0 * ldcB + (usize(j0) << 2);
      const cp1 = c + cr1 * ldcB + (usize(j0) << 2);
      let c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
      if (accumulate) {
        c00 = loadPart(cp0, ncols); c01 = loadPart(cp0 + 16, ncols - 4); c02 = loadPart(cp0 + 32, ncols - 8); c03 = loadPart(cp0 + 48, ncols - 12);
        c10 = loadPart(cp1, ncols); c11 = loadPart(cp1 + 16, ncols - 4); c12 = loadPart(cp1 + 32, ncols - 8); c13 = loadPart(cp1 + 48, ncols - 12);
      }
      if (bias) {
        const bb = bias + (usize(j0) << 2);
        const v0 = loadPart(bb, ncols); const v1 = loadPart(bb + 16, ncols - 4); const v2 = loadPart(bb + 32, ncols - 8); const v3 = loadPart(bb + 48, ncols - 12);
        c00 = f32x4.add(c00, v0); c01 = f32x4.add(c01, v1); c02 = f32x4.add(c02, v2); c03 = f32x4.add(c03, v3); c10 = f32x4.add(c10, v0); c11 = f32x4.add(c11, v1); c12 = f32x4.add(c12, v2); c13 = f32x4.add(c13, v3);
      }
      let a0 = a + cr0 * samB;
      let a1 = a + cr1 * samB;
      let pb = b + usize(j0) * sbnB;
      let b0: v128, b1: v128, b2: v128, b3: v128, a: v128;
      if (sbn == 1 && ncols == 16) {
        for (let k = 0; k < K; k++) {
          b0 = v128.load(pb); b1 = v128.load(pb, 16); b2 = v128.load(pb, 32); b3 = v128.load(pb, 48);
          a = v128.load32_splat(a0); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01); c02 = madd(a, b2, c02); c03 = madd(a, b3, c03);
          a = v128.load32_splat(a1); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11); c12 = madd(a, b2, c12); c13 = madd(a, b3, c13);
          a0 += sakB; a1 += sakB;
          pb += sbkB;
        }
      } else {
        for (let k = 0; k < K; k++) {
          b0 = loadBStrided(pb, sbnB, ncols, 0); b1 = loadBStrided(pb, sbnB, ncols, 1); b2 = loadBStrided(pb, sbnB, ncols, 2); b3 = loadBStrided(pb, sbnB, ncols, 3);
          a = v128.load32_splat(a0); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01); c02 = madd(a, b2, c02); c03 = madd(a, b3, c03);
          a = v128.load32_splat(a1); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11); c12 = madd(a, b2, c12); c13 = madd(a, b3, c13);
          a0 += sakB; a1 += sakB;
          pb += sbkB;
        }
      }
      storePart(cp0, c00, ncols); storePart(cp0 + 16, c01, ncols - 4); storePart(cp0 + 32, c02, ncols - 8); storePart(cp0 + 48, c03, ncols - 12);
      storePart(cp1, c10, ncols); storePart(cp1 + 16, c11, ncols - 4); storePart(cp1 + 32, c12, ncols - 8); storePart(cp1 + 48, c13, ncols - 12);
    }
  }
}

/**
 * Register-only multiply-add loop to measure the f32 SIMD peak: 12 f32x4 accumulators updated as
 * s[i] += s[i+1] * m (relaxed_madd, or mul + add in the baseline build), so each step depends only on the
 * previous iteration and the loop is throughput-bound; iters * 96 flops per thread. Writes a checksum to
 * out + tid * 16 so nothing is optimised away.
 */
const PEAK_M: usize = memory.data<f32>([1e-9]);

export function peak_fma_f32(tid: i32, nt: i32, iters: i32, out: usize): void {
  // from memory, not a v128.const: V8 15 (Deno 2) rematerialises constants inside the loop
  const m = v128.load32_splat(PEAK_M);
  let s0 = f32x4.splat(0.01);
  let s1 = f32x4.splat(0.02);
  let s2 = f32x4.splat(0.03);
  let s3 = f32x4.splat(0.04);
  let s4 = f32x4.splat(0.05);
  let s5 = f32x4.splat(0.06);
  let s6 = f32x4.splat(0.07);
  let s7 = f32x4.splat(0.08);
  let s8 = f32x4.splat(0.09);
  let s9 = f32x4.splat(0.10);
  let s10 = f32x4.splat(0.11);
  let s11 = f32x4.splat(0.12);
  for (let i = 0; i < iters; i++) {
    const s0old = s0;
    s0 = madd(s1, m, s0);
    s1 = madd(s2, m, s1);
    s2 = madd(s3, m, s2);
    s3 = madd(s4, m, s3);
    s4 = madd(s5, m, s4);
    s5 = madd(s6, m, s5);
    s6 = madd(s7, m, s6);
    s7 = madd(s8, m, s7);
    s8 = madd(s9, m, s8);
    s9 = madd(s10, m, s9);
    s10 = madd(s11, m, s10);
    s11 = madd(s0old, m, s11);
  }
  let t = f32x4.add(f32x4.add(f32x4.add(s0, s1), f32x4.add(s2, s3)), f32x4.add(f32x4.add(s4, s5), f32x4.add(s6, s7)));
  t = f32x4.add(t, f32x4.add(f32x4.add(s8, s9), f32x4.add(s10, s11)));
  v128.store(out + (usize(tid) << 4), t);
}
