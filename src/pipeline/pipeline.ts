// StableDiffusionPipeline: text-to-image over a diffusers folder (model_index.json, tokenizer/,
// text_encoder/, unet/, vae/, scheduler/), following diffusers' StableDiffusionPipeline.__call__:
//
//   ids      = tokenizer(prompt), tokenizer(negative_prompt or "")       (77 ids each, truncated)
//   context  = text_encoder([negative, prompt]).last_hidden_state         ([2,77,C]; batch 1 without CFG)
//   latents  = noise * scheduler.init_noise_sigma                         (noise: seeded Rng or given)
//   for t in scheduler.timesteps:
//     x      = scheduler.scale_model_input(cat([latents] * 2), t)
//     e_u,e_c= unet(x, t, context)                                        (ONE call on the doubled batch)
//     eps    = e_u + g * (e_c - e_u)                                       (g > 1; else eps = unet(x) batch 1)
//     latents= scheduler.step(eps, t, latents)
//   image    = vae.decode(latents / scaling_factor); (image/2+0.5).clamp(0,1); (x*255).round() → uint8
//
// generateBatch() runs B images through the same loop at once: the UNet batch is [uncond_0..uncond_{B-1},
// cond_0..cond_{B-1}] (2B rows), each image has its own scheduler, and one VAE call decodes all B. Kernels
// compute each batch row independently with the same arithmetic, so every image is bit-identical to
// generating it alone (generate() is the batch-of-1 case of the same code).
//
// Per-step precision: a pipeline loaded with `precisions` keeps those UNet variants resident; generate()
// takes `precision` / `schedule` (src/pipeline/schedule.ts: fp32, bf16, int8, mixed:K, bf16*5,int8*40,..., or
// an already parsed PrecisionSchedule) and sets the UNet's precision before each call. The text encoder and
// VAE always run in fp32.
//
// A model folder is a location (src/io/source.ts): a path, or a URL it is served from.
//
// Latents cross the model boundary as NCHW Float32Arrays (what schedulers and golden files use); the
// UNet and VAE take NHWC tensors (see src/models/layout.ts).
import { Engine, type SimdVariant } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { OutOfMemoryError } from "../runtime/memory.ts";
import { Rng } from "../runtime/random.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { checkPipelineComponents, DiffusersError, findWeights, loadComponentConfig, loadPipelineIndex, type PipelineIndex } from "../io/diffusers.ts";
import { fileExists, joinLocation } from "../io/source.ts";
import { ClipTokenizer } from "../models/tokenizer.ts";
import { ClipTextModel } from "../models/clip.ts";
import { UNet } from "../models/unet.ts";
import { Vae } from "../models/vae.ts";
import { loadClipTextModel, loadUNet, loadVae } from "../models/loader.ts";
import { loadClipTextConfig, loadUNetConfig, loadVaeConfig } from "../models/config.ts";
import { PRECISION_BYTES, type Precision } from "../models/precision.ts";
import { stepqWeightsName } from "../models/converted.ts";
import { unetActivationBytes } from "../models/memory.ts";
import { nchwToNhwc, nhwcToNchw } from "../models/layout.ts";
import { callSteps, PrecisionSchedule, PrecisionScheduleError, precisionsUsed } from "./schedule.ts";
import { createScheduler, schedulerFromConfig, SchedulerConfigError, type Scheduler, type SchedulerConfig } from "./schedulers.ts";
import { toRgb8 } from "./image.ts";

export class PipelineError extends Error {}

export interface PipelineLoadOptions {
  /** Threads including the calling one (default: the machine's core count). */
  threads?: number;
  /** Engine memory in bytes (default: estimated from the weight files and the activations of `width`x`height`). */
  memoryBytes?: number;
  /** Kernel build: "auto" (default), "relaxed" or "baseline". */
  simd?: "auto" | SimdVariant;
  /** Largest image the memory estimate should cover (default: the model's native size). */
  width?: number;
  height?: number;
  /** Largest number of images one generateBatch() call should fit (default 1); the memory estimate grows with it. */
  batch?: number;
  /** Warnings (e.g. truncated prompts) go here; default: console.warn. */
  onWarning?: (message: string) => void;
  /**
   * UNet variants to keep resident for per-step precision (e.g. ["bf16", "int8"] for mixed:K; see
   * precisionsForSpec). Default: plain fp32 weights (then generate() runs fp32 only).
   */
  precisions?: Precision[];
  /** INT8 activation ranges (a stepq calibrate file); default: <model>/unet/stepq-calibration.json. */
  calibration?: string;
  /** The int8 steps run attention on the INT8 kernels too (default false: f32 attention, as the paper). */
  int8Attention?: boolean;
}

export interface StepInfo {
  /** 1-based step number. */
  step: number;
  /** Number of UNet evaluations in this run (scheduler.timesteps.length; PNDM runs one more than `steps`). */
  total: number;
  /** The timestep passed to the UNet (Euler's may be fractional). */
  timestep: number;
  /** Milliseconds this step took. */
  stepMs: number;
  /** Milliseconds since the denoising loop began. */
  elapsedMs: number;
  /** The precision this UNet call ran at. */
  precision: Precision;
  /** The denoising step (1-based, of `steps`) this UNet call belongs to (PNDM: two calls share step 2). */
  denoisingStep: number;
  /** The latents after this step, NCHW [1,C,h,w] (a copy: keep it if you need it). */
  latents: Float32Array;
}

export interface GenerateOptions {
  prompt: string;
  /** What the unconditional branch of classifier-free guidance encodes (default ""). */
  negativePrompt?: string;
  /** Inference steps (default 50). */
  steps?: number;
  /** Classifier-free guidance scale (default 7.5); ≤ 1 runs without guidance (batch 1, negative prompt unused). */
  guidance?: number;
  /** Seed of the initial noise (src/pipeline/random.ts; default: a random seed, reported in the result). */
  seed?: number;
  /** pndm, ddim, euler, dpm++ (alias dpmsolver++), over the model's scheduler config; default: the model's own. */
  scheduler?: string;
  /** Image size in pixels, multiples of 8 (default: unet sample_size * 8). */
  width?: number;
  height?: number;
  /** Initial noise NCHW [1,4,height/8,width/8], unscaled (multiplied by init_noise_sigma, as diffusers does); replaces the seed. */
  latents?: Float32Array;
  /**
   * Precision of the UNet: fp32 | bf16 | int8 | mixed:K | a schedule "bf16*5,int8*40,bf16*5" (counts in
   * denoising steps; see src/pipeline/schedule.ts), or a PrecisionSchedule parsed for `steps` steps. Default:
   * fp32 when loaded, else the one precision loaded.
   */
  precision?: string | PrecisionSchedule;
  /** Same as precision (an explicit schedule); give one or the other. */
  schedule?: string;
  /** Called after every denoising step. */
  onStep?: (info: StepInfo) => void;
  /**
   * Called inside every UNet call with its NHWC input, context and output (engine tensors, valid only during
   * the call): for tools that evaluate other precisions on the same input (stepq sensitivity).
   */
  onUNetCall?: (call: UNetCallInfo) => void;
  /** Warnings for this call (default: the pipeline's onWarning). */
  onWarning?: (message: string) => void;
}

export interface UNetCallInfo {
  /** 0-based UNet call index. */
  call: number;
  /** 0-based denoising step of the call. */
  step: number;
  timestep: number;
  precision: Precision;
  input: Tensor;
  context: Tensor;
  output: Tensor;
  /** Guidance scale (> 1: the batch is [uncond rows, cond rows], `images` rows each). */
  guidance: number;
  /** Images in the call (1 for generate(), B for generateBatch()). */
  images: number;
}

export interface GenerateBatchOptions extends Omit<GenerateOptions, "prompt" | "negativePrompt" | "seed" | "latents" | "onStep"> {
  /** One prompt per image (B = prompts.length). */
  prompts: string[];
  /** One negative prompt for every image, or one per image (default ""). */
  negativePrompt?: string | string[];
  /** One seed per image (default: a random seed each, reported in the results). */
  seeds?: number[];
  /** Initial noise per image, each NCHW [1,4,height/8,width/8], unscaled; replaces seeds. */
  latents?: Float32Array[];
  /** Called after every denoising step, with every image's latents. */
  onStep?: (info: BatchStepInfo) => void;
}

export interface BatchStepInfo extends Omit<StepInfo, "latents"> {
  /** Each image's latents after this step, NCHW [1,C,h,w] (copies). */
  latents: Float32Array[];
}

export interface GenerateBatchResult {
  /** One result per prompt, in order (their `timings` are the whole batch's). */
  images: GenerateResult[];
  /** Images in the batch. */
  batch: number;
  /** Timings of the whole batch. */
  timings: GenerateTimings;
  precisions: Precision[];
  schedule: string;
}

export interface GenerateTimings {
  textMs: number;
  denoiseMs: number;
  /** Per-step milliseconds. */
  stepMs: number[];
  decodeMs: number;
  totalMs: number;
}

export interface GenerateResult {
  /** 8-bit RGB, interleaved HWC: height*width*3 bytes. */
  image: Uint8Array;
  width: number;
  height: number;
  /** The VAE output in [-1,1] (not clamped), NCHW [1,3,height,width] — what diffusers' output_type="pt" gives before postprocessing. */
  decoded: Float32Array;
  /** Final latents NCHW [1,C,height/8,width/8] (before division by the scaling factor). */
  latents: Float32Array;
  latentShape: number[];
  /** The seed used (undefined when latents were given). */
  seed?: number;
  scheduler: string;
  /** The token ids of the prompt and of the negative prompt (unused without guidance), 77 each. */
  promptIds: number[];
  negativeIds: number[];
  /** True when the prompt (or negative prompt) was longer than 77 tokens and was cut. */
  truncated: boolean;
  timings: GenerateTimings;
  /** The precision of every UNet call. */
  precisions: Precision[];
  /** The per-step schedule in compact form ("fp32", "bf16*5,int8*40,bf16*5"). */
  schedule: string;
}

export interface PromptEncoding {
  /** Rows in UNet batch order: [negative, prompt] with guidance, [prompt] without. */
  ids: Int32Array;
  batch: number;
  /** [batch, 77, C] text embeddings (last_hidden_state), in the caller's scope. */
  context: Tensor;
  promptIds: number[];
  negativeIds: number[];
  truncated: boolean;
}

export interface BatchPromptEncoding {
  /** Rows in UNet batch order: [negatives..., prompts...] with guidance, [prompts...] without. */
  ids: Int32Array;
  /** Rows: 2B with guidance, else B. */
  batch: number;
  /** [batch, 77, C] text embeddings (last_hidden_state), in the caller's scope. */
  context: Tensor;
  /** Per image. */
  promptIds: number[][];
  negativeIds: number[][];
  truncated: boolean[];
}

const MiB = 1024 * 1024;

export class StableDiffusionPipeline {
  private warn: (message: string) => void;
  /** The image size the engine memory was estimated for ("WxH", or "memoryBytes" when given). */
  sizedFor = "";

  private constructor(
    readonly dir: string,
    readonly index: PipelineIndex,
    readonly engine: Engine,
    readonly tokenizer: ClipTokenizer,
    readonly textEncoder: ClipTextModel,
    readonly unet: UNet,
    readonly vae: Vae,
    /** The model's scheduler/scheduler_config.json, parsed. */
    readonly schedulerConfig: SchedulerConfig,
    /** How long loading took, in milliseconds. */
    readonly loadMs: number,
    onWarning?: (message: string) => void,
  ) {
    this.warn = onWarning ?? ((m) => console.warn(`stepq: warning: ${m}`));
  }

  /**
   * Loads a diffusers Stable Diffusion folder. Creates the engine (threads, memory: the weights as f32 plus
   * the activations of the largest image, unless memoryBytes is given) and loads every component into it.
   * Errors name the file or field at fault.
   */
  static async load(dir: string, opts: PipelineLoadOptions = {}): Promise<StableDiffusionPipeline> {
    const t0 = performance.now();
    const index = await loadPipelineIndex(dir);
    const issues = checkPipelineComponents(index);
    if (issues.length) throw new DiffusersError(`${dir}: ${issues.join("; ")}`);
    const schedulerConfig = await loadComponentConfig(dir, "scheduler");
    namingSchedulerFile(dir, () => schedulerFromConfig(schedulerConfig)); // validate now rather than at the first generate()
    const tokenizer = await ClipTokenizer.fromDir(joinLocation(dir, "tokenizer"));
    // an explicit calibration that nothing will use is said, not silently dropped
    const warn = opts.onWarning ?? ((m: string) => console.warn(`stepq: warning: ${m}`));
    if (opts.calibration !== undefined) {
      const int8File = joinLocation(dir, "unet", stepqWeightsName("int8"));
      if (!opts.precisions?.includes("int8")) warn(`calibration ${opts.calibration} is not used: no int8 precision is loaded (${(opts.precisions ?? ["fp32"]).join(", ")})`);
      else if (await fileExists(int8File)) warn(`calibration ${opts.calibration} is not used: int8 layers load from the converted ${int8File} with the activation ranges stored in it`);
    }

    const memoryBytes =
      opts.memoryBytes ?? (await estimatePipelineMemory(dir, { width: opts.width, height: opts.height, precisions: opts.precisions, batch: opts.batch }));
    const engine = await Engine.create({ threads: opts.threads, memoryBytes, simd: opts.simd });
    try {
      const textEncoder = await loadClipTextModel(engine, joinLocation(dir, "text_encoder"));
      const unet = await loadUNet(engine, joinLocation(dir, "unet"), opts.precisions ? { precisions: opts.precisions, calibration: opts.calibration } : {});
      if (opts.int8Attention) {
        if (opts.precisions?.includes("int8")) unet.setInt8Attention(true);
        else warn(`INT8 attention is not used: no int8 precision is loaded (${(opts.precisions ?? ["fp32"]).join(", ")})`);
      }
      const vae = await loadVae(engine, joinLocation(dir, "vae"), { encoder: false });
      const pipe = new StableDiffusionPipeline(dir, index, engine, tokenizer, textEncoder, unet, vae, schedulerConfig, performance.now() - t0, opts.onWarning);
      const batch = opts.batch ?? 1;
      pipe.sizedFor =
        opts.memoryBytes !== undefined
          ? "the memoryBytes given"
          : `${batch > 1 ? `batches of ${batch} ` : ""}${opts.width ?? pipe.defaultWidth}x${opts.height ?? pipe.defaultHeight} images`;
      return pipe;
    } catch (e) {
      engine.close();
      throw withMemoryHint(e, opts.memoryBytes === undefined ? `loading needed more than the ${Math.round(memoryBytes / MiB)} MiB estimated for this model` : null);
    }
  }

  /** Native image size: unet sample_size * vae scale factor (an error when the config has no sample_size). */
  get defaultWidth(): number {
    const s = this.unet.config.sample_size;
    if (s === null) throw new PipelineError(`${joinLocation(this.dir, "unet", "config.json")}: sample_size is null, so the model has no native image size; give width and height`);
    return s * this.vaeScale;
  }

  get defaultHeight(): number {
    return this.defaultWidth;
  }

  /** Pixels per latent cell: 2^(VAE levels - 1), diffusers' vae_scale_factor (8 for SD, 4 for fashion-sd-tiny). */
  get vaeScale(): number {
    return 2 ** (this.vae.config.block_out_channels.length - 1);
  }

  /** The UNet variants loaded (["fp32"] for a plain pipeline). */
  get precisions(): readonly Precision[] {
    return this.unet.precisions;
  }

  /** Whether generate() can run this precision spec (valid, and every precision it uses loaded). */
  supportsPrecision(spec: string, steps = 50): boolean {
    try {
      return PrecisionSchedule.parse(spec, steps).used.every((p) => this.unet.precisions.includes(p));
    } catch {
      return false;
    }
  }

  /** The precision schedule of a generate() call's options (see GenerateOptions.precision). */
  stepPrecisions(opts: { precision?: string | PrecisionSchedule; schedule?: string }, steps: number): PrecisionSchedule {
    if (opts.precision !== undefined && opts.schedule !== undefined) throw new PipelineError("give precision or schedule, not both");
    let spec = opts.precision ?? opts.schedule;
    if (spec === undefined) {
      const loaded = this.unet.precisions;
      if (loaded.includes("fp32")) spec = "fp32";
      else if (loaded.length === 1) spec = loaded[0];
      else throw new PipelineError(`this pipeline holds ${loaded.join(" and ")} weights: say which to run (precision: ${loaded.join(", ")}, mixed:K or a schedule)`);
    }
    let schedule: PrecisionSchedule;
    if (spec instanceof PrecisionSchedule) {
      if (spec.steps !== steps) throw new PipelineError(`the precision schedule ${spec} covers ${spec.steps} steps but the run has ${steps}`);
      schedule = spec;
    } else
      try {
        schedule = PrecisionSchedule.parse(spec, steps);
      } catch (e) {
        if (e instanceof PrecisionScheduleError) throw new PipelineError(e.message);
        throw e;
      }
    const missing = schedule.used.filter((p) => !this.unet.precisions.includes(p));
    if (missing.length)
      throw new PipelineError(
        `precision "${spec}" uses ${missing.join(", ")} but this pipeline loaded ${this.unet.precisions.join(", ")} weights; load it with precisions [${precisionsUsed([...this.unet.precisions, ...missing]).join(", ")}]`,
      );
    return schedule;
  }

  /** A scheduler over the model's config: `name` (pndm, ddim, euler, dpm++) or the model's own class. */
  createScheduler(name?: string): Scheduler {
    return name ? createScheduler(name, this.schedulerConfig) : schedulerFromConfig(this.schedulerConfig);
  }

  /** Tokenizes and encodes prompt (and the negative prompt when guidance > 1) into the UNet's context. */
  encodePrompt(prompt: string, negativePrompt: string, guidance: boolean, onWarning = this.warn): PromptEncoding {
    const e = this.encodePrompts([prompt], [negativePrompt], guidance, onWarning);
    return { ids: e.ids, batch: e.batch, context: e.context, promptIds: e.promptIds[0], negativeIds: e.negativeIds[0], truncated: e.truncated[0] };
  }

  /**
   * Tokenizes and encodes B prompts (and their negative prompts when guidance > 1) into one context:
   * rows [negative_0..negative_{B-1}, prompt_0..prompt_{B-1}] with guidance, [prompt_0..prompt_{B-1}] without
   * (the row order of generateBatch's UNet batch). Every row is encoded independently of the others.
   */
  encodePrompts(prompts: readonly string[], negativePrompts: readonly string[], guidance: boolean, onWarning = this.warn): BatchPromptEncoding {
    if (negativePrompts.length !== prompts.length) throw new PipelineError(`${prompts.length} prompts but ${negativePrompts.length} negative prompts`);
    const room = this.tokenizer.maxLength - 2;
    // like diffusers: name the part of the prompt that was cut off
    const cut = (text: string) => this.tokenizer.decode(this.tokenizer.tokenIds(text).slice(room));
    const which = (i: number) => (prompts.length > 1 ? ` of image ${i}` : "");
    const ps = prompts.map((text, i) => {
      const p = this.tokenizer.encode(text);
      if (p.truncated) onWarning(`the prompt${which(i)} has ${p.promptTokens} tokens and CLIP takes ${room}; this part was truncated: "${cut(text)}"`);
      return p;
    });
    const ns = negativePrompts.map((text, i) => {
      const n = this.tokenizer.encode(text);
      if (guidance && n.truncated) onWarning(`the negative prompt${which(i)} has ${n.promptTokens} tokens and CLIP takes ${room}; this part was truncated: "${cut(text)}"`);
      return n;
    });
    const rows = guidance ? [...ns.map((n) => n.ids), ...ps.map((p) => p.ids)] : ps.map((p) => p.ids);
    const ids = Int32Array.from(rows.flat());
    const context = this.textEncoder.encode(ids, rows.length).last;
    return {
      ids,
      batch: rows.length,
      context,
      promptIds: ps.map((p) => p.ids),
      negativeIds: ns.map((n) => n.ids),
      truncated: ps.map((p, i) => p.truncated || (guidance && ns[i].truncated)),
    };
  }

  /** Runs text-to-image for one image; see GenerateOptions for the defaults. */
  async generate(opts: GenerateOptions): Promise<GenerateResult> {
    if (typeof opts.prompt !== "string") throw new PipelineError("prompt must be a string");
    const { prompt, negativePrompt, seed, latents, onStep, ...rest } = opts;
    const r = await this.runBatch(
      {
        ...rest,
        prompts: [prompt],
        negativePrompt: negativePrompt ?? "",
        seeds: seed === undefined ? undefined : [seed],
        latents: latents === undefined ? undefined : [latents],
        onStep: onStep && ((s) => onStep({ ...s, latents: s.latents[0] })),
      },
      false,
    );
    return r.images[0];
  }

  /**
   * Runs text-to-image for B images at once: each UNet call takes the batch [uncond_0..uncond_{B-1},
   * cond_0..cond_{B-1}] (2B rows; B without guidance) and one VAE call decodes all B. Every kernel computes
   * each batch row on its own with the same arithmetic (and INT8 activation parameters depend only on the layer
   * and, with per-step calibration ranges, the timestep, which all images share),
   * so images[i] is bit-identical to generate() with prompts[i] and seeds[i] (test/pipeline.test.ts).
   * Load the pipeline with {batch: B} so the engine memory covers it (the estimate grows with B).
   */
  async generateBatch(opts: GenerateBatchOptions): Promise<GenerateBatchResult> {
    return this.runBatch(opts, true);
  }

  private async runBatch(opts: GenerateBatchOptions, batchApi: boolean): Promise<GenerateBatchResult> {
    const tStart = performance.now();
    const eng = this.engine;
    const warn = opts.onWarning ?? this.warn;
    const prompts = opts.prompts;
    if (!Array.isArray(prompts) || prompts.length === 0) throw new PipelineError("prompts must be a non-empty array of strings");
    const B = prompts.length;
    prompts.forEach((p, i) => {
      if (typeof p !== "string") throw new PipelineError(batchApi ? `prompts[${i}] must be a string` : "prompt must be a string");
    });
    const negOpt = opts.negativePrompt ?? "";
    const negatives = typeof negOpt === "string" ? new Array<string>(B).fill(negOpt) : negOpt;
    if (!Array.isArray(negatives) || negatives.length !== B || negatives.some((n) => typeof n !== "string"))
      throw new PipelineError(`negativePrompt must be a string or an array of ${B} strings (one per prompt)`);
    const steps = opts.steps ?? 50;
    if (!Number.isInteger(steps) || steps < 1 || steps > 1000) throw new PipelineError(`steps must be an integer from 1 to 1000, got ${steps}`);
    const g = opts.guidance ?? 7.5;
    if (!Number.isFinite(g) || g < 0) throw new PipelineError(`guidance must be a number >= 0, got ${g}`);
    const cfg = g > 1;
    if (opts.seeds !== undefined && opts.latents !== undefined) throw new PipelineError("give seeds or latents, not both");
    if (opts.seeds !== undefined && (!Array.isArray(opts.seeds) || opts.seeds.length !== B))
      throw new PipelineError(`seeds must be an array of ${B} seeds (one per prompt)`);
    if (opts.latents !== undefined && (!Array.isArray(opts.latents) || opts.latents.length !== B))
      throw new PipelineError(`latents must be an array of ${B} Float32Arrays (one per prompt)`);
    const latName = (i: number) => (batchApi ? `latents[${i}]` : "latents");

    // sizes
    const lc = this.unet.config.in_channels;
    const scale = this.vaeScale;
    let width = opts.width;
    let height = opts.height;
    const lat0 = opts.latents?.[0];
    if (lat0 && (width === undefined || height === undefined)) {
      // size from the latents when they are square or the other side is given
      const cells = lat0.length / lc;
      if (width === undefined && height === undefined) {
        const side = Math.round(Math.sqrt(cells));
        if (side * side === cells) width = height = side * scale;
      } else if (width === undefined) width = (cells / (height! / scale)) * scale;
      else height = (cells / (width / scale)) * scale;
    }
    width ??= this.defaultWidth;
    height ??= this.defaultHeight;
    for (const [name, v] of [["width", width], ["height", height]] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new PipelineError(`${name} must be a positive integer, got ${v}`);
      // diffusers' check_inputs: multiples of 8
      if (v % 8) throw new PipelineError(`${name} must be a multiple of 8, got ${v}`);
    }
    // and the latents (image / vae scale) must go through the UNet's downsamplers evenly
    const unit = lcm(lcm(8, scale), scale * this.unet.sizeMultiple);
    if (width % unit || height % unit)
      throw new PipelineError(`width and height must be multiples of ${unit} for this model (VAE scale ${scale}, UNet downsamples ${this.unet.sizeMultiple}x), got ${width}x${height}`);
    const h = height / scale;
    const w = width / scale;
    const latentShape = [1, lc, h, w];
    const nLat = lc * h * w;

    const schedule = this.stepPrecisions(opts, steps);
    // one scheduler per image (schedulers keep per-run state: PNDM's history, Euler's step index)
    const schedulers = prompts.map(() =>
      namingSchedulerFile(this.dir, () => {
        const s = this.createScheduler(opts.scheduler);
        s.setTimesteps(steps);
        return s;
      }),
    );
    const scheduler = schedulers[0];
    const callPrecisions = schedule.forCalls(scheduler.timesteps);
    const callStep = scheduler.timesteps.length === steps ? null : callSteps(scheduler.timesteps, steps);

    const seeds: (number | undefined)[] = [];
    const noises: Float32Array[] = [];
    for (let b = 0; b < B; b++) {
      if (opts.latents) {
        const l = opts.latents[b];
        if (!(l instanceof Float32Array)) throw new PipelineError(`${latName(b)} must be a Float32Array`);
        if (l.length !== nLat) throw new PipelineError(`${latName(b)} have ${l.length} values; ${width}x${height} needs [${latentShape}] (${nLat})`);
        noises.push(l);
        seeds.push(undefined);
      } else {
        const seed = opts.seeds ? opts.seeds[b] : Math.floor(Math.random() * 0x100000000);
        if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
          throw new PipelineError(`${batchApi ? `seeds[${b}]` : "seed"} must be an integer from 0 to 4294967295, got ${seed}`);
        noises.push(new Rng(seed).normal(nLat));
        seeds.push(seed);
      }
    }
    const sigma0 = Math.fround(scheduler.initNoiseSigma);
    let latents: Float32Array[] = noises.map((noise) => (sigma0 === 1 ? Float32Array.from(noise) : noise.map((x) => x * sigma0)));

    const precisionBefore = this.unet.precision;
    try {
      // text
      const tText = performance.now();
      const enc = this.encodePrompts(prompts, negatives, cfg, warn);
      const context = enc.context;
      const textMs = performance.now() - tText;

      // denoise
      const tLoop = performance.now();
      const stepMs: number[] = [];
      const R = enc.batch; // UNet batch rows: 2B with guidance ([uncond rows, cond rows]), else B
      const timesteps = scheduler.timesteps;
      try {
        for (let i = 0; i < timesteps.length; i++) {
          const ts = performance.now();
          const t = timesteps[i];
          const prec = callPrecisions[i];
          this.unet.setPrecision(prec);
          const scaled = latents.map((l, b) => schedulers[b].scaleModelInput(l, t));
          const eps = eng.scope(() => {
            const x = eng.empty([R, h, w, lc]);
            const xv = x.f32();
            for (let b = 0; b < B; b++) nchwToNhwc(scaled[b], latentShape, xv.subarray(b * nLat, (b + 1) * nLat));
            if (cfg) xv.copyWithin(B * nLat, 0, B * nLat);
            const out = this.unet.forward(x, t, context);
            opts.onUNetCall?.({ call: i, step: callStep ? callStep[i] : i, timestep: t, precision: prec, input: x, context, output: out, guidance: g, images: B });
            const o = nhwcToNchw(out.f32(), [R, h, w, lc]);
            if (!cfg) return latents.map((_, b) => o.slice(b * nLat, (b + 1) * nLat));
            // diffusers: noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond), in float32
            const gg = Math.fround(g);
            return latents.map((_, b) => {
              const e = new Float32Array(nLat);
              const u0 = b * nLat;
              const c0 = (B + b) * nLat;
              for (let j = 0; j < nLat; j++) {
                const u = o[u0 + j];
                e[j] = u + Math.fround(gg * Math.fround(o[c0 + j] - u));
              }
              return e;
            });
          });
          latents = latents.map((l, b) => schedulers[b].step(eps[b], t, l));
          const now = performance.now();
          stepMs.push(now - ts);
          opts.onStep?.({
            step: i + 1,
            total: timesteps.length,
            timestep: t,
            stepMs: now - ts,
            elapsedMs: now - tLoop,
            latents: latents.map((l) => l.slice()),
            precision: prec,
            denoisingStep: (callStep ? callStep[i] : i) + 1,
          });
          latents.forEach((l, b) => {
            if (!Number.isFinite(l[0])) throw new PipelineError(`latents${batchApi ? ` of image ${b}` : ""} became ${l[0]} at step ${i + 1} (t=${t})`);
          });
        }
      } finally {
        context.free();
      }
      const denoiseMs = performance.now() - tLoop;

      // decode: one VAE call over the B latents
      const tDec = performance.now();
      const sf = Math.fround(this.vae.scalingFactor);
      const decodedHwc = eng.scope(() => {
        const z = eng.empty([B, h, w, lc]);
        const zv = z.f32();
        for (let b = 0; b < B; b++) nchwToNhwc(latents[b], latentShape, zv.subarray(b * nLat, (b + 1) * nLat));
        for (let j = 0; j < zv.length; j++) zv[j] = zv[j] / sf;
        const img = this.vae.decode(z);
        if (img.shape[0] !== B || img.shape[1] !== height || img.shape[2] !== width)
          throw new PipelineError(`VAE decoded [${img.shape}] from latents [${[B, ...latentShape.slice(1)]}], expected ${B}x${height}x${width}`);
        return { data: img.toArray(), channels: img.shape[3] };
      });
      const nPix = height * width * decodedHwc.channels;
      const decodeMs = performance.now() - tDec;
      const timings: GenerateTimings = { textMs, denoiseMs, stepMs, decodeMs, totalMs: performance.now() - tStart };
      const scheduleText = schedule.toString();
      const images: GenerateResult[] = latents.map((l, b) => {
        const data = decodedHwc.data.subarray(b * nPix, (b + 1) * nPix);
        return {
          image: toRgb8(data, width!, height!, decodedHwc.channels),
          width: width!,
          height: height!,
          decoded: nhwcToNchw(data, [1, height!, width!, decodedHwc.channels]),
          latents: l,
          latentShape,
          seed: seeds[b],
          scheduler: scheduler.name,
          promptIds: enc.promptIds[b],
          negativeIds: enc.negativeIds[b],
          truncated: enc.truncated[b],
          timings,
          precisions: callPrecisions,
          schedule: scheduleText,
        };
      });
      return { images, batch: B, timings, precisions: callPrecisions, schedule: scheduleText };
    } catch (e) {
      throw withMemoryHint(
        e,
        `the engine (${Math.round(eng.stats().capacity / MiB)} MiB) was sized at load for ${this.sizedFor}; for larger images or batches load with {width, height, batch} (CLI: --width/--height do this) or memoryBytes`,
      );
    } finally {
      this.unet.setPrecision(precisionBefore);
    }
  }

  /** Frees the engine (threads, memory). The pipeline is unusable afterwards. */
  close(): void {
    this.engine.close();
  }
}

/** Runs fn, turning the "scheduler_config.json:" of a config error into the model's file location. */
function namingSchedulerFile<T>(dir: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof SchedulerConfigError && e.message.startsWith("scheduler_config.json:"))
      throw new SchedulerConfigError(`${joinLocation(dir, "scheduler")}/${e.message}`);
    throw e;
  }
}

function lcm(a: number, b: number): number {
  let x = a;
  let y = b;
  while (y) [x, y] = [y, x % y];
  return (a / x) * b;
}

function withMemoryHint(e: unknown, hint: string | null): unknown {
  if (e instanceof OutOfMemoryError && hint) return new OutOfMemoryError(`${e.message} (${hint})`);
  return e;
}

// ---------------------------------------------------------------------------------------------------
// memory estimate

/** Bytes the weights of a safetensors file take as float32. */
export async function weightBytesF32(file: string): Promise<number> {
  const st = await SafetensorsFile.open(file);
  try {
    let n = 0;
    for (const t of st.tensors.values()) n += t.shape.reduce((a, d) => a * d, 1) * 4;
    return n;
  } finally {
    st.close();
  }
}

/** Values (elements) in the unet folder's weights: the original checkpoint, else a stepq converted file. */
async function unetWeightValues(unetDir: string): Promise<number> {
  let file: string | undefined;
  try {
    file = await findWeights(unetDir);
  } catch (e) {
    for (const p of ["bf16", "int8"] as const) if (!file && (await fileExists(joinLocation(unetDir, stepqWeightsName(p))))) file = joinLocation(unetDir, stepqWeightsName(p));
    if (!file) throw e;
  }
  return (await weightBytesF32(file)) / 4;
}

/**
 * Engine memory for a pipeline folder: the weights as f32 (+25% for packing; the UNet at the bytes of each
 * precision loaded, when precisions are given), the UNet activations of a CFG batch of 2 x `batch` images
 * (default 1) at `width`x`height` (models/memory.ts), the VAE decoder's full-resolution maps of `batch`
 * images, the text encoder's states of 2 x `batch` prompts, plus slack; rounded up to 16 MiB and capped at 4 GiB.
 */
export async function estimatePipelineMemory(dir: string, opts: { width?: number; height?: number; precisions?: readonly Precision[]; batch?: number } = {}): Promise<number> {
  // the typed, checked configs: a bad size field is reported naming its file and field, not as NaN memory
  const unetCfg = await loadUNetConfig(joinLocation(dir, "unet"));
  const vaeCfg = await loadVaeConfig(joinLocation(dir, "vae"));
  const textCfg = await loadClipTextConfig(joinLocation(dir, "text_encoder"));
  let weights = 0;
  for (const c of ["text_encoder", "vae"]) weights += await weightBytesF32(await findWeights(joinLocation(dir, c)));
  const unetBytesPerValue = opts.precisions ? opts.precisions.reduce((a, p) => a + PRECISION_BYTES[p], 0) : 4;
  weights += (await unetWeightValues(joinLocation(dir, "unet"))) * unetBytesPerValue;
  const vaeLevels: number[] = vaeCfg.block_out_channels ?? [64];
  const scale = 2 ** (vaeLevels.length - 1);
  const native = unetCfg.sample_size === null ? null : unetCfg.sample_size * scale;
  if (native === null && (opts.width === undefined || opts.height === undefined))
    throw new PipelineError(`${joinLocation(dir, "unet", "config.json")}: sample_size is null, so the model has no native image size; give width and height`);
  const W = opts.width ?? native!;
  const H = opts.height ?? native!;
  const hw = (W / scale) * (H / scale);
  const images = opts.batch ?? 1;
  if (!(Number.isInteger(images) && images >= 1)) throw new PipelineError(`batch must be a positive integer, got ${images}`);
  const B = 2 * images; // the CFG batch: uncond and cond rows of every image
  const unetAct = unetActivationBytes({ block_out_channels: unetCfg.block_out_channels ?? [320] }, B, hw);
  const vaeAct = 4 * W * H * vaeLevels[0] * 10 * images; // ~8 full-resolution maps live at the decoder top (measured)
  const textAct = 4 * B * 77 * (textCfg.hidden_size ?? 768) * 16;
  const total = weights * 1.25 + Math.max(unetAct, vaeAct) + textAct + 48 * MiB;
  const rounded = Math.ceil(total / (16 * MiB)) * 16 * MiB;
  return Math.min(Math.max(rounded, 64 * MiB), 4096 * MiB);
}
