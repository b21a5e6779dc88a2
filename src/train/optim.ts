// Optimizers and schedules over a ParameterSet: AdamW (torch.optim.AdamW's arithmetic), an exponential
// moving average of the weights (diffusers EMAModel's decay schedule), constant and cosine learning rates.
// State lives in engine memory (a persistent f32 tensor per parameter, updated by the kernels of
// assembly/optim.ts), in the parameters' order, so a checkpoint can save and restore it exactly.
import type { Tensor } from "../runtime/tensor.ts";
import type { AdamWConstants } from "../nn/reference/optim.ts";
import type { Parameter, ParameterSet } from "./params.ts";

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Which parameters get weight decay (default: all); e.g. not learned quantisation scales. */
  decays?: (p: Parameter) => boolean;
}

/**
 * torch.optim.AdamW (amsgrad off, maximize off): per parameter p with gradient g at step t,
 *   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * in the same order of operations, rounded to f32 where torch stores f32 (src/nn/reference/optim.ts), on the
 * engine (assembly/optim.ts: adamw_f32, threads split the elements). The moments m and v are engine tensors
 * (persistent), in the parameters' order, so a checkpoint can save and restore them exactly.
 */
export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  lr: number;
  /** Steps taken. */
  step = 0;
  readonly m: Tensor[];
  readonly v: Tensor[];
  private readonly decayMask: boolean[];

  constructor(
    readonly params: ParameterSet,
    o: AdamWOptions,
  ) {
    this.lr = o.lr;
    this.beta1 = o.beta1 ?? 0.9;
    this.beta2 = o.beta2 ?? 0.999;
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 1e-2;
    const eng = params.engine;
    this.m = eng.persistent(() => params.all.map((p) => eng.zeros(p.value.shape)));
    this.v = eng.persistent(() => params.all.map((p) => eng.zeros(p.value.shape)));
    this.decayMask = params.all.map((p) => (o.decays ? o.decays(p) : true));
  }

  /** The per-step constants of the update (see src/nn/reference/optim.ts) for parameter i. */
  constants(i: number): AdamWConstants {
    const t = this.step;
    return {
      decay: this.decayMask[i] ? Math.fround(1 - this.lr * this.weightDecay) : 1,
      b1: this.beta1,
      b2: this.beta2,
      eps: this.eps,
      stepSize: this.lr / (1 - this.beta1 ** t),
      bc2Sqrt: Math.sqrt(1 - this.beta2 ** t),
    };
  }

  /** One update of every parameter from its .grad (gradients are left as they are). */
  update(): void {
    this.step++;
    const eng = this.params.engine;
    this.params.all.forEach((p, i) => {
      const c = this.constants(i);
      for (const t of [p.value, p.grad, this.m[i], this.v[i]]) t.f32();
      if (p.value.size) eng.run("adamw_f32", p.value.ptr, p.grad.ptr, this.m[i].ptr, this.v[i].ptr, p.value.size, c.decay, c.b1, 1 - c.b1, c.b2, 1 - c.b2, c.bc2Sqrt, c.eps, c.stepSize);
    });
  }

  /** Frees the moments. */
  free(): void {
    for (const t of [...this.m, ...this.v]) t.free();
  }
}

/**
 * Exponential moving average of the parameters, as diffusers' EMAModel (update_after_step 0, no warmup
 * power): at optimisation step n the decay is min(maxDecay, (1 + n') / (10 + n')) with n' = n - 1, and 0 at
 * the first step (the average starts as the weights). The averages are engine tensors (ema_f32).
 */
export class Ema {
  readonly shadow: Tensor[];
  updates = 0;

  constructor(
    readonly params: ParameterSet,
    readonly maxDecay = 0.9999,
  ) {
    const eng = params.engine;
    this.shadow = eng.persistent(() => params.all.map((p) => eng.fromArray(p.value.f32(), p.value.shape)));
  }

  decayAt(updates: number): number {
    const s = Math.max(0, updates - 1);
    return s <= 0 ? 0 : Math.min(this.maxDecay, (1 + s) / (10 + s));
  }

  /** Folds the current parameter values in (call after each optimizer step). */
  update(): void {
    this.updates++;
    const d = this.decayAt(this.updates);
    const eng = this.params.engine;
    // diffusers: s_param.sub_((1 - decay) * (s_param - param))
    this.params.all.forEach((p, i) => {
      p.value.f32();
      this.shadow[i].f32();
      if (p.value.size) eng.run("ema_f32", this.shadow[i].ptr, p.value.ptr, p.value.size, 1 - d);
    });
  }

  /** Copies the averaged values into the parameters (for export). */
  copyTo(): void {
    this.params.all.forEach((p, i) => p.value.f32().set(this.shadow[i].f32()));
  }

  free(): void {
    for (const t of this.shadow) t.free();
  }
}

export type LrSchedule = "constant" | "cosine";

/** Learning rate at step (0-based) of total: constant, or cosine from lr down to minRatio * lr after `warmup` linear steps. */
export function learningRate(schedule: LrSchedule, lr: number, step: number, total: number, opts: { warmup?: number; minRatio?: number } = {}): number {
  const warm = opts.warmup ?? 0;
  if (step < warm) return (lr * (step + 1)) / warm;
  if (schedule === "constant") return lr;
  const minR = opts.minRatio ?? 0;
  const t = total <= warm ? 1 : Math.min(1, (step - warm) / (total - warm));
  return lr * (minR + (1 - minR) * 0.5 * (1 + Math.cos(Math.PI * t)));
}
