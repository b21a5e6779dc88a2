// Plain-TypeScript references (f64) of the normalisation backward kernels (assembly/norm_backward.ts), flat
// arrays in the kernels' layouts.

type Arr = ArrayLike<number>;

// the f64 forwards the finite-difference checks differentiate (one copy, beside the f32 references)
export { groupNormF64, layerNormF64 } from "./ops.ts";

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/**
 * GroupNorm backward: dy [B, HW, C] (the gradient of the output, i.e. of silu(y) when silu), x the forward
 * input, mean/rstd [B, G] the forward's statistics. Returns dx, dGamma, dBeta.
 */
export function refGroupNormBackward(dy: Arr, x: Arr, B: number, HW: number, C: number, G: number, gamma: Arr, beta: Arr, mean: Arr, rstd: Arr, silu = false) {
  const cpg = C / G;
  const N = HW * cpg;
  const dx = new Float64Array(B * HW * C);
  const dGamma = new Float64Array(C);
  const dBeta = new Float64Array(C);
  const dyy = new Float64Array(B * HW * C); // gradient of the norm output y
  const xh = new Float64Array(B * HW * C);
  for (let b = 0; b < B; b++)
    for (let p = 0; p < HW; p++)
      for (let c = 0; c < C; c++) {
        const i = (b * HW + p) * C + c;
        const g = b * G + Math.floor(c / cpg);
        xh[i] = (x[i] - mean[g]) * rstd[g];
        const y = xh[i] * gamma[c] + beta[c];
        const s = sigmoid(y);
        dyy[i] = silu ? dy[i] * s * (1 + y * (1 - s)) : dy[i];
        dGamma[c] += dyy[i] * xh[i];
        dBeta[c] += dyy[i];
      }
  for (let b = 0; b < B; b++)
    for (let g = 0; g < G; g++) {
      let a = 0, m = 0;
      for (let p = 0; p < HW; p++)
        for (let c = g * cpg; c < (g + 1) * cpg; c++) {
          const i = (b * HW + p) * C + c;
          a += dyy[i] * gamma[c];
          m += dyy[i] * gamma[c] * xh[i];
        }
      a /= N;
      m /= N;
      const r = rstd[b * G + g];
      for (let p = 0; p < HW; p++)
        for (let c = g * cpg; c < (g + 1) * cpg; c++) {
          const i = (b * HW + p) * C + c;
          dx[i] = r * (dyy[i] * gamma[c] - a - xh[i] * m);
        }
    }
  return { dx, dGamma, dBeta };
}

/** LayerNorm backward: dy, x [rows, C], mean/rstd [rows]. Returns dx, dGamma, dBeta. */
export function refLayerNormBackward(dy: Arr, x: Arr, rows: number, C: number, gamma: Arr, mean: Arr, rstd: Arr) {
  const dx = new Float64Array(rows * C);
  const dGamma = new Float64Array(C);
  const dBeta = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    let a = 0, m = 0;
    for (let c = 0; c < C; c++) {
      const i = r * C + c;
      const xh = (x[i] - mean[r]) * rstd[r];
      a += dy[i] * gamma[c];
      m += dy[i] * gamma[c] * xh;
      dGamma[c] += dy[i] * xh;
      dBeta[c] += dy[i];
    }
    a /= C;
    m /= C;
    for (let c = 0; c < C; c++) {
      const i = r * C + c;
      const xh = (x[i] - mean[r]) * rstd[r];
      dx[i] = rstd[r] * (dy[i] * gamma[c] - a - xh * m);
    }
  }
  return { dx, dGamma, dBeta };
}
