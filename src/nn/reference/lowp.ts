// Plain TypeScript references for the INT8 and emulated-BF16 linear / conv ops (src/nn/int8.ts, src/nn/bf16.ts).
// They implement the documented numerics directly (no packing, no SIMD) so the kernels can be checked
// for EXACT equality:
//   INT8: acc = sum over real taps of (q_x - zp) * q_w (padding taps contribute 0), an exact integer;
//         y = f32(f32(acc) * f32(sx * sw)) + f32(bias), each step rounded to f32.
//   BF16: acc = f32 running sum of bf16(x) * bf16(w) over k in the kernel's order ((ky, kx, ci) for conv,
//         padding taps included as +0 products); y = bf16(f32(acc + bf16(bias))).
// Slow; for tests on small shapes only.
import { normalizeActParams, quantizeActValue, quantizeWeightsPerChannel, roundBf16, roundBf16Array, type ActQuantParams } from "../quant.ts";
import { convOutSize, type Conv2dRefShape } from "./gemm.ts";

const fr = Math.fround;

/** Quantised activations (u8 values as numbers), exactly as quantize_act_u8. */
export function quantizeActRef(x: ArrayLike<number>, act: ActQuantParams): Uint8Array {
  const { invScale, zeroPoint, qmax } = normalizeActParams(act);
  const q = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) q[i] = quantizeActValue(x[i], invScale, zeroPoint, qmax);
  return q;
}

function int8Epilogue(acc: Int32Array, M: number, N: number, sx: number, sw: Float32Array, bias: ArrayLike<number> | null): Float32Array {
  const y = new Float32Array(M * N);
  for (let n = 0; n < N; n++) {
    const s = fr(sx * sw[n]);
    const b = bias ? fr(bias[n]) : 0;
    for (let m = 0; m < M; m++) y[m * N + n] = fr(fr(fr(acc[m * N + n]) * s) + b);
  }
  return y;
}

/** INT8 linear reference: x [M, inF], w [out, inF]. Returns the outputs and the integer accumulators. */
export function linearInt8Ref(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, M: number, inF: number, out: number, act: ActQuantParams): { y: Float32Array; acc: Int32Array } {
  const a = normalizeActParams(act);
  const qx = quantizeActRef(x, act);
  const { q, scales } = quantizeWeightsPerChannel(w, out, inF, a.weightQmax);
  const acc = new Int32Array(M * out);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < out; n++) {
      let s = 0;
      for (let k = 0; k < inF; k++) s += (qx[m * inF + k] - a.zeroPoint) * q[n * inF + k];
      acc[m * out + n] = s;
    }
  return { y: int8Epilogue(acc, M, out, a.scale, scales, bias), acc };
}

/** INT8 NHWC conv reference: x [B, H, W, cin], w [cout, cin, kh, kw]. */
export function conv2dInt8Ref(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, s: Conv2dRefShape, act: ActQuantParams): { y: Float32Array; acc: Int32Array; ho: number; wo: number } {
  const { batch, h, w: W, cin, cout, kh, kw, stride, padding } = s;
  const a = normalizeActParams(act);
  const qx = quantizeActRef(x, act);
  const { q, scales } = quantizeWeightsPerChannel(w, cout, cin * kh * kw, normalizeActParams(act).weightQmax);
  const [ho, wo] = convOutSize(h, W, kh, kw, stride, padding);
  const M = batch * ho * wo;
  const acc = new Int32Array(M * cout);
  for (let b = 0; b < batch; b++)
    for (let oy = 0; oy < ho; oy++)
      for (let ox = 0; ox < wo; ox++) {
        const m = (b * ho + oy) * wo + ox;
        for (let co = 0; co < cout; co++) {
          let sum = 0;
          for (let ky = 0; ky < kh; ky++) {
            const iy = oy * stride - padding[0] + ky;
            if (iy < 0 || iy >= h) continue;
            for (let kx = 0; kx < kw; kx++) {
              const ix = ox * stride - padding[1] + kx;
              if (ix < 0 || ix >= W) continue;
              const xo = ((b * h + iy) * W + ix) * cin;
              for (let ci = 0; ci < cin; ci++) sum += (qx[xo + ci] - a.zeroPoint) * q[((co * cin + ci) * kh + ky) * kw + kx];
            }
          }
          acc[m * cout + co] = sum;
        }
      }
  return { y: int8Epilogue(acc, M, cout, a.scale, scales, bias), acc, ho, wo };
}

/** BF16 linear reference: x [M, inF], w [out, inF]. */
export function linearBf16Ref(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, M: number, inF: number, out: number): Float32Array {
  const xr = roundBf16Array(Float32Array.from(x));
  const wr = roundBf16Array(Float32Array.from(w));
  const y = new Float32Array(M * out);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < out; n++) {
      let acc = 0;
      for (let k = 0; k < inF; k++) acc = fr(acc + xr[m * inF + k] * wr[n * inF + k]);
      y[m * out + n] = roundBf16(fr(acc + (bias ? roundBf16(bias[n]) : 0)));
    }
  return y;
}

/** BF16 NHWC conv reference: x [B, H, W, cin], w [cout, cin, kh, kw]; sums in (ky, kx, ci) order. */
export function conv2dBf16Ref(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, s: Conv2dRefShape): { y: Float32Array; ho: number; wo: number } {
  const { batch, h, w: W, cin, cout, kh, kw, stride, padding } = s;
  const xr = roundBf16Array(Float32Array.from(x));
  const wr = roundBf16Array(Float32Array.from(w));
  const [ho, wo] = convOutSize(h, W, kh, kw, stride, padding);
  const y = new Float32Array(batch * ho * wo * cout);
  for (let b = 0; b < batch; b++)
    for (let oy = 0; oy < ho; oy++)
      for (let ox = 0; ox < wo; ox++)
        for (let co = 0; co < cout; co++) {
          let acc = 0;
          for (let ky = 0; ky < kh; ky++) {
            const iy = oy * stride - padding[0] + ky;
            for (let kx = 0; kx < kw; kx++) {
              const ix = ox * stride - padding[1] + kx;
              const inside = iy >= 0 && iy < h && ix >= 0 && ix < W;
              const xo = ((b * h + iy) * W + ix) * cin;
              for (let ci = 0; ci < cin; ci++) acc = fr(acc + (inside ? xr[xo + ci] : 0) * wr[((co * cin + ci) * kh + ky) * kw + kx]);
            }
          }
          y[((b * ho + oy) * wo + ox) * cout + co] = roundBf16(fr(acc + (bias ? roundBf16(bias[co]) : 0)));
        }
  return { y, ho, wo };
}
