// INT8 linear and conv2d (the paper's middle denoising steps). Weights are quantised and packed once
// (prepare*); each op quantises its activations (one kernel pass, src/nn/quant.ts) and runs the packed
// GEMM or implicit-GEMM conv kernel of assembly/gemm_int8.ts, whose header defines the exact numerics;
// src/nn/reference/lowp.ts implements the same numerics in plain TypeScript.
//
//   q_x = clamp(nearest(x * (1/sx)) + zp, 0, qmax)   (per tensor; qmax 127 by default, see quant.ts)
//   q_w = per output channel symmetric in [-wq, wq], scale sw[n] (wq = act.weightQmax: 127 by default, 63
//         for 8-bit activations on x86 without AVX-VNNI)
//   y   = f32(sum_k q_x q_w - zp * sum_k q_w) * f32(sx * sw[n]) + bias[n]
//
// Activations are f32 NHWC tensors in and out.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { INT8_FLAG_FUSED, INT8_FLAG_I16, INT8_FLAG_RAW, INT8_FLAG_SPLAT_LOAD } from "../../assembly/abi.ts";
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
  act: { scale: number; invScale: number; zeroPoint: number; qmax: number; weightQmax: number };
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
 * baseline build; for 8-bit (qmax 255) activations unless a relaxed sequence is proven exact on them for
 * the layer's weight range (int8Capabilities); and when asked (path "i16").
 */
export function usesI16Path(eng: Engine, qmax: number, weightQmax: number, path: Int8PathRequest = "auto"): boolean {
  if (eng.simd !== "relaxed" || path === "i16") return true;
  const ex = exactSequences(eng, qmax, weightQmax);
  if (ex.fused || ex.split) return false;
  if (path === "relaxed") throw new RangeError(`8-bit activations with ${weightQmax <= 63 ? "7-bit" : "int8"} weights on the relaxed dot requested, but it is not exact here: ${int8Capabilities(eng).u8Reason}`);
  return true;
}

/**
 * Kernel path request of a prepared INT8 layer: "auto" (the relaxed dot where exact, else i16), "i16" (the
 * exact i16 path even where the relaxed dot would do: tests, comparisons), "relaxed" (fail rather than fall
 * back to i16 for 8-bit activations).
 */
export type Int8PathRequest = "auto" | "i16" | "relaxed";

/** Shared part of the INT8 prepares: qk is [N, K] in kernel k order (K padded), scales per channel. */
function prepareInt8Common(eng: Engine, qk: Int8Array, scales: Float32Array, N: number, K: number, bias: ArrayLike<number> | null, act: ActQuantParams, path: Int8PathRequest) {
  const a = normalizeActParams(act);
  const np8 = lowpPadded(N);
  const i16Path = usesI16Path(eng, a.qmax, a.weightQmax, path);
  notePreparedPath(eng, int8DotPath(eng, a.qmax, a.weightQmax, i16Path));
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
  if (a.scale === w.act.scale && a.zeroPoint === w.act.zeroPoint && a.qmax === w.act.qmax && a.weightQmax === w.act.weightQmax) return;
  if (a.qmax !== w.act.qmax) throw new RangeError(`setInt8ActParams: the layer was prepared for qmax ${w.act.qmax}, got ${a.qmax}`);
  if (a.weightQmax !== w.act.weightQmax) throw new RangeError(`setInt8ActParams: the layer was prepared for weight qmax ${w.act.weightQmax}, got ${a.weightQmax}`);
  writeInt8ActTerms(w.corr, w.scale, w.weightSums, w.weightScales, a);
  if ("padBuf" in w) w.padBuf.u8().fill(a.zeroPoint);
  w.act = a;
}

/**
 * INT8 linear weight from f32 w [out, in] (torch layout), optional bias [out] and the layer's calibrated
 * activation parameters (see actParamsFromRange).
 */
export function prepareLinearInt8(eng: Engine, w: ArrayLike<number>, bias: ArrayLike<number> | null, out: number, inF: number, act: ActQuantParams, path: Int8PathRequest = "auto"): LinearWeightInt8 {
  checkDims("prepareLinearInt8", out, inF);
  const { q, scales } = quantizeWeightsPerChannel(w, out, inF, normalizeActParams(act).weightQmax);
  const kp = roundUp4(inF);
  const qk = new Int8Array(out * kp);
  for (let n = 0; n < out; n++) qk.set(q.subarray(n * inF, (n + 1) * inF), n * kp);
  return { kind: "int8", out, inF, kp, ...prepareInt8Common(eng, qk, scales, out, kp, bias, act, path) };
}

/** INT8 conv weight from f32 w [cout, cin, kh, kw] (torch layout). */
export function prepareConv2dInt8(eng: Engine, w: ArrayLike<number>, bias: ArrayLike<number> | null, shape: ConvShape, opts: ConvOptions, act: ActQuantParams, path: Int8PathRequest = "auto"): ConvWeightInt8 {
  const { cout, cin, kh, kw } = shape;
  checkDims("prepareConv2dInt8", cout, cin, kh, kw);
  const stride = opts.stride ?? 1;
  checkDims("prepareConv2dInt8 stride", stride);
  const { q, scales } = quantizeWeightsPerChannel(w, cout, cin * kh * kw, normalizeActParams(act).weightQmax);
  const cp = roundUp4(cin);
  const qk = convWeightToKOrder(q, shape, cp, new Int8Array(cout * kh * kw * cp));
  const common = prepareInt8Common(eng, qk, scales, cout, kh * kw * cp, bias, act, path);
  const padBuf = eng.empty([kw * cp + 16], "u8");
  padBuf.u8().fill(common.act.zeroPoint);
  return { kind: "int8", cout, cin, kh, kw, cp, stride, padding: pad4(opts.padding), padBuf, ...common };
}

/** Checks stored quantised weights [N, per] and their scales: |q| <= the act params' weight range, scales positive finite f32. */
function checkQuantized(what: string, q: Int8Array, scales: Float32Array, N: number, per: number, act: ActQuantParams): void {
  if (q.length !== N * per || scales.length !== N) throw new RangeError(`${what}: ${q.length} weights / ${scales.length} scales for [${N}, ${per}]`);
  const wq = normalizeActParams(act).weightQmax;
  for (let i = 0; i < q.length; i++) if (q[i] > wq || q[i] < -wq) throw new RangeError(`${what}: weight ${i} is ${q[i]}, outside the layer's range [-${wq}, ${wq}]`);
  for (let n = 0; n < N; n++) if (!(scales[n] > 0) || !Number.isFinite(scales[n])) throw new RangeError(`${what}: channel ${n} has weight scale ${scales[n]}`);
}

/**
 * INT8 linear weight from already quantised weights q [out, inF] (torch layout) and their per-channel scales
 * (any positive scales: e.g. learned by QAT; stepq converted files), bit-identical to prepareLinearInt8 when
 * q and scales are what it would compute.
 */
export function prepareLinearInt8Quantized(
  eng: Engine, q: Int8Array, scales: Float32Array, bias: ArrayLike<number> | null, out: number, inF: number, act: ActQuantParams, path: Int8PathRequest = "auto",
): LinearWeightInt8 {
  checkDims("prepareLinearInt8Quantized", out, inF);
  checkQuantized("prepareLinearInt8Quantized", q, scales, out, inF, act);
  const kp = roundUp4(inF);
  const qk = new Int8Array(out * kp);
  for (let n = 0; n < out; n++) qk.set(q.subarray(n * inF, (n + 1) * inF), n * kp);
  return { kind: "int8", out, inF, kp, ...prepareInt8Common(eng, qk, Float32Array.from(scales), out, kp, bias, act, path) };
}

/** INT8 conv weight from quantised weights q [cout, cin, kh, kw] and per-channel scales (see prepareLinearInt8Quantized). */
export function prepareConv2dInt8Quantized(
  eng: Engine, q: Int8Array, scales: Float32Array, bias: ArrayLike<number> | null, shape: ConvShape, opts: ConvOptions, act: ActQuantParams, path: Int8PathRequest = "auto",
): ConvWeightInt8 {
  const { cout, cin, kh, kw } = shape;
  checkDims("prepareConv2dInt8Quantized", cout, cin, kh, kw);
  const stride = opts.stride ?? 1;
  checkDims("prepareConv2dInt8Quantized stride", stride);
  checkQuantized("prepareConv2dInt8Quantized", q, scales, cout, cin * kh * kw, act);
  const cp = roundUp4(cin);
  const qk = convWeightToKOrder(q, shape, cp, new Int8Array(cout * kh * kw * cp));
  const common = prepareInt8Common(eng, qk, Float32Array.from(scales), cout, kh * kw * cp, bias, act, path);
  const padBuf = eng.empty([kw * cp + 16], "u8");
  padBuf.u8().fill(common.act.zeroPoint);
  return { kind: "int8", cout, cin, kh, kw, cp, stride, padding: pad4(opts.padding), padBuf, ...common };
}

/**
 * What this engine's relaxed dot can do, measured once per engine (int8Capabilities):
 * - fusedFaster: the fused relaxed dot-add beats the split sequence in the GEMM kernel itself (speed only;
 *   both give the same exact sums on 7-bit activations). V8 lowers the fused form to one vpdpbusd where
 *   the CPU has AVX-VNNI (V8 13.6+: Node 24, Deno 2.9) and to five instructions elsewhere.
 * - u8Exact: the fused dot gives the exact u8 x s8 sum on activations with the top bit set (probe_dot_u8),
 *   so layers with 8-bit activations (qmax 255) and int8 weights may run on it (AVX-VNNI's vpdpbusd).
 * - u8w7Fused / u8w7Split: the fused / split sequence is exact on 8-bit activations with 7-bit weights
 *   (|w| <= 63): x86 without AVX-VNNI (pmaddubsw reads the activation byte unsigned; 2 * 255 * 63 < 2^15,
 *   so no pair sum saturates) and AVX-VNNI both pass; engines that read the byte as signed (Arm sdot,
 *   AVX-VNNI-INT8's vpdpbssd) fail.
 * A layer whose scheme no exact relaxed sequence covers takes the exact i16 path, never a saturated one.
 */
export interface Int8Capabilities {
  fusedFaster: boolean;
  /** The kernel's activation operands by broadcast loads (faster on V8 13+) rather than lane shuffles (V8 11). */
  splatLoads: boolean;
  u8Exact: boolean;
  u8w7Fused: boolean;
  u8w7Split: boolean;
  /** Kernel timings behind fusedFaster (G ops/s, best of several), for reports; 0 when not measured. */
  fusedGops: number;
  splitGops: number;
  /** What the 8-bit probe found (the first wrong lane of each check, or "exact"). */
  u8Reason: string;
}

const capabilities = new WeakMap<Engine, Int8Capabilities>();

/** The engine's INT8 dot capabilities (measured on first use, then cached). */
export function int8Capabilities(eng: Engine): Int8Capabilities {
  let c = capabilities.get(eng);
  if (!c) {
    if (eng.simd !== "relaxed") c = { fusedFaster: false, splatLoads: false, u8Exact: false, u8w7Fused: false, u8w7Split: false, fusedGops: 0, splitGops: 0, u8Reason: "baseline build (no relaxed dot)" };
    else c = { ...timeFusedVsSplit(eng), ...probeU8Dot(eng) };
    capabilities.set(eng, c);
  }
  return c;
}

/**
 * Replaces some of the engine's measured capabilities (tests: a failing probe; benchmarks: a forced dot
 * sequence). Layers already prepared keep their packing, so call it before preparing weights.
 */
export function overrideInt8Capabilities(eng: Engine, caps: Partial<Int8Capabilities>): void {
  capabilities.set(eng, { ...int8Capabilities(eng), ...caps });
}

/** Whether the fused relaxed dot-add is the faster 7-bit sequence on this engine (int8Capabilities). */
export function preferFusedDot(eng: Engine): boolean {
  return int8Capabilities(eng).fusedFaster;
}

export interface U8ProbeCase {
  w: Int8Array;
  a: Uint8Array;
  acc: Int32Array;
}

/**
 * Probe inputs: activations with the top bit set against weights of both signs, zero and non-zero
 * accumulators; weightQmax 127: int8 weights (pair sums up to 64770), 63: 7-bit weights.
 */
export function u8ProbeCases(weightQmax: number): U8ProbeCase[] {
  const cases: U8ProbeCase[] = [];
  const W = weightQmax;
  const mk = (wf: (i: number) => number, af: (i: number) => number, acc: number[]) =>
    cases.push({ w: Int8Array.from({ length: 16 }, (_, i) => wf(i)), a: Uint8Array.from({ length: 16 }, (_, i) => af(i)), acc: Int32Array.from(acc) });
  mk(() => W, () => 255, [0, 0, 0, 0]);
  mk(() => -W, () => 255, [0, 1, -1, 1000]);
  mk((i) => (i & 1 ? -W : W), (i) => 128 + 8 * i, [7, -7, 1 << 20, -(1 << 20)]);
  mk((i) => ((i * 37) % (2 * W + 1)) - W, (i) => 255 - 5 * i, [3, 5, 7, 11]);
  let s = 12345 + W;
  const r = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 8) & 0xff;
  for (let c = 0; c < 4; c++) mk(() => (r() % (2 * W + 1)) - W, () => 128 | r(), [r() - 128, r(), -r(), 0]);
  return cases;
}

/** The exact u8 x s8 dot of a probe case (what an exact sequence must give for 8-bit activations). */
export function u8DotExpected(c: U8ProbeCase): Int32Array {
  const out = new Int32Array(4);
  for (let l = 0; l < 4; l++) {
    let s = c.acc[l];
    for (let j = 0; j < 4; j++) s += c.w[4 * l + j] * c.a[4 * l + j];
    out[l] = s;
  }
  return out;
}

/** Compares probe results (got[thread][case] = 4 lanes) with the exact dots. */
export function checkU8Probe(cases: U8ProbeCase[], got: Int32Array[][], what = "fused dot"): { ok: boolean; reason: string } {
  for (let t = 0; t < got.length; t++)
    for (let c = 0; c < cases.length; c++) {
      const want = u8DotExpected(cases[c]);
      for (let l = 0; l < 4; l++)
        if (got[t][c][l] !== want[l]) return { ok: false, reason: `${what} not exact here (thread ${t}, case ${c}, lane ${l}: ${got[t][c][l]}, exact ${want[l]})` };
    }
  return { ok: true, reason: `${what} exact (${cases.length} cases x ${got.length} threads)` };
}

/** Runs probe_dot_u8 on every thread: [thread][case] -> { fused, split } lanes. */
function runU8Probe(eng: Engine, cases: U8ProbeCase[]): { fused: Int32Array[][]; split: Int32Array[][] } {
  const inp = eng.alloc(48 * cases.length), out = eng.alloc(32 * cases.length * eng.threads);
  try {
    const bytes = new Uint8Array(eng.memory.buffer);
    cases.forEach((c, i) => {
      bytes.set(new Uint8Array(c.w.buffer, c.w.byteOffset, 16), inp + 48 * i);
      bytes.set(c.a, inp + 48 * i + 16);
      bytes.set(new Uint8Array(c.acc.buffer, c.acc.byteOffset, 16), inp + 48 * i + 32);
    });
    eng.run("probe_dot_u8", inp, cases.length, out);
    const lanes = (t: number, c: number, off: number) => new Int32Array(eng.memory.buffer.slice(out + 32 * (t * cases.length + c) + off, out + 32 * (t * cases.length + c) + off + 16));
    const fused: Int32Array[][] = [], split: Int32Array[][] = [];
    for (let t = 0; t < eng.threads; t++) {
      fused.push(cases.map((_, c) => lanes(t, c, 0)));
      split.push(cases.map((_, c) => lanes(t, c, 16)));
    }
    return { fused, split };
  } finally {
    eng.free(inp);
    eng.free(out);
  }
}

function probeU8Dot(eng: Engine): Pick<Int8Capabilities, "u8Exact" | "u8w7Fused" | "u8w7Split" | "u8Reason"> {
  const c8 = u8ProbeCases(127), c7 = u8ProbeCases(63);
  const r8 = runU8Probe(eng, c8), r7 = runU8Probe(eng, c7);
  const a = checkU8Probe(c8, r8.fused, "fused dot, 8-bit activations x int8 weights:");
  const b = checkU8Probe(c7, r7.fused, "fused dot, 8-bit activations x 7-bit weights:");
  const c = checkU8Probe(c7, r7.split, "split dot, 8-bit activations x 7-bit weights:");
  return { u8Exact: a.ok, u8w7Fused: b.ok, u8w7Split: c.ok, u8Reason: [a.reason, b.reason, c.reason].join("; ") };
}

/** Which relaxed dot sequences compute a layer's sums exactly on this engine (7-bit activations: both). */
export function exactSequences(eng: Engine, qmax: number, weightQmax: number): { fused: boolean; split: boolean } {
  if (eng.simd !== "relaxed") return { fused: false, split: false };
  if (qmax <= 127) return { fused: true, split: true };
  const c = int8Capabilities(eng);
  if (weightQmax <= 63) return { fused: c.u8w7Fused, split: c.u8w7Split };
  return { fused: c.u8Exact, split: false };
}

/**
 * Times the INT8 GEMM kernel itself with the fused and the split 7-bit dot, each with the activations
 * broadcast-loaded and shuffled (INT8_FLAG_SPLAT_LOAD), on a mid-sized product (M 256, K 512, N 128, all
 * threads), interleaved, best of 7 each: what the ops will run, so the choice follows the kernel's speed on
 * this engine and CPU, not a register loop's. About 20 ms once per engine.
 */
function timeFusedVsSplit(eng: Engine): Pick<Int8Capabilities, "fusedFaster" | "splatLoads" | "fusedGops" | "splitGops"> {
  const M = 256, K = 512, N = 128;
  const a = eng.alloc(M * K), w = eng.alloc(N * K), corr = eng.alloc(4 * N), scl = eng.alloc(4 * N), bias = eng.alloc(4 * N), y = eng.alloc(4 * M * N);
  const { kc, mcT } = int8Blocking(M, N, K);
  const stride = (mcT * 4 * kc + 63) & ~63;
  const scratch = eng.alloc(stride * eng.threads);
  try {
    const bytes = new Uint8Array(eng.memory.buffer);
    for (let i = 0; i < M * K; i++) bytes[a + i] = (i * 73) & 127;
    for (let i = 0; i < N * K; i++) bytes[w + i] = ((i * 151) % 255) - 127;
    bytes.fill(0, corr, corr + 4 * N);
    const variants = [INT8_FLAG_FUSED, 0, INT8_FLAG_FUSED | INT8_FLAG_SPLAT_LOAD, INT8_FLAG_SPLAT_LOAD];
    const best = variants.map(() => Infinity);
    const time = (flags: number) => {
      const t0 = performance.now();
      eng.run("gemm_int8_packed", a, K, w, corr, scl, bias, y, N, M, N, K, kc, mcT, 0, flags | INT8_FLAG_RAW, scratch, stride);
      return performance.now() - t0;
    };
    for (const f of variants) time(f);
    for (let r = 0; r < 7; r++) variants.forEach((f, i) => (best[i] = Math.min(best[i], time(f))));
    const splat = Math.min(best[2], best[3]) < Math.min(best[0], best[1]);
    const tf = splat ? best[2] : best[0], ts = splat ? best[3] : best[1];
    const ops = 2 * M * N * K;
    return { fusedFaster: tf < ts, splatLoads: splat, fusedGops: ops / tf / 1e6, splitGops: ops / ts / 1e6 };
  } finally {
    for (const p of [a, w, corr, scl, bias, y, scratch]) eng.free(p);
  }
}

/**
 * The kernel path of a prepared INT8 layer on its engine, for reports: "i16", or the relaxed sequence and
 * scheme: "fused-7bit", "split-7bit" (7-bit activations), "fused-8bit" (8-bit activations, int8 weights),
 * "fused-8bit-w7", "split-8bit-w7" (8-bit activations, 7-bit weights).
 */
export type Int8DotPath = "fused-8bit" | "fused-8bit-w7" | "split-8bit-w7" | "fused-7bit" | "split-7bit" | "i16";

/** The dot path an INT8 layer with this scheme takes on this engine with `dot` "auto" (the ops' default). */
export function int8DotPath(eng: Engine, qmax: number, weightQmax = 127, i16Path = usesI16Path(eng, qmax, weightQmax)): Int8DotPath {
  if (i16Path) return "i16";
  const fused = pickFused(eng, exactSequences(eng, qmax, weightQmax), "auto");
  if (qmax <= 127) return fused ? "fused-7bit" : "split-7bit";
  return weightQmax <= 63 ? (fused ? "fused-8bit-w7" : "split-8bit-w7") : "fused-8bit";
}

/** Fused or split among the exact sequences: the requested one (an error if not exact), else the faster. */
function pickFused(eng: Engine, ex: { fused: boolean; split: boolean }, dot: "auto" | "fused" | "split"): boolean {
  if (dot === "fused" && !ex.fused) throw new RangeError(`INT8: the fused dot is not exact for this layer's scheme here (${int8Capabilities(eng).u8Reason})`);
  if (dot === "split" && !ex.split) throw new RangeError(`INT8: the split dot is not exact for this layer's scheme here (it saturates 8-bit activations with int8 weights, or reads them signed)`);
  if (dot !== "auto") return dot === "fused";
  return ex.fused && (!ex.split || preferFusedDot(eng));
}

const preparedPaths = new WeakMap<Engine, Partial<Record<Int8DotPath, number>>>();

function notePreparedPath(eng: Engine, p: Int8DotPath): void {
  const m = preparedPaths.get(eng) ?? {};
  m[p] = (m[p] ?? 0) + 1;
  preparedPaths.set(eng, m);
}

/**
 * INT8 layers prepared on this engine so far, by the dot path they run (what ran: `bench --json`
 * int8_dot_paths, the generate progress line). Counts every prepare, including re-prepares.
 */
export function int8PreparedPaths(eng: Engine): Partial<Record<Int8DotPath, number>> {
  return { ...(preparedPaths.get(eng) ?? {}) };
}

/** One line for reports: the prepared layers by path, the kernel timings behind fused/split, the 8-bit probe. */
export function int8PathSummary(eng: Engine): string {
  const paths = Object.entries(int8PreparedPaths(eng)).map(([k, v]) => `${k} x ${v}`).join(", ") || "no INT8 layers";
  if (eng.simd !== "relaxed") return `${paths} (baseline build)`;
  const c = int8Capabilities(eng);
  const u8 = c.u8Exact ? "8-bit activations exact on the fused dot" : c.u8w7Split || c.u8w7Fused ? "8-bit activations exact only with 7-bit weights" : "8-bit activations take the i16 path";
  return `${paths} (kernel: fused dot ${c.fusedGops.toFixed(0)} vs split ${c.splitGops.toFixed(0)} G ops/s, activations by ${c.splatLoads ? "broadcast loads" : "shuffles"}; ${u8})`;
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
function runInt8(eng: Engine, kernel: string, M: number, K: number, opts: Int8RunOptions, i16: boolean, act: { qmax: number; weightQmax: number }, args: number[]): void {
  const flags = int8Flags(eng, i16, act, opts);
  withPacking(eng, M, K, int8Blocking(M, 0, K), opts, i16 ? 2 : 1, true, (kc, mcT, scratch, stride) => eng.run(kernel, ...args, kc, mcT, opts.pb ?? 0, flags, scratch, stride));
}

function int8Flags(eng: Engine, i16: boolean, act: { qmax: number; weightQmax: number }, opts: Int8RunOptions): number {
  // off the i16 path, only a sequence proven exact for the layer's scheme runs (pickFused throws on a
  // forced one that is not): never a silently saturated result
  const fused = !i16 && pickFused(eng, exactSequences(eng, act.qmax, act.weightQmax), opts.dot ?? "auto");
  const splat = !i16 && int8Capabilities(eng).splatLoads;
  return (i16 ? INT8_FLAG_I16 : 0) | (opts.raw ? INT8_FLAG_RAW : 0) | (fused ? INT8_FLAG_FUSED : 0) | (splat ? INT8_FLAG_SPLAT_LOAD : 0);
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
    runInt8(eng, "gemm_int8_packed", M, w.kp, opts, w.i16Path, w.act, [xq.ptr, w.kp, w.packed.ptr, w.corr.ptr, w.scale.ptr, w.bias.ptr, y.ptr, w.out, M, w.out, w.kp]);
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
    runInt8(eng, "conv2d_int8", B * Ho * Wo, w.kh * w.kw * w.cp, opts, w.i16Path, w.act, [
      xq.ptr, B, H, W, w.cp, w.packed.ptr, w.corr.ptr, w.scale.ptr, w.bias.ptr, y.ptr, w.cout, Ho, Wo, w.cout,
      w.kh, w.kw, w.stride, p[0], p[1], w.padBuf.ptr,
    ]);
  } finally {
    xq.free();
  }
  return y;
}
