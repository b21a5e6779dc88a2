// Plain-TypeScript references (f64) of the elementwise and layout backward kernels
// (assembly/elementwise_backward.ts). The forwards are in reference/ops.ts (refBinary, refGelu, ...).
import { erf } from "./ops.ts";

type Arr = ArrayLike<number>;

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** d/dx [x sigmoid(alpha x)]: SiLU (alpha 1) and quick GELU (alpha 1.702). */
export const siluAGrad = (x: number, alpha = 1) => {
  const s = sigmoid(alpha * x);
  return s * (1 + alpha * x * (1 - s));
};
/** d/dx of the exact GELU x Phi(x): Phi(x) + x phi(x). */
export const geluGrad = (x: number) => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
export const geluF64 = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));

/** dx = dy * f'(x) elementwise. */
export function refUnaryBackward(x: Arr, dy: Arr, grad: (v: number) => number): Float64Array {
  return Float64Array.from({ length: x.length }, (_, i) => dy[i] * grad(x[i]));
}

/** GEGLU backward: x [rows, 2N] (hidden | gate), dy [rows, N] -> dx [rows, 2N]. */
export function refGegluBackward(x: Arr, dy: Arr, rows: number, N: number): Float64Array {
  const dx = new Float64Array(rows * 2 * N);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < N; j++) {
      const h = x[r * 2 * N + j];
      const g = x[r * 2 * N + N + j];
      const d = dy[r * N + j];
      dx[r * 2 * N + j] = d * geluF64(g);
      dx[r * 2 * N + N + j] = d * h * geluGrad(g);
    }
  return dx;
}

/**
 * Gradient of a broadcast operand b (numpy broadcasting of bShape against outShape, right-aligned):
 * db[k] = s * sum of dy[i] (times a[i] when given, for a product) over every output index i that reads b[k].
 */
export function refBroadcastReduce(dy: Arr, outShape: readonly number[], bShape: readonly number[], s = 1, a?: Arr): Float64Array {
  const nd = outShape.length;
  const bs = [...Array(nd - bShape.length).fill(1), ...bShape];
  const bStride: number[] = new Array(nd).fill(0);
  let st = 1;
  for (let i = nd - 1; i >= 0; i--) {
    bStride[i] = bs[i] === 1 ? 0 : st;
    st *= bs[i];
  }
  const db = new Float64Array(st);
  const idx = new Array(nd).fill(0);
  for (let i = 0; i < dy.length; i++) {
    let bi = 0;
    for (let d = 0; d < nd; d++) bi += idx[d] * bStride[d];
    db[bi] += dy[i] * (a ? a[i] : 1);
    for (let d = nd - 1; d >= 0; d--) {
      if (++idx[d] < outShape[d]) break;
      idx[d] = 0;
    }
  }
  for (let i = 0; i < db.length; i++) db[i] *= s;
  return db;
}

/** Nearest 2x upsampling backward: dy [B,2H,2W,C] -> dx [B,H,W,C] (sum of the 4 children). */
export function refUpsample2xBackward(dy: Arr, B: number, H: number, W: number, C: number): Float64Array {
  const dx = new Float64Array(B * H * W * C);
  for (let b = 0; b < B; b++)
    for (let oh = 0; oh < 2 * H; oh++)
      for (let ow = 0; ow < 2 * W; ow++)
        for (let c = 0; c < C; c++) dx[((b * H + (oh >> 1)) * W + (ow >> 1)) * C + c] += dy[((b * 2 * H + oh) * 2 * W + ow) * C + c];
  return dx;
}

/** Channel concat backward: dy [P, ca + cb] -> da [P, ca], db [P, cb]. */
export function refConcatChannelsBackward(dy: Arr, P: number, ca: number, cb: number) {
  const da = new Float64Array(P * ca);
  const db = new Float64Array(P * cb);
  for (let p = 0; p < P; p++) {
    for (let c = 0; c < ca; c++) da[p * ca + c] = dy[p * (ca + cb) + c];
    for (let c = 0; c < cb; c++) db[p * cb + c] = dy[p * (ca + cb) + ca + c];
  }
  return { da, db };
}
