// Plain TypeScript references (float64, no SIMD, straight from the definitions) for the backward of the
// dense layers (src/nn/backward/linear.ts, conv.ts) and f64 forwards to check them by finite differences.
// Weights in torch layout: linear [out, in], conv [cout, cin, kh, kw]; activations NHWC.
// Slow; for tests on small shapes only.
import type { Conv2dRefShape } from "./gemm.ts";
import { convOutSize } from "./gemm.ts";

/** y [M, out] = x [M, inF] W^T + b, in f64. */
export function linearForwardF64(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null, M: number, inF: number, out: number): Float64Array {
  const y = new Float64Array(M * out);
  for (let m = 0; m < M; m++)
    for (let o = 0; o < out; o++) {
      let s = b ? b[o] : 0;
      for (let k = 0; k < inF; k++) s += x[m * inF + k] * w[o * inF + k];
      y[m * out + o] = s;
    }
  return y;
}

/** dX = dY W, dW = dY^T x, db = sum_m dY, in f64. */
export function linearBackwardRef(x: ArrayLike<number>, w: ArrayLike<number>, dy: ArrayLike<number>, M: number, inF: number, out: number): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const dx = new Float64Array(M * inF), dw = new Float64Array(out * inF), db = new Float64Array(out);
  for (let m = 0; m < M; m++)
    for (let o = 0; o < out; o++) {
      const g = dy[m * out + o];
      db[o] += g;
      for (let k = 0; k < inF; k++) {
        dx[m * inF + k] += g * w[o * inF + k];
        dw[o * inF + k] += g * x[m * inF + k];
      }
    }
  return { dx, dw, db };
}

/** NHWC conv y [B, Ho, Wo, cout] of x [B, H, W, cin] with w [cout, cin, kh, kw], in f64. */
export function conv2dForwardF64(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null, s: Conv2dRefShape): { y: Float64Array; ho: number; wo: number } {
  const { batch, h, w: W, cin, cout, kh, kw, stride, padding } = s;
  const [ho, wo] = convOutSize(h, W, kh, kw, stride, padding);
  const y = new Float64Array(batch * ho * wo * cout);
  for (let n = 0; n < batch; n++)
    for (let oy = 0; oy < ho; oy++)
      for (let ox = 0; ox < wo; ox++)
        for (let co = 0; co < cout; co++) {
          let acc = b ? b[co] : 0;
          for (let ky = 0; ky < kh; ky++) {
            const iy = oy * stride - padding[0] + ky;
            if (iy < 0 || iy >= h) continue;
            for (let kx = 0; kx < kw; kx++) {
              const ix = ox * stride - padding[1] + kx;
              if (ix < 0 || ix >= W) continue;
              for (let ci = 0; ci < cin; ci++) acc += x[((n * h + iy) * W + ix) * cin + ci] * w[((co * cin + ci) * kh + ky) * kw + kx];
            }
          }
          y[((n * ho + oy) * wo + ox) * cout + co] = acc;
        }
  return { y, ho, wo };
}

/**
 * Gradients of the NHWC conv for dY [B, Ho, Wo, cout], in f64, by scattering every output pixel's
 * gradient back over its window: dx [B, H, W, cin], dw [cout, cin, kh, kw], db [cout].
 */
export function conv2dBackwardRef(x: ArrayLike<number>, w: ArrayLike<number>, dy: ArrayLike<number>, s: Conv2dRefShape): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const { batch, h, w: W, cin, cout, kh, kw, stride, padding } = s;
  const [ho, wo] = convOutSize(h, W, kh, kw, stride, padding);
  const dx = new Float64Array(batch * h * W * cin), dw = new Float64Array(cout * cin * kh * kw), db = new Float64Array(cout);
  for (let n = 0; n < batch; n++)
    for (let oy = 0; oy < ho; oy++)
      for (let ox = 0; ox < wo; ox++)
        for (let co = 0; co < cout; co++) {
          const g = dy[((n * ho + oy) * wo + ox) * cout + co];
          db[co] += g;
          for (let ky = 0; ky < kh; ky++) {
            const iy = oy * stride - padding[0] + ky;
            if (iy < 0 || iy >= h) continue;
            for (let kx = 0; kx < kw; kx++) {
              const ix = ox * stride - padding[1] + kx;
              if (ix < 0 || ix >= W) continue;
              for (let ci = 0; ci < cin; ci++) {
                const xi = ((n * h + iy) * W + ix) * cin + ci, wi = ((co * cin + ci) * kh + ky) * kw + kx;
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
            }
          }
        }
  return { dx, dw, db };
}
