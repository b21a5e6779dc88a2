// 2-D convolution on NHWC activations as implicit GEMM (assembly/gemm.ts conv2d_f32):
// M = B*Ho*Wo output pixels, N = Cout, K = kh*kw*Cin in (ky, kx, ci) order, reading input pixels straight
// from the NHWC tensor (no im2col buffer). Weights are packed once into GEMM_NR-column panels over K like
// linear weights; padding reads from a small zero buffer owned by the weight.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { GEMM_NR, gemmBlocking, packBias, panelsFor, selectVariant, type WeightSwitch } from "./linear.ts";
import { conv2dBf16, conv2dInt8, freeLowpWeight, type ConvWeightBf16, type ConvWeightInt8 } from "./lowp.ts";

export type Padding4 = [top: number, left: number, bottom: number, right: number];

/** A conv layer's geometry, as every conv weight (any precision, or a switch) holds it. */
export interface ConvGeometry {
  readonly cout: number;
  readonly cin: number;
  readonly kh: number;
  readonly kw: number;
  readonly stride: number;
  /** Default padding [top, left, bottom, right]. */
  readonly padding: Padding4;
}

export interface ConvWeightF32 extends ConvGeometry {
  readonly kind: "f32";
  /** [panels, K = kh*kw*cin, GEMM_NR]: packed[(p * K + (ky*kw + kx)*cin + ci) * GEMM_NR + j] = weight[p*GEMM_NR + j][ci][ky][kx]. */
  readonly packed: Tensor;
  /** [panels * GEMM_NR], zero-padded. */
  readonly bias: Tensor;
  /** kw * cin zeros: what rows in the padding read. */
  readonly zero: Tensor;
}

/** A per-step conv weight (see WeightSwitch in linear.ts). */
export interface ConvWeightSwitch extends WeightSwitch<{ fp32?: ConvWeightF32; bf16?: ConvWeightBf16; int8?: ConvWeightInt8 }>, ConvGeometry {}

export type ConvWeight = ConvWeightF32 | ConvWeightBf16 | ConvWeightInt8 | ConvWeightSwitch;

export interface ConvShape {
  cout: number;
  cin: number;
  kh: number;
  kw: number;
}

function checkPadding(p: readonly number[], what: string): Padding4 {
  if (p.length !== 4 || !p.every((v) => Number.isInteger(v) && v >= 0)) throw new Error(`${what}: padding must be 4 non-negative integers [top, left, bottom, right], got [${p}]`);
  return [p[0], p[1], p[2], p[3]];
}

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
  const dst = packed.f32();
  const taps = kh * kw;
  for (let co = 0; co < cout; co++) {
    const p = (co / GEMM_NR) | 0;
    const j = co - p * GEMM_NR;
    const d0 = p * K * GEMM_NR + j;
    for (let ci = 0; ci < cin; ci++) {
      const s0 = (co * cin + ci) * taps;
      for (let t = 0; t < taps; t++) dst[d0 + (t * cin + ci) * GEMM_NR] = weight[s0 + t];
    }
  }
  return {
    kind: "f32", cout, cin, kh, kw, stride, padding: [pad, pad, pad, pad],
    packed, bias: packBias(eng, bias, cout, "prepareConv2d"), zero: eng.zeros([kw * cin]),
  };
}

export function freeConv2d(w: ConvWeight): void {
  if (w.kind === "switch") {
    for (const v of Object.values(w.variants)) if (v) freeConv2d(v);
  } else if (w.kind !== "f32") freeLowpWeight(w);
  else {
    w.packed.free();
    w.bias.free();
    w.zero.free();
  }
}

/** Output spatial size [Ho, Wo] of conv2d on an h x w input. */
export function conv2dOutSize(w: ConvWeight, h: number, wd: number, padding: Padding4 = w.padding): [number, number] {
  return [Math.floor((h + padding[0] + padding[2] - w.kh) / w.stride) + 1, Math.floor((wd + padding[1] + padding[3] - w.kw) / w.stride) + 1];
}

/** y = conv(x, w) + b on NHWC: x [B, H, W, cin] -> [B, Ho, Wo, cout]. opts.padding overrides the weight's padding. */
export function conv2d(x: Tensor, w: ConvWeight, opts: { padding?: Padding4 } = {}): Tensor {
  if (w.kind === "switch") return conv2d(x, selectVariant(w, x), opts);
  if (w.kind === "bf16") return conv2dBf16(x, w, opts.padding ? { padding: checkPadding(opts.padding, "conv2d") } : {});
  if (w.kind === "int8") return conv2dInt8(x, w, opts.padding ? { padding: checkPadding(opts.padding, "conv2d") } : {});
  if (x.shape.length !== 4 || x.shape[3] !== w.cin)
    throw new Error(`conv2d: expected NHWC input [B, H, W, ${w.cin}] (cin = ${w.cin}), got [${x.shape}]`);
  if (x.dtype !== "f32") throw new Error(`conv2d: expected an f32 input, got ${x.dtype}`);
  const pad = opts.padding ? checkPadding(opts.padding, "conv2d") : w.padding;
  const [B, H, W] = x.shape;
  const [Ho, Wo] = conv2dOutSize(w, H, W, pad);
  if (Ho <= 0 || Wo <= 0) throw new Error(`conv2d: ${w.kh}x${w.kw} kernel with padding [${pad}] does not fit input [${x.shape}]`);
  const y = x.engine.empty([B, Ho, Wo, w.cout]);
  switch (w.kind) {
    case "f32": {
      const { kc, mcT, pb } = gemmBlocking(B * Ho * Wo, w.cout, w.kh * w.kw * w.cin);
      x.engine.run("conv2d_f32", x.ptr, B, H, W, w.cin, w.packed.ptr, w.bias.ptr, y.ptr, w.cout, Ho, Wo, w.cout, w.kh, w.kw, w.stride, pad[0], pad[1], w.zero.ptr, kc, mcT, pb);
      return y;
    }
    default:
      throw new Error(`conv2d: unsupported weight kind ${(w as { kind: string }).kind}`);
  }
}
