// Fused (flash-style) multi-head attention and a standalone last-dim softmax.
//
// attention_f32: q [B, Lq, *], k/v [B, Lk, *] with head h's D values at columns h*D .. h*D+D-1 of each
// row (row strides ldq/ldk/ldv/ldo: heads interleaved, the layout linear layers produce). A work unit
// is (batch, head, block of ATT_BQ queries); units are split statically across threads and each is
// computed start to finish by one thread, so results do not depend on the thread count.
// Per unit: the queries are packed into scratch pre-multiplied by scale*log2(e) (so softmax uses
// exp2), interleaved per sub-block of 4 rows. Keys are walked in tiles of BK (128/64/32 keys for
// D <= 48 / <= 96 / larger): the tile's K is packed transposed (KT [Dp, BK], 4x4 register transposes)
// and its V packed row-major ([BK, Dp], only when D is not a multiple of 8; else V is read in place).
// Then for every sub-block of 4 queries: S = Q KT (4 x BK, register-blocked 4 queries x 8 keys),
// masking (tile end, causal j > i), online softmax (running max m and sum l per query; the
// accumulator is rescaled by 2^(m_old - m_new)), and acc += P V (register-blocked 4 queries x 8 dims).
// The Lq x Lk score matrix never exists; only one 4 x BK block of it per thread.
// Finally out = acc / l, and optionally lse[b, h, i] = logsumexp_j(scale * q_i.k_j) (natural log) for
// a backward pass.
//
// Per-thread scratch (floats, Dp = D rounded up to 8): see attScratchFloats in src/nn/attention.ts:
//   KT Dp*BK | V BK*Dp | Q BQ*Dp | ACC BQ*Dp | SP 4*128 | M BQ | L BQ | ALPHA 4 | tile row maxima 4 (+ padding)
import { splitStart, splitEnd, madd, exp2neg4, exp4, hmax, hsum } from "./math";
import { ATT_BQ } from "./abi";


/** Row stride (floats) of the per-thread 4-row score block: the largest tile. */
const SPS: i32 = 128;

/** Keys per tile for head dim D (packed K tile of 16-20 KB); src/nn/attention.ts computes the same (test/abi.test.ts). */
@inline function attBK(D: i32): i32 {
  return D <= 48 ? 128 : D <= 96 ? 64 : 32;
}

/** attBK, exported so test/abi.test.ts can compare it with the TypeScript side. */
export function abi_att_keys_per_tile(D: i32): i32 {
  return attBK(D);
}
const LOG2E: f32 = 1.44269504088896341;
const NEG_INF: f32 = -Infinity;

export function attention_f32(
  tid: i32, nt: i32, q: usize, k: usize, v: usize, out: usize, lse: usize, scratch: usize,
  B: i32, H: i32, Lq: i32, Lk: i32, D: i32, ldq: i32, ldk: i32, ldv: i32, ldo: i32, scale: f32, causal: i32,
): void {
  const Dp = (D + 7) & ~7;
  const ATT_BK = attBK(D);
  const perThread = 2 * Dp * ATT_BK + 2 * ATT_BQ * Dp + 4 * SPS + 2 * ATT_BQ + 16;
  const base = scratch + ((usize(tid) * usize(perThread)) << 2);
  const KT = base;
  const VP = KT + ((usize(Dp) * ATT_BK) << 2);
  const QP = VP + ((usize(Dp) * ATT_BK) << 2);
  const ACC = QP + ((usize(Dp) * ATT_BQ) << 2);
  const SP = ACC + ((usize(Dp) * ATT_BQ) << 2);
  const MM = SP + ((4 * SPS) << 2);
  const LL = MM + (ATT_BQ << 2);
  const AL = LL + (ATT_BQ << 2);
  const packV = (D & 7) != 0;
  const qscale = scale * LOG2E;

  const nQB = (Lq + ATT_BQ - 1) / ATT_BQ;
  const units = B * H * nQB;
  const u0 = splitStart(units, tid, nt);
  const u1 = splitEnd(units, tid, nt);
  for (let u = u0; u < u1; u++) {
    const bh = u / nQB;
    const qb = u - bh * nQB;
    const b = bh / H;
    const h = bh - b * H;
    const qBeg = qb * ATT_BQ;
    const nq = min(ATT_BQ, Lq - qBeg);
    const nqPad = (nq + 3) & ~3;
    const hOff = usize(h) * usize(D);

    // pack Q (scaled), zero padding rows/cols; reset m, l, acc
    // Q is packed per sub-block of 4 rows, interleaved: QP[(r >> 2) * Dp * 4 + d * 4 + (r & 3)], so the
    // QK loop broadcasts the 4 rows' values for one d from a single pointer with immediate offsets.
    for (let r = 0; r < nqPad; r++) {
      const dst = QP + ((usize(r >> 2) * usize(Dp) * 4 + usize(r & 3)) << 2);
      if (r < nq) {
        const src = q + ((usize(b) * usize(Lq) * usize(ldq) + usize(qBeg + r) * usize(ldq) + hOff) << 2);
        for (let d = 0; d < D; d++) store<f32>(dst + (usize(d) << 4), load<f32>(src + (usize(d) << 2)) * qscale);
        for (let d = D; d < Dp; d++) store<f32>(dst + (usize(d) << 4), 0);
      } else {
        for (let d = 0; d < Dp; d++) store<f32>(dst + (usize(d) << 4), 0);
      }
      const acc = ACC + ((usize(r) * usize(Dp)) << 2);
      for (let d = 0; d < Dp; d += 4) v128.store(acc + (usize(d) << 2), f32x4.splat(0));
      store<f32>(MM + (usize(r) << 2), NEG_INF);
      store<f32>(LL + (usize(r) << 2), 0);
    }

    // keys needed by this block: all, or (causal) up to its last query
    const kEnd = causal ? min(Lk, qBeg + nqPad) : Lk;
    for (let kBeg = 0; kBeg < kEnd; kBeg += ATT_BK) {
      const nk = min(ATT_BK, Lk - kBeg);
      const nkc = (nk + 7) & ~7;
      // pack K transposed: KT[d, j], 4 keys x 4 dims at a time by in-register 4x4 transposes
      const kRow = usize(ldk) << 2;
      const ktRow = usize(ATT_BK) << 2;
      const kTile = k + ((usize(b) * usize(Lk) * usize(ldk) + usize(kBeg) * usize(ldk) + hOff) << 2);
      let j = 0;
      for (; j + 4 <= nk; j += 4) {
        const s0 = kTile + usize(j) * kRow;
        const s1 = s0 + kRow;
        const s2 = s1 + kRow;
        const s3 = s2 + kRow;
        const dst = KT + (usize(j) << 2);
        let d = 0;
        for (; d + 4 <= D; d += 4) {
          const o = usize(d) << 2;
          const r0 = v128.load(s0 + o), r1 = v128.load(s1 + o), r2 = v128.load(s2 + o), r3 = v128.load(s3 + o);
          const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5); // r0[0] r1[0] r0[1] r1[1]
          const t1 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
          const t2 = i32x4.shuffle(r0, r1, 2, 6, 3, 7);
          const t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
          const kd = dst + usize(d) * ktRow;
          v128.store(kd, i32x4.shuffle(t0, t1, 0, 1, 4, 5));
          v128.store(kd + ktRow, i32x4.shuffle(t0, t1, 2, 3, 6, 7));
          v128.store(kd + 2 * ktRow, i32x4.shuffle(t2, t3, 0, 1, 4, 5));
          v128.store(kd + 3 * ktRow, i32x4.shuffle(t2, t3, 2, 3, 6, 7));
        }
        for (; d < D; d++) {
          const o = usize(d) << 2;
          const kd = dst + usize(d) * ktRow;
          store<f32>(kd, load<f32>(s0 + o));
          store<f32>(kd, load<f32>(s1 + o), 4);
          store<f32>(kd, load<f32>(s2 + o), 8);
          store<f32>(kd, load<f32>(s3 + o), 12);
        }
      }
      for (; j < nk; j++) {
        const src = kTile + usize(j) * kRow;
        for (let d = 0; d < D; d++) store<f32>(KT + usize(d) * ktRow + (usize(j) << 2), load<f32>(src + (usize(d) << 2)));
      }
      // V: packed [j, Dp] with zero padding, or in place
      let vb: usize;
      let vstride: usize;
      if (packV) {
        for (let j = 0; j < nk; j++) {
          const src = v + ((usize(b) * usize(Lk) * usize(ldv) + usize(kBeg + j) * usize(ldv) + hOff) << 2);
          const dst = VP + ((usize(j) * usize(Dp)) << 2);
          for (let d = 0; d < D; d++) store<f32>(dst + (usize(d) << 2), load<f32>(src + (usize(d) << 2)));
          for (let d = D; d < Dp; d++) store<f32>(dst + (usize(d) << 2), 0);
        }
        vb = VP;
        vstride = usize(Dp) << 2;
      } else {
        vb = v + ((usize(b) * usize(Lk) * usize(ldv) + usize(kBeg) * usize(ldv) + hOff) << 2);
        vstride = usize(ldv) << 2;
      }

      for (let r0 = 0; r0 < nqPad; r0 += 4) {
        const i0 = qBeg + r0; // query index of the sub-block's first row
        if (causal && kBeg > i0 + 3) continue; // this sub-block sees none of the tile
        // S = Q KT for 4 rows x nkc keys
        const qs = QP + ((usize(r0) * usize(Dp)) << 2); // this sub-block's interleaved Q
        const kstep = usize(ATT_BK) << 2;
        // row maxima of the raw scores, kept while storing them: only valid when nothing is masked
        let mx0 = f32x4.splat(NEG_INF), mx1 = mx0, mx2 = mx0, mx3 = mx0;
        for (let jc = 0; jc < nkc; jc += 8) {
          let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
          let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
          let kp = KT + (usize(jc) << 2);
          let qp = qs;
          const qend = qs + (usize(D) << 4);
          while (qp < qend) {
            const k0 = v128.load(kp);
            const k1 = v128.load(kp, 16);
            const a0 = v128.load32_splat(qp);
            s00 = madd(a0, k0, s00);
            s01 = madd(a0, k1, s01);
            const a1 = v128.load32_splat(qp, 4);
            s10 = madd(a1, k0, s10);
            s11 = madd(a1, k1, s11);
            const a2 = v128.load32_splat(qp, 8);
            s20 = madd(a2, k0, s20);
            s21 = madd(a2, k1, s21);
            const a3 = v128.load32_splat(qp, 12);
            s30 = madd(a3, k0, s30);
            s31 = madd(a3, k1, s31);
            kp += kstep;
            qp += 16;
          }
          mx0 = f32x4.pmax(mx0, f32x4.pmax(s00, s01));
          mx1 = f32x4.pmax(mx1, f32x4.pmax(s10, s11));
          mx2 = f32x4.pmax(mx2, f32x4.pmax(s20, s21));
          mx3 = f32x4.pmax(mx3, f32x4.pmax(s30, s31));
          const sp = SP + (usize(jc) << 2);
          v128.store(sp, s00);
          v128.store(sp, s01, 16);
          v128.store(sp + (SPS << 2), s10);
          v128.store(sp + (SPS << 2), s11, 16);
          v128.store(sp + (2 * SPS << 2), s20);
          v128.store(sp + (2 * SPS << 2), s21, 16);
          v128.store(sp + (3 * SPS << 2), s30);
          v128.store(sp + (3 * SPS << 2), s31, 16);
        }
        // mask, online softmax: p = 2^(s - m_new), alpha = 2^(m_old - m_new)
        // No key of the tile is masked for any of the 4 rows: the maxima above hold.
        const unmasked = nk == nkc && (!causal || kBeg + nk - 1 <= i0);
        if (unmasked) {
          store<f32>(AL, hmax(mx0), 16);
          store<f32>(AL, hmax(mx1), 20);
          store<f32>(AL, hmax(mx2), 24);
          store<f32>(AL, hmax(mx3), 28);
        }
        for (let r = 0; r < 4; r++) {
          const srow = SP + ((usize(r) * SPS) << 2);
          let tileMax: f32;
          if (unmasked) {
            tileMax = load<f32>(AL + (usize(r) << 2), 16);
          } else {
            // valid keys in this tile for this row: j < lim
            let lim = nk;
            if (causal) lim = min(lim, i0 + r - kBeg + 1);
            for (let j = max(lim, 0); j < nkc; j++) store<f32>(srow + (usize(j) << 2), NEG_INF);
            let mv = f32x4.splat(NEG_INF);
            for (let j = 0; j < nkc; j += 4) mv = f32x4.pmax(mv, v128.load(srow + (usize(j) << 2)));
            tileMax = hmax(mv);
          }
          const mOld = load<f32>(MM + (usize(r0 + r) << 2));
          const mNew = max(mOld, tileMax);
          const mSub = mNew == NEG_INF ? f32(0) : mNew;
          const msv = f32x4.splat(mSub);
          let sv = f32x4.splat(0);
          for (let j = 0; j < nkc; j += 4) {
            const o = usize(j) << 2;
            const p = exp2neg4(f32x4.sub(v128.load(srow + o), msv));
            v128.store(srow + o, p);
            sv = f32x4.add(sv, p);
          }
          const alpha = f32x4.extract_lane(exp2neg4(f32x4.splat(mOld - mSub)), 0);
          store<f32>(AL + (usize(r) << 2), alpha);
          store<f32>(MM + (usize(r0 + r) << 2), mNew);
          const lp = LL + (usize(r0 + r) << 2);
          store<f32>(lp, load<f32>(lp) * alpha + hsum(sv));
        }
        // acc = acc * alpha + P V, 4 rows x 8 dims at a time
        const al0 = v128.load32_splat(AL);
        const al1 = v128.load32_splat(AL + 4);
        const al2 = v128.load32_splat(AL + 8);
        const al3 = v128.load32_splat(AL + 12);
        const acc0 = ACC + ((usize(r0) * usize(Dp)) << 2);
        const rowB = usize(Dp) << 2;
        for (let dc = 0; dc < Dp; dc += 8) {
          const ap = acc0 + (usize(dc) << 2);
          let c00 = f32x4.mul(v128.load(ap), al0), c01 = f32x4.mul(v128.load(ap, 16), al0);
          let c10 = f32x4.mul(v128.load(ap + rowB), al1), c11 = f32x4.mul(v128.load(ap + rowB, 16), al1);
          let c20 = f32x4.mul(v128.load(ap + 2 * rowB), al2), c21 = f32x4.mul(v128.load(ap + 2 * rowB, 16), al2);
          let c30 = f32x4.mul(v128.load(ap + 3 * rowB), al3), c31 = f32x4.mul(v128.load(ap + 3 * rowB, 16), al3);
          let vp = vb + (usize(dc) << 2);
          let pp = SP;
          for (let j = 0; j < nk; j++) {
            const v0 = v128.load(vp);
            const v1 = v128.load(vp, 16);
            const p0 = v128.load32_splat(pp);
            c00 = madd(p0, v0, c00);
            c01 = madd(p0, v1, c01);
            const p1 = v128.load32_splat(pp, SPS << 2);
            c10 = madd(p1, v0, c10);
            c11 = madd(p1, v1, c11);
            const p2 = v128.load32_splat(pp, 2 * SPS << 2);
            c20 = madd(p2, v0, c20);
            c21 = madd(p2, v1, c21);
            const p3 = v128.load32_splat(pp, 3 * SPS << 2);
            c30 = madd(p3, v0, c30);
            c31 = madd(p3, v1, c31);
            vp += vstride;
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

    // out = acc / l; lse = (m + log2 l) * ln 2
    for (let r = 0; r < nq; r++) {
      const l = load<f32>(LL + (usize(r) << 2));
      const inv = f32(1.0) / l;
      const iv = f32x4.splat(inv);
      const acc = ACC + ((usize(r) * usize(Dp)) << 2);
      const dst = out + ((usize(b) * usize(Lq) * usize(ldo) + usize(qBeg + r) * usize(ldo) + hOff) << 2);
      let d = 0;
      for (; d + 4 <= D; d += 4) v128.store(dst + (usize(d) << 2), f32x4.mul(v128.load(acc + (usize(d) << 2)), iv));
      for (; d < D; d++) store<f32>(dst + (usize(d) << 2), load<f32>(acc + (usize(d) << 2)) * inv);
      if (lse) {
        const m = f64(load<f32>(MM + (usize(r) << 2)));
        store<f32>(lse + ((usize(bh) * usize(Lq) + usize(qBeg + r)) << 2), f32(m * 0.69314718055994531 + Math.log(f64(l))));
      }
    }
  }
}

/** Softmax over the last dim: x, out [rows, N]; threads split rows. In place is fine. */
export function softmax_f32(tid: i32, nt: i32, x: usize, out: usize, rows: i32, N: i32): void {
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitEnd(rows, tid, nt);
  const rowBytes = usize(N) << 2;
  for (let r = r0; r < r1; r++) {
    const px = x + usize(r) * rowBytes;
    const po = out + usize(r) * rowBytes;
    let mv = f32x4.splat(NEG_INF);
    let j = 0;
    for (; j + 4 <= N; j += 4) mv = f32x4.pmax(mv, v128.load(px + (usize(j) << 2)));
    let m = hmax(mv);
    for (; j < N; j++) m = max(m, load<f32>(px + (usize(j) << 2)));
    if (m == NEG_INF) m = 0; // all -inf: gives 0/0 = NaN like torch
    const msv = f32x4.splat(m);
    let sv = f32x4.splat(0);
    j = 0;
    for (; j + 4 <= N; j += 4) {
      const o = usize(j) << 2;
      const e = exp4(f32x4.sub(v128.load(px + o), msv));
      v128.store(po + o, e);
      sv = f32x4.add(sv, e);
    }
    let s = hsum(sv);
    for (; j < N; j++) {
      const o = usize(j) << 2;
      const e = f32x4.extract_lane(exp4(f32x4.splat(load<f32>(px + o) - m)), 0);
      store<f32>(po + o, e);
      s += e;
    }
    const inv = f32(1.0) / s;
    const iv = f32x4.splat(inv);
    j = 0;
    for (; j + 4 <= N; j += 4) {
      const o = usize(j) << 2;
      v128.store(po + o, f32x4.mul(v128.load(po + o), iv));
    }
    for (; j < N; j++) {
      const o = usize(j) << 2;
      store<f32>(po + o, load<f32>(po + o) * inv);
    }
  }
}
