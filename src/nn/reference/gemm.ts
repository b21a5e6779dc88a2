// Plain TypeScript references for the GEMM / linear / conv kernels (float64 accumulation, no SIMD).
// Slow; for tests and for checking kernels on small shapes only.

/** C[M, N] = A[M, K] x B[K, N] (+ bias[N]), all row-major. */
export function matmulRef(a: ArrayLike<number>, b: ArrayLike<number>, M: number, K: number, N: number, bias?: ArrayLike<number> | null): Float32Array {
  const c = new Float32Array(M * N);
  const acc = new Float64Array(N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) acc[j] = bias ? bias[j] : 0;
    for (let k = 0; k < K; k++) {
      const av = a[i * K + k];
      if (av === 0) continue;
      const row = k * N;
      for (let j = 0; j < N; j++) acc[j] += av * b[row + j];
    }
    for (let j = 0; j < N; j++) c[i * N + j] = acc[j];
  }
  return c;
}

/** y[M, out] = x[M, in] x W^T + bias, with W in torch layout [out, in]. */
export function linearRef(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, M: number, inF: number, out: number): Float32Array {
  const y = new Float32Array(M * out);
  for (let i = 0; i < M; i++)
    for (let o = 0; o < out; o++) {
      let s = bias ? bias[o] : 0;
      for (let k = 0; k < inF; k++) s += x[i * inF + k] * w[o * inF + k];
      y[i * out + o] = s;
    }
  return y;
}

export interface Conv2dRefShape {
  batch: number;
  h: number;
  w: number;
  cin: number;
  cout: number;
  kh: number;
  kw: number;
  stride: number;
  /** [top, left, bottom, right] */
  padding: [number, number, number, number];
}

/** Output spatial size of a convolution. */
export function convOutSize(h: number, w: number, kh: number, kw: number, stride: number, pad: [number, number, number, number]): [number, number] {
  return [Math.floor((h + pad[0] + pad[2] - kh) / stride) + 1, Math.floor((w + pad[1] + pad[3] - kw) / stride) + 1];
}

/** NHWC convolution: x [B, H, W, Cin], weight in torch layout [Cout, Cin, kh, kw] -> y [B, Ho, Wo, Cout]. */
export function conv2dRef(x: ArrayLike<number>, weight: ArrayLike<number>, bias: ArrayLike<number> | null, s: Conv2dRefShape): { y: Float32Array; ho: number; wo: number } {
  const { batch, h, w, cin, cout, kh, kw, stride, padding } = s;
  const [ho, wo] = convOutSize(h, w, kh, kw, stride, padding);
  const y = new Float32Array(batch * ho * wo * cout);
  for (let b = 0; b < batch; b++)
    for (let oy = 0; oy < ho; oy++)
      for (let ox = 0; ox < wo; ox++)
        for (let co = 0; co < cout; co++) {
          let acc = bias ? bias[co] : 0;
          for (let ky = 0; ky < kh; ky++) {
            const iy = oy * stride - padding[0] + ky;
            if (iy < 0 || iy >= h) continue;
            for (let kx = 0; kx < kw; kx++) {
              const ix = ox * stride - padding[1] + kx;
              if (ix < 0 || ix >= w) continue;
              const xo = ((b * h + iy) * w + ix) * cin;
              for (let ci = 0; ci < cin; ci++) acc += x[xo + ci] * weight[((co * cin + ci) * kh + ky) * kw + kx];
            }
          }
          y[((b * ho + oy) * wo + ox) * cout + co] = acc;
        }
  return { y, ho, wo };
}
