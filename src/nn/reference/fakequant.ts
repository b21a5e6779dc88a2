// Plain TypeScript references for the fake-quantisation kernels (assembly/quantize_backward.ts), written
// from the definitions with f32 rounding where the kernels round (Math.fround), f64 sums for the LSQ
// gradients. Slow; for tests on small shapes only.
import { normalizeActParams, roundHalfEven, type ActQuantParams } from "../quant.ts";

const fr = Math.fround;

/**
 * Per-channel symmetric quantisation with given scales, as the engine quantises: q = clamp(rhe(f32(w / s[n])),
 * -wq, wq) for w [N, per] (torch layout flattened; wq 127: int8, 63: 7-bit); wdq = f32(q * s[n]); wsum[n] = sum q.
 */
export function quantizeWeightsWithScalesRef(w: ArrayLike<number>, N: number, per: number, scales: ArrayLike<number>, wq = 127): { q: Int8Array; wdq: Float32Array; wsum: Int32Array } {
  const q = new Int8Array(N * per), wdq = new Float32Array(N * per), wsum = new Int32Array(N);
  for (let n = 0; n < N; n++) {
    const s = fr(scales[n]);
    for (let k = 0; k < per; k++) {
      let r = roundHalfEven(fr(fr(w[n * per + k]) / s));
      if (r !== r) r = 0;
      r = Math.max(-wq, Math.min(wq, r));
      q[n * per + k] = r;
      wdq[n * per + k] = fr(r * s);
      wsum[n] += r;
    }
  }
  return { q, wdq, wsum };
}

/** Where v = f32(x * invScale) rounds relative to the zero point: r = rhe(v), and whether it is inside [-zp, qmax - zp]. */
function actRound(x: number, invScale: number, zp: number, qmax: number) {
  const v = fr(fr(x) * invScale);
  const r = roundHalfEven(v);
  return { v, r, below: r < -zp, above: r > qmax - zp, nan: r !== r };
}

/** Dequantised activations: f32((clamp(rhe(f32(x * invScale)) + zp, 0, qmax) - zp) * scale), NaN -> 0, never -0. */
export function fakeQuantActRef(x: ArrayLike<number>, act: ActQuantParams): Float32Array {
  const { scale, invScale, zeroPoint: zp, qmax } = normalizeActParams(act);
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const { r, below, above, nan } = actRound(x[i], invScale, zp, qmax);
    const c = nan ? 0 : below ? -zp : above ? qmax - zp : r;
    y[i] = c === 0 ? 0 : fr(c * scale); // +0 like (u8 - zp) * scale
  }
  return y;
}

/**
 * Activation fake-quant backward: dx = dy inside the clamp range, 0 outside (and for NaN x); the unscaled
 * LSQ sums dScale = sum dy * (inside ? r - v : bound) (bound -zp below, qmax - zp above; v = f32(x * invScale)) and
 * dOffset = sum of dy outside, in f64.
 */
export function fakeQuantActBackwardRef(x: ArrayLike<number>, dy: ArrayLike<number>, act: ActQuantParams): { dx: Float32Array; dScale: number; dOffset: number } {
  const { invScale, zeroPoint: zp, qmax } = normalizeActParams(act);
  const dx = new Float32Array(x.length);
  let dScale = 0, dOffset = 0;
  for (let i = 0; i < x.length; i++) {
    const { v, r, below, above, nan } = actRound(x[i], invScale, zp, qmax);
    const g = fr(dy[i]);
    if (nan) continue;
    if (below) {
      dScale += g * -zp;
      dOffset += g;
    } else if (above) {
      dScale += g * (qmax - zp);
      dOffset += g;
    } else {
      dx[i] = g;
      dScale += g * fr(r - v);
    }
  }
  return { dx, dScale, dOffset };
}

/**
 * Weight fake-quant backward per channel of w [N, K] with scales s: dw = dwq where -wq <= rhe(f32(w / s)) <= wq,
 * else 0; dScale[n] = sum_k dwq * (inside ? r - v : -wq / wq), f64, unscaled (wq 127: int8, 63: 7-bit).
 */
export function fakeQuantWeightBackwardRef(w: ArrayLike<number>, dwq: ArrayLike<number>, N: number, K: number, scales: ArrayLike<number>, wq = 127): { dw: Float32Array; dScale: Float64Array } {
  const dw = new Float32Array(N * K), dScale = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    const s = fr(scales[n]);
    for (let k = 0; k < K; k++) {
      const i = n * K + k;
      const v = fr(fr(w[i]) / s);
      const r = roundHalfEven(v);
      const g = fr(dwq[i]);
      if (r !== r) continue;
      if (r < -wq) dScale[n] -= g * wq;
      else if (r > wq) dScale[n] += g * wq;
      else {
        dw[i] = g;
        dScale[n] += g * fr(r - v);
      }
    }
  }
  return { dw, dScale };
}
