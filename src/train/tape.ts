// Reverse-mode automatic differentiation over the engine's ops. A Tape set as an engine's gradient recorder
// (Engine.grad) hears about every nn op run on tensors that need gradients (src/nn ops call record()) and
// keeps, for each, the tensors its backward pass reads (Tensor.retain, so model code frees its temporaries as
// usual). backward() then walks the ops in reverse order, hands each op the gradients of its outputs and
// accumulates the gradients it returns: into a parameter's .grad buffer, or into the gradient of an activation,
// which is freed as soon as the op that produced that activation has consumed it.
//
// Determinism: ops run in one fixed order and every kernel partitions statically, so gradients are
// bit-identical for any thread count. Views (Tensor.reshape) share their base's gradient (same size).
//
// Gradient checkpointing (checkpointing: true): a block run through checkpoint() keeps only its inputs; its
// ops are not recorded on the first run, and backward runs the block again on a sub-tape (recomputing: true,
// so ops skip side effects such as observer updates) to backpropagate through it.
import type { Engine, GradRecorder, RecordedOp } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { addInPlace } from "../nn/elementwise.ts";
import type { ParameterSet } from "./params.ts";

const keyOf = (t: Tensor): Tensor => t.base ?? t;

export interface TapeOptions {
  /** Recompute checkpointed blocks in backward instead of keeping their activations (default false). */
  checkpointing?: boolean;
}

export class Tape implements GradRecorder {
  private ops: RecordedOp[] = [];
  /** Tensors gradients flow to (bases of views). */
  private live = new WeakSet<Tensor>();
  private suspended = false;
  private _recomputing = false;
  readonly checkpointing: boolean;

  constructor(
    readonly engine: Engine,
    readonly params: ParameterSet,
    opts: TapeOptions = {},
  ) {
    this.checkpointing = !!opts.checkpointing;
  }

  get recomputing(): boolean {
    return this._recomputing;
  }

  /** Number of ops recorded so far. */
  get size(): number {
    return this.ops.length;
  }

  requiresGrad(t: Tensor): boolean {
    const k = keyOf(t);
    return this.live.has(k) || this.params.byTensor(k) !== undefined;
  }

  /** Makes gradients flow to these tensors (the inputs of a gradient check, a checkpointed block's inputs). */
  watch(...ts: Tensor[]): void {
    for (const t of ts) this.live.add(keyOf(t));
  }

  record(op: RecordedOp): void {
    if (this.suspended) return;
    if (!op.inputs.some((t) => t && this.requiresGrad(t))) return;
    for (const t of op.saved) t.retain();
    for (const t of op.outputs) this.live.add(keyOf(t));
    this.ops.push(op);
  }

  checkpoint<T extends Tensor | Tensor[]>(inputs: readonly Tensor[], fn: () => T): T {
    if (!this.checkpointing || this.suspended) return fn();
    // kept before the block runs: it may free its inputs (an up block frees its skips)
    for (const t of inputs) t.retain();
    this.suspended = true;
    let out: T;
    try {
      out = fn();
    } catch (e) {
      for (const t of inputs) t.release();
      throw e;
    } finally {
      this.suspended = false;
    }
    const outputs = Array.isArray(out) ? (out as Tensor[]) : [out as Tensor];
    const ins = inputs.filter((t) => this.requiresGrad(t));
    // always recorded: parameters inside the block need their gradients even when no input does
    for (const t of outputs) this.live.add(keyOf(t));
    this.ops.push({
      name: "checkpoint",
      inputs: ins,
      outputs,
      saved: inputs,
      backward: (gradOutputs) => this.backwardThrough(ins, fn, gradOutputs),
    });
    return out;
  }

  /** Runs fn again on a sub-tape and backpropagates gradOutputs through it; returns the inputs' gradients. */
  private backwardThrough<T extends Tensor | Tensor[]>(inputs: readonly Tensor[], fn: () => T, gradOutputs: readonly Tensor[]): (Tensor | null)[] {
    const eng = this.engine;
    const sub = new Tape(eng, this.params);
    sub._recomputing = true;
    sub.watch(...inputs);
    eng.grad = sub;
    let outs: Tensor[];
    try {
      const r = fn();
      outs = Array.isArray(r) ? (r as Tensor[]) : [r as Tensor];
    } finally {
      eng.grad = this;
    }
    const grads = sub.run(outs, gradOutputs, inputs);
    for (const t of outs) t.free();
    return inputs.map((t) => grads.get(keyOf(t)) ?? null);
  }

  /**
   * Backpropagates: `seeds[i]` is the gradient of `outputs[i]` (e.g. dLoss/dPrediction). Parameter gradients
   * are added to their .grad buffers; the tape is empty afterwards. Returns the gradients of `keep` (watched
   * tensors, e.g. an input), which the caller owns and frees; every other activation gradient is freed.
   */
  backward(outputs: readonly Tensor[], seeds: readonly Tensor[], keep: readonly Tensor[] = []): Map<Tensor, Tensor> {
    return this.run(outputs, seeds, keep);
  }

  /**
   * The backward walk; returns the gradients of `keep` (by their bases) and frees every other activation
   * gradient. Gradient tensors are owned by the walk: an op's output gradients are freed once its backward has
   * run, unless the op handed one back as an input gradient (e.g. add passes dy through).
   */
  private run(outputs: readonly Tensor[], seeds: readonly Tensor[], keep: readonly Tensor[]): Map<Tensor, Tensor> {
    if (outputs.length !== seeds.length) throw new Error(`backward: ${outputs.length} outputs but ${seeds.length} seeds`);
    const eng = this.engine;
    const keepSet = new Set(keep.map(keyOf));
    const grads = new Map<Tensor, Tensor>();
    /** Adds gradient g (owned by the walk from now on) to tensor t's. */
    const accumulate = (t: Tensor, g: Tensor) => {
      const k = keyOf(t);
      const owned = keyOf(g);
      if (owned.size !== k.size) throw new Error(`backward: a gradient of [${owned.shape}] for a tensor of [${k.shape}]`);
      const p = this.params.byTensor(k);
      const into = p ? p.grad : grads.get(k);
      if (into) {
        addInPlace(into, owned.reshape(into.shape.slice()));
        if (owned !== into) owned.free();
      } else grads.set(k, owned);
    };
    eng.persistent(() => seeds.forEach((s, i) => accumulate(outputs[i], clone(s))));
    const ops = this.ops;
    this.ops = [];
    let i = ops.length - 1;
    try {
      for (; i >= 0; i--) {
        const op = ops[i];
        try {
          const gOut = op.outputs.map((o) => grads.get(keyOf(o)) ?? null);
          if (gOut.every((g) => g === null)) continue;
          const base = gOut.map((g, j) => g ?? eng.persistent(() => eng.zeros(op.outputs[j].shape)));
          const gIn = eng.persistent(() => op.backward(base.map((g, j) => g.reshape(op.outputs[j].shape.slice()))));
          const handedBack = new Set(gIn.filter((g): g is Tensor => !!g).map(keyOf));
          op.outputs.forEach((o, j) => {
            const k = keyOf(o);
            if (keepSet.has(k)) return;
            grads.delete(k);
            if (!handedBack.has(base[j])) base[j].free();
          });
          // one tensor handed to several inputs: every extra use gets its own copy, made before any
          // accumulate (which may free the tensor it adds in)
          const owned = gIn.map((g) => (g ? keyOf(g) : null));
          const seen = new Set<Tensor>();
          owned.forEach((o, j) => {
            if (!o) return;
            if (seen.has(o)) owned[j] = eng.persistent(() => clone(o));
            else seen.add(o);
          });
          owned.forEach((o, j) => {
            const t = op.inputs[j];
            if (!o) return;
            if (!t || !this.requiresGrad(t)) o.free();
            else accumulate(t, o);
          });
        } finally {
          for (const t of op.saved) t.release();
        }
      }
    } catch (e) {
      // the failed op released its saved tensors (finally); the ops not reached yet still hold theirs
      for (let j = i - 1; j >= 0; j--) for (const t of ops[j].saved) t.release();
      for (const g of grads.values()) g.free();
      throw e;
    }
    for (const [k, g] of grads)
      if (!keepSet.has(k)) {
        g.free();
        grads.delete(k);
      }
    return grads;
  }

  /** Drops everything recorded (a step that fails halfway, or a forward without backward). */
  clear(): void {
    for (const op of this.ops) for (const t of op.saved) t.release();
    this.ops = [];
  }
}

function clone(t: Tensor): Tensor {
  const c = t.engine.empty(t.shape);
  c.f32().set(t.f32());
  return c;
}
