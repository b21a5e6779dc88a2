// Plain-TypeScript reference implementations (f64 arithmetic) of the FP32 ops in src/nn/{elementwise,
// norm,attention}.ts, on flat arrays in the same layouts. Slow and simple on purpose: tests compare
// the kernels against these.

/** Full numpy-style broadcast of b over a (a's shape is the output shape). */
export function refBinary(a: ArrayLike<number>, aShape: readonly number[], b: ArrayLike<number>, bShape: readonly number[], f: (x: number, y: number) => number): Float32Array {
  const n = aShape.reduce((x, y) => x * y, 1);
  const out = new Float32Array(n);
  const nd = aShape.length;
  const bs = [...Array(nd - bShape.length).fill(1), ...bShape];
  const bStride: number[] = new Array(nd).fill(0);
  let s = 1;
  for (let i = nd - 1; i >= 0; i--) {
    bStride[i] = bs[i] === 1 ? 0 : s;
    s *= bs[i];
  }
  const idx = new Array(nd).fill(0);
  for (let i = 0; i < n; i++) {
    let bi = 0;
    for (let d = 0; d < nd; d++) bi += idx[d] * bStride[d];
    out[i] = f(a[i], b[bi]);
    for (let d = nd - 1; d >= 0; d--) {
      if (++idx[d] < aShape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

export const refAdd = (a: ArrayLike<number>, aShape: readonly number[], b: ArrayLike<number>, bShape: readonly number[]) => refBinary(a, aShape, b, bShape, (x, y) => x + y);
export const refMul = (a: ArrayLike<number>, aShape: readonly number[], b: ArrayLike<number>, bShape: readonly number[]) => refBinary(a, aShape, b, bShape, (x, y) => x * y);

/** erf in double precision (Taylor series below 3, continued fraction above); |error| < 1e-15. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  let r: number;
  if (ax < 3) {
    let s = 0;
    let term = ax;
    for (let n = 0; n < 200; n++) {
      const c = term / (2 * n + 1);
      s += c;
      term *= (-ax * ax) / (n + 1);
      if (Math.abs(c) < 1e-17 * Math.abs(s)) break;
    }
    r = (s * 2) / Math.sqrt(Math.PI);
  } else {
    let cf = 0;
    for (let k = 80; k >= 1; k--) cf = k / 2 / (ax + cf);
    r = 1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + cf);
  }
  return x < 0 ? -r : r;
}

const map = (x: ArrayLike<number>, f: (v: number) => number) => Float32Array.from(x as ArrayLike<number>, f);
export const refSilu = (x: ArrayLike<number>) => map(x, (v) => v / (1 + Math.exp(-v)));
export const refGeluScalar = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
export const refGelu = (x: ArrayLike<number>) => map(x, refGeluScalar);
export const refQuickGelu = (x: ArrayLike<number>) => map(x, (v) => v / (1 + Math.exp(-1.702 * v)));
export const refScale = (x: ArrayLike<number>, s: number) => map(x, (v) => v * s);

/** x [rows, 2N] -> [rows, N]: x[:, :N] * gelu(x[:, N:]) */
export function refGeglu(x: ArrayLike<number>, rows: number, N: number): Float32Array {
  const out = new Float32Array(rows * N);
  for (let r = 0; r < rows; r++) for (let j = 0; j < N; j++) out[r * N + j] = x[r * 2 * N + j] * refGeluScalar(x[r * 2 * N + N + j]);
  return out;
}

export function refUpsample2x(x: ArrayLike<number>, B: number, H: number, W: number, C: number): Float32Array {
  const out = new Float32Array(B * 4 * H * W * C);
  for (let b = 0; b < B; b++)
    for (let oh = 0; oh < 2 * H; oh++)
      for (let ow = 0; ow < 2 * W; ow++)
        for (let c = 0; c < C; c++) out[((b * 2 * H + oh) * 2 * W + ow) * C + c] = x[((b * H + (oh >> 1)) * W + (ow >> 1)) * C + c];
  return out;
}

export function refConcatChannels(a: ArrayLike<number>, b: ArrayLike<number>, P: number, ca: number, cb: number): Float32Array {
  const out = new Float32Array(P * (ca + cb));
  for (let p = 0; p < P; p++) {
    for (let c = 0; c < ca; c++) out[p * (ca + cb) + c] = a[p * ca + c];
    for (let c = 0; c < cb; c++) out[p * (ca + cb) + ca + c] = b[p * cb + c];
  }
  return out;
}

/** GroupNorm in f64 on NHWC x [B, HW, C] (optionally with SiLU): y, and mean/rstd [B, G]. */
export function groupNormF64(x: ArrayLike<number>, B: number, HW: number, C: number, G: number, gamma: ArrayLike<number>, beta: ArrayLike<number>, eps: number, silu = false) {
  const y = new Float64Array(B * HW * C);
  const mean = new Float64Array(B * G);
  const rstd = new Float64Array(B * G);
  const cpg = C / G;
  for (let b = 0; b < B; b++)
    for (let g = 0; g < G; g++) {
      let s = 0;
      for (let p = 0; p < HW; p++) for (let c = g * cpg; c < (g + 1) * cpg; c++) s += x[(b * HW + p) * C + c];
      const m = s / (HW * cpg);
      let v = 0;
      for (let p = 0; p < HW; p++) for (let c = g * cpg; c < (g + 1) * cpg; c++) v += (x[(b * HW + p) * C + c] - m) ** 2;
      const r = 1 / Math.sqrt(v / (HW * cpg) + eps);
      mean[b * G + g] = m;
      rstd[b * G + g] = r;
      for (let p = 0; p < HW; p++)
        for (let c = g * cpg; c < (g + 1) * cpg; c++) {
          const i = (b * HW + p) * C + c;
          const t = (x[i] - m) * r * gamma[c] + beta[c];
          y[i] = silu ? t / (1 + Math.exp(-t)) : t;
        }
    }
  return { y, mean, rstd };
}

/** GroupNorm on NHWC x [B, HW, C]; returns the output (f32) and per-(b, g) mean and rstd. */
export function refGroupNorm(x: ArrayLike<number>, B: number, HW: number, C: number, G: number, gamma: ArrayLike<number>, beta: ArrayLike<number>, eps: number, silu = false) {
  const { y, mean, rstd } = groupNormF64(x, B, HW, C, G, gamma, beta, eps, silu);
  return { out: Float32Array.from(y), mean, rstd };
}

/** LayerNorm in f64 over the last dim C of x [rows, C]: y, and mean/rstd [rows]. */
export function layerNormF64(x: ArrayLike<number>, rows: number, C: number, gamma: ArrayLike<number>, beta: ArrayLike<number>, eps: number) {
  const y = new Float64Array(rows * C);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[r * C + c];
    const m = s / C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c] - m) ** 2;
    const rs = 1 / Math.sqrt(v / C + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let c = 0; c < C; c++) y[r * C + c] = (x[r * C + c] - m) * rs * gamma[c] + beta[c];
  }
  return { y, mean, rstd };
}

/** LayerNorm over the last dim C of x [rows, C]; returns the output (f32) and per-row mean and rstd. */
export function refLayerNorm(x: ArrayLike<number>, rows: number, C: number, gamma: ArrayLike<number>, beta: ArrayLike<number>, eps: number) {
  const { y, mean, rstd } = layerNormF64(x, rows, C, gamma, beta, eps);
  return { out: Float32Array.from(y), mean, rstd };
}

/** Softmax over rows of N. */
export function refSoftmax(x: ArrayLike<number>, rows: number, N: number): Float32Array {
  const out = new Float32Array(rows * N);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let j = 0; j < N; j++) m = Math.max(m, x[r * N + j]);
    let s = 0;
    const e = new Float64Array(N);
    for (let j = 0; j < N; j++) s += e[j] = Math.exp(x[r * N + j] - m);
    for (let j = 0; j < N; j++) out[r * N + j] = e[j] / s;
  }
  return out;
}

/** Multi-head attention, q [B,Lq,H*D], k/v [B,Lk,H*D]; causal masks j > i. Returns out and lse [B,H,Lq]. */
export function refAttention(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, B: number, Lq: number, Lk: number, H: number, D: number, scale = 1 / Math.sqrt(D), causal = false) {
  const HD = H * D;
  const out = new Float32Array(B * Lq * HD);
  const lse = new Float64Array(B * H * Lq);
  const s = new Float64Array(Lk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Lq; i++) {
        let m = -Infinity;
        const nk = causal ? Math.min(Lk, i + 1) : Lk;
        for (let j = 0; j < nk; j++) {
          let d = 0;
          for (let t = 0; t < D; t++) d += q[(b * Lq + i) * HD + h * D + t] * k[(b * Lk + j) * HD + h * D + t];
          s[j] = d * scale;
          m = Math.max(m, s[j]);
        }
        let sum = 0;
        for (let j = 0; j < nk; j++) sum += s[j] = Math.exp(s[j] - m);
        lse[(b * H + h) * Lq + i] = m + Math.log(sum);
        for (let t = 0; t < D; t++) {
          let acc = 0;
          for (let j = 0; j < nk; j++) acc += s[j] * v[(b * Lk + j) * HD + h * D + t];
          out[(b * Lq + i) * HD + h * D + t] = acc / sum;
        }
      }
  return { out, lse };
}

// ---------------------------------------------------------------------------------------------
// Test helpers: deterministic random data and error metrics.

/** Deterministic PRNG (mulberry32) with uniform() in [0,1) and normal() samples. */
export function rng(seed: number) {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return {
    uniform,
    normal,
    normals: (n: number, std = 1, mean = 0) => Float32Array.from({ length: n }, () => mean + std * normal()),
    uniforms: (n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * uniform()),
  };
}

/** max |a - ref| / max |ref| (0 for an all-zero reference compared with zeros). */
export function relErr(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (a.length !== ref.length) throw new Error(`relErr: lengths ${a.length} and ${ref.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - ref[i]);
    num = Number.isNaN(d) ? Infinity : Math.max(num, d);
    den = Math.max(den, Math.abs(ref[i]));
  }
  return den === 0 ? num : num / den;
}

/** Index of the first element whose bits differ, or -1 when a and b are bit-identical. */
export function firstBitDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return 0;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return i;
  return -1;
}
