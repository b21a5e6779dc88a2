// Backward of the elementwise and layout kernels in elementwise.ts (and softmax in attention.ts is in
// attention_backward.ts). Like the forwards, each thread produces a contiguous range of the OUTPUT
// (the gradient being written), and every reduction (the broadcast operand's gradient) sums in a fixed
// order inside one thread, so results do not depend on the thread count.
import { vecSplitStart, vecSplitEnd, splitStart, splitEnd, madd, hsum } from "./math";
import { siluAGrad4, geluGrad4, normCdf4, normPdf4, gc } from "./grad_math";
import { UNARY_SILU, UNARY_GELU, UNARY_RELU } from "./abi";

// ---------------------------------------------------------------------------------------------
// Unary activations: dx = dy * f'(x), x the forward's input. op 0: x sigmoid(alpha x) (SiLU alpha = 1,
// quick GELU alpha = 1.702); op 1: exact GELU; op 3: ReLU (dy where x > 0, else 0; NaN x gives 0).
// (op 2, scale, is its own backward: dx = alpha dy, the forward unary_f32 op 2.)

@inline function unaryGrad(x: v128, op: i32, av: v128): v128 {
  return op == UNARY_SILU ? siluAGrad4(x, av) : geluGrad4(x);
}

export function unary_backward_f32(tid: i32, nt: i32, x: usize, dy: usize, dx: usize, n: i32, op: i32, alpha: f32): void {
  let i = vecSplitStart(n, tid, nt);
  const end = vecSplitEnd(n, tid, nt);
  const av = f32x4.splat(alpha);
  if (op == UNARY_SILU) {
    for (; i + 4 <= end; i += 4) {
      const o = usize(i) << 2;
      v128.store(dx + o, f32x4.mul(v128.load(dy + o), siluAGrad4(v128.load(x + o), av)));
    }
  } else if (op == UNARY_GELU) {
    for (; i + 4 <= end; i += 4) {
      const o = usize(i) << 2;
      v128.store(dx + o, f32x4.mul(v128.load(dy + o), geluGrad4(v128.load(x + o))));
    }
  } else {
    for (; i + 4 <= end; i += 4) {
      const o = usize(i) << 2;
      // select, not multiply: dy * 0 would turn an infinite dy into NaN
      v128.store(dx + o, v128.and(v128.load(dy + o), f32x4.gt(v128.load(x + o), gc(5))));
    }
  }
  for (; i < end; i++) {
    const o = usize(i) << 2;
    const xv = f32x4.splat(load<f32>(x + o));
    const dv = f32x4.splat(load<f32>(dy + o));
    const r = op == UNARY_RELU ? v128.and(dv, f32x4.gt(xv, gc(5))) : f32x4.mul(dv, unaryGrad(xv, op, av));
    store<f32>(dx + o, f32x4.extract_lane(r, 0));
  }
}

/**
 * GEGLU backward: x [rows, 2N] (hidden | gate), dy [rows, N] -> dx [rows, 2N]:
 * dx_hidden = dy * gelu(gate), dx_gate = dy * hidden * gelu'(gate). Threads split the [rows, N] range.
 */
export function geglu_backward_f32(tid: i32, nt: i32, x: usize, dy: usize, dx: usize, rows: i32, N: i32): void {
  const total = rows * N;
  let i = vecSplitStart(total, tid, nt);
  const end = vecSplitEnd(total, tid, nt);
  while (i < end) {
    const r = i / N;
    const j0 = i - r * N;
    const len = min(end, (r + 1) * N) - i;
    const rowOff = (usize(r) * usize(2 * N) + usize(j0)) << 2;
    const h = x + rowOff;
    const g = h + (usize(N) << 2);
    const dh = dx + rowOff;
    const dg = dh + (usize(N) << 2);
    const d = dy + (usize(i) << 2);
    let j = 0;
    for (; j + 4 <= len; j += 4) {
      const k = usize(j) << 2;
      const gv = v128.load(g + k);
      const cdf = normCdf4(gv);
      const pdf = normPdf4(gv);
      const dv = v128.load(d + k);
      v128.store(dh + k, f32x4.mul(dv, f32x4.mul(gv, cdf)));
      v128.store(dg + k, f32x4.mul(f32x4.mul(dv, v128.load(h + k)), madd(gv, pdf, cdf)));
    }
    for (; j < len; j++) {
      const k = usize(j) << 2;
      const gv = f32x4.splat(load<f32>(g + k));
      const cdf = normCdf4(gv);
      const pdf = normPdf4(gv);
      const dv = f32x4.splat(load<f32>(d + k));
      store<f32>(dh + k, f32x4.extract_lane(f32x4.mul(dv, f32x4.mul(gv, cdf)), 0));
      store<f32>(dg + k, f32x4.extract_lane(f32x4.mul(f32x4.mul(dv, f32x4.splat(load<f32>(h + k))), madd(gv, pdf, cdf)), 0));
    }
    i += len;
  }
}

// ---------------------------------------------------------------------------------------------
// Gradient of a broadcast operand. The forward binary_bcast_f32 views a and out as [P, M, N] and b as
// [P, N]; b's gradient sums over m: db[p, n] = s * sum_m dy[p, m, n] (* a[p, m, n] when a != 0, for mul).
// Work units are (p, chunk of 16 columns n); each sums m = 0..M-1 in order, in blocks of 64 rows whose
// partial sums are added to the total (the f32 error grows with the blocks, not with M).

const RED_CHUNK: i32 = 16;
const RED_BLOCK: i32 = 64;

export function bcast_reduce_f32(tid: i32, nt: i32, dy: usize, a: usize, db: usize, P: i32, M: i32, N: i32, s: f32): void {
  const nChunks = (N + RED_CHUNK - 1) / RED_CHUNK;
  const units = P * nChunks;
  const u0 = splitStart(units, tid, nt);
  const u1 = splitEnd(units, tid, nt);
  const rowB = usize(N) << 2;
  const sv = f32x4.splat(s);
  for (let u = u0; u < u1; u++) {
    const p = u / nChunks;
    const n0 = (u - p * nChunks) * RED_CHUNK;
    const nn = min(RED_CHUNK, N - n0);
    const base = ((usize(p) * usize(M) * usize(N)) + usize(n0)) << 2;
    const pd = dy + base;
    const pa = a + base;
    const out = db + ((usize(p) * usize(N) + usize(n0)) << 2);
    if (nn == RED_CHUNK) {
      let t0 = f32x4.splat(0), t1 = t0, t2 = t0, t3 = t0;
      for (let m0 = 0; m0 < M; m0 += RED_BLOCK) {
        const m1 = min(M, m0 + RED_BLOCK);
        let c0 = f32x4.splat(0), c1 = c0, c2 = c0, c3 = c0;
        let off = usize(m0) * rowB;
        if (a) {
          for (let m = m0; m < m1; m++) {
            c0 = madd(v128.load(pd + off), v128.load(pa + off), c0);
            c1 = madd(v128.load(pd + off, 16), v128.load(pa + off, 16), c1);
            c2 = madd(v128.load(pd + off, 32), v128.load(pa + off, 32), c2);
            c3 = madd(v128.load(pd + off, 48), v128.load(pa + off, 48), c3);
            off += rowB;
          }
        } else {
          for (let m = m0; m < m1; m++) {
            c0 = f32x4.add(c0, v128.load(pd + off));
            c1 = f32x4.add(c1, v128.load(pd + off, 16));
            c2 = f32x4.add(c2, v128.load(pd + off, 32));
            c3 = f32x4.add(c3, v128.load(pd + off, 48));
            off += rowB;
          }
        }
        t0 = f32x4.add(t0, c0);
        t1 = f32x4.add(t1, c1);
        t2 = f32x4.add(t2, c2);
        t3 = f32x4.add(t3, c3);
      }
      v128.store(out, f32x4.mul(t0, sv));
      v128.store(out, f32x4.mul(t1, sv), 16);
      v128.store(out, f32x4.mul(t2, sv), 32);
      v128.store(out, f32x4.mul(t3, sv), 48);
    } else {
      // a partial chunk (N not a multiple of 16, or N = 1: per-row scalars summed along m)
      for (let c = 0; c < nn; c++) {
        const co = usize(c) << 2;
        let t: f32 = 0;
        if (N == 1) {
          // contiguous: 4 lanes along m, then the lanes in a fixed order
          let m = 0;
          let acc = f32x4.splat(0);
          for (; m + 4 <= M; m += 4) {
            const o = usize(m) << 2;
            acc = a ? madd(v128.load(pd + o), v128.load(pa + o), acc) : f32x4.add(acc, v128.load(pd + o));
          }
          t = hsum(acc);
          for (; m < M; m++) {
            const o = usize(m) << 2;
            t += a ? load<f32>(pd + o) * load<f32>(pa + o) : load<f32>(pd + o);
          }
        } else {
          for (let m0 = 0; m0 < M; m0 += RED_BLOCK) {
            const m1 = min(M, m0 + RED_BLOCK);
            let cb: f32 = 0;
            let off = usize(m0) * rowB + co;
            for (let m = m0; m < m1; m++) {
              cb += a ? load<f32>(pd + off) * load<f32>(pa + off) : load<f32>(pd + off);
              off += rowB;
            }
            t += cb;
          }
        }
        store<f32>(out + co, t * s);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Layout ops (NHWC).

/**
 * Nearest 2x upsampling backward: dy [B,2H,2W,C] -> dx [B,H,W,C], dx[b,h,w] = sum of the 4 children
 * (2h,2w) + (2h,2w+1) + (2h+1,2w) + (2h+1,2w+1), in that order. Threads split input rows.
 */
export function upsample2x_backward_f32(tid: i32, nt: i32, dy: usize, dx: usize, B: i32, H: i32, W: i32, C: i32): void {
  const rows = B * H;
  const r0 = splitStart(rows, tid, nt);
  const r1 = splitEnd(rows, tid, nt);
  const pixB = usize(C) << 2;
  const rowOutB = usize(2 * W) * pixB;
  for (let r = r0; r < r1; r++) {
    const top = dy + usize(2 * r) * rowOutB; // output row 2h of batch b is row 2r of the flat [B*2H] rows
    const bot = top + rowOutB;
    const dst = dx + usize(r) * usize(W) * pixB;
    for (let w = 0; w < W; w++) {
      const t0 = top + usize(2 * w) * pixB;
      const b0 = bot + usize(2 * w) * pixB;
      const d = dst + usize(w) * pixB;
      let c = 0;
      for (; c + 4 <= C; c += 4) {
        const o = usize(c) << 2;
        const s = f32x4.add(f32x4.add(f32x4.add(v128.load(t0 + o), v128.load(t0 + pixB + o)), v128.load(b0 + o)), v128.load(b0 + pixB + o));
        v128.store(d + o, s);
      }
      for (; c < C; c++) {
        const o = usize(c) << 2;
        store<f32>(d + o, ((load<f32>(t0 + o) + load<f32>(t0 + pixB + o)) + load<f32>(b0 + o)) + load<f32>(b0 + pixB + o));
      }
    }
  }
}

@inline function copyF32(src: usize, dst: usize, n: i32): void {
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const o = usize(j) << 2;
    v128.store(dst + o, v128.load(src + o));
  }
  for (; j < n; j++) {
    const o = usize(j) << 2;
    store<f32>(dst + o, load<f32>(src + o));
  }
}

/** Channel concatenation backward: dy [P, ca + cb] -> da [P, ca], db [P, cb]. Threads split positions. */
export function concat_channels_backward_f32(tid: i32, nt: i32, dy: usize, da: usize, db: usize, P: i32, ca: i32, cb: i32): void {
  const p0 = splitStart(P, tid, nt);
  const p1 = splitEnd(P, tid, nt);
  const co = ca + cb;
  for (let p = p0; p < p1; p++) {
    const s = dy + ((usize(p) * usize(co)) << 2);
    copyF32(s, da + ((usize(p) * usize(ca)) << 2), ca);
    copyF32(s + (usize(ca) << 2), db + ((usize(p) * usize(cb)) << 2), cb);
  }
}
