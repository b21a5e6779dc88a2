// Low-precision number formats: BF16 rounding (bit-exact, as PyTorch's float -> bfloat16 cast), INT8
// weight quantisation (symmetric per output channel) and activation quantisation parameters
// (asymmetric per tensor), plus the engine ops that quantise / round whole activation tensors with the
// kernels in assembly/quantize.ts. The GEMM/conv ops that consume them are in int8.ts and bf16.ts.
//
// Activation range. The INT8 kernels multiply weights (int8, [-127, 127]) by activations (unsigned).
// The relaxed-SIMD build uses i32x4.relaxed_dot_i8x16_i7x16_add_s, which is only deterministic (and on
// x86 only saturation-free) when the activations are 7-bit, 0..127. So by default activations are
// quantised to 7 bits: q = clamp(round(x / scale) + zp, 0, 127), scale = (max - min) / 127 — one bit less
// than the paper's u8 (0..255). ACT_QMAX_DEFAULT selects this; act params with qmax 255 are supported
// too (full u8), and then both builds use the exact i16 kernel path (slower on the relaxed build).
// Both builds quantise identically, so a layer's output is bit-identical between builds.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { roundUp4 } from "./pack.ts";

/** Largest quantised activation value: 127 = 7-bit activations (fast relaxed dot), 255 = full u8. */
export const ACT_QMAX_DEFAULT = 127;

/** Per-tensor asymmetric activation quantisation: x ~ (q - zeroPoint) * scale, q in [0, qmax]. */
export interface ActQuantParams {
  scale: number;
  zeroPoint: number;
  /** 127 (default) or 255. */
  qmax?: number;
  /**
   * The weights' range the layer pairs with these activations: 127 (default, int8 [-127, 127]) or 63 (7-bit
   * weights [-63, 63]). With 8-bit activations, 7-bit weights keep every pair sum of x86's i16 dot
   * (pmaddubsw: 2 * 255 * 63 < 2^15) from saturating, so 8-bit activations run exactly on the relaxed dot
   * without AVX-VNNI (src/nn/int8.ts); the bit moves from the per-tensor activations to the per-channel weights.
   */
  weightQmax?: number;
}

/** Default weight range: int8 [-127, 127]. */
export const WEIGHT_QMAX_DEFAULT = 127;

/**
 * The activation and weight ranges a new calibration records by default (stepq calibrate --act-bits /
 * --weight-bits; files without the fields keep meaning 7-bit activations and int8 weights): 8-bit
 * activations with 7-bit weights. On fashion-sd-tiny (n = 1000, docs/quality.md) all-INT8 went from 28.27
 * to 33.38 dB PSNR against FP32 (paired +5.11 dB, 95% [5.00, 5.23]) at the same kernel speed: the split
 * dot is exact on them on x86 with or without AVX-VNNI (src/nn/int8.ts), and where no relaxed sequence is
 * (Arm), such layers take the exact i16 path.
 */
export const INT8_CALIBRATION_DEFAULT: { actQmax: 127 | 255; weightQmax: 127 | 63 } = { actQmax: 255, weightQmax: 63 };

// ---------------------------------------------------------------------------------------------
// BF16

const cvtF32 = new Float32Array(1);
const cvtU32 = new Uint32Array(cvtF32.buffer);

/** bf16 bits of the f32 bit pattern u (round to nearest even; NaN -> quiet NaN with sign and top payload kept). */
export function f32BitsToBf16Bits(u: number): number {
  u >>>= 0;
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) return ((u >>> 16) | 0x0040) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bf16 bits of x rounded to float32 then to bf16 (RNE). NaN -> 0x7fc0 (a JS number carries no payload). */
export function f32ToBf16Bits(x: number): number {
  if (x !== x) return 0x7fc0;
  cvtF32[0] = x;
  return f32BitsToBf16Bits(cvtU32[0]);
}

/** The value of bf16 bits b. */
export function bf16BitsToF32(b: number): number {
  cvtU32[0] = (b & 0xffff) << 16;
  return cvtF32[0];
}

/** x rounded to the nearest bf16 value (as a number). */
export function roundBf16(x: number): number {
  return bf16BitsToF32(f32ToBf16Bits(x));
}

/** bf16 bits of every element (bit-exact on the f32 patterns, NaN payloads kept). */
export function f32ArrayToBf16Bits(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32BitsToBf16Bits(u[i]);
  return out;
}

/** A copy of x with every element rounded to bf16 (bit-exact, NaN payloads kept). */
export function roundBf16Array(x: Float32Array): Float32Array {
  const bits = f32ArrayToBf16Bits(x);
  const out = new Float32Array(x.length);
  const ou = new Uint32Array(out.buffer);
  for (let i = 0; i < x.length; i++) ou[i] = bits[i] << 16;
  return out;
}

// ---------------------------------------------------------------------------------------------
// INT8

/** Round half to even (the rounding of f32.nearest / torch.round / nearbyint). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Symmetric per-output-channel INT8 quantisation of w [out, inF]: scale[o] = f32(max|w[o]| / 127),
 * q = clamp(round_half_even(f32(w / scale)), -127, 127). An all-zero channel gets scale 1 (q = 0).
 */
export function quantizeWeightsPerChannel(w: ArrayLike<number>, out: number, inF: number, qmax: number = WEIGHT_QMAX_DEFAULT): { q: Int8Array; scales: Float32Array } {
  if (w.length !== out * inF) throw new RangeError(`quantizeWeightsPerChannel: ${w.length} weights for [${out}, ${inF}]`);
  checkWeightQmax(qmax);
  const q = new Int8Array(out * inF);
  const scales = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    const base = o * inF;
    let m = 0;
    for (let k = 0; k < inF; k++) {
      const a = Math.abs(w[base + k]);
      if (a > m) m = a; // NaN never wins
    }
    if (!Number.isFinite(m)) throw new RangeError(`quantizeWeightsPerChannel: channel ${o} has non-finite weights`);
    const s = m > 0 ? Math.fround(m / qmax) : 1;
    scales[o] = s;
    for (let k = 0; k < inF; k++) {
      const v = Math.fround(w[base + k] / s);
      // round half to even, clamp to [-qmax, qmax] (the Int8Array store turns -0 into 0)
      let r = Math.round(v);
      if (r - v === 0.5 && (r & 1) !== 0) r -= 1;
      q[base + k] = r > qmax ? qmax : r < -qmax ? -qmax : r;
    }
  }
  return { q, scales };
}

/**
 * Asymmetric activation parameters for values observed in [min, max]: the range is widened to include 0,
 * scale = f32((max - min) / qmax), zeroPoint = clamp(round_half_even(-min / scale), 0, qmax), so 0.0 maps
 * exactly to zeroPoint (zero padding is exact). A degenerate range [0, 0] gets scale 1.
 */
export function actParamsFromRange(min: number, max: number, qmax: number = ACT_QMAX_DEFAULT, weightQmax: number = WEIGHT_QMAX_DEFAULT): Required<ActQuantParams> {
  if (!(Number.isFinite(min) && Number.isFinite(max)) || min > max) throw new RangeError(`actParamsFromRange: bad range [${min}, ${max}]`);
  checkQmax(qmax);
  checkWeightQmax(weightQmax);
  const lo = Math.min(min, 0), hi = Math.max(max, 0);
  let scale = Math.fround((hi - lo) / qmax);
  if (!(scale > 0)) scale = 1;
  const z = roundHalfEven(-lo / scale);
  return { scale, zeroPoint: Math.min(qmax, Math.max(0, z)), qmax, weightQmax };
}

function checkWeightQmax(q: number): void {
  if (q !== 127 && q !== 63) throw new RangeError(`weight qmax must be 127 (int8) or 63 (7-bit), got ${q}`);
}

function checkQmax(qmax: number): void {
  if (qmax !== 127 && qmax !== 255) throw new RangeError(`activation qmax must be 127 (7-bit) or 255 (u8), got ${qmax}`);
}

/** Validated params with f32 scale, f32 1/scale (the kernel multiplies by it) and qmax filled in. */
export function normalizeActParams(p: ActQuantParams): { scale: number; invScale: number; zeroPoint: number; qmax: number; weightQmax: number } {
  const qmax = p.qmax ?? ACT_QMAX_DEFAULT;
  checkQmax(qmax);
  const weightQmax = p.weightQmax ?? WEIGHT_QMAX_DEFAULT;
  checkWeightQmax(weightQmax);
  const scale = Math.fround(p.scale);
  if (!(scale > 0) || !Number.isFinite(scale)) throw new RangeError(`activation scale must be a positive finite f32, got ${p.scale}`);
  const invScale = Math.fround(1 / scale);
  if (!Number.isFinite(invScale)) throw new RangeError(`activation scale ${p.scale} is too small`);
  if (!Number.isInteger(p.zeroPoint) || p.zeroPoint < 0 || p.zeroPoint > qmax) throw new RangeError(`zeroPoint must be an integer in [0, ${qmax}], got ${p.zeroPoint}`);
  return { scale, invScale, zeroPoint: p.zeroPoint, qmax, weightQmax };
}

/** Scalar activation quantisation, exactly as the kernel: clamp(nearest(f32(x * invScale)) + zp, 0, qmax), NaN -> zp. */
export function quantizeActValue(x: number, invScale: number, zeroPoint: number, qmax: number): number {
  let v = roundHalfEven(Math.fround(Math.fround(x) * invScale));
  if (v !== v) v = 0;
  else if (v < -zeroPoint) v = -zeroPoint;
  else if (v > qmax - zeroPoint) v = qmax - zeroPoint;
  return v + zeroPoint;
}

// ---------------------------------------------------------------------------------------------
// Engine ops

/**
 * Quantises f32 x [..., C] into u8 [..., Cp] (Cp = C rounded up to a multiple of 4 unless given; the
 * padding channels hold the zero point).
 */
export function quantizeActivations(eng: Engine, x: Tensor, p: ActQuantParams, Cp?: number): Tensor {
  const C = x.shape[x.shape.length - 1];
  const rows = x.size / Math.max(C, 1);
  const cp = Cp ?? roundUp4(C);
  if (cp < C) throw new RangeError(`quantizeActivations: Cp ${cp} < C ${C}`);
  const { invScale, zeroPoint, qmax } = normalizeActParams(p);
  x.f32(); // checks dtype and liveness
  const y = eng.empty([...x.shape.slice(0, -1), cp], "u8");
  if (C > 0) eng.run("quantize_act_u8", x.ptr, C, rows, C, y.ptr, cp, invScale, zeroPoint, qmax);
  else y.u8().fill(zeroPoint);
  return y;
}

/** A new f32 tensor holding x rounded to bf16 values (x itself if inPlace). */
export function roundBf16Tensor(eng: Engine, x: Tensor, inPlace = false): Tensor {
  x.f32();
  const y = inPlace ? x : eng.empty(x.shape, "f32");
  if (x.size > 0) eng.run("bf16_round_f32", x.ptr, y.ptr, x.size);
  return y;
}
