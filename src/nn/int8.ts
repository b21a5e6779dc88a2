// INT8 linear and conv2d (the paper's middle denoising steps). Weights are quantised and packed once
// (prepare*); each op quantises its activations (one kernel pass, src/nn/quant.ts) and runs the packed
// GEMM or implicit-GEMM conv kernel of assembly/gemm_int8.ts, whose header defines the exact numerics;
// src/nn/reference/lowp.ts implements the same numerics in plain TypeScript.
//
//   q_x = clamp(nearest(x * (1/sx)) + zp, 0, qmax)   (per tensor; qmax 127 by default, see quant.ts)
//   q_w = per output channel symmetric int8 in [-127, 127], scale sw[n]
//   y   = f32(sum_k q_x q_w - zp * sum_k q_w) * f32(sx * sw[n]) + bias[n]
//
// Activations are f32 NHWC tensors in and out.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { INT8_FLAG_FUSED, INT8_FLAG_I16, INT8_FLAG_RAW } from "../../assembly/abi.ts";
import {
  checkDims,
  convInputSizes,
  convWeightToKOrder,
  lowpPadded,
  packInt8Panels,
  pad4,
  paddedF32,
  roundUp4,
  withPacking,
  type ConvGeometry,
  type ConvOptions,
  type ConvShape,
  type LowpRunOptions,
  type Padding4,
} from "./pack.ts";
import { type ActQuantParams, normalizeActParams, quantizeActivations, quantizeWeightsPerChannel } from "./quant.ts";

export interface Int8RunOptions extends LowpRunOptions {
  /** Store the i32 accumulators (sum q_x q_w - zp * sum q_w) instead of f32 outputs (for tests). */
  raw?: boolean;
  /**
   * Relaxed build, 7-bit activations: "fused" = i32x4.relaxed_dot_i8x16_i7x16_add_s per k-group,
   * "split" = i16 relaxed dot + pairwise widen + add (three instructions that V8 lowers better on x86
   * without AVX-VNNI), "auto" (default) = whichever is faster on this engine (measured once).
   * The integer results are identical.
   */
  dot?: "auto" | "fused" | "split";
}

export interface LinearWeightInt8 {
  kind: "int8";
  out: number;
  inF: number;
  /** inF rounded up to a multiple of 4 (quantised activation row length). */
  kp: number;
  /** Packed int8 weights (panels of 8 channels x k-groups of 4). */
  packed: Tensor;
  /** Runs the i16 kernel path (baseline build or u8 activations); the weights are then packed in k-pairs. */
  i16Path: boolean;
  /** zp * sum_k q_w[n], i32, padded to a multiple of 8. */
  corr: Tensor;
  /** f32(sx * sw[n]), padded. */
  scale: Tensor;
  /** f32 bias (0 if none), padded. */
  bias: Tensor;
  /** The activation params corr, scale (and a conv's padBuf) are currently prepared for (setInt8ActParams changes them). */
  act: { scale: number; invScale: number; zeroPoint: number; qmax: number };
  weightScales: Float32Array;
  /** sum_k q_w[n] per channel (host copy), so corr can be remade for another zero point without the weights. */
  weightSums: Int32Array;
}

export interface ConvWeightInt8 extends Omit<LinearWeightInt8, "kind" | "out" | "inF" | "kp">, ConvGeometry {
  kind: "int8";
  /** cin rounded up to a multiple of 4 (quantised pixel length). */
  cp: number;
  /** kw * cp bytes of the zero point, read for taps in the spatial padding. */
  padBuf: Tensor;
}

/**
 * Whether a layer runs the exact i16 kernel path (and so packs its weights in k-pairs): always on the
 * baseline build, and for u8 (qmax 255) activations, which the relaxed dot cannot take.
 */
export function usesI16Path(eng: Engine, qmax: number): boolean {
  return qmax > 127 || eng.simd !== "relaxed";
}

/** Shared part of the INT8 prepares: qk is [N, K] in kernel k order (K padded), scales per channel. */
function prepareInt8Common(eng: Engine, qk: Int8Array, scales: Float32Array, N: number, K: number, bias: ArrayLike<number> | null, act: ActQuantParams) {
  const a = normalizeActParams(act);
  const np8 = lowpPadded(N);
  const i16Path = usesI16Path(eng, a.qmax);
  const packed = eng.fromArray(packInt8Panels(qk, N, K, i16Path), [np8 * K], "i8");
  const weightSums = new Int32Array(N);
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += qk[n * K + k];
    weightSums[n] = s;
  }
  const corr = eng.zeros([np8], "i32");
  const scale = eng.zeros([np8], "f32");
  writeInt8ActTerms(corr, scale, weightSums, scales, a);
  return { packed, i16Path, corr, scale, bias: paddedF32(eng, bias, N, np8), act: a, weightScales: scales, weightSums };
}

/** The activation-dependent terms of an INT8 layer: corr[n] = zp * sum_k q_w[n], scale[n] = f32(sx * sw[n]). */
function writeInt8ActTerms(corr: Tensor, scale: Tensor, weightSums: Int32Array, weightScales: Float32Array, a: { scale: number; zeroPoint: number }): void {
  const cv = corr.i32(), sv = scale.f32();
  for (let n = 0; n < weightSums.length; n++) {
    cv[n] = a.zeroPoint * weightSums[n];
    sv[n] = Math.fround(a.scale * weightScales[n]);
  }
}

/**
 * Re-prepares an INT8 layer for other activation params (per-timestep calibration ranges): the activation
 * scale / zero point, corr, the epilogue scales and a conv's padding buffer, N values each, so a layer keeps
 * one copy of its weights whatever the number of ranges. The result is bit-identical to a layer prepared
 * with `act`. No work when the params are the current ones. qmax must stay the same (it decides the packing).
 */
export function setInt8ActParams(w: LinearWeightInt8 | ConvWeightInt8, act: ActQuantParams): void {
  const a = normalizeActParams(act);
  if (a.scale === w.act.scale && a.zeroPoint === w.act.zeroPoint && a.qmax === w.act.qmax) return;
  if (a.qmax !== w.act.qmax) throw new RangeError(`setInt8ActParams: the layer was prepared for qmax ${w.act.qmax}, got ${a.qmax}`);
  writeInt8ActTerms(w.corr, w.scale, w.weightSums, w.weightScales, a);
  if ("padBuf" in w) w.padBuf.u8().fill(a.zeroPoint);
  w.act = a;
}

/**
 * INT8 linear weight from f32 w [out, in] (torch layout), optional bias [out] and the layer's calibrated
 * activation parameters (see actParamsFromRange).
 */
export function prepareLinearInt8(eng: Engine, w: ArrayLike<number>, bias: ArrayLike<number> | null, out: number, inF: number, act: ActQuantParams): LinearWeightInt8 {
  checkDims("prepareLinearInt8", out, inF);
  const { q, scales } = quantizeWeightsPerChannel(w, out, inF);
  const kp = roundUp4(inF);
  const qk = new Int8Array(out * kp);
  for (let n = 0; n < out; n++) qk.set(q.subarray(n * inF, (n + 1) * inF), n * kp);
  return { kind: "int8", out, inF, kp, ...prepareInt8Common(eng, qk, scales, out, kp, bias, act) };
}

/** INT8 conv weight from f32 w [cout, cin, kh, kw] (torch layout). */
export function prepareConv2dInt8(eng: Engine, w: ArrayLike<number>, bias: ArrayLike<number> | null, shape: ConvShape, opts: ConvOptions, act: ActQuantParams): ConvWeightInt8 {
  const { cout, cin, kh, kw } = shape;
  checkDims("prepareConv2dInt8", cout, cin, kh, kw);
  const stride = opts.stride ?? 1;
  checkDims("prepareConv2dInt8 stride", stride);
  const { q, scales } = quantizeWeightsPerChannel(w, cout, cin * kh * kw);
  const cp = roundUp4(cin);
  const qk = convWeightToKOrder(q, shape, cp, new Int8Array(cout * kh * kw * cp));
  const common = prepareInt8Common(eng, qk, scales, cout, kh * kw * cp, bias, act);
  const padBuf = eng.empty([kw * cp + 16], "u8");
  padBuf.u8().fill(common.act.zeroPoint);
  return { kind: "int8", cout, cin, kh, kw, cp, stride, padding: pad4(opts.padding), padBuf, ...common };
}

const fusedDotFaster = new WeakMap<Engine, boolean>();

/**
 * Whether the fused relaxed dot-add beats the split sequence on this engine: both register-only loops
 * (peak_dot_i8 variants 0 and 1) run briefly, best of 5. Cached per engine; affects speed only.
 */
export function preferFusedDot(eng: Engine): boolean {
  if (eng.simd !== "relaxed") return false;
  let v = fusedDotFaster.get(eng);
  if (v === undefined) {
    const out = eng.alloc(16 * eng.threads);
    try {
      const time = (variant: number) => {
        let best = Infinity;
        for (let r = 0; r < 5; r++) {
          const t0 = performance.now();
          eng.run("peak_dot_i8", 2000, out, variant);
          best = Math.min(best, performance.now() - t0);
        }
        return best;
      };
      time(0);
      time(1);
      v = time(0) < 0.9 * time(1);
    } finally {
      eng.free(out);
    }
    fusedDotFaster.set(eng, v);
  }
  return v;
}

/** Largest K block of the INT8 kernels in bytes (weights block kc * N stays in L2 for N <= ~1280). */
const INT8_KC_MAX = 1024;
/** Bytes of packed activations per row block (about half of a 32 KiB L1 data cache). */
const INT8_A_BLOCK = 16384;

/**
 * Cache blocking of the INT8 kernels for an [M, K] x [K, N] product (K padded to 4): kc = K block in
 * bytes (K itself, or equal blocks of at most INT8_KC_MAX), mcT = row block in 4-row tiles (packed
 * activations mcT * 4 * kc <= INT8_A_BLOCK). Results never depend on it.
 */
export function int8Blocking(M: number, N: number, K: number): { kc: number; mcT: number } {
  void N;
  const nb = Math.max(1, Math.ceil(K / INT8_KC_MAX));
  const kc = nb === 1 ? K : roundUp4(Math.ceil(K / nb));
  const mcT = Math.max(1, Math.min(Math.ceil(M / 4), Math.floor(INT8_A_BLOCK / (4 * Math.max(kc, 4)))));
  return { kc, mcT };
}

/** Runs an INT8 kernel (args before kc, mcT, pb, flags, scratch, stride) with its packing scratch. */
function runInt8(eng: Engine, kernel: string, M: number, K: number, opts: Int8RunOptions, i16: boolean, args: number[]): void {
  const flags = int8Flags(eng, i16, opts);
  withPacking(eng, M, K, int8Blocking(M, 0, K), opts, i16 ? 2 : 1, true, (kc, mcT, scratch, stride) => eng.run(kernel, ...args, kc, mcT, opts.pb ?? 0, flags, scratch, stride));
}

function int8Flags(eng: Engine, i16: boolean, opts: Int8RunOptions): number {
  const fused = !i16 && (opts.dot === "fused" || ((opts.dot ?? "auto") === "auto" && preferFusedDot(eng)));
  return (i16 ? INT8_FLAG_I16 : 0) | (opts.raw ? INT8_FLAG_RAW : 0) | (fused ? INT8_FLAG_FUSED : 0);
}

/**
 * y [..., out] = INT8 linear of x [..., in] (f32). With raw: true, y is i32 holding the integer
 * accumulators sum q_x q_w - zp * sum q_w (for tests).
 */
export function linearInt8(x: Tensor, w: LinearWeightInt8, opts: Int8RunOptions = {}): Tensor {
  const eng = x.engine;
  const inF = x.shape[x.shape.length - 1];
  if (inF !== w.inF) throw new RangeError(`linearInt8: input [${x.shape}] does not end in ${w.inF}`);
  const M = x.size / inF;
  const y = eng.empty([...x.shape.slice(0, -1), w.out], opts.raw ? "i32" : "f32");
  if (M === 0) return y;
  const xq = quantizeActivations(eng, x, w.act, w.kp);
  try {
    runInt8(eng, "gemm_int8_packed", M, w.kp, opts, w.i16Path, [xq.ptr, w.kp, w.packed.ptr, w.corr.ptr, w.scale.ptr, w.bias.ptr, y.ptr, w.out, M, w.out, w.kp]);
  } finally {
    xq.free();
  }
  return y;
}

/** y [B, Ho, Wo, cout] = INT8 conv of x [B, H, W, cin] (f32 NHWC). padding overrides the prepared one. */
export function conv2dInt8(x: Tensor, w: ConvWeightInt8, opts: Int8RunOptions & { padding?: Padding4 } = {}): Tensor {
  const eng = x.engine;
  const p = opts.padding ? pad4(opts.padding, "conv2dInt8") : w.padding;
  const { B, H, W, Ho, Wo } = convInputSizes(x, w, p, "conv2dInt8");
  const y = eng.empty([B, Ho, Wo, w.cout], opts.raw ? "i32" : "f32");
  if (B === 0) return y;
  const xq = quantizeActivations(eng, x, w.act, w.cp);
  try {
    runInt8(eng, "conv2d_int8", B * Ho * Wo, w.kh * w.kw * w.cp, opts, w.i16Path, [
      xq.ptr, B, H, W, w.cp, w.packed.ptr, w.corr.ptr, w.scale.ptr, w.bias.ptr, y.ptr, w.cout, Ho, Wo, w.cout,
      w.kh, w.kw, w.stride, p[0], p[1], w.padBuf.ptr,
    ]);
  } finally {
    xq.free();
  }
  return y;
}
