// 2-D convolution on NHWC activations as implicit GEMM (assembly/gemm.ts conv2d_f32), dispatching to the
// BF16 / INT8 ops (bf16.ts, int8.ts) and to per-step switch weights (switch.ts) by the weight's `kind`.
// M = B*Ho*Wo output pixels, N = Cout, K = kh*kw*Cin in (ky, kx, ci) order, reading input pixels straight
// from the NHWC tensor (no im2col buffer). FP32 weights are packed once into GEMM_NR-column panels over K
// like linear weights (pack.ts); padding reads from a small zero buffer owned by the weight.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import {
  GEMM_NR,
  convInputSizes,
  convOutSize,
  convWeightToKOrder,
  freeWeightTensors,
  gemmBlocking,
  packBias,
  packPanelsNK,
  pad4,
  panelsFor,
  type ConvGeometry,
  type ConvShape,
  type Padding4,
} from "./pack.ts";
import { conv2dBf16, type ConvWeightBf16 } from "./bf16.ts";
import { conv2dInt8, type ConvWeightInt8 } from "./int8.ts";
import { selectVariant, type WeightSwitch } from "./switch.ts";
import { runConv2dF32 } from "./gemm.ts";
import { conv2dTrainable, freeTrainable, type TrainableConv } from "./trainable.ts";

export type { ConvGeometry, ConvShape, Padding4 };

export interface ConvWeightF32 extends ConvGeometry {
  readonly kind: "f32";
  /** [panels, K = kh*kw*cin, GEMM_NR]: packed[(p * K + (ky*kw + kx)*cin + ci) * GEMM_NR + j] = weight[p*GEMM_NR + j][ci][ky][kx]. */
  readonly packed: Tensor;
  /** [panels * GEMM_NR], zero-padded. */
  readonly bias: Tensor;
  /** kw * cin zeros: what rows in the padding read. */
  readonly zero: Tensor;
}

/** A per-step conv weight (see switch.ts). */
export interface ConvWeightSwitch extends WeightSwitch<{ fp32?: ConvWeightF32; bf16?: ConvWeightBf16; int8?: ConvWeightInt8 }>, ConvGeometry {}

export type ConvWeight = ConvWeightF32 | ConvWeightBf16 | ConvWeightInt8 | ConvWeightSwitch | TrainableConv;

/** Prepacks a conv weight (torch layout [cout, cin, kh, kw]) and bias for conv2d(). */
export function prepareConv2d(
  eng: Engine,
  weight: Float32Array,
  bias: Float32Array | null,
  shape: ConvShape,
  opts: { stride?: number; padding?: number } = {},
): ConvWeightF32 {
  const { cout, cin, kh, kw } = shape;
  for (const [k, v] of Object.entries({ cout, cin, kh, kw })) if (!(Number.isInteger(v) && v > 0)) throw new Error(`prepareConv2d: ${k} must be a positive integer, got ${v}`);
  const stride = opts.stride ?? 1;
  const pad = opts.padding ?? 0;
  if (!(Number.isInteger(stride) && stride > 0)) throw new Error(`prepareConv2d: stride must be a positive integer, got ${stride}`);
  if (!(Number.isInteger(pad) && pad >= 0)) throw new Error(`prepareConv2d: padding must be a non-negative integer, got ${pad}`);
  const K = kh * kw * cin;
  if (weight.length !== cout * K) throw new Error(`prepareConv2d: expected weight of ${cout}x${cin}x${kh}x${kw} = ${cout * K} values, got ${weight.length}`);
  const packed = eng.zeros([panelsFor(cout), K, GEMM_NR]);
  packPanelsNK(packed.f32(), convWeightToKOrder(weight, shape, cin, new Float32Array(cout * K)), cout, K);
  return {
    kind: "f32", cout, cin, kh, kw, stride, padding: [pad, pad, pad, pad],
    packed, bias: packBias(eng, bias, cout, "prepareConv2d"), zero: eng.zeros([kw * cin]),
  };
}

/** Frees the engine memory held by a prepared conv weight (any kind). */
export function freeConv2d(w: ConvWeight): void {
  if (w.kind === "switch") {
    for (const v of Object.values(w.variants)) if (v) freeConv2d(v);
  } else if (w.kind === "train") freeTrainable(w);
  else freeWeightTensors(w);
}

/** Output spatial size [Ho, Wo] of conv2d on an h x w input. */
export function conv2dOutSize(w: ConvWeight, h: number, wd: number, padding: Padding4 = w.padding): [number, number] {
  return convOutSize(w, h, wd, padding);
}

/** y = conv(x, w) + b on NHWC: x [B, H, W, cin] -> [B, Ho, Wo, cout]. opts.padding overrides the weight's padding. */
export function conv2d(x: Tensor, w: ConvWeight, opts: { padding?: Padding4 } = {}): Tensor {
  if (w.kind === "switch") return conv2d(x, selectVariant(w, x), opts);
  const padding = opts.padding ? pad4(opts.padding, "conv2d") : undefined;
  if (w.kind === "bf16") return conv2dBf16(x, w, padding ? { padding } : {});
  if (w.kind === "int8") return conv2dInt8(x, w, padding ? { padding } : {});
  if (w.kind === "train") return conv2dTrainable(x, w, padding ?? w.padding);
  if (w.kind !== "f32") throw new Error(`conv2d: unsupported weight kind ${(w as { kind: string }).kind}`);
  return runConv2dF32(x, w, padding ?? w.padding);
}
