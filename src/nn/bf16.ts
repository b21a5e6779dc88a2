// Emulated BF16 linear and conv2d (the paper's first/last denoising steps): weights and bias rounded to
// bf16 and packed once (prepare*); the kernels of assembly/gemm_bf16.ts round the activations to bf16 while
// packing them, so the ops need no conversion pass. Numerics (src/nn/reference/lowp.ts implements them):
//
//   y = bf16(sum_k bf16(x) * bf16(w) (f32, k in order) + bf16(bias))   stored as f32
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import {
  checkDims,
  convInputSizes,
  convWeightToKOrder,
  lowpPadded,
  packBf16Panels,
  pad4,
  paddedF32,
  withPacking,
  type ConvGeometry,
  type ConvOptions,
  type ConvShape,
  type LowpRunOptions,
  type Padding4,
} from "./pack.ts";
import { f32ArrayToBf16Bits, roundBf16Array } from "./quant.ts";

export interface LinearWeightBf16 {
  kind: "bf16";
  out: number;
  inF: number;
  /** bf16 weights in panels of 8 channels (u16). */
  packed: Tensor;
  /** bf16-rounded bias as f32 (0 if none), padded. */
  bias: Tensor;
}

export interface ConvWeightBf16 extends Omit<LinearWeightBf16, "kind" | "out" | "inF">, ConvGeometry {
  kind: "bf16";
  /** kw * cin zero floats, read for taps in the spatial padding. */
  zero: Tensor;
}

/** Largest K block of the BF16 kernels (elements). */
const BF16_KC_MAX = 1024;
/** Bytes of f32 activations per row block (the 4-row tiles of a block, about an L1 data cache). */
const BF16_A_BLOCK = 32768;

/**
 * Cache blocking of the BF16 kernels for an [M, K] x [K, N] product: kc = K block (K, or equal blocks of
 * at most BF16_KC_MAX), mcT = row block in 4-row tiles (mcT * 4 * kc floats <= BF16_A_BLOCK bytes).
 * Results never depend on it.
 */
export function bf16Blocking(M: number, N: number, K: number): { kc: number; mcT: number } {
  void N;
  const nb = Math.max(1, Math.ceil(K / BF16_KC_MAX));
  const kc = Math.ceil(K / nb);
  const mcT = Math.max(1, Math.min(Math.ceil(M / 4), Math.floor(BF16_A_BLOCK / (16 * Math.max(kc, 1)))));
  return { kc, mcT };
}

function bf16Bias(eng: Engine, bias: ArrayLike<number> | null, N: number): Tensor {
  return paddedF32(eng, bias ? roundBf16Array(Float32Array.from(bias)) : null, N, lowpPadded(N));
}

function bf16Bits(w: ArrayLike<number>): Uint16Array {
  return f32ArrayToBf16Bits(w instanceof Float32Array ? w : Float32Array.from(w));
}

/** BF16 linear weight from f32 w [out, in]: weights and bias rounded to bf16 (RNE). */
export function prepareLinearBf16(eng: Engine, w: ArrayLike<number>, bias: ArrayLike<number> | null, out: number, inF: number): LinearWeightBf16 {
  checkDims("prepareLinearBf16", out, inF);
  if (w.length !== out * inF) throw new RangeError(`prepareLinearBf16: ${w.length} weights for [${out}, ${inF}]`);
  const packed = eng.fromArray(packBf16Panels(bf16Bits(w), out, inF), [lowpPadded(out) * inF], "bf16");
  return { kind: "bf16", out, inF, packed, bias: bf16Bias(eng, bias, out) };
}

/** BF16 conv weight from f32 w [cout, cin, kh, kw]. */
export function prepareConv2dBf16(eng: Engine, w: ArrayLike<number>, bias: ArrayLike<number> | null, shape: ConvShape, opts: ConvOptions): ConvWeightBf16 {
  const { cout, cin, kh, kw } = shape;
  checkDims("prepareConv2dBf16", cout, cin, kh, kw);
  const stride = opts.stride ?? 1;
  checkDims("prepareConv2dBf16 stride", stride);
  if (w.length !== cout * cin * kh * kw) throw new RangeError(`prepareConv2dBf16: ${w.length} weights for [${cout}, ${cin}, ${kh}, ${kw}]`);
  const K = kh * kw * cin;
  const bk = convWeightToKOrder(bf16Bits(w), shape, cin, new Uint16Array(cout * K));
  const packed = eng.fromArray(packBf16Panels(bk, cout, K), [lowpPadded(cout) * K], "bf16");
  const zero = eng.zeros([kw * cin + 4], "f32");
  return { kind: "bf16", cout, cin, kh, kw, stride, padding: pad4(opts.padding), packed, bias: bf16Bias(eng, bias, cout), zero };
}

/** y [..., out] = BF16 linear of x [..., in] (f32; rounded to bf16 as the kernel packs it). */
export function linearBf16(x: Tensor, w: LinearWeightBf16, opts: LowpRunOptions = {}): Tensor {
  const eng = x.engine;
  const inF = x.shape[x.shape.length - 1];
  if (inF !== w.inF) throw new RangeError(`linearBf16: input [${x.shape}] does not end in ${w.inF}`);
  x.f32();
  const M = x.size / inF;
  const y = eng.empty([...x.shape.slice(0, -1), w.out], "f32");
  if (M === 0) return y;
  withPacking(eng, M, inF, bf16Blocking(M, w.out, inF), opts, 4, false, (kc, mcT, scratch, stride) =>
    eng.run("gemm_bf16_packed", x.ptr, inF, w.packed.ptr, w.bias.ptr, y.ptr, w.out, M, w.out, inF, kc, mcT, opts.pb ?? 0, scratch, stride),
  );
  return y;
}

/** y [B, Ho, Wo, cout] = BF16 conv of x [B, H, W, cin] (f32 NHWC). padding overrides the prepared one. */
export function conv2dBf16(x: Tensor, w: ConvWeightBf16, opts: LowpRunOptions & { padding?: Padding4 } = {}): Tensor {
  const eng = x.engine;
  const p = opts.padding ? pad4(opts.padding, "conv2dBf16") : w.padding;
  const { B, H, W, Ho, Wo } = convInputSizes(x, w, p, "conv2dBf16");
  x.f32();
  const y = eng.empty([B, Ho, Wo, w.cout], "f32");
  if (B === 0) return y;
  const M = B * Ho * Wo, K = w.kh * w.kw * w.cin;
  withPacking(eng, M, K, bf16Blocking(M, w.cout, K), opts, 4, false, (kc, mcT, scratch, stride) =>
    eng.run(
      "conv2d_bf16", x.ptr, B, H, W, w.cin, w.packed.ptr, w.bias.ptr, y.ptr, w.cout, Ho, Wo, w.cout,
      w.kh, w.kw, w.stride, p[0], p[1], w.zero.ptr, kc, mcT, opts.pb ?? 0, scratch, stride,
    ),
  );
  return y;
}
