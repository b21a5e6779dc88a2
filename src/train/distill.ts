// The arithmetic of a distillation step that is not an engine op: the DDPM forward process (diffusers'
// DDPMScheduler.add_noise, float32), the losses with their gradient with respect to the student's output
// (torch's F.mse_loss, reduction "mean"), classifier-free guidance on a [uncond rows, cond rows] batch and its
// backward, and the seeded random streams a training run draws from (one per step, so a resumed run draws
// exactly what an uninterrupted one does without saving generator state).
import { Rng } from "../runtime/random.ts";

const f = Math.fround;

/**
 * x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps per sample, as diffusers' add_noise computes it in float32
 * (alphas_cumprod[t] ** 0.5 and (1 - alphas_cumprod[t]) ** 0.5, then the two products and their sum).
 * x0 and noise hold `ts.length` samples of `per` values each (any layout, the same for both).
 */
export function addNoise(x0: Float32Array, noise: Float32Array, ts: readonly number[], alphasCumprod: Float32Array): Float32Array {
  const B = ts.length;
  if (x0.length !== noise.length || x0.length % B !== 0) throw new RangeError(`addNoise: ${x0.length} values, ${noise.length} noise values, ${B} timesteps`);
  const per = x0.length / B;
  const out = new Float32Array(x0.length);
  for (let b = 0; b < B; b++) {
    const t = ts[b];
    const a = alphasCumprod[t];
    if (!Number.isInteger(t) || a === undefined) throw new RangeError(`addNoise: timestep ${t} is outside the schedule (0..${alphasCumprod.length - 1})`);
    const sa = f(Math.sqrt(a));
    const sb = f(Math.sqrt(f(1 - a)));
    for (let i = b * per; i < (b + 1) * per; i++) out[i] = f(f(sa * x0[i]) + f(sb * noise[i]));
  }
  return out;
}

/** One term of a loss: weight * MSE(prediction, target) (null target: the term is absent). */
export interface MseTerm {
  target: Float32Array | null;
  weight: number;
}

/**
 * The terms' MSEs (mean over all values, f64 sums) and d(sum_k weight_k * MSE_k) / d prediction as f32:
 * sum_k weight_k * 2 (pred - target_k) / N.
 */
export function mseLossAndGrad(pred: Float32Array, terms: readonly MseTerm[]): { losses: (number | null)[]; grad: Float32Array } {
  const N = pred.length;
  const grad = new Float64Array(N);
  const losses = terms.map((term) => {
    const t = term.target;
    if (!t) return null;
    if (t.length !== N) throw new RangeError(`mseLossAndGrad: target of ${t.length} values for a prediction of ${N}`);
    let s = 0;
    const c = (2 * term.weight) / N;
    for (let i = 0; i < N; i++) {
      const d = pred[i] - t[i];
      s += d * d;
      if (c !== 0) grad[i] += c * d;
    }
    return s / N;
  });
  return { losses, grad: Float32Array.from(grad) };
}

/**
 * Classifier-free guidance over a batch of 2B rows [uncond_0..uncond_{B-1}, cond_0..cond_{B-1}] of `per`
 * values: e = u + g (c - u) per row pair, in float32 as the pipeline computes it.
 */
export function cfgCombine(out: Float32Array, B: number, g: number): Float32Array {
  const per = out.length / (2 * B);
  if (!Number.isInteger(per)) throw new RangeError(`cfgCombine: ${out.length} values do not split into 2x${B} rows`);
  const gg = f(g);
  const e = new Float32Array(B * per);
  for (let i = 0; i < B * per; i++) {
    const u = out[i];
    e[i] = u + f(gg * f(out[B * per + i] - u));
  }
  return e;
}

/** Backward of cfgCombine: d/du = (1 - g) de, d/dc = g de, as the 2B-row gradient. */
export function cfgBackward(de: Float32Array, B: number, g: number): Float32Array {
  const n = de.length;
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    out[i] = (1 - g) * de[i];
    out[n + i] = g * de[i];
  }
  void B;
  return out;
}

/** A u32 mix of the inputs (splitmix32 finaliser), for seeding independent streams. */
function mix(a: number, b: number): number {
  let z = (Math.imul(a >>> 0, 0x9e3779b1) ^ (b >>> 0)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Streams a training run draws from: each (stream, index) gets its own generator, independent of all others. */
export const STREAM = { train: 1, calibration: 2, trajectory: 3, permutation: 4, validation: 5 } as const;

/** The generator for item `index` of stream `stream` of a run seeded with `seed`. */
export function streamRng(seed: number, stream: number, index: number): Rng {
  return new Rng(mix(mix(seed, stream), index));
}

/** A uniform integer in [0, n). */
export function randInt(rng: Rng, n: number): number {
  return Math.min(n - 1, Math.floor(rng.uniform() * n));
}

/** A permutation of 0..n-1 (Fisher-Yates over rng). */
export function permutation(n: number, rng: Rng): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = randInt(rng, i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
