// The FP32 GEMM / implicit-GEMM conv kernel calls on packed weights (assembly/gemm.ts), shared by the
// inference ops (linear.ts, conv.ts) and the trainable layers (trainable.ts).
import type { Tensor } from "../runtime/tensor.ts";
import { convInputSizes, gemmBlocking, type ConvGeometry, type Padding4 } from "./pack.ts";

/** A packed FP32 linear weight: [panels, inF, GEMM_NR] and a padded bias. */
export interface PackedLinearF32 {
  readonly out: number;
  readonly inF: number;
  readonly packed: Tensor;
  readonly bias: Tensor;
}

/** A packed FP32 conv weight: [panels, kh*kw*cin, GEMM_NR], padded bias, and kw*cin zeros for the padding. */
export interface PackedConvF32 extends ConvGeometry {
  readonly packed: Tensor;
  readonly bias: Tensor;
  readonly zero: Tensor;
}

/** y[..., out] = x[..., inF] W^T + b with a packed weight. */
export function runLinearF32(x: Tensor, w: PackedLinearF32): Tensor {
  const inF = x.shape[x.shape.length - 1];
  if (x.shape.length < 1 || inF !== w.inF) throw new Error(`linear: expected input [..., ${w.inF}] (in features = ${w.inF}), got [${x.shape}]`);
  if (x.dtype !== "f32") throw new Error(`linear: expected an f32 input, got ${x.dtype}`);
  const M = x.size / inF;
  const y = x.engine.empty([...x.shape.slice(0, -1), w.out]);
  const { kc, mcT, pb } = gemmBlocking(M, w.out, inF);
  x.engine.run("gemm_f32_packed", x.ptr, inF, w.packed.ptr, w.bias.ptr, y.ptr, w.out, M, w.out, inF, kc, mcT, pb);
  return y;
}

/** conv(x, w) + b on NHWC x [B, H, W, cin] with a packed weight and the given padding. */
export function runConv2dF32(x: Tensor, w: PackedConvF32, pad: Padding4): Tensor {
  const { B, H, W, Ho, Wo } = convInputSizes(x, w, pad, "conv2d");
  if (x.dtype !== "f32") throw new Error(`conv2d: expected an f32 input, got ${x.dtype}`);
  const y = x.engine.empty([B, Ho, Wo, w.cout]);
  const { kc, mcT, pb } = gemmBlocking(B * Ho * Wo, w.cout, w.kh * w.kw * w.cin);
  x.engine.run("conv2d_f32", x.ptr, B, H, W, w.cin, w.packed.ptr, w.bias.ptr, y.ptr, w.cout, Ho, Wo, w.cout, w.kh, w.kw, w.stride, pad[0], pad[1], w.zero.ptr, kc, mcT, pb);
  return y;
}
