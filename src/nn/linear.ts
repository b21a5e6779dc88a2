// Linear layers (and plain matrix products) on the FP32 GEMM kernels of assembly/gemm.ts.
//
// Weights are packed once, at load time, into the layout the micro-kernel streams: N (= out features)
// cut into panels of GEMM_NR = 16 columns, each panel K rows x 16 floats contiguous, the last panel
// zero-padded; bias padded to the same width (zeros when the layer has none, so the kernel always adds).
// Weight kinds are told apart by `kind`: "f32" here, "bf16" / "int8" (src/nn/lowp.ts, their own packing and
// kernels) and "switch": a per-step weight holding several of those variants, of which linear() runs the
// one its PrecisionSelector (owned by the model, e.g. the UNet) currently selects.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { freeLowpWeight, linearBf16, linearInt8, setInt8ActParams, type ConvWeightInt8, type LinearWeightBf16, type LinearWeightInt8 } from "./lowp.ts";
import type { ActQuantParams } from "./quant.ts";

/** Columns per packed panel (four f32x4 vectors); must match assembly/gemm.ts. */
export const GEMM_NR = 16;
/** Rows per micro-tile of the kernels (assembly/gemm.ts). */
export const GEMM_MR = 2;

export interface LinearWeightF32 {
  readonly kind: "f32";
  readonly out: number;
  readonly inF: number;
  /** [panels, inF, GEMM_NR]: packed[(p * inF + k) * GEMM_NR + j] = weight[p * GEMM_NR + j][k]. */
  readonly packed: Tensor;
  /** [panels * GEMM_NR], zero-padded (zeros when the layer has no bias). */
  readonly bias: Tensor;
}

/** The precisions a per-step ("switch") weight can hold. */
export type WeightPrecision = "fp32" | "bf16" | "int8";

/** Shared by every switch weight of a model: which variant runs, and an optional input observer (calibration). */
export interface PrecisionSelector {
  current: WeightPrecision;
  /** Called with the layer name and its f32 input before a switch weight runs (calibration); null/absent: nothing. */
  observe?: ((layer: string, x: Tensor) => void) | null;
  /**
   * Per-timestep INT8 activation ranges: the index of the current UNet call's timestep in the model's
   * calibrated timesteps (src/models/precision.ts setCallTimestep); -1 or absent: the global ranges.
   */
  stepIndex?: number;
}

/** A switch weight's INT8 activation params per calibrated timestep (aligned with the model's list) and global. */
export interface Int8StepActs {
  readonly global: ActQuantParams;
  readonly steps: readonly ActQuantParams[];
}

/** A per-step weight (linear or conv): every loaded precision of one layer; the op runs variants[ctx.current]. */
export interface WeightSwitch<V extends object> {
  readonly kind: "switch";
  /** Checkpoint name of the layer (e.g. "down_blocks.0.attentions.0.proj_in"), for calibration and messages. */
  readonly name: string;
  readonly ctx: PrecisionSelector;
  readonly variants: V;
  /** Present when the calibration has per-timestep ranges: the int8 variant is re-prepared per call. */
  readonly int8Steps?: Int8StepActs;
}

export interface LinearWeightSwitch extends WeightSwitch<{ fp32?: LinearWeightF32; bf16?: LinearWeightBf16; int8?: LinearWeightInt8 }> {
  readonly out: number;
  readonly inF: number;
}

export type LinearWeight = LinearWeightF32 | LinearWeightBf16 | LinearWeightInt8 | LinearWeightSwitch;

/**
 * The variant of a switch weight its selector picks (after reporting the input to the observer, if any);
 * an int8 variant with per-timestep ranges is first set to the current call's timestep's params.
 */
export function selectVariant<S extends WeightSwitch<object>>(w: S, x: Tensor): NonNullable<S["variants"][keyof S["variants"]]> {
  const p = w.ctx.current;
  const v = (w.variants as Record<string, unknown>)[p] as NonNullable<S["variants"][keyof S["variants"]]> | undefined;
  if (!v) throw new Error(`layer ${w.name}: precision ${p} is not loaded (loaded: ${Object.keys(w.variants).join(", ")})`);
  w.ctx.observe?.(w.name, x);
  if (p === "int8" && w.int8Steps) {
    // stepIndex comes from the same calibration's timestep table (setCallTimestep), so it is in range
    const i = w.ctx.stepIndex ?? -1;
    setInt8ActParams(v as unknown as LinearWeightInt8 | ConvWeightInt8, i >= 0 ? w.int8Steps.steps[i] : w.int8Steps.global);
  }
  return v;
}

/** Number of packed panels for n output columns. */
export function panelsFor(n: number): number {
  return Math.ceil(n / GEMM_NR);
}

/**
 * Packs a torch-layout weight [n, k] (row-major, out x in) into GEMM_NR-column panels over k:
 * dst[(p * k + kk) * GEMM_NR + j] = src[(p * GEMM_NR + j) * k + kk]; dst must be zeroed (padding columns).
 */
export function packPanelsNK(dst: Float32Array, src: ArrayLike<number>, n: number, k: number): void {
  for (let col = 0; col < n; col++) {
    const p = (col / GEMM_NR) | 0;
    const j = col - p * GEMM_NR;
    const d0 = p * k * GEMM_NR + j;
    const s0 = col * k;
    for (let kk = 0; kk < k; kk++) dst[d0 + kk * GEMM_NR] = src[s0 + kk];
  }
}

/** Bias padded to the panel width (zeros if null), as an engine tensor. */
export function packBias(eng: Engine, bias: ArrayLike<number> | null, n: number, what: string): Tensor {
  if (bias && bias.length !== n) throw new Error(`${what}: expected bias of length ${n}, got ${bias.length}`);
  const t = eng.zeros([panelsFor(n) * GEMM_NR]);
  if (bias) t.f32().set(bias as ArrayLike<number>);
  return t;
}

/** Prepacks a linear layer's weight (torch layout [out, in]) and bias for linear(). */
export function prepareLinear(eng: Engine, weight: Float32Array, bias: Float32Array | null, out: number, inF: number): LinearWeightF32 {
  if (!(Number.isInteger(out) && out > 0 && Number.isInteger(inF) && inF > 0)) throw new Error(`prepareLinear: invalid dims out=${out}, in=${inF}`);
  if (weight.length !== out * inF) throw new Error(`prepareLinear: expected weight of ${out}x${inF} = ${out * inF} values, got ${weight.length}`);
  const packed = eng.zeros([panelsFor(out), inF, GEMM_NR]);
  packPanelsNK(packed.f32(), weight, out, inF);
  return { kind: "f32", out, inF, packed, bias: packBias(eng, bias, out, "prepareLinear") };
}

/** Frees the engine memory held by a prepared weight. */
export function freeLinear(w: LinearWeight): void {
  if (w.kind === "switch") {
    for (const v of Object.values(w.variants)) if (v) freeLinear(v);
  } else if (w.kind !== "f32") freeLowpWeight(w);
  else {
    w.packed.free();
    w.bias.free();
  }
}

/**
 * Cache blocking for the packed kernels: kc = K block (floats of K per pass; 0 = all of K), mcT = row block
 * in GEMM_MR-row tiles (0 = all of a thread's rows). Results do not depend on these.
 */
export function gemmBlocking(M: number, N: number, K: number): { kc: number; mcT: number; pb: number } {
  // Measured (bench/kernels-gemm.ts): up to K = 2880 (SD's 64x64 convs) one K block is as fast as any, and
  // row blocks of a few dozen tiles gain a few % on large M. Longer K (the 16x16 and 8x8 levels' convs,
  // K = 11520 / 23040) in blocks of about 1024 with panel blocks that fit in L2 (the kernel's pb default):
  // 2 threads 88 -> 101 GFLOP/s on 2x16x16x1280->1280.
  void M;
  void N;
  const kc = K <= 2880 ? 0 : Math.ceil(K / Math.ceil(K / 1024));
  return { kc, mcT: Math.max(8, Math.min(128, Math.floor(65536 / Math.max(1, kc || K)))), pb: 0 };
}

/** y[..., out] = x[..., in] W^T + b. */
export function linear(x: Tensor, w: LinearWeight): Tensor {
  if (w.kind === "switch") return linear(x, selectVariant(w, x));
  if (w.kind === "bf16") return linearBf16(x, w);
  if (w.kind === "int8") return linearInt8(x, w);
  const inF = x.shape[x.shape.length - 1];
  if (x.shape.length < 1 || inF !== w.inF) throw new Error(`linear: expected input [..., ${w.inF}] (in features = ${w.inF}), got [${x.shape}]`);
  if (x.dtype !== "f32") throw new Error(`linear: expected an f32 input, got ${x.dtype}`);
  const M = x.size / inF;
  const y = x.engine.empty([...x.shape.slice(0, -1), w.out]);
  switch (w.kind) {
    case "f32": {
      const { kc, mcT, pb } = gemmBlocking(M, w.out, inF);
      x.engine.run("gemm_f32_packed", x.ptr, inF, w.packed.ptr, w.bias.ptr, y.ptr, w.out, M, w.out, inF, kc, mcT, pb);
      return y;
    }
    default:
      throw new Error(`linear: unsupported weight kind ${(w as { kind: string }).kind}`);
  }
}

export interface MatmulOptions {
  /** Use A^T: a is stored [K, M]. */
  transA?: boolean;
  /** Use B^T: b is stored [N, K] (e.g. a torch [out, in] weight). */
  transB?: boolean;
  /** Bias [N] added to every row. */
  bias?: Tensor | null;
  /** Write into (and with accumulate, add to) this [M, N] tensor instead of a new one. */
  out?: Tensor;
  accumulate?: boolean;
}

/**
 * Plain 2-D matrix product on unpacked operands (general strided kernel gemm_f32):
 * C[M, N] = op(A) op(B) (+ bias) (+ C if accumulate). Meant for backward passes (dX = dY W, dW = dY^T X)
 * and one-off products; linear() with a prepacked weight is faster.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  if (a.shape.length !== 2 || b.shape.length !== 2) throw new Error(`matmul: expected 2-D operands, got [${a.shape}] and [${b.shape}]`);
  const [M, Ka] = opts.transA ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
  const [Kb, N] = opts.transB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
  if (Ka !== Kb) throw new Error(`matmul: inner dims differ: A gives K=${Ka}, B gives K=${Kb} (shapes [${a.shape}]${opts.transA ? "^T" : ""} x [${b.shape}]${opts.transB ? "^T" : ""})`);
  if (opts.bias && opts.bias.size !== N) throw new Error(`matmul: expected bias of ${N} values, got [${opts.bias.shape}]`);
  const eng = a.engine;
  const c = opts.out ?? eng.empty([M, N]);
  if (c.size !== M * N) throw new Error(`matmul: expected out of [${M}, ${N}], got [${c.shape}]`);
  const [sam, sak] = opts.transA ? [1, M] : [Ka, 1];
  const [sbk, sbn] = opts.transB ? [1, Kb] : [N, 1];
  eng.run("gemm_f32", M, N, Ka, a.ptr, sam, sak, b.ptr, sbk, sbn, c.ptr, N, opts.bias?.ptr ?? 0, opts.accumulate ? 1 : 0);
  return c;
}
