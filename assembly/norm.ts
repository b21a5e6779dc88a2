// Normalisation kernels: GroupNorm (NHWC, two-pass, channel-parallel) and LayerNorm (last dim).
//
// GroupNorm on x [B, HW, C] with G groups of C/G channels, three kernel calls:
//   1. groupnorm_stats_f32: the spatial axis is cut into fixed tiles (gnTileLen positions); each
//      (batch, tile) unit sums, per channel, d = x - shift and d^2 in f64 (shift = the channel's value
//      at position 0, so large means cost no precision), 4 channels per vector, walking positions with
//      stride C. Partial sums go to part [B, nTiles, 2, C] (f64). Units are split across threads, but
//      the tiles themselves do not depend on the thread count.
//   2. groupnorm_finalize_f32: per (batch, group): adds the tiles in order, turns each channel's sums
//      into its mean and M2, merges the channels of the group (Chan et al.) into mean and variance
//      (never negative), and writes per-channel coefficients coef [B, 3, C] = (S, A, Bc) with
//      S = f32(mean), A = gamma * rstd, Bc = beta - (mean - S) * A, so that pass 3 computes
//      y = (x - S) * A + Bc. (Folding all of mean into Bc would cancel catastrophically when
//      |mean| >> std, e.g. 1000 + noise; x - S is exact there.) Optionally writes mean/rstd [B, G].
//   3. groupnorm_apply_f32: threads split positions; y = (x - S) * A + Bc, optional fused SiLU.
import { splitStart, splitEnd, madd, silu4, hsum } from "./math";
import { gnTileLen, gnTiles } from "./tiling";

/** gnTiles, exported so test/abi.test.ts can compare it with the TypeScript side. */
export function abi_gn_tiles(HW: i32): i32 {
  return gnTiles(HW);
}

export function groupnorm_stats_f32(tid: i32, nt: i32, x: usize, part: usize, B: i32, HW: i32, C: i32): void {
  const nT = gnTiles(HW);
  const tileLen = gnTileLen(HW);
  const units = B * nT;
  const u0 = splitStart(units, tid, nt);
  const u1 = splitEnd(units, tid, nt);
  const rowBytes = usize(C) << 2;
  for (let u = u0; u < u1; u++) {
    const b = u / nT;
    const t = u - b * nT;
    const pBeg = t * tileLen;
    const pEnd = min(HW, pBeg + tileLen);
    const xb = x + usize(b) * usize(HW) * rowBytes; // position 0 of batch b: the shifts
    const ps = part + ((usize(u) * 2 * usize(C)) << 3); // sums of d
    const pq = ps + (usize(C) << 3); // sums of d^2
    let c = 0;
    // 8 channels at a time: 2 f32 vectors -> 4 f64x2 sums and 4 f64x2 square sums
    for (; c + 8 <= C; c += 8) {
      const co = usize(c) << 2;
      const sh0 = v128.load(xb + co);
      const sh1 = v128.load(xb + co + 16);
      let s0 = f64x2.splat(0), s1 = f64x2.splat(0), s2 = f64x2.splat(0), s3 = f64x2.splat(0);
      let q0 = f64x2.splat(0), q1 = f64x2.splat(0), q2 = f64x2.splat(0), q3 = f64x2.splat(0);
      let px = xb + usize(pBeg) * rowBytes + co;
      for (let p = pBeg; p < pEnd; p++) {
        const d0 = f32x4.sub(v128.load(px), sh0);
        const d1 = f32x4.sub(v128.load(px, 16), sh1);
        const e0 = f64x2.promote_low_f32x4(d0);
        const e1 = f64x2.promote_low_f32x4(i32x4.shuffle(d0, d0, 2, 3, 2, 3));
        const e2 = f64x2.promote_low_f32x4(d1);
        const e3 = f64x2.promote_low_f32x4(i32x4.shuffle(d1, d1, 2, 3, 2, 3));
        s0 = f64x2.add(s0, e0);
        s1 = f64x2.add(s1, e1);
        s2 = f64x2.add(s2, e2);
        s3 = f64x2.add(s3, e3);
        q0 = f64x2.add(q0, f64x2.mul(e0, e0));
        q1 = f64x2.add(q1, f64x2.mul(e1, e1));
        q2 = f64x2.add(q2, f64x2.mul(e2, e2));
        q3 = f64x2.add(q3, f64x2.mul(e3, e3));
        px += rowBytes;
      }
      const o = usize(c) << 3;
      v128.store(ps + o, s0);
      v128.store(ps + o, s1, 16);
      v128.store(ps + o, s2, 32);
      v128.store(ps + o, s3, 48);
      v128.store(pq + o, q0);
      v128.store(pq + o, q1, 16);
      v128.store(pq + o, q2, 32);
      v128.store(pq + o, q3, 48);
    }
    for (; c + 4 <= C; c += 4) {
      const co = usize(c) << 2;
      const sh0 = v128.load(xb + co);
      let s0 = f64x2.splat(0), s1 = f64x2.splat(0);
      let q0 = f64x2.splat(0), q1 = f64x2.splat(0);
      let px = xb + usize(pBeg) * rowBytes + co;
      for (let p = pBeg; p < pEnd; p++) {
        const d0 = f32x4.sub(v128.load(px), sh0);
        const e0 = f64x2.promote_low_f32x4(d0);
        const e1 = f64x2.promote_low_f32x4(i32x4.shuffle(d0, d0, 2, 3, 2, 3));
        s0 = f64x2.add(s0, e0);
        s1 = f64x2.add(s1, e1);
        q0 = f64x2.add(q0, f64x2.mul(e0, e0));
        q1 = f64x2.add(q1, f64x2.mul(e1, e1));
        px += rowBytes;
      }
      const o = usize(c) << 3;
      v128.store(ps + o, s0);
      v128.store(ps + o, s1, 16);
      v128.store(pq + o, q0);
      v128.store(pq + o, q1, 16);
    }
    for (; c < C; c++) {
      const co = usize(c) << 2;
      const sh = load<f32>(xb + co);
      let s: f64 = 0, q: f64 = 0;
      let px = xb + usize(pBeg) * rowBytes + co;
      for (let p = pBeg; p < pEnd; p++) {
        const d = f64(load<f32>(px) - sh);
        s += d;
        q += d * d;
        px += rowBytes;
      }
      store<f64>(ps + (usize(c) << 3), s);
      store<f64>(pq + (usize(c) << 3), q);
    }
  }
}

export function groupnorm_finalize_f32(
  tid: i32, nt: i32, x: usize, part: usize, gamma: usize, beta: usize, coef: usize,
  meanOut: usize, rstdOut: usize, B: i32, HW: i32, C: i32, G: i32, eps: f32,
): void {
  const nT = gnTiles(HW);
  const cpg = C / G;
  const units = B * G;
  const u0 = splitStart(units, tid, nt);
  const u1 = splitEnd(units, tid, nt);
  const n = f64(HW);
  const rowBytes = usize(C) << 2;
  for (let u = u0; u < u1; u++) {
    const b = u / G;
    const g = u - b * G;
    const xb = x + usize(b) * usize(HW) * rowBytes;
    const c0 = g * cpg;
    const ref = f64(load<f32>(xb + (usize(c0) << 2)));
    // pass a: each channel's mean offset (relative to ref) and M2; group mean offset
    let sumOff: f64 = 0;
    let m2: f64 = 0;
    for (let c = c0; c < c0 + cpg; c++) {
      let sd: f64 = 0, sq: f64 = 0;
      for (let t = 0; t < nT; t++) {
        const ps = part + (((usize(b) * usize(nT) + usize(t)) * 2 * usize(C) + usize(c)) << 3);
        sd += load<f64>(ps);
        sq += load<f64>(ps + (usize(C) << 3));
      }
      const mc = sd / n;
      m2 += max<f64>(0, sq - sd * mc);
      sumOff += (f64(load<f32>(xb + (usize(c) << 2))) - ref) + mc;
    }
    const gOff = sumOff / f64(cpg);
    // pass b: between-channel part of M2 (recomputes the cheap per-channel means)
    for (let c = c0; c < c0 + cpg; c++) {
      let sd: f64 = 0;
      for (let t = 0; t < nT; t++) {
        sd += load<f64>(part + (((usize(b) * usize(nT) + usize(t)) * 2 * usize(C) + usize(c)) << 3));
      }
      const dm = (f64(load<f32>(xb + (usize(c) << 2))) - ref) + sd / n - gOff;
      m2 += n * dm * dm;
    }
    const variance = m2 / (n * f64(cpg));
    const mean = ref + gOff;
    const rstd = 1.0 / Math.sqrt(variance + f64(eps));
    const S = f32(mean);
    const resid = mean - f64(S);
    const cb = coef + ((usize(b) * 3 * usize(C)) << 2);
    for (let c = c0; c < c0 + cpg; c++) {
      const co = usize(c) << 2;
      const A = f64(load<f32>(gamma + co)) * rstd;
      store<f32>(cb + co, S);
      store<f32>(cb + rowBytes + co, f32(A));
      store<f32>(cb + 2 * rowBytes + co, f32(f64(load<f32>(beta + co)) - resid * A));
    }
    if (meanOut) store<f32>(meanOut + (usize(u) << 2), S);
    if (rstdOut) store<f32>(rstdOut + (usize(u) << 2), f32(rstd));
  }
}

export function groupnorm_apply_f32(tid: i32, nt: i32, x: usize, coef: usize, out: usize, B: i32, HW: i32, C: i32, silu: i32): void {
  const rows = B * HW;
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitEnd(rows, tid, nt);
  const rowBytes = usize(C) << 2;
  for (let r = r0; r < r1; r++) {
    const b = r / HW;
    const cS = coef + usize(b) * 3 * rowBytes;
    const cA = cS + rowBytes;
    const cB = cA + rowBytes;
    const px = x + usize(r) * rowBytes;
    const po = out + usize(r) * rowBytes;
    let c = 0;
    if (silu) {
      for (; c + 4 <= C; c += 4) {
        const o = usize(c) << 2;
        const y = madd(f32x4.sub(v128.load(px + o), v128.load(cS + o)), v128.load(cA + o), v128.load(cB + o));
        v128.store(po + o, silu4(y));
      }
    } else {
      for (; c + 4 <= C; c += 4) {
        const o = usize(c) << 2;
        const y = madd(f32x4.sub(v128.load(px + o), v128.load(cS + o)), v128.load(cA + o), v128.load(cB + o));
        v128.store(po + o, y);
      }
    }
    for (; c < C; c++) {
      const o = usize(c) << 2;
      let y = madd(
        f32x4.splat(load<f32>(px + o) - load<f32>(cS + o)),
        f32x4.splat(load<f32>(cA + o)),
        f32x4.splat(load<f32>(cB + o)),
      );
      if (silu) y = silu4(y);
      store<f32>(po + o, f32x4.extract_lane(y, 0));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dim C of x [rows, C]; threads split rows. Per row, all in L1: mean of
// d = x - x[0] (shifted, so a large common offset costs nothing), then the two-pass variance
// sum((d - md)^2) / C (never negative), then y = (d - md) * (rstd * gamma) + beta.
// meanOut / rstdOut ([rows], optional: 0 = skip) keep the statistics for a backward pass.

export function layernorm_f32(
  tid: i32, nt: i32, x: usize, gamma: usize, beta: usize, out: usize,
  rows: i32, C: i32, eps: f32, meanOut: usize, rstdOut: usize,
): void {
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitEnd(rows, tid, nt);
  const rowBytes = usize(C) << 2;
  const invC = f32(1.0) / f32(C);
  for (let r = r0; r < r1; r++) {
    const px = x + usize(r) * rowBytes;
    const po = out + usize(r) * rowBytes;
    const sh = load<f32>(px);
    const shv = f32x4.splat(sh);
    // mean of d
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
    let c = 0;
    for (; c + 8 <= C; c += 8) {
      const o = usize(c) << 2;
      a0 = f32x4.add(a0, f32x4.sub(v128.load(px + o), shv));
      a1 = f32x4.add(a1, f32x4.sub(v128.load(px + o, 16), shv));
    }
    for (; c + 4 <= C; c += 4) {
      a0 = f32x4.add(a0, f32x4.sub(v128.load(px + (usize(c) << 2)), shv));
    }
    let sum = hsum(f32x4.add(a0, a1));
    for (; c < C; c++) sum += load<f32>(px + (usize(c) << 2)) - sh;
    const md = sum * invC;
    const mdv = f32x4.splat(md);
    // variance
    a0 = f32x4.splat(0);
    a1 = f32x4.splat(0);
    c = 0;
    for (; c + 8 <= C; c += 8) {
      const o = usize(c) << 2;
      const d0 = f32x4.sub(f32x4.sub(v128.load(px + o), shv), mdv);
      const d1 = f32x4.sub(f32x4.sub(v128.load(px + o, 16), shv), mdv);
      a0 = madd(d0, d0, a0);
      a1 = madd(d1, d1, a1);
    }
    for (; c + 4 <= C; c += 4) {
      const d0 = f32x4.sub(f32x4.sub(v128.load(px + (usize(c) << 2)), shv), mdv);
      a0 = madd(d0, d0, a0);
    }
    let ss = hsum(f32x4.add(a0, a1));
    for (; c < C; c++) {
      const d = (load<f32>(px + (usize(c) << 2)) - sh) - md;
      ss += d * d;
    }
    const rstd = f32(1.0 / Math.sqrt(f64(ss * invC) + f64(eps)));
    const rv = f32x4.splat(rstd);
    c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = usize(c) << 2;
      const d = f32x4.sub(f32x4.sub(v128.load(px + o), shv), mdv);
      v128.store(po + o, madd(d, f32x4.mul(rv, v128.load(gamma + o)), v128.load(beta + o)));
    }
    for (; c < C; c++) {
      const o = usize(c) << 2;
      const d = (load<f32>(px + o) - sh) - md;
      const y = madd(f32x4.splat(d), f32x4.splat(rstd * load<f32>(gamma + o)), f32x4.splat(load<f32>(beta + o)));
      store<f32>(po + o, f32x4.extract_lane(y, 0));
    }
    if (meanOut) store<f32>(meanOut + (usize(r) << 2), sh + md);
    if (rstdOut) store<f32>(rstdOut + (usize(r) << 2), rstd);
  }
}
