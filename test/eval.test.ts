import { describe, it, expect, beforeAll, afterAll } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { sharedDir } from "../src/io/places.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { symmetricEigen, sqrtmPsd, featureStats, frechetDistance, fid, psnr, mse, summarizePsnr, accuracy } from "../src/tools/metrics.ts";
import { evalLabels, promptFor, runEval, readReferenceImages, EvalError } from "../src/tools/eval.ts";
import { evalCommand, EVAL_HELP, resultJson } from "../src/cli/eval.ts";
import { UsageError } from "../src/cli/args.ts";

const SHARED = sharedDir();
const MODEL = path.join(SHARED, "models", "fashion-sd-tiny");
const CLS = path.join(SHARED, "models", "fashion-classifier");
const DATA = path.join(SHARED, "data", "fashion-mnist");

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}
/** A random orthogonal n x n matrix (Gram-Schmidt of a random one). */
function orthogonal(n: number, seed: number): Float64Array {
  const r = rng(seed);
  const q = Float64Array.from({ length: n * n }, () => gauss(r));
  for (let j = 0; j < n; j++) {
    for (let k = 0; k < j; k++) {
      let d = 0;
      for (let i = 0; i < n; i++) d += q[i * n + j] * q[i * n + k];
      for (let i = 0; i < n; i++) q[i * n + j] -= d * q[i * n + k];
    }
    let s = 0;
    for (let i = 0; i < n; i++) s += q[i * n + j] ** 2;
    s = Math.sqrt(s);
    for (let i = 0; i < n; i++) q[i * n + j] /= s;
  }
  return q;
}
/** R diag(d) R^T */
function rotated(R: Float64Array, d: number[]): Float64Array {
  const n = d.length;
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) m[i * n + j] += R[i * n + k] * d[k] * R[j * n + k];
  return m;
}
function diag(d: number[]): Float64Array {
  const n = d.length;
  const m = new Float64Array(n * n);
  d.forEach((v, i) => (m[i * n + i] = v));
  return m;
}

describe("linear algebra", () => {
  it("symmetricEigen reconstructs A = V diag(l) V^T with orthonormal V", async () => {
    for (const n of [1, 2, 5, 40]) {
      const r = rng(n);
      const A = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = i; j < n; j++) A[i * n + j] = A[j * n + i] = gauss(r);
      const { values, vectors: V } = symmetricEigen(A, n);
      let err = 0, orth = 0;
      for (let i = 0; i < n; i++)
        for (let j = 0; j < n; j++) {
          let s = 0, o = 0;
          for (let k = 0; k < n; k++) {
            s += V[i * n + k] * values[k] * V[j * n + k];
            o += V[k * n + i] * V[k * n + j];
          }
          err = Math.max(err, Math.abs(s - A[i * n + j]));
          orth = Math.max(orth, Math.abs(o - (i === j ? 1 : 0)));
        }
      expect(err).toBeLessThan(1e-10);
      expect(orth).toBeLessThan(1e-10);
    }
  });

  it("sqrtmPsd squares back to the matrix and clamps round-off negatives", async () => {
    const n = 12;
    const A = rotated(orthogonal(n, 3), Array.from({ length: n }, (_, i) => (i === 0 ? 0 : i * 0.7)));
    const S = sqrtmPsd(A, n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += S[i * n + k] * S[k * n + j];
        expect(Math.abs(s - A[i * n + j])).toBeLessThan(1e-9);
      }
  });
});

describe("FID", () => {
  it("matches the closed form for diagonal covariances", async () => {
    const a = [1, 4, 0.25, 9, 2];
    const b = [4, 1, 1, 0.5, 2];
    const mu1 = [0, 1, 2, 3, 4];
    const mu2 = [1, 1, 0, 3, 5];
    let want = 0;
    for (let i = 0; i < 5; i++) want += (mu1[i] - mu2[i]) ** 2 + (Math.sqrt(a[i]) - Math.sqrt(b[i])) ** 2;
    expect(frechetDistance({ mean: mu1, cov: diag(a) }, { mean: mu2, cov: diag(b) })).toBeCloseTo(want, 10);
  });

  it("matches the closed form for commuting covariances R diag(a) R^T, R diag(b) R^T", async () => {
    const n = 20;
    const r = rng(7);
    const a = Array.from({ length: n }, () => r() * 3);
    const b = Array.from({ length: n }, () => r() * 3);
    const R = orthogonal(n, 11);
    let want = 0;
    for (let i = 0; i < n; i++) want += (Math.sqrt(a[i]) - Math.sqrt(b[i])) ** 2;
    const mu = new Float64Array(n);
    expect(frechetDistance({ mean: mu, cov: rotated(R, a) }, { mean: mu, cov: rotated(R, b) })).toBeCloseTo(want, 9);
    // and S1 = I against a rotated S2: tr sqrt(S2) = sum sqrt(b)
    const ones = new Array(n).fill(1);
    let want2 = 0;
    for (let i = 0; i < n; i++) want2 += (1 - Math.sqrt(b[i])) ** 2;
    expect(frechetDistance({ mean: mu, cov: diag(ones) }, { mean: mu, cov: rotated(R, b) })).toBeCloseTo(want2, 9);
  });

  it("matches the 2x2 closed form tr sqrt(S1 S2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)) for non-commuting covariances", async () => {
    const S1 = [2, 0.7, 0.7, 1];
    const S2 = [0.5, -0.3, -0.3, 3];
    const P = [S1[0] * S2[0] + S1[1] * S2[2], 0, 0, S1[2] * S2[1] + S1[3] * S2[3]];
    const det1 = S1[0] * S1[3] - S1[1] * S1[2];
    const det2 = S2[0] * S2[3] - S2[1] * S2[2];
    const trSqrt = Math.sqrt(P[0] + P[3] + 2 * Math.sqrt(det1 * det2));
    const want = (1 - 0) ** 2 + (2 - 0.5) ** 2 + S1[0] + S1[3] + S2[0] + S2[3] - 2 * trSqrt;
    expect(frechetDistance({ mean: [1, 2], cov: S1 }, { mean: [0, 0.5], cov: S2 })).toBeCloseTo(want, 12);
  });

  it("featureStats gives the unbiased mean and covariance; a set against itself has FID ~0", async () => {
    const d = 16, n = 600;
    const r = rng(5);
    const mix = Float64Array.from({ length: d * d }, () => gauss(r) * 0.5);
    const f = new Float32Array(n * d);
    for (let s = 0; s < n; s++) {
      const z = Array.from({ length: d }, () => gauss(r));
      for (let j = 0; j < d; j++) {
        let v = j * 0.1;
        for (let k = 0; k < d; k++) v += mix[j * d + k] * z[k];
        f[s * d + j] = Math.max(v, 0); // ReLU-like features: rank fine, non-Gaussian
      }
    }
    const st = featureStats(f, d);
    // direct float64 computation
    for (const [i, j] of [[0, 0], [3, 7], [15, 2]]) {
      let mi = 0, mj = 0;
      for (let s = 0; s < n; s++) {
        mi += f[s * d + i];
        mj += f[s * d + j];
      }
      mi /= n;
      mj /= n;
      let c = 0;
      for (let s = 0; s < n; s++) c += (f[s * d + i] - mi) * (f[s * d + j] - mj);
      expect(st.mean[i]).toBeCloseTo(mi, 12);
      expect(st.cov[i * d + j]).toBeCloseTo(c / (n - 1), 12);
      expect(st.cov[j * d + i]).toBe(st.cov[i * d + j]);
    }
    expect(Math.abs(fid(f, f, d))).toBeLessThan(1e-8);
    // a shifted copy: FID = |shift|^2 exactly (same covariance)
    const g = f.map((v, i) => v + (i % d === 3 ? 2 : 0));
    expect(fid(f, g, d)).toBeCloseTo(4, 5);
    // rank-deficient covariance (n < d) still gives a finite, ~0 self-distance
    const few = f.subarray(0, 5 * d);
    expect(Math.abs(fid(few, few, d))).toBeLessThan(1e-6);
    expect(() => featureStats(new Float32Array(d), d)).toThrow(EvalError);
    expect(() => featureStats(new Float32Array(d + 1), d)).toThrow(/whole number/);
  });
});

describe("PSNR, accuracy, labels", () => {
  it("PSNR of known differences", async () => {
    const a = new Uint8Array(300).fill(100);
    expect(psnr(a, a)).toBe(Infinity);
    expect(psnr(a, a.map((v) => v + 1))).toBeCloseTo(20 * Math.log10(255), 10); // mse 1: 48.1308 dB
    expect(psnr(a, a.map((v) => v + 1))).toBeCloseTo(48.1308, 4);
    expect(psnr(new Uint8Array(10), new Uint8Array(10).fill(255))).toBeCloseTo(0, 12);
    // mse 100 -> 28.1308 dB; half the pixels off by 10 -> mse 50 -> 31.1411 dB
    expect(psnr(a, a.map((v) => v + 10))).toBeCloseTo(28.1308, 4);
    expect(psnr(a, a.map((v, i) => (i % 2 ? v + 10 : v)))).toBeCloseTo(31.1411, 4);
    expect(psnr([0, 0.5], [0, 0.6], 1)).toBeCloseTo(10 * Math.log10(1 / 0.005), 10);
    expect(mse([1, 2, 3], [1, 2, 5])).toBeCloseTo(4 / 3, 12);
    expect(() => psnr([1], [1, 2])).toThrow(/lengths differ/);
    expect(summarizePsnr([30, Infinity, 40])).toEqual({ mean: 35, min: 30, identical: 1 });
    expect(summarizePsnr([Infinity]).mean).toBe(Infinity);
  });

  it("labels, prompts and accuracy", async () => {
    expect(Array.from(evalLabels(20, 10))).toEqual([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]);
    expect(() => evalLabels(15, 10)).toThrow(/multiple of 10/);
    expect(() => evalLabels(0, 10)).toThrow(/multiple of 10/);
    expect(promptFor("sneaker")).toBe("a photo of a sneaker");
    expect(accuracy([1, 2, 3, 4], [1, 2, 0, 4])).toBe(0.75);
  });
});

describe("stepq eval command line", () => {
  it("help names every option; bad n and bad values are usage errors", async () => {
    for (const f of ["--n", "--steps", "--guidance", "--scheduler", "--precision", "--seed0", "--batch", "--threads", "--json", "--out-dir", "--save-images", "--reference-images"])
      expect(EVAL_HELP).toContain(f);
    await expect(evalCommand(["--n", "15", "--classifier", CLS, "--data", DATA])).rejects.toThrow(/--n must be a multiple of 10/);
    await expect(evalCommand(["--n", "20", "--scheduler", "nope"])).rejects.toThrow(UsageError);
    await expect(evalCommand(["--steps", "0"])).rejects.toThrow(/--steps/);
    await expect(evalCommand(["--batch", "0"])).rejects.toThrow(/--batch must be an integer from 1/);
    await expect(evalCommand(["--reference-images", "/nonexistent/x.safetensors", "--classifier", CLS, "--data", DATA])).rejects.toThrow(/no such file/);
    expect(resultJson({ psnr_vs_fp32: Infinity, fid: 1 } as any)).toBe('{"psnr_vs_fp32":"inf","fid":1}');
  });
});

const haveModel = fs.existsSync(path.join(MODEL, "model_index.json")) && fs.existsSync(path.join(CLS, "model.safetensors")) && fs.existsSync(path.join(DATA, "t10k-images-idx3-ubyte.gz"));

describe.skipIf(!haveModel)("eval on fashion-sd-tiny", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-eval-"));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const base = { model: MODEL, classifierDir: CLS, dataDir: DATA, guidance: 4, scheduler: "pndm", seed0: 0, threads: 2 };

  it("n=20, 10 PNDM steps: finite FID, prompt accuracy > 0.5; saved images serve as the FP32 reference", async () => {
    const t0 = performance.now();
    const saved = path.join(tmp, "fp32.safetensors");
    const r = await runEval({ ...base, n: 20, steps: 10, precision: "fp32", saveImages: saved, outDir: path.join(tmp, "png") });
    console.log(`eval n=20 steps=10: ${resultJson(r)} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    expect(Number.isFinite(r.fid) && r.fid > 0).toBe(true);
    expect(r.prompt_accuracy).toBeGreaterThan(0.5);
    expect(r.per_class_accuracy.length).toBe(10);
    expect(r.psnr_vs_fp32).toBeNull();
    expect(r.calibration).toBeNull(); // no INT8 step
    expect(Math.abs(r.classifier_test_accuracy - 0.9088)).toBeLessThanOrEqual(0.001);
    expect(fs.readdirSync(path.join(tmp, "png")).length).toBe(20);
    expect(fs.readdirSync(path.join(tmp, "png"))[2]).toBe("0002-pair_of_trousers.png");
    // the saved file is checked against the run's settings
    const want = { n: 20, steps: 10, guidance: 4, scheduler: "pndm", seed0: 0, width: 32, height: 32 };
    expect((await readReferenceImages(saved, want)).length).toBe(20 * 32 * 32 * 3);
    await expect(readReferenceImages(saved, { ...want, steps: 50 })).rejects.toThrow(/steps 10 \(this run: 50\)/);
    await expect(readReferenceImages(saved, { ...want, n: 10 })).rejects.toThrow(/does not match/);
  });

  it("an INT8 run records the calibration it used (the shipped model's file, one range per layer)", async () => {
    const shipped = path.resolve("models", "fashion-sd-tiny"); // same weights as MODEL, plus the calibration
    const r = await runEval({ ...base, model: shipped, n: 10, steps: 3, precision: "mixed:1", fp32Reference: false });
    expect(r.calibration).toBe(path.join(shipped, "unet", "stepq-calibration.json"));
    expect(r.calibration_per_step).toBe(false);
  });

  it("FP32 against its own saved images is bit-identical (deterministic generation), whatever the batch size and thread count", async () => {
    const saved = path.join(tmp, "fp32-small.safetensors");
    const one = await runEval({ ...base, n: 10, steps: 2, precision: "fp32", saveImages: saved, batch: 1 });
    expect(one.batch).toBe(1);
    const r = await runEval({ ...base, n: 10, steps: 2, precision: "fp32", referenceImages: saved, threads: 1, batch: 5 });
    expect(r.batch).toBe(5);
    expect(r.psnr_identical_images).toBe(10);
    expect(r.psnr_vs_fp32).toBe(Infinity);
    expect(r.psnr_reference).toBe(saved);
    expect(r.fid).toBe(one.fid);
    expect(r.per_class_accuracy).toEqual(one.per_class_accuracy);
    // the default batch (20) is clamped to n
    const d = await runEval({ ...base, n: 10, steps: 2, precision: "fp32", referenceImages: saved });
    expect(d.batch).toBe(10);
    expect(d.psnr_identical_images).toBe(10);
  });

  it("a low precision (bf16) gives the same images with batch 1 and batch 5, and the same PSNR against its generated FP32 images", async () => {
    const files = [1, 5].map((b) => path.join(tmp, `bf16-b${b}.safetensors`));
    const [a, b] = [await runEval({ ...base, n: 10, steps: 3, precision: "bf16", batch: 1, saveImages: files[0] }), await runEval({ ...base, n: 10, steps: 3, precision: "bf16", batch: 5, saveImages: files[1] })];
    const read = async (f: string) => {
      const st = await SafetensorsFile.open(f);
      try {
        return Buffer.from(await st.readRaw("images"));
      } finally {
        st.close();
      }
    };
    expect((await read(files[0])).equals(await read(files[1]))).toBe(true);
    expect(b.fid).toBe(a.fid);
    expect(b.psnr_vs_fp32).toBe(a.psnr_vs_fp32);
    expect(b.psnr_min).toBe(a.psnr_min);
    expect(b.psnr_reference).toBe("generated");
  });

  it("a low precision (bf16: no calibration needed) either runs with finite PSNR vs FP32 or fails clearly when generate() lacks it", async () => {
    let r;
    try {
      r = await runEval({ ...base, n: 10, steps: 2, precision: "bf16" });
    } catch (e) {
      expect((e as Error).message).toMatch(/precision "bf16" is not available yet/);
      return;
    }
    console.log(`eval bf16 n=10 steps=2: ${resultJson(r)}`);
    expect(Number.isFinite(r.fid)).toBe(true);
    expect(r.psnr_reference).toBe("generated");
    expect(r.psnr_vs_fp32 === Infinity || (r.psnr_vs_fp32! > 10 && Number.isFinite(r.psnr_vs_fp32!))).toBe(true);
  });
});
