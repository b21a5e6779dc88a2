// INT8 GEMM and convolution (implicit GEMM): u8 activations x i8 weights, exact i32 accumulation, fused
// dequantising epilogue. (Scheme of "Effective Quantization for Diffusion Models on CPUs": weights int8
// symmetric per output channel, activations 8-bit asymmetric per tensor.)
//
// Operands
//   A: activations quantised by quantize_act_u8 (assembly/quantize.ts): u8 rows (pixels) of Cp bytes,
//      Cp = Cin rounded up to a multiple of 4, the padding channels hold the zero point.
//   B: weights, i8 in [-127, 127], packed in panels of 8 output channels; inside a panel K runs in groups
//      of 4 ("k-groups") of 32 bytes, channels 0-3 in the first 16 bytes, 4-7 in the second. Two layouts:
//      relaxed ("k4"): channel j's 4 weights at bytes 4(j & 3)..+3 of its half:
//        byte (p*K + (k & ~3))*8 + 4*j + (k & 3) = W[p*8 + j][k]
//      i16 path ("k-pairs"): k0,k1 of channels 0-3 in bytes 0..7 of a half, then k2,k3:
//        byte (p*K + (k & ~3))*8 + 16*(j >> 2) + 8*((k & 3) >> 1) + 2*(j & 3) + (k & 1) = W[p*8 + j][k]
//      so that sign-extending the low / high 8 bytes gives the i16 operands of i32x4.dot_i16x8_s directly.
//      Padded channels / k are zero.
//   corr[n] = zp * sum_k W[n][k] (i32), scale[n] = f32(sx * sw[n]), bias[n] (f32); all padded to panels*8.
// Result
//   acc[m][n] = sum_k A[m][k] * W[n][k] - corr[n]          (exact in i32: starts at -corr[n])
//   y[m][n]   = f32(acc) * scale[n] + bias[n]              (f32 multiply, then f32 add, never fused)
//   so y = (sum (qa - zp) * qw) * sx * sw + bias: the zero-point correction of the paper's epilogue.
//   flags & 2 (RAW): store acc itself (as i32 bits) instead, for tests.
//
// Blocking: threads split the output statically (4-row tiles, or 8-channel panels when that balances
// better). Inside a thread: panel blocks (weights of at most INT8_W_BLOCK bytes per K block, so they stay
// in L2) x row blocks of mcT tiles x K blocks of kc; each block's activations are packed into the
// thread's scratch, interleaved by k-group (16 bytes = 4 rows x 4 k; the i16 path widens them to 32),
// which also gathers the conv windows, then every panel of the panel block runs over the packed block.
// Partial sums live in y as i32 between K blocks. Integer sums: results never depend on the blocking.
//
// Inner products, per output tile of 4 rows x 8 channels (8 i32x4 accumulators), one k-group per step:
//   relaxed build, flags & 1 == 0 (weights in the k4 layout): weights are the signed i8 operand, activations
//     the "i7" operand. Two instruction sequences for the same sum:
//       flags & 4 (FUSED): acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(w, splat(4 activation bytes), acc)
//       otherwise (split): acc += i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(w, a), ones)
//     With 7-bit activations (0..127) both are exact on every CPU (x86 pmaddubsw/vpdpbusd, Arm sdot/usdot;
//     on x86 the i16 pair sums stay within 2*127*127 < 32767). With 8-bit activations they are exact only
//     where src/nn/int8.ts's probe (assembly/probe.ts probe_dot_u8) says so: the fused dot with int8
//     weights on AVX-VNNI (vpdpbusd); both sequences with 7-bit weights (|w| <= 63, pair sums <= 2*255*63)
//     on x86 (pmaddubsw reads the byte unsigned); elsewhere such layers take the i16 path. The kernel
//     itself does not care: it multiplies the bytes it is given.
//     V8 lowers the fused form to one vpdpbusd with AVX-VNNI (V8 13.6+) and to five instructions without
//     it (rebuilding a ones vector each time), the split form to three, so the runtime times the kernel
//     with both once per engine and takes the faster (src/nn/int8.ts int8Capabilities).
//   otherwise (baseline build, or flags & 1; weights in the k-pair layout):
//     weights sign-extended to i16, activations zero-extended to i16 while packing, i32x4.dot_i16x8_s:
//     exact for all u8 activations. Tiles run as two 2-row halves (4 accumulators) to fit the registers.
//   Both compute the same exact integer sums, so with 7-bit activations the two builds agree bit for bit.
//
// Convolution: M = B*Ho*Wo output pixels (NHWC rows), N = Cout, K = kh*kw*Cp in (ky, kx, ci) order; the
// packing reads the quantised NHWC input directly; taps in the spatial padding read a buffer of zero-point
// bytes (pad, kw*Cp bytes), so padded taps contribute zp * w, which the correction cancels exactly.
// A GEMM is the 1 x 1 convolution of a [1, 1, M, K] image with pixel stride lda.
import { splitStart, loadPart, storePart, rowPtr, onesI16x8, storeTransposed4x4 } from "./math";
import { INT8_FLAG_I16, INT8_FLAG_RAW, INT8_FLAG_FUSED, INT8_FLAG_SPLAT_LOAD, PEAK_DOT_STRIDE } from "./abi";
import { qdot, qdotSplit, qdot16 } from "./int8_dot";

// @ts-nocheck (AssemblyScript)

/** Weight bytes per panel block (half of a 1 MiB L2). */
const INT8_W_BLOCK: i32 = 1 << 19;

/**
 * Packs the activations of one 4-row tile (rows m0..m0+3, clamped to M-1) for k in [k0, k1) into ap,
 * interleaved by k-group: ap[g*16 + r*4 + j] = A[row r][k0 + 4g + j]. For convolutions this gathers the
 * kernel window (taps in the padding read the zero-point buffer), so the GEMM loop sees plain rows.
 * wide (the i16 path): each byte zero-extended to i16, so a row's k-group is 8 bytes:
 * ap[g*32 + r*8 + 2j] = A[row r][k0 + 4g + j] as i16.
 */
function qPackTile(
  x: usize, pixB: usize, H: i32, W: i32, Cp: i32, M: i32, HoWo: i32, Wo: i32,
  kw: i32, stride: i32, padT: i32, padL: i32, pad: usize, m0: i32, k0: i32, k1: i32, ap: usize, wide: bool,
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
  // whole kernel rows are contiguous runs when every row's window is horizontally inside the image
  const hok = (kw == 1 || pixB == usize(Cp)) && ix0 >= 0 && ix0 + kw <= W && ix1 >= 0 && ix1 + kw <= W && ix2 >= 0 && ix2 + kw <= W && ix3 >= 0 && ix3 + kw <= W;
  const rowK = kw * Cp;
  let k = k0;
  while (k < k1) {
    const ky = k / rowK;
    const within = k - ky * rowK;
    let dx = 0, off = within, len = min(k1, (ky + 1) * rowK) - k;
    if (!hok) {
      dx = within / Cp;
      off = within - dx * Cp;
      len = min(k1 - k, Cp - off);
    }
    let a0 = rowPtr(base0, iy0 + ky, ix0 + dx, H, W, pixB, usize(off), pad);
    let a1 = rowPtr(base1, iy1 + ky, ix1 + dx, H, W, pixB, usize(off), pad);
    let a2 = rowPtr(base2, iy2 + ky, ix2 + dx, H, W, pixB, usize(off), pad);
    let a3 = rowPtr(base3, iy3 + ky, ix3 + dx, H, W, pixB, usize(off), pad);
    k += len;
    if (wide) {
      for (; len >= 8; len -= 8) {
        // 8 bytes (2 k-groups) per row, widened: [g0 | g1] per row; out: g0 rows 0..3, then g1 rows 0..3
        const e0 = v128.load8x8_u(a0), e1 = v128.load8x8_u(a1), e2 = v128.load8x8_u(a2), e3 = v128.load8x8_u(a3);
        v128.store(ap, i64x2.shuffle(e0, e1, 0, 2));
        v128.store(ap, i64x2.shuffle(e2, e3, 0, 2), 16);
        v128.store(ap, i64x2.shuffle(e0, e1, 1, 3), 32);
        v128.store(ap, i64x2.shuffle(e2, e3, 1, 3), 48);
        a0 += 8; a1 += 8; a2 += 8; a3 += 8;
        ap += 64;
      }
      if (len > 0) {
        const e0 = i16x8.extend_low_i8x16_u(v128.load32_zero(a0)), e1 = i16x8.extend_low_i8x16_u(v128.load32_zero(a1));
        const e2 = i16x8.extend_low_i8x16_u(v128.load32_zero(a2)), e3 = i16x8.extend_low_i8x16_u(v128.load32_zero(a3));
        v128.store(ap, i64x2.shuffle(e0, e1, 0, 2));
        v128.store(ap, i64x2.shuffle(e2, e3, 0, 2), 16);
        ap += 32;
      }
      continue;
    }
    for (; len >= 16; len -= 16) {
      storeTransposed4x4(ap, v128.load(a0), v128.load(a1), v128.load(a2), v128.load(a3));
      a0 += 16; a1 += 16; a2 += 16; a3 += 16;
      ap += 64;
    }
    for (; len > 0; len -= 4) {
      store<u32>(ap, load<u32>(a0));
      store<u32>(ap, load<u32>(a1), 4);
      store<u32>(ap, load<u32>(a2), 8);
      store<u32>(ap, load<u32>(a3), 12);
      a0 += 4; a1 += 4; a2 += 4; a3 += 4;
      ap += 16;
    }
  }
}

/**
 * One 4 x 8 tile from packed activations ap (see qPackTile), relaxed dot paths: output rows m0..m0+3
 * (clamped to M-1), panel p, k in [k0, k1) (multiples of 4).
 */
function qTile(
  ap: usize, wp: usize, corr: usize, scl: usize, bias: usize, y: usize, ldyB: usize,
  M: i32, N: i32, K: i32, m0: i32, p: i32, k0: i32, k1: i32, flags: i32,
): void {
  const cp0 = y + usize(min(m0 + 0, M - 1)) * ldyB + (usize(p) << 5);
  const cp1 = y + usize(min(m0 + 1, M - 1)) * ldyB + (usize(p) << 5);
  const cp2 = y + usize(min(m0 + 2, M - 1)) * ldyB + (usize(p) << 5);
  const cp3 = y + usize(min(m0 + 3, M - 1)) * ldyB + (usize(p) << 5);
  const ncols = N - (p << 3);
  let c00: v128, c01: v128, c10: v128, c11: v128, c20: v128, c21: v128, c30: v128, c31: v128;
  if (k0 == 0) {
    const z = i32x4.splat(0);
    const cc = corr + (usize(p) << 5);
    const v0 = i32x4.sub(z, v128.load(cc)), v1 = i32x4.sub(z, v128.load(cc, 16));
    c00 = v0; c01 = v1; c10 = v0; c11 = v1; c20 = v0; c21 = v1; c30 = v0; c31 = v1;
  } else {
    c00 = loadPart(cp0, ncols); c01 = loadPart(cp0 + 16, ncols - 4);
    c10 = loadPart(cp1, ncols); c11 = loadPart(cp1 + 16, ncols - 4);
    c20 = loadPart(cp2, ncols); c21 = loadPart(cp2 + 16, ncols - 4);
    c30 = loadPart(cp3, ncols); c31 = loadPart(cp3 + 16, ncols - 4);
  }
  let bq = wp + ((usize(p) * usize(K) + usize(k0)) << 3);
  const end = ap + (usize(k1 - k0) << 2);
  let w0: v128, w1: v128, a: v128;
  // Activations, two forms of the same products (which is faster depends on the engine: src/nn/int8.ts times
  // both once): flags & INT8_FLAG_SPLAT_LOAD: one 4-byte broadcast load per row (v128.load32_splat: 6 loads,
  // no shuffle per 8 dots; 3-8% faster on Zen 4 under Node 24 and Deno); else one 16-byte load and 4 lane
  // shuffles (3 loads + 4 pshufd per 8 dots; ~20% faster under Node 20's V8 11).
  const fused = (flags & (INT8_FLAG_I16 | INT8_FLAG_FUSED)) == INT8_FLAG_FUSED;
  if (ASC_FEATURE_RELAXED_SIMD && (flags & INT8_FLAG_SPLAT_LOAD) != 0) {
    if (fused) {
      for (; ap < end; ap += 16) {
        w0 = v128.load(bq); w1 = v128.load(bq, 16);
        a = v128.load32_splat(ap); c00 = qdot(w0, a, c00); c01 = qdot(w1, a, c01);
        a = v128.load32_splat(ap, 4); c10 = qdot(w0, a, c10); c11 = qdot(w1, a, c11);
        a = v128.load32_splat(ap, 8); c20 = qdot(w0, a, c20); c21 = qdot(w1, a, c21);
        a = v128.load32_splat(ap, 12); c30 = qdot(w0, a, c30); c31 = qdot(w1, a, c31);
        bq += 32;
      }
    } else {
      const ones = onesI16x8();
      for (; ap < end; ap += 16) {
        w0 = v128.load(bq); w1 = v128.load(bq, 16);
        a = v128.load32_splat(ap); c00 = qdotSplit(w0, a, c00, ones); c01 = qdotSplit(w1, a, c01, ones);
        a = v128.load32_splat(ap, 4); c10 = qdotSplit(w0, a, c10, ones); c11 = qdotSplit(w1, a, c11, ones);
        a = v128.load32_splat(ap, 8); c20 = qdotSplit(w0, a, c20, ones); c21 = qdotSplit(w1, a, c21, ones);
        a = v128.load32_splat(ap, 12); c30 = qdotSplit(w0, a, c30, ones); c31 = qdotSplit(w1, a, c31, ones);
        bq += 32;
      }
    }
  } else if (ASC_FEATURE_RELAXED_SIMD) {
    if (fused) {
      for (; ap < end; ap += 16) {
        w0 = v128.load(bq); w1 = v128.load(bq, 16);
        const av = v128.load(ap);
        a = i32x4.shuffle(av, av, 0, 0, 0, 0); c00 = qdot(w0, a, c00); c01 = qdot(w1, a, c01);
        a = i32x4.shuffle(av, av, 1, 1, 1, 1); c10 = qdot(w0, a, c10); c11 = qdot(w1, a, c11);
        a = i32x4.shuffle(av, av, 2, 2, 2, 2); c20 = qdot(w0, a, c20); c21 = qdot(w1, a, c21);
        a = i32x4.shuffle(av, av, 3, 3, 3, 3); c30 = qdot(w0, a, c30); c31 = qdot(w1, a, c31);
        bq += 32;
      }
    } else {
      const ones = onesI16x8();
      for (; ap < end; ap += 16) {
        w0 = v128.load(bq); w1 = v128.load(bq, 16);
        const av = v128.load(ap);
        a = i32x4.shuffle(av, av, 0, 0, 0, 0); c00 = qdotSplit(w0, a, c00, ones); c01 = qdotSplit(w1, a, c01, ones);
        a = i32x4.shuffle(av, av, 1, 1, 1, 1); c10 = qdotSplit(w0, a, c10, ones); c11 = qdotSplit(w1, a, c11, ones);
        a = i32x4.shuffle(av, av, 2, 2, 2, 2); c20 = qdotSplit(w0, a, c20, ones); c21 = qdotSplit(w1, a, c21, ones);
        a = i32x4.shuffle(av, av, 3, 3, 3, 3); c30 = qdotSplit(w0, a, c30, ones); c31 = qdotSplit(w1, a, c31, ones);
        bq += 32;
      }
    }
  }
  if (k1 == K && (flags & INT8_FLAG_RAW) == 0) {
    const so = usize(p) << 5;
    const s0 = v128.load(scl + so), s1 = v128.load(scl + so, 16);
    const b0 = v128.load(bias + so), b1 = v128.load(bias + so, 16);
    c00 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c00), s0), b0); c01 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c01), s1), b1);
    c10 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c10), s0), b0); c11 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c11), s1), b1);
    c20 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c20), s0), b0); c21 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c21), s1), b1);
    c30 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c30), s0), b0); c31 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c31), s1), b1);
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

/** Two rows (cpA, cpB) x 8 channels of the i16 path over packed i16 activations (row offset ro bytes in a k-group). */
@inline function qRows16(
  ap: usize, end: usize, bq: usize, ro: usize, corr: usize, scl: usize, bias: usize, cpA: usize, cpB: usize,
  p: i32, ncols: i32, k0: i32, fin: bool,
): void {
  let c00: v128, c01: v128, c10: v128, c11: v128;
  if (k0 == 0) {
    const z = i32x4.splat(0);
    const cc = corr + (usize(p) << 5);
    const v0 = i32x4.sub(z, v128.load(cc)), v1 = i32x4.sub(z, v128.load(cc, 16));
    c00 = v0; c01 = v1; c10 = v0; c11 = v1;
  } else {
    c00 = loadPart(cpA, ncols); c01 = loadPart(cpA + 16, ncols - 4);
    c10 = loadPart(cpB, ncols); c11 = loadPart(cpB + 16, ncols - 4);
  }
  ap += ro;
  const e = end + ro;
  for (; ap < e; ap += 32) {
    const wP0 = v128.load8x8_s(bq), wQ0 = v128.load8x8_s(bq, 8);
    const wP1 = v128.load8x8_s(bq, 16), wQ1 = v128.load8x8_s(bq, 24);
    let aP = v128.load32_splat(ap), aQ = v128.load32_splat(ap, 4);
    c00 = qdot16(wP0, wQ0, aP, aQ, c00); c01 = qdot16(wP1, wQ1, aP, aQ, c01);
    aP = v128.load32_splat(ap, 8); aQ = v128.load32_splat(ap, 12);
    c10 = qdot16(wP0, wQ0, aP, aQ, c10); c11 = qdot16(wP1, wQ1, aP, aQ, c11);
    bq += 32;
  }
  if (fin) {
    const so = usize(p) << 5;
    const s0 = v128.load(scl + so), s1 = v128.load(scl + so, 16);
    const b0 = v128.load(bias + so), b1 = v128.load(bias + so, 16);
    c00 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c00), s0), b0); c01 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c01), s1), b1);
    c10 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c10), s0), b0); c11 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(c11), s1), b1);
  }
  if (ncols >= 8) {
    v128.store(cpA, c00); v128.store(cpA, c01, 16);
    v128.store(cpB, c10); v128.store(cpB, c11, 16);
  } else {
    storePart(cpA, c00, ncols); storePart(cpA + 16, c01, ncols - 4);
    storePart(cpB, c10, ncols); storePart(cpB + 16, c11, ncols - 4);
  }
}

/**
 * One 4 x 8 tile of the i16 path (weights in the k-pair layout, activations from qPackTile with wide), computed as
 * two 2-row halves so the 4 accumulators, 4 widened weight vectors and 4 activation pairs fit in registers.
 */
function qTile16(
  ap: usize, wp: usize, corr: usize, scl: usize, bias: usize, y: usize, ldyB: usize,
  M: i32, N: i32, K: i32, m0: i32, p: i32, k0: i32, k1: i32, flags: i32,
): void {
  const cp0 = y + usize(min(m0 + 0, M - 1)) * ldyB + (usize(p) << 5);
  const cp1 = y + usize(min(m0 + 1, M - 1)) * ldyB + (usize(p) << 5);
  const cp2 = y + usize(min(m0 + 2, M - 1)) * ldyB + (usize(p) << 5);
  const cp3 = y + usize(min(m0 + 3, M - 1)) * ldyB + (usize(p) << 5);
  const ncols = N - (p << 3);
  const bq = wp + ((usize(p) * usize(K) + usize(k0)) << 3);
  const end = ap + (usize(k1 - k0) << 3);
  const fin = k1 == K && (flags & INT8_FLAG_RAW) == 0;
  qRows16(ap, end, bq, 0, corr, scl, bias, cp0, cp1, p, ncols, k0, fin);
  // rows past M are clamped copies of row M-1; when that row belongs to the first half, the second half
  // must not run (with K blocking it would add this block to the partial sum the first half just stored)
  if (m0 + 2 < M) qRows16(ap, end, bq, 16, corr, scl, bias, cp2, cp3, p, ncols, k0, fin);
}

/**
 * Driver: static split of 4-row tiles (or 8-channel panels when that balances better) over threads.
 * Inside a thread: row blocks of mcT tiles x K blocks of kc: the block's activations are packed once
 * into the thread's scratch (mcT * 4 * kc bytes at scratch + tid * scrStride), then every panel of the
 * thread runs over them.
 */
function qgemm(
  tid: i32, nt: i32, x: usize, pixB: usize, Bn: i32, H: i32, W: i32, Cp: i32,
  wp: usize, corr: usize, scl: usize, bias: usize, y: usize, ldyB: usize, Ho: i32, Wo: i32, N: i32,
  kh: i32, kw: i32, stride: i32, padT: i32, padL: i32, pad: usize, kc: i32, mcT: i32, pb: i32, flags: i32,
  scratch: usize, scrStride: usize,
): void {
  const HoWo = Ho * Wo;
  const M = Bn * HoWo;
  const K = kh * kw * Cp;
  if (M <= 0 || N <= 0) return;
  const mt = (M + 3) >> 2;
  const np = (N + 7) >> 3;
  if (kc <= 0 || kc > K) kc = K;
  kc = (kc + 3) & ~3;
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
  const i16 = !ASC_FEATURE_RELAXED_SIMD || (flags & INT8_FLAG_I16) != 0;
  if (K == 0) {
    for (let t = t0; t < t1; t++)
      for (let p = p0; p < p1; p++)
        if (i16) qTile16(ap, wp, corr, scl, bias, y, ldyB, M, N, K, t << 2, p, 0, 0, flags);
        else qTile(ap, wp, corr, scl, bias, y, ldyB, M, N, K, t << 2, p, 0, 0, flags);
    return;
  }
  // Panel blocks of at most kc * 8 * pbMax weight bytes (INT8_W_BLOCK, so they stay in L2 while every row
  // block of the thread runs over them). One block (small N): row blocks outermost, so a row block's
  // partial sums stay in cache over its K blocks; several: K blocks outside row blocks, so each weight
  // block is read from memory once per thread instead of once per row block.
  const pbMax = pb > 0 ? pb : max(1, INT8_W_BLOCK / (kc << 3));
  if (p1 - p0 <= pbMax) {
    for (let mb = t0; mb < t1; mb += mcT)
      for (let k0 = 0; k0 < K; k0 += kc)
        qBlock(ap, x, pixB, H, W, Cp, M, HoWo, Wo, kw, stride, padT, padL, pad, wp, corr, scl, bias, y, ldyB, N, K, mb, min(mb + mcT, t1), k0, min(k0 + kc, K), p0, p1, i16, flags);
  } else {
    for (let pb = p0; pb < p1; pb += pbMax)
      for (let k0 = 0; k0 < K; k0 += kc)
        for (let mb = t0; mb < t1; mb += mcT)
          qBlock(ap, x, pixB, H, W, Cp, M, HoWo, Wo, kw, stride, padT, padL, pad, wp, corr, scl, bias, y, ldyB, N, K, mb, min(mb + mcT, t1), k0, min(k0 + kc, K), pb, min(pb + pbMax, p1), i16, flags);
  }
}

/** Packs the activations of row tiles [mb, me) x K range [k0, k1) into ap, then runs panels [pa, pe) over them. */
function qBlock(
  ap: usize, x: usize, pixB: usize, H: i32, W: i32, Cp: i32, M: i32, HoWo: i32, Wo: i32, kw: i32, stride: i32,
  padT: i32, padL: i32, pad: usize, wp: usize, corr: usize, scl: usize, bias: usize, y: usize, ldyB: usize,
  N: i32, K: i32, mb: i32, me: i32, k0: i32, k1: i32, pa: i32, pe: i32, i16: bool, flags: i32,
): void {
  const tileB = usize(k1 - k0) << (i16 ? 3 : 2); // the i16 path packs 2 bytes per activation
  for (let t = mb; t < me; t++)
    qPackTile(x, pixB, H, W, Cp, M, HoWo, Wo, kw, stride, padT, padL, pad, t << 2, k0, k1, ap + usize(t - mb) * tileB, i16);
  for (let p = pa; p < pe; p++)
    for (let t = mb; t < me; t++)
      if (i16) qTile16(ap + usize(t - mb) * tileB, wp, corr, scl, bias, y, ldyB, M, N, K, t << 2, p, k0, k1, flags);
      else qTile(ap + usize(t - mb) * tileB, wp, corr, scl, bias, y, ldyB, M, N, K, t << 2, p, k0, k1, flags);
}

/**
 * y[M, N] (row stride ldy floats) = dequant(A[M, K] (u8, row stride lda bytes) x W^T) + bias, W packed as
 * above, K a multiple of 4. kc: K block in bytes (0 = all); mcT: row block in 4-row tiles (0 = all);
 * pb: panels per panel block (0 = as many as fit INT8_W_BLOCK weight bytes); flags: 1 = i16 path (required for 8-bit activations unless a relaxed sequence is proven exact), 2 = store raw i32 accumulators, 8 = broadcast-load activations (relaxed paths; else shuffles), 4 = fused
 * relaxed dot-add instead of the split sequence. scratch: nt blocks of scrStride >= mcT * 4 * kc bytes
 * (with kc, mcT as used: kc clamped to K and rounded up to 4, mcT = 0 meaning all of a thread's tiles).
 */
export function gemm_int8_packed(
  tid: i32, nt: i32, a: usize, lda: i32, wp: usize, corr: usize, scale: usize, bias: usize,
  y: usize, ldy: i32, M: i32, N: i32, K: i32, kc: i32, mcT: i32, pb: i32, flags: i32, scratch: usize, scrStride: i32,
): void {
  qgemm(tid, nt, a, usize(lda), 1, 1, M, K, wp, corr, scale, bias, y, usize(ldy) << 2, 1, M, N, 1, 1, 1, 0, 0, 0, kc, mcT, pb, flags, scratch, usize(scrStride));
}

/**
 * NHWC INT8 convolution. x: quantised [Bn, H, W, Cp] u8 (Cp a multiple of 4), y: [Bn, Ho, Wo, *] f32 with
 * pixel stride ldy floats, weights packed over K = (ky, kx, ci < Cp), pad: kw*Cp bytes of the zero point.
 * padT/padL: top/left padding (bottom/right follow from Ho/Wo). kc, mcT, pb, flags as gemm_int8_packed.
 */
export function conv2d_int8(
  tid: i32, nt: i32, x: usize, Bn: i32, H: i32, W: i32, Cp: i32,
  wp: usize, corr: usize, scale: usize, bias: usize, y: usize, ldy: i32, Ho: i32, Wo: i32, Cout: i32,
  kh: i32, kw: i32, stride: i32, padT: i32, padL: i32, pad: usize, kc: i32, mcT: i32, pb: i32, flags: i32,
  scratch: usize, scrStride: i32,
): void {
  qgemm(tid, nt, x, usize(Cp), Bn, H, W, Cp, wp, corr, scale, bias, y, usize(ldy) << 2, Ho, Wo, Cout, kh, kw, stride, padT, padL, pad, kc, mcT, pb, flags, scratch, usize(scrStride));
}

/**
 * Loops measuring the INT8 multiply-add peak: 12 independent accumulators, iters iterations of 12 "dots"
 * of 16 multiply-adds (32 ops) each: iters * 384 ops per thread. variant & 3 = 0: the fused
 * i32x4.relaxed_dot_i8x16_i7x16_add_s; 1: the split sequence (i16x8.relaxed_dot_i8x16_i7x16_s +
 * i32x4.dot_i16x8_s(., ones) + add); 2: the baseline i16 path (2 x dot_i16x8_s + 2 adds). 0 and 1 need the
 * relaxed build (the baseline build runs 2 for them).
 * Throughput (variant & 4 == 0): each dot takes its own weight vector, loaded from L1 every iteration
 * (out + tid * PEAK_DOT_STRIDE + 16 + 16j, written here), and one activation vector; the only loop-carried
 * values are the 12 accumulators, so the dots are independent and the loop runs at the instruction's
 * throughput (the loads keep the compiler from hoisting or merging the split sequence's products, and
 * cost what a GEMM's operand loads cost). Chain (variant & 4): the old form, every dot's activation
 * operand derived from accumulator 0 (a = s0 & 0x3f), so each iteration waits for the previous one's
 * dot: it measures the instruction's latency, not its throughput (kept to show the difference).
 * Writes a checksum to out + tid * PEAK_DOT_STRIDE.
 */
export function peak_dot_i8(tid: i32, nt: i32, iters: i32, out: usize, variant: i32): void {
  const w = i8x16(1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16);
  const m7 = i8x16.splat(0x3f);
  const base = out + usize(tid) * usize(PEAK_DOT_STRIDE);
  const wb = base + 16;
  const kind = ASC_FEATURE_RELAXED_SIMD ? variant & 3 : 2;
  const chain = (variant & 4) != 0;
  for (let j = 0; j < 12; j++) {
    const wj = i8x16.add(w, i8x16.splat(i8(j)));
    // the i16 loop reads them in the k-pair layout (k0,k1 of the 4 lanes, then k2,k3), so all three loops
    // compute the same sums
    v128.store(wb + (usize(j) << 4), kind == 2 ? i8x16.shuffle(wj, wj, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15) : wj);
  }
  let s0 = i32x4.splat(0), s1 = i32x4.splat(1), s2 = i32x4.splat(2), s3 = i32x4.splat(3);
  let s4 = i32x4.splat(4), s5 = i32x4.splat(5), s6 = i32x4.splat(6), s7 = i32x4.splat(7);
  let s8 = i32x4.splat(8), s9 = i32x4.splat(9), s10 = i32x4.splat(10), s11 = i32x4.splat(11);
  // the activation operand: written to memory and loaded once, so it lives in a register (V8 13+ rebuilds
  // a v128.const at every use inside a loop, which would cost more than the dots)
  v128.store(base, i8x16(3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3));
  v128.store(base + 208, i16x8(3, 1, 5, 9, 5, 3, 9, 7)); // the same values as k-pairs for the i16 loop
  v128.store(base + 224, i16x8(4, 1, 2, 6, 5, 8, 9, 3));
  if (kind == 0 && !chain) {
    const a = v128.load(base);
    for (let i = 0; i < iters; i++) {
      s0 = qdot(v128.load(wb), a, s0); s1 = qdot(v128.load(wb, 16), a, s1); s2 = qdot(v128.load(wb, 32), a, s2);
      s3 = qdot(v128.load(wb, 48), a, s3); s4 = qdot(v128.load(wb, 64), a, s4); s5 = qdot(v128.load(wb, 80), a, s5);
      s6 = qdot(v128.load(wb, 96), a, s6); s7 = qdot(v128.load(wb, 112), a, s7); s8 = qdot(v128.load(wb, 128), a, s8);
      s9 = qdot(v128.load(wb, 144), a, s9); s10 = qdot(v128.load(wb, 160), a, s10); s11 = qdot(v128.load(wb, 176), a, s11);
    }
  } else if (kind == 1 && !chain) {
    const a = v128.load(base);
    const ones = onesI16x8();
    for (let i = 0; i < iters; i++) {
      s0 = qdotSplit(v128.load(wb), a, s0, ones); s1 = qdotSplit(v128.load(wb, 16), a, s1, ones);
      s2 = qdotSplit(v128.load(wb, 32), a, s2, ones); s3 = qdotSplit(v128.load(wb, 48), a, s3, ones);
      s4 = qdotSplit(v128.load(wb, 64), a, s4, ones); s5 = qdotSplit(v128.load(wb, 80), a, s5, ones);
      s6 = qdotSplit(v128.load(wb, 96), a, s6, ones); s7 = qdotSplit(v128.load(wb, 112), a, s7, ones);
      s8 = qdotSplit(v128.load(wb, 128), a, s8, ones); s9 = qdotSplit(v128.load(wb, 144), a, s9, ones);
      s10 = qdotSplit(v128.load(wb, 160), a, s10, ones); s11 = qdotSplit(v128.load(wb, 176), a, s11, ones);
    }
  } else if (!chain) {
    // a = (3,1,4,1 | 5,9,2,6 | 5,3,5,8 | 9,7,9,3) as the other loops, split into k-pairs
    const aP = v128.load(base + 208), aQ = v128.load(base + 224);
    for (let i = 0; i < iters; i++) {
      s0 = qdot16(v128.load8x8_s(wb), v128.load8x8_s(wb, 8), aP, aQ, s0);
      s1 = qdot16(v128.load8x8_s(wb, 16), v128.load8x8_s(wb, 24), aP, aQ, s1);
      s2 = qdot16(v128.load8x8_s(wb, 32), v128.load8x8_s(wb, 40), aP, aQ, s2);
      s3 = qdot16(v128.load8x8_s(wb, 48), v128.load8x8_s(wb, 56), aP, aQ, s3);
      s4 = qdot16(v128.load8x8_s(wb, 64), v128.load8x8_s(wb, 72), aP, aQ, s4);
      s5 = qdot16(v128.load8x8_s(wb, 80), v128.load8x8_s(wb, 88), aP, aQ, s5);
      s6 = qdot16(v128.load8x8_s(wb, 96), v128.load8x8_s(wb, 104), aP, aQ, s6);
      s7 = qdot16(v128.load8x8_s(wb, 112), v128.load8x8_s(wb, 120), aP, aQ, s7);
      s8 = qdot16(v128.load8x8_s(wb, 128), v128.load8x8_s(wb, 136), aP, aQ, s8);
      s9 = qdot16(v128.load8x8_s(wb, 144), v128.load8x8_s(wb, 152), aP, aQ, s9);
      s10 = qdot16(v128.load8x8_s(wb, 160), v128.load8x8_s(wb, 168), aP, aQ, s10);
      s11 = qdot16(v128.load8x8_s(wb, 176), v128.load8x8_s(wb, 184), aP, aQ, s11);
    }
  } else if (kind == 0) {
    for (let i = 0; i < iters; i++) {
      const a = v128.and(s0, m7);
      s0 = qdot(w, a, s0); s1 = qdot(w, a, s1); s2 = qdot(w, a, s2); s3 = qdot(w, a, s3);
      s4 = qdot(w, a, s4); s5 = qdot(w, a, s5); s6 = qdot(w, a, s6); s7 = qdot(w, a, s7);
      s8 = qdot(w, a, s8); s9 = qdot(w, a, s9); s10 = qdot(w, a, s10); s11 = qdot(w, a, s11);
    }
  } else if (kind == 1) {
    const ones = onesI16x8();
    for (let i = 0; i < iters; i++) {
      const a = v128.and(s0, m7);
      s0 = qdotSplit(w, a, s0, ones); s1 = qdotSplit(w, a, s1, ones); s2 = qdotSplit(w, a, s2, ones); s3 = qdotSplit(w, a, s3, ones);
      s4 = qdotSplit(w, a, s4, ones); s5 = qdotSplit(w, a, s5, ones); s6 = qdotSplit(w, a, s6, ones); s7 = qdotSplit(w, a, s7, ones);
      s8 = qdotSplit(w, a, s8, ones); s9 = qdotSplit(w, a, s9, ones); s10 = qdotSplit(w, a, s10, ones); s11 = qdotSplit(w, a, s11, ones);
    }
  } else {
    const wP = i16x8.extend_low_i8x16_s(w), wQ = i16x8.extend_high_i8x16_s(w);
    for (let i = 0; i < iters; i++) {
      const aP = v128.and(s0, m7), aQ = v128.and(s1, m7);
      s0 = qdot16(wP, wQ, aP, aQ, s0); s1 = qdot16(wP, wQ, aP, aQ, s1); s2 = qdot16(wP, wQ, aP, aQ, s2);
      s3 = qdot16(wP, wQ, aP, aQ, s3); s4 = qdot16(wP, wQ, aP, aQ, s4); s5 = qdot16(wP, wQ, aP, aQ, s5);
      s6 = qdot16(wP, wQ, aP, aQ, s6); s7 = qdot16(wP, wQ, aP, aQ, s7); s8 = qdot16(wP, wQ, aP, aQ, s8);
      s9 = qdot16(wP, wQ, aP, aQ, s9); s10 = qdot16(wP, wQ, aP, aQ, s10); s11 = qdot16(wP, wQ, aP, aQ, s11);
    }
  }
  let t = i32x4.add(i32x4.add(i32x4.add(s0, s1), i32x4.add(s2, s3)), i32x4.add(i32x4.add(s4, s5), i32x4.add(s6, s7)));
  t = i32x4.add(t, i32x4.add(i32x4.add(s8, s9), i32x4.add(s10, s11)));
  v128.store(base, t);
}
