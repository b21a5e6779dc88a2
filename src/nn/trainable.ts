// Trainable conv/linear layers (quantisation-aware training, src/train): an f32 master weight (torch layout)
// and bias the optimizer updates, the packed f32 copy the float forward runs, and for a fake-quantised
// student layer the engine INT8 weight re-quantised from the master weight (src/nn/backward/fakequant.ts:
// its forward IS the engine's INT8 op, so a trained student computes what INT8 inference will) with a
// moving-average activation observer. linear() and conv2d() run them (kind "train") and record their
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

/** The fake quantisation of a student layer: the INT8 weight and the observed input range. */
export interface TrainableQuant<F> {
  readonly fq: F;
  /** Largest quantised activation (127: 7-bit, 255: u8), fixed when the layer is made. */
  readonly qmax: number;
  /** The weights' range [-weightQmax, weightQmax] (127: int8, 63: 7-bit), fixed when the layer is made. */
  readonly weightQmax: number;
  /** The moving-average input range (null until the first observation). */
  range: Range | null;
  /** Update the range from each forward's input (calibration and training; off for evaluation). */
  observe: boolean;
  /** Averaging constant of the observer (torch.ao: 0.01). */
  averaging: number;
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
  quant?: { qmax: number; weightQmax?: number; range?: Range | null; averaging?: number };
}

function quantState<F>(fq: F, o: NonNullable<TrainableOptions["quant"]>): TrainableQuant<F> {
  return { fq, qmax: o.qmax, weightQmax: o.weightQmax ?? WEIGHT_QMAX_DEFAULT, range: o.range ?? null, observe: true, averaging: o.averaging ?? OBSERVER_AVERAGING_CONSTANT };
}

/** Activation params for a range (a degenerate start range until the observer has seen data). */
function actOf(q: { qmax: number; weightQmax?: number; range: Range | null }): ActQuantParams {
  const wq = q.weightQmax ?? WEIGHT_QMAX_DEFAULT;
  return q.range ? actParamsFromRange(q.range.min, q.range.max, q.qmax, wq) : actParamsFromRange(-1, 1, q.qmax, wq);
}

/** A trainable linear layer from master weight [out, inF] and bias [out] (persistent f32 tensors the caller registers as parameters). */
export function createTrainableLinear(eng: Engine, name: string, weight: Tensor, bias: Tensor | null, opts: TrainableOptions = {}): TrainableLinear {
  const [out, inF] = [weight.shape[0], weight.size / weight.shape[0]];
  const packed: PackedLinearF32 = eng.persistent(() => ({ out, inF, packed: eng.zeros([panelsFor(out), inF, GEMM_NR]), bias: eng.zeros([panelsFor(out) * GEMM_NR]) }));
  repackLinearWeight(weight, bias, packed);
  const quant = opts.quant ? quantState(createFakeQuantLinear(eng, out, inF, actOf({ ...opts.quant, range: opts.quant.range ?? null })), opts.quant) : null;
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
  const quant = opts.quant ? quantState(createFakeQuantConv2d(eng, geometry, actOf({ ...opts.quant, range: opts.quant.range ?? null })), opts.quant) : null;
  const w: TrainableConv = { kind: "train", name, weight, bias, ...geometry, packed, quant };
  if (quant) updateFakeQuantConv2d(quant.fq, weight, bias, weightScalesOf(weight, shape.cout, quant.weightQmax));
  return w;
}

/** Brings the packed and quantised copies in step with the master weights (after an optimizer step). */
export function refreshTrainable(w: TrainableLinear | TrainableConv): void {
  if ("inF" in w) {
    repackLinearWeight(w.weight, w.bias, w.packed);
    if (w.quant) updateFakeQuantLinear(w.quant.fq, w.weight, w.bias, weightScalesOf(w.weight, w.out, w.quant.weightQmax));
  } else {
    repackConv2dWeight(w.weight, w.bias, w.packed);
    if (w.quant) updateFakeQuantConv2d(w.quant.fq, w.weight, w.bias, weightScalesOf(w.weight, w.cout, w.quant.weightQmax));
  }
}

/**
 * The activation params a student layer uses for input x: the observer folds x's range in first (as
 * torch.ao's FakeQuantize observes, then quantises) unless it is off or the op is being recomputed.
 */
export function observeInput(q: TrainableQuant<FakeQuantLinear | FakeQuantConv2d>, x: Tensor, recomputing: boolean): ActQuantParams {
  if (q.observe && !recomputing) q.range = movingAverageMinMax(q.range, tensorRange(x), q.averaging);
  return actOf(q);
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
  rec?.record({
    name: `qlinear ${w.name}`,
    inputs: [x, w.weight, w.bias],
    outputs: [y],
    saved: [x],
    backward: ([dy]) => {
      setInt8ActParams(q.fq.int8, act); // the params this forward ran with
      const dw = eng.empty(w.weight.shape);
      const db = w.bias ? eng.empty(w.bias.shape) : null;
      const r = fakeQuantLinearBackward(x, w.weight, dy, q.fq, { dw, db, needInput: rec.requiresGrad(x) });
      return [r.dx, dw, db];
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
  rec?.record({
    name: `qconv ${w.name}`,
    inputs: [x, w.weight, w.bias],
    outputs: [y],
    saved: [x],
    backward: ([dy]) => {
      setInt8ActParams(q.fq.int8, act);
      const dw = eng.empty(w.weight.shape);
      const db = w.bias ? eng.empty(w.bias.shape) : null;
      const r = fakeQuantConv2dBackward(x, w.weight, dy, q.fq, { dw, db, needInput: rec.requiresGrad(x) });
      return [r.dx, dw, db];
    },
  });
  return y;
}

/** Frees the packed and quantised copies (the master tensors belong to the parameter set). */
export function freeTrainable(w: TrainableLinear | TrainableConv): void {
  freeWeightTensors(w.packed);
  if (w.quant) freeFakeQuant(w.quant.fq);
}
