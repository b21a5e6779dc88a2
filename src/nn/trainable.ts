// Trainable conv/linear layers (quantisation-aware training, src/train): an f32 master weight (torch layout)
// and bias the optimizer updates, the packed f32 copy the float forward runs, and for a fake-quantised
// student layer the engine INT8 weight re-quantised from the master weight (src/nn/backward/fakequant.ts:
// its forward IS the engine's INT8 op, so a trained student computes what INT8 inference will) with a
// moving-average activation observer (optionally per sampler step) or learned scales (LSQ / LSQ+). linear() and conv2d() run them (kind "train") and record their
// backward on the engine's gradient recorder. After every optimizer step call refreshTrainable().
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { GEMM_NR, freeWeightTensors, pad4, panelsFor, type ConvGeometry, type ConvShape, type Padding4 } from "./pack.ts";
import { actParamsFromRange, WEIGHT_QMAX_DEFAULT, type ActQuantParams } from "./quant.ts";
import { setInt8ActParams } from "./int8.ts";
import { runConv2dF32, runLinearF32, type PackedConvF32, type PackedLinearF32 } from "./gemm.ts";
import { recorder } from "./record.ts";
import { linearBackwardInput, linearBackwardWeight, repackLinearWeight } from "./backward/linear.ts";
import { conv2dBackwardInput, conv2dBackwardWeight, repackConv2dWeight } from "./backward/conv.ts";
import {
  createFakeQuantConv2d,
  createFakeQuantLinear,
  fakeQuantConv2d,
  fakeQuantConv2dBackward,
  fakeQuantLinear,
  fakeQuantLinearBackward,
  freeFakeQuant,
  movingAverageMinMax,
  OBSERVER_AVERAGING_CONSTANT,
  tensorRange,
  updateFakeQuantConv2d,
  updateFakeQuantLinear,
  weightScalesOf,
  type FakeQuantConv2d,
  type FakeQuantLinear,
  type Range,
} from "./backward/fakequant.ts";

/**
 * The fake quantisation of a student layer: the INT8 weight, the observed input range(s) and, with learned
 * scales (LSQ), the scale parameters.
 *
 * Per-step ranges (setStepRanges): besides the global range, one range per sampler timestep of a table the
 * trainer owns; `step` (set by the trainer before each forward, -1 for none) picks the one a forward uses,
 * as the engine's per-step INT8 path picks its calibrated range per UNet call.
 *
 * Learned scales (learnScales): the activation scale and LSQ+ offset beta (one row, or one per step) and the
 * per-channel weight scales become parameters: the forward quantises with them (zero point = clamp(round(
 * -beta / scale), 0, qmax), the engine's integer zero point) and the backward returns their LSQ gradients
 * (src/nn/backward/fakequant.ts) as the gradients of these tensors. Observers are off then.
 */
export interface TrainableQuant<F> {
  readonly fq: F;
  /** Largest quantised activation (127: 7-bit, 255: u8), fixed when the layer is made. */
  readonly qmax: number;
  /** The weights' range [-weightQmax, weightQmax] (127: int8, 63: 7-bit), fixed when the layer is made. */
  readonly weightQmax: number;
  /** The moving-average input range over every forward (null until the first observation). */
  range: Range | null;
  /** Per-step ranges (null: none), indexed by `step`. */
  stepRanges: (Range | null)[] | null;
  /** The step of the next forward (index into stepRanges / learned rows), or -1: the global range. */
  step: number;
  /** Update the range from each forward's input (calibration and training; off for evaluation). */
  observe: boolean;
  /** Averaging constant of the observer (torch.ao: 0.01). */
  averaging: number;
  /**
   * "ema": torch.ao's moving-average min/max (the paper's recipe); "minmax": the running min/max over every
   * observation (as stepq calibrate's default observer, torch's MinMaxObserver).
   */
  observer: "ema" | "minmax";
  /** LSQ parameters, or null: observer ranges and max|w| weight scales. */
  learned: LearnedScales | null;
}

/** Learned quantisation scales of a student layer (persistent f32 tensors the trainer registers as parameters). */
export interface LearnedScales {
  /** [rows, 2]: activation scale and LSQ+ offset beta (= -zeroPoint * scale) per row (1 row, or one per step). */
  readonly act: Tensor;
  /** [N]: per-output-channel weight scales. */
  readonly weight: Tensor;
}

interface TrainableCommon {
  readonly kind: "train";
  /** Checkpoint name of the layer ("down_blocks.0.resnets.0.conv1"). */
  readonly name: string;
  /** f32 master weight, torch layout. */
  readonly weight: Tensor;
  /** f32 master bias, or null. */
  readonly bias: Tensor | null;
}

export interface TrainableLinear extends TrainableCommon {
  readonly out: number;
  readonly inF: number;
  /** The packed copy the float forward runs (refreshTrainable keeps it in step with the master weight). */
  readonly packed: PackedLinearF32;
  readonly quant: TrainableQuant<FakeQuantLinear> | null;
}

export interface TrainableConv extends TrainableCommon, ConvGeometry {
  readonly packed: PackedConvF32;
  readonly quant: TrainableQuant<FakeQuantConv2d> | null;
}

export interface TrainableOptions {
  /**
   * Fake-quantise the layer (a QAT student) with activations of 0..qmax and weights of [-weightQmax,
   * weightQmax] (default 127: int8); absent: a float layer.
   */
  quant?: { qmax: number; weightQmax?: number; range?: Range | null; averaging?: number; observer?: "ema" | "minmax" };
}

function quantState<F>(fq: F, o: NonNullable<TrainableOptions["quant"]>): TrainableQuant<F> {
  return {
    fq, qmax: o.qmax, weightQmax: o.weightQmax ?? WEIGHT_QMAX_DEFAULT, range: o.range ?? null, stepRanges: null, step: -1,
    observe: true, averaging: o.averaging ?? OBSERVER_AVERAGING_CONSTANT, observer: o.observer ?? "ema", learned: null,
  };
}

/** Activation params for a range (a degenerate start range until the observer has seen data). */
function actOfRange(range: Range | null, qmax: number, wq: number): ActQuantParams {
  return range ? actParamsFromRange(range.min, range.max, qmax, wq) : actParamsFromRange(-1, 1, qmax, wq);
}

/** Activation params from a learned (scale, beta): the engine's integer zero point nearest -beta / scale. */
export function actFromLearned(scale: number, beta: number, qmax: number, wq: number): ActQuantParams {
  const s = Math.fround(scale);
  const z = Math.round(-beta / s);
  return { scale: s, zeroPoint: Math.min(qmax, Math.max(0, Number.isFinite(z) ? z : 0)), qmax, weightQmax: wq };
}

function checkStep(q: TrainableQuant<unknown>, rows: number): number {
  if (q.step >= rows) throw new RangeError(`student layer: step ${q.step} but ${rows} per-step rows`);
  return q.step;
}

/** The activation params a student layer quantises its input with now (its step's, else the global ones). */
export function currentActParams(q: TrainableQuant<unknown>): ActQuantParams {
  if (q.learned) {
    const a = q.learned.act.f32();
    const rows = a.length / 2;
    const r = rows > 1 ? checkStep(q, rows) : 0;
    if (r < 0) throw new RangeError("student layer: learned per-step scales need a step (set quant.step)");
    return actFromLearned(a[2 * r], a[2 * r + 1], q.qmax, q.weightQmax);
  }
  if (q.stepRanges && q.step >= 0) return actOfRange(q.stepRanges[checkStep(q, q.stepRanges.length)] ?? q.range, q.qmax, q.weightQmax);
  return actOfRange(q.range, q.qmax, q.weightQmax);
}

/** Gives a student layer `steps` per-step ranges (all unobserved; the global range stays as it is). */
export function setStepRanges(q: TrainableQuant<unknown>, steps: number): void {
  q.stepRanges = new Array(steps).fill(null);
}

/**
 * Turns a student layer's scales into learned parameters, initialised from its current state: each activation
 * row from its range (the step's, or the global one) through the engine's formula, the weight scales max|w| / wq.
 * Observers go off. Returns the new tensors (persistent; the caller registers them as parameters).
 */
export function learnScales(w: TrainableLinear | TrainableConv): LearnedScales {
  const q = w.quant;
  if (!q) throw new Error(`${w.name}: not a fake-quantised layer`);
  if (q.learned) return q.learned;
  const eng = w.weight.engine;
  const rows = q.stepRanges ? q.stepRanges.length : 1;
  const act = new Float32Array(2 * rows);
  for (let r = 0; r < rows; r++) {
    const a = actOfRange(q.stepRanges ? (q.stepRanges[r] ?? q.range) : q.range, q.qmax, q.weightQmax);
    act[2 * r] = a.scale;
    act[2 * r + 1] = Math.fround(-a.zeroPoint * a.scale);
  }
  const N = "inF" in w ? w.out : w.cout;
  const learned = eng.persistent(() => ({ act: eng.fromArray(act, [rows, 2]), weight: eng.fromArray(weightScalesOf(w.weight, N, q.weightQmax), [N]) }));
  q.learned = learned;
  q.observe = false;
  return learned;
}

/** Keeps learned scales valid after an optimizer step: scales at least `minScale` (they must stay positive). */
export function clampLearnedScales(q: TrainableQuant<unknown>, minScale = 1e-8): void {
  if (!q.learned) return;
  const a = q.learned.act.f32();
  for (let r = 0; r < a.length; r += 2) if (!(a[r] >= minScale)) a[r] = minScale;
  const ws = q.learned.weight.f32();
  for (let i = 0; i < ws.length; i++) if (!(ws[i] >= minScale)) ws[i] = minScale;
}

/** The weight scales a student layer quantises with: learned, or the engine's max|w| / wq of the master weight. */
export function currentWeightScales(w: TrainableLinear | TrainableConv): Float32Array {
  const q = w.quant!;
  if (q.learned) return q.learned.weight.f32().slice();
  return weightScalesOf(w.weight, "inF" in w ? w.out : w.cout, q.weightQmax);
}

/** A trainable linear layer from master weight [out, inF] and bias [out] (persistent f32 tensors the caller registers as parameters). */
export function createTrainableLinear(eng: Engine, name: string, weight: Tensor, bias: Tensor | null, opts: TrainableOptions = {}): TrainableLinear {
  const [out, inF] = [weight.shape[0], weight.size / weight.shape[0]];
  const packed: PackedLinearF32 = eng.persistent(() => ({ out, inF, packed: eng.zeros([panelsFor(out), inF, GEMM_NR]), bias: eng.zeros([panelsFor(out) * GEMM_NR]) }));
  repackLinearWeight(weight, bias, packed);
  const quant = opts.quant ? quantState(createFakeQuantLinear(eng, out, inF, actOfRange(opts.quant.range ?? null, opts.quant.qmax, opts.quant.weightQmax ?? WEIGHT_QMAX_DEFAULT)), opts.quant) : null;
  const w: TrainableLinear = { kind: "train", name, weight, bias, out, inF, packed, quant };
  if (quant) updateFakeQuantLinear(quant.fq, weight, bias, weightScalesOf(weight, out, quant.weightQmax));
  return w;
}

/** A trainable conv layer from master weight [cout, cin, kh, kw] and bias [cout]. */
export function createTrainableConv(
  eng: Engine, name: string, weight: Tensor, bias: Tensor | null, shape: ConvShape, conv: { stride?: number; padding?: number }, opts: TrainableOptions = {},
): TrainableConv {
  const stride = conv.stride ?? 1;
  const padding = pad4(conv.padding ?? 0, name);
  const geometry = { ...shape, stride, padding };
  const K = shape.kh * shape.kw * shape.cin;
  const packed: PackedConvF32 = eng.persistent(() => ({
    ...geometry,
    packed: eng.zeros([panelsFor(shape.cout), K, GEMM_NR]),
    bias: eng.zeros([panelsFor(shape.cout) * GEMM_NR]),
    zero: eng.zeros([shape.kw * shape.cin]),
  }));
  repackConv2dWeight(weight, bias, packed);
  const quant = opts.quant ? quantState(createFakeQuantConv2d(eng, geometry, actOfRange(opts.quant.range ?? null, opts.quant.qmax, opts.quant.weightQmax ?? WEIGHT_QMAX_DEFAULT)), opts.quant) : null;
  const w: TrainableConv = { kind: "train", name, weight, bias, ...geometry, packed, quant };
  if (quant) updateFakeQuantConv2d(quant.fq, weight, bias, weightScalesOf(weight, shape.cout, quant.weightQmax));
  return w;
}

/** Brings the packed and quantised copies in step with the master weights (and learned scales) after an optimizer step. */
export function refreshTrainable(w: TrainableLinear | TrainableConv): void {
  if ("inF" in w) {
    repackLinearWeight(w.weight, w.bias, w.packed);
    if (w.quant) updateFakeQuantLinear(w.quant.fq, w.weight, w.bias, currentWeightScales(w));
  } else {
    repackConv2dWeight(w.weight, w.bias, w.packed);
    if (w.quant) updateFakeQuantConv2d(w.quant.fq, w.weight, w.bias, currentWeightScales(w));
  }
}

/**
 * The activation params a student layer uses for input x: the observer folds x's range in first (as
 * torch.ao's FakeQuantize observes, then quantises; with per-step ranges into the global and the step's
 * range) unless it is off or the op is being recomputed.
 */
export function observeInput(q: TrainableQuant<FakeQuantLinear | FakeQuantConv2d>, x: Tensor, recomputing: boolean): ActQuantParams {
  if (q.observe && !recomputing) {
    const r = tensorRange(x);
    const fold = (prev: Range | null) => (q.observer === "minmax" ? runningMinMax(prev, r) : movingAverageMinMax(prev, r, q.averaging));
    q.range = fold(q.range);
    if (q.stepRanges && q.step >= 0) {
      const k = checkStep(q, q.stepRanges.length);
      q.stepRanges[k] = fold(q.stepRanges[k]);
    }
  }
  return currentActParams(q);
}

/** The running min/max observer: the extremes of every observation so far (NaN ranges ignored). */
export function runningMinMax(prev: Range | null, cur: Range): Range {
  if (!prev) return { min: Math.fround(cur.min), max: Math.fround(cur.max) };
  return { min: Math.min(prev.min, Math.fround(cur.min)), max: Math.max(prev.max, Math.fround(cur.max)) };
}

/** The learned scales' gradients of one backward as tensors shaped like them (the step's row of act only). */
function learnedGrads(q: TrainableQuant<unknown>, step: number, res: { weightScaleGrads?: Float32Array; act?: { scale: number; offset: number } }): [Tensor, Tensor] {
  const L = q.learned!;
  const eng = L.act.engine;
  const da = eng.zeros(L.act.shape);
  const row = L.act.shape[0] > 1 ? step : 0;
  const v = da.f32();
  v[2 * row] = res.act!.scale;
  v[2 * row + 1] = res.act!.offset;
  return [da, eng.fromArray(res.weightScaleGrads!, L.weight.shape)];
}

// ---------------------------------------------------------------------------------------------
// forward ops (linear() and conv2d() dispatch here) with their backward

/** y = x W^T + b: the float layer, or the student's INT8 op; records the backward on a gradient recorder. */
export function linearTrainable(x: Tensor, w: TrainableLinear): Tensor {
  const eng = x.engine;
  const rec = recorder(eng, x, w.weight, w.bias);
  const q = w.quant;
  if (!q) {
    const y = runLinearF32(x, w.packed);
    rec?.record({
      name: `linear ${w.name}`,
      inputs: [x, w.weight, w.bias],
      outputs: [y],
      saved: [x],
      backward: ([dy]) => {
        const dw = eng.empty(w.weight.shape);
        const db = w.bias ? eng.empty(w.bias.shape) : null;
        linearBackwardWeight(x, dy, dw, db);
        return [rec.requiresGrad(x) ? linearBackwardInput(dy, w.weight, w.out, w.inF) : null, dw, db];
      },
    });
    return y;
  }
  const act = observeInput(q, x, !!eng.grad?.recomputing);
  setInt8ActParams(q.fq.int8, act);
  const y = fakeQuantLinear(x, q.fq);
  const L = q.learned;
  const lrec = rec ?? (L ? recorder(eng, L.act, L.weight) : null);
  const step = q.step;
  lrec?.record({
    name: `qlinear ${w.name}`,
    inputs: L ? [x, w.weight, w.bias, L.act, L.weight] : [x, w.weight, w.bias],
    outputs: [y],
    saved: [x],
    backward: ([dy]) => {
      setInt8ActParams(q.fq.int8, act); // the params this forward ran with
      const dw = eng.empty(w.weight.shape);
      const db = w.bias ? eng.empty(w.bias.shape) : null;
      const r = fakeQuantLinearBackward(x, w.weight, dy, q.fq, { dw, db, needInput: lrec.requiresGrad(x), lsq: !!L });
      return L ? [r.dx, dw, db, ...learnedGrads(q, step, r)] : [r.dx, dw, db];
    },
  });
  return y;
}

/** conv(x, w) + b: the float layer, or the student's INT8 op; records the backward on a gradient recorder. */
export function conv2dTrainable(x: Tensor, w: TrainableConv, padding: Padding4): Tensor {
  const eng = x.engine;
  const rec = recorder(eng, x, w.weight, w.bias);
  const g = { cout: w.cout, cin: w.cin, kh: w.kh, kw: w.kw, stride: w.stride, padding };
  const q = w.quant;
  if (!q) {
    const y = runConv2dF32(x, w.packed, padding);
    rec?.record({
      name: `conv ${w.name}`,
      inputs: [x, w.weight, w.bias],
      outputs: [y],
      saved: [x],
      backward: ([dy]) => {
        const dw = eng.empty(w.weight.shape);
        const db = w.bias ? eng.empty(w.bias.shape) : null;
        conv2dBackwardWeight(x, dy, g, dw, db);
        return [rec.requiresGrad(x) ? conv2dBackwardInput(dy, w.weight, g, x.shape) : null, dw, db];
      },
    });
    return y;
  }
  if (padding.some((p, i) => p !== w.padding[i])) throw new Error(`conv2d ${w.name}: a quantised trainable conv runs with its own padding [${w.padding}], got [${padding}]`);
  const act = observeInput(q, x, !!eng.grad?.recomputing);
  setInt8ActParams(q.fq.int8, act);
  const y = fakeQuantConv2d(x, q.fq);
  const L = q.learned;
  const lrec = rec ?? (L ? recorder(eng, L.act, L.weight) : null);
  const step = q.step;
  lrec?.record({
    name: `qconv ${w.name}`,
    inputs: L ? [x, w.weight, w.bias, L.act, L.weight] : [x, w.weight, w.bias],
    outputs: [y],
    saved: [x],
    backward: ([dy]) => {
      setInt8ActParams(q.fq.int8, act);
      const dw = eng.empty(w.weight.shape);
      const db = w.bias ? eng.empty(w.bias.shape) : null;
      const r = fakeQuantConv2dBackward(x, w.weight, dy, q.fq, { dw, db, needInput: lrec.requiresGrad(x), lsq: !!L });
      return L ? [r.dx, dw, db, ...learnedGrads(q, step, r)] : [r.dx, dw, db];
    },
  });
  return y;
}

/** Frees the packed and quantised copies (the master tensors belong to the parameter set). */
export function freeTrainable(w: TrainableLinear | TrainableConv): void {
  freeWeightTensors(w.packed);
  if (w.quant) freeFakeQuant(w.quant.fq);
  if (w.quant?.learned) {
    w.quant.learned.act.free();
    w.quant.learned.weight.free();
    w.quant.learned = null;
  }
}
