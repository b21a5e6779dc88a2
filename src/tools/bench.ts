// Benchmarks of the engine as a library (the CLI is src/cli/bench.ts):
//
//   benchUNet   builds a UNet2DConditionModel from a config — sd15, sd21 (random weights: a call's latency
//               does not depend on the values), fashion (the shipped fashion-sd-tiny, real weights) or a
//               diffusers folder — sizes the engine for it, runs warm-up + N timed calls on random inputs
//               and reports seconds per call, engine peak bytes, process RSS, threads, SIMD build, runtime,
//               and optionally the time by kernel (Engine.profile).
//   benchImage  one whole text-to-image generation with the time of each stage (text, every step, decode).
//
// Precision: bench unet builds the UNet with the one precision asked for (bf16 / int8 layers; int8 takes
// its activation ranges from the checkpoint's calibration file when there is one, otherwise — random
// weights, or a checkpoint never calibrated — a fixed synthetic range: latency does not depend on it, and
// the result says so in act_ranges). bench image runs any schedule generate() takes (mixed:K, ...), with
// the real calibration (it makes an image, so no synthetic ranges).
//
// Nothing here checks results against a reference (the tests and `stepq verify` do); it only checks that
// the output is finite, so a benchmark of a broken build does not pass as a fast one.
import { int8PathSummary, int8PreparedPaths } from "../nn/int8.ts";
import { Engine, type SimdVariant } from "../runtime/engine.ts";
import { loadAverage, rssBytes, maxRssBytes, cpuSeconds, runtimeName, v8Version } from "../runtime/env.ts";
import { absoluteLocation, fileExists, joinLocation, statLocation } from "../io/source.ts";
import { unetActivationBytes, unetParamCount } from "../models/memory.ts";
import { UNet } from "../models/unet.ts";
import { WeightStore } from "../models/weights.ts";
import { findWeights } from "../io/diffusers.ts";
import { loadUNetConfig, SD15_UNET_CONFIG, SD21_UNET_CONFIG, type UNetConfig } from "../models/config.ts";
import { resolveDefaultModel } from "../io/places.ts";
import { StableDiffusionPipeline } from "../pipeline/pipeline.ts";
import { PRECISIONS as ALL_PRECISIONS, PRECISION_BYTES as BYTES, type Precision as ModelPrecision } from "../models/precision.ts";
import { defaultCalibrationPath, readCalibration, type Calibration } from "../models/calibration.ts";
import { PrecisionSchedule, PrecisionScheduleError } from "../pipeline/schedule.ts";
import { Rng } from "../runtime/random.ts";

export class BenchError extends Error {}

/** The precisions (src/models/precision.ts). */
export const PRECISIONS = ALL_PRECISIONS;
export type Precision = ModelPrecision;
/** Bytes per weight value of each precision (packed weights in engine memory). */
export const PRECISION_BYTES: Record<Precision, number> = BYTES;

const MiB = 1024 * 1024;
const MAX_MEMORY = 4096 * MiB;
/** CLIP's sequence length: the UNet's context is [batch, 77, cross_attention_dim] in Stable Diffusion. */
export const CONTEXT_LENGTH = 77;

export { runtimeName, v8Version, loadAverage, cpuSeconds, rssBytes, maxRssBytes };

/** Whether `precision` can be built by this version of the engine, and if not, why. */
export function precisionAvailable(precision: Precision): { ok: boolean; reason: string } {
  if ((PRECISIONS as readonly string[]).includes(precision)) return { ok: true, reason: "" };
  return { ok: false, reason: `unknown precision "${precision}" (expected ${PRECISIONS.join(", ")})` };
}

// ---------------------------------------------------------------------------------------------------
// configs

export interface UNetSource {
  /** sd15, sd21, fashion, or the path given. */
  name: string;
  /** What the config is, for reports. */
  label: string;
  config: UNetConfig;
  /** The diffusers unet folder with weights, or null (built-in configs: random weights only). */
  dir: string | null;
}

export const BUILTIN_CONFIGS = ["sd15", "sd21", "fashion"] as const;

/**
 * sd15 / sd21: the built-in SD 1.5 / SD 2.1 UNet configs (no weights); fashion: the shipped fashion-sd-tiny
 * unet; anything else: a path to a diffusers unet folder (config.json + weights) or a pipeline folder
 * (model_index.json + unet/).
 */
export async function resolveUNetSource(spec: string): Promise<UNetSource> {
  if (spec === "sd15") return { name: "sd15", label: "SD 1.5 UNet (runwayml/stable-diffusion-v1-5 config)", config: structuredClone(SD15_UNET_CONFIG) as UNetConfig, dir: null };
  if (spec === "sd21") return { name: "sd21", label: "SD 2.1 UNet (stabilityai/stable-diffusion-2-1 config)", config: structuredClone(SD21_UNET_CONFIG) as UNetConfig, dir: null };
  let dir: string;
  let label: string;
  if (spec === "fashion") {
    dir = joinLocation(resolveDefaultModel(), "unet");
    label = "fashion-sd-tiny UNet";
  } else {
    if ((await statLocation(spec)).kind === "missing") throw new BenchError(`--config ${spec}: not sd15, sd21, fashion, or an existing folder`);
    if (await fileExists(joinLocation(spec, "model_index.json"))) dir = joinLocation(spec, "unet");
    else if (await fileExists(joinLocation(spec, "config.json"))) dir = spec;
    else throw new BenchError(`--config ${spec}: neither a diffusers pipeline folder (model_index.json) nor a unet folder (config.json)`);
    label = `UNet of ${spec}`;
  }
  return { name: spec, label, config: await loadUNetConfig(dir), dir };
}

/**
 * Engine memory for a UNet benchmark: the weights at the precision's bytes per value (+5% for packing
 * padding, biases, scales), the activations (+25%), inputs and slack; rounded up to 16 MiB, at most 4 GiB.
 */
export function unetBenchMemory(cfg: UNetConfig, precision: Precision, batch: number, size: number): number {
  const weights = unetParamCount(cfg) * PRECISION_BYTES[precision] * 1.05;
  const ctxDim = Array.isArray(cfg.cross_attention_dim) ? Math.max(...cfg.cross_attention_dim) : cfg.cross_attention_dim;
  const inputs = 4 * batch * (CONTEXT_LENGTH * ctxDim + 2 * size * size * cfg.in_channels);
  const total = weights + unetActivationBytes(cfg, batch, size * size) * 1.25 + inputs + 48 * MiB;
  return Math.min(Math.max(Math.ceil(total / (16 * MiB)) * 16 * MiB, 64 * MiB), MAX_MEMORY);
}

// ---------------------------------------------------------------------------------------------------
// op profile

export interface ProfileRow {
  kernel: string;
  /** conv, linear, attention, norm, quantize, elementwise. */
  op: string;
  /** Calls per UNet call. */
  calls: number;
  /** Milliseconds per UNet call. */
  ms: number;
  /** Share of the UNet call's wall time. */
  share: number;
}

/** The op type a kernel belongs to, for profiles. */
export function kernelOpType(kernel: string): string {
  if (kernel.startsWith("conv2d")) return "conv";
  if (kernel.startsWith("gemm")) return "linear";
  if (kernel.startsWith("attention") || kernel.startsWith("softmax")) return "attention";
  if (kernel.startsWith("groupnorm") || kernel.startsWith("layernorm")) return "norm";
  if (kernel.startsWith("quantize") || kernel.startsWith("bf16_round")) return "quantize";
  return "elementwise";
}

/** Rows of an Engine.profile map accumulated over `calls` UNet calls taking `wallMs` in all, slowest first. */
export function profileRows(profile: Map<string, { calls: number; ms: number }>, calls: number, wallMs: number): ProfileRow[] {
  const rows = [...profile].map(([kernel, p]) => ({
    kernel,
    op: kernelOpType(kernel),
    calls: p.calls / calls,
    ms: p.ms / calls,
    share: wallMs > 0 ? p.ms / wallMs : 0,
  }));
  return rows.sort((a, b) => b.ms - a.ms);
}

// ---------------------------------------------------------------------------------------------------
// UNet benchmark

export interface UNetBenchOptions {
  /** sd15 | sd21 | fashion | PATH (see resolveUNetSource). */
  config: string;
  precision?: Precision;
  /** Threads including the calling one (default: all cores). */
  threads?: number;
  /** Batch (default 2: one classifier-free-guidance call). */
  batch?: number;
  /** Latent height = width (default: the config's sample_size: 64 for SD 1.5). */
  size?: number;
  /** Timed calls (default 3). */
  iters?: number;
  /** Untimed calls first (default 1). */
  warmup?: number;
  /** Random weights even when the config has a checkpoint. */
  randomWeights?: boolean;
  /** Engine memory in bytes (default: unetBenchMemory). */
  memoryBytes?: number;
  simd?: "auto" | SimdVariant;
  /** Record the time by kernel over the timed calls. */
  profile?: boolean;
  /** Seed of the random weights and inputs (default 0). */
  seed?: number;
  /** INT8 activation ranges for a checkpoint (default: its unet/stepq-calibration.json, else synthetic). */
  calibration?: string;
  /** Timestep passed to the UNet (default 500). */
  timestep?: number;
  /** int8: attention on the INT8 kernels too (default false). */
  int8Attention?: boolean;
  /** Progress messages (building the model, each call); `fraction` of the model built when known. */
  onProgress?: (message: string, fraction?: number) => void;
}

export interface UNetBenchResult {
  /** The --config given (sd15, sd21, fashion or a path). */
  config: string;
  model: string;
  precision: Precision;
  weights: "random" | "checkpoint";
  /**
   * INT8 activation ranges: "calibrated" (a calibration file), "synthetic" (fixed range: random weights or no
   * calibration; latency is the same, outputs are not meaningful); null for fp32/bf16.
   */
  act_ranges: "calibrated" | "synthetic" | null;
  /** int8: the prepared INT8 layers by kernel dot path (fused-8bit, fused-7bit, split-7bit, i16), and a one-line summary. */
  int8_dot_paths?: Record<string, number>;
  int8_dot?: string;
  /** int8: whether attention ran on the INT8 kernels. */
  int8_attention?: boolean;
  params: number;
  batch: number;
  latent_size: number;
  context_length: number;
  timestep: number;
  warmup: number;
  iters: number;
  /** Median seconds per call over the timed calls. */
  seconds_per_call: number;
  seconds_min: number;
  seconds_max: number;
  /** Every timed call, in order. */
  seconds: number[];
  /** Seconds to build (or load) the model, and to create the engine. */
  build_seconds: number;
  /** Engine memory in use after building (the prepared weights). */
  weight_bytes: number;
  /** Engine peak bytes: the wasm memory actually used at most (weights + largest activation set). */
  peak_bytes: number;
  /** The engine's memory size. */
  capacity_bytes: number;
  /** Process RSS, largest of the samples after building and after each call. */
  rss_bytes: number;
  /** Peak RSS of the process (getrusage), where the runtime reports it; else null. */
  max_rss_bytes: number | null;
  threads: number;
  simd: SimdVariant;
  runtime: string;
  v8: string;
  /** 1-minute load average before the timed calls and after them (a busy machine makes timings noisy). */
  load_before: number | null;
  load_after: number | null;
  /**
   * CPU time the process got during the timed calls / (wall time x threads). The workers spin while they
   * wait, so near 1 means the engine had its cores; well below 1 means other processes took them.
   */
  cpu_share: number | null;
  /** Output of the last call is finite everywhere. */
  output_finite: boolean;
  /** Time by kernel per UNet call (with --profile), slowest first. */
  profile?: ProfileRow[];
  /** Share of the profiled wall time spent outside kernels (JS, allocation, dispatch). */
  profile_outside_kernels?: number;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fillNormal(dst: Float32Array, rng: Rng): void {
  const chunk = 1 << 16;
  for (let i = 0; i < dst.length; i += chunk) dst.set(rng.normal(Math.min(chunk, dst.length - i)), i);
}

export async function benchUNet(opts: UNetBenchOptions): Promise<UNetBenchResult> {
  const precision = opts.precision ?? "fp32";
  if (!(PRECISIONS as readonly string[]).includes(precision)) throw new BenchError(`precision must be one of ${PRECISIONS.join(", ")}, got "${precision}"`);
  if (opts.int8Attention && precision !== "int8") throw new BenchError("--int8-attention applies to --precision int8");
  const avail = precisionAvailable(precision);
  if (!avail.ok) throw new BenchError(avail.reason);
  const src = await resolveUNetSource(opts.config);
  const cfg = src.config;
  const batch = opts.batch ?? 2;
  const size = opts.size ?? cfg.sample_size ?? 64;
  const iters = opts.iters ?? 3;
  const warmup = opts.warmup ?? 1;
  const seed = opts.seed ?? 0;
  const timestep = opts.timestep ?? 500;
  for (const [k, v, min] of [["batch", batch, 1], ["size", size, 1], ["iters", iters, 1], ["warmup", warmup, 0]] as const)
    if (!Number.isInteger(v) || v < min) throw new BenchError(`${k} must be an integer >= ${min}, got ${v}`);
  const mult = 2 ** (cfg.block_out_channels.length - 1);
  if (size % mult) throw new BenchError(`latent size ${size} must be a multiple of ${mult} for this UNet (it downsamples ${mult}x)`);
  const random = src.dir === null || !!opts.randomWeights;
  const progress = opts.onProgress ?? (() => {});
  const params = unetParamCount(cfg);

  // INT8 activation ranges: the checkpoint's calibration when there is one, else synthetic (flagged)
  let calibration: Calibration | "synthetic" = "synthetic";
  if (precision === "int8" && !random) {
    const f = opts.calibration ?? defaultCalibrationPath(src.dir!);
    if (opts.calibration || (await fileExists(f))) calibration = await readCalibration(f); // validates; errors name the file
  } else if (precision === "int8" && opts.calibration) calibration = await readCalibration(opts.calibration);
  const actRanges = precision !== "int8" ? null : calibration === "synthetic" ? "synthetic" : "calibrated";
  if (actRanges === "synthetic")
    progress(`int8 with a fixed synthetic activation range (${random ? "random weights" : `no calibration file at ${defaultCalibrationPath(src.dir!)}`}): latency only, the outputs mean nothing`);

  const tBuild = performance.now();
  const memoryBytes = opts.memoryBytes ?? unetBenchMemory(cfg, precision, batch, size);
  const eng = await Engine.create({ threads: opts.threads, memoryBytes, simd: opts.simd });
  try {
    // build the model; report progress from the engine memory the prepared weights take
    const expect = params * PRECISION_BYTES[precision];
    const what = `${src.label}, ${(params / 1e6).toFixed(1)} M parameters, ${random ? "random weights" : "weights from the checkpoint"}, ${precision}`;
    progress(`building ${what}`, 0);
    const ws = random ? WeightStore.random(eng, seed) : await WeightStore.open(eng, await findWeights(src.dir!));
    let last = 0;
    const tick = () => {
      const f = Math.min(1, eng.stats().used / expect);
      if (f - last >= 0.05) {
        last = f;
        progress(`building: ${Math.round(f * 100)}% (${((performance.now() - tBuild) / 1000).toFixed(1)} s)`, f);
      }
    };
    // count progress as layers are prepared (the store's public layer methods, wrapped on this instance)
    const wrap = <K extends "linear" | "conv" | "norm" | "param">(k: K) => {
      const orig = (ws[k] as (...a: unknown[]) => unknown).bind(ws);
      (ws as any)[k] = async (...a: unknown[]) => {
        const r = await orig(...a);
        tick();
        return r;
      };
    };
    (["linear", "conv", "norm", "param"] as const).forEach(wrap);
    let unet: UNet;
    try {
      unet =
        precision === "fp32"
          ? await UNet.fromConfig(eng, cfg, ws, seed)
          : await UNet.fromConfig(eng, cfg, ws, seed, { precisions: [precision], calibration: precision === "int8" ? calibration : undefined });
      if (!random) ws.assertAllUsed("UNet2DConditionModel");
      if (opts.int8Attention) unet.setInt8Attention(true);
    } finally {
      ws.close();
    }
    const buildSeconds = (performance.now() - tBuild) / 1000;
    const weightBytes = eng.stats().used;
    progress(`built in ${buildSeconds.toFixed(1)} s (${(weightBytes / MiB).toFixed(0)} MiB of weights in a ${(eng.stats().capacity / MiB).toFixed(0)} MiB engine)`, 1);

    // inputs: N(0,1) latents and context, persistent across calls
    const rng = new Rng(seed + 1);
    const ctxDim = Array.isArray(cfg.cross_attention_dim) ? cfg.cross_attention_dim[0] : cfg.cross_attention_dim;
    const sample = eng.empty([batch, size, size, cfg.in_channels]);
    fillNormal(sample.f32(), rng);
    const context = eng.empty([batch, CONTEXT_LENGTH, ctxDim]);
    fillNormal(context.f32(), rng);

    let rss = rssBytes();
    let finite = true;
    const call = () =>
      eng.scope(() => {
        const out = unet.forward(sample, timestep, context);
        const o = out.f32();
        finite = true;
        for (let i = 0; i < o.length; i++)
          if (!Number.isFinite(o[i])) {
            finite = false;
            break;
          }
      });
    for (let i = 0; i < warmup; i++) {
      const t0 = performance.now();
      call();
      rss = Math.max(rss, rssBytes());
      progress(`warm-up ${i + 1}/${warmup}: ${((performance.now() - t0) / 1000).toFixed(3)} s`);
    }
    const loadBefore = loadAverage();
    const cpu0 = cpuSeconds();
    if (opts.profile) eng.profile = new Map();
    const seconds: number[] = [];
    for (let i = 0; i < iters; i++) {
      const t0 = performance.now();
      call();
      const s = (performance.now() - t0) / 1000;
      seconds.push(s);
      rss = Math.max(rss, rssBytes());
      progress(`call ${i + 1}/${iters}: ${s.toFixed(3)} s`);
    }
    const cpu1 = cpuSeconds();
    const prof = eng.profile;
    eng.profile = null;
    sample.free();
    context.free();

    const st = eng.stats();
    const result: UNetBenchResult = {
      config: src.name,
      model: src.label,
      precision,
      weights: random ? "random" : "checkpoint",
      act_ranges: actRanges,
      params,
      batch,
      latent_size: size,
      context_length: CONTEXT_LENGTH,
      timestep,
      warmup,
      iters,
      seconds_per_call: median(seconds),
      seconds_min: Math.min(...seconds),
      seconds_max: Math.max(...seconds),
      seconds,
      build_seconds: buildSeconds,
      weight_bytes: weightBytes,
      peak_bytes: st.peak,
      capacity_bytes: st.capacity,
      rss_bytes: rss,
      max_rss_bytes: maxRssBytes(),
      threads: eng.threads,
      simd: eng.simd,
      runtime: runtimeName(),
      v8: v8Version(),
      load_before: loadBefore,
      load_after: loadAverage(),
      cpu_share: cpu0 !== null && cpu1 !== null ? Math.round(((cpu1 - cpu0) / (seconds.reduce((a, b) => a + b, 0) * eng.threads)) * 1000) / 1000 : null,
      output_finite: finite,
      ...(precision === "int8" ? { int8_dot_paths: int8PreparedPaths(eng), int8_dot: int8PathSummary(eng), int8_attention: unet.int8Attention } : {}),
    };
    if (prof) {
      const wallMs = seconds.reduce((a, b) => a + b, 0) * 1000;
      result.profile = profileRows(prof, iters, wallMs);
      const inKernels = [...prof.values()].reduce((a, p) => a + p.ms, 0);
      result.profile_outside_kernels = wallMs > 0 ? Math.max(0, 1 - inKernels / wallMs) : 0;
    }
    return result;
  } finally {
    eng.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// whole-image benchmark

export interface ImageBenchOptions {
  /** diffusers pipeline folder (default: the shipped fashion-sd-tiny). */
  model?: string;
  steps?: number;
  guidance?: number;
  /** fp32 | bf16 | int8 | mixed:K | a schedule "bf16*5,int8*40,bf16*5" (see src/pipeline/precision.ts). */
  precision?: string;
  /** INT8 activation ranges (default: the model's unet/stepq-calibration.json). */
  calibration?: string;
  prompt?: string;
  seed?: number;
  scheduler?: string;
  width?: number;
  height?: number;
  threads?: number;
  memoryBytes?: number;
  simd?: "auto" | SimdVariant;
  onProgress?: (message: string) => void;
}

export interface ImageBenchResult {
  model: string;
  /** The precision spec given. */
  precision: string;
  /** Per-step schedule in compact form. */
  schedule: string;
  /** Precision of each UNet call. */
  step_precisions: Precision[];
  prompt: string;
  scheduler: string;
  steps: number;
  /** UNet calls (PNDM makes one more than steps). */
  unet_calls: number;
  guidance: number;
  width: number;
  height: number;
  load_seconds: number;
  text_seconds: number;
  /** Seconds of each denoising step (one UNet call plus the scheduler). */
  step_seconds: number[];
  step_median_seconds: number;
  denoise_seconds: number;
  decode_seconds: number;
  /** Generation time without loading. */
  total_seconds: number;
  peak_bytes: number;
  capacity_bytes: number;
  rss_bytes: number;
  max_rss_bytes: number | null;
  threads: number;
  simd: SimdVariant;
  runtime: string;
  v8: string;
  load_before: number | null;
  load_after: number | null;
  /** CPU time of the process during generate() / (its wall time x threads); see UNetBenchResult.cpu_share. */
  cpu_share: number | null;
  /** Mean of the image's bytes (a black or NaN image is 0). */
  image_mean: number;
}

export async function benchImage(opts: ImageBenchOptions = {}): Promise<ImageBenchResult> {
  const precision = opts.precision ?? "fp32";
  const model = opts.model ?? resolveDefaultModel();
  const progress = opts.onProgress ?? (() => {});
  const steps = opts.steps ?? 20;
  let schedule: PrecisionSchedule;
  try {
    schedule = PrecisionSchedule.parse(precision, steps);
  } catch (e) {
    if (e instanceof PrecisionScheduleError) throw new BenchError(e.message);
    throw e;
  }
  const guidance = opts.guidance ?? 7.5;
  const prompt = opts.prompt ?? "a photo of a sneaker";
  progress(`loading ${model}`);
  const pipe = await StableDiffusionPipeline.load(model, {
    threads: opts.threads,
    memoryBytes: opts.memoryBytes,
    simd: opts.simd,
    width: opts.width,
    height: opts.height,
    onWarning: (m) => progress(`warning: ${m}`),
    precisions: schedule.toLoad,
    calibration: opts.calibration,
  });
  try {
    progress(`loaded in ${(pipe.loadMs / 1000).toFixed(2)} s`);
    let rss = rssBytes();
    const loadBefore = loadAverage();
    const cpu0 = cpuSeconds();
    const res = await pipe.generate({
      prompt,
      steps,
      guidance,
      seed: opts.seed ?? 1,
      scheduler: opts.scheduler,
      width: opts.width,
      height: opts.height,
      precision: schedule,
      onStep: (s) => {
        rss = Math.max(rss, rssBytes());
        progress(`step ${s.step}/${s.total} [${s.precision}]: ${(s.stepMs / 1000).toFixed(3)} s`);
      },
    });
    const cpu1 = cpuSeconds();
    rss = Math.max(rss, rssBytes());
    const t = res.timings;
    const st = pipe.engine.stats();
    let sum = 0;
    for (const b of res.image) sum += b;
    return {
      model: absoluteLocation(model),
      precision,
      schedule: res.schedule,
      step_precisions: res.precisions,
      prompt,
      scheduler: res.scheduler,
      steps,
      unet_calls: t.stepMs.length,
      guidance,
      width: res.width,
      height: res.height,
      load_seconds: pipe.loadMs / 1000,
      text_seconds: t.textMs / 1000,
      step_seconds: t.stepMs.map((ms) => ms / 1000),
      step_median_seconds: median(t.stepMs) / 1000,
      denoise_seconds: t.denoiseMs / 1000,
      decode_seconds: t.decodeMs / 1000,
      total_seconds: t.totalMs / 1000,
      peak_bytes: st.peak,
      capacity_bytes: st.capacity,
      rss_bytes: rss,
      max_rss_bytes: maxRssBytes(),
      threads: pipe.engine.threads,
      simd: pipe.engine.simd,
      runtime: runtimeName(),
      v8: v8Version(),
      load_before: loadBefore,
      load_after: loadAverage(),
      cpu_share: cpu0 !== null && cpu1 !== null && t.totalMs > 0 ? Math.round(((cpu1 - cpu0) / ((t.totalMs / 1000) * pipe.engine.threads)) * 1000) / 1000 : null,
      image_mean: sum / Math.max(1, res.image.length),
    };
  } finally {
    pipe.close();
  }
}
