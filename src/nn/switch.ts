// Per-step precision at the op level: a "switch" weight holds several prepared variants of one layer
// (fp32 / bf16 / int8) and the op runs the one its PrecisionSelector (owned by the model, e.g. the UNet;
// see src/models/precision.ts) currently selects, so model code is the same at every precision.
import type { Tensor } from "../runtime/tensor.ts";
import { setInt8ActParams, type ConvWeightInt8, type LinearWeightInt8 } from "./int8.ts";
import type { ActQuantParams } from "./quant.ts";

/** The precisions a switch weight can hold. */
export type WeightPrecision = "fp32" | "bf16" | "int8";

/** Shared by every switch weight of a model: which variant runs, and an optional input observer (calibration). */
export interface PrecisionSelector {
  current: WeightPrecision;
  /** Called with the layer name and its f32 input before a switch weight runs (calibration); null/absent: nothing. */
  observe?: ((layer: string, x: Tensor) => void) | null;
  /**
   * Per-timestep INT8 activation ranges: the index of the current UNet call's timestep in the model's
   * calibrated timesteps (src/models/precision.ts setCallTimestep); -1 or absent: the global ranges.
   */
  stepIndex?: number;
  /**
   * Run the attention of the int8 steps on the INT8 kernels too (src/nn/attention-int8.ts) instead of f32;
   * default off: docs/quality.md and docs/performance.md measure both.
   */
  int8Attention?: boolean;
}

/** A switch weight's INT8 activation params per calibrated timestep (aligned with the model's list) and global. */
export interface Int8StepActs {
  readonly global: ActQuantParams;
  readonly steps: readonly ActQuantParams[];
}

/** A per-step weight (linear or conv): every loaded precision of one layer; the op runs variants[ctx.current]. */
export interface WeightSwitch<V extends object> {
  readonly kind: "switch";
  /** Checkpoint name of the layer (e.g. "down_blocks.0.attentions.0.proj_in"), for calibration and messages. */
  readonly name: string;
  readonly ctx: PrecisionSelector;
  readonly variants: V;
  /** Present when the calibration has per-timestep ranges: the int8 variant is re-prepared per call. */
  readonly int8Steps?: Int8StepActs;
}

/**
 * The variant of a switch weight its selector picks (after reporting the input to the observer, if any);
 * an int8 variant with per-timestep ranges is first set to the current call's timestep's params.
 */
export function selectVariant<S extends WeightSwitch<object>>(w: S, x: Tensor): NonNullable<S["variants"][keyof S["variants"]]> {
  const p = w.ctx.current;
  const v = (w.variants as Record<string, unknown>)[p] as NonNullable<S["variants"][keyof S["variants"]]> | undefined;
  if (!v) throw new Error(`layer ${w.name}: precision ${p} is not loaded (loaded: ${Object.keys(w.variants).join(", ")})`);
  w.ctx.observe?.(w.name, x);
  if (p === "int8" && w.int8Steps) {
    // stepIndex comes from the same calibration's timestep table (setCallTimestep), so it is in range
    const i = w.ctx.stepIndex ?? -1;
    setInt8ActParams(v as unknown as LinearWeightInt8 | ConvWeightInt8, i >= 0 ? w.int8Steps.steps[i] : w.int8Steps.global);
  }
  return v;
}
