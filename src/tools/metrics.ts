// The metrics of the quality evaluation: FID between Gaussians fitted to feature vectors, PSNR, accuracy.
//
// FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(sqrt(S1) S2 sqrt(S1)), covariances unbiased (N-1,
// like numpy.cov in pytorch-fid), everything in float64. sqrt(S1) and the eigenvalues of the symmetric
// PSD product come from a cyclic Jacobi eigendecomposition; tiny negative eigenvalues (round-off, or a
// rank-deficient covariance when n <= 128) are clamped to 0.

/** A metric cannot be computed from its inputs (the evaluation's error class). */
export class EvalError extends Error {}

// ---------------------------------------------------------------------------------------------------
// linear algebra (float64)

/**
 * Eigendecomposition of a symmetric n x n matrix (row-major; only read) by cyclic Jacobi rotations.
 * Returns eigenvalues (unsorted) and eigenvectors as the COLUMNS of `vectors` (row-major n x n):
 * A = V diag(values) V^T.
 */
export function symmetricEigen(A: ArrayLike<number>, n: number, opts: { maxSweeps?: number } = {}): { values: Float64Array; vectors: Float64Array } {
  if (A.length !== n * n) throw new RangeError(`symmetricEigen: ${A.length} values for a ${n}x${n} matrix`);
  const a = Float64Array.from(A);
  // symmetrise (inputs are symmetric up to round-off)
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const m = 0.5 * (a[i * n + j] + a[j * n + i]);
      a[i * n + j] = a[j * n + i] = m;
    }
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  const maxSweeps = opts.maxSweeps ?? 100;
  let total = 0;
  for (let i = 0; i < n * n; i++) total += a[i] * a[i];
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) off += a[i * n + j] * a[i * n + j];
    if (off <= 1e-30 * total || off === 0) break;
    for (let p = 0; p < n - 1; p++)
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        const app = a[p * n + p];
        const aqq = a[q * n + q];
        // skip rotations that cannot change the diagonal any more (after a few sweeps)
        if (sweep > 3 && Math.abs(apq) < 1e-300 + 1e-18 * Math.min(Math.abs(app), Math.abs(aqq))) {
          a[p * n + q] = a[q * n + p] = 0;
          continue;
        }
        const theta = (aqq - app) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        // A <- J^T A J with J the rotation in the (p, q) plane: columns, then rows
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        a[p * n + q] = a[q * n + p] = 0;
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i];
  return { values, vectors: v };
}

/** Square root of a symmetric PSD matrix: V diag(sqrt(max(l, 0))) V^T. */
export function sqrtmPsd(A: ArrayLike<number>, n: number): Float64Array {
  const { values, vectors: V } = symmetricEigen(A, n);
  const r = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const s = Math.sqrt(Math.max(values[k], 0));
    if (s === 0) continue;
    for (let i = 0; i < n; i++) {
      const vik = V[i * n + k] * s;
      if (vik === 0) continue;
      for (let j = 0; j < n; j++) r[i * n + j] += vik * V[j * n + k];
    }
  }
  return r;
}

/** C = A B for n x n row-major matrices (f64). */
export function matmulSq(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k];
      if (aik === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j] += aik * b[k * n + j];
    }
  return c;
}

// ---------------------------------------------------------------------------------------------------
// FID

export interface GaussianStats {
  /** Feature dimension. */
  dim: number;
  /** Number of samples. */
  count: number;
  mean: Float64Array;
  /** Unbiased covariance (divides by count - 1), row-major dim x dim. */
  cov: Float64Array;
}

/** Mean and unbiased covariance of `count` feature rows of width `dim` (row-major), in float64. */
export function featureStats(features: ArrayLike<number>, dim: number): GaussianStats {
  if (!(Number.isInteger(dim) && dim > 0) || features.length % dim) throw new RangeError(`featureStats: ${features.length} values is not a whole number of rows of ${dim}`);
  const count = features.length / dim;
  if (count < 2) throw new EvalError(`featureStats: need at least 2 samples for a covariance, got ${count}`);
  const mean = new Float64Array(dim);
  for (let r = 0; r < count; r++) for (let j = 0; j < dim; j++) mean[j] += features[r * dim + j];
  for (let j = 0; j < dim; j++) mean[j] /= count;
  const cov = new Float64Array(dim * dim);
  const d = new Float64Array(dim);
  for (let r = 0; r < count; r++) {
    for (let j = 0; j < dim; j++) d[j] = features[r * dim + j] - mean[j];
    for (let i = 0; i < dim; i++) {
      const di = d[i];
      if (di === 0) continue;
      const row = i * dim;
      for (let j = i; j < dim; j++) cov[row + j] += di * d[j];
    }
  }
  for (let i = 0; i < dim; i++)
    for (let j = i; j < dim; j++) {
      const c = cov[i * dim + j] / (count - 1);
      cov[i * dim + j] = cov[j * dim + i] = c;
    }
  return { dim, count, mean, cov };
}

/** Fréchet distance between N(mu1, S1) and N(mu2, S2): |mu1-mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(sqrt(S1) S2 sqrt(S1)). */
export function frechetDistance(a: { mean: ArrayLike<number>; cov: ArrayLike<number> }, b: { mean: ArrayLike<number>; cov: ArrayLike<number> }): number {
  const n = a.mean.length;
  if (b.mean.length !== n || a.cov.length !== n * n || b.cov.length !== n * n)
    throw new RangeError(`frechetDistance: dims differ (means ${a.mean.length}, ${b.mean.length}; covariances ${a.cov.length}, ${b.cov.length})`);
  let dm = 0;
  for (let i = 0; i < n; i++) dm += (a.mean[i] - b.mean[i]) ** 2;
  let tr = 0;
  for (let i = 0; i < n; i++) tr += a.cov[i * n + i] + b.cov[i * n + i];
  const s1 = sqrtmPsd(a.cov, n);
  const m = matmulSq(matmulSq(s1, Float64Array.from(b.cov), n), s1, n);
  const { values } = symmetricEigen(m, n);
  let trSqrt = 0;
  for (const l of values) trSqrt += Math.sqrt(Math.max(l, 0));
  return dm + tr - 2 * trSqrt;
}

/** FID between two feature sets (rows of width dim). */
export function fid(featuresA: ArrayLike<number>, featuresB: ArrayLike<number>, dim: number): number {
  return frechetDistance(featureStats(featuresA, dim), featureStats(featuresB, dim));
}

// ---------------------------------------------------------------------------------------------------
// PSNR and accuracy

/** Mean squared error between two equal-length arrays, in float64. */
export function mse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`mse: lengths differ (${a.length} vs ${b.length})`);
  if (a.length === 0) throw new RangeError("mse: empty input");
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return s / a.length;
}

/** PSNR in dB: 10 log10(peak^2 / mse); Infinity for identical inputs. Default peak 255 (8-bit images). */
export function psnr(a: ArrayLike<number>, b: ArrayLike<number>, peak = 255): number {
  const e = mse(a, b);
  return e === 0 ? Infinity : 10 * Math.log10((peak * peak) / e);
}

export interface PsnrSummary {
  /** Mean of the per-image PSNRs over the images that differ (Infinity when all are identical). */
  mean: number;
  /** Smallest per-image PSNR. */
  min: number;
  /** Images bit-identical to their reference (infinite PSNR, left out of the mean). */
  identical: number;
}

/** Summarises per-image PSNRs (see PsnrSummary). */
export function summarizePsnr(values: readonly number[]): PsnrSummary {
  const finite = values.filter((v) => Number.isFinite(v));
  const mean = finite.length ? finite.reduce((s, v) => s + v, 0) / finite.length : Infinity;
  return { mean, min: values.length ? Math.min(...values) : NaN, identical: values.length - finite.length };
}

/** Fraction of predictions equal to their labels. */
export function accuracy(predictions: ArrayLike<number>, labels: ArrayLike<number>): number {
  if (predictions.length !== labels.length) throw new RangeError(`accuracy: ${predictions.length} predictions for ${labels.length} labels`);
  let c = 0;
  for (let i = 0; i < labels.length; i++) if (predictions[i] === labels[i]) c++;
  return labels.length ? c / labels.length : NaN;
}

// ---------------------------------------------------------------------------------------------------
// the evaluation run

