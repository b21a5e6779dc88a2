// Per-step precision of a model's conv/linear layers (the paper: BF16 for the first and last k denoising
// steps, INT8 between).
//
// A model loaded with `precisions: [...]` gets, for every conv/linear layer, one "switch" weight (src/nn:
// kind "switch") holding each listed variant (fp32 / bf16 / int8) resident at once, plus one shared
// PrecisionContext that the model owns; linear()/conv2d() run the variant ctx.current selects, so the
// model's forward code is the same at every precision. Norms, attention matmuls, softmax and activations
// stay f32.
//
// This module holds:
//   - the Precision type and the context;
//   - calibration files (per-layer input activation ranges, which INT8 layers need): the format, the
//     observer that records them (running min/max, or moving-average min/max as torch's
//     MovingAverageMinMaxObserver), reading and writing, and the error that names the missing file and the
//     command that makes it;
//   - per-timestep ranges (`stepq calibrate --per-step`, optional in the same format version 1): besides its
//     global range, each layer has one range per calibrated timestep (`timesteps: number[]` at the top, per
//     layer `steps: {min, max}[]` aligned with it; running min/max over the prompts of the UNet calls at that
//     timestep). A model loaded with such a file keeps the timestep table in its context; UNet.forward sets
//     ctx.stepIndex to the nearest calibrated timestep (setCallTimestep) and each INT8 layer re-prepares its
//     activation terms for that step's range when they differ from the last call's (src/nn/lowp.ts
//     setInt8ActParams). Readers that ignore the fields use the global ranges, which is still correct, so
//     the version stays 1. Converted int8 files hold one range per layer: stepq convert refuses per-step files;
//   - the stepq converted-weights format (weights-tools/README.md): names, metadata checks, and the f32
//     weights that reproduce stored int8 weights + scales exactly through the nn prepare functions.
import * as fs from "node:fs";
import * as path from "node:path";
import type { Tensor } from "../runtime/tensor.ts";
import type { PrecisionSelector, WeightPrecision } from "../nn/switch.ts";
import { ACT_QMAX_DEFAULT, INT8_CALIBRATION_DEFAULT, actParamsFromRange, type ActQuantParams } from "../nn/quant.ts";

export type Precision = WeightPrecision;
export const PRECISIONS: readonly Precision[] = ["fp32", "bf16", "int8"];
/** Bytes per weight value of each precision (packed weights in engine memory). */
export const PRECISION_BYTES: Record<Precision, number> = { fp32: 4, bf16: 2, int8: 1 };

export class PrecisionError extends Error {}

export function isPrecision(s: unknown): s is Precision {
  return typeof s === "string" && (PRECISIONS as readonly string[]).includes(s);
}

/** The precisions in canonical order (fp32, bf16, int8), without duplicates; throws on unknown names. */
export function normalizePrecisions(list: readonly string[]): Precision[] {
  for (const p of list) if (!isPrecision(p)) throw new PrecisionError(`unknown precision "${p}" (expected ${PRECISIONS.join(", ")})`);
  if (list.length === 0) throw new PrecisionError("at least one precision must be loaded");
  return PRECISIONS.filter((p) => list.includes(p));
}

/** The shared selector of a model's switch weights. `loaded` lists the variants every layer holds. */
export interface PrecisionContext extends PrecisionSelector {
  readonly loaded: readonly Precision[];
  /** The calibration's per-step timesteps the INT8 layers hold ranges for (null: global ranges only). */
  stepTimesteps: readonly number[] | null;
  /**
   * The calibration file the INT8 layers took their activation ranges from (null: no INT8, synthetic ranges,
   * or converted INT8 weights, which carry their own).
   */
  int8Calibration: string | null;
}

export function createPrecisionContext(precisions: readonly Precision[]): PrecisionContext {
  const loaded = normalizePrecisions(precisions);
  return { current: loaded.includes("fp32") ? "fp32" : loaded[0], loaded, observe: null, stepTimesteps: null, int8Calibration: null, stepIndex: -1 };
}

/** Index of the timestep in `timesteps` equal to t, else the nearest one (ties: the one listed first). */
export function nearestTimestepIndex(timesteps: readonly number[], t: number): number {
  if (!timesteps.length) throw new PrecisionError("no calibrated timesteps");
  if (!Number.isFinite(t)) throw new PrecisionError(`timestep ${t} is not a finite number`);
  let best = 0;
  for (let i = 0; i < timesteps.length; i++) {
    if (timesteps[i] === t) return i;
    if (Math.abs(timesteps[i] - t) < Math.abs(timesteps[best] - t)) best = i;
  }
  return best;
}

/**
 * Tells the context the timestep(s) of the UNet call about to run: with per-step INT8 ranges, stepIndex
 * becomes the nearest calibrated timestep's index. A batch whose rows have different timesteps cannot use
 * per-step ranges (one range per layer per call) and is an error when INT8 would run.
 */
export function setCallTimestep(ctx: PrecisionContext, timesteps: readonly number[]): void {
  ctx.stepIndex = -1;
  const table = ctx.stepTimesteps;
  if (!table || !timesteps.length) return;
  const t = timesteps[0];
  if (timesteps.some((v) => v !== t)) {
    if (ctx.current === "int8")
      throw new PrecisionError(`per-step INT8 ranges need one timestep per UNet call, got ${[...new Set(timesteps)].join(", ")} in one batch`);
    return;
  }
  ctx.stepIndex = nearestTimestepIndex(table, t);
}

/** Sets ctx.current, or throws naming what is loaded. */
export function selectPrecision(ctx: PrecisionContext, p: Precision, what = "model"): void {
  if (!isPrecision(p)) throw new PrecisionError(`unknown precision "${p}" (expected ${PRECISIONS.join(", ")})`);
  if (!ctx.loaded.includes(p))
    throw new PrecisionError(`${what}: precision ${p} is not loaded (loaded: ${ctx.loaded.join(", ")}); load it with precisions [${[...new Set([...ctx.loaded, p])].join(", ")}]`);
  ctx.current = p;
}

// ---------------------------------------------------------------------------------------------------
// calibration

/** The calibration file's name, next to the unet weights (unet/stepq-calibration.json). */
export const CALIBRATION_FILE = "stepq-calibration.json";
export const CALIBRATION_FORMAT = "stepq-calibration";
export const CALIBRATION_VERSION = 1;

/** Input activation range of one layer. min/max are what INT8 uses; absMin/absMax the extremes ever seen. */
export interface LayerRange {
  min: number;
  max: number;
  absMin?: number;
  absMax?: number;
  /** Observations (UNet calls) folded in. */
  count?: number;
  /** Per-step calibration: this layer's range at each of Calibration.timesteps (same order). */
  steps?: StepRange[];
}

/** A layer's input range over the UNet calls at one timestep. */
export interface StepRange {
  min: number;
  max: number;
}

export interface ObserverInfo {
  /** "ema-minmax" (moving-average min/max) or "minmax" (running extremes). */
  type: "ema-minmax" | "minmax";
  /** EMA: range = momentum * range + (1 - momentum) * this call's range (first call initialises). */
  momentum?: number;
  /** What one observation is. */
  per: string;
}

export interface Calibration {
  format: typeof CALIBRATION_FORMAT;
  version: number;
  /** The model folder calibrated (as given). */
  model: string;
  steps: number;
  guidance: number;
  scheduler: string;
  prompts: number;
  /** UNet calls observed. */
  unetCalls: number;
  seed0: number;
  observer: ObserverInfo;
  /** Activations are quantised to 0..actQmax: 255 (new calibrations by default) or 127 (src/nn/quant.ts INT8_CALIBRATION_DEFAULT). */
  actQmax: number;
  /** Weights are quantised to [-weightQmax, weightQmax]: 127 (absent: int8) or 63 (7-bit, with 8-bit activations; src/nn/quant.ts). */
  weightQmax?: number;
  created: string;
  /** Layer (checkpoint name without .weight) -> input range. */
  layers: Record<string, LayerRange>;
  /** Per-step calibration: the scheduler timesteps observed, in the order first seen; each layer's `steps` follows it. */
  timesteps?: number[];
}

/** Whether a calibration holds per-timestep ranges. */
export function hasPerStepRanges(c: Calibration): c is Calibration & { timesteps: number[] } {
  return Array.isArray(c.timesteps);
}

/**
 * Moving-average min/max per layer, as torch.ao.quantization.MovingAverageMinMaxObserver: the first
 * observation sets the range, later ones move it by (1 - momentum) toward theirs. One observation per layer
 * per UNet call: record() accumulates the extremes of the current call, endCall() folds them in.
 * With type "minmax" the range is the running extremes instead. With perStep, the running extremes are
 * also kept per timestep (endCall(timestep)): minmax only, since a moving average over the few calls of one
 * timestep would describe mostly the last prompt.
 */
export class MinMaxObserver {
  private ranges = new Map<string, Omit<Required<LayerRange>, "steps">>();
  private pending = new Map<string, [number, number]>();
  /** Per-step: timestep -> layer -> [min, max] (Map keeps the order timesteps were first seen). */
  private stepRanges = new Map<number, Map<string, [number, number]>>();
  calls = 0;

  constructor(
    readonly type: "ema-minmax" | "minmax" = "ema-minmax",
    readonly momentum = 0.9,
    readonly perStep = false,
  ) {
    if (!(momentum >= 0 && momentum < 1)) throw new RangeError(`observer momentum must be in [0, 1), got ${momentum}`);
    if (perStep && type !== "minmax") throw new RangeError(`per-step ranges are running min/max; observer ${type} is not supported with them`);
  }

  /** Adds one tensor's extremes to the current call's observation of `layer`. */
  record(layer: string, min: number, max: number): void {
    if (!(Number.isFinite(min) && Number.isFinite(max))) throw new PrecisionError(`calibration: layer ${layer} saw a non-finite input (${min}, ${max})`);
    const p = this.pending.get(layer);
    if (p) {
      if (min < p[0]) p[0] = min;
      if (max > p[1]) p[1] = max;
    } else this.pending.set(layer, [min, max]);
  }

  /** Records x's min/max (host pass over the tensor). */
  observe(layer: string, x: Tensor): void {
    const [mn, mx] = tensorMinMax(x);
    this.record(layer, mn, mx);
  }

  /** Ends one UNet call: folds each layer's extremes of this call into its range (and its timestep's, per step). */
  endCall(timestep?: number): void {
    if (this.perStep && this.pending.size) {
      if (timestep === undefined || !Number.isFinite(timestep)) throw new PrecisionError(`per-step calibration: endCall needs the call's timestep, got ${timestep}`);
      let m = this.stepRanges.get(timestep);
      if (!m) this.stepRanges.set(timestep, (m = new Map()));
      for (const [k, [mn, mx]] of this.pending) {
        const r = m.get(k);
        if (!r) m.set(k, [mn, mx]);
        else {
          r[0] = Math.min(r[0], mn);
          r[1] = Math.max(r[1], mx);
        }
      }
    }
    const c = 1 - this.momentum;
    for (const [k, [mn, mx]] of this.pending) {
      const r = this.ranges.get(k);
      if (!r) this.ranges.set(k, { min: mn, max: mx, absMin: mn, absMax: mx, count: 1 });
      else {
        if (this.type === "minmax") {
          r.min = Math.min(r.min, mn);
          r.max = Math.max(r.max, mx);
        } else {
          r.min = r.min + c * (mn - r.min);
          r.max = r.max + c * (mx - r.max);
        }
        r.absMin = Math.min(r.absMin, mn);
        r.absMax = Math.max(r.absMax, mx);
        r.count++;
      }
    }
    if (this.pending.size) this.calls++;
    this.pending.clear();
  }

  get info(): ObserverInfo {
    return this.type === "minmax"
      ? { type: "minmax", per: "UNet call" }
      : { type: "ema-minmax", momentum: this.momentum, per: "UNet call (torch MovingAverageMinMaxObserver, averaging_constant = 1 - momentum)" };
  }

  /** Per-step: the timesteps observed, in the order first seen (null without perStep). */
  timesteps(): number[] | null {
    return this.perStep ? [...this.stepRanges.keys()] : null;
  }

  /** The ranges so far, layer names sorted; per step, each layer's `steps` follows timesteps(). */
  layers(): Record<string, LayerRange> {
    const out: Record<string, LayerRange> = {};
    for (const k of [...this.ranges.keys()].sort()) {
      out[k] = { ...this.ranges.get(k)! };
      if (this.perStep)
        out[k].steps = [...this.stepRanges].map(([t, m]) => {
          const r = m.get(k);
          // every layer runs in every UNet call; a gap means the calls differed in structure
          if (!r) throw new PrecisionError(`per-step calibration: layer ${k} was not observed at timestep ${t}`);
          return { min: r[0], max: r[1] };
        });
    }
    return out;
  }
}

/** Min and max of an f32 tensor (NaN counts as neither). */
export function tensorMinMax(x: Tensor): [number, number] {
  const v = x.f32();
  let mn = Infinity;
  let mx = -Infinity;
  for (let i = 0; i < v.length; i++) {
    const a = v[i];
    if (a < mn) mn = a;
    if (a > mx) mx = a;
  }
  return [mn, mx];
}

/** Thrown when INT8 is asked for without a calibration file: names the file and the command that makes it. */
export class MissingCalibrationError extends PrecisionError {
  constructor(readonly file: string, modelHint?: string) {
    super(
      `int8 needs per-layer activation ranges from a calibration file, and ${file} does not exist; ` +
        `make it with: stepq calibrate --model ${modelHint ?? "<model folder>"} (writes unet/${CALIBRATION_FILE}; ` +
        "with --out FILE elsewhere, then pass --calibration FILE)",
    );
  }
}

/** Validates calibration JSON (the parsed file); throws naming the problem. */
export function validateCalibration(c: unknown, what: string): Calibration {
  const o = c as Calibration;
  if (!o || typeof o !== "object") throw new PrecisionError(`${what}: not a JSON object`);
  if (o.format !== CALIBRATION_FORMAT) throw new PrecisionError(`${what}: not a stepq calibration file (format ${JSON.stringify(o.format)}, expected "${CALIBRATION_FORMAT}")`);
  if (o.version !== CALIBRATION_VERSION) throw new PrecisionError(`${what}: calibration format version ${o.version}, this stepq reads ${CALIBRATION_VERSION}`);
  if (!o.layers || typeof o.layers !== "object") throw new PrecisionError(`${what}: no "layers" object`);
  for (const [k, r] of Object.entries(o.layers))
    if (!r || !Number.isFinite(r.min) || !Number.isFinite(r.max) || r.min > r.max) throw new PrecisionError(`${what}: layer ${k} has a bad range ${JSON.stringify({ min: r?.min, max: r?.max })}`);
  if (o.timesteps !== undefined) {
    const ts = o.timesteps;
    if (!Array.isArray(ts) || !ts.length || ts.some((t) => typeof t !== "number" || !Number.isFinite(t)))
      throw new PrecisionError(`${what}: "timesteps" must be a non-empty array of finite numbers`);
    if (new Set(ts).size !== ts.length) throw new PrecisionError(`${what}: "timesteps" lists a timestep twice`);
    for (const [k, r] of Object.entries(o.layers)) {
      if (!Array.isArray(r.steps) || r.steps.length !== ts.length)
        throw new PrecisionError(`${what}: layer ${k} needs "steps" with one range per timestep (${ts.length}), has ${Array.isArray(r.steps) ? r.steps.length : "none"}`);
      r.steps.forEach((sr, i) => {
        if (!sr || !Number.isFinite(sr.min) || !Number.isFinite(sr.max) || sr.min > sr.max)
          throw new PrecisionError(`${what}: layer ${k} has a bad range at timestep ${ts[i]}: ${JSON.stringify(sr)}`);
      });
    }
  } else {
    const k = Object.keys(o.layers).find((l) => o.layers[l].steps !== undefined);
    if (k !== undefined) throw new PrecisionError(`${what}: layer ${k} has per-step "steps" but the file has no "timesteps"`);
  }
  if (o.actQmax !== undefined && o.actQmax !== 127 && o.actQmax !== 255) throw new PrecisionError(`${what}: actQmax must be 127 or 255, got ${o.actQmax}`);
  if (o.weightQmax !== undefined && o.weightQmax !== 127 && o.weightQmax !== 63) throw new PrecisionError(`${what}: weightQmax must be 127 or 63, got ${o.weightQmax}`);
  return o;
}

export function readCalibration(file: string): Calibration {
  if (!fs.existsSync(file)) throw new MissingCalibrationError(file);
  let j: unknown;
  try {
    j = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new PrecisionError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return validateCalibration(j, file);
}

export function writeCalibration(file: string, c: Calibration): void {
  validateCalibration(c, file);
  fs.writeFileSync(file, calibrationJson(c));
}

/** The file text: indented JSON, with each per-step array on one line (a layer's 50 ranges would take 200 lines). */
export function calibrationJson(c: Calibration): string {
  const compact: string[] = [];
  const text = JSON.stringify(
    c,
    (key, v) => {
      if ((key === "steps" || key === "timesteps") && Array.isArray(v)) {
        compact.push(JSON.stringify(v));
        return `\u0000${compact.length - 1}`;
      }
      return v;
    },
    1,
  );
  return text.replace(/"\\u0000(\d+)"/g, (_, i) => compact[Number(i)]) + "\n";
}

/** Where a unet folder's calibration file is looked for by default. */
export function defaultCalibrationPath(unetDir: string): string {
  return path.join(unetDir, CALIBRATION_FILE);
}

/** Activation params of a layer from a calibration, or an error naming the layer and the file. */
export function actParamsFor(cal: Calibration, layer: string, label: string): Required<ActQuantParams> {
  const r = cal.layers[layer];
  if (!r) throw new PrecisionError(`${label}: no activation range for layer ${layer} (the calibration was made for another model? re-run stepq calibrate)`);
  return actParamsFromRange(r.min, r.max, cal.actQmax ?? ACT_QMAX_DEFAULT, cal.weightQmax ?? 127);
}

/** A layer's activation params at each of the calibration's timesteps, or null without per-step ranges. */
export function stepActParamsFor(cal: Calibration, layer: string, label: string): Required<ActQuantParams>[] | null {
  if (!hasPerStepRanges(cal)) return null;
  const r = cal.layers[layer];
  if (!r?.steps) throw new PrecisionError(`${label}: no per-step activation ranges for layer ${layer} (the calibration was made for another model? re-run stepq calibrate --per-step)`);
  return r.steps.map((sr) => actParamsFromRange(sr.min, sr.max, cal.actQmax ?? ACT_QMAX_DEFAULT, cal.weightQmax ?? 127));
}

/**
 * The fixed activation range used for INT8 when there is no calibration and the values do not matter
 * (random-weight latency benchmarks only): [-8, 8].
 */
export const SYNTHETIC_ACT_RANGE: [number, number] = [-8, 8];
/** The activation / weight ranges of the synthetic INT8 layers: those a new calibration gets by default (quant.ts). */
export const SYNTHETIC_ACT_BITS = INT8_CALIBRATION_DEFAULT;

// ---------------------------------------------------------------------------------------------------
// stepq converted weights (weights-tools/convert.ts writes them; WeightStore reads them)

export const STEPQ_FORMAT = "stepq";
export const STEPQ_FORMAT_VERSION = "1";

/** File of a unet folder holding the converted weights of one precision. */
export function stepqWeightsName(p: Exclude<Precision, "fp32">): string {
  return `stepq-${p}.safetensors`;
}

/** Checks a converted file's metadata: format, version and precision. */
export function checkStepqMetadata(meta: Record<string, string>, want: Exclude<Precision, "fp32">, file: string): void {
  if (meta.format !== STEPQ_FORMAT) throw new PrecisionError(`${file}: not a stepq converted weights file (metadata format ${JSON.stringify(meta.format)})`);
  if (meta.stepq_format_version !== STEPQ_FORMAT_VERSION)
    throw new PrecisionError(`${file}: stepq weights format version ${meta.stepq_format_version}, this stepq reads ${STEPQ_FORMAT_VERSION} (re-run stepq convert)`);
  if (meta.precision !== want) throw new PrecisionError(`${file}: holds ${meta.precision} weights, expected ${want}`);
}

/** Whether a safetensors file's metadata marks it as stepq converted weights. */
export function isStepqFile(meta: Record<string, string>): boolean {
  return meta.format === STEPQ_FORMAT;
}

/** The f32 neighbour of x (x > 0) `steps` ulps away. */
function f32Step(x: number, steps: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] += steps;
  return f[0];
}

/**
 * f32 weights [out, per] that quantise (quantizeWeightsPerChannel: s = f32(max|w| / qmax), q = round(w / s))
 * to exactly the given q and per-channel scales: q * s, with every |q| = qmax entry set to an f32 m for
 * which f32(m / qmax) is s (such an m exists: s was made that way from the original weights). qmax: 127
 * (int8 weights) or 63 (7-bit weights). So INT8 layers
 * of a converted file go through the nn prepare functions (whatever packing the kernels use) and come out
 * bit-identical to the ones quantised from the original checkpoint, with no calibration needed.
 */
export function weightsForQuantized(q: Int8Array, scales: Float32Array, out: number, per: number, qmax = 127): Float32Array {
  if (q.length !== out * per || scales.length !== out) throw new RangeError(`weightsForQuantized: ${q.length} weights / ${scales.length} scales for [${out}, ${per}]`);
  const w = new Float32Array(q.length);
  for (let o = 0; o < out; o++) {
    const s = scales[o];
    if (!(s > 0) || !Number.isFinite(s)) throw new RangeError(`weightsForQuantized: channel ${o} has scale ${s}`);
    let hasMax = false;
    for (let k = 0; k < per; k++) if (q[o * per + k] === qmax || q[o * per + k] === -qmax) hasMax = true;
    if (!hasMax) {
      // only an all-zero channel (scale 1) has no +-qmax entry
      for (let k = 0; k < per; k++) if (q[o * per + k] !== 0) throw new RangeError(`weightsForQuantized: channel ${o} has no +-${qmax} entry: not symmetric per-channel with range ${qmax}`);
      if (s !== 1) throw new RangeError(`weightsForQuantized: all-zero channel ${o} with scale ${s} (expected 1)`);
      continue;
    }
    const c = Math.fround(qmax * s);
    let m = NaN;
    for (let d = 0; d <= 8 && m !== m; d++)
      for (const cand of d ? [f32Step(c, d), f32Step(c, -d)] : [c]) if (Math.fround(cand / qmax) === s) { m = cand; break; }
    if (m !== m) throw new RangeError(`weightsForQuantized: no f32 maximum gives scale ${s} for channel ${o}`);
    for (let k = 0; k < per; k++) {
      const v = q[o * per + k];
      w[o * per + k] = v === qmax ? m : v === -qmax ? -m : Math.fround(v * s);
    }
  }
  return w;
}
