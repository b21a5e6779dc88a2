// Trainable parameters: f32 master values in engine memory with a gradient buffer each, registered by
// checkpoint name so the tape (tape.ts) knows where a gradient goes and the optimizer, checkpoints and
// exports can walk them in one fixed order.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";

export class Parameter {
  constructor(
    /** Checkpoint name ("down_blocks.0.resnets.0.conv1.weight"). */
    readonly name: string,
    /** The f32 master values (persistent engine memory). */
    readonly value: Tensor,
    /** Gradient accumulated by backward passes since the last zeroGrad(), same shape. */
    readonly grad: Tensor,
  ) {}
}

export class ParameterSet {
  private list: Parameter[] = [];
  private byValue = new Map<Tensor, Parameter>();
  private byName = new Map<string, Parameter>();

  constructor(readonly engine: Engine) {}

  /** Registers `value` (persistent f32) as a parameter; its gradient buffer is allocated here, zeroed. */
  add(name: string, value: Tensor): Parameter {
    if (this.byName.has(name)) throw new Error(`parameter ${name} registered twice`);
    if (value.dtype !== "f32") throw new Error(`parameter ${name}: f32 values expected, got ${value.dtype}`);
    const grad = this.engine.persistent(() => this.engine.zeros(value.shape));
    const p = new Parameter(name, value.base ?? value, grad);
    this.list.push(p);
    this.byValue.set(p.value, p);
    this.byName.set(name, p);
    return p;
  }

  /** The parameter whose value tensor this is (views resolved), if any. */
  byTensor(t: Tensor): Parameter | undefined {
    return this.byValue.get(t.base ?? t);
  }

  get(name: string): Parameter | undefined {
    return this.byName.get(name);
  }

  /** In registration order (the model's build order: deterministic). */
  get all(): readonly Parameter[] {
    return this.list;
  }

  /** Number of scalar parameters. */
  get count(): number {
    return this.list.reduce((a, p) => a + p.value.size, 0);
  }

  zeroGrad(): void {
    for (const p of this.list) p.grad.f32().fill(0);
  }

  /** Global L2 norm of all gradients (f64, parameters in order). */
  gradNorm(): number {
    let s = 0;
    for (const p of this.list) {
      const g = p.grad.f32();
      for (let i = 0; i < g.length; i++) s += g[i] * g[i];
    }
    return Math.sqrt(s);
  }

  /** Scales all gradients so their global norm is at most maxNorm (torch clip_grad_norm_); returns the norm before. */
  clipGradNorm(maxNorm: number): number {
    const norm = this.gradNorm();
    // torch: clip_coef = max_norm / (total_norm + 1e-6), applied when < 1
    const coef = maxNorm / (norm + 1e-6);
    if (coef < 1) {
      const c = Math.fround(coef);
      for (const p of this.list) {
        const g = p.grad.f32();
        for (let i = 0; i < g.length; i++) g[i] *= c;
      }
    }
    return norm;
  }
}
