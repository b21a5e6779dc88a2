// Fake quantisation for quantisation-aware training, at the numerics of the INT8 inference path
// (src/nn/quant.ts, assembly/quantize.ts, assembly/gemm_int8.ts):
//   weights, per output channel n, symmetric:  q = clamp(nearest(f32(w / s[n])), -wq, wq)
//     (wq = the weights' range: 127 for int8 weights, 63 for the 7-bit weights paired with 8-bit activations)
//   activations, per tensor, asymmetric:       q = clamp(nearest(f32(x * invScale)) + zp, 0, qmax)
// (nearest = round half to even; a NaN activation quantises to zp, as quantize_act_u8.)
// The student's forward runs the engine's own INT8 kernels on weights quantised and packed here
// (quantize_weight_i8_packed), so it is bit-identical to inference; the dequantised values (q * s,
// (q - zp) * scale) feed the backward GEMMs. Backward: the straight-through estimator masked to the clamp
// range (the gradient passes where the rounded value before clamping lies in [qmin, qmax]) plus the sums
// LSQ / LSQ+ need for learned scales:
//   d xhat / d s    = (q_clamped - z) - v   inside (v = x / s as the quantiser computes it, z = zero point),
//                     q_clamped - z         outside (the clamp bound: qmin - z below, qmax - z above)
//   d xhat / d beta = 0 inside, 1 outside   (LSQ+ offset, xhat = s * clamp(round((x - beta) / s)) + beta)
// Every sum has a fixed order that does not depend on the thread count: per weight channel over its K
// values, per activation chunk of a caller-given size (the caller adds the chunk partials in order).
import { splitStart } from "./math";

// @ts-nocheck (AssemblyScript)

/**
 * Quantises a torch-layout f32 weight w [N, Cin, taps] (linear: taps = 1) with the per-channel scales
 * s [N] and packs it for the INT8 kernels exactly as src/nn/int8.ts prepares it: K = taps * Cp in
 * (tap, ci) order with Cp >= Cin a multiple of 4 (channels ci >= Cin zero), panels of 8 channels (channels
 * past N zero), relaxed-dot layout or, kPairs != 0, the i16 path's k-pair layout (see
 * assembly/gemm_int8.ts). Also writes wsum[n] = sum_k q (i32) and, if wdq != 0, the dequantised weights
 * wdq [N, Cin, taps] = f32(q) * s[n] (f32 multiply). q = clamp(nearest(f32(w / s)), -wqmax, wqmax) (127: int8
 * weights, 63: 7-bit weights), NaN -> 0.
 * Each channel runs by k-groups of 4 input channels of one tap (one group of the packed layout: 4 bytes,
 * or 2 x 2 bytes in the k-pair layout), 4 lanes at a time. Threads split the 8-channel panels.
 */
export function quantize_weight_i8_packed(
  tid: i32, nt: i32, w: usize, N: i32, Cin: i32, taps: i32, Cp: i32, scales: usize, packed: usize, kPairs: i32, wsum: usize, wdq: usize, wqmax: i32,
): void {
  const K = taps * Cp;
  const np = (N + 7) >> 3;
  const pa = splitStart(np, tid, nt), pe = splitStart(np, tid + 1, nt);
  const per = Cin * taps;
  const tapB = usize(taps) << 2;
  const hi = f32x4.splat(<f32>wqmax), lo = f32x4.neg(hi);
  for (let p = pa; p < pe; p++) {
    const panel = packed + usize(p) * usize(K) * 8;
    for (let j = 0; j < 8; j++) {
      const n = (p << 3) + j;
      // byte offsets of this channel's 4 bytes in a k-group: k4 layout 4j..4j+3; k-pairs 2 bytes at lo2, 2 at lo2 + 8
      const o4 = usize(j << 2);
      const lo2 = usize(16 * (j >> 2) + 2 * (j & 3));
      if (n >= N) {
        for (let g = 0; g < K; g += 4) {
          const gp = panel + (usize(g) << 3);
          if (kPairs) {
            store<u16>(gp + lo2, 0);
            store<u16>(gp + lo2 + 8, 0);
          } else store<u32>(gp + o4, 0);
        }
        continue;
      }
      const vs = v128.load32_splat(scales + (usize(n) << 2));
      const src = w + ((usize(n) * usize(per)) << 2);
      const dq = wdq + ((usize(n) * usize(per)) << 2);
      let vsum = i32x4.splat(0);
      for (let t = 0; t < taps; t++)
        for (let ci = 0; ci < Cp; ci += 4) {
          const m = min(4, Cin - ci); // real lanes (<= 0: a padding group)
          const sp = src + (usize(ci * taps + t) << 2);
          let v = f32x4.splat(0);
          if (taps == 1 && m == 4) v = v128.load(sp);
          else {
            if (m > 0) v = f32x4.replace_lane(v, 0, load<f32>(sp));
            if (m > 1) v = f32x4.replace_lane(v, 1, load<f32>(sp + tapB));
            if (m > 2) v = f32x4.replace_lane(v, 2, load<f32>(sp + 2 * tapB));
            if (m > 3) v = f32x4.replace_lane(v, 3, load<f32>(sp + 3 * tapB));
          }
          let r = f32x4.pmin(f32x4.pmax(f32x4.nearest(f32x4.div(v, vs)), lo), hi);
          r = v128.and(r, f32x4.eq(r, r)); // NaN -> 0
          const q = i32x4.trunc_sat_f32x4_s(r);
          vsum = i32x4.add(vsum, q);
          const q16 = i16x8.narrow_i32x4_s(q, q);
          const bytes = i8x16.narrow_i16x8_s(q16, q16);
          const gp = panel + (usize(t * Cp + ci) << 3);
          if (kPairs) {
            store<u16>(gp + lo2, <u16>i16x8.extract_lane_u(bytes, 0));
            store<u16>(gp + lo2 + 8, <u16>i16x8.extract_lane_u(bytes, 1));
          } else store<u32>(gp + o4, i32x4.extract_lane(bytes, 0));
          if (wdq && m > 0) {
            const d = f32x4.mul(r, vs);
            const dp = dq + (usize(ci * taps + t) << 2);
            if (taps == 1 && m == 4) v128.store(dp, d);
            else {
              store<f32>(dp, f32x4.extract_lane(d, 0));
              if (m > 1) store<f32>(dp + tapB, f32x4.extract_lane(d, 1));
              if (m > 2) store<f32>(dp + 2 * tapB, f32x4.extract_lane(d, 2));
              if (m > 3) store<f32>(dp + 3 * tapB, f32x4.extract_lane(d, 3));
            }
          }
        }
      const h = i32x4.add(vsum, i32x4.shuffle(vsum, vsum, 2, 3, 0, 1));
      store<i32>(wsum + (usize(n) << 2), i32x4.extract_lane(h, 0) + i32x4.extract_lane(h, 1));
    }
  }
}

/**
 * Min and max of each chunk of x [n]: out[2c] = min, out[2c + 1] = max of x[c*chunk .. min((c+1)*chunk, n));
 * NaNs are ignored (an all-NaN chunk gives +Inf, -Inf). Per-channel weight ranges: chunk = values per
 * channel; a tensor's range: any chunk size, then the min/max of the chunks. Threads split the chunks.
 */
export function minmax_chunks_f32(tid: i32, nt: i32, x: usize, n: i32, chunk: i32, out: usize): void {
  if (n <= 0 || chunk <= 0) return;
  const nc = (n + chunk - 1) / chunk;
  const c0 = splitStart(nc, tid, nt), c1 = splitStart(nc, tid + 1, nt);
  for (let c = c0; c < c1; c++) {
    const a = c * chunk;
    const e = min(a + chunk, n);
    let vmin = f32x4.splat(Infinity), vmax = f32x4.splat(-Infinity);
    let i = a;
    // pmin(acc, v) = v < acc ? v : acc and pmax(acc, v) = acc < v ? v : acc: a NaN v never replaces acc
    for (; i + 4 <= e; i += 4) {
      const v = v128.load(x + (usize(i) << 2));
      vmin = f32x4.pmin(vmin, v);
      vmax = f32x4.pmax(vmax, v);
    }
    let mn = min(min(f32x4.extract_lane(vmin, 0), f32x4.extract_lane(vmin, 1)), min(f32x4.extract_lane(vmin, 2), f32x4.extract_lane(vmin, 3)));
    let mx = max(max(f32x4.extract_lane(vmax, 0), f32x4.extract_lane(vmax, 1)), max(f32x4.extract_lane(vmax, 2), f32x4.extract_lane(vmax, 3)));
    for (; i < e; i++) {
      const v = load<f32>(x + (usize(i) << 2));
      if (v < mn) mn = v;
      if (v > mx) mx = v;
    }
    store<f32>(out + (usize(c) << 3), mn);
    store<f32>(out + (usize(c) << 3), mx, 4);
  }
}

/**
 * Activation fake quantisation: y = f32(f32(q - zp) * scale) with q = clamp(nearest(f32(x * invScale)) + zp,
 * 0, qmax) (NaN -> zp), i.e. the dequantised values of what quantize_act_u8 produces, bit for bit (+0, never
 * -0, for q = zp). y may equal x.
 * Threads take contiguous runs of whole 4-vectors.
 */
export function fake_quant_act_f32(tid: i32, nt: i32, x: usize, y: usize, n: i32, invScale: f32, scale: f32, zp: i32, qmax: i32): void {
  const nv = (n + 3) >> 2;
  let i = splitStart(nv, tid, nt) << 2;
  const end = min(splitStart(nv, tid + 1, nt) << 2, n);
  const lo = <f32>(-zp), hi = <f32>(qmax - zp);
  const vinv = f32x4.splat(invScale), vs = f32x4.splat(scale), vlo = f32x4.splat(lo), vhi = f32x4.splat(hi);
  for (; i + 4 <= end; i += 4) {
    const o = usize(i) << 2;
    const v = f32x4.pmin(f32x4.pmax(f32x4.nearest(f32x4.mul(v128.load(x + o), vinv)), vlo), vhi);
    // NaN -> 0, and + 0 turns a rounded -0 into +0 (as (u8 - zp) * scale)
    v128.store(y + o, f32x4.mul(f32x4.add(v128.and(v, f32x4.eq(v, v)), f32x4.splat(0)), vs));
  }
  for (; i < end; i++) {
    const o = usize(i) << 2;
    let v = nearest<f32>(load<f32>(x + o) * invScale);
    if (v != v) v = 0;
    else if (v < lo) v = lo;
    else if (v > hi) v = hi;
    store<f32>(y + o, (v + 0) * scale);
  }
}

/**
 * Activation fake-quant backward. With v = f32(x * invScale) and r = nearest(v) (the rounded value
 * relative to the zero point), inside = -zp <= r <= qmax - zp:
 *   dx = (accumulate ? dx : 0) + (inside ? dy : 0)           (masked straight-through estimator)
 * and, if partials != 0, per chunk c of `chunk` elements (chunk a multiple of 4):
 *   partials[2c]     = sum dy * (inside ? r - v : clamp bound)  (d xhat / d scale; bound -zp or qmax - zp)
 *   partials[2c + 1] = sum of dy outside                        (d xhat / d offset, LSQ+)
 * summed in f32, 4 lanes by element index mod 4 then (l0 + l2) + (l1 + l3), then the scalar tail.
 * A NaN x counts as neither inside nor outside (dx = 0, no contribution). dx may equal dy.
 * Threads split the chunks.
 */
export function fake_quant_act_backward_f32(
  tid: i32, nt: i32, x: usize, dy: usize, dx: usize, n: i32, invScale: f32, zp: i32, qmax: i32,
  accumulate: i32, partials: usize, chunk: i32,
): void {
  if (n <= 0) return;
  const nc = (n + chunk - 1) / chunk;
  const c0 = splitStart(nc, tid, nt), c1 = splitStart(nc, tid + 1, nt);
  const lo = <f32>(-zp), hi = <f32>(qmax - zp);
  const vinv = f32x4.splat(invScale), vlo = f32x4.splat(lo), vhi = f32x4.splat(hi);
  const z = f32x4.splat(0);
  for (let c = c0; c < c1; c++) {
    let i = c * chunk;
    const end = min(i + chunk, n);
    let sS = z, sB = z;
    for (; i + 4 <= end; i += 4) {
      const o = usize(i) << 2;
      const v = f32x4.mul(v128.load(x + o), vinv);
      const r = f32x4.nearest(v);
      const below = f32x4.lt(r, vlo), above = f32x4.gt(r, vhi);
      const out = v128.or(below, above);
      const inside = v128.andnot(f32x4.eq(r, r), out); // not outside and not NaN
      const g = v128.load(dy + o);
      const gi = v128.and(g, inside);
      v128.store(dx + o, accumulate ? f32x4.add(v128.load(dx + o), gi) : gi);
      if (partials) {
        // inside: r - v; below: -zp; above: qmax - zp; NaN: 0
        const ds = v128.bitselect(f32x4.sub(r, v), v128.bitselect(vlo, v128.and(vhi, above), below), inside);
        sS = f32x4.add(sS, f32x4.mul(g, ds));
        sB = f32x4.add(sB, v128.and(g, out));
      }
    }
    let tS: f32 = 0, tB: f32 = 0;
    for (; i < end; i++) {
      const o = usize(i) << 2;
      const v = load<f32>(x + o) * invScale;
      const r = nearest<f32>(v);
      const g = load<f32>(dy + o);
      const below = r < lo, above = r > hi, inside = !below && !above && r == r;
      const gi: f32 = inside ? g : 0;
      store<f32>(dx + o, accumulate ? load<f32>(dx + o) + gi : gi);
      if (partials) {
        if (inside) tS += g * (r - v);
        else if (below) tS += g * lo;
        else if (above) tS += g * hi;
        if (below || above) tB += g;
      }
    }
    if (partials) {
      const hS = f32x4.add(sS, i32x4.shuffle(sS, sS, 2, 3, 0, 1));
      const hB = f32x4.add(sB, i32x4.shuffle(sB, sB, 2, 3, 0, 1));
      store<f32>(partials + (usize(c) << 3), f32x4.extract_lane(hS, 0) + f32x4.extract_lane(hS, 1) + tS);
      store<f32>(partials + (usize(c) << 3), f32x4.extract_lane(hB, 0) + f32x4.extract_lane(hB, 1) + tB, 4);
    }
  }
}

/**
 * Weight fake-quant backward, per output channel n of w [N, K] (torch layout flattened: K = Cin*kh*kw)
 * with scale s[n]: v = f32(w / s[n]), r = nearest(v), inside = -wqmax <= r <= wqmax (127: int8 weights,
 * 63: 7-bit weights):
 *   dw = (accumulate ? dw : 0) + (inside ? dwq : 0)      (dwq: the gradient of the dequantised weights)
 *   if dscale != 0: dscale[n] = sum_k dwq * (inside ? r - v : clamp bound -wqmax / wqmax)   (LSQ, unscaled)
 * summed in f32, 4 lanes by k mod 4 then (l0 + l2) + (l1 + l3), then the scalar tail (per channel, so
 * independent of the thread count). A NaN weight passes no gradient. dw may equal dwq. Threads split channels.
 */
export function fake_quant_weight_backward_f32(
  tid: i32, nt: i32, w: usize, dwq: usize, dw: usize, N: i32, K: i32, scales: usize, accumulate: i32, dscale: usize, wqmax: i32,
): void {
  const n0 = splitStart(N, tid, nt), n1 = splitStart(N, tid + 1, nt);
  const z = f32x4.splat(0);
  const hi = <f32>wqmax, lo = -hi;
  const vlo = f32x4.splat(lo), vhi = f32x4.splat(hi);
  for (let n = n0; n < n1; n++) {
    const s = load<f32>(scales + (usize(n) << 2));
    const vs = f32x4.splat(s);
    const row = usize(n) * usize(K) << 2;
    let sS = z;
    let k = 0;
    for (; k + 4 <= K; k += 4) {
      const o = row + (usize(k) << 2);
      const v = f32x4.div(v128.load(w + o), vs);
      const r = f32x4.nearest(v);
      const below = f32x4.lt(r, vlo), above = f32x4.gt(r, vhi);
      const inside = v128.andnot(f32x4.eq(r, r), v128.or(below, above));
      const g = v128.load(dwq + o);
      const gi = v128.and(g, inside);
      v128.store(dw + o, accumulate ? f32x4.add(v128.load(dw + o), gi) : gi);
      if (dscale) {
        const ds = v128.bitselect(f32x4.sub(r, v), v128.bitselect(vlo, v128.and(vhi, above), below), inside);
        sS = f32x4.add(sS, f32x4.mul(g, ds));
      }
    }
    let tS: f32 = 0;
    for (; k < K; k++) {
      const o = row + (usize(k) << 2);
      const v = load<f32>(w + o) / s;
      const r = nearest<f32>(v);
      const g = load<f32>(dwq + o);
      const below = r < lo, above = r > hi, inside = !below && !above && r == r;
      const gi: f32 = inside ? g : 0;
      store<f32>(dw + o, accumulate ? load<f32>(dw + o) + gi : gi);
      if (dscale) {
        if (inside) tS += g * (r - v);
        else if (below) tS -= g * hi;
        else if (above) tS += g * hi;
      }
    }
    if (dscale) {
      const h = f32x4.add(sS, i32x4.shuffle(sS, sS, 2, 3, 0, 1));
      store<f32>(dscale + (usize(n) << 2), f32x4.extract_lane(h, 0) + f32x4.extract_lane(h, 1) + tS);
    }
  }
}
