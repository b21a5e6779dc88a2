// Whole-UNet gradients through the tape: the directional derivative of L = <R, unet(x, t, ctx)> along random
// directions of all parameters (and of the input) against central finite differences, on the golden
// SD 1.x-style tiny UNet and on fashion-sd-tiny; gradients bit-identical at 1 and 2 threads, and equal to
// rounding with gradient checkpointing (which sums a block's contributions in another order).
import { describe, expect, it } from "vitest";
import * as path from "node:path";
import { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { Rng } from "../src/runtime/random.ts";
import { loadUNet } from "../src/models/loader.ts";
import type { UNet } from "../src/models/unet.ts";
import type { TrainableConv, TrainableLinear } from "../src/nn/trainable.ts";
import { refreshTrainable } from "../src/nn/trainable.ts";
import { ParameterSet } from "../src/train/params.ts";
import { Tape } from "../src/train/tape.ts";
import { sharedDir } from "../src/io/places.ts";

const shared = sharedDir();
const MODELS = [
  ["golden unet-sd15-tiny", path.join(shared, "golden", "unet-sd15-tiny")],
  ["fashion-sd-tiny", path.join(shared, "models", "fashion-sd-tiny", "unet")],
] as const;

interface Trainable {
  eng: Engine;
  unet: UNet;
  params: ParameterSet;
  layers: (TrainableLinear | TrainableConv)[];
}

async function load(dir: string, threads: number): Promise<Trainable> {
  const eng = await Engine.create({ threads, memoryBytes: 256 << 20, simd: "relaxed" });
  const params = new ParameterSet(eng);
  const layers: (TrainableLinear | TrainableConv)[] = [];
  const unet = await loadUNet(eng, dir, { training: { register: (n, t) => params.add(n, t), layers } });
  return { eng, unet, params, layers };
}

function inputs(m: Trainable, seed: number) {
  const rng = new Rng(seed);
  const cfg = m.unet.config;
  const ctxDim = cfg.cross_attention_dim as number;
  const hw = 8;
  return {
    x: rng.normal(2 * hw * hw * cfg.in_channels),
    xShape: [2, hw, hw, cfg.in_channels],
    ctx: rng.normal(2 * 77 * ctxDim).map((v) => 0.5 * v),
    ctxShape: [2, 77, ctxDim],
    R: rng.normal(2 * hw * hw * cfg.out_channels),
  };
}

/** L = <R, unet(x)> in f64. */
function loss(m: Trainable, inp: ReturnType<typeof inputs>): number {
  return m.eng.scope(() => {
    const y = m.unet.forward(m.eng.fromArray(inp.x, inp.xShape), 500, m.eng.fromArray(inp.ctx, inp.ctxShape)).f32();
    let s = 0;
    for (let i = 0; i < y.length; i++) s += inp.R[i] * y[i];
    return s;
  });
}

/** Parameter gradients (by name) and the input's gradient, after one backward of L. */
function gradients(m: Trainable, inp: ReturnType<typeof inputs>, checkpointing = false): { params: Map<string, Float32Array>; x: Float32Array } {
  const eng = m.eng;
  m.params.zeroGrad();
  return eng.scope(() => {
    const tape = new Tape(eng, m.params, { checkpointing });
    const x = eng.fromArray(inp.x, inp.xShape);
    tape.watch(x);
    eng.grad = tape;
    let y: Tensor;
    try {
      y = m.unet.forward(x, 500, eng.fromArray(inp.ctx, inp.ctxShape));
    } finally {
      eng.grad = null;
    }
    const kept = tape.backward([y], [eng.fromArray(inp.R, y.shape)], [x]);
    const gx = kept.get(x)!;
    const out = { params: new Map(m.params.all.map((p) => [p.name, p.grad.toArray()])), x: gx.toArray() };
    gx.free();
    return out;
  });
}

describe.each(MODELS)("UNet gradients: %s", (_label, dir) => {
  it("directional derivatives along random directions match central finite differences", async () => {
    const m = await load(dir, 2);
    try {
      const inp = inputs(m, 1);
      const g = gradients(m, inp);
      const rng = new Rng(7);
      for (let trial = 0; trial < 2; trial++) {
        // one random direction over every parameter at once
        // relative to each parameter's size (a norm's gamma ~1, a weight ~0.05), so the step is small everywhere
        const dirs = m.params.all.map((p) => {
          const v = p.value.f32();
          const rms = Math.sqrt(v.reduce((a, b) => a + b * b, 0) / v.length) || 1;
          return rng.normal(p.value.size).map((d) => d * rms);
        });
        let analytic = 0;
        m.params.all.forEach((p, i) => {
          const gp = g.params.get(p.name)!;
          for (let j = 0; j < gp.length; j++) analytic += gp[j] * dirs[i][j];
        });
        const eps = 1e-3;
        const saved = m.params.all.map((p) => p.value.toArray());
        const shift = (e: number) => {
          m.params.all.forEach((p, i) => {
            const v = p.value.f32();
            const s0 = saved[i];
            for (let j = 0; j < v.length; j++) v[j] = s0[j] + e * dirs[i][j];
          });
          for (const l of m.layers) refreshTrainable(l);
        };
        shift(eps);
        const lp = loss(m, inp);
        shift(-eps);
        const lm = loss(m, inp);
        shift(0);
        const fd = (lp - lm) / (2 * eps);
        expect(Math.abs(fd - analytic), `parameters, trial ${trial}: analytic ${analytic}, finite differences ${fd}`).toBeLessThan(2e-3 * Math.abs(fd) + 1e-2);
      }
      // and along a direction of the input
      const V = rng.normal(inp.x.length);
      let analytic = 0;
      for (let j = 0; j < V.length; j++) analytic += g.x[j] * V[j];
      const eps = 1e-3;
      const fd = (loss(m, { ...inp, x: inp.x.map((v, j) => v + eps * V[j]) }) - loss(m, { ...inp, x: inp.x.map((v, j) => v - eps * V[j]) })) / (2 * eps);
      expect(Math.abs(fd - analytic), `input: analytic ${analytic}, finite differences ${fd}`).toBeLessThan(2e-3 * Math.abs(fd) + 1e-2);
    } finally {
      m.eng.close();
    }
  });

  it("gradients are bit-identical at 1 and 2 threads, equal to rounding with gradient checkpointing, and leave no memory", async () => {
    const a = await load(dir, 1);
    const b = await load(dir, 2);
    try {
      const inp = inputs(a, 2);
      const ga = gradients(a, inp);
      const gb = gradients(b, inp);
      const gc = gradients(b, inp, true);
      const differing = (u: Float32Array, v: Float32Array) => u.reduce((n, x, i) => n + (Object.is(x, v[i]) ? 0 : 1), 0);
      expect(differing(gb.x, ga.x), "input gradient, 2 threads vs 1").toBe(0);
      const bad = [...ga.params].filter(([k, v]) => differing(gb.params.get(k)!, v) > 0).map(([k]) => k);
      expect(bad, "parameters whose gradient differs between 1 and 2 threads").toEqual([]);
      // checkpointing sums a block's contributions (e.g. to the time embedding) before adding them in, so the
      // order of the f32 additions differs: equal to rounding, not bit for bit
      const far = (u: Float32Array, v: Float32Array) => {
        let err = 0, ref = 0;
        for (let i = 0; i < u.length; i++) {
          err = Math.max(err, Math.abs(u[i] - v[i]));
          ref = Math.max(ref, Math.abs(v[i]));
        }
        return err > 1e-5 * ref;
      };
      expect(far(gc.x, ga.x), "input gradient with checkpointing").toBe(false);
      expect([...ga.params].filter(([k, v]) => far(gc.params.get(k)!, v)).map(([k]) => k), "parameters off with checkpointing").toEqual([]);
      // no engine memory left behind by a training step
      const before = b.eng.stats().used;
      gradients(b, inp, true);
      gradients(b, inp);
      expect(b.eng.stats().used).toBe(before);
    } finally {
      a.eng.close();
      b.eng.close();
    }
  });
});
