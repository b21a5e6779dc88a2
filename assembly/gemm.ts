// FP32 GEMM and convolution (implicit GEMM) kernels.
//
// Micro-kernel: a 6 x 8 register tile of C (6 rows x 2 f32x4 = 12 accumulators in locals), looping over K
// innermost: each k step loads one 8-wide row of the packed B panel (2 x v128), broadcasts 6 A values
// (v128.load32_splat) and does 12 multiply-adds (f32x4.relaxed_madd in the relaxed build, mul + add in
// the baseline build).
//
// Packed B ("panels"): N is cut into panels of 8 columns (the last zero-padded); panel p holds K rows of
// 8 floats, contiguous: packed[(p * K + k) * 8 + j] = B[k][p * 8 + j]. Bias is padded to panels * 8.
// A BF16/INT8 variant can keep the same blocking and only change how a B row is loaded (u16 -> f32
// widening, or i8 with a per-column scale applied at store).
//
// Every output element is computed as bias + sum over k = 0..K-1 in increasing k order, one FMA (or
// mul+add) per k, by exactly one thread; tails are handled by clamping rows (a duplicate row computes
// the same values as the last real row and stores them to the same place) and by masking columns.
// So results do not depend on the thread count or on the tiling (MC/KC blocking) at all.
//
// Convolution is the same loop: M = B*Ho*Wo output pixels (NHWC rows), N = Cout, K = kh*kw*Cin in
// (ky, kx, ci) order. For each k range the 6 rows get pointers straight into the NHWC input: when all
// rows' kernel windows are inside the image horizontally (and pixels are contiguous), a whole kernel row
// (kw*Cin floats) is one contiguous run; otherwise one tap (Cin floats) at a time. Rows that fall into
// the zero padding read from a zero buffer of kw*Cin floats instead.
// A plain GEMM with packed B is the 1x1 convolution of a [1, 1, M, K] image with pixel stride lda.

// @ts-nocheck (AssemblyScript)

@inline function fma(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(f32x4.mul(a, b), c);
  }
}

/** First item of thread tid's contiguous share of n items (balanced: sizes differ by at most 1). */
@inline function shareStart(n: i32, tid: i32, nt: i32): i32 {
  const per = n / nt;
  const rem = n % nt;
  return tid * per + min(tid, rem);
}

/** Loads lanes [0, n) of 4 floats at ptr (n may be <= 0 or >= 4), zero in the other lanes. */
@inline function loadPart(ptr: usize, n: i32): v128 {
  if (n >= 4) return v128.load(ptr);
  let v = f32x4.splat(0);
  if (n > 0) v = f32x4.replace_lane(v, 0, load<f32>(ptr));
  if (n > 1) v = f32x4.replace_lane(v, 1, load<f32>(ptr, 4));
  if (n > 2) v = f32x4.replace_lane(v, 2, load<f32>(ptr, 8));
  return v;
}

/** Stores lanes [0, n) of v to ptr. */
@inline function storePart(ptr: usize, v: v128, n: i32): void {
  if (n >= 4) {
    v128.store(ptr, v);
    return;
  }
  if (n > 0) store<f32>(ptr, f32x4.extract_lane(v, 0));
  if (n > 1) store<f32>(ptr, f32x4.extract_lane(v, 1), 4);
  if (n > 2) store<f32>(ptr, f32x4.extract_lane(v, 2), 8);
}

/** Pointer to input row data for one output row and one (ky, kx-run): inside the image, or the zero buffer. */
@inline function rowPtr(base: usize, iy: i32, ix: i32, H: i32, W: i32, pixB: usize, off: usize, zero: usize): usize {
  return <u32>iy < <u32>H && <u32>ix < <u32>W ? base + usize(iy * W + ix) * pixB + off : zero + off;
}


/**
 * One 6 x 8 tile of the implicit GEMM: output rows m0..m0+5 (clamped to M-1), panel p, k in [k0, k1).
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
  const cp0 = y + usize(r0) * ldyB + (usize(p) << 5);
  const r1 = min(m0 + 1, M - 1);
  const n1 = r1 / HoWo, q1 = r1 - n1 * HoWo, oy1 = q1 / Wo, ox1 = q1 - oy1 * Wo;
  const base1 = x + usize(n1) * HWB, iy1 = oy1 * stride - padT, ix1 = ox1 * stride - padL;
  const cp1 = y + usize(r1) * ldyB + (usize(p) << 5);
  const r2 = min(m0 + 2, M - 1);
  const n2 = r2 / HoWo, q2 = r2 - n2 * HoWo, oy2 = q2 / Wo, ox2 = q2 - oy2 * Wo;
  const base2 = x + usize(n2) * HWB, iy2 = oy2 * stride - padT, ix2 = ox2 * stride - padL;
  const cp2 = y + usize(r2) * ldyB + (usize(p) << 5);
  const r3 = min(m0 + 3, M - 1);
  const n3 = r3 / HoWo, q3 = r3 - n3 * HoWo, oy3 = q3 / Wo, ox3 = q3 - oy3 * Wo;
  const base3 = x + usize(n3) * HWB, iy3 = oy3 * stride - padT, ix3 = ox3 * stride - padL;
  const cp3 = y + usize(r3) * ldyB + (usize(p) << 5);
  const r4 = min(m0 + 4, M - 1);
  const n4 = r4 / HoWo, q4 = r4 - n4 * HoWo, oy4 = q4 / Wo, ox4 = q4 - oy4 * Wo;
  const base4 = x + usize(n4) * HWB, iy4 = oy4 * stride - padT, ix4 = ox4 * stride - padL;
  const cp4 = y + usize(r4) * ldyB + (usize(p) << 5);
  const r5 = min(m0 + 5, M - 1);
  const n5 = r5 / HoWo, q5 = r5 - n5 * HoWo, oy5 = q5 / Wo, ox5 = q5 - oy5 * Wo;
  const base5 = x + usize(n5) * HWB, iy5 = oy5 * stride - padT, ix5 = ox5 * stride - padL;
  const cp5 = y + usize(r5) * ldyB + (usize(p) << 5);
  // whole kernel rows are contiguous runs when every row's window is horizontally inside the image
  const hok = (kw == 1 || pixB == usize(Cin) << 2) && ix0 >= 0 && ix0 + kw <= W && ix1 >= 0 && ix1 + kw <= W && ix2 >= 0 && ix2 + kw <= W && ix3 >= 0 && ix3 + kw <= W && ix4 >= 0 && ix4 + kw <= W && ix5 >= 0 && ix5 + kw <= W;
  const ncols = N - (p << 3);
  const z = f32x4.splat(0);
  let c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
  if (k0 == 0) {
    const bb = bias + (usize(p) << 5);
    const v0 = v128.load(bb), v1 = v128.load(bb, 16);
    c00 = v0; c01 = v1; c10 = v0; c11 = v1; c20 = v0; c21 = v1; c30 = v0; c31 = v1; c40 = v0; c41 = v1; c50 = v0; c51 = v1;
  } else if (ncols >= 8) {
    c00 = v128.load(cp0); c01 = v128.load(cp0, 16);
    c10 = v128.load(cp1); c11 = v128.load(cp1, 16);
    c20 = v128.load(cp2); c21 = v128.load(cp2, 16);
    c30 = v128.load(cp3); c31 = v128.load(cp3, 16);
    c40 = v128.load(cp4); c41 = v128.load(cp4, 16);
    c50 = v128.load(cp5); c51 = v128.load(cp5, 16);
  } else {
    c00 = loadPart(cp0, ncols); c01 = loadPart(cp0 + 16, ncols - 4);
    c10 = loadPart(cp1, ncols); c11 = loadPart(cp1 + 16, ncols - 4);
    c20 = loadPart(cp2, ncols); c21 = loadPart(cp2 + 16, ncols - 4);
    c30 = loadPart(cp3, ncols); c31 = loadPart(cp3 + 16, ncols - 4);
    c40 = loadPart(cp4, ncols); c41 = loadPart(cp4 + 16, ncols - 4);
    c50 = loadPart(cp5, ncols); c51 = loadPart(cp5 + 16, ncols - 4);
  }
  const rowK = kw * Cin;
  let bq = wp + ((usize(p) * usize(K) + usize(k0)) << 5);
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
    let a4 = rowPtr(base4, iy4 + ky, ix4 + dx, H, W, pixB, offB, zero);
    let a5 = rowPtr(base5, iy5 + ky, ix5 + dx, H, W, pixB, offB, zero);
    k += len;
    let b0: v128, b1: v128, a: v128;
    for (; len >= 4; len -= 4) {
      b0 = v128.load(bq); b1 = v128.load(bq, 16);
      a = v128.load32_splat(a0); c00 = fma(a, b0, c00); c01 = fma(a, b1, c01);
      a = v128.load32_splat(a1); c10 = fma(a, b0, c10); c11 = fma(a, b1, c11);
      a = v128.load32_splat(a2); c20 = fma(a, b0, c20); c21 = fma(a, b1, c21);
      a = v128.load32_splat(a3); c30 = fma(a, b0, c30); c31 = fma(a, b1, c31);
      a = v128.load32_splat(a4); c40 = fma(a, b0, c40); c41 = fma(a, b1, c41);
      a = v128.load32_splat(a5); c50 = fma(a, b0, c50); c51 = fma(a, b1, c51);
      b0 = v128.load(bq, 32); b1 = v128.load(bq, 48);
      a = v128.load32_splat(a0, 4); c00 = fma(a, b0, c00); c01 = fma(a, b1, c01);
      a = v128.load32_splat(a1, 4); c10 = fma(a, b0, c10); c11 = fma(a, b1, c11);
      a = v128.load32_splat(a2, 4); c20 = fma(a, b0, c20); c21 = fma(a, b1, c21);
      a = v128.load32_splat(a3, 4); c30 = fma(a, b0, c30); c31 = fma(a, b1, c31);
      a = v128.load32_splat(a4, 4); c40 = fma(a, b0, c40); c41 = fma(a, b1, c41);
      a = v128.load32_splat(a5, 4); c50 = fma(a, b0, c50); c51 = fma(a, b1, c51);
      b0 = v128.load(bq, 64); b1 = v128.load(bq, 80);
      a = v128.load32_splat(a0, 8); c00 = fma(a, b0, c00); c01 = fma(a, b1, c01);
      a = v128.load32_splat(a1, 8); c10 = fma(a, b0, c10); c11 = fma(a, b1, c11);
      a = v128.load32_splat(a2, 8); c20 = fma(a, b0, c20); c21 = fma(a, b1, c21);
      a = v128.load32_splat(a3, 8); c30 = fma(a, b0, c30); c31 = fma(a, b1, c31);
      a = v128.load32_splat(a4, 8); c40 = fma(a, b0, c40); c41 = fma(a, b1, c41);
      a = v128.load32_splat(a5, 8); c50 = fma(a, b0, c50); c51 = fma(a, b1, c51);
      b0 = v128.load(bq, 96); b1 = v128.load(bq, 112);
      a = v128.load32_splat(a0, 12); c00 = fma(a, b0, c00); c01 = fma(a, b1, c01);
      a = v128.load32_splat(a1, 12); c10 = fma(a, b0, c10); c11 = fma(a, b1, c11);
      a = v128.load32_splat(a2, 12); c20 = fma(a, b0, c20); c21 = fma(a, b1, c21);
      a = v128.load32_splat(a3, 12); c30 = fma(a, b0, c30); c31 = fma(a, b1, c31);
      a = v128.load32_splat(a4, 12); c40 = fma(a, b0, c40); c41 = fma(a, b1, c41);
      a = v128.load32_splat(a5, 12); c50 = fma(a, b0, c50); c51 = fma(a, b1, c51);
a0 += 16; a1 += 16; a2 += 16; a3 += 16; a4 += 16; a5 += 16;
      bq += 128;
    }
    for (; len > 0; len--) {
      b0 = v128.load(bq); b1 = v128.load(bq, 16);
      a = v128.load32_splat(a0); c00 = fma(a, b0, c00); c01 = fma(a, b1, c01);
      a = v128.load32_splat(a1); c10 = fma(a, b0, c10); c11 = fma(a, b1, c11);
      a = v128.load32_splat(a2); c20 = fma(a, b0, c20); c21 = fma(a, b1, c21);
      a = v128.load32_splat(a3); c30 = fma(a, b0, c30); c31 = fma(a, b1, c31);
      a = v128.load32_splat(a4); c40 = fma(a, b0, c40); c41 = fma(a, b1, c41);
      a = v128.load32_splat(a5); c50 = fma(a, b0, c50); c51 = fma(a, b1, c51);
a0 += 4; a1 += 4; a2 += 4; a3 += 4; a4 += 4; a5 += 4;
      bq += 32;
    }
  }
  if (ncols >= 8) {
    v128.store(cp0, c00); v128.store(cp0, c01, 16);
    v128.store(cp1, c10); v128.store(cp1, c11, 16);
    v128.store(cp2, c20); v128.store(cp2, c21, 16);
    v128.store(cp3, c30); v128.store(cp3, c31, 16);
    v128.store(cp4, c40); v128.store(cp4, c41, 16);
    v128.store(cp5, c50); v128.store(cp5, c51, 16);
  } else {
    storePart(cp0, c00, ncols); storePart(cp0 + 16, c01, ncols - 4);
    storePart(cp1, c10, ncols); storePart(cp1 + 16, c11, ncols - 4);
    storePart(cp2, c20, ncols); storePart(cp2 + 16, c21, ncols - 4);
    storePart(cp3, c30, ncols); storePart(cp3 + 16, c31, ncols - 4);
    storePart(cp4, c40, ncols); storePart(cp4 + 16, c41, ncols - 4);
    storePart(cp5, c50, ncols); storePart(cp5 + 16, c51, ncols - 4);
  }
}

/**
 * Implicit-GEMM driver. Threads split the output statically: by 6-row tiles, or by 8-column panels when
 * that balances better (small M). Inside a thread: blocks of mcT tiles, K blocks of kc, panels, tiles.
 */
function igemm(
  tid: i32, nt: i32, x: usize, pixB: usize, Bn: i32, H: i32, W: i32, Cin: i32,
  wp: usize, bias: usize, y: usize, ldyB: usize, Ho: i32, Wo: i32, N: i32,
  kh: i32, kw: i32, stride: i32, padT: i32, padL: i32, zero: usize, kc: i32, mcT: i32,
): void {
  const HoWo = Ho * Wo;
  const M = Bn * HoWo;
  const K = kh * kw * Cin;
  if (M <= 0 || N <= 0) return;
  const mt = (M + 5) / 6;
  const np = (N + 7) >> 3;
  if (kc <= 0) kc = K;
  if (mcT <= 0) mcT = mt;
  // balance of splitting tiles vs panels over nt threads: compare n / (nt * ceil(n / nt))
  const cm = i64((mt + nt - 1) / nt), cn = i64((np + nt - 1) / nt);
  const byM = i64(mt) * cn >= i64(np) * cm;
  let t0 = 0, t1 = mt, p0 = 0, p1 = np;
  if (byM) {
    t0 = shareStart(mt, tid, nt);
    t1 = shareStart(mt, tid + 1, nt);
  } else {
    p0 = shareStart(np, tid, nt);
    p1 = shareStart(np, tid + 1, nt);
  }
  if (K == 0) {
    // no reduction: C = bias
    for (let t = t0; t < t1; t++)
      for (let p = p0; p < p1; p++)
        convTile(x, pixB, H, W, Cin, wp, bias, y, ldyB, M, HoWo, Wo, N, K, kw, stride, padT, padL, zero, t * 6, p, 0, 0);
    return;
  }
  for (let mb = t0; mb < t1; mb += mcT) {
    const me = min(mb + mcT, t1);
    for (let k0 = 0; k0 < K; k0 += kc) {
      const k1 = min(k0 + kc, K);
      for (let p = p0; p < p1; p++)
        for (let t = mb; t < me; t++)
          convTile(x, pixB, H, W, Cin, wp, bias, y, ldyB, M, HoWo, Wo, N, K, kw, stride, padT, padL, zero, t * 6, p, k0, k1);
    }
  }
}

/**
 * C[M, N] (row stride ldc floats) = A[M, K] (row stride lda floats) x B + bias, with B packed in 8-column
 * panels (see top of file) and bias padded to the panel width. kc: K block (0 = all of K);
 * mcT: row block in 6-row tiles (0 = all of the thread's rows).
 */
export function gemm_f32_packed(
  tid: i32, nt: i32, a: usize, lda: i32, wp: usize, bias: usize, c: usize, ldc: i32,
  M: i32, N: i32, K: i32, kc: i32, mcT: i32,
): void {
  igemm(tid, nt, a, usize(lda) << 2, 1, 1, M, K, wp, bias, c, usize(ldc) << 2, 1, M, N, 1, 1, 1, 0, 0, 0, kc, mcT);
}

/**
 * NHWC convolution as implicit GEMM. x: [Bn, H, W, Cin] (contiguous), y: [Bn, Ho, Wo, *] with pixel stride
 * ldy floats (Cout for a plain output), weights packed as panels over K = (ky, kx, ci), bias padded,
 * zero: kw*Cin zero floats (read for padding). padT/padL: top/left padding; bottom/right padding is
 * implied by Ho/Wo.
 */
export function conv2d_f32(
  tid: i32, nt: i32, x: usize, Bn: i32, H: i32, W: i32, Cin: i32,
  wp: usize, bias: usize, y: usize, ldy: i32, Ho: i32, Wo: i32, Cout: i32,
  kh: i32, kw: i32, stride: i32, padT: i32, padL: i32, zero: usize, kc: i32, mcT: i32,
): void {
  igemm(tid, nt, x, usize(Cin) << 2, Bn, H, W, Cin, wp, bias, y, usize(ldy) << 2, Ho, Wo, Cout, kh, kw, stride, padT, padL, zero, kc, mcT);
}

/** Loads B[k][j..j+7] for a strided B (element (k, j) at b + k*sbk + j*sbn floats), lanes >= n zero. */
@inline function loadBStrided(pb: usize, sbnB: usize, n: i32, half: i32): v128 {
  let v = f32x4.splat(0);
  const j0 = half << 2;
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
  const mt = (M + 5) / 6;
  const np = (N + 7) >> 3;
  const cm = i64((mt + nt - 1) / nt), cn = i64((np + nt - 1) / nt);
  let t0 = 0, t1 = mt, p0 = 0, p1 = np;
  if (i64(mt) * cn >= i64(np) * cm) {
    t0 = shareStart(mt, tid, nt);
    t1 = shareStart(mt, tid + 1, nt);
  } else {
    p0 = shareStart(np, tid, nt);
    p1 = shareStart(np, tid + 1, nt);
  }
  const samB = usize(sam) << 2, sakB = usize(sak) << 2, sbkB = usize(sbk) << 2, sbnB = usize(sbn) << 2;
  const ldcB = usize(ldc) << 2;
  const z = f32x4.splat(0);
  for (let t = t0; t < t1; t++) {
    const m0 = t * 6;
    const cr0 = usize(min(m0 + 0, M - 1));
    const cr1 = usize(min(m0 + 1, M - 1));
    const cr2 = usize(min(m0 + 2, M - 1));
    const cr3 = usize(min(m0 + 3, M - 1));
    const cr4 = usize(min(m0 + 4, M - 1));
    const cr5 = usize(min(m0 + 5, M - 1));
    for (let p = p0; p < p1; p++) {
      const j0 = p << 3;
      const ncols = min(8, N - j0);
      const cp0 = c + cr0 * ldcB + (usize(j0) << 2);
      const cp1 = c + cr1 * ldcB + (usize(j0) << 2);
      const cp2 = c + cr2 * ldcB + (usize(j0) << 2);
      const cp3 = c + cr3 * ldcB + (usize(j0) << 2);
      const cp4 = c + cr4 * ldcB + (usize(j0) << 2);
      const cp5 = c + cr5 * ldcB + (usize(j0) << 2);
      let c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
      if (accumulate) {
        c00 = loadPart(cp0, ncols); c01 = loadPart(cp0 + 16, ncols - 4);
        c10 = loadPart(cp1, ncols); c11 = loadPart(cp1 + 16, ncols - 4);
        c20 = loadPart(cp2, ncols); c21 = loadPart(cp2 + 16, ncols - 4);
        c30 = loadPart(cp3, ncols); c31 = loadPart(cp3 + 16, ncols - 4);
        c40 = loadPart(cp4, ncols); c41 = loadPart(cp4 + 16, ncols - 4);
        c50 = loadPart(cp5, ncols); c51 = loadPart(cp5 + 16, ncols - 4);
      }
      if (bias) {
        const v0 = loadPart(bias + (usize(j0) << 2), ncols), v1 = loadPart(bias + (usize(j0) << 2) + 16, ncols - 4);
        c00 = f32x4.add(c00, v0); c01 = f32x4.add(c01, v1); c10 = f32x4.add(c10, v0); c11 = f32x4.add(c11, v1); c20 = f32x4.add(c20, v0); c21 = f32x4.add(c21, v1); c30 = f32x4.add(c30, v0); c31 = f32x4.add(c31, v1); c40 = f32x4.add(c40, v0); c41 = f32x4.add(c41, v1); c50 = f32x4.add(c50, v0); c51 = f32x4.add(c51, v1);
      }
      let a0 = a + cr0 * samB;
      let a1 = a + cr1 * samB;
      let a2 = a + cr2 * samB;
      let a3 = a + cr3 * samB;
      let a4 = a + cr4 * samB;
      let a5 = a + cr5 * samB;
      let pb = b + usize(j0) * sbnB;
      let b0: v128, b1: v128, a: v128;
      if (sbn == 1 && ncols == 8) {
        for (let k = 0; k < K; k++) {
          b0 = v128.load(pb); b1 = v128.load(pb, 16);
          a = v128.load32_splat(a0); c00 = fma(a, b0, c00); c01 = fma(a, b1, c01);
          a = v128.load32_splat(a1); c10 = fma(a, b0, c10); c11 = fma(a, b1, c11);
          a = v128.load32_splat(a2); c20 = fma(a, b0, c20); c21 = fma(a, b1, c21);
          a = v128.load32_splat(a3); c30 = fma(a, b0, c30); c31 = fma(a, b1, c31);
          a = v128.load32_splat(a4); c40 = fma(a, b0, c40); c41 = fma(a, b1, c41);
          a = v128.load32_splat(a5); c50 = fma(a, b0, c50); c51 = fma(a, b1, c51);
          a0 += sakB; a1 += sakB; a2 += sakB; a3 += sakB; a4 += sakB; a5 += sakB;
          pb += sbkB;
        }
      } else {
        for (let k = 0; k < K; k++) {
          b0 = loadBStrided(pb, sbnB, ncols, 0); b1 = loadBStrided(pb, sbnB, ncols, 1);
          a = v128.load32_splat(a0); c00 = fma(a, b0, c00); c01 = fma(a, b1, c01);
          a = v128.load32_splat(a1); c10 = fma(a, b0, c10); c11 = fma(a, b1, c11);
          a = v128.load32_splat(a2); c20 = fma(a, b0, c20); c21 = fma(a, b1, c21);
          a = v128.load32_splat(a3); c30 = fma(a, b0, c30); c31 = fma(a, b1, c31);
          a = v128.load32_splat(a4); c40 = fma(a, b0, c40); c41 = fma(a, b1, c41);
          a = v128.load32_splat(a5); c50 = fma(a, b0, c50); c51 = fma(a, b1, c51);
          a0 += sakB; a1 += sakB; a2 += sakB; a3 += sakB; a4 += sakB; a5 += sakB;
          pb += sbkB;
        }
      }
      storePart(cp0, c00, ncols); storePart(cp0 + 16, c01, ncols - 4);
      storePart(cp1, c10, ncols); storePart(cp1 + 16, c11, ncols - 4);
      storePart(cp2, c20, ncols); storePart(cp2 + 16, c21, ncols - 4);
      storePart(cp3, c30, ncols); storePart(cp3 + 16, c31, ncols - 4);
      storePart(cp4, c40, ncols); storePart(cp4 + 16, c41, ncols - 4);
      storePart(cp5, c50, ncols); storePart(cp5 + 16, c51, ncols - 4);
    }
  }
}

/**
 * Register-only multiply-add loop to measure the f32 SIMD peak: 12 independent f32x4 accumulators,
 * iters iterations of 12 fma (relaxed_madd, or mul + add in the baseline build) = iters * 96 flops per
 * thread. Writes a checksum to out + tid * 16 so nothing is optimised away.
 */
export function peak_fma_f32(tid: i32, nt: i32, iters: i32, out: usize): void {
  const m = f32x4.splat(0.9999);
  const d = f32x4.splat(0.0001);
  let s0 = f32x4.splat(0.01);
  let s1 = f32x4.splat(0.02);
  let s2 = f32x4.splat(0.03);
  let s3 = f32x4.splat(0.04);
  let s4 = f32x4.splat(0.05);
  let s5 = f32x4.splat(0.06);
  let s6 = f32x4.splat(0.07);
  let s7 = f32x4.splat(0.08);
  let s8 = f32x4.splat(0.09);
  let s9 = f32x4.splat(0.1);
  let s10 = f32x4.splat(0.11);
  let s11 = f32x4.splat(0.12);
  for (let i = 0; i < iters; i++) {
    s0 = fma(s0, m, d);
    s1 = fma(s1, m, d);
    s2 = fma(s2, m, d);
    s3 = fma(s3, m, d);
    s4 = fma(s4, m, d);
    s5 = fma(s5, m, d);
    s6 = fma(s6, m, d);
    s7 = fma(s7, m, d);
    s8 = fma(s8, m, d);
    s9 = fma(s9, m, d);
    s10 = fma(s10, m, d);
    s11 = fma(s11, m, d);
  }
  let t = f32x4.add(f32x4.add(f32x4.add(s0, s1), f32x4.add(s2, s3)), f32x4.add(f32x4.add(s4, s5), f32x4.add(s6, s7)));
  t = f32x4.add(t, f32x4.add(f32x4.add(s8, s9), f32x4.add(s10, s11)));
  v128.store(out + (usize(tid) << 4), t);
}
