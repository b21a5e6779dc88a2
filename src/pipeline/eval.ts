// Quality evaluation of the pipeline on fashion-sd-tiny, as in the reference table (shared/README.md):
//
//   - generate n images, prompt "a photo of a {class}" with the classes in label order (n/10 each),
//     image i from seed seed0 + i (so every precision starts from the same initial latents), `batch` images
//     per UNet/VAE call (generateBatch: bit-identical to one at a time, so the batch size changes nothing);
//   - FID: Fréchet distance between Gaussians fitted to the fashion classifier's 128-d fc1 features
//     (after ReLU) of the generated images and of the 10k Fashion-MNIST test images;
//   - prompt accuracy: fraction of images the classifier assigns to the prompt's class;
//   - PSNR (8-bit RGB, peak 255) of each image against the FP32 image of the same seed, averaged.
//
// FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(sqrt(S1) S2 sqrt(S1)), covariances unbiased (N-1,
// like numpy.cov in pytorch-fid), everything in float64. sqrt(S1) and the eigenvalues of the symmetric
// PSD product come from a cyclic Jacobi eigendecomposition; tiny negative eigenvalues (round-off, or a
// rank-deficient covariance when n <= 128) are clamped to 0.
import * as fs from "node:fs";
import * as path from "node:path";
import { Engine } from "../runtime/engine.ts";
import { FashionClassifier, rgb8ToInput, u8ImagesToInput, CLASSIFIER_SIZE } from "../models/classifier.ts";
import { readIdxImages } from "../io/idx.ts";
import { SafetensorsFile, writeSafetensors } from "../io/safetensors.ts";
import { StableDiffusionPipeline } from "./pipeline.ts";
import { parsePrecisionSpec, precisionsToLoad, precisionsUsed } from "./precision.ts";
import type { Precision } from "../models/precision.ts";
import { writePng } from "./png.ts";

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

function matmulSq(a: Float64Array, b: Float64Array, n: number): Float64Array {
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

/** The prompt for a class, as in the training captions and the reference metrics. */
export function promptFor(className: string): string {
  return `a photo of a ${className}`;
}

/** Labels of the n images: classes in label order, n / numClasses consecutive images each. */
export function evalLabels(n: number, numClasses: number): Int32Array {
  if (!Number.isInteger(n) || n < numClasses || n % numClasses)
    throw new EvalError(`the number of images must be a positive multiple of ${numClasses} (one equal share per class), got ${n}`);
  const per = n / numClasses;
  return Int32Array.from({ length: n }, (_, i) => Math.floor(i / per));
}

export interface EvalOptions {
  /** diffusers pipeline folder. */
  model: string;
  /** Fashion classifier folder (config.json + model.safetensors). */
  classifierDir: string;
  /** Folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. */
  dataDir: string;
  n: number;
  steps: number;
  guidance: number;
  scheduler: string;
  /** "fp32", or a precision generate() accepts ("bf16", "int8", "mixed:K", a schedule string). */
  precision: string;
  seed0: number;
  threads?: number;
  memoryBytes?: number;
  simd?: "auto" | "relaxed" | "baseline";
  /** Write every generated image as PNG here (NNNN-class.png). */
  outDir?: string;
  /** Write the generated images (u8 [n,H,W,3]) with the run's settings to this safetensors file. */
  saveImages?: string;
  /** FP32 images of the same seeds and settings (a file written by saveImages on an fp32 run): PSNR against these. */
  referenceImages?: string;
  /** INT8 activation ranges (default: the model's unet/stepq-calibration.json). */
  calibration?: string;
  /** When precision is not fp32 and no referenceImages: generate FP32 images too for PSNR (default true). */
  fp32Reference?: boolean;
  /**
   * Images per generateBatch() call (default 20, clamped to n). Results do not depend on it: every image
   * is bit-identical to generating it alone.
   */
  batch?: number;
  /** Classifier batch (default 250). */
  classifierBatch?: number;
  onProgress?: (p: EvalProgress) => void;
  onLog?: (message: string) => void;
}

export interface EvalProgress {
  /** Images done (of the evaluated precision). */
  done: number;
  total: number;
  elapsedMs: number;
  /** Estimated milliseconds left. */
  etaMs: number;
  /** Milliseconds per image (including its FP32 reference when one is generated). */
  perImageMs: number;
}

export interface EvalResult {
  precision: string;
  n: number;
  steps: number;
  guidance: number;
  scheduler: string;
  seed0: number;
  fid: number;
  prompt_accuracy: number;
  /** Mean per-image PSNR (dB) vs FP32 over the images that differ; null when not measured; Infinity if all identical. */
  psnr_vs_fp32: number | null;
  psnr_min: number | null;
  psnr_identical_images: number | null;
  /** Where the FP32 images came from: "generated", a file, or null. */
  psnr_reference: string | null;
  /** Prompt accuracy per class, in label order. */
  per_class_accuracy: number[];
  /** The classifier's accuracy on the test set (a sanity check; reference 0.9088). */
  classifier_test_accuracy: number;
  seconds: number;
  generate_seconds: number;
  threads: number;
  /** Images per generateBatch() call (the results do not depend on it). */
  batch: number;
  /** The INT8 calibration file used (absolute path); null when the run has no INT8 step or INT8 comes from converted weights. */
  calibration: string | null;
  /** Whether that calibration has per-timestep ranges (stepq calibrate --per-step); null as above. */
  calibration_per_step: boolean | null;
}

const IMAGES_TENSOR = "images";

/** Reads a --reference-images file and checks its settings match this run. */
export function readReferenceImages(file: string, want: { n: number; steps: number; guidance: number; scheduler: string; seed0: number; width: number; height: number; model?: string }): Uint8Array {
  let st: SafetensorsFile;
  try {
    st = SafetensorsFile.open(file);
  } catch (e) {
    throw new EvalError(`--reference-images ${file}: ${(e as Error).message}`);
  }
  try {
    if (!st.has(IMAGES_TENSOR)) throw new EvalError(`--reference-images ${file}: no "${IMAGES_TENSOR}" tensor (write one with --save-images on an fp32 run)`);
    const info = st.info(IMAGES_TENSOR);
    const [n, h, w, c] = info.shape;
    if (info.dtype !== "U8" || info.shape.length !== 4 || c !== 3)
      throw new EvalError(`--reference-images ${file}: "${IMAGES_TENSOR}" is ${info.dtype} [${info.shape}], expected U8 [n,H,W,3]`);
    const meta = st.metadata;
    const problems: string[] = [];
    if (meta.precision !== undefined && meta.precision !== "fp32") problems.push(`it holds ${meta.precision} images, not fp32`);
    for (const k of ["steps", "seed0"] as const) if (meta[k] !== undefined && Number(meta[k]) !== want[k]) problems.push(`${k} ${meta[k]} (this run: ${want[k]})`);
    if (meta.guidance !== undefined && Number(meta.guidance) !== want.guidance) problems.push(`guidance ${meta.guidance} (this run: ${want.guidance})`);
    if (meta.scheduler !== undefined && meta.scheduler !== want.scheduler) problems.push(`scheduler ${meta.scheduler} (this run: ${want.scheduler})`);
    if (meta.n !== undefined && Number(meta.n) !== want.n) problems.push(`n ${meta.n} (this run: ${want.n}; the prompts of image i depend on n)`);
    if (n !== want.n) problems.push(`${n} images (this run: ${want.n})`);
    if (h !== want.height || w !== want.width) problems.push(`${w}x${h} images (this run: ${want.width}x${want.height})`);
    if (problems.length) throw new EvalError(`--reference-images ${file} does not match this run: ${problems.join("; ")}`);
    return st.readRaw(IMAGES_TENSOR);
  } finally {
    st.close();
  }
}

/** Whether this pipeline's generate() takes a `precision` option (added by the precision work). */
export function pipelineAcceptsPrecision(pipe: StableDiffusionPipeline): boolean {
  const p = pipe as unknown as { supportsPrecision?: (s: string) => boolean };
  if (typeof p.supportsPrecision === "function") return true;
  // Until then generate() ignores unknown options, which would silently run FP32: look for the option.
  return /\bprecision\b/.test(Function.prototype.toString.call(pipe.generate));
}

/** Class names of a classifier folder's config.json (cheap: no weights loaded). */
export function classifierClasses(dir: string): string[] {
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
  if (!Array.isArray(cfg.classes)) throw new EvalError(`${dir}/config.json: no "classes" list`);
  return cfg.classes;
}

interface TestSetEntry {
  stats: GaussianStats;
  accuracy: number;
  count: number;
}
const testSetCache = new Map<string, TestSetEntry>();

/**
 * Classifier features of the 10k test images: Gaussian statistics and the classifier's accuracy. Computed
 * once per process for a (classifier, data) pair and kept in memory (a few hundred KB).
 */
export function testSetStats(clf: FashionClassifier, classifierDir: string, dataDir: string, batch = 250): TestSetEntry & { cached: boolean; ms: number } {
  const key = `${path.resolve(classifierDir)}\0${path.resolve(dataDir)}`;
  const hit = testSetCache.get(key);
  if (hit) return { ...hit, cached: true, ms: 0 };
  const t0 = performance.now();
  const test = readIdxImages(path.join(dataDir, "t10k-images-idx3-ubyte.gz"), path.join(dataDir, "t10k-labels-idx1-ubyte.gz"));
  if (test.rows !== CLASSIFIER_SIZE || test.cols !== CLASSIFIER_SIZE) throw new EvalError(`${dataDir}: test images are ${test.rows}x${test.cols}, expected ${CLASSIFIER_SIZE}x${CLASSIFIER_SIZE}`);
  const out = clf.classify(u8ImagesToInput(test.images), { batch });
  const entry = { stats: featureStats(out.features, clf.featureDim), accuracy: accuracy(out.predictions, test.labels!), count: test.count };
  testSetCache.set(key, entry);
  return { ...entry, cached: false, ms: performance.now() - t0 };
}

/** Runs the whole evaluation (see the file header). */
export async function runEval(o: EvalOptions): Promise<EvalResult> {
  const t0 = performance.now();
  const log = o.onLog ?? (() => {});
  const classes = classifierClasses(o.classifierDir);
  const labels = evalLabels(o.n, classes.length);
  if (!Number.isInteger(o.seed0) || o.seed0 < 0 || o.seed0 + o.n - 1 > 0xffffffff) throw new EvalError(`seed0 + n - 1 must fit in 0..4294967295, got seed0 ${o.seed0}, n ${o.n}`);

  // load the UNet variants the precision uses (plus fp32 when FP32 reference images are generated)
  let used: Precision[];
  try {
    used = precisionsUsed(parsePrecisionSpec(o.precision, o.steps));
  } catch (e) {
    throw new EvalError(`--precision: ${(e as Error).message}`);
  }
  const willGenRef = o.precision !== "fp32" && !o.referenceImages && o.fp32Reference !== false;
  const batch = Math.min(o.batch ?? 20, o.n);
  if (!(Number.isInteger(batch) && batch >= 1)) throw new EvalError(`batch must be a positive integer, got ${o.batch}`);
  const precisions = precisionsUsed(willGenRef ? [...used, "fp32"] : used);
  const pipe = await StableDiffusionPipeline.load(o.model, {
    threads: o.threads,
    memoryBytes: o.memoryBytes,
    simd: o.simd,
    onWarning: (m) => log(`warning: ${m}`),
    precisions: precisionsToLoad(precisions),
    calibration: o.calibration,
    batch,
  });
  let clsEng: Engine | null = null;
  try {
    const lowp = o.precision !== "fp32";
    if (lowp && !pipelineAcceptsPrecision(pipe))
      throw new EvalError(`precision "${o.precision}" is not available yet: this build's pipeline generate() has no precision option (only fp32 works)`);
    const width = pipe.defaultWidth;
    const height = pipe.defaultHeight;
    const px = width * height * 3;

    // the FP32 reference for PSNR
    let refImages: Uint8Array | null = null;
    let refLabel: string | null = null;
    if (o.referenceImages) {
      refImages = readReferenceImages(o.referenceImages, { n: o.n, steps: o.steps, guidance: o.guidance, scheduler: o.scheduler, seed0: o.seed0, width, height });
      refLabel = o.referenceImages;
    }
    const genRef = lowp && !refImages && o.fp32Reference !== false;
    if (genRef) refLabel = "generated";

    // classifier and the test-set statistics
    clsEng = await Engine.create({ threads: pipe.engine.threads, memoryBytes: 192 << 20, simd: o.simd });
    const clf = FashionClassifier.load(clsEng, o.classifierDir);
    const test = testSetStats(clf, o.classifierDir, o.dataDir, o.classifierBatch);
    log(`test set: ${test.count} images, classifier accuracy ${test.accuracy.toFixed(4)}${test.cached ? " (cached)" : ` (${(test.ms / 1000).toFixed(1)} s)`}`);
    const testStats = test.stats;
    const testAcc = test.accuracy;
    const refAcc = clf.config.test_accuracy;
    if (typeof refAcc === "number" && Math.abs(testAcc - refAcc) > 0.005)
      log(`warning: the classifier's test accuracy ${testAcc.toFixed(4)} differs from the reference ${refAcc} by more than 0.005: its features (and so FID) are suspect`);

    if (o.outDir) fs.mkdirSync(o.outDir, { recursive: true });
    const images = new Uint8Array(o.n * px);
    const inputs = new Float32Array(o.n * CLASSIFIER_SIZE * CLASSIFIER_SIZE);
    const psnrs: number[] = [];
    const tGen = performance.now();
    // images i0..i0+batch-1 in one generateBatch call each; image i keeps prompt(label i) and seed seed0+i, and
    // batched images are bit-identical to single ones, so results do not depend on the batch size
    for (let i0 = 0; i0 < o.n; i0 += batch) {
      const idx = Array.from({ length: Math.min(batch, o.n - i0) }, (_, k) => i0 + k);
      const base = {
        prompts: idx.map((i) => promptFor(classes[labels[i]])),
        seeds: idx.map((i) => o.seed0 + i),
        steps: o.steps,
        guidance: o.guidance,
        scheduler: o.scheduler,
      };
      const res = await pipe.generateBatch(lowp ? { ...base, precision: o.precision } : base);
      const refRes = genRef ? await pipe.generateBatch({ ...base, precision: "fp32" }) : null;
      idx.forEach((i, k) => {
        const img = res.images[k];
        if (img.width !== width || img.height !== height) throw new EvalError(`generate returned ${img.width}x${img.height}, expected ${width}x${height}`);
        images.set(img.image, i * px);
        rgb8ToInput(img.image, width, height, 3, inputs, i * CLASSIFIER_SIZE * CLASSIFIER_SIZE);
        if (o.outDir) writePng(path.join(o.outDir, `${String(i).padStart(4, "0")}-${classes[labels[i]].replace(/[^a-z0-9]+/gi, "_")}.png`), img.image, width, height);
        let ref: Uint8Array | null = null;
        if (refImages) ref = refImages.subarray(i * px, (i + 1) * px);
        else if (refRes) ref = refRes.images[k].image;
        if (ref) psnrs.push(psnr(img.image, ref));
      });
      const done = idx[idx.length - 1] + 1;
      const el = performance.now() - tGen;
      const per = el / done;
      o.onProgress?.({ done, total: o.n, elapsedMs: el, perImageMs: per, etaMs: per * (o.n - done) });
    }
    const genMs = performance.now() - tGen;

    const gen = clf.classify(inputs, { batch: o.classifierBatch ?? 250 });
    const fidValue = frechetDistance(featureStats(gen.features, clf.featureDim), testStats);
    const perClass = classes.map((_, c) => {
      let ok = 0, tot = 0;
      for (let i = 0; i < o.n; i++) if (labels[i] === c) {
        tot++;
        if (gen.predictions[i] === c) ok++;
      }
      return ok / tot;
    });
    const ps = psnrs.length ? summarizePsnr(psnrs) : null;

    if (o.saveImages)
      writeSafetensors(o.saveImages, [{ name: IMAGES_TENSOR, dtype: "U8", shape: [o.n, height, width, 3], data: images }], {
        precision: o.precision,
        n: String(o.n),
        steps: String(o.steps),
        guidance: String(o.guidance),
        scheduler: o.scheduler,
        seed0: String(o.seed0),
        model: path.resolve(o.model),
        prompts: 'a photo of a {class}, classes in label order, n/10 each; image i uses seed seed0+i',
      });
    clf.free();
    const int8Cal = pipe.unet.precisionContext?.int8Calibration ?? null;
    return {
      precision: o.precision,
      n: o.n,
      steps: o.steps,
      guidance: o.guidance,
      scheduler: o.scheduler,
      seed0: o.seed0,
      fid: fidValue,
      prompt_accuracy: accuracy(gen.predictions, labels),
      psnr_vs_fp32: ps ? ps.mean : null,
      psnr_min: ps ? ps.min : null,
      psnr_identical_images: ps ? ps.identical : null,
      psnr_reference: refLabel,
      per_class_accuracy: perClass,
      classifier_test_accuracy: testAcc,
      seconds: (performance.now() - t0) / 1000,
      generate_seconds: genMs / 1000,
      threads: pipe.engine.threads,
      batch,
      // as the UNet loaded them
      calibration: int8Cal === null ? null : path.resolve(int8Cal),
      calibration_per_step: int8Cal === null ? null : pipe.unet.precisionContext!.stepTimesteps !== null,
    };
  } finally {
    clsEng?.close();
    pipe.close();
  }
}
