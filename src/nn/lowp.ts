// Low-precision linear and conv2d: INT8 (the paper's middle denoising steps) and emulated BF16 (the
// first/last steps). Weights are quantised / rounded and packed once (prepare*), the ops run one
// conversion kernel over the activations (quantise to u8 / round to bf16) and then the packed GEMM or
// implicit-GEMM conv kernel (assembly/gemm_int8.ts, assembly/gemm_bf16.ts; their headers define the exact
// numerics, and src/nn/reference/lowp.ts implements the same numerics in plain TS). The BF16 kernels
// round the activations themselves while packing them, so the BF16 ops need no conversion pass.
//
// INT8:  q_x = clamp(nearest(x * (1/sx)) + zp, 0, qmax)   (per tensor; qmax 127 by default, see quant.ts)
//        q_w = per output channel symmetric int8 in [-127, 127], scale sw[n]
//        y   = f32(sum_k q_x q_w - zp * sum_k q_w) * f32(sx * sw[n]) + bias[n]
// BF16:  y   = bf16(sum_k bf16(x) * bf16(w) (f32, k in order) + bf16(bias))   stored as f32
// Activations are f32 NHWC tensors in and out (BF16 outputs carry bf16 values).
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import type { ConvGeometry, ConvShape, Padding4 } from "./conv.ts";
import {
  type ActQuantParams,
  f32ArrayToBf16Bits,
  normalizeActParams,
  quantizeActivations,
  quantizeWeightsPerChannel,
  roundBf16Array,
  roundUp4,
} from "./quant.ts";

export interface ConvOptions {
  stride?: number;
  /** A number (all sides) or [top, left, bottom, right]. */
  padding?: number | Padding4;
}

/** Tuning knobs (defaults are fine); results never depend on them. */
export interface LowpRunOptions {
  /** K block (INT8: bytes of the padded K, BF16: elements); 0 = no blocking. */
  kc?: number;
  /** Row block in micro-tiles; 0 = no blocking. */
  mcT?: number;
  /** Panels (8 output channels) per panel block; 0 = the kernel's default (weights that fit in L2). */
  pb?: number;
}

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

const FLAG_I16 = 1;
const FLAG_RAW = 2;
const FLAG_FUSED = 4;

function pad4(p: number | Padding4 | undefined): Padding4 {
  if (p === undefined) return [0, 0, 0, 0];
  const a: Padding4 = typeof p === "number" ? [p, p, p, p] : [p[0], p[1], p[2], p[3]];
  for (const v of a) if (!Number.isInteger(v) || v < 0) throw new RangeError(`invalid padding ${JSON.stringify(p)}`);
  return a;
}

function checkDims(what: string, ...dims: number[]): void {
  for (const d of dims) if (!Number.isInteger(d) || d < 1) throw new RangeError(`${what}: invalid dimension ${d} in [${dims}]`);
}

function paddedF32(eng: Engine, src: ArrayLike<number> | null, n: number, np8: number, map: (v: number) => number = (v) => v): Tensor {
  const t = eng.zeros([np8], "f32");
  if (src) {
    if (src.length !== n) throw new RangeError(`bias has ${src.length} values, expected ${n}`);
    const v = t.f32();
    for (let i = 0; i < n; i++) v[i] = map(src[i]);
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// INT8

/**
 * Packs int8 weights q [N, K] (K = kp, already in kernel k order) into panels of 8 channels x k-groups of 4
 * (32 bytes; see assembly/gemm_int8.ts). Relaxed-dot layout: byte (p*K + (k & ~3))*8 + 4*j + (k & 3) holds
 * q[p*8 + j][k]; k-pair layout (i16 path): byte (p*K + (k & ~3))*8 + 16*(j >> 2) + 8*((k & 3) >> 1) +
 * 2*(j & 3) + (k & 1).
 */
export function packInt8Panels(q: Int8Array, N: number, K: number, kPairs = false): Int8Array {
  if (K % 4) throw new RangeError("packInt8Panels: K must be a multiple of 4");
  const np = Math.ceil(N / 8);
  const out = new Int8Array(np * K * 8);
  for (let n = 0; n < N; n++) {
    const p = n >> 3, j = n & 7;
    for (let k = 0; k < K; k++) {
      const g = (p * K + (k & ~3)) * 8;
      out[kPairs ? g + 16 * (j >> 2) + 8 * ((k & 3) >> 1) + 2 * (j & 3) + (k & 1) : g + 4 * j + (k & 3)] = q[n * K + k];
    }
  }
  return out;
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
  const np8 = Math.ceil(N / 8) * 8;
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
  const K = kh * kw * cp;
  const qk = new Int8Array(cout * K);
  for (let n = 0; n < cout; n++)
    for (let ci = 0; ci < cin; ci++)
      for (let ky = 0; ky < kh; ky++)
        for (let kx = 0; kx < kw; kx++) qk[n * K + (ky * kw + kx) * cp + ci] = q[((n * cin + ci) * kh + ky) * kw + kx];
  const common = prepareInt8Common(eng, qk, scales, cout, K, bias, act);
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

/**
 * Effective blocking (opts over defaults, clamped like the kernels do) and a per-thread packing scratch
 * of mcT * 4 * kc * elemBytes bytes, allocated for the duration of fn.
 */
function withPacking<T>(eng: Engine, M: number, K: number, def: { kc: number; mcT: number }, opts: LowpRunOptions, elemBytes: number, align4: boolean, fn: (kc: number, mcT: number, scratch: number, stride: number) => T): T {
  let kc = opts.kc ?? def.kc, mcT = opts.mcT ?? def.mcT;
  if (kc <= 0 || kc > K) kc = K;
  if (align4) kc = roundUp4(kc);
  const tiles = Math.ceil(M / 4);
  if (mcT <= 0 || mcT > tiles) mcT = tiles;
  const stride = (mcT * 4 * kc * elemBytes + 63) & ~63;
  const scratch = eng.alloc(Math.max(64, stride * eng.threads));
  try {
    return fn(kc, mcT, scratch, stride);
  } finally {
    eng.free(scratch);
  }
}

/** Runs an INT8 kernel (args before kc, mcT, flags, scratch, stride) with its packing scratch. */
function runInt8(eng: Engine, kernel: string, M: number, K: number, opts: Int8RunOptions, i16: boolean, args: number[]): void {
  const flags = int8Flags(eng, i16, opts);
  withPacking(eng, M, K, int8Blocking(M, 0, K), opts, i16 ? 2 : 1, true, (kc, mcT, scratch, stride) => eng.run(kernel, ...args, kc, mcT, opts.pb ?? 0, flags, scratch, stride));
}

function int8Flags(eng: Engine, i16: boolean, opts: Int8RunOptions): number {
  const fused = !i16 && (opts.dot === "fused" || ((opts.dot ?? "auto") === "auto" && preferFusedDot(eng)));
  return (i16 ? FLAG_I16 : 0) | (opts.raw ? FLAG_RAW : 0) | (fused ? FLAG_FUSED : 0);
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

function convGeometry(x: Tensor, cin: number, kh: number, kw: number, stride: number, p: Padding4, what: string) {
  if (x.shape.length !== 4 || x.shape[3] !== cin) throw new RangeError(`${what}: input [${x.shape}] is not NHWC with ${cin} channels`);
  const [B, H, W] = x.shape;
  const Ho = Math.floor((H + p[0] + p[2] - kh) / stride) + 1;
  const Wo = Math.floor((W + p[1] + p[3] - kw) / stride) + 1;
  if (Ho < 1 || Wo < 1) throw new RangeError(`${what}: output would be empty for input [${x.shape}]`);
  return { B, H, W, Ho, Wo };
}

/** y [B, Ho, Wo, cout] = INT8 conv of x [B, H, W, cin] (f32 NHWC). padding overrides the prepared one. */
export function conv2dInt8(x: Tensor, w: ConvWeightInt8, opts: Int8RunOptions & { padding?: Padding4 } = {}): Tensor {
  const eng = x.engine;
  const p = opts.padding ? pad4(opts.padding) : w.padding;
  const { B, H, W, Ho, Wo } = convGeometry(x, w.cin, w.kh, w.kw, w.stride, p, "conv2dInt8");
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

// ---------------------------------------------------------------------------------------------
// BF16

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

/** Packs bf16 bits b [N, K] into panels of 8 channels: (p*K + k)*8 + j holds b[p*8 + j][k]. */
export function packBf16Panels(b: Uint16Array, N: number, K: number): Uint16Array {
  const np = Math.ceil(N / 8);
  const out = new Uint16Array(np * K * 8);
  for (let n = 0; n < N; n++) {
    const p = n >> 3, j = n & 7;
    for (let k = 0; k < K; k++) out[(p * K + k) * 8 + j] = b[n * K + k];
  }
  return out;
}

function bf16Bias(eng: Engine, bias: ArrayLike<number> | null, N: number): Tensor {
  const np8 = Math.ceil(N / 8) * 8;
  return paddedF32(eng, bias ? roundBf16Array(Float32Array.from(bias)) : null, N, np8);
}

/** BF16 linear weight from f32 w [out, in]: weights and bias rounded to bf16 (RNE). */
export function prepareLinearBf16(eng: Engine, w: ArrayLike<number>, bias: ArrayLike<number> | null, out: number, inF: number): LinearWeightBf16 {
  checkDims("prepareLinearBf16", out, inF);
  if (w.length !== out * inF) throw new RangeError(`prepareLinearBf16: ${w.length} weights for [${out}, ${inF}]`);
  const bits = f32ArrayToBf16Bits(w instanceof Float32Array ? w : Float32Array.from(w));
  const packed = eng.fromArray(packBf16Panels(bits, out, inF), [Math.ceil(out / 8) * 8 * inF], "bf16");
  return { kind: "bf16", out, inF, packed, bias: bf16Bias(eng, bias, out) };
}

/** BF16 conv weight from f32 w [cout, cin, kh, kw]. */
export function prepareConv2dBf16(eng: Engine, w: ArrayLike<number>, bias: ArrayLike<number> | null, shape: ConvShape, opts: ConvOptions): ConvWeightBf16 {
  const { cout, cin, kh, kw } = shape;
  checkDims("prepareConv2dBf16", cout, cin, kh, kw);
  const stride = opts.stride ?? 1;
  checkDims("prepareConv2dBf16 stride", stride);
  if (w.length !== cout * cin * kh * kw) throw new RangeError(`prepareConv2dBf16: ${w.length} weights for [${cout}, ${cin}, ${kh}, ${kw}]`);
  const bits = f32ArrayToBf16Bits(w instanceof Float32Array ? w : Float32Array.from(w));
  const K = kh * kw * cin;
  const bk = new Uint16Array(cout * K);
  for (let n = 0; n < cout; n++)
    for (let ci = 0; ci < cin; ci++)
      for (let ky = 0; ky < kh; ky++)
        for (let kx = 0; kx < kw; kx++) bk[n * K + (ky * kw + kx) * cin + ci] = bits[((n * cin + ci) * kh + ky) * kw + kx];
  const packed = eng.fromArray(packBf16Panels(bk, cout, K), [Math.ceil(cout / 8) * 8 * K], "bf16");
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
  const p = opts.padding ? pad4(opts.padding) : w.padding;
  const { B, H, W, Ho, Wo } = convGeometry(x, w.cin, w.kh, w.kw, w.stride, p, "conv2dBf16");
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

/** Frees the engine memory of a prepared low-precision weight. */
export function freeLowpWeight(w: LinearWeightInt8 | ConvWeightInt8 | LinearWeightBf16 | ConvWeightBf16): void {
  for (const v of Object.values(w)) if (v && typeof v === "object" && "free" in v && typeof (v as Tensor).free === "function") (v as Tensor).free();
}
