// The one place model weights are loaded. Model code asks a WeightStore for a layer by its checkpoint
// name and the shape it expects; the store reads the safetensors tensors (any float dtype, converted to
// f32), checks the shape, and hands them to the nn op's prepare function (prepareLinear, prepareConv2d),
// which builds the kernel-ready packed weight. A store can also make random weights of the requested
// shapes (benchmarks of SD-size models without a checkpoint). The per-step precision option (bf16, int8
// weight kinds) plugs in here later: models never call prepareLinear/prepareConv2d themselves.
//
// Everything a store creates lives in engine memory owned by no scope (Engine.persistent), so a model
// may be loaded inside a scope.
// Host-side Float32Arrays exist only while one layer is being prepared, so no copy of the model stays
// alive in JS memory.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { prepareLinear, type LinearWeight } from "../nn/linear.ts";
import { prepareConv2d, type ConvShape, type ConvWeight } from "../nn/conv.ts";
import { Rng } from "../pipeline/random.ts";

export class WeightError extends Error {}

export interface ConvOptions {
  stride?: number;
  padding?: number;
  /** Load only output channels [start, end) of the checkpoint's conv (e.g. the mean half of quant_conv). */
  outputRange?: [number, number];
}

export interface NormParams {
  gamma: Tensor;
  beta: Tensor;
}

interface Source {
  file: SafetensorsFile | null;
  rng: Rng | null;
  label: string;
  used: Set<string>;
}

export class WeightStore {
  private constructor(
    readonly engine: Engine,
    private src: Source,
    /** Prepended to every name (see at()). */
    readonly prefix: string,
  ) {}

  /** A store reading the safetensors file at `path`. */
  static open(engine: Engine, path: string): WeightStore {
    const file = SafetensorsFile.open(path);
    return new WeightStore(engine, { file, rng: null, label: path, used: new Set() }, "");
  }

  /**
   * A store making random weights of the shapes asked for (seeded; uniform in ±1/sqrt(fan_in) like
   * torch's default init, biases likewise, norms gamma 1 beta 0), for benchmarks without a checkpoint.
   */
  static random(engine: Engine, seed = 0): WeightStore {
    return new WeightStore(engine, { file: null, rng: new Rng(seed), label: `random weights (seed ${seed})`, used: new Set() }, "");
  }

  get isRandom(): boolean {
    return this.src.file === null;
  }

  /** The file path or a description of the random source, for messages. */
  get label(): string {
    return this.src.label;
  }

  /** A view of the same store whose names are prefixed with `prefix` (e.g. "decoder."). */
  at(prefix: string): WeightStore {
    return new WeightStore(this.engine, this.src, this.prefix + prefix);
  }

  /** Whether the checkpoint has this tensor (always false for random stores). */
  has(name: string): boolean {
    return this.src.file?.has(this.prefix + name) ?? false;
  }

  /** Shape of a checkpoint tensor, or null if absent. */
  shapeOf(name: string): number[] | null {
    const full = this.prefix + name;
    const f = this.src.file;
    return f && f.has(full) ? f.info(full).shape.slice() : null;
  }

  /**
   * A linear layer: `${prefix}.weight` [out, in] (a 1x1 conv weight [out, in, 1, 1] is accepted too:
   * on NHWC activations a 1x1 conv is the same op) and `${prefix}.bias` [out] when the checkpoint has it
   * (random stores: when opts.bias is not false).
   */
  linear(prefix: string, out: number, inF: number, opts: { bias?: boolean } = {}): LinearWeight {
    const wName = `${prefix}.weight`;
    const bName = `${prefix}.bias`;
    let w: Float32Array;
    let b: Float32Array | null;
    if (this.isRandom) {
      const bound = 1 / Math.sqrt(inF);
      w = this.uniform(out * inF, bound);
      b = opts.bias === false ? null : this.uniform(out, bound);
    } else {
      w = this.read(wName, [[out, inF], [out, inF, 1, 1]]);
      b = this.has(bName) ? this.read(bName, [[out]]) : null;
    }
    return this.engine.persistent(() => prepareLinear(this.engine, w, b, out, inF));
  }

  /** A conv layer: `${prefix}.weight` [cout, cin, kh, kw] and `${prefix}.bias` [cout] if present. */
  conv(prefix: string, shape: ConvShape, opts: ConvOptions = {}): ConvWeight {
    const { cout, cin, kh, kw } = shape;
    const [o0, o1] = opts.outputRange ?? [0, cout];
    const n = o1 - o0;
    if (!(o0 >= 0 && o1 <= cout && n > 0)) throw new WeightError(`${this.prefix}${prefix}: invalid output range [${o0}, ${o1}) of ${cout} channels`);
    const per = cin * kh * kw;
    let w: Float32Array;
    let b: Float32Array | null;
    if (this.isRandom) {
      const bound = 1 / Math.sqrt(per);
      w = this.uniform(n * per, bound);
      b = this.uniform(n, bound);
    } else {
      w = this.read(`${prefix}.weight`, [[cout, cin, kh, kw]]);
      b = this.has(`${prefix}.bias`) ? this.read(`${prefix}.bias`, [[cout]]) : null;
      if (n !== cout) {
        w = w.slice(o0 * per, o1 * per);
        b = b ? b.slice(o0, o1) : null;
      }
    }
    return this.engine.persistent(() => prepareConv2d(this.engine, w, b, { cout: n, cin, kh, kw }, { stride: opts.stride ?? 1, padding: opts.padding ?? 0 }));
  }

  /** GroupNorm / LayerNorm affine parameters: `${prefix}.weight` → gamma, `${prefix}.bias` → beta, each [C]. */
  norm(prefix: string, channels: number): NormParams {
    if (this.isRandom) {
      const eng = this.engine;
      return eng.persistent(() => ({ gamma: eng.fromArray(new Float32Array(channels).fill(1), [channels]), beta: eng.zeros([channels]) }));
    }
    return { gamma: this.param(`${prefix}.weight`, [channels]), beta: this.param(`${prefix}.bias`, [channels]) };
  }

  /** A tensor as an f32 engine tensor of the given shape (random stores: uniform ±0.05). */
  param(name: string, shape: number[]): Tensor {
    const t = this.engine.persistent(() => this.engine.empty(shape));
    if (this.isRandom) t.f32().set(this.uniform(t.size, 0.05));
    else {
      this.check(name, [shape]);
      this.src.file!.readF32(this.prefix + name, t.f32());
      this.src.used.add(this.prefix + name);
    }
    return t;
  }

  /** A tensor as a host Float32Array (small tensors only). */
  array(name: string, shape?: number[]): Float32Array {
    if (this.isRandom) {
      if (!shape) throw new WeightError(`${this.prefix}${name}: a random store needs the shape`);
      return this.uniform(shape.reduce((a, b) => a * b, 1), 0.05);
    }
    return this.read(name, shape ? [shape] : null);
  }

  /** Checkpoint tensors (under this view's prefix) that no layer has read so far. */
  unused(): string[] {
    const f = this.src.file;
    if (!f) return [];
    return [...f.tensors.keys()].filter((k) => k.startsWith(this.prefix) && !this.src.used.has(k));
  }

  /** Throws if the checkpoint has tensors no layer read (a config/checkpoint mismatch), ignoring `ignore`. */
  assertAllUsed(what: string, ignore: (name: string) => boolean = () => false): void {
    const left = this.unused().filter((k) => !ignore(k));
    if (left.length)
      throw new WeightError(
        `${this.src.label}: ${left.length} tensor(s) not used by the ${what} built from its config, e.g. ${left.slice(0, 5).join(", ")}` +
          " (the checkpoint does not match the config, or has layers this engine does not implement)",
      );
  }

  /** Closes the file (prepared layers stay valid). */
  close(): void {
    this.src.file?.close();
  }

  private check(name: string, shapes: number[][] | null): number[] {
    const full = this.prefix + name;
    const f = this.src.file!;
    if (!f.has(full)) throw new WeightError(`${this.src.label}: missing tensor ${full}`);
    const got = f.info(full).shape;
    if (shapes && !shapes.some((s) => s.length === got.length && s.every((d, i) => d === got[i])))
      throw new WeightError(
        `${this.src.label}: tensor ${full} has shape [${got}], expected ${shapes.map((s) => `[${s}]`).join(" or ")}`,
      );
    return got;
  }

  private read(name: string, shapes: number[][] | null): Float32Array {
    this.check(name, shapes);
    const full = this.prefix + name;
    this.src.used.add(full);
    return this.src.file!.readF32(full);
  }

  private uniform(n: number, bound: number): Float32Array {
    const rng = this.src.rng!;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (2 * rng.uniform() - 1) * bound;
    return out;
  }
}
