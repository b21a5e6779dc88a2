import { parsePythonJson } from "../io/json.ts";
// Diffusion noise schedulers, reproducing Hugging Face diffusers (PNDMScheduler, DDIMScheduler,
// EulerDiscreteScheduler, DPMSolverMultistepScheduler) on flat Float32Array latents.
//
// Precision: diffusers builds its tables (betas, alphas_cumprod, sigmas) in torch float32 and its
// timesteps with numpy float64; both are emulated here (Math.fround, numpy rounding rules) so
// timesteps come out identical and tables bit-close. The per-element step arithmetic runs in
// float64 and rounds once to float32 (torch rounds after every op: differences are ~1e-7).
//
// Config handling follows diffusers' `from_config`: a scheduler reads the keys it knows, uses
// diffusers' defaults for missing ones and ignores keys of other schedulers, so any model's
// scheduler_config.json can drive any scheduler here. Values that would change behaviour in a
// way not implemented here raise SchedulerConfigError naming the field and value.

export type SchedulerName = "pndm" | "ddim" | "euler" | "dpm++";
export const SCHEDULER_NAMES: readonly SchedulerName[] = ["pndm", "ddim", "euler", "dpm++"];

/** A parsed diffusers scheduler_config.json (see parseSchedulerConfigJson for Python-style JSON). */
export type SchedulerConfig = Record<string, unknown>;

export interface Scheduler {
  readonly name: SchedulerName;
  /** The diffusers class this reproduces, e.g. "PNDMScheduler". */
  readonly className: string;
  /** alphas_cumprod over the training timesteps (float32 values as torch computes them). */
  readonly alphasCumprod: Float32Array;
  /** Timesteps to feed the model, in order; set by setTimesteps. Euler's may be fractional. */
  readonly timesteps: number[];
  /** As passed to setTimesteps (PNDM runs one more step than this: see timesteps.length). */
  readonly numInferenceSteps: number;
  /** Multiply the initial unit-variance noise by this. */
  readonly initNoiseSigma: number;
  /** Computes the timesteps and resets all per-run state. */
  setTimesteps(numInferenceSteps: number): void;
  /** The model input for timestep t. May return `sample` itself when no scaling applies. */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  /** One denoising step: the sample at the next (less noisy) timestep, as a new array. */
  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array;
}

export class SchedulerConfigError extends Error {}

const CLASS_TO_NAME: Record<string, SchedulerName> = {
  PNDMScheduler: "pndm",
  DDIMScheduler: "ddim",
  EulerDiscreteScheduler: "euler",
  DPMSolverMultistepScheduler: "dpm++",
};
const NAME_ALIASES: Record<string, SchedulerName> = { "dpmsolver++": "dpm++" };

/** Scheduler `name` (pndm, ddim, euler, dpm++; alias dpmsolver++) over any diffusers scheduler config. */
export function createScheduler(name: string, config: SchedulerConfig = {}): Scheduler {
  const n = (SCHEDULER_NAMES as readonly string[]).includes(name) ? (name as SchedulerName) : NAME_ALIASES[name];
  switch (n) {
    case "pndm": return new PNDMScheduler(config);
    case "ddim": return new DDIMScheduler(config);
    case "euler": return new EulerDiscreteScheduler(config);
    case "dpm++": return new DPMSolverMultistepScheduler(config);
  }
  throw new SchedulerConfigError(
    `unknown scheduler ${JSON.stringify(name)}; valid names: ${SCHEDULER_NAMES.join(", ")} (alias: dpmsolver++)`,
  );
}

/** The scheduler a model's scheduler_config.json names in `_class_name`. */
export function schedulerFromConfig(config: SchedulerConfig): Scheduler {
  const cls = config._class_name;
  const name = typeof cls === "string" ? CLASS_TO_NAME[cls] : undefined;
  if (!name) {
    throw new SchedulerConfigError(
      `scheduler_config.json: _class_name ${fmt(cls)} is not supported (supported: ${Object.keys(CLASS_TO_NAME).join(", ")}); ` +
        `pick one of ${SCHEDULER_NAMES.join(", ")} by name to use it with this config`,
    );
  }
  return createScheduler(name, config);
}

/**
 * Parses a scheduler_config.json as diffusers writes it: Python's json emits bare
 * Infinity/-Infinity/NaN (e.g. DPM-Solver's lambda_min_clipped), which JSON.parse rejects.
 */
export { parsePythonJson };

export function parseSchedulerConfigJson(text: string): SchedulerConfig {
  return parsePythonJson(text) as SchedulerConfig;
}

// ---------------------------------------------------------------------------------------------
// Config reading with diffusers defaults and clear errors.

function fmt(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return `[array of ${v.length}]`;
  return String(v);
}

class ConfigReader {
  constructor(private readonly c: SchedulerConfig, readonly cls: string) {}

  fail(key: string, value: unknown, why: string): never {
    throw new SchedulerConfigError(`scheduler_config.json: ${key} ${fmt(value)} ${why}`);
  }
  /** Missing and null both mean "diffusers default", as when a Python None default is passed. */
  raw(key: string): unknown {
    const v = this.c[key];
    return v === null ? undefined : v;
  }
  num(key: string, def: number): number {
    const v = this.raw(key);
    if (v === undefined) return def;
    if (typeof v !== "number" || Number.isNaN(v)) this.fail(key, v, "is not a number");
    return v;
  }
  int(key: string, def: number, min = -Infinity, max = Infinity): number {
    const v = this.num(key, def);
    if (!Number.isInteger(v) || v < min || v > max)
      this.fail(key, v, `must be an integer${max < Infinity ? ` from ${min} to ${max}` : min > -Infinity ? ` >= ${min}` : ""}`);
    return v;
  }
  /** A finite number in [min, max) (max exclusive when `open`). */
  numIn(key: string, def: number, min: number, max: number, open = false): number {
    const v = this.num(key, def);
    if (!Number.isFinite(v) || v < min || v > max || (open && v === max)) this.fail(key, v, `must be a number from ${min} to ${max}${open ? " (exclusive)" : ""}`);
    return v;
  }
  bool(key: string, def: boolean): boolean {
    const v = this.raw(key);
    if (v === undefined) return def;
    if (typeof v !== "boolean") this.fail(key, v, "must be true or false");
    return v;
  }
  oneOf<T extends string>(key: string, def: T, allowed: readonly T[]): T {
    const v = this.raw(key);
    if (v === undefined) return def;
    if (!(allowed as readonly unknown[]).includes(v)) {
      this.fail(key, v, `is not supported by ${this.cls} here (supported: ${allowed.join(", ")})`);
    }
    return v as T;
  }
  /** A field whose only implemented value is `only` (its diffusers default or a no-op value). */
  only(key: string, only: unknown, note = ""): void {
    const v = this.raw(key);
    if (v !== undefined && v !== only) this.fail(key, v, `is not supported by ${this.cls} here (only ${fmt(only)})${note}`);
  }
  numArray(key: string): number[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
      this.fail(key, v, "must be an array of numbers");
    }
    return v as number[];
  }
}

// ---------------------------------------------------------------------------------------------
// numpy / torch emulation.

const f32 = Math.fround;

/** numpy.round: half to even. */
function npRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** numpy.linspace(start, stop, num) in float64 (y = i*step + start, last element = stop). */
function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const y = Array.from({ length: num }, (_, i) => i * step + start);
  y[num - 1] = stop;
  return y;
}

/** numpy.arange(start, stop, step) for floats: a[i] = start + i*((start+step)-start). */
function npArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  if (len === 0) return [];
  const delta = start + step - start;
  return Array.from({ length: len }, (_, i) => (i === 0 ? start : start + i * delta));
}

/** torch.linspace(start, end, steps, dtype=float32) on CPU: float32 math, filled from both ends. */
function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

/** torch.cumprod on CPU float32: accumulates in double, rounds each output to float32. */
function torchCumprodF32(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  let acc = 1;
  for (let i = 0; i < x.length; i++) {
    acc *= x[i];
    out[i] = acc;
  }
  return out;
}

/** numpy.interp(x, arange(len(fp)), fp) in float64. */
function npInterpUnitGrid(x: number, fp: ArrayLike<number>): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0];
  if (x >= last) return fp[last];
  const j = Math.floor(x);
  if (x === j) return fp[j];
  return (fp[j + 1] - fp[j]) * (x - j) + fp[j];
}

// ---------------------------------------------------------------------------------------------
// Noise schedule: betas -> alphas_cumprod, as in every diffusers scheduler's __init__.

const BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"] as const;

function betasFromConfig(cfg: ConfigReader, numTrain: number): Float32Array {
  const trained = cfg.numArray("trained_betas");
  if (trained) {
    // diffusers would silently size its tables by len(trained_betas); a mismatch is a broken config.
    if (trained.length !== numTrain) {
      cfg.fail("trained_betas", trained, `has ${trained.length} values but num_train_timesteps is ${numTrain}`);
    }
    const bad = trained.findIndex((b) => !(b >= 0 && b < 1));
    if (bad >= 0) cfg.fail(`trained_betas[${bad}]`, trained[bad], "must be a number from 0 to 1 (exclusive)");
    return Float32Array.from(trained);
  }
  const schedule = cfg.oneOf("beta_schedule", "linear", BETA_SCHEDULES);
  // a beta is the noise variance added at one training step: 0 <= beta < 1, or the schedule turns into NaN
  const start = cfg.numIn("beta_start", 0.0001, 0, 1, true);
  const end = cfg.numIn("beta_end", 0.02, 0, 1, true);
  if (schedule === "linear") return torchLinspaceF32(start, end, numTrain);
  if (schedule === "scaled_linear") {
    const b = torchLinspaceF32(Math.sqrt(start), Math.sqrt(end), numTrain);
    return b.map((v) => f32(v * v));
  }
  // squaredcos_cap_v2: betas_for_alpha_bar, in Python floats then cast to float32.
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const betas = new Float32Array(numTrain);
  for (let i = 0; i < numTrain; i++) {
    betas[i] = Math.min(1 - alphaBar((i + 1) / numTrain) / alphaBar(i / numTrain), 0.999);
  }
  return betas;
}

/** rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1) in float32 like diffusers. */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const ac = torchCumprodF32(betas.map((b) => f32(1 - b)));
  const sq = ac.map((v) => f32(Math.sqrt(v)));
  const s0 = sq[0];
  const sT = sq[sq.length - 1];
  const scale = f32(s0 / f32(s0 - sT));
  const bar = sq.map((v) => {
    const r = f32(f32(v - sT) * scale);
    return f32(r * r);
  });
  const out = new Float32Array(betas.length);
  out[0] = f32(1 - bar[0]);
  for (let i = 1; i < bar.length; i++) out[i] = f32(1 - f32(bar[i] / bar[i - 1]));
  return out;
}

interface NoiseSchedule {
  numTrainTimesteps: number;
  alphasCumprod: Float32Array;
}

/** Training timesteps at most (SD: 1000); bounds the tables allocated from the config. */
export const MAX_TRAIN_TIMESTEPS = 100_000;

function noiseSchedule(cfg: ConfigReader, opts: { zeroSnrKey: boolean; zeroSnrLastTiny: boolean }): NoiseSchedule {
  const numTrain = cfg.int("num_train_timesteps", 1000, 1, MAX_TRAIN_TIMESTEPS);
  let betas = betasFromConfig(cfg, numTrain);
  const rescale = opts.zeroSnrKey && cfg.bool("rescale_betas_zero_snr", false);
  if (rescale) betas = rescaleZeroTerminalSnr(betas);
  const alphasCumprod = torchCumprodF32(betas.map((b) => f32(1 - b)));
  // large betas over many steps drive alphas_cumprod to 0 in float32: every sigma after that is infinite
  const zero = rescale ? -1 : alphasCumprod.findIndex((a) => !(a > 0));
  if (zero >= 0)
    throw new SchedulerConfigError(
      `scheduler_config.json: the noise schedule (beta_schedule ${fmt(cfg.raw("beta_schedule") ?? "linear")}, beta_start ${fmt(cfg.raw("beta_start") ?? 0.0001)}, beta_end ${fmt(cfg.raw("beta_end") ?? 0.02)}, num_train_timesteps ${numTrain}) leaves no signal from training timestep ${zero} on (alphas_cumprod = 0); use smaller betas`,
    );
  // Euler and DPM-Solver: close to 0 without being 0 so the first sigma is finite.
  if (rescale && opts.zeroSnrLastTiny) alphasCumprod[numTrain - 1] = 2 ** -24;
  return { numTrainTimesteps: numTrain, alphasCumprod };
}

/** sqrt((1 - a) / a) per training timestep, in torch float32. */
function trainingSigmas(alphasCumprod: Float32Array): Float32Array {
  return alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

function checkSteps(n: number, numTrain: number, cls: string): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${cls}.setTimesteps: num_inference_steps must be an integer >= 1, got ${n}`);
  if (n > numTrain) {
    throw new RangeError(`${cls}.setTimesteps: num_inference_steps ${n} exceeds num_train_timesteps ${numTrain}`);
  }
}

/** Timesteps past the last training timestep (steps_offset too large for this step count) index nothing. */
function checkTimestepsFit(ts: readonly number[], numTrain: number, offset: number, cls: string): void {
  const max = Math.max(...ts);
  if (max > numTrain - 1)
    throw new SchedulerConfigError(
      `scheduler_config.json: steps_offset ${offset} with ${ts.length} steps gives timestep ${max}, past the last training timestep ${numTrain - 1} (${cls}); use a smaller steps_offset or fewer steps`,
    );
}

function checkLengths(cls: string, modelOutput: Float32Array, sample: Float32Array): void {
  if (modelOutput.length !== sample.length) {
    throw new RangeError(`${cls}.step: model output has ${modelOutput.length} values but the sample has ${sample.length}`);
  }
}

const SPACINGS = ["leading", "trailing", "linspace"] as const;
type Spacing = (typeof SPACINGS)[number];

/**
 * The DDIM/PNDM training-timestep subset, ascending, as float64 values before any int cast:
 * linspace: linspace(0, T-1, n).round(); leading: arange(n)*(T//n) + offset; trailing: round(arange(T, 0, -T/n)) - 1.
 */
function spacedTimestepsAscending(spacing: Spacing, n: number, numTrain: number, offset: number): number[] {
  if (spacing === "linspace") return npLinspace(0, numTrain - 1, n).map(npRound);
  if (spacing === "leading") {
    const ratio = Math.floor(numTrain / n);
    return Array.from({ length: n }, (_, i) => i * ratio + offset);
  }
  return npArange(numTrain, 0, -numTrain / n).map((t) => npRound(t) - 1).reverse();
}

// ---------------------------------------------------------------------------------------------
// PNDM (pseudo linear multistep). With skip_prk_steps (Stable Diffusion) it is PLMS; without,
// the first 12 calls are the Runge-Kutta warm-up of F-PNDM.

export class PNDMScheduler implements Scheduler {
  readonly name = "pndm";
  readonly className = "PNDMScheduler";
  readonly alphasCumprod: Float32Array;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  numInferenceSteps = 0;

  private readonly numTrain: number;
  private readonly finalAlphaCumprod: number;
  private readonly skipPrk: boolean;
  private readonly prediction: "epsilon" | "v_prediction";
  private readonly spacing: Spacing;
  private readonly offset: number;
  private prkTimesteps: number[] = [];
  private counter = 0;
  private ets: Float32Array[] = [];
  private curSample: Float32Array | null = null;
  private curModelOutput: Float64Array | null = null;

  constructor(config: SchedulerConfig) {
    const cfg = new ConfigReader(config, this.className);
    const ns = noiseSchedule(cfg, { zeroSnrKey: false, zeroSnrLastTiny: false });
    this.numTrain = ns.numTrainTimesteps;
    this.alphasCumprod = ns.alphasCumprod;
    this.finalAlphaCumprod = cfg.bool("set_alpha_to_one", false) ? 1 : this.alphasCumprod[0];
    this.skipPrk = cfg.bool("skip_prk_steps", false);
    this.prediction = cfg.oneOf("prediction_type", "epsilon", ["epsilon", "v_prediction"] as const);
    this.spacing = cfg.oneOf("timestep_spacing", "leading", SPACINGS);
    this.offset = cfg.int("steps_offset", 0, 0, this.numTrain - 1);
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.numTrain, this.className);
    this.numInferenceSteps = n;
    const ts = spacedTimestepsAscending(this.spacing, n, this.numTrain, this.offset);
    checkTimestepsFit(ts, this.numTrain, this.offset, this.className);
    let plms: number[];
    if (this.skipPrk) {
      // [t0 .. t_{n-2}, t_{n-2}, t_{n-1}] reversed: the second-highest timestep runs twice.
      this.prkTimesteps = [];
      plms = [...ts.slice(0, -1), ts[n - 2], ts[n - 1]].filter((t) => t !== undefined).reverse();
    } else {
      if (n < 4) throw new RangeError(`${this.className}: Runge-Kutta warm-up (skip_prk_steps false) needs num_inference_steps >= 4, got ${n}`);
      const half = Math.floor(Math.floor(this.numTrain / n) / 2);
      const last4 = ts.slice(-4);
      const prk = last4.flatMap((t) => [t, t + half]).slice(0, -1);
      this.prkTimesteps = prk.flatMap((t) => [t, t]).slice(1, -1).reverse();
      plms = ts.slice(0, -3).reverse();
    }
    this.timesteps = [...this.prkTimesteps, ...plms];
    this.ets = [];
    this.counter = 0;
    this.curSample = null;
    this.curModelOutput = null;
  }

  scaleModelInput(sample: Float32Array, _t: number): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (this.numInferenceSteps === 0) throw new Error(`${this.className}.step: call setTimesteps first`);
    checkLengths(this.className, modelOutput, sample);
    return this.counter < this.prkTimesteps.length && !this.skipPrk
      ? this.stepPrk(modelOutput, t, sample)
      : this.stepPlms(modelOutput, t, sample);
  }

  private stepPrk(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(Math.floor(this.numTrain / this.numInferenceSteps) / 2);
    const prevT = t - diffToPrev;
    const timestep = this.prkTimesteps[Math.floor(this.counter / 4) * 4];
    const phase = this.counter % 4;
    const acc = (this.curModelOutput ??= new Float64Array(modelOutput.length));
    let eps: ArrayLike<number> = modelOutput;
    if (phase === 0) {
      for (let i = 0; i < acc.length; i++) acc[i] += modelOutput[i] / 6;
      this.ets.push(modelOutput.slice());
      this.curSample = sample.slice();
    } else if (phase === 1 || phase === 2) {
      for (let i = 0; i < acc.length; i++) acc[i] += modelOutput[i] / 3;
    } else {
      eps = acc.map((a, i) => a + modelOutput[i] / 6);
      this.curModelOutput = null;
    }
    const prev = this.prevSample(this.curSample ?? sample, timestep, prevT, eps);
    this.counter++;
    return prev;
  }

  private stepPlms(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (!this.skipPrk && this.ets.length < 3) throw new Error(`${this.className}: PLMS steps need the 12 Runge-Kutta steps first`);
    const stride = Math.floor(this.numTrain / this.numInferenceSteps);
    let timestep = t;
    let prevT = t - stride;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput.slice());
    } else {
      // The repeated timestep: redo the first step from the same sample with the averaged eps.
      prevT = t;
      timestep = t + stride;
    }
    const e = this.ets;
    const m = e.length;
    const eps = new Float64Array(modelOutput.length);
    if (m === 1 && this.counter === 0) {
      eps.set(modelOutput);
      this.curSample = sample.slice();
    } else if (m === 1 && this.counter === 1) {
      for (let i = 0; i < eps.length; i++) eps[i] = (modelOutput[i] + e[0][i]) / 2;
      sample = this.curSample!;
      this.curSample = null;
    } else if (m === 2) {
      for (let i = 0; i < eps.length; i++) eps[i] = (3 * e[1][i] - e[0][i]) / 2;
    } else if (m === 3) {
      for (let i = 0; i < eps.length; i++) eps[i] = (23 * e[2][i] - 16 * e[1][i] + 5 * e[0][i]) / 12;
    } else {
      for (let i = 0; i < eps.length; i++) eps[i] = (55 * e[3][i] - 59 * e[2][i] + 37 * e[1][i] - 9 * e[0][i]) / 24;
    }
    const prev = this.prevSample(sample, timestep, prevT, eps);
    this.counter++;
    return prev;
  }

  /** Formula (9) of the PNDM paper (diffusers' _get_prev_sample). */
  private prevSample(sample: Float32Array, t: number, prevT: number, modelOutput: ArrayLike<number>): Float32Array {
    const a = this.alphasCumprod[t];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    if (a === undefined || aPrev === undefined) throw new RangeError(`${this.className}.step: timestep ${t} is outside the schedule`);
    const b = 1 - a;
    const bPrev = 1 - aPrev;
    const sampleCoeff = Math.sqrt(aPrev / a);
    const denom = a * Math.sqrt(bPrev) + Math.sqrt(a * b * aPrev);
    const k = (aPrev - a) / denom;
    const sa = Math.sqrt(a);
    const sb = Math.sqrt(b);
    const v = this.prediction === "v_prediction";
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const eps = v ? sa * modelOutput[i] + sb * sample[i] : modelOutput[i];
      out[i] = sampleCoeff * sample[i] - k * eps;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// DDIM, deterministic (eta = 0, as the Stable Diffusion pipelines call it).

export class DDIMScheduler implements Scheduler {
  readonly name = "ddim";
  readonly className = "DDIMScheduler";
  readonly alphasCumprod: Float32Array;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  numInferenceSteps = 0;

  private readonly numTrain: number;
  private readonly finalAlphaCumprod: number;
  private readonly prediction: "epsilon" | "sample" | "v_prediction";
  private readonly spacing: Spacing;
  private readonly offset: number;
  private readonly clipRange: number | null;

  constructor(config: SchedulerConfig) {
    const cfg = new ConfigReader(config, this.className);
    const ns = noiseSchedule(cfg, { zeroSnrKey: true, zeroSnrLastTiny: false });
    this.numTrain = ns.numTrainTimesteps;
    this.alphasCumprod = ns.alphasCumprod;
    this.finalAlphaCumprod = cfg.bool("set_alpha_to_one", true) ? 1 : this.alphasCumprod[0];
    this.prediction = cfg.oneOf("prediction_type", "epsilon", ["epsilon", "sample", "v_prediction"] as const);
    this.spacing = cfg.oneOf("timestep_spacing", "leading", SPACINGS);
    this.offset = cfg.int("steps_offset", 0, 0, this.numTrain - 1);
    cfg.only("thresholding", false, " (dynamic thresholding is for pixel-space models)");
    // diffusers' default is clip_sample true: configs without the key (e.g. PNDM ones) get clipping too.
    this.clipRange = cfg.bool("clip_sample", true) ? cfg.num("clip_sample_range", 1) : null;
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.numTrain, this.className);
    this.numInferenceSteps = n;
    this.timesteps = spacedTimestepsAscending(this.spacing, n, this.numTrain, this.offset).reverse();
    checkTimestepsFit(this.timesteps, this.numTrain, this.offset, this.className);
  }

  scaleModelInput(sample: Float32Array, _t: number): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (this.numInferenceSteps === 0) throw new Error(`${this.className}.step: call setTimesteps first`);
    checkLengths(this.className, modelOutput, sample);
    const prevT = t - Math.floor(this.numTrain / this.numInferenceSteps);
    const a = this.alphasCumprod[t];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    if (a === undefined || aPrev === undefined) throw new RangeError(`${this.className}.step: timestep ${t} is outside the schedule`);
    const sa = Math.sqrt(a);
    const sb = Math.sqrt(1 - a);
    const saPrev = Math.sqrt(aPrev);
    const dirCoeff = Math.sqrt(1 - aPrev);
    const clip = this.clipRange;
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const m = modelOutput[i];
      const x = sample[i];
      let x0: number;
      let eps: number;
      if (this.prediction === "epsilon") {
        x0 = (x - sb * m) / sa;
        eps = m;
      } else if (this.prediction === "sample") {
        x0 = m;
        eps = (x - sa * x0) / sb;
      } else {
        x0 = sa * x - sb * m;
        eps = sa * m + sb * x;
      }
      if (clip !== null) x0 = Math.min(clip, Math.max(-clip, x0));
      out[i] = saPrev * x0 + dirCoeff * eps;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Euler discrete (k-diffusion Algorithm 2 without churn), in sigma space.

export class EulerDiscreteScheduler implements Scheduler {
  readonly name = "euler";
  readonly className = "EulerDiscreteScheduler";
  readonly alphasCumprod: Float32Array;
  timesteps: number[] = [];
  numInferenceSteps = 0;
  /** sigmas per inference step plus the final one (float32 values). */
  sigmas: Float32Array;

  private readonly numTrain: number;
  private readonly prediction: "epsilon" | "sample" | "original_sample" | "v_prediction";
  private readonly spacing: Spacing;
  private readonly offset: number;
  private readonly finalSigmas: "zero" | "sigma_min";
  private readonly continuousTimesteps: boolean;
  private stepIndex: number | null = null;

  constructor(config: SchedulerConfig) {
    const cfg = new ConfigReader(config, this.className);
    const ns = noiseSchedule(cfg, { zeroSnrKey: true, zeroSnrLastTiny: true });
    this.numTrain = ns.numTrainTimesteps;
    this.alphasCumprod = ns.alphasCumprod;
    this.prediction = cfg.oneOf("prediction_type", "epsilon", ["epsilon", "sample", "original_sample", "v_prediction"] as const);
    this.spacing = cfg.oneOf("timestep_spacing", "linspace", SPACINGS);
    this.offset = cfg.int("steps_offset", 0, 0, this.numTrain - 1);
    this.finalSigmas = cfg.oneOf("final_sigmas_type", "zero", ["zero", "sigma_min"] as const);
    cfg.oneOf("interpolation_type", "linear", ["linear"] as const);
    cfg.only("use_karras_sigmas", false);
    cfg.only("use_exponential_sigmas", false);
    cfg.only("use_beta_sigmas", false);
    const timestepType = cfg.oneOf("timestep_type", "discrete", ["discrete", "continuous"] as const);
    this.continuousTimesteps = timestepType === "continuous" && this.prediction === "v_prediction";
    // Before setTimesteps: the training sigmas, high to low, then 0 (as diffusers' __init__).
    const train = trainingSigmas(this.alphasCumprod);
    this.sigmas = new Float32Array(this.numTrain + 1);
    this.sigmas.set(train.reverse());
  }

  /** diffusers: max sigma for linspace/trailing spacing, sqrt(max^2 + 1) for leading. */
  get initNoiseSigma(): number {
    const max = this.sigmas.reduce((m, s) => Math.max(m, s), 0);
    return this.spacing === "linspace" || this.spacing === "trailing" ? max : f32(Math.sqrt(f32(f32(max * max) + 1)));
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.numTrain, this.className);
    this.numInferenceSteps = n;
    const T = this.numTrain;
    let ts: number[];
    if (this.spacing === "linspace") {
      ts = npLinspace(0, T - 1, n).map(f32).reverse(); // fractional: not rounded in diffusers
    } else if (this.spacing === "leading") {
      const ratio = Math.floor(T / n);
      ts = Array.from({ length: n }, (_, i) => i * ratio + this.offset).reverse();
    } else {
      ts = npArange(T, 0, -T / n).map((t) => npRound(t) - 1);
    }
    const train = trainingSigmas(this.alphasCumprod);
    const a0 = this.alphasCumprod[0];
    const last = this.finalSigmas === "zero" ? 0 : f32(Math.sqrt(f32(f32(1 - a0) / a0)));
    this.sigmas = Float32Array.from([...ts.map((t) => npInterpUnitGrid(t, train)), last]);
    this.timesteps = this.continuousTimesteps ? Array.from(this.sigmas.subarray(0, n), (s) => f32(0.25 * Math.log(s))) : ts;
    this.stepIndex = null;
  }

  private indexFor(t: number): number {
    if (this.stepIndex !== null) return this.stepIndex;
    // diffusers' index_for_timestep: the second match if the timestep repeats (img2img safety).
    const hits = this.timesteps.flatMap((v, i) => (v === t ? [i] : []));
    if (hits.length === 0) throw new RangeError(`${this.className}: timestep ${t} is not in the schedule (call setTimesteps and use its timesteps)`);
    this.stepIndex = hits.length > 1 ? hits[1] : hits[0];
    return this.stepIndex;
  }

  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const sigma = this.sigmas[this.indexFor(t)];
    const k = 1 / Math.sqrt(sigma * sigma + 1);
    return sample.map((x) => x * k);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (this.numInferenceSteps === 0) throw new Error(`${this.className}.step: call setTimesteps first`);
    checkLengths(this.className, modelOutput, sample);
    const idx = this.indexFor(t);
    if (idx >= this.numInferenceSteps) throw new RangeError(`${this.className}.step: called more times than there are timesteps`);
    const sigma = this.sigmas[idx];
    const dt = this.sigmas[idx + 1] - sigma;
    const vScale = -sigma / Math.sqrt(sigma * sigma + 1);
    const vSample = 1 / (sigma * sigma + 1);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const x = sample[i];
      const m = modelOutput[i];
      let x0: number;
      if (this.prediction === "epsilon") x0 = x - sigma * m;
      else if (this.prediction === "v_prediction") x0 = m * vScale + x * vSample;
      else x0 = m;
      out[i] = x + ((x - x0) / sigma) * dt;
    }
    this.stepIndex = idx + 1;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// DPM-Solver++ multistep (data prediction), orders 1-3, midpoint or heun second-order update.

export class DPMSolverMultistepScheduler implements Scheduler {
  readonly name = "dpm++";
  readonly className = "DPMSolverMultistepScheduler";
  readonly alphasCumprod: Float32Array;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  numInferenceSteps = 0;
  /** sigmas per inference step plus the final one (float32 values). */
  sigmas = new Float32Array(0);

  private readonly numTrain: number;
  private readonly order: number;
  private readonly prediction: "epsilon" | "sample" | "v_prediction";
  private readonly solverType: "midpoint" | "heun";
  private readonly lowerOrderFinal: boolean;
  private readonly eulerAtFinal: boolean;
  private readonly finalSigmas: "zero" | "sigma_min";
  private readonly lambdaMinClipped: number;
  private readonly spacing: Spacing;
  private readonly offset: number;
  /** Converted (x0) model outputs of the last `order` steps, oldest first. */
  private modelOutputs: (Float32Array | null)[] = [];
  private lowerOrderNums = 0;
  private stepIndex: number | null = null;

  constructor(config: SchedulerConfig) {
    const cfg = new ConfigReader(config, this.className);
    const ns = noiseSchedule(cfg, { zeroSnrKey: true, zeroSnrLastTiny: true });
    this.numTrain = ns.numTrainTimesteps;
    this.alphasCumprod = ns.alphasCumprod;
    this.order = cfg.int("solver_order", 2, 1);
    if (this.order > 3) cfg.fail("solver_order", this.order, "is not supported (1, 2 or 3)");
    this.prediction = cfg.oneOf("prediction_type", "epsilon", ["epsilon", "sample", "v_prediction"] as const);
    // diffusers maps the deprecated "deis" to dpmsolver++; the SDE variants need noise and are not here.
    cfg.oneOf("algorithm_type", "dpmsolver++", ["dpmsolver++", "deis"] as const);
    // diffusers maps the legacy logrho/bh1/bh2 solver types to midpoint.
    const st = cfg.oneOf("solver_type", "midpoint", ["midpoint", "heun", "logrho", "bh1", "bh2"] as const);
    this.solverType = st === "heun" ? "heun" : "midpoint";
    this.lowerOrderFinal = cfg.bool("lower_order_final", true);
    this.eulerAtFinal = cfg.bool("euler_at_final", false);
    this.finalSigmas = cfg.oneOf("final_sigmas_type", "zero", ["zero", "sigma_min"] as const);
    this.lambdaMinClipped = cfg.num("lambda_min_clipped", -Infinity);
    this.spacing = cfg.oneOf("timestep_spacing", "linspace", SPACINGS);
    this.offset = cfg.int("steps_offset", 0, 0, this.numTrain - 1);
    cfg.only("thresholding", false, " (dynamic thresholding is for pixel-space models)");
    cfg.only("variance_type", null, " (learned variance outputs are not supported)");
    cfg.only("use_karras_sigmas", false);
    cfg.only("use_exponential_sigmas", false);
    cfg.only("use_beta_sigmas", false);
    cfg.only("use_lu_lambdas", false);
    cfg.only("use_flow_sigmas", false);
    cfg.only("use_dynamic_shifting", false);
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.numTrain, this.className);
    const T = this.numTrain;
    // Clip lambda(t) from below (matters for the cosine schedule): searchsorted over the ascending lambdas.
    const lambdas = Array.from(this.alphasCumprod, (a) => f32(f32(Math.log(f32(Math.sqrt(a)))) - f32(Math.log(f32(Math.sqrt(f32(1 - a))))))).reverse();
    let clippedIdx = 0;
    while (clippedIdx < lambdas.length && lambdas[clippedIdx] < this.lambdaMinClipped) clippedIdx++;
    const lastT = T - clippedIdx;
    let ts: number[];
    if (this.spacing === "linspace") {
      ts = npLinspace(0, lastT - 1, n + 1).map(npRound).reverse().slice(0, -1);
    } else if (this.spacing === "leading") {
      const ratio = Math.floor(lastT / (n + 1));
      ts = Array.from({ length: n + 1 }, (_, i) => i * ratio).reverse().slice(0, -1).map((t) => t + this.offset);
      checkTimestepsFit(ts, T, this.offset, this.className);
    } else {
      ts = npArange(lastT, 0, -T / n).map((t) => npRound(t) - 1);
    }
    const train = trainingSigmas(this.alphasCumprod);
    const a0 = this.alphasCumprod[0];
    const last = this.finalSigmas === "zero" ? 0 : f32(Math.sqrt(f32(f32(1 - a0) / a0)));
    this.sigmas = Float32Array.from([...ts.map((t) => npInterpUnitGrid(t, train)), last]);
    this.timesteps = ts;
    this.numInferenceSteps = ts.length;
    this.modelOutputs = new Array(this.order).fill(null);
    this.lowerOrderNums = 0;
    this.stepIndex = null;
  }

  scaleModelInput(sample: Float32Array, _t: number): Float32Array {
    return sample;
  }

  /** alpha_t, sigma_t and lambda_t = log(alpha_t / sigma_t) of the VP process at sigmas[i]. */
  private at(i: number): { alpha: number; sigma: number; lambda: number } {
    const s = this.sigmas[i];
    const alpha = 1 / Math.sqrt(s * s + 1);
    const sigma = s * alpha;
    return { alpha, sigma, lambda: Math.log(alpha) - Math.log(sigma) };
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (this.numInferenceSteps === 0) throw new Error(`${this.className}.step: call setTimesteps first`);
    checkLengths(this.className, modelOutput, sample);
    if (this.stepIndex === null) {
      const hits = this.timesteps.flatMap((v, i) => (v === t ? [i] : []));
      this.stepIndex = hits.length === 0 ? this.timesteps.length - 1 : hits.length > 1 ? hits[1] : hits[0];
    }
    const idx = this.stepIndex;
    if (idx >= this.numInferenceSteps) throw new RangeError(`${this.className}.step: called more times than there are timesteps`);
    const n = this.timesteps.length;
    const lowerOrderFinal =
      idx === n - 1 && (this.eulerAtFinal || (this.lowerOrderFinal && n < 15) || this.finalSigmas === "zero");
    const lowerOrderSecond = idx === n - 2 && this.lowerOrderFinal && n < 15;

    // Convert the model output to a data (x0) prediction.
    const cur = this.at(idx);
    const x0 = new Float32Array(sample.length);
    for (let i = 0; i < x0.length; i++) {
      const m = modelOutput[i];
      const x = sample[i];
      x0[i] = this.prediction === "epsilon" ? (x - cur.sigma * m) / cur.alpha : this.prediction === "v_prediction" ? cur.alpha * x - cur.sigma * m : m;
    }
    this.modelOutputs.shift();
    this.modelOutputs.push(x0);

    let out: Float32Array;
    if (this.order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) out = this.firstOrder(x0, sample, idx);
    else if (this.order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) out = this.secondOrder(sample, idx);
    else out = this.thirdOrder(sample, idx);

    if (this.lowerOrderNums < this.order) this.lowerOrderNums++;
    this.stepIndex = idx + 1;
    return out;
  }

  private firstOrder(m0: Float32Array, sample: Float32Array, idx: number): Float32Array {
    const t = this.at(idx + 1);
    const s = this.at(idx);
    const h = t.lambda - s.lambda; // +inf at a final sigma of 0: exp(-h) = 0, result = x0
    const cs = t.sigma / s.sigma;
    const cm = t.alpha * (Math.exp(-h) - 1);
    return sample.map((x, i) => cs * x - cm * m0[i]);
  }

  private secondOrder(sample: Float32Array, idx: number): Float32Array {
    const t = this.at(idx + 1);
    const s0 = this.at(idx);
    const s1 = this.at(idx - 1);
    const [m1, m0] = this.modelOutputs.slice(-2) as Float32Array[];
    const h = t.lambda - s0.lambda;
    const r0 = (s0.lambda - s1.lambda) / h;
    const cs = t.sigma / s0.sigma;
    const c0 = t.alpha * (Math.exp(-h) - 1);
    // D1 = (m0 - m1) / r0; midpoint: x = cs*x - c0*D0 - 0.5*c0*D1; heun: ... + alpha*((e^-h - 1)/h + 1)*D1
    const c1 = this.solverType === "midpoint" ? -0.5 * c0 : t.alpha * ((Math.exp(-h) - 1) / h + 1);
    return sample.map((x, i) => cs * x - c0 * m0[i] + c1 * ((m0[i] - m1[i]) / r0));
  }

  private thirdOrder(sample: Float32Array, idx: number): Float32Array {
    const t = this.at(idx + 1);
    const s0 = this.at(idx);
    const s1 = this.at(idx - 1);
    const s2 = this.at(idx - 2);
    const [m2, m1, m0] = this.modelOutputs.slice(-3) as Float32Array[];
    const h = t.lambda - s0.lambda;
    const r0 = (s0.lambda - s1.lambda) / h;
    const r1 = (s1.lambda - s2.lambda) / h;
    const eh = Math.exp(-h) - 1;
    const cs = t.sigma / s0.sigma;
    const c0 = t.alpha * eh;
    const c1 = t.alpha * (eh / h + 1);
    const c2 = t.alpha * ((eh + h) / (h * h) - 0.5);
    return sample.map((x, i) => {
      const d10 = (m0[i] - m1[i]) / r0;
      const d11 = (m1[i] - m2[i]) / r1;
      const d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
      const d2 = (d10 - d11) / (r0 + r1);
      return cs * x - c0 * m0[i] + c1 * d1 - c2 * d2;
    });
  }
}
