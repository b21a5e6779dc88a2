// Quantization-aware training with knowledge distillation (the paper's Algorithm 1; ITREX's
// train_text_to_image_qat.py) on the engine's own kernels: the teacher is the float UNet (frozen: it runs
// with no gradient recorder), the student the same UNet with every conv/linear layer fake-quantised at
// exactly the numerics the engine's INT8 inference runs (src/nn/trainable.ts: the student's forward IS
// linearInt8 / conv2dInt8 on weights re-quantised from f32 master weights), so the exported INT8 UNet
// computes bit for bit what the student computed.
//
// Each step (data mode): B Fashion-MNIST training images (never t10k: FID is measured against it),
// preprocessed and captioned as the model was trained (../shared/README.md), VAE posterior mean x
// scaling_factor, CLIP text states; t uniform in [0, 1000), DDPM forward noising with the model's noise
// schedule; loss = MSE(eps_S, eps) + kd * MSE(eps_S, eps_T); AdamW (0.9/0.999, wd 1e-2, eps 1e-8), grad-norm
// clip 1.0, EMA of the student weights (diffusers' EMAModel schedule); the exported weights are the EMA's.
// Before training, an observer calibration phase of min(steps / 2, 300) forward batches (ITREX), after which
// the EMA starts from the calibrated student. Observers (torch.ao's moving-average min/max, constant 0.01)
// stay on during training.
//
// Data-free mode (EfficientDM-style): the teacher samples with the model's sampler and guidance from prompts
// (the class prompts, or a file); at every denoising call the student gets the teacher's input and is matched
// to the teacher's guided output (loss = kd * MSE(cfg(eps_S), cfg(eps_T))), one optimizer step per call; the
// trajectory is the teacher's, so it does not depend on the student (a resumed run recomputes it).
//
// Scales: "observer" (default, torch.ao as in the paper) or "lsq" (LSQ / LSQ+: after calibration the
// activation scale and offset and the per-channel weight scales become parameters, initialised from the
// calibrated state, trained by AdamW without weight decay). Per-step scales: one activation range (or learned
// scale) per sampler timestep; each training batch then shares one of those timesteps.
//
// What deviates from the recipe, and why:
// - Weight scales are the engine's f32(max|w| / wq) of the current master weights (as INT8 loading computes
//   them), not a moving average of per-channel min/max: the weights move ~lr per step, so the two agree to
//   ~1e-5, and this way the exported layer is the student's, bit for bit.
// - GroupNorm / LayerNorm parameters stay frozen: one set serves every precision of a mixed-precision UNet
//   (the BF16 steps run the original weights), so only the conv/linear weights and biases are trained.
// - Weights: 7-bit (|q| <= 63) with 8-bit activations by default, the engine's INT8 default
//   (INT8_CALIBRATION_DEFAULT); --act-bits / --weight-bits as stepq calibrate.
//
// Output: a pipeline folder (weights-tools/README.md, "QAT output"): the other components linked or copied,
// unet/ with config.json, the original checkpoint (FP32 steps; BF16 steps with bf16Weights "original"),
// stepq-int8.safetensors (the QAT INT8 UNet, converted format), stepq-bf16.safetensors with bf16Weights
// "qat", stepq-qat.json (the settings, the losses, the times) and stepq-qat-log.jsonl (one line per step).
// CLI: stepq qat (src/cli/qat.ts).
import * as fs from "node:fs";
import * as path from "node:path";
import { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";
import { findWeights, loadComponentConfig } from "../src/io/diffusers.ts";
import { readIdxImages } from "../src/io/idx.ts";
import { writeFileAtomic } from "../src/io/files.ts";
import { checkOutputFolder, OutputError } from "../src/io/outputs.ts";
import { loadClipTextModel, loadUNet, loadVae } from "../src/models/loader.ts";
import { loadUNetConfig, type UNetConfig } from "../src/models/config.ts";
import { ClipTokenizer } from "../src/models/tokenizer.ts";
import type { UNet } from "../src/models/unet.ts";
import type { Vae } from "../src/models/vae.ts";
import type { ClipTextModel } from "../src/models/clip.ts";
import { unetActivationBytes, unetParamCount } from "../src/models/memory.ts";
import { STEPQ_FORMAT, STEPQ_FORMAT_VERSION, stepqWeightsName } from "../src/models/converted.ts";
import { hasPerStepRanges, readCalibration, type Calibration } from "../src/models/calibration.ts";
import { weightBytesF32 } from "../src/pipeline/pipeline.ts";
import { createScheduler, schedulerFromConfig, type Scheduler } from "../src/pipeline/schedulers.ts";
import { FASHION_CLASSES } from "../src/tools/prompts.ts";
import { INT8_CALIBRATION_DEFAULT, f32ArrayToBf16Bits, quantizeWeightsPerChannel, normalizeActParams, type ActQuantParams } from "../src/nn/quant.ts";
import { clampLearnedScales, currentActParams, currentWeightScales, learnScales, refreshTrainable, setStepRanges, type TrainableConv, type TrainableLinear } from "../src/nn/trainable.ts";
import type { Range } from "../src/nn/backward/fakequant.ts";
import { int8DotPath } from "../src/nn/int8.ts";
import { ParameterSet, type Parameter } from "../src/train/params.ts";
import { Tape } from "../src/train/tape.ts";
import { AdamW, Ema, learningRate, type LrSchedule } from "../src/train/optim.ts";
import { addNoise, cfgBackward, cfgCombine, mseLossAndGrad, permutation, randInt, STREAM, streamRng } from "../src/train/distill.ts";
import { unetDirOf } from "./convert.ts";

export type ScalesMode = "observer" | "lsq";
export type Bf16Weights = "original" | "qat";
export type LinkMode = "hard" | "symlink" | "copy";

/** The recipe's defaults (ITREX train_text_to_image_qat.py, the issue). */
export const QAT_DEFAULTS = {
  steps: 300,
  batch: 4,
  lr: 1e-5,
  lrSchedule: "constant" as LrSchedule,
  kdWeight: 1.0,
  weightDecay: 1e-2,
  gradClip: 1.0,
  emaMaxDecay: 0.9999,
  maxCalibrationBatches: 300,
  checkpointEvery: 100,
  samplerSteps: 50,
  guidance: 4,
  scheduler: "pndm",
  seed: 0,
  /** Which weights the BF16 steps of a mixed schedule use: the original ones, as the paper's pipeline; measured better than "qat" (mixed:5 +0.69 dB, docs/quality.md). */
  bf16Weights: "original" as Bf16Weights,
};

/** The 8 caption templates fashion-sd-tiny was trained with (../shared/README.md), and the empty caption's probability. */
export const CAPTION_TEMPLATES = [
  "a photo of a {c}",
  "a picture of a {c}",
  "{c}",
  "a black and white photo of a {c}",
  "an image of a {c}",
  "a {c} on a black background",
  "a grayscale picture of a {c}",
  "a low resolution photo of a {c}",
];
export const EMPTY_CAPTION_PROBABILITY = 0.1;

export interface QatOptions {
  /** diffusers pipeline folder of the float model (the teacher and the student's start). */
  model: string;
  /** Output pipeline folder. */
  out: string;
  /** Folder with train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (data mode). */
  data?: string;
  /** Distil on the teacher's sampling trajectories instead of data. */
  dataFree?: boolean;
  /** Data-free prompts (default: "a photo of a {class}" for the 10 classes). */
  prompts?: string[];
  /** Optimizer steps (data-free: one per denoising call). */
  steps?: number;
  /** Images per step (data-free: trajectories run side by side; the UNet batch is 2x with guidance). */
  batch?: number;
  lr?: number;
  lrSchedule?: LrSchedule;
  kdWeight?: number;
  /** Weight of the noise loss MSE(eps_S, eps) (default 1, the recipe; 0: distillation only). */
  noiseWeight?: number;
  /** Activation observer: "ema" (torch.ao's moving-average min/max, the recipe) or "minmax" (running extremes). */
  observer?: "ema" | "minmax";
  /** Keep observing during training (default true, torch.ao); false freezes the calibrated ranges. */
  observeDuringTraining?: boolean;
  /**
   * Start the activation ranges from a stepq calibration file (e.g. the model's unet/stepq-calibration.json,
   * made on sampling trajectories) instead of from nothing; the calibration phase then defaults to 0 batches.
   */
  initRanges?: string;
  weightDecay?: number;
  gradClip?: number;
  scales?: ScalesMode;
  perStepScales?: boolean;
  /** Activations 0..actQmax and weights -weightQmax..weightQmax (default: the engine's INT8 default). */
  actQmax?: 127 | 255;
  weightQmax?: 127 | 63;
  /** Observer calibration batches before training (default min(steps / 2, 300)). */
  calibrationBatches?: number;
  /** Keep an EMA of the weights and export it (default true). */
  ema?: boolean;
  emaMaxDecay?: number;
  seed?: number;
  /** Sampler of the data-free trajectories and of the per-step timestep table (default pndm, 50 steps, guidance 4). */
  scheduler?: string;
  samplerSteps?: number;
  guidance?: number;
  /** Gradient checkpointing per UNet block (less memory, ~1.3x the compute). */
  checkpointing?: boolean;
  checkpointEvery?: number;
  /** Checkpoint file (default OUT/stepq-qat-checkpoint.safetensors). */
  checkpointFile?: string;
  /** Continue from the checkpoint (the same options must be given). */
  resume?: boolean;
  /** Keep the checkpoint after a finished run (default: removed). */
  keepCheckpoint?: boolean;
  bf16Weights?: Bf16Weights;
  /** How the output gets the model's other components and original UNet checkpoint (default hard links, else copies). */
  link?: LinkMode;
  /** Write into an existing folder that is not an earlier stepq qat output, or inside another model folder. */
  force?: boolean;
  threads?: number;
  memoryBytes?: number;
  simd?: "auto" | "relaxed" | "baseline";
  onProgress?: (p: QatProgress) => void;
  onMessage?: (m: string) => void;
  /** Polled after every step: true stops the run with a checkpoint (Ctrl-C). */
  shouldStop?: () => boolean;
  /** Train on the first batch at every step (overfitting checks). */
  fixedBatch?: boolean;
  /**
   * Held-out batches (their own random stream) on which the student's losses are measured after calibration
   * and on the exported weights (default 16; data-free: one trajectory's calls); 0: none.
   */
  valBatches?: number;
}

export interface QatProgress {
  phase: "calibrate" | "train";
  /** 1-based. */
  step: number;
  steps: number;
  /** MSE(eps_S, eps) (null in data-free mode and during calibration). */
  noiseLoss: number | null;
  /** MSE(eps_S, eps_T) (null during calibration). */
  kdLoss: number | null;
  gradNorm: number | null;
  lr: number | null;
  samplesPerSec: number;
  elapsedMs: number;
  etaMs: number;
}

export interface QatResult {
  out: string;
  /** Steps done (equal to the steps asked for unless stopped). */
  step: number;
  steps: number;
  stopped: boolean;
  checkpoint: string | null;
  trainSeconds: number;
  samplesPerSec: number;
  peakEngineBytes: number;
  /** Held-out losses after calibration and of the exported weights (null: valBatches 0). */
  heldOut: { before: { noise: number | null; kd: number } | null; after: { noise: number | null; kd: number } | null };
  /** Engine bytes in use when training starts (models, parameters, gradients, optimizer state): the peak minus this is a step's activations. */
  stateEngineBytes: number;
  plan: QatMemoryPlan;
}

export class QatMemoryError extends Error {}

// ---------------------------------------------------------------------------------------------------------
// memory

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
/** The engine's largest memory (wasm32). */
export const ENGINE_MAX_BYTES = 4 * GiB;
/**
 * Activation bytes of one training step (the teacher's forward, the student's forward kept for its backward,
 * and the backward's gradients) as a multiple of one inference call's peak (models/memory.ts). Measured on
 * fashion-sd-tiny (engine peak minus the state before the step, batch 2..16, data and data-free): 5.6-5.7
 * without gradient checkpointing (every op keeps its input), 2.4-2.7 with it (block inputs plus one block's
 * recompute); the plan uses these with ~1.5x margin (test/qat.test.ts checks a step stays below the plan).
 */
export const TRAIN_ACTIVATION_FACTOR = { plain: 8, checkpointing: 4 };

export interface QatMemoryPlan {
  params: number;
  /** Engine bytes by part. */
  teacher: number;
  master: number;
  /** The student's packed f32 copy (float forward) plus its INT8 packing and dequantised weights (backward). */
  studentCopies: number;
  gradients: number;
  /** AdamW's m and v. */
  adam: number;
  /** The EMA of the weights. */
  ema: number;
  activations: number;
  /** Text encoder, VAE (encoder for data), caption states. */
  other: number;
  engineTotal: number;
  fits: boolean;
  limit: number;
}

/** What a QAT step needs, from the UNet config (the other components' bytes given as f32 values). */
export function qatMemoryPlan(cfg: UNetConfig, o: { batch: number; dataFree?: boolean; guidance?: number; checkpointing?: boolean; otherBytes?: number; ema?: boolean; limit?: number }): QatMemoryPlan {
  const P = unetParamCount(cfg);
  const rows = o.dataFree && (o.guidance ?? QAT_DEFAULTS.guidance) > 1 ? 2 * o.batch : o.batch;
  const cells = (cfg.sample_size ?? 64) ** 2;
  const act = unetActivationBytes(cfg, rows, cells) * (o.checkpointing ? TRAIN_ACTIVATION_FACTOR.checkpointing : TRAIN_ACTIVATION_FACTOR.plain);
  const teacher = 4 * P;
  const master = 4 * P;
  const studentCopies = 4 * P + P + 4 * P;
  const gradients = 4 * P;
  const adam = 8 * P;
  const ema = o.ema === false ? 0 : 4 * P;
  const other = (o.otherBytes ?? 0) * 1.25 + 64 * MiB;
  const engineTotal = teacher + master + studentCopies + gradients + adam + ema + act + other;
  const limit = o.limit ?? ENGINE_MAX_BYTES;
  return { params: P, teacher, master, studentCopies, gradients, adam, ema, activations: act, other, engineTotal, fits: engineTotal <= limit, limit };
}

const fmtBytes = (b: number) => (b >= GiB ? `${(b / GiB).toFixed(2)} GiB` : `${(b / MiB).toFixed(1)} MiB`);

/** The plan as lines for the user. */
export function describePlan(p: QatMemoryPlan): string[] {
  return [
    `memory per step (UNet ${(p.params / 1e6).toFixed(1)}M parameters): teacher weights ${fmtBytes(p.teacher)}, student master weights ${fmtBytes(p.master)}, ` +
      `student packed/INT8/dequantised copies ${fmtBytes(p.studentCopies)}, gradients ${fmtBytes(p.gradients)}, AdamW state ${fmtBytes(p.adam)}, EMA ${fmtBytes(p.ema)}, ` +
      `activations ${fmtBytes(p.activations)}, text encoder/VAE/other ${fmtBytes(p.other)}: ${fmtBytes(p.engineTotal)} of the engine's ${fmtBytes(p.limit)}`,
  ];
}

/** The refusal message when a plan does not fit. */
export function planRefusal(p: QatMemoryPlan): string {
  const perParam = (p.teacher + p.master + p.studentCopies + p.gradients + p.adam + p.ema) / p.params;
  const room = p.limit - p.activations - p.other;
  return (
    `full QAT of this UNet does not fit the engine's memory: a step needs ${fmtBytes(p.engineTotal)} of engine memory and the engine has at most ${fmtBytes(p.limit)}` +
    `${p.limit === ENGINE_MAX_BYTES ? " (the wasm32 maximum)" : ""}. Teacher weights ${fmtBytes(p.teacher)} + student master ${fmtBytes(p.master)} + student copies ${fmtBytes(p.studentCopies)} + ` +
    `gradients ${fmtBytes(p.gradients)} + AdamW state ${fmtBytes(p.adam)} + EMA ${fmtBytes(p.ema)} (${perParam.toFixed(0)} bytes per parameter x ${(p.params / 1e6).toFixed(1)}M) + ` +
    `activations ${fmtBytes(p.activations)} + other ${fmtBytes(p.other)}; ` +
    (room > 0
      ? `with these activations at most ~${Math.floor(room / perParam / 1e6)}M UNet parameters fit`
      : `the activations and the other components alone exceed the engine at this batch and latent size`)
  );
}

// ---------------------------------------------------------------------------------------------------------
// batches

interface StepBatch {
  /** UNet input NHWC [rows, h, w, c]. */
  x: Float32Array;
  shape: number[];
  ts: number[];
  /** Caption states [rows, L, C]. */
  context: Float32Array;
  contextShape: number[];
  /** The noise that was added (data mode), or null. */
  noise: Float32Array | null;
  /** The teacher's output on x (data-free: computed with the trajectory), or null: run the teacher. */
  teacher: Float32Array | null;
  /** Guidance of the data-free loss (rows = 2 x batch, loss on the guided outputs), else 0. */
  guidance: number;
  /** Index into the per-step timestep table, or -1. */
  stepIndex: number;
  samples: number;
}

interface BatchSource {
  /** Batch `index` of stream `stream` (train or calibration). */
  get(stream: number, index: number): StepBatch;
}

/** Encodes captions once: text -> host states [L, C]. */
class CaptionCache {
  private map = new Map<string, Float32Array>();
  constructor(
    private eng: Engine,
    private tokenizer: ClipTokenizer,
    private text: ClipTextModel,
  ) {}

  get(caption: string): Float32Array {
    let s = this.map.get(caption);
    if (!s) {
      const ids = this.tokenizer.encode(caption).ids;
      s = this.eng.scope(() => {
        const out = this.text.encode(Int32Array.from(ids), 1);
        const v = out.last.toArray();
        return v;
      });
      this.map.set(caption, s);
    }
    return s;
  }

  /** Rows of states for the captions, concatenated. */
  rows(captions: readonly string[]): { data: Float32Array; shape: number[] } {
    const first = this.get(captions[0] ?? "");
    const per = first.length;
    const data = new Float32Array(per * captions.length);
    captions.forEach((c, i) => data.set(this.get(c), i * per));
    return { data, shape: [captions.length, per / this.text.hiddenSize, this.text.hiddenSize] };
  }
}

/** A Fashion-MNIST training image as the model was trained: x / 127.5 - 1, padded by 2 with -1 to 32x32, grey -> RGB, NHWC. */
export function preprocessFashion(images: Uint8Array, index: number, rows = 28, cols = 28, pad = 2): Float32Array {
  const H = rows + 2 * pad, W = cols + 2 * pad;
  const out = new Float32Array(H * W * 3).fill(-1);
  const base = index * rows * cols;
  for (let y = 0; y < rows; y++)
    for (let x = 0; x < cols; x++) {
      const v = Math.fround(Math.fround(images[base + y * cols + x] / 127.5) - 1);
      const o = ((y + pad) * W + x + pad) * 3;
      out[o] = out[o + 1] = out[o + 2] = v;
    }
  return out;
}

/** The caption of an image of class `cls` drawn as training drew it: empty with probability 0.1, else one of the 8 templates. */
export function drawCaption(rng: { uniform(): number }, cls: string): string {
  if (rng.uniform() < EMPTY_CAPTION_PROBABILITY) return "";
  return CAPTION_TEMPLATES[Math.min(CAPTION_TEMPLATES.length - 1, Math.floor(rng.uniform() * CAPTION_TEMPLATES.length))].replace("{c}", cls);
}

class DataSource implements BatchSource {
  private perms = new Map<number, Int32Array>();
  constructor(
    private eng: Engine,
    private vae: Vae,
    private captions: CaptionCache,
    private images: { images: Uint8Array; labels: Uint8Array; count: number; rows: number; cols: number },
    private alphasCumprod: Float32Array,
    private o: { seed: number; batch: number; stepTable: number[] | null },
  ) {}

  private perm(epoch: number): Int32Array {
    let p = this.perms.get(epoch);
    if (!p) {
      p = permutation(this.images.count, streamRng(this.o.seed, STREAM.permutation, epoch));
      this.perms.clear();
      this.perms.set(epoch, p);
    }
    return p;
  }

  get(stream: number, index: number): StepBatch {
    const B = this.o.batch;
    const rng = streamRng(this.o.seed, stream, index);
    const N = this.images.count;
    // training batches walk a fixed shuffled order (epochs); calibration batches draw at random
    const idx: number[] = [];
    for (let j = 0; j < B; j++) {
      if (stream === STREAM.train) {
        const pos = index * B + j;
        idx.push(this.perm(Math.floor(pos / N))[pos % N]);
      } else idx.push(randInt(rng, N));
    }
    const caps = idx.map((i) => drawCaption(rng, FASHION_CLASSES[this.images.labels[i]]));
    let ts: number[];
    let stepIndex = -1;
    const table = this.o.stepTable;
    if (table) {
      stepIndex = randInt(rng, table.length);
      ts = new Array(B).fill(table[stepIndex]);
    } else ts = idx.map(() => randInt(rng, this.alphasCumprod.length));
    const { rows, cols } = this.images;
    const H = rows + 4, W = cols + 4;
    const latents = this.eng.scope(() => {
      const img = this.eng.empty([B, H, W, 3]);
      const v = img.f32();
      idx.forEach((i, j) => v.set(preprocessFashion(this.images.images, i, rows, cols), j * H * W * 3));
      const { mean } = this.vae.encode(img);
      const m = mean.toArray();
      const sf = Math.fround(this.vae.scalingFactor);
      for (let i = 0; i < m.length; i++) m[i] = Math.fround(m[i] * sf);
      return { data: m, shape: mean.shape.slice() };
    });
    const noise = rng.normal(latents.data.length);
    const x = addNoise(latents.data, noise, ts, this.alphasCumprod);
    const ctx = this.captions.rows(caps);
    return { x, shape: latents.shape, ts, context: ctx.data, contextShape: ctx.shape, noise, teacher: null, guidance: 0, stepIndex, samples: B };
  }
}

/** Teacher sampling trajectories: call i of trajectory group g is batch g * callsPerTrajectory + i. */
class TrajectorySource implements BatchSource {
  private state: { stream: number; group: number; call: number; latents: Float32Array[]; schedulers: Scheduler[]; caps: string[] } | null = null;
  readonly callsPerTrajectory: number;
  private readonly timesteps: number[];

  constructor(
    private eng: Engine,
    private teacher: UNet,
    private captions: CaptionCache,
    private makeScheduler: () => Scheduler,
    private o: { seed: number; batch: number; prompts: string[]; steps: number; guidance: number; latentShape: number[]; stepTable: number[] | null },
  ) {
    const s = makeScheduler();
    s.setTimesteps(o.steps);
    this.timesteps = s.timesteps.slice();
    this.callsPerTrajectory = this.timesteps.length;
  }

  private start(stream: number, group: number) {
    const rng = streamRng(this.o.seed, STREAM.trajectory + 16 * stream, group);
    const B = this.o.batch;
    const n = this.o.latentShape.reduce((a, b) => a * b, 1);
    const caps: string[] = [];
    const latents: Float32Array[] = [];
    const schedulers: Scheduler[] = [];
    for (let b = 0; b < B; b++) {
      caps.push(this.o.prompts[randInt(rng, this.o.prompts.length)]);
      const s = this.makeScheduler();
      s.setTimesteps(this.o.steps);
      const sigma = Math.fround(s.initNoiseSigma);
      latents.push(rng.normal(n).map((v) => (sigma === 1 ? v : v * sigma)));
      schedulers.push(s);
    }
    this.state = { stream, group, call: 0, latents, schedulers, caps };
  }

  /** The guided teacher output at the current call, and the latents advanced by the teacher's step. */
  private advance(): StepBatch {
    const st = this.state!;
    const B = this.o.batch;
    const t = this.timesteps[st.call];
    const [h, w, c] = this.o.latentShape;
    const n = h * w * c;
    const cfg = this.o.guidance > 1;
    const R = cfg ? 2 * B : B;
    const x = new Float32Array(R * n);
    st.latents.forEach((l, b) => {
      const s = st.schedulers[b].scaleModelInput(l, t);
      x.set(s, b * n);
      if (cfg) x.set(s, (B + b) * n);
    });
    const ctx = this.captions.rows(cfg ? [...new Array(B).fill(""), ...st.caps] : st.caps);
    const out = this.eng.scope(() => this.teacher.forward(this.eng.fromArray(x, [R, h, w, c]), t, this.eng.fromArray(ctx.data, ctx.shape)).toArray());
    const eps = cfg ? cfgCombine(out, B, this.o.guidance) : out;
    st.latents = st.latents.map((l, b) => st.schedulers[b].step(eps.subarray(b * n, (b + 1) * n), t, l));
    const table = this.o.stepTable;
    const stepIndex = table ? nearestIndex(table, t) : -1;
    st.call++;
    return { x, shape: [R, h, w, c], ts: new Array(R).fill(t), context: ctx.data, contextShape: ctx.shape, noise: null, teacher: out, guidance: cfg ? this.o.guidance : 0, stepIndex, samples: B };
  }

  get(stream: number, index: number): StepBatch {
    const group = Math.floor(index / this.callsPerTrajectory);
    const call = index % this.callsPerTrajectory;
    const st = this.state;
    if (!st || st.stream !== stream || st.group !== group || st.call > call) this.start(stream, group);
    // a resumed run (or a jump) recomputes the teacher's trajectory up to this call
    while (this.state!.call < call) this.advance();
    return this.advance();
  }
}

function nearestIndex(table: readonly number[], t: number): number {
  let best = 0;
  for (let i = 1; i < table.length; i++) if (Math.abs(table[i] - t) < Math.abs(table[best] - t)) best = i;
  return best;
}

// ---------------------------------------------------------------------------------------------------------
// checkpoints

const CHECKPOINT_FORMAT = "stepq-qat-checkpoint";
const CHECKPOINT_VERSION = "1";

/** The options that decide the result (a resumed run must be given the same). */
function fingerprint(o: ResolvedOptions): Record<string, unknown> {
  return {
    model: path.resolve(o.model), data: o.dataFree ? null : path.resolve(o.data ?? ""), dataFree: o.dataFree, prompts: o.dataFree ? o.prompts : null,
    steps: o.steps, batch: o.batch, lr: o.lr, lrSchedule: o.lrSchedule, kdWeight: o.kdWeight, noiseWeight: o.noiseWeight, observer: o.observer, observeDuringTraining: o.observeDuringTraining,
    initRanges: o.initRanges ? path.resolve(o.initRanges) : null,
    weightDecay: o.weightDecay, gradClip: o.gradClip,
    scales: o.scales, perStepScales: o.perStepScales, actQmax: o.actQmax, weightQmax: o.weightQmax, calibrationBatches: o.calibrationBatches,
    ema: o.ema, emaMaxDecay: o.emaMaxDecay, seed: o.seed, scheduler: o.scheduler, samplerSteps: o.samplerSteps, guidance: o.guidance, fixedBatch: o.fixedBatch,
  };
}

interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  version: string;
  options: Record<string, unknown>;
  /** "calibrate": `done` calibration batches are in the ranges; "train": `done` optimizer steps are. */
  phase: "calibrate" | "train";
  done: number;
  adamStep: number;
  emaUpdates: number;
  ranges: Record<string, { range: Range | null; steps?: (Range | null)[] }>;
  trainMs: number;
  valBefore?: { noise: number | null; kd: number } | null;
}

type Layer = TrainableLinear | TrainableConv;

function writeCheckpoint(file: string, st: CheckpointState, params: ParameterSet, adam: AdamW | null, ema: Ema | null): void {
  const t: TensorToWrite[] = [];
  const f32 = (name: string, a: Float32Array, shape: readonly number[]) => t.push({ name, dtype: "F32", shape: shape.slice(), data: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) });
  params.all.forEach((p, i) => {
    f32(`param.${p.name}`, p.value.f32().slice(), p.value.shape);
    if (adam) {
      f32(`adam_m.${p.name}`, adam.m[i].f32().slice(), p.value.shape);
      f32(`adam_v.${p.name}`, adam.v[i].f32().slice(), p.value.shape);
    }
    if (ema) f32(`ema.${p.name}`, ema.shadow[i].f32().slice(), p.value.shape);
  });
  writeSafetensors(file, t, { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, state: JSON.stringify(st) });
}

async function readCheckpoint(file: string): Promise<{ state: CheckpointState; st: SafetensorsFile }> {
  if (!fs.existsSync(file)) throw new Error(`--resume: no checkpoint at ${file}`);
  const st = await SafetensorsFile.open(file);
  if (st.metadata.format !== CHECKPOINT_FORMAT || st.metadata.version !== CHECKPOINT_VERSION) {
    st.close();
    throw new Error(`${file}: not a stepq QAT checkpoint (version ${CHECKPOINT_VERSION})`);
  }
  return { state: JSON.parse(st.metadata.state) as CheckpointState, st };
}

// ---------------------------------------------------------------------------------------------------------
// the run

type ResolvedOptions = Required<Pick<QatOptions, "model" | "out" | "steps" | "batch" | "lr" | "lrSchedule" | "kdWeight" | "weightDecay" | "gradClip" | "scales" | "perStepScales" | "actQmax" | "weightQmax" | "calibrationBatches" | "ema" | "emaMaxDecay" | "seed" | "scheduler" | "samplerSteps" | "guidance" | "checkpointing" | "checkpointEvery" | "checkpointFile" | "resume" | "keepCheckpoint" | "bf16Weights" | "link" | "dataFree" | "prompts" | "fixedBatch" | "noiseWeight" | "observer" | "observeDuringTraining" | "valBatches">> & { data?: string; initRanges?: string };

export function resolveQatOptions(o: QatOptions): ResolvedOptions {
  const steps = o.steps ?? QAT_DEFAULTS.steps;
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`qat: steps must be a positive integer, got ${steps}`);
  const batch = o.batch ?? QAT_DEFAULTS.batch;
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`qat: batch must be a positive integer, got ${batch}`);
  const dataFree = !!o.dataFree;
  if (dataFree && o.data) throw new Error("qat: give data or dataFree, not both");
  if (!dataFree && !o.data) throw new Error("qat: no training data (data: the Fashion-MNIST folder) and not data-free");
  const kdWeight = o.kdWeight ?? QAT_DEFAULTS.kdWeight;
  if (dataFree && !(kdWeight > 0)) throw new Error("qat: data-free distillation has only the KD loss: kd weight must be > 0");
  const actQmax = o.actQmax ?? INT8_CALIBRATION_DEFAULT.actQmax;
  const weightQmax = o.weightQmax ?? INT8_CALIBRATION_DEFAULT.weightQmax;
  normalizeActParams({ scale: 1, zeroPoint: 0, qmax: actQmax, weightQmax }); // validates the pair
  return {
    model: o.model,
    out: o.out,
    data: o.data,
    dataFree,
    prompts: o.prompts?.length ? o.prompts : FASHION_CLASSES.map((c) => `a photo of a ${c}`),
    steps,
    batch,
    lr: o.lr ?? QAT_DEFAULTS.lr,
    lrSchedule: o.lrSchedule ?? QAT_DEFAULTS.lrSchedule,
    kdWeight,
    weightDecay: o.weightDecay ?? QAT_DEFAULTS.weightDecay,
    gradClip: o.gradClip ?? QAT_DEFAULTS.gradClip,
    scales: o.scales ?? "observer",
    perStepScales: !!o.perStepScales,
    actQmax,
    weightQmax,
    calibrationBatches: o.calibrationBatches ?? (o.initRanges ? 0 : Math.min(Math.floor(steps / 2), QAT_DEFAULTS.maxCalibrationBatches)),
    initRanges: o.initRanges,
    ema: o.ema ?? true,
    emaMaxDecay: o.emaMaxDecay ?? QAT_DEFAULTS.emaMaxDecay,
    seed: o.seed ?? QAT_DEFAULTS.seed,
    scheduler: o.scheduler ?? QAT_DEFAULTS.scheduler,
    samplerSteps: o.samplerSteps ?? QAT_DEFAULTS.samplerSteps,
    guidance: o.guidance ?? QAT_DEFAULTS.guidance,
    checkpointing: !!o.checkpointing,
    checkpointEvery: o.checkpointEvery ?? QAT_DEFAULTS.checkpointEvery,
    checkpointFile: o.checkpointFile ?? path.join(o.out, "stepq-qat-checkpoint.safetensors"),
    resume: !!o.resume,
    keepCheckpoint: !!o.keepCheckpoint,
    bf16Weights: o.bf16Weights ?? QAT_DEFAULTS.bf16Weights,
    link: o.link ?? "hard",
    fixedBatch: !!o.fixedBatch,
    valBatches: o.valBatches ?? -1,
    noiseWeight: o.noiseWeight ?? 1,
    observer: o.observer ?? "ema",
    observeDuringTraining: o.observeDuringTraining ?? true,
  };
}

/** The memory plan of a run with these options (reads the configs and weight file sizes). */
export async function planFor(o: QatOptions): Promise<QatMemoryPlan> {
  const r = resolveQatOptions(o);
  const cfg = await loadUNetConfig(unetDirOf(r.model));
  let other = await weightBytesF32(await findWeights(path.join(r.model, "text_encoder")));
  other += await weightBytesF32(await findWeights(path.join(r.model, "vae")));
  return qatMemoryPlan(cfg, { batch: r.batch, dataFree: r.dataFree, guidance: r.guidance, checkpointing: r.checkpointing, otherBytes: other, ema: r.ema, limit: o.memoryBytes });
}

/** Runs QAT + KD and writes the output folder (see the file header). */
export async function qat(opts: QatOptions): Promise<QatResult> {
  const o = resolveQatOptions(opts);
  const say = opts.onMessage ?? (() => {});
  const unetDir = unetDirOf(o.model);
  const cfg = await loadUNetConfig(unetDir);
  // before any work: --out may not be (inside) the model or the data, and an existing folder must be an
  // earlier qat output (its files of the same names are replaced) unless --force
  checkOutputFolder(o.out, { flag: "--out", readFolders: [o.model], dataFolders: o.data ? [o.data] : [], force: opts.force });
  const existing = fs.existsSync(o.out) ? fs.readdirSync(o.out) : [];
  if (existing.length && !isQatOutput(o.out, o.checkpointFile) && !opts.force)
    throw new OutputError(
      `--out ${o.out}: the folder exists and holds files that are not an earlier stepq qat output (${existing.slice(0, 3).join(", ")}${existing.length > 3 ? ", ..." : ""}); give a new folder, or pass --force to replace files of the same names`,
    );
  const plan = await planFor(opts);
  for (const l of describePlan(plan)) say(l);
  if (!plan.fits) throw new QatMemoryError(planRefusal(plan));
  fs.mkdirSync(o.out, { recursive: true });
  if (!o.resume && fs.existsSync(o.checkpointFile))
    throw new Error(`${o.checkpointFile} exists (an interrupted run): pass --resume to continue it, or remove it to start over`);
  const ckpt = o.resume ? await readCheckpoint(o.checkpointFile) : null;
  if (ckpt) {
    const want = fingerprint(o);
    const diff = Object.keys(want).filter((k) => JSON.stringify(want[k]) !== JSON.stringify(ckpt.state.options[k]));
    if (diff.length) {
      ckpt.st.close();
      throw new Error(`--resume: the checkpoint was made with other settings (${diff.map((k) => `${k}: ${JSON.stringify(ckpt.state.options[k])} there, ${JSON.stringify(want[k])} now`).join("; ")})`);
    }
  }

  const memoryBytes = opts.memoryBytes ?? Math.min(ENGINE_MAX_BYTES, Math.ceil((plan.engineTotal * 1.15) / (16 * MiB)) * 16 * MiB);
  const eng = await Engine.create({ threads: opts.threads, memoryBytes, simd: opts.simd });
  const logFile = path.join(o.out, "unet", "stepq-qat-log.jsonl");
  try {
    // models
    const tokenizer = await ClipTokenizer.fromDir(path.join(o.model, "tokenizer"));
    const text = await loadClipTextModel(eng, path.join(o.model, "text_encoder"));
    const captions = new CaptionCache(eng, tokenizer, text);
    const vae = o.dataFree ? null : await loadVae(eng, path.join(o.model, "vae"), { encoder: true });
    const teacher = await loadUNet(eng, unetDir);
    const layers: Layer[] = [];
    let ranges: Record<string, Range> | undefined;
    let initCal: Calibration | null = null;
    if (o.initRanges) {
      const cal = (initCal = await readCalibration(o.initRanges));
      if (hasPerStepRanges(cal) && !o.perStepScales) say(`${o.initRanges}: its per-step ranges are not used (without --per-step-scales the student has one range per layer)`);
      if (!hasPerStepRanges(cal) && o.perStepScales) say(`${o.initRanges}: no per-step ranges; every step's range starts from the layer's global one`);
      ranges = Object.fromEntries(Object.entries(cal.layers).map(([k, r]) => [k, { min: Math.fround(r.min), max: Math.fround(r.max) }]));
    }
    const student = await loadUNet(eng, unetDir, { training: { register: () => {}, layers, quant: { qmax: o.actQmax, weightQmax: o.weightQmax, observer: o.observer, ranges } } });
    if (ranges) {
      const missing = layers.filter((l) => !ranges![l.name]).map((l) => l.name);
      if (missing.length) throw new Error(`${o.initRanges}: no range for ${missing.length} layer(s), e.g. ${missing.slice(0, 3).join(", ")}`);
    }
    const params = new ParameterSet(eng);
    for (const l of layers) {
      params.add(`${l.name}.weight`, l.weight);
      if (l.bias) params.add(`${l.name}.bias`, l.bias);
    }
    const schedCfg = await loadComponentConfig(o.model, "scheduler");
    const makeScheduler = () => (o.scheduler ? createScheduler(o.scheduler, schedCfg) : schedulerFromConfig(schedCfg));
    let stepTable: number[] | null = null;
    if (o.perStepScales) {
      const s = makeScheduler();
      s.setTimesteps(o.samplerSteps);
      stepTable = [...new Set(s.timesteps)];
      for (const l of layers) setStepRanges(l.quant!, stepTable.length);
      // per-step ranges from the calibration file: each sampler timestep takes the file's nearest timestep, as
      // INT8 inference picks them
      if (initCal && hasPerStepRanges(initCal)) {
        const ts = initCal.timesteps;
        const pick = stepTable.map((t) => nearestIndex(ts, t));
        for (const l of layers) {
          const st = initCal.layers[l.name].steps!;
          l.quant!.stepRanges = pick.map((i) => ({ min: Math.fround(st[i].min), max: Math.fround(st[i].max) }));
        }
      }
    }
    const sample = cfg.sample_size ?? 64;
    let source: BatchSource;
    if (o.dataFree) {
      source = new TrajectorySource(eng, teacher, captions, makeScheduler, {
        seed: o.seed, batch: o.batch, prompts: o.prompts, steps: o.samplerSteps, guidance: o.guidance, latentShape: [sample, sample, cfg.in_channels], stepTable,
      });
    } else {
      const dir = o.data!;
      const im = await readIdxImages(path.join(dir, "train-images-idx3-ubyte.gz"), path.join(dir, "train-labels-idx1-ubyte.gz"));
      source = new DataSource(eng, vae!, captions, { images: im.images, labels: im.labels!, count: im.count, rows: im.rows, cols: im.cols }, makeScheduler().alphasCumprod, {
        seed: o.seed, batch: o.batch, stepTable,
      });
    }
    say(
      `QAT + KD: ${o.dataFree ? `data-free (teacher trajectories, ${o.scheduler} ${o.samplerSteps} steps, guidance ${o.guidance}, ${o.prompts.length} prompts)` : `Fashion-MNIST train images (${o.data})`}, ` +
        `${o.steps} steps x batch ${o.batch}, lr ${o.lr} ${o.lrSchedule}, kd weight ${o.kdWeight}, scales ${o.scales}${o.perStepScales ? ` per step (${stepTable!.length} timesteps)` : ""}, ` +
        `${o.actQmax === 255 ? 8 : 7}-bit activations x ${o.weightQmax === 63 ? 7 : 8}-bit weights, ${o.calibrationBatches} calibration batches, engine ${fmtBytes(memoryBytes)}, ${eng.threads} threads, ${eng.simd} SIMD`,
    );

    const setStep = (k: number) => {
      for (const l of layers) l.quant!.step = k;
    };
    // held-out losses of the student (observers paused): after calibration and on the exported weights
    const valBatches = o.valBatches >= 0 ? o.valBatches : source instanceof TrajectorySource ? source.callsPerTrajectory : 16;
    const validate = (): { noise: number | null; kd: number } | null => {
      if (!valBatches) return null;
      const observing = layers.map((l) => l.quant!.observe);
      for (const l of layers) l.quant!.observe = false;
      let n = 0, k = 0, cnt = 0;
      try {
        for (let i = 0; i < valBatches; i++) {
          const b = source.get(STREAM.validation, i);
          setStep(b.stepIndex);
          const [sOut, tOut] = eng.scope(() => {
            const x = eng.fromArray(b.x, b.shape);
            const ctx = eng.fromArray(b.context, b.contextShape);
            return [student.forward(x, b.ts, ctx).toArray(), b.teacher ?? teacher.forward(x, b.ts, ctx).toArray()];
          });
          if (b.guidance > 0) k += mseLossAndGrad(cfgCombine(sOut, b.samples, b.guidance), [{ target: cfgCombine(tOut, b.samples, b.guidance), weight: 0 }]).losses[0]!;
          else {
            const l = mseLossAndGrad(sOut, [{ target: b.noise, weight: 0 }, { target: tOut, weight: 0 }]).losses;
            n += l[0]!;
            k += l[1]!;
          }
          cnt++;
        }
      } finally {
        layers.forEach((l, i) => (l.quant!.observe = observing[i]));
      }
      return { noise: o.dataFree ? null : n / cnt, kd: k / cnt };
    };
    const fmtVal = (v: { noise: number | null; kd: number }) => `${v.noise === null ? "" : `noise loss ${v.noise.toPrecision(4)}, `}KD loss ${v.kd.toPrecision(4)}`;

    const rangesState = () => Object.fromEntries(layers.map((l) => [l.name, l.quant!.stepRanges ? { range: l.quant!.range, steps: l.quant!.stepRanges } : { range: l.quant!.range }]));
    const restoreRanges = (r: CheckpointState["ranges"]) => {
      for (const l of layers) {
        const e = r[l.name];
        if (!e) throw new Error(`checkpoint: no observer state for ${l.name}`);
        l.quant!.range = e.range;
        if (l.quant!.stepRanges && e.steps) l.quant!.stepRanges = e.steps.slice();
      }
    };

    // calibration: the student's observers over forward batches
    let calibDone = 0;
    let trainDone = 0;
    let trainMsBefore = 0;
    if (ckpt) {
      restoreRanges(ckpt.state.ranges);
      if (ckpt.state.phase === "calibrate") calibDone = ckpt.state.done;
      else {
        calibDone = o.calibrationBatches;
        trainDone = ckpt.state.done;
        trainMsBefore = ckpt.state.trainMs;
      }
    }
    const t0 = performance.now();
    for (let i = calibDone; i < o.calibrationBatches; i++) {
      const b = source.get(STREAM.calibration, i);
      setStep(b.stepIndex);
      eng.scope(() => {
        student.forward(eng.fromArray(b.x, b.shape), b.ts, eng.fromArray(b.context, b.contextShape));
      });
      calibDone = i + 1;
      const el = performance.now() - t0;
      opts.onProgress?.({ phase: "calibrate", step: i + 1, steps: o.calibrationBatches, noiseLoss: null, kdLoss: null, gradNorm: null, lr: null, samplesPerSec: (b.samples * (i + 1 - (ckpt?.state.phase === "calibrate" ? ckpt.state.done : 0))) / (el / 1000), elapsedMs: el, etaMs: (el / (i + 1)) * (o.calibrationBatches - i - 1) });
      await yieldToEvents();
      if (opts.shouldStop?.() && calibDone < o.calibrationBatches) {
        writeCheckpoint(o.checkpointFile, { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, options: fingerprint(o), phase: "calibrate", done: calibDone, adamStep: 0, emaUpdates: 0, ranges: rangesState(), trainMs: 0 }, params, null, null);
        ckpt?.st.close();
        return { out: o.out, step: 0, steps: o.steps, stopped: true, checkpoint: o.checkpointFile, trainSeconds: 0, samplesPerSec: 0, peakEngineBytes: eng.stats().peak, stateEngineBytes: 0, heldOut: { before: null, after: null }, plan };
      }
    }

    // learned scales become parameters after calibration (initialised from it)
    const scaleNames = new Set<string>();
    if (o.scales === "lsq")
      for (const l of layers) {
        const L = learnScales(l);
        const a = params.add(`${l.name}.input_scale_offset`, L.act);
        const w = params.add(`${l.name}.weight_scale`, L.weight);
        scaleNames.add(a.name).add(w.name);
      }
    for (const l of layers) {
      refreshTrainable(l);
      if (!o.observeDuringTraining) l.quant!.observe = false;
    }
    const adam = new AdamW(params, { lr: o.lr, weightDecay: o.weightDecay, decays: (p: Parameter) => !scaleNames.has(p.name) });
    const ema = o.ema ? new Ema(params, o.emaMaxDecay) : null;
    if (ckpt && ckpt.state.phase === "train") {
      const st = ckpt.st;
      for (const [i, p] of params.all.entries()) {
        await st.readF32(`param.${p.name}`, p.value.f32());
        await st.readF32(`adam_m.${p.name}`, adam.m[i].f32());
        await st.readF32(`adam_v.${p.name}`, adam.v[i].f32());
        if (ema) await st.readF32(`ema.${p.name}`, ema.shadow[i].f32());
      }
      adam.step = ckpt.state.adamStep;
      if (ema) ema.updates = ckpt.state.emaUpdates;
      for (const l of layers) refreshTrainable(l);
      say(`resumed from ${o.checkpointFile} at step ${trainDone} of ${o.steps}`);
    }
    ckpt?.st.close();

    // the log: lines of the steps done so far are kept (a resumed run rewrites the ones after its checkpoint)
    fs.mkdirSync(path.dirname(logFile), { recursive: true });
    const oldLog = o.resume && fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").split("\n").filter((l) => l && JSON.parse(l).step <= trainDone) : [];
    fs.writeFileSync(logFile, oldLog.map((l) => l + "\n").join(""));
    const log = fs.openSync(logFile, "a");

    const saveState = (): CheckpointState => ({
      format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, options: fingerprint(o), phase: "train", done: trainDone,
      adamStep: adam.step, emaUpdates: ema?.updates ?? 0, ranges: rangesState(), trainMs: trainMsBefore + (performance.now() - tTrain), valBefore,
    });
    // on resume the "before" numbers come from the checkpoint (the weights have moved since)
    const valBefore = ckpt && ckpt.state.phase === "train" ? (ckpt.state.valBefore ?? null) : validate();
    if (valBefore && !(ckpt && ckpt.state.phase === "train")) say(`held-out batches (${valBatches}) after calibration: ${fmtVal(valBefore)}`);
    const stateEngineBytes = eng.stats().used;
    const tTrain = performance.now();
    let samples = 0;
    let stopped = false;
    let last: { noise: number | null; kd: number | null } = { noise: null, kd: null };
    try {
      for (let k = trainDone; k < o.steps; k++) {
        const b = source.get(STREAM.train, o.fixedBatch ? 0 : k);
        setStep(b.stepIndex);
        params.zeroGrad();
        const r = eng.scope(() => {
          const x = eng.fromArray(b.x, b.shape);
          const ctx = eng.fromArray(b.context, b.contextShape);
          const teacherOut = b.teacher ?? eng.scope(() => teacher.forward(x, b.ts, ctx).toArray());
          const tape = new Tape(eng, params, { checkpointing: o.checkpointing });
          eng.grad = tape;
          let y: Tensor;
          try {
            y = student.forward(x, b.ts, ctx);
          } catch (e) {
            tape.clear();
            throw e;
          } finally {
            eng.grad = null;
          }
          const out = y.f32();
          let seed: Float32Array;
          let losses: (number | null)[];
          if (b.guidance > 0) {
            const B = b.samples;
            const pred = cfgCombine(out, B, b.guidance);
            const l = mseLossAndGrad(pred, [{ target: cfgCombine(teacherOut, B, b.guidance), weight: o.kdWeight }]);
            losses = [null, l.losses[0]];
            seed = cfgBackward(l.grad, B, b.guidance);
          } else {
            const l = mseLossAndGrad(out, [{ target: b.noise, weight: o.noiseWeight }, { target: teacherOut, weight: o.kdWeight }]);
            losses = l.losses;
            seed = l.grad;
          }
          try {
            tape.backward([y], [eng.fromArray(seed, y.shape)]);
          } finally {
            eng.grad = null;
          }
          return losses;
        });
        const gradNorm = params.clipGradNorm(o.gradClip);
        adam.lr = learningRate(o.lrSchedule, o.lr, k, o.steps);
        adam.update();
        for (const l of layers) {
          clampLearnedScales(l.quant!);
          refreshTrainable(l);
        }
        ema?.update();
        trainDone = k + 1;
        samples += b.samples;
        last = { noise: r[0], kd: r[1] };
        const el = performance.now() - tTrain;
        const sps = samples / (el / 1000);
        const entry = { step: k + 1, noise_loss: r[0], kd_loss: r[1], loss: o.noiseWeight * (r[0] ?? 0) + o.kdWeight * (r[1] ?? 0), grad_norm: gradNorm, lr: adam.lr, samples_per_s: sps, elapsed_s: (trainMsBefore + el) / 1000 };
        fs.writeSync(log, JSON.stringify(entry) + "\n");
        opts.onProgress?.({ phase: "train", step: k + 1, steps: o.steps, noiseLoss: r[0], kdLoss: r[1], gradNorm, lr: adam.lr, samplesPerSec: sps, elapsedMs: el, etaMs: ((o.steps - k - 1) * el) / Math.max(1, k + 1 - startStep(ckpt)) });
        await yieldToEvents(); // lets a Ctrl-C handler run
        const stop = opts.shouldStop?.() && trainDone < o.steps;
        if (stop || (o.checkpointEvery > 0 && trainDone % o.checkpointEvery === 0 && trainDone < o.steps)) writeCheckpoint(o.checkpointFile, saveState(), params, adam, ema);
        if (stop) {
          stopped = true;
          break;
        }
      }
    } finally {
      fs.closeSync(log);
    }
    const trainMs = trainMsBefore + (performance.now() - tTrain);
    const samplesPerSec = samples / ((performance.now() - tTrain) / 1000);
    if (stopped) return { out: o.out, step: trainDone, steps: o.steps, stopped: true, checkpoint: o.checkpointFile, trainSeconds: trainMs / 1000, samplesPerSec, peakEngineBytes: eng.stats().peak, stateEngineBytes, heldOut: { before: valBefore, after: null }, plan };

    // export: the EMA weights (re-quantised: the student as it will run)
    if (ema) ema.copyTo();
    for (const l of layers) {
      clampLearnedScales(l.quant!);
      refreshTrainable(l);
    }
    const peakEngineBytes = eng.stats().peak;
    const valAfter = validate();
    if (valAfter) say(`held-out batches (${valBatches}) with the exported weights: ${fmtVal(valAfter)}${valBefore ? ` (after calibration: ${fmtVal(valBefore)})` : ""}`);
    const unetOut = await writeOutput(o, layers, stepTable, {
      valBatches,
      valBefore,
      valAfter,
      trainSeconds: trainMs / 1000,
      samplesPerSec,
      finalNoiseLoss: last.noise,
      finalKdLoss: last.kd,
      peakEngineBytes,
      stateEngineBytes,
      engine: { threads: eng.threads, simd: eng.simd, int8_dot: int8DotPath(eng, o.actQmax, o.weightQmax) },
    });
    // the exported INT8 UNet must compute exactly what the student computes
    for (const l of layers) l.quant!.observe = false;
    const check = await verifyExport(eng, student, unetOut, captions, stepTable, setStep, [2, sample, sample, cfg.in_channels]);
    say(`export check: the INT8 UNet in ${unetOut} computes bit for bit what the student computed (${check})`);
    if (!o.keepCheckpoint && fs.existsSync(o.checkpointFile)) fs.rmSync(o.checkpointFile);
    return { out: o.out, step: trainDone, steps: o.steps, stopped: false, checkpoint: o.keepCheckpoint ? o.checkpointFile : null, trainSeconds: trainMs / 1000, samplesPerSec, peakEngineBytes, stateEngineBytes, heldOut: { before: valBefore, after: valAfter }, plan };
  } finally {
    eng.close();
  }
}

export class QatExportError extends Error {}

/**
 * Loads the exported INT8 UNet into the engine and compares it with the student on a fixed input (at a
 * table timestep with per-step scales): every output value must be bit-identical. Returns what was compared.
 */
async function verifyExport(eng: Engine, student: UNet, unetOut: string, captions: CaptionCache, stepTable: number[] | null, setStep: (k: number) => void, shape: number[]): Promise<string> {
  const loaded = await loadUNet(eng, unetOut, { precisions: ["int8"] });
  loaded.setPrecision("int8");
  const k = stepTable ? Math.floor(stepTable.length / 2) : -1;
  const t = stepTable ? stepTable[k] : 500;
  setStep(k);
  const ctx = captions.rows(["", "a photo of a bag"]);
  const x = streamRng(12345, 99, 0).normal(shape.reduce((a, b) => a * b, 1));
  const [a, b] = eng.scope(() => {
    const xt = eng.fromArray(x, shape);
    const ct = eng.fromArray(ctx.data, ctx.shape);
    return [student.forward(xt, t, ct).toArray(), loaded.forward(xt, t, ct).toArray()];
  });
  const ua = new Uint32Array(a.buffer), ub = new Uint32Array(b.buffer);
  let diff = 0, first = -1;
  for (let i = 0; i < ua.length; i++)
    if (ua[i] !== ub[i]) {
      diff++;
      if (first < 0) first = i;
    }
  if (diff) throw new QatExportError(`export check failed: the INT8 UNet in ${unetOut} differs from the student in ${diff} of ${a.length} outputs (first at ${first}: ${b[first]} vs ${a[first]})`);
  return `${a.length} outputs at t=${t}`;
}

/** One turn of the event loop (signal handlers run; the training loop is otherwise synchronous). */
function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function startStep(ckpt: { state: CheckpointState } | null): number {
  return ckpt && ckpt.state.phase === "train" ? ckpt.state.done : 0;
}

// ---------------------------------------------------------------------------------------------------------
// output

function place(src: string, dst: string, mode: LinkMode): void {
  if (fs.statSync(src).isDirectory()) {
    if (mode === "symlink") {
      if (fs.existsSync(dst) || isSymlink(dst)) fs.rmSync(dst, { recursive: true, force: true });
      fs.symlinkSync(path.relative(path.dirname(path.resolve(dst)), path.resolve(src)), dst);
      return;
    }
    fs.mkdirSync(dst, { recursive: true });
    for (const f of fs.readdirSync(src)) place(path.join(src, f), path.join(dst, f), mode);
    return;
  }
  if (fs.existsSync(dst) || isSymlink(dst)) fs.rmSync(dst);
  if (mode === "symlink") fs.symlinkSync(path.relative(path.dirname(path.resolve(dst)), path.resolve(src)), dst);
  else if (mode === "hard")
    try {
      fs.linkSync(src, dst);
    } catch {
      fs.copyFileSync(src, dst);
    }
  else fs.copyFileSync(src, dst);
}

/** Whether a folder is what an earlier stepq qat wrote (a finished run's unet/stepq-qat.json, or an interrupted run's checkpoint). */
function isQatOutput(dir: string, checkpointFile: string): boolean {
  return fs.existsSync(path.join(dir, "unet", "stepq-qat.json")) || fs.existsSync(path.join(dir, "stepq-qat.json")) || fs.existsSync(checkpointFile);
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

const f32Bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

interface RunInfo {
  valBatches: number;
  valBefore: { noise: number | null; kd: number } | null;
  valAfter: { noise: number | null; kd: number } | null;
  trainSeconds: number;
  samplesPerSec: number;
  finalNoiseLoss: number | null;
  finalKdLoss: number | null;
  peakEngineBytes: number;
  stateEngineBytes: number;
  engine: { threads: number; simd: string; int8_dot: string };
}

/** Per-channel quantisation with the given scales, exactly as the student's kernel (quantize_weight_i8_packed). */
function quantizeWithScales(w: Float32Array, N: number, per: number, scales: Float32Array, wq: number): Int8Array {
  const q = new Int8Array(N * per);
  for (let n = 0; n < N; n++) {
    const s = scales[n];
    for (let k = 0; k < per; k++) {
      const v = Math.fround(w[n * per + k] / s);
      let r = Math.round(v);
      if (r - v === 0.5 && (r & 1) !== 0) r -= 1;
      if (r !== r) r = 0;
      q[n * per + k] = r > wq ? wq : r < -wq ? -wq : r;
    }
  }
  return q;
}

async function writeOutput(o: ResolvedOptions, layers: Layer[], stepTable: number[] | null, info: RunInfo): Promise<string> {
  const srcUnet = unetDirOf(o.model);
  const src = await findWeights(srcUnet);
  if (path.basename(src).startsWith("stepq-")) throw new Error(`${srcUnet}: no original checkpoint`);
  const out = o.out;
  const isPipeline = fs.existsSync(path.join(o.model, "model_index.json"));
  if (isPipeline) for (const f of fs.readdirSync(o.model)) if (f !== "unet") place(path.join(o.model, f), path.join(out, f), o.link);
  const unetOut = isPipeline ? path.join(out, "unet") : out;
  fs.mkdirSync(unetOut, { recursive: true });
  place(path.join(srcUnet, "config.json"), path.join(unetOut, "config.json"), "copy");
  // the original checkpoint: FP32 steps, and BF16 steps with bf16Weights "original"
  place(src, path.join(unetOut, path.basename(src)), o.link);
  for (const stale of ["stepq-calibration.json", stepqWeightsName("bf16")]) if (fs.existsSync(path.join(unetOut, stale))) fs.rmSync(path.join(unetOut, stale));

  const byName = new Map(layers.map((l) => [l.name, l]));
  const qatMeta = {
    base_model: path.resolve(o.model),
    mode: o.dataFree ? "data-free" : "data",
    data: o.dataFree ? null : path.resolve(o.data!),
    steps: o.steps, batch: o.batch, lr: o.lr, lr_schedule: o.lrSchedule, kd_weight: o.kdWeight, noise_weight: o.noiseWeight, weight_decay: o.weightDecay, grad_clip: o.gradClip,
    scales: o.scales, per_step_scales: o.perStepScales, calibration_batches: o.calibrationBatches, ema: o.ema, seed: o.seed,
    observer: o.scales === "observer" ? (o.observer === "ema" ? { type: "ema-minmax", averaging_constant: 0.01, per: "training batch", during_training: o.observeDuringTraining } : { type: "minmax", per: "training batch", during_training: o.observeDuringTraining }) : null,
    init_ranges: o.initRanges ? path.resolve(o.initRanges) : null,
    act_qmax: o.actQmax, weight_qmax: o.weightQmax,
    timesteps: stepTable,
  };
  const st = await SafetensorsFile.open(src);
  try {
    const int8: TensorToWrite[] = [];
    const bf16: TensorToWrite[] = [];
    for (const t of st.tensors.values()) {
      const layerName = t.name.endsWith(".weight") ? t.name.slice(0, -7) : t.name.endsWith(".bias") ? t.name.slice(0, -5) : null;
      const l = layerName ? byName.get(layerName) : undefined;
      if (l && t.name.endsWith(".weight")) {
        const w = l.weight.toArray();
        const N = l.weight.shape[0];
        const per = w.length / N;
        const q = l.quant!;
        const scales = currentWeightScales(l);
        const qw = q.learned ? quantizeWithScales(w, N, per, scales, q.weightQmax) : quantizeWeightsPerChannel(w, N, per, q.weightQmax).q;
        // the global params: the observer's global range, or the learned (single) row; with learned per-step
        // scales the calibrated global range (a version-2 reader always has the per-step table)
        const act: ActQuantParams = q.learned && q.learned.act.shape[0] > 1 ? currentActParams({ ...q, learned: null, stepRanges: null, step: -1 }) : currentActParams({ ...q, step: -1 });
        int8.push({ name: t.name, dtype: "I8", shape: t.shape, data: new Uint8Array(qw.buffer) });
        int8.push({ name: `${layerName}.weight_scale`, dtype: "F32", shape: [N], data: f32Bytes(scales) });
        int8.push({ name: `${layerName}.input_scale`, dtype: "F32", shape: [1], data: f32Bytes(Float32Array.of(act.scale)) });
        int8.push({ name: `${layerName}.input_zero_point`, dtype: "I32", shape: [1], data: new Uint8Array(Int32Array.of(act.zeroPoint).buffer) });
        if (stepTable) {
          const steps = stepTable.map((_, r) => currentActParams({ ...q, step: r }));
          int8.push({ name: `${layerName}.input_scale_steps`, dtype: "F32", shape: [steps.length], data: f32Bytes(Float32Array.from(steps, (a) => a.scale)) });
          int8.push({ name: `${layerName}.input_zero_point_steps`, dtype: "I32", shape: [steps.length], data: new Uint8Array(Int32Array.from(steps, (a) => a.zeroPoint).buffer) });
        }
        bf16.push({ name: t.name, dtype: "BF16", shape: t.shape, data: new Uint8Array(f32ArrayToBf16Bits(w).buffer) });
      } else if (l && t.name.endsWith(".bias") && l.bias) {
        const b = l.bias.toArray();
        int8.push({ name: t.name, dtype: "F32", shape: t.shape, data: f32Bytes(b) });
        bf16.push({ name: t.name, dtype: "F32", shape: t.shape, data: f32Bytes(b) });
      } else {
        const raw = await st.readRaw(t.name);
        int8.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: raw });
        bf16.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: raw });
      }
    }
    const common = { format: STEPQ_FORMAT, stepq_format_version: STEPQ_FORMAT_VERSION, source: path.basename(src), layers: String(layers.length), created: new Date().toISOString(), qat: JSON.stringify(qatMeta) };
    // version 2 only where version 1 cannot say it: learned weight scales, per-step activation params
    const v2 = o.scales === "lsq" || !!stepTable;
    writeSafetensors(path.join(unetOut, stepqWeightsName("int8")), int8, {
      ...common,
      ...(v2 ? { stepq_format_version: "2" } : {}),
      ...(stepTable ? { timesteps: JSON.stringify(stepTable) } : {}),
      precision: "int8",
      act_qmax: String(o.actQmax),
      weight_qmax: String(o.weightQmax),
      weight_quantization:
        `symmetric per output channel: q = clamp(round_half_even(w / s), -${o.weightQmax}, ${o.weightQmax}), ` +
        (o.scales === "lsq" ? "s = the learned weight_scale (LSQ)" : `s = f32(max|w| / ${o.weightQmax}) (weight_scale) of the QAT weights`),
      activation_quantization:
        `asymmetric per tensor: q = clamp(round(x / input_scale) + input_zero_point, 0, ${o.actQmax}); ranges from QAT's ${o.scales === "lsq" ? "learned scales" : "moving-average observers"}` +
        (stepTable ? "; per sampler timestep (metadata timesteps): input_scale_steps / input_zero_point_steps, the nearest timestep's used" : ""),
      calibration: JSON.stringify({ qat: true, observer: qatMeta.observer, scales: o.scales, per_step: !!stepTable }),
    });
    if (o.bf16Weights === "qat") writeSafetensors(path.join(unetOut, stepqWeightsName("bf16")), bf16, { ...common, precision: "bf16", weight_format: "BF16 (round to nearest even) of the QAT weights; biases F32" });
  } finally {
    st.close();
  }
  const record = {
    format: "stepq-qat",
    version: 1,
    ...qatMeta,
    bf16_weights: o.bf16Weights,
    train_seconds: info.trainSeconds,
    samples_per_s: info.samplesPerSec,
    final_noise_loss: info.finalNoiseLoss,
    final_kd_loss: info.finalKdLoss,
    held_out: info.valBatches ? { batches: info.valBatches, after_calibration: info.valBefore, exported: info.valAfter } : null,
    peak_engine_bytes: info.peakEngineBytes,
    state_engine_bytes: info.stateEngineBytes,
    engine: info.engine,
    created: new Date().toISOString(),
  };
  writeFileAtomic(path.join(unetOut, "stepq-qat.json"), JSON.stringify(record, null, 2) + "\n");
  return unetOut;
}
