// Backward of the normalisation kernels in norm.ts.
//
// GroupNorm (NHWC x [B, HW, C], G groups of cpg = C/G channels), from the forward's saved per-(batch,
// group) mean and rstd [B, G]: with xh = (x - mean) rstd, y = xh gamma + beta (and z = silu(y) when
// fused, whose gradient dz gives dy = dz silu'(y), y recomputed from x),
//   dBeta[c] = sum_{b,p} dy,   dGamma[c] = sum_{b,p} dy xh,
//   dx = rstd (gamma dy - a - xh m),  a = mean over the group of gamma dy,  m = mean of gamma dy xh.
// Three kernel calls, shaped like the forward:
//   1. groupnorm_backward_stats_f32: the spatial axis is cut into the forward's tiles (gnTileLen
//      positions, independent of the thread count); each (batch, tile) unit sums, per channel, dy and
//      dy xh (f32 within the tile), into part [B, nTiles, 2, C] (f32). With SiLU fused it also writes
//      dy = dz silu'(y) to gout (x's shape; dx's buffer works), so pass 3 runs without SiLU on it and
//      the sigmoid is computed once per element.
//   2. groupnorm_backward_finalize_f32: per group (all batches): adds the tiles in order in f64, gives
//      dGamma/dBeta of the group's channels (batches added in order) and per-channel coefficients
//      coef [B, 4, C] = (mean, rstd gamma, -rstd^2 m, -rstd a).
//   3. groupnorm_backward_apply_f32: threads split positions; dx = dy (rstd gamma) + (x - mean)(-rstd^2 m)
//      + (-rstd a) (dy may be dx itself: each element is read before it is written, by the same thread).
//
// LayerNorm (x [rows, C], saved mean/rstd [rows]): per row, dx = rstd (dxh - mean(dxh) - xh mean(dxh xh)),
// dxh = dy gamma; dGamma/dBeta sum over rows: rows are cut into fixed blocks (lnBlockRows, independent of
// the thread count) whose partial sums go to part [nBlocks, 2, C], then added in block order.
import { splitStart, splitEnd, madd, hsum } from "./math";
import { siluGrad4 } from "./grad_math";
import { gnTileLen, gnTiles, lnBlockRows } from "./tiling";

/** A vector of 4 per-channel values of a per-(batch, group) array v [B, G] for channels c..c+3. */
@inline function groupVec4(v: usize, b: i32, c: i32, cpg: i32, G: i32): v128 {
  const base = v + ((usize(b) * usize(G)) << 2);
  let r = f32x4.splat(load<f32>(base + (usize(c / cpg) << 2)));
  r = f32x4.replace_lane(r, 1, load<f32>(base + (usize((c + 1) / cpg) << 2)));
  r = f32x4.replace_lane(r, 2, load<f32>(base + (usize((c + 2) / cpg) << 2)));
  r = f32x4.replace_lane(r, 3, load<f32>(base + (usize((c + 3) / cpg) << 2)));
  return r;
}

export function groupnorm_backward_stats_f32(
  tid: i32, nt: i32, x: usize, dy: usize, mean: usize, rstd: usize, gamma: usize, beta: usize, part: usize,
  B: i32, HW: i32, C: i32, G: i32, silu: i32, gout: usize,
): void {
  const nT = gnTiles(HW);
  const tileLen = gnTileLen(HW);
  const cpg = C / G;
  const units = B * nT;
  const u0 = splitStart(units, tid, nt);
  const u1 = splitEnd(units, tid, nt);
  const rowBytes = usize(C) << 2;
  for (let u = u0; u < u1; u++) {
    const b = u / nT;
    const t = u - b * nT;
    const pBeg = t * tileLen;
    const pEnd = min(HW, pBeg + tileLen);
    const off0 = (usize(b) * usize(HW) + usize(pBeg)) * rowBytes;
    const ps = part + ((usize(u) * 2 * usize(C)) << 2); // sums of dy
    const pq = ps + rowBytes; // sums of dy xh
    let c = 0;
    for (; c + 8 <= C; c += 8) {
      const co = usize(c) << 2;
      const m0 = groupVec4(mean, b, c, cpg, G), m1 = groupVec4(mean, b, c + 4, cpg, G);
      const r0 = groupVec4(rstd, b, c, cpg, G), r1 = groupVec4(rstd, b, c + 4, cpg, G);
      let s0 = f32x4.splat(0), s1 = s0, q0 = s0, q1 = s0;
      let px = x + off0 + co;
      let pd = dy + off0 + co;
      let pg = gout + off0 + co;
      if (silu) {
        const g0 = v128.load(gamma + co), g1 = v128.load(gamma + co, 16);
        const a0 = f32x4.mul(r0, g0), a1 = f32x4.mul(r1, g1);
        const be0 = v128.load(beta + co), be1 = v128.load(beta + co, 16);
        for (let p = pBeg; p < pEnd; p++) {
          const d0 = f32x4.sub(v128.load(px), m0);
          const d1 = f32x4.sub(v128.load(px, 16), m1);
          const g0v = f32x4.mul(v128.load(pd), siluGrad4(madd(d0, a0, be0)));
          const g1v = f32x4.mul(v128.load(pd, 16), siluGrad4(madd(d1, a1, be1)));
          v128.store(pg, g0v);
          v128.store(pg, g1v, 16);
          s0 = f32x4.add(s0, g0v);
          s1 = f32x4.add(s1, g1v);
          q0 = madd(g0v, f32x4.mul(d0, r0), q0);
          q1 = madd(g1v, f32x4.mul(d1, r1), q1);
          px += rowBytes;
          pd += rowBytes;
          pg += rowBytes;
        }
      } else {
        for (let p = pBeg; p < pEnd; p++) {
          const g0v = v128.load(pd);
          const g1v = v128.load(pd, 16);
          s0 = f32x4.add(s0, g0v);
          s1 = f32x4.add(s1, g1v);
          q0 = madd(g0v, f32x4.mul(f32x4.sub(v128.load(px), m0), r0), q0);
          q1 = madd(g1v, f32x4.mul(f32x4.sub(v128.load(px, 16), m1), r1), q1);
          px += rowBytes;
          pd += rowBytes;
        }
      }
      v128.store(ps + co, s0);
      v128.store(ps + co, s1, 16);
      v128.store(pq + co, q0);
      v128.store(pq + co, q1, 16);
    }
    // remaining channels one at a time (lane 0 of the same vector arithmetic)
    for (; c < C; c++) {
      const co = usize(c) << 2;
      const mv = f32x4.splat(load<f32>(mean + ((usize(b) * usize(G) + usize(c / cpg)) << 2)));
      const rv = f32x4.splat(load<f32>(rstd + ((usize(b) * usize(G) + usize(c / cpg)) << 2)));
      const av = f32x4.mul(rv, f32x4.splat(load<f32>(gamma + co)));
      const bv = f32x4.splat(load<f32>(beta + co));
      let s0 = f32x4.splat(0), q0 = s0;
      let px = x + off0 + co;
      let pd = dy + off0 + co;
      let pg = gout + off0 + co;
      for (let p = pBeg; p < pEnd; p++) {
        const d0 = f32x4.sub(f32x4.splat(load<f32>(px)), mv);
        let g0v = f32x4.splat(load<f32>(pd));
        if (silu) {
          g0v = f32x4.mul(g0v, siluGrad4(madd(d0, av, bv)));
          store<f32>(pg, f32x4.extract_lane(g0v, 0));
        }
        s0 = f32x4.add(s0, g0v);
        q0 = madd(g0v, f32x4.mul(d0, rv), q0);
        px += rowBytes;
        pd += rowBytes;
        pg += rowBytes;
      }
      store<f32>(ps + co, f32x4.extract_lane(s0, 0));
      store<f32>(pq + co, f32x4.extract_lane(q0, 0));
    }
  }
}

export function groupnorm_backward_finalize_f32(
  tid: i32, nt: i32, part: usize, mean: usize, rstd: usize, gamma: usize, coef: usize,
  dGamma: usize, dBeta: usize, B: i32, HW: i32, C: i32, G: i32,
): void {
  const nT = gnTiles(HW);
  const cpg = C / G;
  const g0 = splitStart(G, tid, nt);
  const g1 = splitEnd(G, tid, nt);
  const rowBytes = usize(C) << 2;
  const invN = 1.0 / (f64(HW) * f64(cpg));
  for (let g = g0; g < g1; g++) {
    const c0 = g * cpg;
    for (let b = 0; b < B; b++) {
      let ga: f64 = 0, gm: f64 = 0;
      for (let c = c0; c < c0 + cpg; c++) {
        let sd: f64 = 0, sq: f64 = 0;
        for (let t = 0; t < nT; t++) {
          const ps = part + ((usize(b) * usize(nT) + usize(t)) * 2 * rowBytes) + (usize(c) << 2);
          sd += f64(load<f32>(ps));
          sq += f64(load<f32>(ps + rowBytes));
        }
        const gm_c = f64(load<f32>(gamma + (usize(c) << 2)));
        ga += gm_c * sd;
        gm += gm_c * sq;
      }
      const r = f64(load<f32>(rstd + ((usize(b) * usize(G) + usize(g)) << 2)));
      const S = load<f32>(mean + ((usize(b) * usize(G) + usize(g)) << 2));
      const kx = f32(-r * r * gm * invN);
      const k0 = f32(-r * ga * invN);
      const cb = coef + usize(b) * 4 * rowBytes;
      for (let c = c0; c < c0 + cpg; c++) {
        const co = usize(c) << 2;
        store<f32>(cb + co, S);
        store<f32>(cb + rowBytes + co, f32(r) * load<f32>(gamma + co));
        store<f32>(cb + 2 * rowBytes + co, kx);
        store<f32>(cb + 3 * rowBytes + co, k0);
      }
    }
    for (let c = c0; c < c0 + cpg; c++) {
      let sd: f64 = 0, sq: f64 = 0;
      for (let b = 0; b < B; b++) {
        let bd: f64 = 0, bq: f64 = 0;
        for (let t = 0; t < nT; t++) {
          const ps = part + ((usize(b) * usize(nT) + usize(t)) * 2 * rowBytes) + (usize(c) << 2);
          bd += f64(load<f32>(ps));
          bq += f64(load<f32>(ps + rowBytes));
        }
        sd += bd;
        sq += bq;
      }
      store<f32>(dBeta + (usize(c) << 2), f32(sd));
      store<f32>(dGamma + (usize(c) << 2), f32(sq));
    }
  }
}

export function groupnorm_backward_apply_f32(
  tid: i32, nt: i32, x: usize, dy: usize, coef: usize, dx: usize, B: i32, HW: i32, C: i32,
): void {
  const rows = B * HW;
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitEnd(rows, tid, nt);
  const rowBytes = usize(C) << 2;
  for (let r = r0; r < r1; r++) {
    const b = r / HW;
    const cS = coef + usize(b) * 4 * rowBytes;
    const cA = cS + rowBytes;
    const cX = cA + rowBytes;
    const c0 = cX + rowBytes;
    const px = x + usize(r) * rowBytes;
    const pd = dy + usize(r) * rowBytes;
    const po = dx + usize(r) * rowBytes;
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = usize(c) << 2;
      const d = f32x4.sub(v128.load(px + o), v128.load(cS + o));
      v128.store(po + o, madd(v128.load(pd + o), v128.load(cA + o), madd(d, v128.load(cX + o), v128.load(c0 + o))));
    }
    for (; c < C; c++) {
      const o = usize(c) << 2;
      const d = f32x4.splat(load<f32>(px + o) - load<f32>(cS + o));
      const v = madd(f32x4.splat(load<f32>(pd + o)), f32x4.splat(load<f32>(cA + o)), madd(d, f32x4.splat(load<f32>(cX + o)), f32x4.splat(load<f32>(c0 + o))));
      store<f32>(po + o, f32x4.extract_lane(v, 0));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm backward

/** lnBlockRows, exported so test/abi.test.ts can compare it with the TypeScript side. */
export function abi_ln_block_rows(rows: i32): i32 {
  return lnBlockRows(rows);
}

export function layernorm_backward_f32(
  tid: i32, nt: i32, x: usize, dy: usize, mean: usize, rstd: usize, gamma: usize, dx: usize, part: usize, rows: i32, C: i32,
): void {
  const per = lnBlockRows(rows);
  const nBlk = (rows + per - 1) / per;
  const u0 = splitStart(nBlk, tid, nt);
  const u1 = splitEnd(nBlk, tid, nt);
  const rowBytes = usize(C) << 2;
  const invC = f32(1.0) / f32(C);
  const C4 = C & ~3;
  for (let u = u0; u < u1; u++) {
    const pb = part + usize(u) * 2 * rowBytes; // sums of dy
    const pq = pb + rowBytes; // sums of dy xh
    for (let c = 0; c < C; c++) {
      store<f32>(pb + (usize(c) << 2), 0);
      store<f32>(pq + (usize(c) << 2), 0);
    }
    const rEnd = min(rows, (u + 1) * per);
    for (let r = u * per; r < rEnd; r++) {
      const px = x + usize(r) * rowBytes;
      const pd = dy + usize(r) * rowBytes;
      const po = dx + usize(r) * rowBytes;
      const mv = f32x4.splat(load<f32>(mean + (usize(r) << 2)));
      const rs = load<f32>(rstd + (usize(r) << 2));
      const rv = f32x4.splat(rs);
      // pass 1: sums of dxh and dxh xh; the block's dGamma/dBeta partials
      let a0 = f32x4.splat(0), a1 = a0, b0 = a0, b1 = a0;
      let c = 0;
      for (; c + 8 <= C; c += 8) {
        const o = usize(c) << 2;
        const d0 = v128.load(pd + o), d1 = v128.load(pd + o, 16);
        const h0 = f32x4.mul(f32x4.sub(v128.load(px + o), mv), rv);
        const h1 = f32x4.mul(f32x4.sub(v128.load(px + o, 16), mv), rv);
        const e0 = f32x4.mul(d0, v128.load(gamma + o));
        const e1 = f32x4.mul(d1, v128.load(gamma + o, 16));
        a0 = f32x4.add(a0, e0);
        a1 = f32x4.add(a1, e1);
        b0 = madd(e0, h0, b0);
        b1 = madd(e1, h1, b1);
        v128.store(pb + o, f32x4.add(v128.load(pb + o), d0));
        v128.store(pb + o, f32x4.add(v128.load(pb + o, 16), d1), 16);
        v128.store(pq + o, madd(d0, h0, v128.load(pq + o)));
        v128.store(pq + o, madd(d1, h1, v128.load(pq + o, 16)), 16);
      }
      for (; c + 4 <= C; c += 4) {
        const o = usize(c) << 2;
        const d0 = v128.load(pd + o);
        const h0 = f32x4.mul(f32x4.sub(v128.load(px + o), mv), rv);
        const e0 = f32x4.mul(d0, v128.load(gamma + o));
        a0 = f32x4.add(a0, e0);
        b0 = madd(e0, h0, b0);
        v128.store(pb + o, f32x4.add(v128.load(pb + o), d0));
        v128.store(pq + o, madd(d0, h0, v128.load(pq + o)));
      }
      let sa = hsum(f32x4.add(a0, a1));
      let sb = hsum(f32x4.add(b0, b1));
      for (; c < C; c++) {
        const o = usize(c) << 2;
        const d0 = f32x4.splat(load<f32>(pd + o));
        const h0 = f32x4.mul(f32x4.sub(f32x4.splat(load<f32>(px + o)), mv), rv);
        const e0 = f32x4.mul(d0, f32x4.splat(load<f32>(gamma + o)));
        sa += f32x4.extract_lane(e0, 0);
        sb += f32x4.extract_lane(f32x4.mul(e0, h0), 0);
        store<f32>(pb + o, load<f32>(pb + o) + f32x4.extract_lane(d0, 0));
        store<f32>(pq + o, f32x4.extract_lane(madd(d0, h0, f32x4.splat(load<f32>(pq + o))), 0));
      }
      // pass 2: dx = rstd dxh - rstd mean(dxh) - xh rstd mean(dxh xh)
      //        = dy (rstd gamma) + (x - mean) k1 + k0,  k1 = -rstd^2 mean(dxh xh), k0 = -rstd mean(dxh)
      const k1 = f32x4.splat(-rs * rs * sb * invC);
      const k0 = f32x4.splat(-rs * sa * invC);
      c = 0;
      for (; c < C4; c += 4) {
        const o = usize(c) << 2;
        const d = f32x4.sub(v128.load(px + o), mv);
        v128.store(po + o, madd(v128.load(pd + o), f32x4.mul(rv, v128.load(gamma + o)), madd(d, k1, k0)));
      }
      for (; c < C; c++) {
        const o = usize(c) << 2;
        const d = f32x4.sub(f32x4.splat(load<f32>(px + o)), mv);
        const v = madd(f32x4.splat(load<f32>(pd + o)), f32x4.mul(rv, f32x4.splat(load<f32>(gamma + o))), madd(d, k1, k0));
        store<f32>(po + o, f32x4.extract_lane(v, 0));
      }
    }
  }
}

/** dBeta[c] = sum of the blocks' dy sums, dGamma[c] of their dy xh sums, blocks in order (f64). Threads split channels. */
export function layernorm_backward_reduce_f32(tid: i32, nt: i32, part: usize, dGamma: usize, dBeta: usize, rows: i32, C: i32): void {
  const per = lnBlockRows(rows);
  const nBlk = (rows + per - 1) / per;
  const c0 = splitStart(C, tid, nt);
  const c1 = splitEnd(C, tid, nt);
  const rowBytes = usize(C) << 2;
  for (let c = c0; c < c1; c++) {
    let sd: f64 = 0, sq: f64 = 0;
    let p = part + (usize(c) << 2);
    for (let u = 0; u < nBlk; u++) {
      sd += f64(load<f32>(p));
      sq += f64(load<f32>(p + rowBytes));
      p += 2 * rowBytes;
    }
    store<f32>(dBeta + (usize(c) << 2), f32(sd));
    store<f32>(dGamma + (usize(c) << 2), f32(sq));
  }
}
