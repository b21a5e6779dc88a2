// Quality evaluation of the pipeline on fashion-sd-tiny, as in the reference table (shared/README.md):
//
//   - generate n images, prompt "a photo of a {class}" with the classes in label order (n/10 each),
//     image i from seed seed0 + i (so every precision starts from the same initial latents), `batch` images
//     per UNet/VAE call (generateBatch: bit-identical to one at a time, so the batch size changes nothing);
//   - FID: Fréchet distance between Gaussians fitted to the fashion classifier's 128-d fc1 features
//     (after ReLU) of the generated images and of the 10k Fashion-MNIST test images;
//   - prompt accuracy: fraction of images the classifier assigns to the prompt's class;
//   - PSNR (8-bit RGB, peak 255) of each image against the FP32 image of the same seed, averaged.
// The maths (FID, PSNR, accuracy) is in metrics.ts.
import { host } from "../runtime/env.ts";
import { accuracy, EvalError, featureStats, fid, frechetDistance, psnr, summarizePsnr, type GaussianStats, type PsnrSummary } from "./metrics.ts";

export { EvalError };
import { Engine } from "../runtime/engine.ts";
import { FashionClassifier, rgb8ToInput, u8ImagesToInput, CLASSIFIER_SIZE } from "../models/classifier.ts";
import { readIdxImages } from "../io/idx.ts";
import { SafetensorsFile, writeSafetensors } from "../io/safetensors.ts";
import { StableDiffusionPipeline } from "../pipeline/pipeline.ts";
import { PrecisionSchedule, precisionsToLoad, precisionsUsed } from "../pipeline/schedule.ts";
import type { Precision } from "../models/precision.ts";
import { writePng } from "../io/png.ts";
import { readJsonObject } from "../io/json.ts";
import { absoluteLocation, joinLocation } from "../io/source.ts";
import { loadClassifier } from "../models/loader.ts";


/** The prompt for a class, as in the training captions and the reference metrics. */
export function promptFor(className: string): string {
  return `a photo of a ${className}`;
}

/** The file name of image i (of class className) in an out-dir: NNNN-class.png. */
export function evalImageFileName(i: number, className: string): string {
  return `${String(i).padStart(4, "0")}-${className.replace(/[^a-z0-9]+/gi, "_")}.png`;
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
  /** The int8 steps run attention on the INT8 kernels too (default false). */
  int8Attention?: boolean;
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
  /** Whether the int8 steps ran attention on the INT8 kernels (--int8-attention). */
  int8_attention: boolean;
}

const IMAGES_TENSOR = "images";

/** Reads a --reference-images file and checks its settings match this run. */
export async function readReferenceImages(file: string, want: { n: number; steps: number; guidance: number; scheduler: string; seed0: number; width: number; height: number; model?: string }): Promise<Uint8Array> {
  let st: SafetensorsFile;
  try {
    st = await SafetensorsFile.open(file);
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
    return await st.readRaw(IMAGES_TENSOR);
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
export async function classifierClasses(dir: string): Promise<string[]> {
  const cfg = await readJsonObject(joinLocation(dir, "config.json"), EvalError);
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
export async function testSetStats(clf: FashionClassifier, classifierDir: string, dataDir: string, batch = 250): Promise<TestSetEntry & { cached: boolean; ms: number }> {
  const key = `${absoluteLocation(classifierDir)}\0${absoluteLocation(dataDir)}`;
  const hit = testSetCache.get(key);
  if (hit) return { ...hit, cached: true, ms: 0 };
  const t0 = performance.now();
  const test = await readIdxImages(joinLocation(dataDir, "t10k-images-idx3-ubyte.gz"), joinLocation(dataDir, "t10k-labels-idx1-ubyte.gz"));
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
  const classes = await classifierClasses(o.classifierDir);
  const labels = evalLabels(o.n, classes.length);
  if (!Number.isInteger(o.seed0) || o.seed0 < 0 || o.seed0 + o.n - 1 > 0xffffffff) throw new EvalError(`seed0 + n - 1 must fit in 0..4294967295, got seed0 ${o.seed0}, n ${o.n}`);

  // load the UNet variants the precision uses (plus fp32 when FP32 reference images are generated)
  let schedule: PrecisionSchedule;
  try {
    schedule = PrecisionSchedule.parse(o.precision, o.steps);
  } catch (e) {
    throw new EvalError(`--precision: ${(e as Error).message}`);
  }
  const used = schedule.used;
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
    int8Attention: o.int8Attention,
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
      refImages = await readReferenceImages(o.referenceImages, { n: o.n, steps: o.steps, guidance: o.guidance, scheduler: o.scheduler, seed0: o.seed0, width, height });
      refLabel = o.referenceImages;
    }
    const genRef = lowp && !refImages && o.fp32Reference !== false;
    if (genRef) refLabel = "generated";

    // classifier and the test-set statistics
    clsEng = await Engine.create({ threads: pipe.engine.threads, memoryBytes: 192 << 20, simd: o.simd });
    const clf = await loadClassifier(clsEng, o.classifierDir);
    const test = await testSetStats(clf, o.classifierDir, o.dataDir, o.classifierBatch);
    log(`test set: ${test.count} images, classifier accuracy ${test.accuracy.toFixed(4)}${test.cached ? " (cached)" : ` (${(test.ms / 1000).toFixed(1)} s)`}`);
    const testStats = test.stats;
    const testAcc = test.accuracy;
    const refAcc = clf.config.test_accuracy;
    if (typeof refAcc === "number" && Math.abs(testAcc - refAcc) > 0.005)
      log(`warning: the classifier's test accuracy ${testAcc.toFixed(4)} differs from the reference ${refAcc} by more than 0.005: its features (and so FID) are suspect`);

    if (o.outDir) host("--out-dir").fs.mkdirSync(o.outDir, { recursive: true });
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
      const res = await pipe.generateBatch(lowp ? { ...base, precision: schedule } : base);
      const refRes = genRef ? await pipe.generateBatch({ ...base, precision: "fp32" }) : null;
      idx.forEach((i, k) => {
        const img = res.images[k];
        if (img.width !== width || img.height !== height) throw new EvalError(`generate returned ${img.width}x${img.height}, expected ${width}x${height}`);
        images.set(img.image, i * px);
        rgb8ToInput(img.image, width, height, 3, inputs, i * CLASSIFIER_SIZE * CLASSIFIER_SIZE);
        if (o.outDir) writePng(joinLocation(o.outDir, evalImageFileName(i, classes[labels[i]])), img.image, width, height);
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
        model: absoluteLocation(o.model),
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
      calibration: int8Cal === null ? null : absoluteLocation(int8Cal),
      calibration_per_step: int8Cal === null ? null : pipe.unet.precisionContext!.stepTimesteps !== null,
      int8_attention: pipe.unet.int8Attention,
    };
  } finally {
    clsEng?.close();
    pipe.close();
  }
}
