// stepq sensitivity: how much INT8 changes the UNet's noise prediction at each denoising step, to choose K
// for the mixed:K schedule. Runs the reference trajectory (bf16 or fp32) and at every UNet call also
// evaluates the INT8 UNet on the same input; the error of a step is
//   ||eps_int8 - eps_ref|| / ||eps_ref||   (eps: the UNet's noise prediction, both CFG halves; with
//                                          --metric guided the prediction after guidance, which amplifies it)
// averaged over the step's UNet calls (PNDM evaluates step 2 twice) and over prompts. The recommended K is
// the smallest K such that every INT8 step of mixed:K (steps K+1 .. N-K) is within the target.
import { StableDiffusionPipeline } from "../pipeline/pipeline.ts";
import { absoluteLocation } from "../io/source.ts";
import type { Precision } from "../models/precision.ts";

export interface SensitivityResult {
  model: string;
  ref: Precision;
  metric: "guided" | "raw";
  steps: number;
  prompts: number;
  guidance: number;
  scheduler: string;
  /** Mean relative error per denoising step (index 0 = first step). */
  errors: number[];
  /** Largest relative error per step over the prompts. */
  max_errors: number[];
  target: number;
  /** Smallest K with every INT8 step of mixed:K within target (by the mean errors); null if even no INT8 step... never. */
  recommended_k: number;
  /** Steps that run INT8 with the recommended K. */
  int8_steps: number;
  seconds: number;
}

/** Smallest K (0 .. floor(n/2)) such that errors[i] <= target for all K <= i < n-K. */
export function recommendK(errors: readonly number[], target: number): number {
  const n = errors.length;
  for (let k = 0; k <= Math.floor(n / 2); k++) {
    let ok = true;
    for (let i = k; i < n - k; i++) if (!(errors[i] <= target)) ok = false;
    if (ok) return k;
  }
  return Math.floor(n / 2);
}

function guided(o: Float32Array, batch: number, g: number): Float32Array {
  if (batch !== 2) return o;
  const n = o.length / 2;
  const e = new Float32Array(n);
  const gg = Math.fround(g);
  for (let j = 0; j < n; j++) e[j] = o[j] + Math.fround(gg * Math.fround(o[n + j] - o[j]));
  return e;
}

export async function runSensitivity(o: {
  model: string;
  steps: number;
  prompts: string[];
  guidance: number;
  scheduler?: string;
  ref: "bf16" | "fp32";
  target: number;
  metric?: "guided" | "raw";
  seed0: number;
  calibration?: string;
  threads?: number;
  memoryBytes?: number;
  simd?: "auto" | "relaxed" | "baseline";
  onProgress?: (msg: string) => void;
}): Promise<SensitivityResult> {
  const t0 = performance.now();
  const pipe = await StableDiffusionPipeline.load(o.model, {
    precisions: [o.ref, "int8"],
    calibration: o.calibration,
    threads: o.threads,
    memoryBytes: o.memoryBytes,
    simd: o.simd,
  });
  try {
    const sum = new Float64Array(o.steps);
    const cnt = new Float64Array(o.steps);
    const max = new Float64Array(o.steps);
    let scheduler = "";
    for (let p = 0; p < o.prompts.length; p++) {
      const perStep = new Float64Array(o.steps);
      const perCnt = new Float64Array(o.steps);
      const res = await pipe.generate({
        prompt: o.prompts[p],
        steps: o.steps,
        guidance: o.guidance,
        scheduler: o.scheduler,
        seed: o.seed0 + p,
        precision: o.ref,
        onUNetCall: (c) => {
          const B = c.input.shape[0];
          const raw = o.metric !== "guided";
          const g = raw ? 1 : c.guidance;
          const ref = guided(c.output.toArray(), raw ? 1 : B, g);
          pipe.unet.setPrecision("int8");
          let q: Float32Array;
          try {
            q = pipe.engine.scope(() => guided(pipe.unet.forward(c.input, c.timestep, c.context).toArray(), raw ? 1 : B, g));
          } finally {
            pipe.unet.setPrecision(o.ref);
          }
          let num = 0, den = 0;
          for (let j = 0; j < ref.length; j++) {
            num += (q[j] - ref[j]) ** 2;
            den += ref[j] ** 2;
          }
          perStep[c.step] += Math.sqrt(num) / Math.sqrt(den || 1e-30);
          perCnt[c.step]++;
        },
        onStep: (s) => o.onProgress?.(`prompt ${p + 1}/${o.prompts.length}, step ${s.denoisingStep}/${o.steps}`),
      });
      scheduler = res.scheduler;
      for (let i = 0; i < o.steps; i++) {
        const e = perStep[i] / Math.max(1, perCnt[i]);
        sum[i] += e;
        cnt[i]++;
        max[i] = Math.max(max[i], e);
      }
    }
    const errors = Array.from(sum, (s, i) => s / cnt[i]);
    const k = recommendK(errors, o.target);
    return {
      model: absoluteLocation(o.model),
      ref: o.ref,
      metric: o.metric ?? "raw",
      steps: o.steps,
      prompts: o.prompts.length,
      guidance: o.guidance,
      scheduler,
      errors,
      max_errors: Array.from(max),
      target: o.target,
      recommended_k: k,
      int8_steps: o.steps - 2 * k,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    pipe.close();
  }
}

