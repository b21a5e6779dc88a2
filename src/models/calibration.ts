// Calibration files: per-layer input activation ranges, which INT8 layers need. The format, the observer that
// records them (running min/max, or moving-average min/max as torch's MovingAverageMinMaxObserver), reading
// and writing, and the error that names the missing file and the command that makes it.
//
// Per-timestep ranges (`stepq calibrate --per-step`, optional in the same format version 1): besides its global
// range, each layer has one range per calibrated timestep (`timesteps: number[]` at the top, per layer
// `steps: {min, max}[]` aligned with it; running min/max over the prompts of the UNet calls at that timestep).
// Readers that ignore the fields use the global ranges, which is still correct, so the version stays 1.
// Converted int8 files hold one range per layer: stepq convert refuses per-step files.
import type { Tensor } from "../runtime/tensor.ts";
import { ACT_QMAX_DEFAULT, INT8_CALIBRATION_DEFAULT, actParamsFromRange, type ActQuantParams } from "../nn/quant.ts";
import { readJsonObject } from "../io/json.ts";
import { fileExists, joinLocation } from "../io/source.ts";
import { writeFileAtomic } from "../io/files.ts";
import { PrecisionError } from "./precision.ts";

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
  /** "ema-minmax" (moving-average min/max), "minmax" (running extremes) or "mse" (the range of least quantisation MSE). */
  type: "ema-minmax" | "minmax" | "mse";
  /** EMA: range = momentum * range + (1 - momentum) * this call's range (first call initialises). */
  momentum?: number;
  /** mse: histogram bins over each layer's running min/max. */
  bins?: number;
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

/** Bins of the histograms the "mse" observer searches (over each layer's running min/max). */
export const MSE_HISTOGRAM_BINS = 2048;

/**
 * The activation range [lo, hi] (lo <= 0 <= hi, so zero stays exact) of least expected quantisation error for
 * the values a histogram over [min, max] counts: rounding noise s^2 / 12 inside (s = (hi - lo) / qmax) plus the
 * squared clipping error outside, each bin at its centre. Candidates are every second bin edge; min/max itself
 * is one, so the result never has a larger error than it. Returns the error of both, per value.
 */
export function mseRange(hist: ArrayLike<number>, min: number, max: number, qmax: number): { min: number; max: number; mse: number; minmaxMse: number } {
  const bins = hist.length;
  if (!(max > min)) return { min, max, mse: 0, minmaxMse: 0 };
  const w = (max - min) / bins;
  // prefix sums of count, count * x and count * x^2 make each candidate O(1)
  const P0 = new Float64Array(bins + 1), P1 = new Float64Array(bins + 1), P2 = new Float64Array(bins + 1);
  for (let b = 0; b < bins; b++) {
    const x = min + (b + 0.5) * w;
    P0[b + 1] = P0[b] + hist[b];
    P1[b + 1] = P1[b] + hist[b] * x;
    P2[b + 1] = P2[b] + hist[b] * x * x;
  }
  const total = P0[bins];
  if (!(total > 0)) return { min, max, mse: 0, minmaxMse: 0 };
  const edge = (a: number) => (a === bins ? max : min + a * w);
  const err = (a: number, b: number) => {
    const lo = edge(a), hi = edge(b);
    const s = (hi - lo) / qmax;
    const below = P2[a] - 2 * lo * P1[a] + lo * lo * P0[a];
    const above = P2[bins] - P2[b] - 2 * hi * (P1[bins] - P1[b]) + hi * hi * (P0[bins] - P0[b]);
    return (below + above + ((P0[b] - P0[a]) * s * s) / 12) / total;
  };
  const zeroBin = Math.max(0, Math.min(bins, Math.round(-min / w)));
  const minmaxMse = err(0, bins);
  let best = { e: minmaxMse, a: 0, b: bins };
  const tryRange = (a: number, b: number) => {
    if (b <= a) return;
    const e = err(a, b);
    if (e < best.e) best = { e, a, b };
  };
  for (let a = 0; a <= zeroBin; a += 2) {
    for (let b = Math.max(zeroBin, a + 1); b < bins; b += 2) tryRange(a, b);
    tryRange(a, bins);
  }
  return { min: Math.min(0, edge(best.a)), max: Math.max(0, edge(best.b)), mse: best.e, minmaxMse };
}

/**
 * The "mse" observer's second pass: a histogram of each layer's input over its running min/max (from a first,
 * min/max pass over the same UNet calls), then per layer the range mseRange picks; with perStep also one
 * histogram per timestep (same bins: a call's counts go to its timestep at endCall), each searched the same way.
 */
export class HistogramObserver {
  private hists = new Map<string, Float64Array>();
  /** Per-step: this call's counts per layer, moved to its timestep's histogram at endCall (the timestep is known only then). */
  private pending = new Map<string, Uint32Array>();
  /** Per-step: timestep -> layer -> counts (Uint32: SD-size models have ~700 layers x 50 steps of them). */
  private stepHists = new Map<number, Map<string, Uint32Array>>();

  constructor(
    private readonly ranges: Record<string, LayerRange>,
    readonly bins = MSE_HISTOGRAM_BINS,
    readonly perStep = false,
  ) {}

  observe(layer: string, x: Tensor): void {
    const r = this.ranges[layer];
    if (!r) throw new PrecisionError(`mse calibration: layer ${layer} was not seen by the min/max pass`);
    let h = this.hists.get(layer);
    if (!h) this.hists.set(layer, (h = new Float64Array(this.bins)));
    let p = this.pending.get(layer);
    if (this.perStep && !p) this.pending.set(layer, (p = new Uint32Array(this.bins)));
    const v = x.f32();
    const k = r.max > r.min ? this.bins / (r.max - r.min) : 0;
    const top = this.bins - 1;
    for (let i = 0; i < v.length; i++) {
      let b = Math.floor((v[i] - r.min) * k);
      b = b < 0 ? 0 : b > top ? top : b;
      h[b]++;
      if (p) p[b]++;
    }
  }

  /** Ends one UNet call: per step, its counts go to the call's timestep's histograms. */
  endCall(timestep?: number): void {
    if (!this.perStep || !this.pending.size) return;
    if (timestep === undefined || !Number.isFinite(timestep)) throw new PrecisionError(`per-step calibration: endCall needs the call's timestep, got ${timestep}`);
    let m = this.stepHists.get(timestep);
    if (!m) this.stepHists.set(timestep, (m = new Map()));
    for (const [k, p] of this.pending) {
      const sh = m.get(k);
      if (sh) for (let b = 0; b < this.bins; b++) sh[b] += p[b];
      else m.set(k, p.slice());
      p.fill(0);
    }
  }

  /**
   * The min/max pass's ranges with min/max (and, per step, each step's range, for the timesteps in `timesteps`'
   * order) replaced by the least-MSE range for activations 0..qmax.
   */
  layers(qmax: number, timesteps?: readonly number[]): Record<string, LayerRange> {
    const out: Record<string, LayerRange> = {};
    for (const [k, r] of Object.entries(this.ranges)) {
      const h = this.hists.get(k);
      if (!h) throw new PrecisionError(`mse calibration: layer ${k} was not observed by the histogram pass`);
      const m = mseRange(h, r.min, r.max, qmax);
      out[k] = { ...r, min: m.min, max: m.max };
      if (this.perStep) {
        if (!timesteps) throw new PrecisionError("per-step mse calibration: the timesteps' order is needed");
        out[k].steps = timesteps.map((t) => {
          const sh = this.stepHists.get(t)?.get(k);
          if (!sh) throw new PrecisionError(`per-step calibration: layer ${k} was not observed at timestep ${t}`);
          const s = mseRange(sh, r.min, r.max, qmax);
          return { min: s.min, max: s.max };
        });
      }
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

/** Reads and validates a calibration file (a path or URL). Calibration files of SD-size models are a few MB. */
export async function readCalibration(file: string): Promise<Calibration> {
  if (!(await fileExists(file))) throw new MissingCalibrationError(file);
  return validateCalibration(await readJsonObject(file, PrecisionError, 256 * 1024 * 1024), file);
}

/** Writes a calibration file (validated first; atomically). Node/Deno. */
export function writeCalibration(file: string, c: Calibration): void {
  validateCalibration(c, file);
  writeFileAtomic(file, calibrationJson(c));
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
  return joinLocation(unetDir, CALIBRATION_FILE);
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

