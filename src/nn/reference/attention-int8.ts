// Plain TypeScript reference of INT8 attention (assembly/attention_int8.ts, whose header defines the
// numerics): the same f32 operations in the same order (Math.fround after each), the same exact integers,
// so the kernel must match it bit for bit on every path and thread count.
import { attInt8KeysPerTile, int8AttentionRanges, type Int8AttentionScheme } from "../attention-int8.ts";

const f = Math.fround;
const RND = 12582912; // 1.5 * 2^23
const EXP_MAGIC = 12583039; // 1.5 * 2^23 + 127
const TWO23 = 8388608;
const LOG2E = f(1.44269504088896341);
const C1 = f(0.69322545), C2 = f(0.24229759), C3 = f(0.05533531);
const E1 = f(0.6931471805599453), E2 = f(0.2402265069591007), E3 = f(0.05550410866482158);
const E4 = f(0.009618129107628477), E5 = f(0.0013333558146428443), E6 = f(0.00015403530393381608);

/** Round to nearest even of an f32 value |x| < 2^22 (x + 1.5 * 2^23 in f32). */
function rne(x: number): number {
  return f(x + RND) - RND;
}

const clamp = (v: number, m: number) => Math.min(m, Math.max(-m, v));

/** 2^n for the integer n in t = x + EXP_MAGIC (the kernel's exponent-bit trick). */
function pow2FromMagic(t: number): number {
  return 2 ** (t - EXP_MAGIC);
}

/** rne(pmax * 2^x), x <= 0 (the kernel's expQ). */
export function expQRef(x: number, pmax: number): number {
  const c0 = f(pmax), c1 = f(pmax * C1), c2 = f(pmax * C2), c3 = f(pmax * C3);
  const xc = x < -15 ? -15 : x;
  const t = f(xc + EXP_MAGIC);
  const n = f(t - EXP_MAGIC);
  const r = f(xc - n);
  let p = f(f(c3 * r) + c2);
  p = f(f(p * r) + c1);
  p = f(f(p * r) + c0);
  const e = f(p * pow2FromMagic(t));
  return f(e + TWO23) - TWO23;
}

/** 2^x for x <= 0 (the kernel's exp2s). */
export function exp2sRef(x: number): number {
  if (!(x >= -126)) return Number.isNaN(x) ? x : 0;
  const t = f(x + EXP_MAGIC);
  const n = f(t - EXP_MAGIC);
  const r = f(x - n);
  let p = f(f(E6 * r) + E5);
  p = f(f(p * r) + E4);
  p = f(f(p * r) + E3);
  p = f(f(p * r) + E2);
  p = f(f(p * r) + E1);
  p = f(f(p * r) + 1);
  return f(p * pow2FromMagic(t));
}

/** Per-channel mean over rows (f32 sum in row order, then / L). x: rows of ld values starting at off. */
function channelMeans(x: ArrayLike<number>, off: number, ld: number, L: number, D: number): Float32Array {
  const m = new Float32Array(D);
  for (let d = 0; d < D; d++) {
    let s = 0;
    for (let j = 0; j < L; j++) s = f(s + x[off + j * ld + d]);
    m[d] = f(s / L);
  }
  return m;
}

/**
 * INT8 attention of q [B,Lq,H*D], k and v [B,Lk,H*D] (heads interleaved), scale default 1/sqrt(D):
 * the kernel's result, bit for bit.
 */
export function attentionInt8Ref(
  q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>,
  B: number, Lq: number, Lk: number, H: number, D: number, scheme: Int8AttentionScheme, scale = 1 / Math.sqrt(D),
): Float32Array {
  const { qmax, pmax, kmax } = int8AttentionRanges(scheme);
  const HD = H * D;
  const BK = attInt8KeysPerTile(D);
  const qscale = f(f(scale) * LOG2E);
  const out = new Float32Array(B * Lq * HD);
  const kq = new Int32Array(Lk * D), ks = new Float32Array(Lk);
  const vq = new Int32Array(Lk * D), vs = new Float32Array(D);
  const qq = new Int32Array(D);
  const s = new Float32Array(BK), p = new Int32Array(BK);
  const acc = new Float32Array(D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const kOff = b * Lk * HD + h * D;
      // K: smoothed by its channel means, per-key scales
      const mk = channelMeans(k, kOff, HD, Lk, D);
      for (let j = 0; j < Lk; j++) {
        let amax = 0;
        const x = new Float32Array(D);
        for (let d = 0; d < D; d++) {
          x[d] = f(k[kOff + j * HD + d] - mk[d]);
          amax = Math.max(amax, Math.abs(x[d]));
        }
        ks[j] = f(amax / kmax);
        const inv = amax > 0 ? f(kmax / amax) : 0;
        for (let d = 0; d < D; d++) kq[j * D + d] = clamp(rne(f(x[d] * inv)), kmax);
      }
      // V: smoothed, per-channel scales
      const mv = channelMeans(v, kOff, HD, Lk, D);
      const vInv = new Float32Array(D);
      for (let d = 0; d < D; d++) {
        let amax = 0;
        for (let j = 0; j < Lk; j++) amax = Math.max(amax, Math.abs(f(v[kOff + j * HD + d] - mv[d])));
        vs[d] = f(amax / kmax);
        vInv[d] = amax > 0 ? f(kmax / amax) : 0;
      }
      for (let j = 0; j < Lk; j++) for (let d = 0; d < D; d++) vq[j * D + d] = clamp(rne(f(f(v[kOff + j * HD + d] - mv[d]) * vInv[d])), kmax);

      for (let i = 0; i < Lq; i++) {
        const qOff = b * Lq * HD + i * HD + h * D;
        let amax = 0;
        for (let d = 0; d < D; d++) amax = Math.max(amax, Math.abs(q[qOff + d]));
        const inv = amax > 0 ? f(qmax / amax) : 0;
        const rs = f(f(amax / qmax) * qscale);
        for (let d = 0; d < D; d++) qq[d] = clamp(rne(f(q[qOff + d] * inv)), qmax);
        let m = -Infinity, l = 0;
        acc.fill(0);
        for (let kBeg = 0; kBeg < Lk; kBeg += BK) {
          const nk = Math.min(BK, Lk - kBeg);
          let mt = -Infinity;
          for (let j = 0; j < nk; j++) {
            let dot = 0;
            for (let d = 0; d < D; d++) dot += qq[d] * kq[(kBeg + j) * D + d];
            s[j] = f(f(dot * ks[kBeg + j]) * rs);
            mt = Math.max(mt, s[j]);
          }
          let psum = 0;
          for (let j = 0; j < nk; j++) {
            p[j] = expQRef(f(s[j] - mt), pmax);
            psum += p[j];
          }
          const mNew = Math.max(m, mt);
          const alpha = exp2sRef(f(m - mNew));
          const beta = exp2sRef(f(mt - mNew));
          m = mNew;
          l = f(f(l * alpha) + f(psum * beta));
          for (let d = 0; d < D; d++) {
            let pv = 0;
            for (let j = 0; j < nk; j++) pv += p[j] * vq[(kBeg + j) * D + d];
            acc[d] = f(f(acc[d] * alpha) + f(pv * beta));
          }
        }
        const il = f(1 / l);
        for (let d = 0; d < D; d++) out[qOff + d] = f(f(f(acc[d] * vs[d]) * il) + mv[d]);
      }
    }
  return out;
}
