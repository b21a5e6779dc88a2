// Backward kernels of the dense layers: linear y = x W^T + b and NHWC conv2d y = conv(x, W) + b
// (assembly/gemm.ts), with W in torch layout ([N, K] for linear, [Cout, Cin, kh, kw] for conv).
//
// dX reuses the forward kernels: dX = dY W is gemm_f32_packed with W packed by pack_weight_dx_panels_f32
// (panels of 16 input channels over the reduction index (tap, co)); for conv it is the transposed
// convolution, which for stride 1 is conv2d_f32 over dY with the kernel flipped and the channels swapped,
// and for stride s splits into s*s stride-1 convolutions (one per output phase (iy mod s, ix mod s), each
// with the taps of that phase) whose outputs scatter_pixels_f32 interleaves into dX.
//
// dW is its own kernel (conv2d_backward_weight_f32; linear is its 1x1 case): dW[co][k] = sum over output
// pixels m of dY[m][co] * X(m, k), k = (ky, kx, ci). Same micro-kernel as the forward (2 x 16 register
// tile, 8 f32x4 accumulators), with rows = output channels, columns = 16 consecutive k, and the reduction
// running over m. Per m-block of mc pixels each thread packs (a) its output channels of dY, two per tile,
// interleaved ([tile][m][2]), and (b) one panel at a time of the im2col rows (16 k per pixel, gathered
// straight from the NHWC input, zero for taps in the padding), which all its channel tiles then reuse
// from L1. Columns run in (ky, kx, ci) order so a panel is a few contiguous channel runs; a tile maps its
// 16 columns to torch's (ci, ky, kx) order only when it first loads / finally stores dW: between m-blocks
// its running sums stay contiguous in the thread's scratch. Threads split the k panels or the channel
// tiles, whichever leaves the busiest thread less work including the packing it has to repeat.
//
// Determinism: every dW element is produced by exactly one thread (static split of channel tiles or k
// panels), as init + sum over m = 0..M-1 in increasing order, one multiply-add per m (init = 0, or the
// dW value already there when accumulating); m-blocks only cut that sum where the running value is
// stored and reloaded unchanged. So dW is bit-identical for any thread count and any mc. (madd is fused
// in the relaxed build and mul + add in the baseline build, as in the forward kernels.)
import { madd, splitStart, loadPart, storePart, vecSplitStart, vecSplitEnd } from "./math";

// @ts-nocheck (AssemblyScript)

/** Copies n floats (n >= 0). */
@inline function copyF32(dst: usize, src: usize, n: i32): void {
  for (; n >= 4; n -= 4) {
    v128.store(dst, v128.load(src));
    dst += 16;
    src += 16;
  }
  for (; n > 0; n--) {
    store<f32>(dst, load<f32>(src));
    dst += 4;
    src += 4;
  }
}

@inline function zeroF32(dst: usize, n: i32): void {
  const z = f32x4.splat(0);
  for (; n >= 4; n -= 4) {
    v128.store(dst, z);
    dst += 16;
  }
  for (; n > 0; n--) {
    store<f32>(dst, 0);
    dst += 4;
  }
}

/** Lanes 4q..4q+3 of a dW row at row + off[j] floats (off: 16 i32), lanes past n zero. */
@inline function gatherLanes(row: usize, off: usize, n: i32, q: i32): v128 {
  let v = f32x4.splat(0);
  const j0 = q << 2;
  const o = off + (usize(j0) << 2);
  if (n > j0) v = f32x4.replace_lane(v, 0, load<f32>(row + (usize(load<i32>(o)) << 2)));
  if (n > j0 + 1) v = f32x4.replace_lane(v, 1, load<f32>(row + (usize(load<i32>(o, 4)) << 2)));
  if (n > j0 + 2) v = f32x4.replace_lane(v, 2, load<f32>(row + (usize(load<i32>(o, 8)) << 2)));
  if (n > j0 + 3) v = f32x4.replace_lane(v, 3, load<f32>(row + (usize(load<i32>(o, 12)) << 2)));
  return v;
}

@inline function scatterLanes(row: usize, off: usize, n: i32, q: i32, v: v128): void {
  const j0 = q << 2;
  const o = off + (usize(j0) << 2);
  if (n > j0) store<f32>(row + (usize(load<i32>(o)) << 2), f32x4.extract_lane(v, 0));
  if (n > j0 + 1) store<f32>(row + (usize(load<i32>(o, 4)) << 2), f32x4.extract_lane(v, 1));
  if (n > j0 + 2) store<f32>(row + (usize(load<i32>(o, 8)) << 2), f32x4.extract_lane(v, 2));
  if (n > j0 + 3) store<f32>(row + (usize(load<i32>(o, 12)) << 2), f32x4.extract_lane(v, 3));
}

/** Rough instruction costs per pixel of packing one dY channel tile / one im2col panel (split choice only). */
const DW_PACK_A: i64 = 4;
const DW_PACK_B: i64 = 16;

/** Where a dW tile starts from / goes to: nothing (start from 0), contiguous 16-float rows, or lanes at row + off[j] floats. */
const TILE_ZERO: i32 = 0;
const TILE_CONTIG: i32 = 1;
const TILE_LANES: i32 = 2;

/**
 * One 2 x 16 tile of dW over len pixels: a: packed dY ([m][2] floats), b: packed im2col panel ([m][16]
 * floats). The two rows start from l0 / l1 (ldMode) and end at s0 / s1 (stMode): TILE_CONTIG = 16
 * contiguous floats at the pointer (lanes past ncols untouched), TILE_LANES = lane j at ptr + off[j]
 * floats (the torch-layout columns of a 3x3 kernel), TILE_ZERO (load only) = start from 0.
 */
function dwTile(a: usize, b: usize, len: i32, l0: usize, l1: usize, ldMode: i32, s0: usize, s1: usize, stMode: i32, off: usize, ncols: i32): void {
  const z = f32x4.splat(0);
  let c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  if (ldMode == TILE_CONTIG) {
    c00 = loadPart(l0, ncols); c01 = loadPart(l0 + 16, ncols - 4); c02 = loadPart(l0 + 32, ncols - 8); c03 = loadPart(l0 + 48, ncols - 12);
    c10 = loadPart(l1, ncols); c11 = loadPart(l1 + 16, ncols - 4); c12 = loadPart(l1 + 32, ncols - 8); c13 = loadPart(l1 + 48, ncols - 12);
  } else if (ldMode == TILE_LANES) {
    c00 = gatherLanes(l0, off, ncols, 0); c01 = gatherLanes(l0, off, ncols, 1); c02 = gatherLanes(l0, off, ncols, 2); c03 = gatherLanes(l0, off, ncols, 3);
    c10 = gatherLanes(l1, off, ncols, 0); c11 = gatherLanes(l1, off, ncols, 1); c12 = gatherLanes(l1, off, ncols, 2); c13 = gatherLanes(l1, off, ncols, 3);
  }
  let b0: v128, b1: v128, b2: v128, b3: v128, av: v128;
  for (let i = 0; i < len; i++) {
    b0 = v128.load(b); b1 = v128.load(b, 16); b2 = v128.load(b, 32); b3 = v128.load(b, 48);
    av = v128.load32_splat(a); c00 = madd(av, b0, c00); c01 = madd(av, b1, c01); c02 = madd(av, b2, c02); c03 = madd(av, b3, c03);
    av = v128.load32_splat(a, 4); c10 = madd(av, b0, c10); c11 = madd(av, b1, c11); c12 = madd(av, b2, c12); c13 = madd(av, b3, c13);
    a += 8;
    b += 64;
  }
  if (stMode == TILE_CONTIG) {
    storePart(s0, c00, ncols); storePart(s0 + 16, c01, ncols - 4); storePart(s0 + 32, c02, ncols - 8); storePart(s0 + 48, c03, ncols - 12);
    storePart(s1, c10, ncols); storePart(s1 + 16, c11, ncols - 4); storePart(s1 + 32, c12, ncols - 8); storePart(s1 + 48, c13, ncols - 12);
  } else {
    scatterLanes(s0, off, ncols, 0, c00); scatterLanes(s0, off, ncols, 1, c01); scatterLanes(s0, off, ncols, 2, c02); scatterLanes(s0, off, ncols, 3, c03);
    scatterLanes(s1, off, ncols, 0, c10); scatterLanes(s1, off, ncols, 1, c11); scatterLanes(s1, off, ncols, 2, c12); scatterLanes(s1, off, ncols, 3, c13);
  }
}

/**
 * dW [Cout, Cin, kh, kw] (torch layout) = (accumulate ? dW : 0) + sum over the output pixels m of
 * dY[m][co] * x(m; ky, kx, ci), for the NHWC conv y = conv(x, W) (x [Bn, H, W, Cin], dY [Bn, Ho, Wo, Cout],
 * stride, top/left padding padT/padL; bottom/right padding is implied by Ho/Wo). The linear layer's dW is
 * the 1x1 case: x = [1, 1, M, K] and dY = [1, 1, M, N].
 * mc: pixels per m-block (> 0; results do not depend on it). scratch: nt blocks of scrStride bytes
 * (16-byte aligned), scrStride >= 320 + mc * (80 + 8 * ceil(Cout / 2)) + cs, where cs = 0 if kh*kw = 1 or
 * M <= mc, else 128 * max(ceil(np / nt) * ceil(Cout / 2), np * ceil(ceil(Cout / 2) / nt)) with
 * np = ceil(Cin*kh*kw / 16): with several m-blocks and a kernel whose torch-layout columns are not
 * contiguous, the running sums of the thread's tiles live there (contiguous) between m-blocks, so only the
 * first and last block gather / scatter the torch layout.
 */
export function conv2d_backward_weight_f32(
  tid: i32, nt: i32, x: usize, Bn: i32, H: i32, W: i32, Cin: i32,
  dy: usize, Ho: i32, Wo: i32, Cout: i32, kh: i32, kw: i32, stride: i32, padT: i32, padL: i32,
  dw: usize, accumulate: i32, mc: i32, scratch: usize, scrStride: i32,
): void {
  const HoWo = Ho * Wo;
  const M = Bn * HoWo;
  const taps = kh * kw;
  const K = taps * Cin;
  if (Cout <= 0 || K <= 0) return;
  const ct = (Cout + 1) >> 1;
  const np = (K + 15) >> 4;
  // Split k panels or channel tiles, whichever costs the busiest thread less per pixel: with a panel split
  // every thread packs dY for all channel tiles (~DW_PACK_A per tile), with a tile split every thread packs
  // the im2col rows of all panels (~DW_PACK_B per panel); the tiles themselves cost 8 multiply-adds each.
  const perP = i64((np + nt - 1) / nt), perT = i64((ct + nt - 1) / nt);
  const costP = perP * i64(ct) * 8 + i64(ct) * DW_PACK_A + perP * DW_PACK_B;
  const costT = perT * i64(np) * 8 + perT * DW_PACK_A + i64(np) * DW_PACK_B;
  let t0 = 0, t1 = ct, p0 = 0, p1 = np;
  if (costP <= costT) {
    p0 = splitStart(np, tid, nt);
    p1 = splitStart(np, tid + 1, nt);
  } else {
    t0 = splitStart(ct, tid, nt);
    t1 = splitStart(ct, tid + 1, nt);
  }
  if (p0 >= p1 || t0 >= t1) return;
  if (mc <= 0) mc = 1;
  const base = scratch + usize(tid) * usize(scrStride);
  const offTab = base; // 16 i32: dW float offset (ci * taps + t) of each panel column
  const runTab = base + 64; // up to 16 runs x (ky, kx, ci, len)
  const mTab = base + 320; // mc x (n*H*W, iy0, ix0, -)
  const bp = mTab + (usize(mc) << 4); // mc x 16 floats: the im2col panel
  const ap = bp + (usize(mc) << 6); // (t1 - t0) x mc x 2 floats: dY of the thread's channel tiles
  const cs = ap + usize(t1 - t0) * (usize(mc) << 3); // (p1 - p0) x (t1 - t0) x 2 x 16 floats: running sums
  const contig = taps == 1;
  const useCs = !contig && M > mc;
  const nTiles = usize(t1 - t0);
  const rowB = usize(K) << 2;
  const dyRowB = usize(Cout) << 2;
  const HW = H * W;
  if (M <= 0) {
    // empty reduction: dW = 0 (or unchanged)
    if (accumulate == 0)
      for (let p = p0; p < p1; p++) {
        const ncols = min(16, K - (p << 4));
        for (let j = 0; j < ncols; j++) {
          const k = (p << 4) + j, t = k / Cin;
          store<i32>(offTab + (usize(j) << 2), (k - t * Cin) * taps + t);
        }
        for (let t = t0; t < t1; t++) {
          const r0 = dw + usize(t << 1) * rowB, r1 = dw + usize(min((t << 1) + 1, Cout - 1)) * rowB;
          const cb = usize(p) << 6;
          if (contig) dwTile(ap, bp, 0, 0, 0, TILE_ZERO, r0 + cb, r1 + cb, TILE_CONTIG, offTab, ncols);
          else dwTile(ap, bp, 0, 0, 0, TILE_ZERO, r0, r1, TILE_LANES, offTab, ncols);
        }
      }
    return;
  }
  for (let m0 = 0; m0 < M; m0 += mc) {
    const len = min(mc, M - m0);
    const first = m0 == 0, last = m0 + len >= M;
    // pixel table: image offset and the window's top-left input coordinates of each pixel of the block
    let n = m0 / HoWo;
    const q = m0 - n * HoWo;
    let oy = q / Wo;
    let ox = q - oy * Wo;
    for (let i = 0; i < len; i++) {
      const e = mTab + (usize(i) << 4);
      store<i32>(e, n * HW);
      store<i32>(e, oy * stride - padT, 4);
      store<i32>(e, ox * stride - padL, 8);
      if (++ox == Wo) {
        ox = 0;
        if (++oy == Ho) {
          oy = 0;
          n++;
        }
      }
    }
    // dY of the block, channel pairs interleaved per tile (the last tile of an odd Cout repeats Cout-1)
    for (let i = 0; i < len; i++) {
      const src = dy + usize(m0 + i) * dyRowB;
      let d = ap + (usize(i) << 3);
      const tStep = usize(mc) << 3;
      for (let t = t0; t < t1; t++) {
        const c0 = t << 1;
        if (c0 + 1 < Cout) store<i64>(d, load<i64>(src + (usize(c0) << 2)));
        else {
          const v = load<f32>(src + (usize(c0) << 2));
          store<f32>(d, v);
          store<f32>(d, v, 4);
        }
        d += tStep;
      }
    }
    for (let p = p0; p < p1; p++) {
      // the panel's 16 columns as runs of consecutive input channels of one tap
      const k0 = p << 4;
      const kEnd = min(k0 + 16, K);
      const ncols = kEnd - k0;
      let nr = 0, k = k0, j = 0;
      while (k < kEnd) {
        const t = k / Cin;
        const ci = k - t * Cin;
        const l = min(kEnd - k, Cin - ci);
        const ky = t / kw;
        const r = runTab + (usize(nr) << 4);
        store<i32>(r, ky);
        store<i32>(r, t - ky * kw, 4);
        store<i32>(r, ci, 8);
        store<i32>(r, l, 12);
        for (let c = 0; c < l; c++) store<i32>(offTab + (usize(j + c) << 2), (ci + c) * taps + t);
        nr++;
        k += l;
        j += l;
      }
      // im2col panel of the block
      for (let i = 0; i < len; i++) {
        const e = mTab + (usize(i) << 4);
        const pix = load<i32>(e), iy0 = load<i32>(e, 4), ix0 = load<i32>(e, 8);
        let d = bp + (usize(i) << 6);
        for (let r = 0; r < nr; r++) {
          const rr = runTab + (usize(r) << 4);
          const iy = iy0 + load<i32>(rr), ix = ix0 + load<i32>(rr, 4);
          const l = load<i32>(rr, 12);
          if (<u32>iy < <u32>H && <u32>ix < <u32>W) copyF32(d, x + ((usize(pix + iy * W + ix) * usize(Cin) + usize(load<i32>(rr, 8))) << 2), l);
          else zeroF32(d, l);
          d += usize(l) << 2;
        }
        if (ncols < 16) zeroF32(d, 16 - ncols);
      }
      for (let t = t0; t < t1; t++) {
        const a = ap + usize(t - t0) * (usize(mc) << 3);
        const r0 = dw + usize(t << 1) * rowB, r1 = dw + usize(min((t << 1) + 1, Cout - 1)) * rowB;
        if (contig) {
          const cb = usize(k0) << 2;
          dwTile(a, bp, len, r0 + cb, r1 + cb, first && accumulate == 0 ? TILE_ZERO : TILE_CONTIG, r0 + cb, r1 + cb, TILE_CONTIG, offTab, ncols);
        } else if (!useCs) {
          dwTile(a, bp, len, r0, r1, accumulate == 0 ? TILE_ZERO : TILE_LANES, r0, r1, TILE_LANES, offTab, ncols);
        } else {
          const c = cs + ((usize(p - p0) * nTiles + usize(t - t0)) << 7);
          const ld = first ? (accumulate == 0 ? TILE_ZERO : TILE_LANES) : TILE_CONTIG;
          if (last) dwTile(a, bp, len, first ? r0 : c, first ? r1 : c + 64, ld, r0, r1, TILE_LANES, offTab, ncols);
          else dwTile(a, bp, len, first ? r0 : c, first ? r1 : c + 64, ld, c, c + 64, TILE_CONTIG, offTab, ncols);
        }
      }
    }
  }
}

/**
 * db[j] = (accumulate ? db[j] : 0) + sum_m dY[m][j] (m increasing; dY [M, N] row-major). Threads take
 * contiguous column ranges (whole 4-vectors), so each column is summed by one thread in one order.
 */
export function bias_backward_f32(tid: i32, nt: i32, dy: usize, M: i32, N: i32, db: usize, accumulate: i32): void {
  let j = vecSplitStart(N, tid, nt);
  const end = vecSplitEnd(N, tid, nt);
  const rowB = usize(N) << 2;
  const z = f32x4.splat(0);
  for (; j + 16 <= end; j += 16) {
    const o = db + (usize(j) << 2);
    let s0 = z, s1 = z, s2 = z, s3 = z;
    if (accumulate) {
      s0 = v128.load(o); s1 = v128.load(o, 16); s2 = v128.load(o, 32); s3 = v128.load(o, 48);
    }
    let p = dy + (usize(j) << 2);
    for (let m = 0; m < M; m++) {
      s0 = f32x4.add(s0, v128.load(p)); s1 = f32x4.add(s1, v128.load(p, 16));
      s2 = f32x4.add(s2, v128.load(p, 32)); s3 = f32x4.add(s3, v128.load(p, 48));
      p += rowB;
    }
    v128.store(o, s0); v128.store(o, s1, 16); v128.store(o, s2, 32); v128.store(o, s3, 48);
  }
  for (; j + 4 <= end; j += 4) {
    const o = db + (usize(j) << 2);
    let s = accumulate ? v128.load(o) : z;
    let p = dy + (usize(j) << 2);
    for (let m = 0; m < M; m++) {
      s = f32x4.add(s, v128.load(p));
      p += rowB;
    }
    v128.store(o, s);
  }
  for (; j < end; j++) {
    const o = db + (usize(j) << 2);
    let s: f32 = accumulate ? load<f32>(o) : 0;
    let p = dy + (usize(j) << 2);
    for (let m = 0; m < M; m++) {
      s += load<f32>(p);
      p += rowB;
    }
    store<f32>(o, s);
  }
}

/**
 * Packs a torch-layout weight w [N, Cin, kh, kw] (linear: [N, K], kh = kw = 1) into the forward kernels'
 * panels (as prepareConv2d / prepareLinear do, for weights that change every training step):
 * dst[(p*K + (ky*kw + kx)*Cin + ci)*16 + j] = w[p*16 + j][ci][ky][kx], K = kh*kw*Cin, columns past N zero.
 * Threads split the packed rows.
 */
export function pack_weight_panels_f32(tid: i32, nt: i32, w: usize, N: i32, Cin: i32, kh: i32, kw: i32, dst: usize): void {
  const taps = kh * kw;
  const K = taps * Cin;
  const np = (N + 15) >> 4;
  const rows = np * K;
  const r0 = splitStart(rows, tid, nt), r1 = splitStart(rows, tid + 1, nt);
  const chB = usize(K) << 2;
  for (let r = r0; r < r1; r++) {
    const p = r / K;
    const k = r - p * K;
    const t = k / Cin;
    const ci = k - t * Cin;
    const ncols = min(16, N - (p << 4));
    let s = w + ((usize(p << 4) * usize(K) + usize(ci * taps + t)) << 2);
    const d = dst + (usize(r) << 6);
    let j = 0;
    for (; j < ncols; j++) {
      store<f32>(d + (usize(j) << 2), load<f32>(s));
      s += chB;
    }
    for (; j < 16; j++) store<f32>(d + (usize(j) << 2), 0);
  }
}

/**
 * Packs a torch-layout weight w [Cout, Cin, kh, kw] as the B operand of dX = dY W (panels of 16 input
 * channels over the rows r = (jy*nkx + jx)*Cout + co, R = nky*nkx*Cout rows):
 * dst[(p*R + r)*16 + j] = w[co][p*16 + j][kyTop - step*jy][kxTop - step*jx], columns past Cin zero.
 * Stride 1 (step 1, kyTop = kh-1, nky = kh, same for x): the flipped kernel of the transposed convolution;
 * stride s: the taps of one output phase (see the header). Linear: kh = kw = 1, one tap.
 * Threads split the (panel, co) pairs; each reads its 16 input channels' taps (contiguous in w) once and
 * writes the nky*nkx rows they go to.
 */
export function pack_weight_dx_panels_f32(
  tid: i32, nt: i32, w: usize, Cout: i32, Cin: i32, kh: i32, kw: i32,
  kyTop: i32, nky: i32, kxTop: i32, nkx: i32, step: i32, dst: usize,
): void {
  const taps = kh * kw;
  const R = nky * nkx * Cout;
  const np = (Cin + 15) >> 4;
  const pairs = np * Cout;
  const q0 = splitStart(pairs, tid, nt), q1 = splitStart(pairs, tid + 1, nt);
  const rowStep = usize(Cout) << 6; // next tap's row, same co
  for (let q = q0; q < q1; q++) {
    const p = q / Cout;
    const co = q - p * Cout;
    const ncols = min(16, Cin - (p << 4));
    const d0 = dst + ((usize(p) * usize(R) + usize(co)) << 6);
    const s0 = w + ((usize(co * Cin + (p << 4)) * usize(taps)) << 2);
    if (taps == 1) {
      v128.store(d0, loadPart(s0, ncols));
      v128.store(d0, loadPart(s0 + 16, ncols - 4), 16);
      v128.store(d0, loadPart(s0 + 32, ncols - 8), 32);
      v128.store(d0, loadPart(s0 + 48, ncols - 12), 48);
      continue;
    }
    let d = d0;
    for (let jy = 0; jy < nky; jy++)
      for (let jx = 0; jx < nkx; jx++) {
        const t = (kyTop - step * jy) * kw + (kxTop - step * jx);
        let sp = s0 + (usize(t) << 2);
        let j = 0;
        for (; j < ncols; j++) {
          store<f32>(d + (usize(j) << 2), load<f32>(sp));
          sp += usize(taps) << 2;
        }
        for (; j < 16; j++) store<f32>(d + (usize(j) << 2), 0);
        d += rowStep;
      }
  }
}

/**
 * dst[n][s*u + r][s*v + c][:] = (accumulate ? dst : 0) + src[n][u][v][:] for src [Bn, Hs, Ws, C] and dst
 * [Bn, H, W, C] (one output phase of a stride-s transposed convolution). Threads split the src rows (n, u).
 */
export function scatter_pixels_f32(
  tid: i32, nt: i32, src: usize, Bn: i32, Hs: i32, Ws: i32, C: i32, dst: usize, H: i32, W: i32, s: i32, r: i32, c: i32, accumulate: i32,
): void {
  const rows = Bn * Hs;
  const a = splitStart(rows, tid, nt), e = splitStart(rows, tid + 1, nt);
  const pixB = usize(C) << 2;
  for (let row = a; row < e; row++) {
    const n = row / Hs;
    const u = row - n * Hs;
    let sp = src + usize(row) * usize(Ws) * pixB;
    let dp = dst + (usize(n * H + s * u + r) * usize(W) + usize(c)) * pixB;
    const dStep = usize(s) * pixB;
    for (let v = 0; v < Ws; v++) {
      if (accumulate) {
        let i = 0;
        for (; i + 4 <= C; i += 4) {
          const o = usize(i) << 2;
          v128.store(dp + o, f32x4.add(v128.load(dp + o), v128.load(sp + o)));
        }
        for (; i < C; i++) {
          const o = usize(i) << 2;
          store<f32>(dp + o, load<f32>(dp + o) + load<f32>(sp + o));
        }
      } else copyF32(dp, sp, C);
      sp += pixB;
      dp += dStep;
    }
  }
}
