// Optimizers and schedules over a ParameterSet: AdamW (torch.optim.AdamW's arithmetic), an exponential
// moving average of the weights (diffusers EMAModel's decay schedule), constant and cosine learning rates.
// State lives in host memory (Float32Array per parameter), in the parameters' order, so a checkpoint can
// save and restore it exactly.
import type { ParameterSet } from "./params.ts";

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/**
 * torch.optim.AdamW (amsgrad off, maximize off): per parameter p with gradient g at step t,
 *   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * in the same order of operations, rounded to f32 where torch stores f32.
 */
export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  lr: number;
  /** Steps taken. */
  step = 0;
  readonly m: Float32Array[];
  readonly v: Float32Array[];

  constructor(
    readonly params: ParameterSet,
    o: AdamWOptions,
  ) {
    this.lr = o.lr;
    this.beta1 = o.beta1 ?? 0.9;
    this.beta2 = o.beta2 ?? 0.999;
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 1e-2;
    this.m = params.all.map((p) => new Float32Array(p.value.size));
    this.v = params.all.map((p) => new Float32Array(p.value.size));
  }

  /** One update of every parameter from its .grad (gradients are left as they are). */
  update(): void {
    this.step++;
    const { beta1: b1, beta2: b2, eps, lr, weightDecay: wd } = this;
    const f = Math.fround;
    const bc1 = 1 - b1 ** this.step;
    const bc2 = 1 - b2 ** this.step;
    const stepSize = lr / bc1;
    const bc2Sqrt = Math.sqrt(bc2);
    const decay = f(1 - lr * wd);
    this.params.all.forEach((p, i) => {
      const w = p.value.f32();
      const g = p.grad.f32();
      const m = this.m[i];
      const v = this.v[i];
      for (let j = 0; j < w.length; j++) {
        const gj = g[j];
        w[j] = f(w[j] * decay);
        m[j] = f(f(m[j] * b1) + f(gj * (1 - b1)));
        v[j] = f(f(v[j] * b2) + f(f(gj * gj) * (1 - b2)));
        const denom = f(f(Math.sqrt(v[j]) / bc2Sqrt) + eps);
        w[j] = f(w[j] - f(stepSize * f(m[j] / denom)));
      }
    });
  }
}

/**
 * Exponential moving average of the parameters, as diffusers' EMAModel (update_after_step 0, no warmup
 * power): at optimisation step n the decay is min(maxDecay, (1 + n') / (10 + n')) with n' = n - 1, and 0 at
 * the first step (the average starts as the weights).
 */
export class Ema {
  readonly shadow: Float32Array[];
  updates = 0;

  constructor(
    readonly params: ParameterSet,
    readonly maxDecay = 0.9999,
  ) {
    this.shadow = params.all.map((p) => p.value.f32().slice());
  }

  decayAt(updates: number): number {
    const s = Math.max(0, updates - 1);
    return s <= 0 ? 0 : Math.min(this.maxDecay, (1 + s) / (10 + s));
  }

  /** Folds the current parameter values in (call after each optimizer step). */
  update(): void {
    this.updates++;
    const d = this.decayAt(this.updates);
    const one = 1 - d;
    this.params.all.forEach((p, i) => {
      const w = p.value.f32();
      const s = this.shadow[i];
      // diffusers: s_param.sub_((1 - decay) * (s_param - param))
      for (let j = 0; j < w.length; j++) s[j] = Math.fround(s[j] - Math.fround(one * Math.fround(s[j] - w[j])));
    });
  }

  /** Copies the averaged values into the parameters (for export). */
  copyTo(): void {
    this.params.all.forEach((p, i) => p.value.f32().set(this.shadow[i]));
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
