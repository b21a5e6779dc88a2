// Linear layers (and plain matrix products) on the FP32 GEMM kernels of assembly/gemm.ts, dispatching to
// the BF16 / INT8 ops (bf16.ts, int8.ts) and to per-step switch weights (switch.ts) by the weight's `kind`.
//
// FP32 weights are packed once, at load time, into the layout the micro-kernel streams (pack.ts): N (= out
// features) cut into panels of GEMM_NR = 16 columns, each panel K rows x 16 floats contiguous, the last panel
// zero-padded; bias padded to the same width (zeros when the layer has none, so the kernel always adds).
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { GEMM_NR, freeWeightTensors, packBias, packPanelsNK, panelsFor } from "./pack.ts";
import { linearBf16, type LinearWeightBf16 } from "./bf16.ts";
import { linearInt8, type LinearWeightInt8 } from "./int8.ts";
import { selectVariant, type WeightSwitch } from "./switch.ts";
import { runLinearF32 } from "./gemm.ts";
import { freeTrainable, linearTrainable, type TrainableLinear } from "./trainable.ts";

export interface LinearWeightF32 {
  readonly kind: "f32";
  readonly out: number;
  readonly inF: number;
  /** [panels, inF, GEMM_NR]: packed[(p * inF + k) * GEMM_NR + j] = weight[p * GEMM_NR + j][k]. */
  readonly packed: Tensor;
  /** [panels * GEMM_NR], zero-padded (zeros when the layer has no bias). */
  readonly bias: Tensor;
}

export interface LinearWeightSwitch extends WeightSwitch<{ fp32?: LinearWeightF32; bf16?: LinearWeightBf16; int8?: LinearWeightInt8 }> {
  readonly out: number;
  readonly inF: number;
}

export type LinearWeight = LinearWeightF32 | LinearWeightBf16 | LinearWeightInt8 | LinearWeightSwitch | TrainableLinear;

/** Prepacks a linear layer's weight (torch layout [out, in]) and bias for linear(). */
export function prepareLinear(eng: Engine, weight: Float32Array, bias: Float32Array | null, out: number, inF: number): LinearWeightF32 {
  if (!(Number.isInteger(out) && out > 0 && Number.isInteger(inF) && inF > 0)) throw new Error(`prepareLinear: invalid dims out=${out}, in=${inF}`);
  if (weight.length !== out * inF) throw new Error(`prepareLinear: expected weight of ${out}x${inF} = ${out * inF} values, got ${weight.length}`);
  const packed = eng.zeros([panelsFor(out), inF, GEMM_NR]);
  packPanelsNK(packed.f32(), weight, out, inF);
  return { kind: "f32", out, inF, packed, bias: packBias(eng, bias, out, "prepareLinear") };
}

/** Frees the engine memory held by a prepared weight (any kind). */
export function freeLinear(w: LinearWeight): void {
  if (w.kind === "switch") {
    for (const v of Object.values(w.variants)) if (v) freeLinear(v);
  } else if (w.kind === "train") freeTrainable(w);
  else freeWeightTensors(w);
}

/** y[..., out] = x[..., in] W^T + b. */
export function linear(x: Tensor, w: LinearWeight): Tensor {
  if (w.kind === "switch") return linear(x, selectVariant(w, x));
  if (w.kind === "bf16") return linearBf16(x, w);
  if (w.kind === "int8") return linearInt8(x, w);
  if (w.kind === "train") return linearTrainable(x, w);
  if (w.kind !== "f32") throw new Error(`linear: unsupported weight kind ${(w as { kind: string }).kind}`);
  return runLinearF32(x, w);
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
