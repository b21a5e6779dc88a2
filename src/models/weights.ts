// The one place model weights are loaded. Model code asks a WeightStore for a layer by its checkpoint
// name and the shape it expects; the store reads the safetensors tensors (any float dtype, converted to
// f32), checks the shape, and hands them to the nn op's prepare function (prepareLinear, prepareConv2d),
// which builds the kernel-ready packed weight. A store can also make random weights of the requested
// shapes (benchmarks of SD-size models without a checkpoint). Models never call prepareLinear/prepareConv2d
// themselves.
//
// Per-step precision (src/models/precision.ts): after usePrecisions({ctx, ...}), linear() and conv() return
// "switch" weights holding every precision ctx.loaded lists (fp32 / bf16 / int8), built from the checkpoint
// (bf16 rounded, int8 quantised per output channel with the layer's calibrated activation range) or from
// stepq converted files (stepq-bf16.safetensors / stepq-int8.safetensors, see weights-tools/README.md):
// their BF16 weights and int8 weights + scales + activation params are used as stored (no calibration;
// the layers come out bit-identical to the ones made from the checkpoint). With a per-step calibration
// (timesteps + per-layer steps ranges), INT8 layers from the checkpoint are prepared with the global range
// and carry every step's activation params (int8Steps); ctx.stepTimesteps is set to the calibration's
// timesteps, and selectVariant re-prepares the layer for the current call's step (src/nn/int8.ts
// setInt8ActParams). Converted int8 files hold one range per layer and cannot take per-step ranges.
//
// Everything a store creates lives in engine memory owned by no scope (Engine.persistent), so a model
// may be loaded inside a scope.
// Host-side Float32Arrays exist only while one layer is being prepared, so no copy of the model stays
// alive in JS memory.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { prepareLinear, type LinearWeight, type LinearWeightSwitch } from "../nn/linear.ts";
import { type Int8StepActs } from "../nn/switch.ts";
import { prepareConv2d, type ConvWeight, type ConvWeightSwitch } from "../nn/conv.ts";
import { type ConvShape } from "../nn/pack.ts";
import { prepareConv2dBf16, prepareLinearBf16 } from "../nn/bf16.ts";
import { prepareConv2dInt8, prepareConv2dInt8Quantized, prepareLinearInt8, prepareLinearInt8Quantized } from "../nn/int8.ts";
import { createTrainableConv, createTrainableLinear, type TrainableConv, type TrainableLinear } from "../nn/trainable.ts";
import { actParamsFromRange, type ActQuantParams } from "../nn/quant.ts";
import { Rng } from "../runtime/random.ts";
import { actParamsFor, hasPerStepRanges, stepActParamsFor, MissingCalibrationError, SYNTHETIC_ACT_RANGE, SYNTHETIC_ACT_BITS, type Calibration } from "./calibration.ts";
import { checkStepqMetadata, isStepqFile, stepqTimesteps } from "./converted.ts";
import { PrecisionError, type PrecisionContext } from "./precision.ts";

export class WeightError extends Error {}

/** The dtypes a checkpoint's weights may have (converted to f32 when read). */
export const FLOAT_DTYPES: readonly string[] = ["F32", "F16", "BF16", "F64"];

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

/** How a store builds per-step (switch) weights; see usePrecisions. */
export interface PrecisionSetup {
  /** The model's context: its `loaded` list is what every layer holds. */
  ctx: PrecisionContext;
  /**
   * INT8 activation ranges for layers built from the checkpoint: a calibration, "synthetic" (the fixed
   * SYNTHETIC_ACT_RANGE: latency benchmarks only, outputs meaningless), or null (then int8 from the
   * checkpoint fails with MissingCalibrationError naming calibrationFile).
   */
  calibration: Calibration | "synthetic" | null;
  /** The calibration file (read, or where it was looked for), for messages. */
  calibrationFile?: string;
  /** The model folder, for the `stepq calibrate --model ...` hint. */
  modelHint?: string;
  /** stepq converted weights files by precision (their stored values are used; no calibration needed). */
  files?: { bf16?: string; int8?: string };
}

interface StepqSource {
  file: SafetensorsFile;
  used: Set<string>;
  own: boolean;
}

interface PrecisionState {
  setup: PrecisionSetup;
  files: { bf16?: StepqSource; int8?: StepqSource };
  /** Names of the switch layers built, in order. */
  layers: string[];
}

/**
 * How a store builds trainable layers (src/train; useTraining): every conv/linear becomes a trainable layer
 * over f32 master weights, and every tensor the model takes (weights, biases, norm parameters) is handed to
 * `register` under its checkpoint name, so the trainer's parameter set knows it.
 */
export interface TrainingSetup {
  register(name: string, value: Tensor): void;
  /**
   * Fake-quantise the conv/linear layers (a QAT student) with activations of 0..qmax and weights of
   * [-weightQmax, weightQmax] (default 127); absent: float layers.
   */
  quant?: { qmax: number; weightQmax?: number; observer?: "ema" | "minmax"; ranges?: Record<string, { min: number; max: number }> } | null;
  /** The trainable layers built, in order (filled by the store). */
  layers?: (TrainableLinear | TrainableConv)[];
}

interface Source {
  file: SafetensorsFile | null;
  rng: Rng | null;
  label: string;
  used: Set<string>;
  /** The primary file is itself a stepq converted file (norms etc. read from it; no f32 layer weights). */
  stepqPrimary: boolean;
  prec: PrecisionState | null;
  training?: TrainingSetup | null;
}

export class WeightStore {
  private constructor(
    readonly engine: Engine,
    private src: Source,
    /** Prepended to every name (see at()). */
    readonly prefix: string,
  ) {}

  /** A store reading the safetensors file at `path`. */
  static async open(engine: Engine, path: string): Promise<WeightStore> {
    const file = await SafetensorsFile.open(path);
    return new WeightStore(engine, { file, rng: null, label: path, used: new Set(), stepqPrimary: isStepqFile(file.metadata), prec: null }, "");
  }

  /**
   * A store making random weights of the shapes asked for (seeded; uniform in ±1/sqrt(fan_in) like
   * torch's default init, biases likewise, norms gamma 1 beta 0), for benchmarks without a checkpoint.
   */
  static random(engine: Engine, seed = 0): WeightStore {
    return new WeightStore(engine, { file: null, rng: new Rng(seed), label: `random weights (seed ${seed})`, used: new Set(), stepqPrimary: false, prec: null }, "");
  }

  /**
   * From now on linear()/conv() build switch weights with every precision setup.ctx.loaded lists (this store
   * and all its views: the setting is shared). Opens the stepq files given (checked by their metadata).
   */
  async usePrecisions(setup: PrecisionSetup): Promise<void> {
    if (this.src.prec) throw new WeightError(`${this.src.label}: precisions are already set up for this store`);
    const files: PrecisionState["files"] = {};
    for (const p of ["bf16", "int8"] as const) {
      const f = setup.files?.[p];
      if (!f || !setup.ctx.loaded.includes(p)) continue;
      const same = this.src.file && this.src.file.path === f;
      const file = same ? this.src.file! : await SafetensorsFile.open(f);
      checkStepqMetadata(file.metadata, p, f);
      files[p] = { file, used: same ? this.src.used : new Set(), own: !same };
    }
    if (this.src.stepqPrimary && setup.ctx.loaded.some((p) => p === "fp32" || !files[p as "bf16" | "int8"]))
      throw new WeightError(
        `${this.src.label} is a stepq converted file (${this.src.file!.metadata.precision}); precisions ${setup.ctx.loaded.filter((p) => p === "fp32" || !files[p as "bf16" | "int8"]).join(", ")} need the original checkpoint`,
      );
    const cal = setup.calibration;
    if (cal && cal !== "synthetic" && hasPerStepRanges(cal) && setup.ctx.loaded.includes("int8")) {
      if (files.int8)
        throw new PrecisionError(
          `${setup.calibrationFile ?? "the calibration"} has per-step ranges, but int8 is loaded from the converted ${files.int8.file.path}, which holds one range per layer; ` +
            "remove the converted int8 file to use per-step ranges, or use a calibration made without --per-step",
        );
      setup.ctx.stepTimesteps = cal.timesteps.slice();
    }
    if (cal && cal !== "synthetic" && setup.ctx.loaded.includes("int8") && !files.int8) setup.ctx.int8Calibration = setup.calibrationFile ?? "the calibration given";
    // a version-2 int8 file with per-step activation params (stepq qat --per-step-scales) brings its own table
    if (files.int8) {
      const ts = stepqTimesteps(files.int8.file.metadata, files.int8.file.path);
      if (ts) setup.ctx.stepTimesteps = ts;
    }
    this.src.prec = { setup, files, layers: [] };
  }

  /**
   * From now on linear()/conv() build trainable layers over f32 master weights and every tensor is registered
   * as a parameter (this store and all its views). Not with per-step precisions.
   */
  useTraining(setup: TrainingSetup): void {
    if (this.src.prec) throw new WeightError(`${this.src.label}: trainable layers cannot be combined with per-step precisions`);
    if (this.src.stepqPrimary) throw new WeightError(`${this.src.label} is a stepq converted file; training needs the original f32 checkpoint`);
    this.src.training = setup;
  }

  /** The f32 master tensors of a layer (persistent), registered as parameters. */
  private masters(prefix: string, w: Float32Array, shape: number[], b: Float32Array | null): { weight: Tensor; bias: Tensor | null } {
    const eng = this.engine;
    const t = this.src.training!;
    const weight = eng.persistent(() => eng.fromArray(w, shape));
    const bias = b ? eng.persistent(() => eng.fromArray(b, [b.length])) : null;
    t.register(`${this.prefix}${prefix}.weight`, weight);
    if (bias) t.register(`${this.prefix}${prefix}.bias`, bias);
    return { weight, bias };
  }

  private layerQuant(prefix: string): { qmax: number; weightQmax?: number; observer?: "ema" | "minmax"; range?: { min: number; max: number } | null } | undefined {
    const q = this.src.training?.quant;
    if (!q) return undefined;
    return { qmax: q.qmax, weightQmax: q.weightQmax, observer: q.observer, range: q.ranges?.[this.prefix + prefix] ?? null };
  }

  /** The precision setup (null: plain f32 weights). */
  get precisionSetup(): PrecisionSetup | null {
    return this.src.prec?.setup ?? null;
  }

  /** Names of the switch layers built so far (calibration keys). */
  get switchLayers(): readonly string[] {
    return this.src.prec?.layers ?? [];
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
  async linear(prefix: string, out: number, inF: number, opts: { bias?: boolean } = {}): Promise<LinearWeight> {
    if (this.src.prec) return this.switchLinear(prefix, out, inF, opts);
    const { w, b } = await this.linearF32(prefix, out, inF, opts);
    if (this.src.training) {
      const t = this.src.training;
      const { weight, bias } = this.masters(prefix, w, [out, inF], b);
      const layer = createTrainableLinear(this.engine, this.prefix + prefix, weight, bias, { quant: this.layerQuant(prefix) });
      t.layers?.push(layer);
      return layer;
    }
    return this.engine.persistent(() => prepareLinear(this.engine, w, b, out, inF));
  }

  private async linearF32(prefix: string, out: number, inF: number, opts: { bias?: boolean }): Promise<{ w: Float32Array; b: Float32Array | null }> {
    this.checkNotStepq(prefix);
    const wName = `${prefix}.weight`;
    const bName = `${prefix}.bias`;
    let w: Float32Array;
    let b: Float32Array | null;
    if (this.isRandom) {
      const bound = 1 / Math.sqrt(inF);
      w = this.uniform(out * inF, bound);
      b = opts.bias === false ? null : this.uniform(out, bound);
    } else {
      w = await this.read(wName, [[out, inF], [out, inF, 1, 1]]);
      b = this.has(bName) ? await this.read(bName, [[out]]) : null;
    }
    return { w, b };
  }

  private async switchLinear(prefix: string, out: number, inF: number, opts: { bias?: boolean }): Promise<LinearWeightSwitch> {
    const st = this.src.prec!;
    const { ctx } = st.setup;
    const name = this.prefix + prefix;
    const eng = this.engine;
    const fromCkpt = ctx.loaded.filter((p) => p === "fp32" || !st.files[p]);
    const act = fromCkpt.includes("int8") ? this.actParams(name) : null;
    let int8Steps = act ? this.stepActParams(name, act) : undefined;
    const f32 = fromCkpt.length ? await this.linearF32(prefix, out, inF, opts) : null;
    if (!f32) this.markUsedInPrimary(prefix);
    const variants: LinearWeightSwitch["variants"] = {};
    const shapes = [[out, inF], [out, inF, 1, 1]];
    for (const p of ctx.loaded) {
      if (p === "fp32") variants.fp32 = eng.persistent(() => prepareLinear(eng, f32!.w, f32!.b, out, inF));
      else if (p === "bf16") {
        const r = st.files.bf16 ? await this.stepqLayer("bf16", prefix, shapes, out) : f32!;
        variants.bf16 = eng.persistent(() => prepareLinearBf16(eng, r.w, r.b, out, inF));
      } else if (st.files.int8) {
        const r = await this.stepqInt8(prefix, shapes, out);
        variants.int8 = eng.persistent(() => prepareLinearInt8Quantized(eng, r.q, r.scales, r.b, out, inF, r.act));
        if (r.steps) int8Steps = { global: r.act, steps: r.steps };
      } else variants.int8 = eng.persistent(() => prepareLinearInt8(eng, f32!.w, f32!.b, out, inF, act!));
    }
    st.layers.push(name);
    return int8Steps ? { kind: "switch", name, out, inF, ctx, variants, int8Steps } : { kind: "switch", name, out, inF, ctx, variants };
  }

  /** INT8 activation params of a layer built from the checkpoint (calibration, synthetic, or an error). */
  private actParams(name: string): ActQuantParams {
    const s = this.src.prec!.setup;
    if (s.calibration === "synthetic") return actParamsFromRange(SYNTHETIC_ACT_RANGE[0], SYNTHETIC_ACT_RANGE[1], SYNTHETIC_ACT_BITS.actQmax, SYNTHETIC_ACT_BITS.weightQmax);
    if (!s.calibration) throw new MissingCalibrationError(s.calibrationFile ?? "(no calibration file given)", s.modelHint);
    return actParamsFor(s.calibration, name, s.calibrationFile ?? "calibration");
  }

  /** Per-step activation params of a layer built from the checkpoint (undefined: the calibration has none). */
  private stepActParams(name: string, global: ActQuantParams): Int8StepActs | undefined {
    const s = this.src.prec!.setup;
    if (!s.calibration || s.calibration === "synthetic") return undefined;
    const steps = stepActParamsFor(s.calibration, name, s.calibrationFile ?? "calibration");
    return steps ? { global, steps } : undefined;
  }

  /** When every variant of a layer came from stepq files, its checkpoint tensors count as used. */
  private markUsedInPrimary(prefix: string): void {
    const f = this.src.file;
    if (!f || this.src.stepqPrimary) return;
    for (const k of [`${prefix}.weight`, `${prefix}.bias`]) if (f.has(this.prefix + k)) this.src.used.add(this.prefix + k);
  }

  private async stepqTensor(p: "bf16" | "int8", name: string, shapes: number[][], dtype: string): Promise<{ data: Uint8Array; shape: number[] }> {
    const s = this.src.prec!.files[p]!;
    const full = this.prefix + name;
    if (!s.file.has(full)) throw new WeightError(`${s.file.path}: missing tensor ${full}`);
    const info = s.file.info(full);
    if (!shapes.some((sh) => sh.length === info.shape.length && sh.every((d, i) => d === info.shape[i])))
      throw new WeightError(`${s.file.path}: tensor ${full} has shape [${info.shape}], expected ${shapes.map((x) => `[${x}]`).join(" or ")}`);
    if (info.dtype !== dtype) throw new WeightError(`${s.file.path}: tensor ${full} is ${info.dtype}, expected ${dtype}`);
    s.used.add(full);
    return { data: await s.file.readRaw(full), shape: info.shape };
  }

  private async stepqBias(p: "bf16" | "int8", prefix: string, n: number): Promise<Float32Array | null> {
    const s = this.src.prec!.files[p]!;
    const full = `${this.prefix}${prefix}.bias`;
    if (!s.file.has(full)) return null;
    const t = await this.stepqTensor(p, `${prefix}.bias`, [[n]], "F32");
    return new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
  }

  /** A bf16 layer of a stepq file: the BF16 weights as f32 values (exact) and the F32 bias. */
  private async stepqLayer(p: "bf16", prefix: string, shapes: number[][], n: number): Promise<{ w: Float32Array; b: Float32Array | null }> {
    const t = await this.stepqTensor(p, `${prefix}.weight`, shapes, "BF16");
    const w = new Float32Array(t.data.length / 2);
    const u = new Uint32Array(w.buffer);
    for (let i = 0; i < w.length; i++) u[i] = (t.data[2 * i] | (t.data[2 * i + 1] << 8)) << 16;
    return { w, b: await this.stepqBias(p, prefix, n) };
  }

  /** An int8 layer of a stepq file: I8 weights, F32 per-channel scales, activation params (per step too, version 2), F32 bias. */
  private async stepqInt8(prefix: string, shapes: number[][], n: number): Promise<{ q: Int8Array; scales: Float32Array; b: Float32Array | null; act: ActQuantParams; steps?: ActQuantParams[] }> {
    const t = await this.stepqTensor("int8", `${prefix}.weight`, shapes, "I8");
    const q = new Int8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const f32 = async (name: string, len: number) => {
      const r = (await this.stepqTensor("int8", `${prefix}.${name}`, [[len]], "F32")).data;
      return new Float32Array(r.buffer.slice(r.byteOffset, r.byteOffset + r.byteLength));
    };
    const scales = await f32("weight_scale", n);
    const scale = (await f32("input_scale", 1))[0];
    const zp = (await this.stepqTensor("int8", `${prefix}.input_zero_point`, [[1]], "I32")).data;
    const zeroPoint = new DataView(zp.buffer, zp.byteOffset, 4).getInt32(0, true);
    const file = this.src.prec!.files.int8!.file;
    const meta = file.metadata;
    const qmax = Number(meta.act_qmax ?? 127);
    const weightQmax = Number(meta.weight_qmax ?? 127);
    const act = { scale, zeroPoint, qmax, weightQmax };
    const timesteps = stepqTimesteps(meta, file.path);
    if (!timesteps) return { q, scales, b: await this.stepqBias("int8", prefix, n), act };
    const T = timesteps.length;
    const sc = await f32("input_scale_steps", T);
    const zr = (await this.stepqTensor("int8", `${prefix}.input_zero_point_steps`, [[T]], "I32")).data;
    const zv = new DataView(zr.buffer, zr.byteOffset, 4 * T);
    const steps = Array.from({ length: T }, (_, i) => ({ scale: sc[i], zeroPoint: zv.getInt32(4 * i, true), qmax, weightQmax }));
    return { q, scales, b: await this.stepqBias("int8", prefix, n), act, steps };
  }

  /** A conv layer: `${prefix}.weight` [cout, cin, kh, kw] and `${prefix}.bias` [cout] if present. */
  async conv(prefix: string, shape: ConvShape, opts: ConvOptions = {}): Promise<ConvWeight> {
    if (this.src.prec) return this.switchConv(prefix, shape, opts);
    const { w, b, n } = await this.convF32(prefix, shape, opts);
    if (this.src.training) {
      if (opts.outputRange) throw new WeightError(`${this.prefix}${prefix}: a trainable conv cannot load a part of its output channels`);
      const t = this.src.training;
      const { weight, bias } = this.masters(prefix, w, [n, shape.cin, shape.kh, shape.kw], b);
      const layer = createTrainableConv(this.engine, this.prefix + prefix, weight, bias, { ...shape, cout: n }, { stride: opts.stride, padding: opts.padding }, { quant: this.layerQuant(prefix) });
      t.layers?.push(layer);
      return layer;
    }
    const { cin, kh, kw } = shape;
    return this.engine.persistent(() => prepareConv2d(this.engine, w, b, { cout: n, cin, kh, kw }, { stride: opts.stride ?? 1, padding: opts.padding ?? 0 }));
  }

  private checkNotStepq(prefix: string): void {
    if (this.src.stepqPrimary)
      throw new WeightError(`${this.src.label}: ${this.prefix}${prefix} is stored converted (stepq ${this.src.file!.metadata.precision}); load it with precisions [${this.src.file!.metadata.precision}]`);
  }

  private async convF32(prefix: string, shape: ConvShape, opts: ConvOptions): Promise<{ w: Float32Array; b: Float32Array | null; n: number }> {
    this.checkNotStepq(prefix);
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
      w = await this.read(`${prefix}.weight`, [[cout, cin, kh, kw]]);
      b = this.has(`${prefix}.bias`) ? await this.read(`${prefix}.bias`, [[cout]]) : null;
      if (n !== cout) {
        w = w.slice(o0 * per, o1 * per);
        b = b ? b.slice(o0, o1) : null;
      }
    }
    return { w, b, n };
  }

  private async switchConv(prefix: string, shape: ConvShape, opts: ConvOptions): Promise<ConvWeightSwitch> {
    const st = this.src.prec!;
    const { ctx } = st.setup;
    const name = this.prefix + prefix;
    const eng = this.engine;
    const { cout, cin, kh, kw } = shape;
    const [o0, o1] = opts.outputRange ?? [0, cout];
    const per = cin * kh * kw;
    const fromCkpt = ctx.loaded.filter((p) => p === "fp32" || !st.files[p]);
    const act = fromCkpt.includes("int8") ? this.actParams(name) : null;
    let int8Steps = act ? this.stepActParams(name, act) : undefined;
    const f32 = fromCkpt.length ? await this.convF32(prefix, shape, opts) : null;
    if (!f32) this.markUsedInPrimary(prefix);
    const n = o1 - o0;
    if (!(o0 >= 0 && o1 <= cout && n > 0)) throw new WeightError(`${name}: invalid output range [${o0}, ${o1}) of ${cout} channels`);
    const sh = { cout: n, cin, kh, kw };
    const co = { stride: opts.stride ?? 1, padding: opts.padding ?? 0 };
    const variants: ConvWeightSwitch["variants"] = {};
    for (const p of ctx.loaded) {
      if (p === "fp32") variants.fp32 = eng.persistent(() => prepareConv2d(eng, f32!.w, f32!.b, sh, co));
      else if (p === "bf16") {
        let r = st.files.bf16 ? await this.stepqLayer("bf16", prefix, [[cout, cin, kh, kw]], cout) : f32!;
        if (st.files.bf16 && n !== cout) r = { w: r.w.slice(o0 * per, o1 * per), b: r.b ? r.b.slice(o0, o1) : null };
        variants.bf16 = eng.persistent(() => prepareConv2dBf16(eng, r.w, r.b, sh, co));
      } else if (st.files.int8) {
        const r = await this.stepqInt8(prefix, [[cout, cin, kh, kw]], cout);
        const q = n !== cout ? r.q.slice(o0 * per, o1 * per) : r.q;
        const sc = n !== cout ? r.scales.slice(o0, o1) : r.scales;
        const b = r.b && n !== cout ? r.b.slice(o0, o1) : r.b;
        variants.int8 = eng.persistent(() => prepareConv2dInt8Quantized(eng, q, sc, b, sh, co, r.act));
        if (r.steps) int8Steps = { global: r.act, steps: r.steps };
      } else variants.int8 = eng.persistent(() => prepareConv2dInt8(eng, f32!.w, f32!.b, sh, co, act!));
    }
    st.layers.push(name);
    const p = co.padding;
    const sw: ConvWeightSwitch = { kind: "switch", name, cout: n, cin, kh, kw, stride: co.stride, padding: [p, p, p, p], ctx, variants };
    return int8Steps ? { ...sw, int8Steps } : sw;
  }

  /** GroupNorm / LayerNorm affine parameters: `${prefix}.weight` → gamma, `${prefix}.bias` → beta, each [C]. */
  async norm(prefix: string, channels: number): Promise<NormParams> {
    if (this.isRandom) {
      const eng = this.engine;
      const p = eng.persistent(() => ({ gamma: eng.fromArray(new Float32Array(channels).fill(1), [channels]), beta: eng.zeros([channels]) }));
      this.src.training?.register(`${this.prefix}${prefix}.weight`, p.gamma);
      this.src.training?.register(`${this.prefix}${prefix}.bias`, p.beta);
      return p;
    }
    return { gamma: await this.param(`${prefix}.weight`, [channels]), beta: await this.param(`${prefix}.bias`, [channels]) };
  }

  /** A tensor as an f32 engine tensor of the given shape (random stores: uniform ±0.05). */
  async param(name: string, shape: number[]): Promise<Tensor> {
    const t = this.engine.persistent(() => this.engine.empty(shape));
    if (this.isRandom) t.f32().set(this.uniform(t.size, 0.05));
    else {
      this.check(name, [shape]);
      await this.src.file!.readF32(this.prefix + name, t.f32());
      this.src.used.add(this.prefix + name);
    }
    this.src.training?.register(this.prefix + name, t);
    return t;
  }

  /** A tensor as a host Float32Array (small tensors only). */
  async array(name: string, shape?: number[]): Promise<Float32Array> {
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

  /** Closes the file(s) (prepared layers stay valid). */
  close(): void {
    this.src.file?.close();
    for (const f of Object.values(this.src.prec?.files ?? {})) if (f?.own) f.file.close();
  }

  private check(name: string, shapes: number[][] | null): number[] {
    const full = this.prefix + name;
    const f = this.src.file!;
    if (!f.has(full)) throw new WeightError(`${this.src.label}: missing tensor ${full}`);
    const { shape: got, dtype } = f.info(full);
    if (shapes && !shapes.some((s) => s.length === got.length && s.every((d, i) => d === got[i])))
      throw new WeightError(
        `${this.src.label}: tensor ${full} has shape [${got}], expected ${shapes.map((s) => `[${s}]`).join(" or ")}`,
      );
    // integers where the model has float weights are a broken or mislabelled checkpoint, not something to
    // convert quietly (an I64 or BOOL tensor read as numbers gives a model that runs and draws nonsense)
    if (!FLOAT_DTYPES.includes(dtype))
      throw new WeightError(`${this.src.label}: tensor ${full} is ${dtype}; weights must be float tensors (${FLOAT_DTYPES.join(", ")})`);
    return got;
  }

  private async read(name: string, shapes: number[][] | null): Promise<Float32Array> {
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
