// FID with a bootstrap 95% interval, prompt accuracy, and PSNR vs FP32 (mean, 95% normal interval, paired
// differences) of `stepq eval --save-images` files (u8 [n, H, W, 3], n/10 images per class in label order, as
// stepq eval writes them). FID interval: the n generated images are resampled with replacement (the test
// set's statistics stay fixed) and the interval is FID +- 1.96 sd of the resampled FIDs (the normal bootstrap
// interval): the sampling uncertainty of one n-image FID for this model and precision. Not the resamples'
// 2.5% / 97.5% quantiles: a resample repeats images, which shrinks its feature covariance and biases its FID
// upward (at n = 100 the quantiles lie entirely above the FID itself; the bias is printed), while the spread is
// still a fair estimate of the sampling spread.
// Usage: sh bench/fid-intervals.sh [--resamples=N] [--json=FILE] [--ref=FP32.safetensors] [--baseline=B.safetensors] A.safetensors ...
import * as fs from "node:fs";
import * as path from "node:path";
import { Engine } from "../src/runtime/engine.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { sharedDir } from "../src/io/places.ts";
import { loadClassifier } from "../src/models/loader.ts";
import { CLASSIFIER_SIZE, rgb8ToInput } from "../src/models/classifier.ts";
import { accuracy, featureStats, matmulSq, psnr, sqrtmPsd, symmetricEigen, type GaussianStats } from "../src/tools/metrics.ts";
import { evalLabels, testSetStats } from "../src/tools/eval.ts";
import { Rng } from "../src/runtime/random.ts";

const args = process.argv.slice(2);
const opt = (k: string) => args.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3);
const files = args.filter((a) => !a.startsWith("--"));
const resamples = Number(opt("resamples") ?? 1000);
const refFile = opt("ref");
const baselineFile = opt("baseline");
const jsonOut = opt("json");

async function readImages(file: string): Promise<{ n: number; h: number; w: number; data: Uint8Array; meta: Record<string, string> }> {
  const st = await SafetensorsFile.open(file);
  try {
    const t = [...st.tensors.values()][0];
    if (t.dtype !== "U8" || t.shape.length !== 4) throw new Error(`${file}: ${t.name} is ${t.dtype} [${t.shape}], expected U8 [n, H, W, 3]`);
    return { n: t.shape[0], h: t.shape[1], w: t.shape[2], data: (await st.readRaw(t.name)).slice(), meta: st.metadata };
  } finally {
    st.close();
  }
}

/** FID against fixed test statistics, with sqrt(S_test) precomputed: |dm|^2 + tr S + tr S_t - 2 tr sqrt(sqrt(S_t) S sqrt(S_t)). */
function fidAgainst(s: GaussianStats, t: GaussianStats, sqrtT: Float64Array): number {
  const n = s.dim;
  let v = 0;
  for (let i = 0; i < n; i++) v += (s.mean[i] - t.mean[i]) ** 2 + s.cov[i * n + i] + t.cov[i * n + i];
  const { values } = symmetricEigen(matmulSq(matmulSq(sqrtT, s.cov, n), sqrtT, n), n);
  for (const l of values) v -= 2 * Math.sqrt(Math.max(l, 0));
  return v;
}

function meanInterval(v: number[]) {
  const f = v.filter(Number.isFinite);
  const m = f.reduce((a, b) => a + b, 0) / f.length;
  const sd = Math.sqrt(f.reduce((a, b) => a + (b - m) ** 2, 0) / (f.length - 1));
  const h = (1.96 * sd) / Math.sqrt(f.length);
  return { n: f.length, mean: m, lo: m - h, hi: m + h, min: Math.min(...v) };
}

const shared = sharedDir();
const classifierDir = path.join(shared, "models", "fashion-classifier");
const dataDir = path.join(shared, "data", "fashion-mnist");
const eng = await Engine.create({ threads: 2, memoryBytes: 192 << 20 });
const clf = await loadClassifier(eng, classifierDir);
const test = await testSetStats(clf, classifierDir, dataDir);
const sqrtT = sqrtmPsd(test.stats.cov, test.stats.dim);
const ref = refFile ? await readImages(refFile) : null;
const psnrsOf = (im: { n: number; data: Uint8Array }) => {
  if (!ref) return null;
  const px = ref.data.length / ref.n;
  return Array.from({ length: im.n }, (_, i) => psnr(im.data.subarray(i * px, (i + 1) * px), ref.data.subarray(i * px, (i + 1) * px)));
};
const base = baselineFile ? psnrsOf(await readImages(baselineFile)) : null;
const rows: Record<string, unknown>[] = [];
for (const file of files) {
  const t0 = performance.now();
  const im = await readImages(file);
  const labels = evalLabels(im.n, 10);
  const px = im.h * im.w * 3;
  const inputs = new Float32Array(im.n * CLASSIFIER_SIZE * CLASSIFIER_SIZE);
  for (let i = 0; i < im.n; i++) rgb8ToInput(im.data.subarray(i * px, (i + 1) * px), im.w, im.h, 3, inputs, i * CLASSIFIER_SIZE * CLASSIFIER_SIZE);
  const out = clf.classify(inputs, { batch: 250 });
  const F = clf.featureDim;
  const fid = fidAgainst(featureStats(out.features, F), test.stats, sqrtT);
  const rng = new Rng(20261130);
  const boot: number[] = [];
  const sample = new Float32Array(im.n * F);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < im.n; i++) {
      const j = Math.min(im.n - 1, Math.floor(rng.uniform() * im.n));
      sample.set(out.features.subarray(j * F, (j + 1) * F), i * F);
    }
    boot.push(fidAgainst(featureStats(sample, F), test.stats, sqrtT));
  }
  const bm = boot.reduce((a, b) => a + b, 0) / boot.length;
  const bsd = Math.sqrt(boot.reduce((a, b) => a + (b - bm) ** 2, 0) / (boot.length - 1));
  const row: Record<string, unknown> = {
    file: path.basename(file),
    precision: im.meta.precision,
    model: im.meta.model,
    n: im.n,
    fid,
    fid_lo: fid - 1.96 * bsd,
    fid_hi: fid + 1.96 * bsd,
    fid_bootstrap_sd: bsd,
    fid_bootstrap_bias: bm - fid,
    prompt_accuracy: accuracy(out.predictions, labels),
  };
  const ps = psnrsOf(im);
  if (ps) {
    const s = meanInterval(ps);
    Object.assign(row, { psnr: s.mean, psnr_lo: s.lo, psnr_hi: s.hi, psnr_min: s.min, psnr_identical: im.n - s.n });
    if (base) {
      const d: number[] = [];
      for (let i = 0; i < im.n; i++) if (Number.isFinite(ps[i]) && Number.isFinite(base[i])) d.push(ps[i] - base[i]);
      const sd = meanInterval(d);
      Object.assign(row, { paired_delta: sd.mean, paired_lo: sd.lo, paired_hi: sd.hi });
    }
  }
  rows.push(row);
  const f2 = (x: unknown) => (typeof x === "number" ? x.toFixed(2) : "-");
  console.log(
    `${row.file}: FID ${(fid as number).toFixed(3)} [${(row.fid_lo as number).toFixed(3)}, ${(row.fid_hi as number).toFixed(3)}] (bootstrap sd ${bsd.toFixed(3)}, bias ${(bm - fid).toFixed(3)})  accuracy ${(row.prompt_accuracy as number).toFixed(3)}` +
      (ps ? `  PSNR ${f2(row.psnr)} [${f2(row.psnr_lo)}, ${f2(row.psnr_hi)}] min ${f2(row.psnr_min)}` : "") +
      (base ? `  paired vs baseline ${f2(row.paired_delta)} [${f2(row.paired_lo)}, ${f2(row.paired_hi)}]` : "") +
      `  (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
}
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ resamples, ref: refFile ?? null, baseline: baselineFile ?? null, rows }, null, 2) + "\n");
eng.close();
