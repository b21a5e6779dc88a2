// INT8 fused (flash-style) multi-head attention for the INT8 denoising steps: QK^T and P.V on the INT8 dot
// (assembly/gemm_int8.ts's instruction sequences), online softmax in f32 with a cheap exp.
// src/nn/attention-int8.ts runs it; src/nn/reference/attention-int8.ts is the same numerics in plain
// TypeScript (bit for bit: every float step here is a separate IEEE f32 operation, no fused multiply-add).
//
// Numerics (per batch b, head h; "qmax" Q's symmetric range, "kmax" K's and V's, "pmax" P's; the op picks
// qmax = pmax = 127 | 63 with kmax = 63 | 127: 8-bit x 7-bit or 7-bit x 8-bit operands):
//   K smoothing: mk[d] = (sum_j k[j,d]) / Lk (f32 sum in key order); k'[j,d] = k[j,d] - mk[d]. Softmax is
//     invariant to a per-query constant and q.(k - mk) = q.k - q.mk, so the output is unchanged; K's
//     channel offsets no longer eat its quantisation range.
//   K per key: sk[j] = amax_d|k'| / kmax, kq = clamp(rne(k' * (kmax / amax)), +-kmax) (amax = 0: all 0).
//   V per channel: mv[d] = mean over keys, v' = v - mv, sv[d] = amax_j|v'| / kmax, vq likewise.
//   Q per query row: sq = amax_d|q| / qmax, qq = clamp(rne(q * (qmax / amax)), +-qmax), stored as the
//     unsigned byte qq + zp (zp = qmax + 1), so the dot's unsigned operand is Q and its signed one K:
//     dot[i,j] = sum_d (qq + zp) kq - zp * sum_d kq[j,d]   (exact: the kernel starts at -corr[j]).
//   Scores in log2 units: s[i,j] = (f32(dot) * sk[j]) * (sq * (scale * log2 e)).
//   Key tiles of BK keys (attI8BK): per query row and tile, the tile max mt; P on its fixed range:
//     p[i,j] = rne(pmax * 2^(s - mt)) in [0, pmax] (expQ: degree-3 polynomial, relative error 1.3e-4,
//     exact 2^n scaling; the row's largest score gives exactly pmax), kept as bytes;
//     pv[i,d] = sum_j p[i,j] vq[j,d], psum[i] = sum_j p[i,j] (exact integers).
//   Online softmax across tiles (running max m, f32): mNew = max(m, mt), alpha = 2^(m - mNew),
//     beta = 2^(mt - mNew) (exp2s: scalar, ~1 ulp); acc = acc * alpha + f32(pv) * beta,
//     l = l * alpha + f32(psum) * beta. (Quantising each tile against its own max keeps P's full range
//     for every tile; the 1/pmax cancels between acc and l.)
//   out[i,d] = (acc * sv[d]) * (1 / l) + mv[d]   (the P weights sum to 1, so V's mean comes back exactly).
//
// Kernels: attention_int8_prep (K and V: smoothing, scales, packing; threads split (b, h) pairs) then
// attention_int8 (units of (b, h, ATT_BQ queries) split statically; each unit computed by one thread
// start to finish), so results never depend on the thread count.
//
// Packed operands (the layouts of assembly/gemm_int8.ts, "n" the lane, "k" the reduced index):
//   K: per (b, h) panels of 8 keys x Dq (D rounded up to 4) dims: n = key, k = dim, Kdim = Dq.
//   V: per (b, h) panels of 8 channels x Lk4 (Lk rounded up to 4) keys: n = channel, k = key, Kdim = Lk4.
//   relaxed ("k4"): byte (p*Kdim + (k & ~3))*8 + 4*(n & 7) + (k & 3);
//   i16 path ("k-pairs"): byte (p*Kdim + (k & ~3))*8 + 16*((n & 7) >> 2) + 8*((k & 3) >> 1) + 2*(n & 3) + (k & 1).
//   Padding keys / dims / channels are 0 (and their scales, corrections and means).
// Unsigned operands (Q, P) are interleaved per 4 rows by k-group: QI[g*16 + r*4 + t] (bytes), or widened to
// i16 on the i16 path: QI[g*32 + r*8 + 2t].
//
// Dot sequences (flags): INT8_FLAG_I16: i16 dots (exact for any bytes; the baseline build always);
// else INT8_FLAG_FUSED: i32x4.relaxed_dot_i8x16_i7x16_add_s; else the split sequence (i16 relaxed dot,
// pairwise widen, add). 8-bit unsigned operands are exact on the relaxed sequences only with 7-bit signed
// operands where src/nn/int8.ts's probe says so; the op only picks proven combinations.
import { splitStart, splitEnd, onesI16x8, loadPart, storeTransposed4x4 } from "./math";
import { INT8_FLAG_I16, INT8_FLAG_FUSED, ATT_BQ } from "./abi";
import { qdot, qdotSplit, qdot16 } from "./int8_dot";

// @ts-nocheck (AssemblyScript)

const NEG_INF: f32 = -Infinity;
const LOG2E: f32 = 1.44269504088896341;
/** x + RND rounds x to an integer (ties to even) in the low mantissa bits, for |x| < 2^22. */
const RND: f32 = 12582912.0; // 1.5 * 2^23
const RND_BITS: i32 = 0x4b400000;
/** 1.5 * 2^23 + 127: x + EXP_MAGIC leaves round(x) + 127 (the biased exponent of 2^round(x)) in the low bits. */
const EXP_MAGIC: f32 = 12583039.0;
/** 2^r on [-0.5, 0.5] ~ 1 + r (C1 + r (C2 + r C3)) (relative error <= 1.3e-4). */
const C1: f32 = 0.69322545;
const C2: f32 = 0.24229759;
const C3: f32 = 0.05533531;
/** 2^r, Taylor degree 6 (relative error < 2e-7 on [-0.5, 0.5]): the online-softmax rescaling factors. */
const E1: f32 = 0.6931471805599453;
const E2: f32 = 0.2402265069591007;
const E3: f32 = 0.05550410866482158;
const E4: f32 = 0.009618129107628477;
const E5: f32 = 0.0013333558146428443;
const E6: f32 = 0.00015403530393381608;
/** pmax * 2^x is below 0.5 for x <= -9: expQ clamps x at -15. */
const P_LO: f32 = -15.0;

// splatted constants, loaded (not rematerialised) inside loops (see assembly/math.ts KTAB)
const ATAB: usize = memory.data<f32>([
  P_LO, // 0
  EXP_MAGIC, // 1
  8388608.0, // 2: 2^23 (e + 2^23 rounds e >= 0 to an integer; its bits minus 2^23's are that integer)
  RND, // 3
  NEG_INF, // 4
]);

@inline function at(i: i32): v128 {
  return v128.load32_splat(ATAB + (usize(i) << 2));
}

/** Keys per tile for head dim D (src/nn/attention-int8.ts computes the same). */
@inline function attI8BK(D: i32): i32 {
  return D <= 96 ? 128 : 64;
}

/** Scratch bytes one thread of attention_int8 uses for head dim D (src/nn/attention-int8.ts must agree). */
@inline function attI8Scratch(D: i32): i32 {
  const Dq = (D + 3) & ~3;
  const Dv = (D + 7) & ~7;
  const BK = attI8BK(D);
  // QI (i16-wide) | QS | SP 4 x BK f32 | PI (i16-wide) | ACC | M | L | AB 256 bytes
  return ATT_BQ * Dq * 2 + ATT_BQ * 4 + 16 * BK + 8 * BK + ATT_BQ * Dv * 4 + 8 * ATT_BQ + 256;
}

/** attI8Scratch and attI8BK, exported so the op's copies can be tested against them. */
export function abi_att_int8_scratch_bytes(D: i32): i32 {
  return attI8Scratch(D);
}
export function abi_att_int8_keys_per_tile(D: i32): i32 {
  return attI8BK(D);
}

/** round-to-nearest-even of 4 f32 lanes (|x| < 2^22) as i32 lanes. */
@inline function rne4(x: v128): v128 {
  const m = at(3);
  return i32x4.sub(f32x4.add(x, m), m);
}

/** rne(pmax * 2^x) for x <= 0 (-inf gives 0) as i32 lanes; c0..c3: the polynomial scaled by pmax. */
@inline function expQ(x: v128, c0: v128, c1: v128, c2: v128, c3: v128): v128 {
  const xc = f32x4.pmax(x, at(0));
  const t = f32x4.add(xc, at(1));
  const n = f32x4.sub(t, at(1));
  const r = f32x4.sub(xc, n);
  let p = f32x4.add(f32x4.mul(c3, r), c2);
  p = f32x4.add(f32x4.mul(p, r), c1);
  p = f32x4.add(f32x4.mul(p, r), c0);
  const e = f32x4.mul(p, i32x4.shl(t, 23));
  const two23 = at(2);
  return i32x4.sub(f32x4.add(e, two23), two23);
}

/** 2^x for x <= 0 (0 below -126 and for -inf), ~1 ulp. */
@inline function exp2s(x: f32): f32 {
  if (!(x >= -126.0)) return x != x ? x : 0;
  const t: f32 = x + EXP_MAGIC;
  const n: f32 = t - EXP_MAGIC;
  const r: f32 = x - n;
  let p: f32 = E6 * r + E5;
  p = p * r + E4;
  p = p * r + E3;
  p = p * r + E2;
  p = p * r + E1;
  p = p * r + 1.0;
  return p * reinterpret<f32>(reinterpret<i32>(t) << 23);
}

/** Packed byte offset of (n, k) in panels of 8 lanes over Kdim (see the header). */
@inline function packOff(n: i32, k: i32, Kdim: i32, wide: bool): usize {
  const base = (usize(n >> 3) * usize(Kdim) + usize(k & ~3)) << 3;
  if (wide) return base + usize(16 * ((n & 7) >> 2) + 8 * ((k & 3) >> 1) + 2 * (n & 3) + (k & 1));
  return base + usize(4 * (n & 7) + (k & 3));
}

/** Sum over keys of rows x (row stride ld floats, Lk rows) for dims [0, D) into mean (f32, fixed key order), / Lk. */
function channelMeans(x: usize, ld: i32, Lk: i32, D: i32, mean: usize): void {
  const rowB = usize(ld) << 2;
  const fl = f32x4.splat(f32(Lk));
  let d = 0;
  for (; d + 4 <= D; d += 4) {
    let s = f32x4.splat(0);
    let p = x + (usize(d) << 2);
    for (let j = 0; j < Lk; j++) {
      s = f32x4.add(s, v128.load(p));
      p += rowB;
    }
    v128.store(mean + (usize(d) << 2), f32x4.div(s, fl));
  }
  for (; d < D; d++) {
    let s: f32 = 0;
    let p = x + (usize(d) << 2);
    for (let j = 0; j < Lk; j++) {
      s += load<f32>(p);
      p += rowB;
    }
    store<f32>(mean + (usize(d) << 2), s / f32(Lk));
  }
}

/**
 * K and V of every (b, h): smoothing, scales and packing (see the header). k, v: [B, Lk, *] f32 with head h
 * at columns h*D.., row strides ldk, ldv. Outputs per (b, h) pair bh:
 *   kq + bh*Lk8*Dq (i8), ksc + bh*Lk8*4 (f32 sk), kcorr + bh*Lk8*4 (i32 zp * sum_d kq),
 *   vq + bh*Dv*Lk4 (i8), vsc + bh*Dv*4 (f32 sv), vmean + bh*Dv*4 (f32 mv)
 * (Lk8 / Lk4: Lk rounded up to 8 / 4; Dq / Dv: D rounded up to 4 / 8). flags & INT8_FLAG_I16 (or the
 * baseline build): the k-pair layout. scratch: 2 * Dv f32 per thread.
 */
export function attention_int8_prep(
  tid: i32, nt: i32, k: usize, v: usize, B: i32, H: i32, Lk: i32, D: i32, ldk: i32, ldv: i32,
  kmax: i32, qzp: i32, flags: i32, kq: usize, ksc: usize, kcorr: usize, vq: usize, vsc: usize, vmean: usize, scratch: usize,
): void {
  const Dq = (D + 3) & ~3;
  const Dv = (D + 7) & ~7;
  const Lk8 = (Lk + 7) & ~7;
  const Lk4 = (Lk + 3) & ~3;
  const wide = !ASC_FEATURE_RELAXED_SIMD || (flags & INT8_FLAG_I16) != 0;
  const fk = f32(kmax);
  const lim = i32x4.splat(kmax), nlim = i32x4.splat(-kmax);
  const MEAN = scratch + usize(tid) * usize(Dv) * 8;
  const INV = MEAN + (usize(Dv) << 2);
  const units = B * H;
  const u0 = splitStart(units, tid, nt), u1 = splitEnd(units, tid, nt);
  for (let bh = u0; bh < u1; bh++) {
    const b = bh / H, h = bh - b * H;
    // ---- K
    const kb = k + ((usize(b) * usize(Lk) * usize(ldk) + usize(h) * usize(D)) << 2);
    const kqB = kq + usize(bh) * usize(Lk8) * usize(Dq);
    const kscB = ksc + ((usize(bh) * usize(Lk8)) << 2);
    const kcB = kcorr + ((usize(bh) * usize(Lk8)) << 2);
    memory.fill(kqB, 0, usize(Lk8) * usize(Dq));
    memory.fill(kscB, 0, usize(Lk8) << 2);
    memory.fill(kcB, 0, usize(Lk8) << 2);
    memory.fill(MEAN, 0, usize(Dv) << 2);
    channelMeans(kb, ldk, Lk, D, MEAN);
    for (let j = 0; j < Lk; j++) {
      const row = kb + ((usize(j) * usize(ldk)) << 2);
      // amax of k - mk (the tail dims lane by lane, in the same f32 subtraction)
      let am = f32x4.splat(0);
      let d = 0;
      for (; d + 4 <= D; d += 4) am = f32x4.pmax(am, f32x4.abs(f32x4.sub(v128.load(row + (usize(d) << 2)), v128.load(MEAN + (usize(d) << 2)))));
      let amax = max(max(f32x4.extract_lane(am, 0), f32x4.extract_lane(am, 1)), max(f32x4.extract_lane(am, 2), f32x4.extract_lane(am, 3)));
      for (; d < D; d++) amax = max(amax, abs<f32>(load<f32>(row + (usize(d) << 2)) - load<f32>(MEAN + (usize(d) << 2))));
      const inv: f32 = amax > 0 ? fk / amax : 0;
      store<f32>(kscB + (usize(j) << 2), amax / fk);
      const iv = f32x4.splat(inv);
      let sum = 0;
      for (d = 0; d < Dq; d += 4) {
        // (tail lanes: 0 - 0; MEAN is zero past D)
        const x = f32x4.sub(loadPart(row + (usize(d) << 2), D - d), v128.load(MEAN + (usize(d) << 2)));
        const qi = i32x4.max_s(i32x4.min_s(rne4(f32x4.mul(x, iv)), lim), nlim);
        const s2 = i32x4.add(qi, i32x4.shuffle(qi, qi, 2, 3, 0, 1));
        sum += i32x4.extract_lane(s2, 0) + i32x4.extract_lane(s2, 1);
        if (!wide) {
          const by = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(qi, qi), i16x8.splat(0));
          store<i32>(kqB + packOff(j, d, Dq, false), i32x4.extract_lane(by, 0));
        } else {
          store<i8>(kqB + packOff(j, d, Dq, true), i8(i32x4.extract_lane(qi, 0)));
          store<i8>(kqB + packOff(j, d + 1, Dq, true), i8(i32x4.extract_lane(qi, 1)));
          store<i8>(kqB + packOff(j, d + 2, Dq, true), i8(i32x4.extract_lane(qi, 2)));
          store<i8>(kqB + packOff(j, d + 3, Dq, true), i8(i32x4.extract_lane(qi, 3)));
        }
      }
      store<i32>(kcB + (usize(j) << 2), qzp * sum);
    }
    // ---- V
    const vb = v + ((usize(b) * usize(Lk) * usize(ldv) + usize(h) * usize(D)) << 2);
    const vqB = vq + usize(bh) * usize(Dv) * usize(Lk4);
    const vscB = vsc + ((usize(bh) * usize(Dv)) << 2);
    const vmB = vmean + ((usize(bh) * usize(Dv)) << 2);
    memory.fill(vqB, 0, usize(Dv) * usize(Lk4));
    memory.fill(vscB, 0, usize(Dv) << 2);
    memory.fill(vmB, 0, usize(Dv) << 2);
    channelMeans(vb, ldv, Lk, D, vmB);
    // per-channel amax of v - mv into INV, then the scales
    memory.fill(INV, 0, usize(Dv) << 2);
    for (let j = 0; j < Lk; j++) {
      const row = vb + ((usize(j) * usize(ldv)) << 2);
      for (let d = 0; d < D; d++) {
        const o = usize(d) << 2;
        store<f32>(INV + o, max(load<f32>(INV + o), abs<f32>(load<f32>(row + o) - load<f32>(vmB + o))));
      }
    }
    for (let d = 0; d < D; d++) {
      const o = usize(d) << 2;
      const amax = load<f32>(INV + o);
      store<f32>(vscB + o, amax / fk);
      store<f32>(INV + o, amax > 0 ? fk / amax : 0);
    }
    for (let j = 0; j < Lk; j++) {
      const row = vb + ((usize(j) * usize(ldv)) << 2);
      for (let d = 0; d < Dq; d += 4) {
        // (vmB and INV are zero past D)
        const x = f32x4.sub(loadPart(row + (usize(d) << 2), D - d), v128.load(vmB + (usize(d) << 2)));
        const iv = v128.load(INV + (usize(d) << 2));
        const qi = i32x4.max_s(i32x4.min_s(rne4(f32x4.mul(x, iv)), lim), nlim);
        store<i8>(vqB + packOff(d, j, Lk4, wide), i8(i32x4.extract_lane(qi, 0)));
        store<i8>(vqB + packOff(d + 1, j, Lk4, wide), i8(i32x4.extract_lane(qi, 1)));
        store<i8>(vqB + packOff(d + 2, j, Lk4, wide), i8(i32x4.extract_lane(qi, 2)));
        store<i8>(vqB + packOff(d + 3, j, Lk4, wide), i8(i32x4.extract_lane(qi, 3)));
      }
    }
  }
}

/**
 * Scores (log2 units) of 4 query rows x keys [kBeg, kBeg + nk8) into SP (row stride BK floats), relaxed dot:
 * qs: the rows' interleaved Q bytes (Dq / 4 groups of 16), rsp: their 4 row scales.
 */
function qkTile(qs: usize, Dq: i32, kqB: usize, kscB: usize, kcB: usize, kBeg: i32, nk8: i32, rsp: usize, SP: usize, BK: i32, fused: bool): void {
  const rs0 = v128.load32_splat(rsp), rs1 = v128.load32_splat(rsp, 4), rs2 = v128.load32_splat(rsp, 8), rs3 = v128.load32_splat(rsp, 12);
  const spRow = usize(BK) << 2;
  const qend = qs + (usize(Dq) << 2);
  const z = i32x4.splat(0);
  for (let jc = 0; jc < nk8; jc += 8) {
    const key = kBeg + jc;
    const cc = kcB + (usize(key) << 2);
    const v0 = i32x4.sub(z, v128.load(cc)), v1 = i32x4.sub(z, v128.load(cc, 16));
    let c00 = v0, c01 = v1, c10 = v0, c11 = v1, c20 = v0, c21 = v1, c30 = v0, c31 = v1;
    let kp = kqB + usize(key) * usize(Dq);
    let qp = qs;
    let w0: v128, w1: v128, a: v128;
    if (fused) {
      while (qp < qend) {
        w0 = v128.load(kp); w1 = v128.load(kp, 16);
        a = v128.load32_splat(qp); c00 = qdot(w0, a, c00); c01 = qdot(w1, a, c01);
        a = v128.load32_splat(qp, 4); c10 = qdot(w0, a, c10); c11 = qdot(w1, a, c11);
        a = v128.load32_splat(qp, 8); c20 = qdot(w0, a, c20); c21 = qdot(w1, a, c21);
        a = v128.load32_splat(qp, 12); c30 = qdot(w0, a, c30); c31 = qdot(w1, a, c31);
        kp += 32;
        qp += 16;
      }
    } else {
      const ones = onesI16x8();
      while (qp < qend) {
        w0 = v128.load(kp); w1 = v128.load(kp, 16);
        a = v128.load32_splat(qp); c00 = qdotSplit(w0, a, c00, ones); c01 = qdotSplit(w1, a, c01, ones);
        a = v128.load32_splat(qp, 4); c10 = qdotSplit(w0, a, c10, ones); c11 = qdotSplit(w1, a, c11, ones);
        a = v128.load32_splat(qp, 8); c20 = qdotSplit(w0, a, c20, ones); c21 = qdotSplit(w1, a, c21, ones);
        a = v128.load32_splat(qp, 12); c30 = qdotSplit(w0, a, c30, ones); c31 = qdotSplit(w1, a, c31, ones);
        kp += 32;
        qp += 16;
      }
    }
    const ks0 = v128.load(kscB + (usize(key) << 2)), ks1 = v128.load(kscB + (usize(key) << 2), 16);
    const sp = SP + (usize(jc) << 2);
    v128.store(sp, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c00), ks0), rs0));
    v128.store(sp, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c01), ks1), rs0), 16);
    v128.store(sp + spRow, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c10), ks0), rs1));
    v128.store(sp + spRow, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c11), ks1), rs1), 16);
    v128.store(sp + 2 * spRow, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c20), ks0), rs2));
    v128.store(sp + 2 * spRow, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c21), ks1), rs2), 16);
    v128.store(sp + 3 * spRow, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c30), ks0), rs3));
    v128.store(sp + 3 * spRow, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c31), ks1), rs3), 16);
  }
}

/** qkTile on the i16 path (K in k-pairs, Q widened), as two 2-row halves. */
function qkTileWide(qs: usize, Dq: i32, kqB: usize, kscB: usize, kcB: usize, kBeg: i32, nk8: i32, rsp: usize, SP: usize, BK: i32): void {
  const spRow = usize(BK) << 2;
  const qend = qs + (usize(Dq) << 3);
  const z = i32x4.splat(0);
  for (let half = 0; half < 2; half++) {
    const rsA = v128.load32_splat(rsp + (usize(2 * half) << 2)), rsB = v128.load32_splat(rsp + (usize(2 * half + 1) << 2));
    const spA = SP + usize(2 * half) * spRow;
    for (let jc = 0; jc < nk8; jc += 8) {
      const key = kBeg + jc;
      const cc = kcB + (usize(key) << 2);
      const v0 = i32x4.sub(z, v128.load(cc)), v1 = i32x4.sub(z, v128.load(cc, 16));
      let c00 = v0, c01 = v1, c10 = v0, c11 = v1;
      let kp = kqB + usize(key) * usize(Dq);
      let qp = qs + (usize(half) << 4);
      const qe = qend + (usize(half) << 4);
      while (qp < qe) {
        const wP0 = v128.load8x8_s(kp), wQ0 = v128.load8x8_s(kp, 8);
        const wP1 = v128.load8x8_s(kp, 16), wQ1 = v128.load8x8_s(kp, 24);
        let aP = v128.load32_splat(qp), aQ = v128.load32_splat(qp, 4);
        c00 = qdot16(wP0, wQ0, aP, aQ, c00); c01 = qdot16(wP1, wQ1, aP, aQ, c01);
        aP = v128.load32_splat(qp, 8); aQ = v128.load32_splat(qp, 12);
        c10 = qdot16(wP0, wQ0, aP, aQ, c10); c11 = qdot16(wP1, wQ1, aP, aQ, c11);
        kp += 32;
        qp += 32;
      }
      const ks0 = v128.load(kscB + (usize(key) << 2)), ks1 = v128.load(kscB + (usize(key) << 2), 16);
      const sp = spA + (usize(jc) << 2);
      v128.store(sp, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c00), ks0), rsA));
      v128.store(sp, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c01), ks1), rsA), 16);
      v128.store(sp + spRow, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c10), ks0), rsB));
      v128.store(sp + spRow, f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(c11), ks1), rsB), 16);
    }
  }
}

/** rne(pmax * 2^(s - mt)) of 16 keys of one score row as 8 + 8 i16 lanes (h0, h1); adds them to the row sum. */
@inline function pRow16(sp: usize, mt: v128, c0: v128, c1: v128, c2: v128, c3: v128, sums: usize): v128 {
  const e0 = expQ(f32x4.sub(v128.load(sp), mt), c0, c1, c2, c3);
  const e1 = expQ(f32x4.sub(v128.load(sp, 16), mt), c0, c1, c2, c3);
  const e2 = expQ(f32x4.sub(v128.load(sp, 32), mt), c0, c1, c2, c3);
  const e3 = expQ(f32x4.sub(v128.load(sp, 48), mt), c0, c1, c2, c3);
  v128.store(sums, i32x4.add(v128.load(sums), i32x4.add(i32x4.add(e0, e1), i32x4.add(e2, e3))));
  const h0 = i16x8.narrow_i32x4_s(e0, e1), h1 = i16x8.narrow_i32x4_s(e2, e3);
  // the low 64 bits of h0 / h1 via one vector: returned as [h0 | h1] narrowed to bytes by the caller
  v128.store(sums, h1, 16);
  return h0;
}

/**
 * Softmax part of a tile for 4 query rows: masks keys [nk, nk16) of the score rows, takes each row's tile
 * max mt, quantises P = rne(pmax * 2^(s - mt)) into PI (interleaved by 4-key group; i16 when wide), and
 * updates the rows' running max (MMr) and sum (LLr); leaves alpha (AB[0..3]) and beta (AB[4..7]) for the
 * P.V epilogue; bytes 32..47 of AB: the tile maxima, 64..191: per row the i32 P sums and a spill.
 */
function softmaxTile(SP: usize, BK: i32, nk: i32, MMr: usize, LLr: usize, AB: usize, PI: usize, wide: bool, c0: v128, c1: v128, c2: v128, c3: v128): void {
  const spRow = usize(BK) << 2;
  const nk16 = (nk + 15) & ~15;
  for (let r = 0; r < 4; r++) {
    const row = SP + usize(r) * spRow;
    for (let j = nk; j < nk16; j++) store<f32>(row + (usize(j) << 2), NEG_INF);
    let mv = at(4);
    for (let j = 0; j < nk16; j += 4) mv = f32x4.pmax(mv, v128.load(row + (usize(j) << 2)));
    const s = f32x4.pmax(mv, i32x4.shuffle(mv, mv, 2, 3, 0, 1));
    store<f32>(AB + 32 + (usize(r) << 2), max(f32x4.extract_lane(s, 0), f32x4.extract_lane(s, 1)));
  }
  const mt0 = v128.load32_splat(AB + 32), mt1 = v128.load32_splat(AB + 36), mt2 = v128.load32_splat(AB + 40), mt3 = v128.load32_splat(AB + 44);
  const S0 = AB + 64, S1 = S0 + 32, S2 = S1 + 32, S3 = S2 + 32; // per row: i32 sum (16 bytes), h1 spill (16 bytes)
  const z = i32x4.splat(0);
  v128.store(S0, z);
  v128.store(S1, z);
  v128.store(S2, z);
  v128.store(S3, z);
  for (let j = 0; j < nk16; j += 16) {
    const o = usize(j) << 2;
    const h00 = pRow16(SP + o, mt0, c0, c1, c2, c3, S0);
    const h10 = pRow16(SP + spRow + o, mt1, c0, c1, c2, c3, S1);
    const h20 = pRow16(SP + 2 * spRow + o, mt2, c0, c1, c2, c3, S2);
    const h30 = pRow16(SP + 3 * spRow + o, mt3, c0, c1, c2, c3, S3);
    const h01 = v128.load(S0, 16), h11 = v128.load(S1, 16), h21 = v128.load(S2, 16), h31 = v128.load(S3, 16);
    if (!wide) {
      storeTransposed4x4(PI + (usize(j) << 2), i8x16.narrow_i16x8_u(h00, h01), i8x16.narrow_i16x8_u(h10, h11), i8x16.narrow_i16x8_u(h20, h21), i8x16.narrow_i16x8_u(h30, h31));
    } else {
      const pp = PI + (usize(j) << 3);
      v128.store(pp, i64x2.shuffle(h00, h10, 0, 2));
      v128.store(pp, i64x2.shuffle(h20, h30, 0, 2), 16);
      v128.store(pp, i64x2.shuffle(h00, h10, 1, 3), 32);
      v128.store(pp, i64x2.shuffle(h20, h30, 1, 3), 48);
      v128.store(pp, i64x2.shuffle(h01, h11, 0, 2), 64);
      v128.store(pp, i64x2.shuffle(h21, h31, 0, 2), 80);
      v128.store(pp, i64x2.shuffle(h01, h11, 1, 3), 96);
      v128.store(pp, i64x2.shuffle(h21, h31, 1, 3), 112);
    }
  }
  for (let r = 0; r < 4; r++) {
    const ro = usize(r) << 2;
    const mOld = load<f32>(MMr + ro);
    const mt = load<f32>(AB + 32 + ro);
    const mNew = max(mOld, mt);
    const alpha = exp2s(mOld - mNew);
    const beta = exp2s(mt - mNew);
    store<f32>(AB + ro, alpha);
    store<f32>(AB + 16 + ro, beta);
    store<f32>(MMr + ro, mNew);
    const sv = v128.load(S0 + (usize(r) << 5));
    const isum = i32x4.extract_lane(sv, 0) + i32x4.extract_lane(sv, 1) + i32x4.extract_lane(sv, 2) + i32x4.extract_lane(sv, 3);
    store<f32>(LLr + ro, load<f32>(LLr + ro) * alpha + f32(isum) * beta);
  }
}

/** acc = acc * alpha + f32(pv) * beta for 4 rows x 8 channels at ap (row stride rowB bytes). */
@inline function pvEpilogue(ap: usize, rowB: usize, AB: usize, c00: v128, c01: v128, c10: v128, c11: v128, c20: v128, c21: v128, c30: v128, c31: v128): void {
  let al = v128.load32_splat(AB), be = v128.load32_splat(AB, 16);
  v128.store(ap, f32x4.add(f32x4.mul(v128.load(ap), al), f32x4.mul(f32x4.convert_i32x4_s(c00), be)));
  v128.store(ap, f32x4.add(f32x4.mul(v128.load(ap, 16), al), f32x4.mul(f32x4.convert_i32x4_s(c01), be)), 16);
  al = v128.load32_splat(AB, 4); be = v128.load32_splat(AB, 20);
  let p = ap + rowB;
  v128.store(p, f32x4.add(f32x4.mul(v128.load(p), al), f32x4.mul(f32x4.convert_i32x4_s(c10), be)));
  v128.store(p, f32x4.add(f32x4.mul(v128.load(p, 16), al), f32x4.mul(f32x4.convert_i32x4_s(c11), be)), 16);
  al = v128.load32_splat(AB, 8); be = v128.load32_splat(AB, 24);
  p += rowB;
  v128.store(p, f32x4.add(f32x4.mul(v128.load(p), al), f32x4.mul(f32x4.convert_i32x4_s(c20), be)));
  v128.store(p, f32x4.add(f32x4.mul(v128.load(p, 16), al), f32x4.mul(f32x4.convert_i32x4_s(c21), be)), 16);
  al = v128.load32_splat(AB, 12); be = v128.load32_splat(AB, 28);
  p += rowB;
  v128.store(p, f32x4.add(f32x4.mul(v128.load(p), al), f32x4.mul(f32x4.convert_i32x4_s(c30), be)));
  v128.store(p, f32x4.add(f32x4.mul(v128.load(p, 16), al), f32x4.mul(f32x4.convert_i32x4_s(c31), be)), 16);
}

/** P.V of a tile for 4 query rows (P in PI, ng groups of 4 keys), folded into ACC rows at acc0 (stride Dv). */
function pvTile(PI: usize, vqB: usize, Lk4: i32, kBeg: i32, ng: i32, Dv: i32, acc0: usize, AB: usize, wide: bool, fused: bool): void {
  const rowB = usize(Dv) << 2;
  const z = i32x4.splat(0);
  for (let c = 0; c < Dv; c += 8) {
    let vp = vqB + ((usize(c >> 3) * usize(Lk4) + usize(kBeg)) << 3);
    let c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    if (!wide) {
      let pp = PI;
      const pend = PI + (usize(ng) << 4);
      let w0: v128, w1: v128, a: v128;
      if (fused) {
        while (pp < pend) {
          w0 = v128.load(vp); w1 = v128.load(vp, 16);
          a = v128.load32_splat(pp); c00 = qdot(w0, a, c00); c01 = qdot(w1, a, c01);
          a = v128.load32_splat(pp, 4); c10 = qdot(w0, a, c10); c11 = qdot(w1, a, c11);
          a = v128.load32_splat(pp, 8); c20 = qdot(w0, a, c20); c21 = qdot(w1, a, c21);
          a = v128.load32_splat(pp, 12); c30 = qdot(w0, a, c30); c31 = qdot(w1, a, c31);
          vp += 32;
          pp += 16;
        }
      } else {
        const ones = onesI16x8();
        while (pp < pend) {
          w0 = v128.load(vp); w1 = v128.load(vp, 16);
          a = v128.load32_splat(pp); c00 = qdotSplit(w0, a, c00, ones); c01 = qdotSplit(w1, a, c01, ones);
          a = v128.load32_splat(pp, 4); c10 = qdotSplit(w0, a, c10, ones); c11 = qdotSplit(w1, a, c11, ones);
          a = v128.load32_splat(pp, 8); c20 = qdotSplit(w0, a, c20, ones); c21 = qdotSplit(w1, a, c21, ones);
          a = v128.load32_splat(pp, 12); c30 = qdotSplit(w0, a, c30, ones); c31 = qdotSplit(w1, a, c31, ones);
          vp += 32;
          pp += 16;
        }
      }
    } else {
      const pend = PI + (usize(ng) << 5);
      // rows 0, 1
      let pp = PI;
      let wp = vp;
      while (pp < pend) {
        const wP0 = v128.load8x8_s(wp), wQ0 = v128.load8x8_s(wp, 8);
        const wP1 = v128.load8x8_s(wp, 16), wQ1 = v128.load8x8_s(wp, 24);
        let aP = v128.load32_splat(pp), aQ = v128.load32_splat(pp, 4);
        c00 = qdot16(wP0, wQ0, aP, aQ, c00); c01 = qdot16(wP1, wQ1, aP, aQ, c01);
        aP = v128.load32_splat(pp, 8); aQ = v128.load32_splat(pp, 12);
        c10 = qdot16(wP0, wQ0, aP, aQ, c10); c11 = qdot16(wP1, wQ1, aP, aQ, c11);
        wp += 32;
        pp += 32;
      }
      // rows 2, 3
      pp = PI;
      wp = vp;
      while (pp < pend) {
        const wP0 = v128.load8x8_s(wp), wQ0 = v128.load8x8_s(wp, 8);
        const wP1 = v128.load8x8_s(wp, 16), wQ1 = v128.load8x8_s(wp, 24);
        let aP = v128.load32_splat(pp, 16), aQ = v128.load32_splat(pp, 20);
        c20 = qdot16(wP0, wQ0, aP, aQ, c20); c21 = qdot16(wP1, wQ1, aP, aQ, c21);
        aP = v128.load32_splat(pp, 24); aQ = v128.load32_splat(pp, 28);
        c30 = qdot16(wP0, wQ0, aP, aQ, c30); c31 = qdot16(wP1, wQ1, aP, aQ, c31);
        wp += 32;
        pp += 32;
      }
    }
    pvEpilogue(acc0 + (usize(c) << 2), rowB, AB, c00, c01, c10, c11, c20, c21, c30, c31);
  }
}

/**
 * softmax(scale * Q K^T) V per head with INT8 QK^T and P.V (numerics: the header). q: [B, Lq, *] f32, head
 * h at columns h*D.. (row stride ldq), out likewise (ldo); K and V as attention_int8_prep left them.
 * qmax: Q's symmetric range (zp = qmax + 1), pmax: P's range, flags: INT8_FLAG_I16 / INT8_FLAG_FUSED.
 * scratch: attI8Scratch(D) bytes per thread.
 */
export function attention_int8(
  tid: i32, nt: i32, q: usize, kq: usize, ksc: usize, kcorr: usize, vq: usize, vsc: usize, vmean: usize, out: usize, scratch: usize,
  B: i32, H: i32, Lq: i32, Lk: i32, D: i32, ldq: i32, ldo: i32, scale: f32, qmax: i32, pmax: i32, flags: i32,
): void {
  const Dq = (D + 3) & ~3;
  const Dv = (D + 7) & ~7;
  const Lk8 = (Lk + 7) & ~7;
  const Lk4 = (Lk + 3) & ~3;
  const BK = attI8BK(D);
  const wide = !ASC_FEATURE_RELAXED_SIMD || (flags & INT8_FLAG_I16) != 0;
  const fused = !wide && (flags & INT8_FLAG_FUSED) != 0;
  const base = scratch + usize(tid) * usize(attI8Scratch(D));
  const QI = base;
  const QS = QI + usize(ATT_BQ) * usize(Dq) * 2;
  const SP = QS + (usize(ATT_BQ) << 2);
  const PI = SP + (usize(BK) << 4);
  const ACC = PI + (usize(BK) << 3);
  const MM = ACC + ((usize(ATT_BQ) * usize(Dv)) << 2);
  const LL = MM + (usize(ATT_BQ) << 2);
  const AB = LL + (usize(ATT_BQ) << 2);
  const qscale: f32 = scale * LOG2E;
  const fq = f32(qmax);
  const zpv = i32x4.splat(qmax + 1);
  const lim = i32x4.splat(qmax), nlim = i32x4.splat(-qmax);
  const fp = f32(pmax);
  const c0 = f32x4.splat(fp), c1 = f32x4.splat(fp * C1), c2 = f32x4.splat(fp * C2), c3 = f32x4.splat(fp * C3);
  const qsub = usize(Dq) << (wide ? 3 : 2); // bytes of one 4-row sub-block of packed Q

  const nQB = (Lq + ATT_BQ - 1) / ATT_BQ;
  const units = B * H * nQB;
  const u0 = splitStart(units, tid, nt), u1 = splitEnd(units, tid, nt);
  for (let u = u0; u < u1; u++) {
    const bh = u / nQB;
    const qb = u - bh * nQB;
    const b = bh / H;
    const h = bh - b * H;
    const qBeg = qb * ATT_BQ;
    const nq = min(ATT_BQ, Lq - qBeg);
    const nqPad = (nq + 3) & ~3;
    const hOff = usize(h) * usize(D);
    const kqB = kq + usize(bh) * usize(Lk8) * usize(Dq);
    const kscB = ksc + ((usize(bh) * usize(Lk8)) << 2);
    const kcB = kcorr + ((usize(bh) * usize(Lk8)) << 2);
    const vqB = vq + usize(bh) * usize(Dv) * usize(Lk4);
    const vscB = vsc + ((usize(bh) * usize(Dv)) << 2);
    const vmB = vmean + ((usize(bh) * usize(Dv)) << 2);

    // quantise Q per row, interleaved per 4-row sub-block by 4-dim group; reset m, l, acc
    for (let r = 0; r < nqPad; r++) {
      const src = q + ((usize(b) * usize(Lq) * usize(ldq) + usize(qBeg + r) * usize(ldq) + hOff) << 2);
      let amax: f32 = 0;
      if (r < nq) {
        let am = f32x4.splat(0);
        let d = 0;
        for (; d + 4 <= D; d += 4) am = f32x4.pmax(am, f32x4.abs(v128.load(src + (usize(d) << 2))));
        amax = max(max(f32x4.extract_lane(am, 0), f32x4.extract_lane(am, 1)), max(f32x4.extract_lane(am, 2), f32x4.extract_lane(am, 3)));
        for (; d < D; d++) amax = max(amax, abs<f32>(load<f32>(src + (usize(d) << 2))));
      }
      const inv: f32 = amax > 0 ? fq / amax : 0;
      store<f32>(QS + (usize(r) << 2), (amax / fq) * qscale);
      const iv = f32x4.splat(inv);
      const sub = QI + usize(r >> 2) * qsub;
      for (let d = 0; d < Dq; d += 4) {
        const x = r < nq ? loadPart(src + (usize(d) << 2), D - d) : f32x4.splat(0);
        const qi = i32x4.add(i32x4.max_s(i32x4.min_s(rne4(f32x4.mul(x, iv)), lim), nlim), zpv);
        const h16 = i16x8.narrow_i32x4_s(qi, qi);
        if (!wide) store<i32>(sub + (usize(d) << 2) + (usize(r & 3) << 2), i32x4.extract_lane(i8x16.narrow_i16x8_u(h16, h16), 0));
        else store<i64>(sub + (usize(d) << 3) + (usize(r & 3) << 3), i64x2.extract_lane(h16, 0));
      }
      const acc = ACC + ((usize(r) * usize(Dv)) << 2);
      for (let d = 0; d < Dv; d += 4) v128.store(acc + (usize(d) << 2), f32x4.splat(0));
      store<f32>(MM + (usize(r) << 2), NEG_INF);
      store<f32>(LL + (usize(r) << 2), 0);
    }

    for (let kBeg = 0; kBeg < Lk; kBeg += BK) {
      const nk = min(BK, Lk - kBeg);
      const nk8 = (nk + 7) & ~7;
      const ng = (nk + 3) >> 2;
      for (let r0 = 0; r0 < nqPad; r0 += 4) {
        const qs = QI + usize(r0 >> 2) * qsub;
        const rsp = QS + (usize(r0) << 2);
        if (wide) qkTileWide(qs, Dq, kqB, kscB, kcB, kBeg, nk8, rsp, SP, BK);
        else qkTile(qs, Dq, kqB, kscB, kcB, kBeg, nk8, rsp, SP, BK, fused);
        softmaxTile(SP, BK, nk, MM + (usize(r0) << 2), LL + (usize(r0) << 2), AB, PI, wide, c0, c1, c2, c3);
        pvTile(PI, vqB, Lk4, kBeg, ng, Dv, ACC + ((usize(r0) * usize(Dv)) << 2), AB, wide, fused);
      }
    }

    // out = (acc * sv) * (1 / l) + mv
    for (let r = 0; r < nq; r++) {
      const inv: f32 = f32(1.0) / load<f32>(LL + (usize(r) << 2));
      const iv = f32x4.splat(inv);
      const acc = ACC + ((usize(r) * usize(Dv)) << 2);
      const dst = out + ((usize(b) * usize(Lq) * usize(ldo) + usize(qBeg + r) * usize(ldo) + hOff) << 2);
      let d = 0;
      for (; d + 4 <= D; d += 4) {
        const o = usize(d) << 2;
        v128.store(dst + o, f32x4.add(f32x4.mul(f32x4.mul(v128.load(acc + o), v128.load(vscB + o)), iv), v128.load(vmB + o)));
      }
      for (; d < D; d++) {
        const o = usize(d) << 2;
        store<f32>(dst + o, load<f32>(acc + o) * load<f32>(vscB + o) * inv + load<f32>(vmB + o));
      }
    }
  }
}
