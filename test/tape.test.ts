// The gradient tape over real ops: gradients of a small network (the UNet's op mix) against central
// finite differences along random directions, parameter gradients accumulate, saved activations outlive
// the model code's frees, checkpointing gives the same gradients, and results do not depend on threads.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { Rng } from "../src/runtime/random.ts";
import { groupNorm, layerNorm } from "../src/nn/norm.ts";
import { attention } from "../src/nn/attention.ts";
import { add, concatChannels, geglu, scale, silu, upsample2x } from "../src/nn/elementwise.ts";
import { ParameterSet } from "../src/train/params.ts";
import { Tape } from "../src/train/tape.ts";

function randn(rng: Rng, n: number, s = 1): Float32Array {
  return rng.normal(n).map((v) => v * s);
}

/** A block with the UNet's ops: GroupNorm+SiLU, upsample, concat (skip), self-attention, LayerNorm, GEGLU, residuals. */
function net(eng: Engine, x: Tensor, p: { g: Tensor; b: Tensor; lg: Tensor; lb: Tensor }, tape: Tape | null): Tensor {
  const run = () =>
    eng.scope(() => {
      const [B, H, W, C] = x.shape;
      const h = groupNorm(x, 2, p.g, p.b, 1e-5, { silu: true });
      const u = upsample2x(h); // [B, 2H, 2W, C]
      const cat = concatChannels(u, upsample2x(x)); // [B, 2H, 2W, 2C]
      const t = cat.reshape([B, 4 * H * W, 2 * C]);
      const a = attention(t, t, t, 2);
      const r = add(a, t);
      const n = layerNorm(r, p.lg, p.lb, 1e-5);
      const f = geglu(n); // [.., C]
      cat.free(); // model code frees what it no longer needs; the tape keeps what backward reads
      return scale(add(silu(f), f), 0.5);
    });
  return tape ? tape.checkpoint([x], run) : run();
}

describe("gradient tape", () => {
  let eng: Engine;
  beforeAll(async () => {
    eng = await Engine.create({ threads: 2, memoryBytes: 64 << 20, simd: "relaxed" });
  });
  afterAll(() => eng.close());

  /** Gradients of L = <R, net(x)> w.r.t. x and the parameters. */
  function grads(e: Engine, xv: Float32Array, shape: number[], pv: Record<string, Float32Array>, R: Float32Array, checkpointing = false) {
    return e.scope(() => {
      const params = new ParameterSet(e);
      const ps = e.persistent(() => Object.fromEntries(Object.entries(pv).map(([k, v]) => [k, e.fromArray(v, [v.length])]))) as { g: Tensor; b: Tensor; lg: Tensor; lb: Tensor };
      for (const [k, t] of Object.entries(ps)) params.add(k, t);
      const tape = new Tape(e, params, { checkpointing });
      const x = e.fromArray(xv, shape);
      tape.watch(x);
      e.grad = tape;
      let y: Tensor;
      try {
        y = net(e, x, ps, checkpointing ? tape : null);
      } finally {
        e.grad = null;
      }
      const seed = e.fromArray(R, y.shape);
      // the gradient of x: read it off a checkpoint of the identity (the tape frees activation gradients)
      let dx: Float32Array | null = null;
      const ident = tape as unknown as { run: (o: Tensor[], s: Tensor[], k: Tensor[]) => Map<Tensor, Tensor> };
      const m = ident.run([y], [seed], [x]);
      dx = m.get(x)!.toArray();
      for (const g of m.values()) g.free();
      const out = { dx, dp: Object.fromEntries(params.all.map((p) => [p.name, p.grad.toArray()])), y: y.toArray() };
      for (const p of params.all) {
        p.grad.free();
        p.value.free();
      }
      return out;
    });
  }

  function loss(e: Engine, xv: Float32Array, shape: number[], pv: Record<string, Float32Array>, R: Float32Array): number {
    return e.scope(() => {
      const ps = Object.fromEntries(Object.entries(pv).map(([k, v]) => [k, e.fromArray(v, [v.length])])) as { g: Tensor; b: Tensor; lg: Tensor; lb: Tensor };
      const y = net(e, e.fromArray(xv, shape), ps, null).toArray();
      let s = 0;
      for (let i = 0; i < y.length; i++) s += R[i] * y[i];
      return s;
    });
  }

  const shape = [2, 2, 3, 8];
  const C = 8;
  const rng = new Rng(3);
  const xv = randn(rng, 2 * 2 * 3 * 8);
  const pv = { g: randn(rng, C, 0.3).map((v) => v + 1), b: randn(rng, C, 0.1), lg: randn(rng, 2 * C, 0.3).map((v) => v + 1), lb: randn(rng, 2 * C, 0.1) };
  const R = randn(rng, 2 * 4 * 2 * 3 * C);

  it("matches central finite differences along random directions (input and every parameter)", () => {
    const g = grads(eng, xv, shape, pv, R);
    const dirRng = new Rng(11);
    const check = (name: string, grad: Float32Array, perturb: (v: Float32Array, eps: number) => number) => {
      const V = randn(dirRng, grad.length);
      let analytic = 0;
      for (let i = 0; i < grad.length; i++) analytic += grad[i] * V[i];
      const eps = 1e-2;
      const fd = (perturb(V, eps) - perturb(V, -eps)) / (2 * eps);
      expect(Math.abs(fd - analytic), `${name}: analytic ${analytic}, finite differences ${fd}`).toBeLessThan(2e-2 * Math.max(1, Math.abs(fd)));
    };
    check("x", g.dx!, (V, e) => loss(eng, xv.map((v, i) => v + e * V[i]), shape, pv, R));
    for (const k of Object.keys(pv) as (keyof typeof pv)[])
      check(k, g.dp[k], (V, e) => loss(eng, xv, shape, { ...pv, [k]: pv[k].map((v, i) => v + e * V[i]) }, R));
  });

  it("checkpointing (recompute in backward) gives bit-identical gradients, and so do 1 and 4 threads", async () => {
    const a = grads(eng, xv, shape, pv, R);
    const b = grads(eng, xv, shape, pv, R, true);
    expect(b.dx).toEqual(a.dx);
    expect(b.dp).toEqual(a.dp);
    for (const threads of [1, 4]) {
      const e = await Engine.create({ threads, memoryBytes: 64 << 20, simd: "relaxed" });
      try {
        const c = grads(e, xv, shape, pv, R);
        expect(c.dx).toEqual(a.dx);
        expect(c.dp).toEqual(a.dp);
      } finally {
        e.close();
      }
    }
  });

  it("leaves no engine memory behind", () => {
    const before = eng.stats().used;
    grads(eng, xv, shape, pv, R);
    grads(eng, xv, shape, pv, R, true);
    expect(eng.stats().used).toBe(before);
  });
});
