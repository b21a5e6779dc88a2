// Plain TypeScript references for the optimizer kernels (assembly/optim.ts): AdamW with torch.optim.AdamW's
// order of operations, and the EMA of the weights as diffusers' EMAModel updates it, in f64 arithmetic
// rounded to f32 (Math.fround) wherever torch stores f32. The kernels must match them bit for bit.

const f = Math.fround;

export interface AdamWConstants {
  /** f32(1 - lr * weightDecay), or 1 without decay. */
  decay: number;
  b1: number;
  b2: number;
  eps: number;
  /** lr / (1 - b1^t). */
  stepSize: number;
  /** sqrt(1 - b2^t). */
  bc2Sqrt: number;
}

/**
 * One AdamW step in place (torch, amsgrad off): p -= lr * wd * p (as p *= decay); m = b1 m + (1 - b1) g;
 * v = b2 v + (1 - b2) g^2; p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
export function adamwRef(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, c: AdamWConstants): void {
  const { decay, b1, b2, eps, stepSize, bc2Sqrt } = c;
  for (let j = 0; j < w.length; j++) {
    const gj = g[j];
    w[j] = f(w[j] * decay);
    m[j] = f(f(m[j] * b1) + f(gj * (1 - b1)));
    v[j] = f(f(v[j] * b2) + f(f(gj * gj) * (1 - b2)));
    const denom = f(f(Math.sqrt(v[j]) / bc2Sqrt) + eps);
    w[j] = f(w[j] - f(stepSize * f(m[j] / denom)));
  }
}

/** diffusers EMAModel: s -= (1 - decay) * (s - w), in place. */
export function emaRef(s: Float32Array, w: Float32Array, decay: number): void {
  const one = 1 - decay;
  for (let j = 0; j < w.length; j++) s[j] = f(s[j] - f(one * f(s[j] - w[j])));
}
