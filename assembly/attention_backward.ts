// Backward of the fused attention in attention.ts (FlashAttention-2 style) and of the last-dim softmax.
//
// Forward (per batch b, head h): S = scale Q K^T, P = softmax_rows(S) (causal: P[i, j] = 0 for j > i),
// O = P V, and the forward saved lse[b, h, i] = logsumexp_j S[i, j]. Given dO:
//   Dv[i] = rowsum(dO o O)                                    (attention_backward_prep_f32)
//   P = exp(S - lse), dP = dO V^T, dS = P o (dP - Dv[i])      (recomputed tile by tile, never stored whole)
//   dV = P^T dO, dK = scale dS^T Q, dQ = scale dS K           (attention_backward_f32)
// dK/dV sum over queries and dQ over keys, so a work unit that owned only some keys and some queries would
// need a cross-unit reduction. Here a work unit is one whole (batch, head): it walks the key blocks in order
// and, inside each, the query tiles in order, accumulating dK/dV of the block and dQ of every query (in a
// per-thread [Lq, Dp] accumulator), so every sum runs in one thread in a fixed order whatever the thread
// count, and P is computed once (10 flops per score and head dim, like FlashAttention-2, instead of the 14
// of two passes that each recompute it). Units are split statically across threads (B*H units: 16 for SD at
// batch 2, 8*B for fashion-sd-tiny).
//
// Layouts as the forward: q/o/dO/dQ [B, Lq, *] and k/v/dK/dV [B, Lk, *] with head h's D values at columns
// h*D .. h*D+D-1 of each row (row strides ld*), lse and Dv [B, H, Lq]. Scores use exp2: queries are
// pre-multiplied by scale*log2(e) and lse by log2(e).
//
// Per key block (ATT_BWD_KB keys): K and V are packed interleaved per 4 keys (KI[(j >> 2) * Dp * 4 + d * 4 +
// (j & 3)]: a 4-key row block broadcasts its 4 values of one d from one pointer), K also row-major when D is
// not a multiple of 8 (else read in place), accumulators dK, dV [KB, Dp]. Per query tile (BQA queries): Q and
// dO are packed transposed (QT, OT [Dp, BQA]) and, when D is not a multiple of 8, row-major (else read in
// place). Then for every 4 keys: S^T = K QT and dP^T = V OT (4 keys x 8 queries register blocks), P^T into a
// 4 x BQA buffer and dS^T into rows of a KB x BQA buffer, dV += P^T dO, dK += dS^T Q (4 keys x 8 dims); then
// for the tile, dQ += dS K over the block's keys (4 queries x 8 dims).
//
// Per-thread scratch (floats, Dp = D rounded up to 8): attBwdScratchFloats(D, Lq) in
// src/nn/backward/attention.ts.
import { splitStart, splitEnd, madd, exp2neg4, hsum } from "./math";
import { ATT_BWD_KB, ATT_BWD_SPS } from "./abi";

const SPS: i32 = ATT_BWD_SPS;

/** Queries per tile (packed Q^T, dO^T, Q, dO of ~10 KB each); src/nn/tiling.ts computes the same (test/abi.test.ts). */
@inline function attBwdQTile(D: i32): i32 {
  return D <= 24 ? 128 : D <= 48 ? 64 : D <= 96 ? 32 : 16;
}

/** Scratch floats per thread before the dQ accumulator. */
@inline function fixedFloats(D: i32): i32 {
  const Dp = (D + 7) & ~7;
  const BQA = attBwdQTile(D);
  return 5 * ATT_BWD_KB * Dp + 4 * BQA * Dp + 4 * SPS + ATT_BWD_KB * SPS + 2 * BQA + 16;
}

/** attBwdQTile and fixedFloats, exported so test/abi.test.ts can compare them with src/nn/tiling.ts. */
export function abi_att_bwd_q_tile(D: i32): i32 {
  return attBwdQTile(D);
}
export function abi_att_bwd_fixed_floats(D: i32): i32 {
  return fixedFloats(D);
}

const LOG2E: f32 = 1.44269504088896341;

// Constants loaded by broadcast from a table (V8 rematerialises v128 constants inside loops).
const ATAB: usize = memory.data<i32>([
  0, 1, 2, 3, // 0: lane indices
  4, 4, 4, 4, // 16
  0xff800000, 0xff800000, 0xff800000, 0xff800000, // 32: -inf
]);

@inline function iota4(): v128 {
  return v128.load(ATAB);
}
@inline function fours(): v128 {
  return v128.load(ATAB, 16);
}
@inline function negInf4(): v128 {
  return v128.load(ATAB, 32);
}

/** Dv[b, h, i] = sum_d dO[b, i, h*D + d] O[b, i, h*D + d]. Threads split the (b, i) rows. */
export function attention_backward_prep_f32(
  tid: i32, nt: i32, o: usize, dout: usize, dvec: usize, B: i32, H: i32, Lq: i32, D: i32, ldo: i32, lddo: i32,
): void {
  const rows = B * Lq;
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitEnd(rows, tid, nt);
  for (let r = r0; r < r1; r++) {
    const b = r / Lq;
    const i = r - b * Lq;
    const po = o + ((usize(r) * usize(ldo)) << 2);
    const pd = dout + ((usize(r) * usize(lddo)) << 2);
    for (let h = 0; h < H; h++) {
      const ho = (usize(h) * usize(D)) << 2;
      let a0 = f32x4.splat(0), a1 = a0;
      let d = 0;
      for (; d + 8 <= D; d += 8) {
        const k = ho + (usize(d) << 2);
        a0 = madd(v128.load(po + k), v128.load(pd + k), a0);
        a1 = madd(v128.load(po + k, 16), v128.load(pd + k, 16), a1);
      }
      for (; d + 4 <= D; d += 4) {
        const k = ho + (usize(d) << 2);
        a0 = madd(v128.load(po + k), v128.load(pd + k), a0);
      }
      let s = hsum(f32x4.add(a0, a1));
      for (; d < D; d++) {
        const k = ho + (usize(d) << 2);
        s += load<f32>(po + k) * load<f32>(pd + k);
      }
      store<f32>(dvec + ((usize(b * H + h) * usize(Lq) + usize(i)) << 2), s);
    }
  }
}

/**
 * Packs rows [0, n) of a head slice (rows `ld` floats apart) transposed: dst[d * stride + j] = src[j, d] * s
 * for d < D; columns j in [n, nPad) are zero. 4 rows x 4 dims at a time by register transposes.
 */
@inline function packTransposed(src: usize, ld: i32, n: i32, nPad: i32, D: i32, dst: usize, stride: i32, s: f32): void {
  const rowB = usize(ld) << 2;
  const dRow = usize(stride) << 2;
  const sv = f32x4.splat(s);
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const s0 = src + usize(j) * rowB;
    const s1 = s0 + rowB;
    const s2 = s1 + rowB;
    const s3 = s2 + rowB;
    const dj = dst + (usize(j) << 2);
    let d = 0;
    for (; d + 4 <= D; d += 4) {
      const o = usize(d) << 2;
      const r0 = v128.load(s0 + o), r1 = v128.load(s1 + o), r2 = v128.load(s2 + o), r3 = v128.load(s3 + o);
      const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5);
      const t1 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
      const t2 = i32x4.shuffle(r0, r1, 2, 6, 3, 7);
      const t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
      const kd = dj + usize(d) * dRow;
      v128.store(kd, f32x4.mul(i32x4.shuffle(t0, t1, 0, 1, 4, 5), sv));
      v128.store(kd + dRow, f32x4.mul(i32x4.shuffle(t0, t1, 2, 3, 6, 7), sv));
      v128.store(kd + 2 * dRow, f32x4.mul(i32x4.shuffle(t2, t3, 0, 1, 4, 5), sv));
      v128.store(kd + 3 * dRow, f32x4.mul(i32x4.shuffle(t2, t3, 2, 3, 6, 7), sv));
    }
    for (; d < D; d++) {
      const o = usize(d) << 2;
      const kd = dj + usize(d) * dRow;
      store<f32>(kd, load<f32>(s0 + o) * s);
      store<f32>(kd, load<f32>(s1 + o) * s, 4);
      store<f32>(kd, load<f32>(s2 + o) * s, 8);
      store<f32>(kd, load<f32>(s3 + o) * s, 12);
    }
  }
  for (; j < n; j++) {
    const sj = src + usize(j) * rowB;
    for (let d = 0; d < D; d++) store<f32>(dst + usize(d) * dRow + (usize(j) << 2), load<f32>(sj + (usize(d) << 2)) * s);
  }
  for (; j < nPad; j++) {
    for (let d = 0; d < D; d++) store<f32>(dst + usize(d) * dRow + (usize(j) << 2), 0);
  }
}

/**
 * Packs rows [0, nPad) interleaved per 4 rows: dst[(r >> 2) * Dp * 4 + d * 4 + (r & 3)] = src[r, d] * s for
 * r < n and d < D, zero for r >= n.
 */
@inline function packInterleaved(src: usize, ld: i32, n: i32, nPad: i32, D: i32, Dp: i32, dst: usize, s: f32): void {
  for (let r = 0; r < nPad; r++) {
    const dr = dst + ((usize(r >> 2) * usize(Dp) * 4 + usize(r & 3)) << 2);
    if (r < n) {
      const sr = src + ((usize(r) * usize(ld)) << 2);
      for (let d = 0; d < D; d++) store<f32>(dr + (usize(d) << 4), load<f32>(sr + (usize(d) << 2)) * s);
    } else {
      for (let d = 0; d < D; d++) store<f32>(dr + (usize(d) << 4), 0);
    }
  }
}

/** Packs rows [0, n) row-major with row stride Dp, columns [D, Dp) zero. */
@inline function packRows(src: usize, ld: i32, n: i32, D: i32, Dp: i32, dst: usize): void {
  for (let r = 0; r < n; r++) {
    const sr = src + ((usize(r) * usize(ld)) << 2);
    const dr = dst + ((usize(r) * usize(Dp)) << 2);
    let d = 0;
    for (; d + 4 <= D; d += 4) v128.store(dr + (usize(d) << 2), v128.load(sr + (usize(d) << 2)));
    for (; d < D; d++) store<f32>(dr + (usize(d) << 2), load<f32>(sr + (usize(d) << 2)));
    for (; d < Dp; d++) store<f32>(dr + (usize(d) << 2), 0);
  }
}

export function attention_backward_f32(
  tid: i32, nt: i32, q: usize, k: usize, v: usize, dout: usize, lse: usize, dvec: usize, dq: usize, dk: usize, dv: usize, scratch: usize,
  B: i32, H: i32, Lq: i32, Lk: i32, D: i32, ldq: i32, ldk: i32, ldv: i32, lddo: i32, lddq: i32, lddk: i32, lddv: i32, scale: f32, causal: i32,
): void {
  const Dp = (D + 7) & ~7;
  const BQA = attBwdQTile(D);
  const KB = ATT_BWD_KB;
  const Lq4 = (Lq + 3) & ~3;
  const base = scratch + ((usize(tid) * (usize(fixedFloats(D)) + usize(Lq4) * usize(Dp))) << 2);
  const blockB = (usize(KB) * usize(Dp)) << 2;
  const tileB = (usize(BQA) * usize(Dp)) << 2;
  const KI = base;
  const VI = KI + blockB;
  const KR = VI + blockB;
  const DK = KR + blockB;
  const DV = DK + blockB;
  const QT = DV + blockB;
  const OT = QT + tileB;
  const QR = OT + tileB;
  const OR = QR + tileB;
  const ST = OR + tileB;
  const DS = ST + ((4 * SPS) << 2);
  const L2 = DS + ((usize(KB) * SPS) << 2);
  const DD = L2 + (usize(BQA) << 2);
  const QACC = DD + (usize(BQA) << 2) + 64;
  const packRowMajor = (D & 7) != 0;
  const qscale = scale * LOG2E;
  const rowB = usize(Dp) << 2; // accumulator row stride
  const qtStep = usize(BQA) << 2; // QT / OT row stride
  const spsB = usize(SPS) << 2;

  const units = B * H;
  const u0 = splitStart(units, tid, nt);
  const u1 = splitEnd(units, tid, nt);
  for (let u = u0; u < u1; u++) {
    const b = u / H;
    const h = u - b * H;
    const hOff = usize(h) * usize(D);
    for (let i = 0; i < Lq4 * Dp; i += 4) v128.store(QACC + (usize(i) << 2), f32x4.splat(0));

    for (let kBeg = 0; kBeg < Lk; kBeg += KB) {
      const nk = min(KB, Lk - kBeg);
      const nkPad = (nk + 3) & ~3;
      const kRow0 = usize(b) * usize(Lk) + usize(kBeg);
      const kSrc = k + ((kRow0 * usize(ldk) + hOff) << 2);
      packInterleaved(kSrc, ldk, nk, nkPad, D, Dp, KI, 1);
      packInterleaved(v + ((kRow0 * usize(ldv) + hOff) << 2), ldv, nk, nkPad, D, Dp, VI, 1);
      let kr: usize, krStride: usize;
      if (packRowMajor) {
        packRows(kSrc, ldk, nk, D, Dp, KR);
        kr = KR;
        krStride = rowB;
      } else {
        kr = kSrc;
        krStride = usize(ldk) << 2;
      }
      for (let i = 0; i < nkPad * Dp; i += 4) {
        v128.store(DK + (usize(i) << 2), f32x4.splat(0));
        v128.store(DV + (usize(i) << 2), f32x4.splat(0));
      }

      // causal: query i sees key j iff j <= i, so queries before kBeg see none of this block
      const qStart = causal ? (kBeg / BQA) * BQA : 0;
      for (let qBeg = qStart; qBeg < Lq; qBeg += BQA) {
        const nq = min(BQA, Lq - qBeg);
        const nqc = (nq + 7) & ~7;
        const qRow0 = usize(b) * usize(Lq) + usize(qBeg);
        const qSrc = q + ((qRow0 * usize(ldq) + hOff) << 2);
        const oSrc = dout + ((qRow0 * usize(lddo) + hOff) << 2);
        packTransposed(qSrc, ldq, nq, nqc, D, QT, BQA, qscale);
        packTransposed(oSrc, lddo, nq, nqc, D, OT, BQA, 1);
        let qr: usize, or: usize, qrStride: usize, orStride: usize;
        if (packRowMajor) {
          packRows(qSrc, ldq, nq, D, Dp, QR);
          packRows(oSrc, lddo, nq, D, Dp, OR);
          qr = QR;
          or = OR;
          qrStride = rowB;
          orStride = rowB;
        } else {
          qr = qSrc;
          or = oSrc;
          qrStride = usize(ldq) << 2;
          orStride = usize(lddo) << 2;
        }
        const lrow = (usize(u) * usize(Lq) + usize(qBeg)) << 2;
        for (let i = 0; i < nq; i++) {
          store<f32>(L2 + (usize(i) << 2), load<f32>(lse + lrow + (usize(i) << 2)) * LOG2E);
          store<f32>(DD + (usize(i) << 2), load<f32>(dvec + lrow + (usize(i) << 2)));
        }
        for (let i = nq; i < nqc; i++) {
          store<f32>(L2 + (usize(i) << 2), f32.POSITIVE_INFINITY); // padding queries: P = 2^(s - inf) = 0
          store<f32>(DD + (usize(i) << 2), 0);
        }

        for (let j0 = 0; j0 < nkPad; j0 += 4) {
          const jg = kBeg + j0; // key index of the 4-key block's first key
          // causal: queries before jg see none of the 4 keys (their dS^T columns stay unwritten: the dQ
          // update below never reads them)
          const iStart = causal ? max(0, jg - qBeg) : 0;
          if (iStart >= nq) continue;
          const icStart = iStart & ~7;
          const ki = KI + usize(j0) * rowB;
          const vi = VI + usize(j0) * rowB;
          const kend = ki + (usize(D) << 4);
          const vend = vi + (usize(D) << 4);
          const sp0 = ST;
          const dsp0 = DS + usize(j0) * spsB;
          for (let ic = icStart; ic < nqc; ic += 8) {
            // S^T = K QT: 4 keys x 8 queries
            let s00 = f32x4.splat(0), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
            let kp = ki;
            let qp = QT + (usize(ic) << 2);
            while (kp < kend) {
              const q0 = v128.load(qp);
              const q1 = v128.load(qp, 16);
              const a0 = v128.load32_splat(kp);
              s00 = madd(a0, q0, s00);
              s01 = madd(a0, q1, s01);
              const a1 = v128.load32_splat(kp, 4);
              s10 = madd(a1, q0, s10);
              s11 = madd(a1, q1, s11);
              const a2 = v128.load32_splat(kp, 8);
              s20 = madd(a2, q0, s20);
              s21 = madd(a2, q1, s21);
              const a3 = v128.load32_splat(kp, 12);
              s30 = madd(a3, q0, s30);
              s31 = madd(a3, q1, s31);
              kp += 16;
              qp += qtStep;
            }
            // causal: key jg + r is masked for the queries before it
            if (causal && qBeg + ic < jg + 3) {
              const qi0 = i32x4.add(i32x4.splat(qBeg + ic), iota4());
              const qi1 = i32x4.add(qi0, fours());
              const ninf = negInf4();
              s00 = v128.bitselect(ninf, s00, i32x4.gt_s(i32x4.splat(jg), qi0));
              s01 = v128.bitselect(ninf, s01, i32x4.gt_s(i32x4.splat(jg), qi1));
              s10 = v128.bitselect(ninf, s10, i32x4.gt_s(i32x4.splat(jg + 1), qi0));
              s11 = v128.bitselect(ninf, s11, i32x4.gt_s(i32x4.splat(jg + 1), qi1));
              s20 = v128.bitselect(ninf, s20, i32x4.gt_s(i32x4.splat(jg + 2), qi0));
              s21 = v128.bitselect(ninf, s21, i32x4.gt_s(i32x4.splat(jg + 2), qi1));
              s30 = v128.bitselect(ninf, s30, i32x4.gt_s(i32x4.splat(jg + 3), qi0));
              s31 = v128.bitselect(ninf, s31, i32x4.gt_s(i32x4.splat(jg + 3), qi1));
            }
            // P^T = 2^(S^T - lse2)
            const l0 = v128.load(L2 + (usize(ic) << 2));
            const l1 = v128.load(L2 + (usize(ic) << 2), 16);
            const sp = sp0 + (usize(ic) << 2);
            v128.store(sp, exp2neg4(f32x4.sub(s00, l0)));
            v128.store(sp, exp2neg4(f32x4.sub(s01, l1)), 16);
            v128.store(sp + spsB, exp2neg4(f32x4.sub(s10, l0)));
            v128.store(sp + spsB, exp2neg4(f32x4.sub(s11, l1)), 16);
            v128.store(sp + 2 * spsB, exp2neg4(f32x4.sub(s20, l0)));
            v128.store(sp + 2 * spsB, exp2neg4(f32x4.sub(s21, l1)), 16);
            v128.store(sp + 3 * spsB, exp2neg4(f32x4.sub(s30, l0)));
            v128.store(sp + 3 * spsB, exp2neg4(f32x4.sub(s31, l1)), 16);

            // dP^T = V OT
            let p00 = f32x4.splat(0), p01 = p00, p10 = p00, p11 = p00, p20 = p00, p21 = p00, p30 = p00, p31 = p00;
            let vp = vi;
            let op = OT + (usize(ic) << 2);
            while (vp < vend) {
              const o0 = v128.load(op);
              const o1 = v128.load(op, 16);
              const a0 = v128.load32_splat(vp);
              p00 = madd(a0, o0, p00);
              p01 = madd(a0, o1, p01);
              const a1 = v128.load32_splat(vp, 4);
              p10 = madd(a1, o0, p10);
              p11 = madd(a1, o1, p11);
              const a2 = v128.load32_splat(vp, 8);
              p20 = madd(a2, o0, p20);
              p21 = madd(a2, o1, p21);
              const a3 = v128.load32_splat(vp, 12);
              p30 = madd(a3, o0, p30);
              p31 = madd(a3, o1, p31);
              vp += 16;
              op += qtStep;
            }
            // dS^T = P^T o (dP^T - Dv)
            const d0 = v128.load(DD + (usize(ic) << 2));
            const d1 = v128.load(DD + (usize(ic) << 2), 16);
            const dsp = dsp0 + (usize(ic) << 2);
            v128.store(dsp, f32x4.mul(v128.load(sp), f32x4.sub(p00, d0)));
            v128.store(dsp, f32x4.mul(v128.load(sp, 16), f32x4.sub(p01, d1)), 16);
            v128.store(dsp + spsB, f32x4.mul(v128.load(sp + spsB), f32x4.sub(p10, d0)));
            v128.store(dsp + spsB, f32x4.mul(v128.load(sp + spsB, 16), f32x4.sub(p11, d1)), 16);
            v128.store(dsp + 2 * spsB, f32x4.mul(v128.load(sp + 2 * spsB), f32x4.sub(p20, d0)));
            v128.store(dsp + 2 * spsB, f32x4.mul(v128.load(sp + 2 * spsB, 16), f32x4.sub(p21, d1)), 16);
            v128.store(dsp + 3 * spsB, f32x4.mul(v128.load(sp + 3 * spsB), f32x4.sub(p30, d0)));
            v128.store(dsp + 3 * spsB, f32x4.mul(v128.load(sp + 3 * spsB, 16), f32x4.sub(p31, d1)), 16);
          }

          // dV[4 keys] += P^T dO and dK[4 keys] += dS^T Q, 4 keys x 8 dims at a time, queries iStart..nq-1
          for (let pass = 0; pass < 2; pass++) {
            const acc0 = (pass == 0 ? DV : DK) + usize(j0) * rowB;
            const pbuf = (pass == 0 ? sp0 : dsp0) + (usize(iStart) << 2);
            const sstep = pass == 0 ? orStride : qrStride;
            const src0 = (pass == 0 ? or : qr) + usize(iStart) * sstep;
            for (let dc = 0; dc < Dp; dc += 8) {
              const ap = acc0 + (usize(dc) << 2);
              let c00 = v128.load(ap), c01 = v128.load(ap, 16);
              let c10 = v128.load(ap + rowB), c11 = v128.load(ap + rowB, 16);
              let c20 = v128.load(ap + 2 * rowB), c21 = v128.load(ap + 2 * rowB, 16);
              let c30 = v128.load(ap + 3 * rowB), c31 = v128.load(ap + 3 * rowB, 16);
              let xp = src0 + (usize(dc) << 2);
              let pp = pbuf;
              for (let i = iStart; i < nq; i++) {
                const x0 = v128.load(xp);
                const x1 = v128.load(xp, 16);
                const p0 = v128.load32_splat(pp);
                c00 = madd(p0, x0, c00);
                c01 = madd(p0, x1, c01);
                const p1 = v128.load32_splat(pp, SPS << 2);
                c10 = madd(p1, x0, c10);
                c11 = madd(p1, x1, c11);
                const p2 = v128.load32_splat(pp, 2 * SPS << 2);
                c20 = madd(p2, x0, c20);
                c21 = madd(p2, x1, c21);
                const p3 = v128.load32_splat(pp, 3 * SPS << 2);
                c30 = madd(p3, x0, c30);
                c31 = madd(p3, x1, c31);
                xp += sstep;
                pp += 4;
              }
              v128.store(ap, c00);
              v128.store(ap, c01, 16);
              v128.store(ap + rowB, c10);
              v128.store(ap + rowB, c11, 16);
              v128.store(ap + 2 * rowB, c20);
              v128.store(ap + 2 * rowB, c21, 16);
              v128.store(ap + 3 * rowB, c30);
              v128.store(ap + 3 * rowB, c31, 16);
            }
          }
        }

        // dQ[tile] += dS K over the block's keys, 4 queries x 8 dims at a time. Causal: a group of 4 queries
        // reads keys up to its last real query only (later dS^T columns are masked or were skipped).
        const r0Start = causal ? max(0, kBeg - qBeg) & ~3 : 0;
        for (let r0 = r0Start; r0 < nq; r0 += 4) {
          const jEnd = causal ? min(nk, qBeg + min(r0 + 4, nq) - kBeg) : nk;
          const acc0 = QACC + (usize(qBeg + r0) * rowB);
          for (let dc = 0; dc < Dp; dc += 8) {
            const ap = acc0 + (usize(dc) << 2);
            let c00 = v128.load(ap), c01 = v128.load(ap, 16);
            let c10 = v128.load(ap + rowB), c11 = v128.load(ap + rowB, 16);
            let c20 = v128.load(ap + 2 * rowB), c21 = v128.load(ap + 2 * rowB, 16);
            let c30 = v128.load(ap + 3 * rowB), c31 = v128.load(ap + 3 * rowB, 16);
            let kp = kr + (usize(dc) << 2);
            let pp = DS + (usize(r0) << 2);
            for (let j = 0; j < jEnd; j++) {
              const k0 = v128.load(kp);
              const k1 = v128.load(kp, 16);
              const p0 = v128.load32_splat(pp);
              c00 = madd(p0, k0, c00);
              c01 = madd(p0, k1, c01);
              const p1 = v128.load32_splat(pp, 4);
              c10 = madd(p1, k0, c10);
              c11 = madd(p1, k1, c11);
              const p2 = v128.load32_splat(pp, 8);
              c20 = madd(p2, k0, c20);
              c21 = madd(p2, k1, c21);
              const p3 = v128.load32_splat(pp, 12);
              c30 = madd(p3, k0, c30);
              c31 = madd(p3, k1, c31);
              kp += krStride;
              pp += spsB;
            }
            v128.store(ap, c00);
            v128.store(ap, c01, 16);
            v128.store(ap + rowB, c10);
            v128.store(ap + rowB, c11, 16);
            v128.store(ap + 2 * rowB, c20);
            v128.store(ap + 2 * rowB, c21, 16);
            v128.store(ap + 3 * rowB, c30);
            v128.store(ap + 3 * rowB, c31, 16);
          }
        }
      }

      // the block's dK = scale * acc, dV = acc
      storeRows(DK, rowB, nk, D, dk + ((kRow0 * usize(lddk) + hOff) << 2), lddk, scale);
      storeRows(DV, rowB, nk, D, dv + ((kRow0 * usize(lddv) + hOff) << 2), lddv, 1);
    }
    // dQ = scale * acc
    storeRows(QACC, rowB, Lq, D, dq + (((usize(b) * usize(Lq)) * usize(lddq) + hOff) << 2), lddq, scale);
  }
}

/** dst[r, d] = acc[r, d] * s for r < n, d < D (acc rows accB bytes apart, dst rows ld floats apart). */
@inline function storeRows(acc: usize, accB: usize, n: i32, D: i32, dst: usize, ld: i32, s: f32): void {
  const sv = f32x4.splat(s);
  for (let r = 0; r < n; r++) {
    const a = acc + usize(r) * accB;
    const o = dst + ((usize(r) * usize(ld)) << 2);
    let d = 0;
    for (; d + 4 <= D; d += 4) v128.store(o + (usize(d) << 2), f32x4.mul(v128.load(a + (usize(d) << 2)), sv));
    for (; d < D; d++) store<f32>(o + (usize(d) << 2), load<f32>(a + (usize(d) << 2)) * s);
  }
}

/** Softmax backward over the last dim: y the forward's output, dx = y o (dy - sum(dy o y)); rows split across threads. */
export function softmax_backward_f32(tid: i32, nt: i32, y: usize, dy: usize, dx: usize, rows: i32, N: i32): void {
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitEnd(rows, tid, nt);
  const rowBytes = usize(N) << 2;
  for (let r = r0; r < r1; r++) {
    const py = y + usize(r) * rowBytes;
    const pd = dy + usize(r) * rowBytes;
    const po = dx + usize(r) * rowBytes;
    let a0 = f32x4.splat(0), a1 = a0;
    let j = 0;
    for (; j + 8 <= N; j += 8) {
      const o = usize(j) << 2;
      a0 = madd(v128.load(py + o), v128.load(pd + o), a0);
      a1 = madd(v128.load(py + o, 16), v128.load(pd + o, 16), a1);
    }
    for (; j + 4 <= N; j += 4) {
      const o = usize(j) << 2;
      a0 = madd(v128.load(py + o), v128.load(pd + o), a0);
    }
    let s = hsum(f32x4.add(a0, a1));
    for (; j < N; j++) {
      const o = usize(j) << 2;
      s += load<f32>(py + o) * load<f32>(pd + o);
    }
    const sv = f32x4.splat(s);
    j = 0;
    for (; j + 4 <= N; j += 4) {
      const o = usize(j) << 2;
      v128.store(po + o, f32x4.mul(v128.load(py + o), f32x4.sub(v128.load(pd + o), sv)));
    }
    for (; j < N; j++) {
      const o = usize(j) << 2;
      store<f32>(po + o, load<f32>(py + o) * (load<f32>(pd + o) - s));
    }
  }
}
