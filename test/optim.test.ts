// Optimizers (src/train/optim.ts) on the engine kernels (assembly/optim.ts): AdamW and the EMA bit-identical
// to the host references (src/nn/reference/optim.ts) at 1, 2 and 4 threads on both builds (odd sizes, weight
// decay masks, several steps); AdamW against torch's documented algorithm in f64; the EMA's decay schedule
// (diffusers EMAModel) and the learning-rate schedules.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { Rng } from "../src/runtime/random.ts";
import { ParameterSet } from "../src/train/params.ts";
import { AdamW, Ema, learningRate } from "../src/train/optim.ts";
import { adamwRef, emaRef } from "../src/nn/reference/optim.ts";

const CONFIGS = [
  { simd: "relaxed", threads: 1 },
  { simd: "relaxed", threads: 2 },
  { simd: "relaxed", threads: 4 },
  { simd: "baseline", threads: 1 },
  { simd: "baseline", threads: 3 },
] as const;
const SIZES = [1, 7, 64, 1001];

function bitsEqual(a: Float32Array, b: Float32Array): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let n = 0;
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) n++;
  return n;
}

describe("optimizer kernels", () => {
  const engines: Engine[] = [];
  beforeAll(async () => {
    for (const c of CONFIGS) engines.push(await Engine.create({ threads: c.threads, simd: c.simd, memoryBytes: 32 << 20 }));
  });
  afterAll(() => engines.forEach((e) => e.close()));

  it("AdamW and the EMA: bit-identical to the references over 5 steps, any thread count and build", () => {
    const rng = new Rng(3);
    const init = SIZES.map((n) => rng.normal(n).map((v) => v * 0.1));
    const grads = Array.from({ length: 5 }, () => SIZES.map((n) => rng.normal(n).map((v) => v * 0.01)));
    // references
    const w = init.map((a) => a.slice()), m = SIZES.map((n) => new Float32Array(n)), v = SIZES.map((n) => new Float32Array(n));
    const s = init.map((a) => a.slice());
    const lr = 1e-3, wd = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (let t = 1; t <= 5; t++) {
      SIZES.forEach((_, i) => {
        const decay = i === 1 ? 1 : Math.fround(1 - lr * wd); // parameter 1 without weight decay
        adamwRef(w[i], grads[t - 1][i], m[i], v[i], { decay, b1, b2, eps, stepSize: lr / (1 - b1 ** t), bc2Sqrt: Math.sqrt(1 - b2 ** t) });
        const d = t === 1 ? 0 : Math.min(0.9999, t / (9 + t));
        emaRef(s[i], w[i], d);
      });
    }
    for (const [k, e] of engines.entries()) {
      e.scope(() => {
        const params = new ParameterSet(e);
        const ps = e.persistent(() => init.map((a, i) => params.add(`p${i}`, e.fromArray(a, [a.length]))));
        const adam = new AdamW(params, { lr, weightDecay: wd, decays: (p) => p.name !== "p1" });
        const ema = new Ema(params);
        for (let t = 0; t < 5; t++) {
          ps.forEach((p, i) => p.grad.f32().set(grads[t][i]));
          adam.update();
          ema.update();
        }
        const what = `${CONFIGS[k].simd}/${CONFIGS[k].threads}`;
        ps.forEach((p, i) => {
          expect(bitsEqual(p.value.f32(), w[i]), `${what}: weights ${i}`).toBe(0);
          expect(bitsEqual(adam.m[i].f32(), m[i]), `${what}: m ${i}`).toBe(0);
          expect(bitsEqual(adam.v[i].f32(), v[i]), `${what}: v ${i}`).toBe(0);
          expect(bitsEqual(ema.shadow[i].f32(), s[i]), `${what}: ema ${i}`).toBe(0);
        });
        adam.free();
        ema.free();
        for (const p of params.all) {
          p.value.free();
          p.grad.free();
        }
      });
    }
  });

  it("AdamW follows torch's algorithm (f64 formulation) to f32 rounding", () => {
    const e = engines[1];
    const n = 257;
    const rng = new Rng(9);
    const w0 = rng.normal(n);
    const gs = Array.from({ length: 10 }, () => rng.normal(n).map((x) => x * 0.5));
    const lr = 0.01, wd = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    // torch.optim.AdamW docs: p = p - lr wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    // m^ = m / (1 - b1^t); v^ = v / (1 - b2^t); p = p - lr m^ / (sqrt(v^) + eps)
    const p = Float64Array.from(w0), m = new Float64Array(n), v = new Float64Array(n);
    for (let t = 1; t <= 10; t++)
      for (let j = 0; j < n; j++) {
        const g = gs[t - 1][j];
        p[j] -= lr * wd * p[j];
        m[j] = b1 * m[j] + (1 - b1) * g;
        v[j] = b2 * v[j] + (1 - b2) * g * g;
        p[j] -= (lr * (m[j] / (1 - b1 ** t))) / (Math.sqrt(v[j] / (1 - b2 ** t)) + eps);
      }
    e.scope(() => {
      const params = new ParameterSet(e);
      const q = e.persistent(() => params.add("w", e.fromArray(w0, [n])));
      const adam = new AdamW(params, { lr, weightDecay: wd });
      for (const g of gs) {
        q.grad.f32().set(g);
        adam.update();
      }
      const got = q.value.f32();
      for (let j = 0; j < n; j++) expect(Math.abs(got[j] - p[j])).toBeLessThan(1e-5 * (1 + Math.abs(p[j])));
      adam.free();
      q.value.free();
      q.grad.free();
    });
  });

  it("EMA decay schedule (diffusers EMAModel) and learning-rate schedules", () => {
    const e = engines[0];
    e.scope(() => {
      const params = new ParameterSet(e);
      const ema = new Ema(params, 0.999);
      expect([1, 2, 3, 11].map((u) => ema.decayAt(u))).toEqual([0, 2 / 11, 3 / 12, 11 / 20]);
      expect(ema.decayAt(1e6)).toBe(0.999);
    });
    expect(learningRate("constant", 1e-5, 7, 100)).toBe(1e-5);
    expect(learningRate("cosine", 1, 0, 100)).toBe(1);
    expect(learningRate("cosine", 1, 50, 100)).toBeCloseTo(0.5, 12);
    expect(learningRate("cosine", 1, 100, 100, { minRatio: 0.1 })).toBeCloseTo(0.1, 12);
    expect(learningRate("constant", 1, 0, 100, { warmup: 4 })).toBe(0.25);
  });
});
