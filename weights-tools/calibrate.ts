// Calibration for INT8: runs the FP32 pipeline over prompts and all their timesteps and records, for every
// conv/linear layer of the UNet, the range of its input activations. Observers:
//   - "minmax" (default): the running min/max over every UNet call, as onnxruntime's MinMax calibration
//     (CalibrationMethod.MinMax) and torch's MinMaxObserver;
//   - "ema-minmax": a moving-average min/max, as torch.ao.quantization.MovingAverageMinMaxObserver (the first
//     UNet call sets a layer's range, each later call moves it by (1 - momentum) toward that call's min/max;
//     default momentum 0.99, i.e. torch's averaging_constant 0.01).
//   - "mse": a min/max pass, then a second pass over the same prompts that histograms each layer's input over
//     its min/max range (2048 bins), and per layer the range of least expected quantisation error (rounding
//     noise inside plus clipping outside; src/models/calibration.ts mseRange), as TensorRT's and onnxruntime's
//     percentile/entropy calibrators trade range for resolution. It clips the rare outliers running min/max
//     keeps (most in the feed-forward output layers, ff.net.2): fashion-sd-tiny all-INT8 PSNR vs FP32 +0.7 dB
//     (docs/quality.md). With perStep, each timestep's calls get their own histogram and range as well.
// Why minmax is the default: a diffusion UNet's activation ranges drift over the denoising steps, so an
// average of per-call ranges clips the calls whose ranges are wider. Measured on fashion-sd-tiny (50 PNDM
// steps, guidance 4, all-INT8 PSNR vs FP32 images of 100 seeds; weights-tools/README.md has the table and the
// commands): momentum 0.9 gives 19.3 dB, 0.99 24.8 dB, running min/max 28.5 dB.
// Per-step (--per-step): a diffusion UNet's activation ranges drift with the timestep, so one range over all
// 50 steps is wider than any step needs and wastes the 7-bit resolution. With perStep each layer also gets
// the running min/max over the prompts of the UNet calls at each scheduler timestep (PNDM's repeated
// timestep: both calls in one range); INT8 then uses the current call's timestep's range (nearest calibrated
// one). Running min/max only: a moving average over one timestep's few calls would keep mostly the last prompt.
// The global ranges are recorded as without perStep (the same prompts give the same file plus the steps).
// The result is written as JSON (src/models/precision.ts: Calibration) next to the weights as
// unet/stepq-calibration.json, which UNet/pipeline loading reads for int8.
//
// CLI: stepq calibrate (src/cli/calibrate.ts).
import * as path from "node:path";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { CALIBRATION_FORMAT, CALIBRATION_VERSION, defaultCalibrationPath, HistogramObserver, MinMaxObserver, type Calibration } from "../src/models/calibration.ts";
import { INT8_CALIBRATION_DEFAULT } from "../src/nn/quant.ts";

export interface CalibrateOptions {
  /** diffusers pipeline folder. */
  model: string;
  prompts: string[];
  /** Denoising steps per prompt (default 50). */
  steps?: number;
  /** Guidance scale (default 4). */
  guidance?: number;
  /** Scheduler name (default: the model's own). */
  scheduler?: string;
  /** Prompt i uses seed seed0 + i (default 10000: away from the seeds stepq eval uses). */
  seed0?: number;
  /** "minmax" (running extremes, default), "ema-minmax" (moving average) or "mse" (least quantisation error). */
  observer?: "ema-minmax" | "minmax" | "mse";
  /** EMA momentum (default 0.99: torch's MovingAverageMinMaxObserver averaging_constant 0.01). */
  momentum?: number;
  /** Largest quantised activation INT8 layers will use: 127 (7-bit, default: the fast relaxed-dot path) or 255 (u8: exact i16 path, slower). */
  actQmax?: 127 | 255;
  /** Weight range recorded with the ranges: 127 (int8, default) or 63 (7-bit weights, for 8-bit activations). */
  weightQmax?: 127 | 63;
  /** Also record each layer's range per scheduler timestep (running min/max, or mse per timestep; not ema). */
  perStep?: boolean;
  threads?: number;
  memoryBytes?: number;
  simd?: "auto" | "relaxed" | "baseline";
  /** Progress: prompt index, UNet calls done, total calls. */
  onProgress?: (p: { prompt: number; prompts: number; call: number; calls: number; elapsedMs: number }) => void;
  /** An already loaded pipeline (must be loaded with precisions including fp32); model is then only recorded. */
  pipeline?: StableDiffusionPipeline;
}

/** The default observer: running min/max (see the file header). */
export const DEFAULT_OBSERVER = "minmax";
/** The default EMA momentum: 1 - torch's MovingAverageMinMaxObserver averaging_constant (0.01). */
export const DEFAULT_EMA_MOMENTUM = 0.99;

/** Runs the FP32 pipeline over the prompts and returns the calibration (see the file header). */
export async function calibrate(o: CalibrateOptions): Promise<Calibration> {
  if (!o.prompts.length) throw new Error("calibrate: no prompts");
  const steps = o.steps ?? 50;
  const guidance = o.guidance ?? 4;
  const seed0 = o.seed0 ?? 10000;
  const observerType = o.observer ?? DEFAULT_OBSERVER;
  if (o.perStep && observerType === "ema-minmax") throw new Error("calibrate: per-step ranges are running min/max (or mse) per timestep; the ema observer does not apply");
  // "mse" starts as a min/max pass, whose ranges bound the histograms of its second pass
  const observer = new MinMaxObserver(observerType === "mse" ? "minmax" : observerType, o.momentum ?? DEFAULT_EMA_MOMENTUM, !!o.perStep);
  const pipe = o.pipeline ?? (await StableDiffusionPipeline.load(o.model, { precisions: ["fp32"], threads: o.threads, memoryBytes: o.memoryBytes, simd: o.simd }));
  const ctx = pipe.unet.precisionContext;
  try {
    if (!ctx || !ctx.loaded.includes("fp32")) throw new Error("calibrate: the pipeline must be loaded with precisions including fp32");
    const passes = observerType === "mse" ? 2 : 1;
    const before = ctx.current;
    ctx.current = "fp32";
    const t0 = performance.now();
    let scheduler = "";
    let histograms: HistogramObserver | null = null;
    try {
      for (let pass = 0; pass < passes; pass++) {
        const h = pass === 1 ? (histograms = new HistogramObserver(observer.layers(), undefined, !!o.perStep)) : null;
        ctx.observe = h ? (layer, x) => h.observe(layer, x) : (layer, x) => observer.observe(layer, x);
        for (let i = 0; i < o.prompts.length; i++) {
          const res = await pipe.generate({
            prompt: o.prompts[i],
            steps,
            guidance,
            scheduler: o.scheduler,
            seed: seed0 + i,
            precision: "fp32",
            onStep: (s) => {
              if (h) h.endCall(s.timestep);
              else observer.endCall(s.timestep);
              o.onProgress?.({ prompt: pass * o.prompts.length + i, prompts: passes * o.prompts.length, call: s.step, calls: s.total, elapsedMs: performance.now() - t0 });
            },
          });
          scheduler = res.scheduler;
        }
      }
    } finally {
      ctx.observe = null;
      ctx.current = before;
    }
    const actQmax = o.actQmax ?? INT8_CALIBRATION_DEFAULT.actQmax;
    const timesteps = observer.timesteps();
    return {
      format: CALIBRATION_FORMAT,
      version: CALIBRATION_VERSION,
      model: o.model,
      steps,
      guidance,
      scheduler,
      prompts: o.prompts.length,
      unetCalls: observer.calls,
      seed0,
      observer: histograms ? { type: "mse", per: "UNet call (min/max pass, then the histogram over it)", bins: histograms.bins } : observer.info,
      actQmax,
      ...((o.weightQmax ?? INT8_CALIBRATION_DEFAULT.weightQmax) === 63 ? { weightQmax: 63 } : {}),
      created: new Date().toISOString(),
      layers: histograms ? histograms.layers(actQmax, timesteps ?? undefined) : observer.layers(),
      ...(timesteps ? { timesteps } : {}),
    };
  } finally {
    if (!o.pipeline) pipe.close();
  }
}

/** Where `stepq calibrate` writes by default: <model>/unet/stepq-calibration.json. */
export function defaultCalibrationOut(model: string): string {
  return defaultCalibrationPath(path.join(model, "unet"));
}
