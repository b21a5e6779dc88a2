// Optimizer updates (src/train/optim.ts): AdamW and the EMA of the weights, elementwise over f32 arrays in
// the shared memory. The arithmetic is the host reference's (src/nn/reference/optim.ts) operation for
// operation: each product / quotient / sum of an f32 value with an f64 constant is computed in f64 and
// rounded to f32 where the reference rounds (Math.fround), which for +, -, *, / and sqrt gives the same f32 as
// the host's f64-then-round (f64 has more than 2 * 24 + 2 bits), so results are bit-identical to it.
// Elements are independent: threads take contiguous runs of whole pairs (f64x2 lanes).
import { splitStart } from "./math";

// @ts-nocheck (AssemblyScript)

/** Rounds both f64 lanes to f32 and back (Math.fround on each). */
@inline function fr2(x: v128): v128 {
  return f64x2.promote_low_f32x4(f32x4.demote_f64x2_zero(x));
}

@inline function load2(p: usize): v128 {
  return f64x2.promote_low_f32x4(v128.load64_zero(p));
}

@inline function store2(p: usize, x: v128): void {
  v128.store64_lane(p, f32x4.demote_f64x2_zero(x), 0);
}

@inline function fr(x: f64): f64 {
  return <f64><f32>x;
}

/**
 * AdamW step over n parameters w with gradients g and moments m, v (all f32):
 *   w = f(w * decay);  m = f(f(m b1) + f(g omb1));  v = f(f(v b2) + f(f(g g) omb2));
 *   d = f(f(sqrt(v) / bc2Sqrt) + eps);  w = f(w - f(stepSize * f(m / d)))
 * (f = round to f32; decay is an f32 value, the other constants f64: omb1 = 1 - b1, omb2 = 1 - b2,
 * bc2Sqrt = sqrt(1 - b2^t), stepSize = lr / (1 - b1^t)).
 */
export function adamw_f32(
  tid: i32, nt: i32, w: usize, g: usize, m: usize, v: usize, n: i32,
  decay: f64, b1: f64, omb1: f64, b2: f64, omb2: f64, bc2Sqrt: f64, eps: f64, stepSize: f64,
): void {
  const pairs = n >> 1;
  const p0 = splitStart(pairs, tid, nt), p1 = splitStart(pairs, tid + 1, nt);
  const vdec = f64x2.splat(decay), vb1 = f64x2.splat(b1), vo1 = f64x2.splat(omb1), vb2 = f64x2.splat(b2), vo2 = f64x2.splat(omb2);
  const vbc = f64x2.splat(bc2Sqrt), veps = f64x2.splat(eps), vss = f64x2.splat(stepSize);
  for (let p = p0; p < p1; p++) {
    const o = usize(p) << 3;
    const G = load2(g + o);
    let W = fr2(f64x2.mul(load2(w + o), vdec));
    const M = fr2(f64x2.add(fr2(f64x2.mul(load2(m + o), vb1)), fr2(f64x2.mul(G, vo1))));
    const V = fr2(f64x2.add(fr2(f64x2.mul(load2(v + o), vb2)), fr2(f64x2.mul(fr2(f64x2.mul(G, G)), vo2))));
    const D = fr2(f64x2.add(fr2(f64x2.div(f64x2.sqrt(V), vbc)), veps));
    W = fr2(f64x2.sub(W, fr2(f64x2.mul(vss, fr2(f64x2.div(M, D))))));
    store2(w + o, W);
    store2(m + o, M);
    store2(v + o, V);
  }
  // the odd last element: the last thread
  if ((n & 1) && tid == nt - 1) {
    const o = usize(n - 1) << 2;
    const gj = <f64>load<f32>(g + o);
    let wj = fr(<f64>load<f32>(w + o) * decay);
    const mj = fr(fr(<f64>load<f32>(m + o) * b1) + fr(gj * omb1));
    const vj = fr(fr(<f64>load<f32>(v + o) * b2) + fr(fr(gj * gj) * omb2));
    const d = fr(fr(Math.sqrt(vj) / bc2Sqrt) + eps);
    wj = fr(wj - fr(stepSize * fr(mj / d)));
    store<f32>(w + o, <f32>wj);
    store<f32>(m + o, <f32>mj);
    store<f32>(v + o, <f32>vj);
  }
}

/** EMA of the weights: s = f(s - f(one * f(s - w))) over n values (one = 1 - decay, f64). */
export function ema_f32(tid: i32, nt: i32, s: usize, w: usize, n: i32, one: f64): void {
  const pairs = n >> 1;
  const p0 = splitStart(pairs, tid, nt), p1 = splitStart(pairs, tid + 1, nt);
  const vone = f64x2.splat(one);
  for (let p = p0; p < p1; p++) {
    const o = usize(p) << 3;
    const S = load2(s + o);
    store2(s + o, fr2(f64x2.sub(S, fr2(f64x2.mul(vone, fr2(f64x2.sub(S, load2(w + o))))))));
  }
  if ((n & 1) && tid == nt - 1) {
    const o = usize(n - 1) << 2;
    const sj = <f64>load<f32>(s + o);
    store<f32>(s + o, <f32>fr(sj - fr(one * fr(sj - <f64>load<f32>(w + o)))));
  }
}
