// Per-step precision of a model's conv/linear layers (the paper: BF16 for the first and last k denoising
// steps, INT8 between).
//
// A model loaded with `precisions: [...]` gets, for every conv/linear layer, one "switch" weight (src/nn/switch.ts)
// holding each listed variant (fp32 / bf16 / int8) resident at once, plus one shared PrecisionContext that the
// model owns; linear()/conv2d() run the variant ctx.current selects, so the model's forward code is the same at
// every precision. Norms, attention matmuls, softmax and activations stay f32.
//
// With per-timestep INT8 ranges (calibration.ts), the context also keeps the calibrated timestep table:
// UNet.forward sets ctx.stepIndex to the nearest calibrated timestep (setCallTimestep) and each INT8 layer
// re-prepares its activation terms for that step's range when they differ from the last call's
// (src/nn/int8.ts setInt8ActParams).
import type { PrecisionSelector, WeightPrecision } from "../nn/switch.ts";

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

