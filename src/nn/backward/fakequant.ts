// Fake quantisation for quantisation-aware training, at exactly the numerics of the engine's INT8
// inference (src/nn/quant.ts, src/nn/int8.ts, assembly/gemm_int8.ts):
//   weights     symmetric per output channel: q = clamp(rhe(f32(w / s[n])), -wq, wq), wq = the layer's
//               weightQmax: 127 (int8) or 63 (7-bit weights, paired with 8-bit activations: the
//               calibration default, src/nn/quant.ts INT8_CALIBRATION_DEFAULT)
//   activations per tensor asymmetric: q = clamp(rhe(f32(x * (1/scale))) + zp, 0, qmax), qmax 127 (7-bit)
//               or 255 (8-bit)
// A student layer's forward IS the engine's INT8 op: its weights are quantised and packed on the engine
// (quantize_weight_i8_packed) into a LinearWeightInt8 / ConvWeightInt8 that linearInt8 / conv2dInt8 run,
// so the student computes bit for bit what `stepq generate --precision int8` computes for the same weights,
// weight scales and activation params. The backward uses the dequantised values: x^ = (q - zp) * scale,
// W^ = q * s (the straight-through estimator: dX = mask_x . (dY W^), dW = mask_w . (dY^T x^)), masked to the
// clamp range (the gradient passes where the rounded value before clamping lies in [qmin, qmax]).
//
// Weight scale formula. The engine uses s[n] = f32(max|w[n]| / wq) with q in [-wq, wq] (symmetric,
// restricted range, so 0 is exact and the relaxed dot cannot overflow), NOT torch's qint8 amax / 127.5
// with [-128, 127]. QAT keeps the engine's formula: weightScalesFromRanges() turns (moving-average)
// per-channel ranges into scales with it; weightScalesOf(w, n, wq) gives exactly the scales
// quantizeWeightsPerChannel (and so prepareLinearInt8 / the converted-weights loader) computes.
// Activation params come from a range with the engine's actParamsFromRange (src/nn/quant.ts).
//
// Observers (torch.ao arithmetic, float32): MovingAverageMinMaxObserver (activations, per tensor) and
// MovingAveragePerChannelMinMaxObserver (weights, per output channel), averaging constant 0.01: the first
// observation sets the range, later ones move it: min += c * (cur_min - min) (same for max).
//
// Learned scales (LSQ, Esser et al. 2019; LSQ+ offset, Bhalgat et al. 2020), scaled by g:
//   d xhat / d s    = (q - z) - v inside (v = the value the quantiser rounds: x / s or x * (1/s)),
//                     the clamp bound outside (qmin - z below, qmax - z above)
//   d xhat / d beta = 0 inside, 1 outside
//   g = 1 / sqrt(N * Qp): weights per channel, N = values per channel, Qp = wq; activations per tensor,
//   N = numel, Qp = qmax (torch's _LearnableFakeQuantize uses its quant_max the same way).
// Every sum has a fixed order independent of the thread count.
import type { Engine } from "../../runtime/engine.ts";
import type { Tensor } from "../../runtime/tensor.ts";
import type { Padding4 } from "../pack.ts";
import { conv2dInt8, linearInt8, usesI16Path, type ConvWeightInt8, type Int8RunOptions, type LinearWeightInt8 } from "../int8.ts";
import { normalizeActParams, WEIGHT_QMAX_DEFAULT, type ActQuantParams } from "../quant.ts";
import { roundUp4 } from "../pack.ts";
import { conv2dBackwardInput, conv2dBackwardWeight, convOutputSize, copyBias, runBiasGrad, type ConvBackwardGeometry } from "./conv.ts";
import { linearBackwardInput, linearBackwardWeight } from "./linear.ts";

const fr = Math.fround;

// ---------------------------------------------------------------------------------------------
// Observers

/** torch.ao's default averaging constant of the moving-average min/max observers. */
export const OBSERVER_AVERAGING_CONSTANT = 0.01;

export interface Range {
  min: number;
  max: number;
}

export interface ChannelRanges {
  min: Float32Array;
  max: Float32Array;
}

/** One moving-average step in float32 as torch computes it: a + f32(f32(c) * f32(cur - a)). */
function emaStep(a: number, cur: number, c: number): number {
  return fr(a + fr(fr(c) * fr(cur - a)));
}

/**
 * MovingAverageMinMaxObserver: the first observation (prev null) is the range itself, later ones move it
 * by the averaging constant c toward the current min / max (float32 arithmetic, as torch). Returns a new range.
 */
export function movingAverageMinMax(prev: Range | null, cur: Range, c = OBSERVER_AVERAGING_CONSTANT): Range {
  if (!prev) return { min: fr(cur.min), max: fr(cur.max) };
  return { min: emaStep(prev.min, cur.min, c), max: emaStep(prev.max, cur.max, c) };
}

/** MovingAveragePerChannelMinMaxObserver: movingAverageMinMax per channel. Returns new arrays. */
export function movingAverageMinMaxPerChannel(prev: ChannelRanges | null, cur: ChannelRanges, c = OBSERVER_AVERAGING_CONSTANT): ChannelRanges {
  const n = cur.min.length;
  if (cur.max.length !== n || (prev && (prev.min.length !== n || prev.max.length !== n))) throw new RangeError("movingAverageMinMaxPerChannel: channel counts differ");
  if (!prev) return { min: Float32Array.from(cur.min), max: Float32Array.from(cur.max) };
  const min = new Float32Array(n), max = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    min[i] = emaStep(prev.min[i], cur.min[i], c);
    max[i] = emaStep(prev.max[i], cur.max[i], c);
  }
  return { min, max };
}

/**
 * The engine's symmetric per-channel weight scales for per-channel ranges: s = f32(max(|min|, |max|) / wq),
 * 1 for an all-zero channel (as quantizeWeightsPerChannel, which uses the current weights' max |w|);
 * wq = the weights' range, 127 (int8) or 63 (7-bit).
 */
export function weightScalesFromRanges(r: ChannelRanges, wq: number = WEIGHT_QMAX_DEFAULT): Float32Array {
  checkWeightQmax(wq);
  const s = new Float32Array(r.min.length);
  for (let i = 0; i < s.length; i++) {
    const m = Math.max(Math.abs(r.min[i]), Math.abs(r.max[i]));
    if (!Number.isFinite(m)) throw new RangeError(`weightScalesFromRanges: channel ${i} has a non-finite range [${r.min[i]}, ${r.max[i]}]`);
    s[i] = m > 0 ? fr(m / wq) : 1;
  }
  return s;
}

/** Elements per chunk of the chunked reductions (min/max, activation LSQ sums); fixed, so results never depend on the thread count. */
const CHUNK = 4096;

/** min / max of every chunk of x on the engine (NaNs ignored). */
function minmaxChunks(x: Tensor, chunk: number): Float32Array {
  const eng = x.engine;
  x.f32();
  const nc = Math.ceil(x.size / chunk);
  const out = eng.alloc(Math.max(8, nc * 8));
  try {
    eng.run("minmax_chunks_f32", x.ptr, x.size, chunk, out);
    return new Float32Array(eng.memory.buffer, out, nc * 2).slice();
  } finally {
    eng.free(out);
  }
}

/** The range [min, max] of a tensor (NaNs ignored; an empty or all-NaN tensor gives [Inf, -Inf]). */
export function tensorRange(x: Tensor): Range {
  const mm = minmaxChunks(x, CHUNK);
  let min = Infinity, max = -Infinity;
  for (let c = 0; c < mm.length; c += 2) {
    if (mm[c] < min) min = mm[c];
    if (mm[c + 1] > max) max = mm[c + 1];
  }
  return { min, max };
}

/** Per output channel ranges of a torch-layout weight [channels, ...]. */
export function channelRanges(w: Tensor, channels: number): ChannelRanges {
  if (!(Number.isInteger(channels) && channels > 0 && w.size % channels === 0)) throw new RangeError(`channelRanges: [${w.shape}] does not split into ${channels} channels`);
  const mm = minmaxChunks(w, w.size / channels);
  const min = new Float32Array(channels), max = new Float32Array(channels);
  for (let i = 0; i < channels; i++) {
    min[i] = mm[2 * i];
    max[i] = mm[2 * i + 1];
  }
  return { min, max };
}

/** The scales quantizeWeightsPerChannel computes from the current weights w [channels, ...]: f32(max|w| / wq). */
export function weightScalesOf(w: Tensor, channels: number, wq: number = WEIGHT_QMAX_DEFAULT): Float32Array {
  return weightScalesFromRanges(channelRanges(w, channels), wq);
}

function checkWeightQmax(wq: number): void {
  if (wq !== 127 && wq !== 63) throw new RangeError(`weight qmax must be 127 (int8) or 63 (7-bit), got ${wq}`);
}

// ---------------------------------------------------------------------------------------------
// Elementwise fake quantisation and its backward

/** x^ = dequantised activations ((q - zp) * scale) as the INT8 op quantises x. New tensor, or written into out (may be x). */
export function fakeQuantActivations(x: Tensor, act: ActQuantParams, out?: Tensor): Tensor {
  const a = normalizeActParams(act);
  x.f32();
  const y = out ?? x.engine.empty(x.shape);
  if (y.size !== x.size) throw new RangeError(`fakeQuantActivations: out [${y.shape}] does not match x [${x.shape}]`);
  y.f32();
  if (x.size > 0) x.engine.run("fake_quant_act_f32", x.ptr, y.ptr, x.size, a.invScale, a.scale, a.zeroPoint, a.qmax);
  return y;
}

/** LSQ / LSQ+ gradients of a per-tensor activation quantiser, already multiplied by the gradient scale g. */
export interface ActScaleGrads {
  /** d loss / d scale. */
  scale: number;
  /** d loss / d beta (LSQ+ offset, in the activation's units: beta = -zeroPoint * scale). */
  offset: number;
}

export interface FakeQuantBackwardOptions {
  /** Write into (with accumulate: add to) this tensor instead of a new one (may be the incoming gradient). */
  out?: Tensor;
  accumulate?: boolean;
  /** Also compute the LSQ scale (and LSQ+ offset) gradients. */
  lsq?: boolean;
  /** LSQ gradient scale g (default 1 / sqrt(N * Qp), see the header). */
  gradScale?: number;
  /** Weights only: their range, 127 (int8, default) or 63 (7-bit). */
  weightQmax?: number;
}

/**
 * Backward of fakeQuantActivations: dx = dxq where x quantises inside [0, qmax] before clamping, else 0
 * (x: the forward input, dxq: the gradient of x^). With lsq, the scale / offset gradients too.
 */
export function fakeQuantActivationsBackward(x: Tensor, dxq: Tensor, act: ActQuantParams, opts: FakeQuantBackwardOptions = {}): { dx: Tensor; lsq?: ActScaleGrads } {
  const a = normalizeActParams(act);
  x.f32();
  dxq.f32();
  if (dxq.size !== x.size) throw new RangeError(`fakeQuantActivationsBackward: gradient [${dxq.shape}] does not match x [${x.shape}]`);
  const eng = x.engine;
  const dx = opts.out ?? eng.empty(x.shape);
  if (dx.size !== x.size) throw new RangeError(`fakeQuantActivationsBackward: out [${dx.shape}] does not match x [${x.shape}]`);
  dx.f32();
  const accumulate = !!opts.accumulate && !!opts.out;
  const nc = Math.ceil(x.size / CHUNK);
  const partials = opts.lsq ? eng.alloc(Math.max(8, nc * 8)) : 0;
  try {
    if (x.size > 0) eng.run("fake_quant_act_backward_f32", x.ptr, dxq.ptr, dx.ptr, x.size, a.invScale, a.zeroPoint, a.qmax, accumulate ? 1 : 0, partials, CHUNK);
    if (!opts.lsq) return { dx };
    const p = new Float32Array(eng.memory.buffer, partials, nc * 2);
    let s = 0, b = 0;
    for (let c = 0; c < nc; c++) {
      s += p[2 * c];
      b += p[2 * c + 1];
    }
    const g = opts.gradScale ?? 1 / Math.sqrt(Math.max(1, x.size) * a.qmax);
    return { dx, lsq: { scale: s * g, offset: b * g } };
  } finally {
    if (partials) eng.free(partials);
  }
}

/**
 * Backward of the weight fake quantisation for w [N, ...] (torch layout) with per-channel scales:
 * dw (+)= dwq where rhe(f32(w / s)) lies in [-wq, wq] (wq = opts.weightQmax, default 127), else 0. With lsq,
 * returns d loss / d s[n] (times g = 1 / sqrt(K * wq) per channel of K values, unless gradScale is given).
 * dw may be dwq.
 */
export function fakeQuantWeightsBackward(w: Tensor, dwq: Tensor, scales: Tensor, dw: Tensor, opts: Omit<FakeQuantBackwardOptions, "out"> = {}): Float32Array | null {
  for (const t of [w, dwq, scales, dw]) t.f32();
  const N = scales.size;
  if (dwq.size !== w.size || dw.size !== w.size || w.size % N !== 0) throw new RangeError(`fakeQuantWeightsBackward: w [${w.shape}], dwq [${dwq.shape}], dw [${dw.shape}] and ${N} scales do not match`);
  const K = w.size / N;
  const wq = opts.weightQmax ?? WEIGHT_QMAX_DEFAULT;
  checkWeightQmax(wq);
  const eng = w.engine;
  const ds = opts.lsq ? eng.alloc(N * 4) : 0;
  try {
    eng.run("fake_quant_weight_backward_f32", w.ptr, dwq.ptr, dw.ptr, N, K, scales.ptr, opts.accumulate ? 1 : 0, ds, wq);
    if (!opts.lsq) return null;
    const g = opts.gradScale ?? 1 / Math.sqrt(K * wq);
    return Float32Array.from(new Float32Array(eng.memory.buffer, ds, N), (v) => v * g);
  } finally {
    if (ds) eng.free(ds);
  }
}

// ---------------------------------------------------------------------------------------------
// Student layers: the engine INT8 weight refreshed from f32 master weights

interface FakeQuantCommon {
  /** Dequantised weights q * s, torch layout (what the backward multiplies with). */
  readonly wdq: Tensor;
  /** The per-channel weight scales currently in use (engine copy). */
  readonly scales: Tensor;
  /** sum_k q per channel (i32). */
  readonly wsum: Tensor;
}

export interface FakeQuantLinear extends FakeQuantCommon {
  readonly kind: "fakequant-linear";
  readonly out: number;
  readonly inF: number;
  /** The INT8 weight the forward runs with linearInt8 (buffers rewritten by updateFakeQuantLinear). */
  readonly int8: LinearWeightInt8;
}

export interface FakeQuantConv2d extends FakeQuantCommon {
  readonly kind: "fakequant-conv2d";
  readonly geometry: ConvBackwardGeometry;
  /** The INT8 weight the forward runs with conv2dInt8 (buffers rewritten by updateFakeQuantConv2d). */
  readonly int8: ConvWeightInt8;
}

function int8Buffers(eng: Engine, N: number, K: number, per: number, act: ActQuantParams) {
  const a = normalizeActParams(act);
  const np8 = Math.ceil(N / 8) * 8;
  return {
    int8: {
      packed: eng.zeros([np8 * K], "i8"),
      i16Path: usesI16Path(eng, a.qmax, a.weightQmax),
      corr: eng.zeros([np8], "i32"),
      scale: eng.zeros([np8], "f32"),
      bias: eng.zeros([np8], "f32"),
      act: a,
      weightScales: new Float32Array(N).fill(1),
      weightSums: new Int32Array(N),
    },
    wdq: eng.zeros([N * per]),
    scales: eng.fromArray(new Float32Array(N).fill(1), [N]),
    wsum: eng.zeros([N], "i32"),
  };
}

/**
 * A fake-quantised linear layer [out, inF] with activation params act (its qmax and weightQmax decide the
 * kernel path, the packing and the weights' range; they cannot change later). Call updateFakeQuantLinear
 * before the first forward.
 */
export function createFakeQuantLinear(eng: Engine, out: number, inF: number, act: ActQuantParams): FakeQuantLinear {
  if (!(Number.isInteger(out) && out > 0 && Number.isInteger(inF) && inF > 0)) throw new RangeError(`createFakeQuantLinear: invalid dims out=${out}, in=${inF}`);
  const kp = roundUp4(inF);
  return eng.persistent(() => {
    const b = int8Buffers(eng, out, kp, inF, act);
    return { kind: "fakequant-linear", out, inF, wdq: b.wdq, scales: b.scales, wsum: b.wsum, int8: { kind: "int8", out, inF, kp, ...b.int8 } } as FakeQuantLinear;
  });
}

/** A fake-quantised conv layer (torch weight [cout, cin, kh, kw], the given stride and padding). */
export function createFakeQuantConv2d(eng: Engine, g: ConvBackwardGeometry, act: ActQuantParams): FakeQuantConv2d {
  const { cout, cin, kh, kw, stride } = g;
  for (const v of [cout, cin, kh, kw, stride]) if (!(Number.isInteger(v) && v > 0)) throw new RangeError(`createFakeQuantConv2d: invalid geometry ${JSON.stringify(g)}`);
  const padding: Padding4 = [g.padding[0], g.padding[1], g.padding[2], g.padding[3]];
  const cp = roundUp4(cin);
  return eng.persistent(() => {
    const b = int8Buffers(eng, cout, kh * kw * cp, cin * kh * kw, act);
    const padBuf = eng.empty([kw * cp + 16], "u8");
    padBuf.u8().fill(b.int8.act.zeroPoint);
    const int8: ConvWeightInt8 = { kind: "int8", cout, cin, kh, kw, cp, stride, padding, padBuf, ...b.int8 };
    return { kind: "fakequant-conv2d", geometry: { cout, cin, kh, kw, stride, padding }, wdq: b.wdq, scales: b.scales, wsum: b.wsum, int8 } as FakeQuantConv2d;
  });
}

function checkScales(what: string, s: ArrayLike<number>, n: number): Float32Array {
  if (s.length !== n) throw new RangeError(`${what}: expected ${n} weight scales, got ${s.length}`);
  const f = Float32Array.from(s);
  for (let i = 0; i < n; i++) if (!(f[i] > 0 && Number.isFinite(f[i]))) throw new RangeError(`${what}: weight scale ${i} is ${s[i]} (must be a positive finite f32)`);
  return f;
}

/** Quantises and packs master weights w (torch layout) into fq with the given scales; refreshes bias and the activation terms. */
function updateCommon(
  what: string, fq: FakeQuantLinear | FakeQuantConv2d, N: number, cin: number, taps: number, cp: number,
  w: Tensor, bias: Tensor | null, weightScales: ArrayLike<number>, act: ActQuantParams | undefined,
): void {
  const q = fq.int8;
  w.f32();
  if (w.size !== N * cin * taps) throw new RangeError(`${what}: weight [${w.shape}] is not ${N}x${cin * taps}`);
  const s = checkScales(what, weightScales, N);
  if (act) {
    const a = normalizeActParams(act);
    if (a.qmax !== q.act.qmax) throw new RangeError(`${what}: the layer was created for activation qmax ${q.act.qmax}, got ${a.qmax}`);
    if (a.weightQmax !== q.act.weightQmax) throw new RangeError(`${what}: the layer was created for weight qmax ${q.act.weightQmax}, got ${a.weightQmax}`);
    q.act = a;
    if ("padBuf" in q) q.padBuf.u8().fill(a.zeroPoint);
  }
  fq.scales.f32().set(s);
  w.engine.run("quantize_weight_i8_packed", w.ptr, N, cin, taps, cp, fq.scales.ptr, q.packed.ptr, q.i16Path ? 1 : 0, fq.wsum.ptr, fq.wdq.ptr, q.act.weightQmax);
  q.weightScales.set(s);
  q.weightSums.set(fq.wsum.i32());
  // the epilogue terms exactly as src/nn/int8.ts writes them: corr = zp * sum q, scale = f32(sx * sw)
  const cv = q.corr.i32(), sv = q.scale.f32();
  for (let n = 0; n < N; n++) {
    cv[n] = q.act.zeroPoint * q.weightSums[n];
    sv[n] = fr(q.act.scale * s[n]);
  }
  copyBias(bias, q.bias, N);
}

/**
 * Refreshes a fake-quantised linear layer from the f32 master weight w [out, inF], bias [out] (or none)
 * and per-channel weight scales (e.g. weightScalesOf(w, out), weightScalesFromRanges(observer), or learned);
 * act: new activation params (same qmax), or keep the current ones.
 */
export function updateFakeQuantLinear(fq: FakeQuantLinear, w: Tensor, bias: Tensor | null, weightScales: ArrayLike<number>, act?: ActQuantParams): void {
  updateCommon("updateFakeQuantLinear", fq, fq.out, fq.inF, 1, fq.int8.kp, w, bias, weightScales, act);
}

/** As updateFakeQuantLinear for a conv layer: w [cout, cin, kh, kw]. */
export function updateFakeQuantConv2d(fq: FakeQuantConv2d, w: Tensor, bias: Tensor | null, weightScales: ArrayLike<number>, act?: ActQuantParams): void {
  const g = fq.geometry;
  updateCommon("updateFakeQuantConv2d", fq, g.cout, g.cin, g.kh * g.kw, fq.int8.cp, w, bias, weightScales, act);
}

/** The student forward: the engine's INT8 linear on fq's weights (bit-identical to INT8 inference). */
export function fakeQuantLinear(x: Tensor, fq: FakeQuantLinear, opts: Int8RunOptions = {}): Tensor {
  return linearInt8(x, fq.int8, opts);
}

/** The student forward of a conv layer: the engine's INT8 conv (padding: the layer's). */
export function fakeQuantConv2d(x: Tensor, fq: FakeQuantConv2d, opts: Int8RunOptions = {}): Tensor {
  return conv2dInt8(x, fq.int8, opts);
}

export interface FakeQuantLayerGrads {
  /** Weight gradient (torch layout), overwritten or (accumulate) added to. */
  dw?: Tensor | null;
  /** Bias gradient, overwritten or (accumulate) added to. */
  db?: Tensor | null;
  /** Compute dX (default true). */
  needInput?: boolean;
  accumulate?: boolean;
  /** Also return the LSQ gradients of the weight scales (per channel) and the activation scale / offset. */
  lsq?: boolean;
}

export interface FakeQuantLayerResult {
  /** d loss / d x (new tensor), null when not asked for. */
  dx: Tensor | null;
  /** LSQ: d loss / d weight scale per channel (times g). */
  weightScaleGrads?: Float32Array;
  /** LSQ / LSQ+: d loss / d activation scale and offset (times g). */
  act?: ActScaleGrads;
}

function fqBackward(
  x: Tensor, w: Tensor, dy: Tensor, fq: FakeQuantLinear | FakeQuantConv2d, grads: FakeQuantLayerGrads,
  weightGrad: (xq: Tensor, dwq: Tensor) => void, inputGrad: () => Tensor, rows: number, N: number,
): FakeQuantLayerResult {
  const eng = x.engine;
  const act = fq.int8.act;
  const accumulate = !!grads.accumulate;
  const res = eng.scope(() => {
    const r: { dx: Tensor | null; weightScaleGrads?: Float32Array; act?: ActScaleGrads } = { dx: null };
    if (grads.dw || grads.lsq) {
      // dW^ = dY^T x^, then the weight STE mask (and the LSQ sums) into dw
      const xq = fakeQuantActivations(x, act);
      const dwq = eng.empty([w.size]);
      weightGrad(xq, dwq);
      const target = grads.dw ?? dwq;
      const sg = fakeQuantWeightsBackward(w, dwq, fq.scales, target, { accumulate: accumulate && !!grads.dw, lsq: grads.lsq, weightQmax: act.weightQmax });
      if (sg) r.weightScaleGrads = sg;
    }
    if (grads.db) runBiasGrad(eng, dy.ptr, rows, N, grads.db.ptr, accumulate);
    if (grads.needInput !== false || grads.lsq) {
      const dxq = inputGrad();
      const { dx, lsq } = fakeQuantActivationsBackward(x, dxq, act, { out: dxq, lsq: grads.lsq });
      if (lsq) r.act = lsq;
      if (grads.needInput !== false) r.dx = dx;
    }
    return r;
  });
  return res;
}

/**
 * Backward of the student linear y = fakequant(x) fakequant(W)^T + b (forward: fakeQuantLinear) with the
 * masked straight-through estimator: x the forward input [..., inF], w the f32 master weight [out, inF] the
 * layer was last updated from, dY [..., out].
 */
export function fakeQuantLinearBackward(x: Tensor, w: Tensor, dy: Tensor, fq: FakeQuantLinear, grads: FakeQuantLayerGrads = {}): FakeQuantLayerResult {
  if (grads.db && grads.db.size !== fq.out) throw new RangeError(`fakeQuantLinearBackward: expected db of ${fq.out} values, got [${grads.db.shape}]`);
  if (w.size !== fq.out * fq.inF) throw new RangeError(`fakeQuantLinearBackward: expected w [${fq.out}, ${fq.inF}], got [${w.shape}]`);
  if (x.shape[x.shape.length - 1] !== fq.inF || dy.shape[dy.shape.length - 1] !== fq.out || dy.size / fq.out !== x.size / fq.inF)
    throw new RangeError(`fakeQuantLinearBackward: expected x [..., ${fq.inF}] and dY [..., ${fq.out}] with the same rows, got [${x.shape}] and [${dy.shape}]`);
  return fqBackward(
    x, w, dy, fq, grads,
    (xq, dwq) => linearBackwardWeight(xq, dy, dwq, null),
    () => linearBackwardInput(dy, fq.wdq, fq.out, fq.inF),
    dy.size / fq.out, fq.out,
  );
}

/** Backward of the student conv (forward: fakeQuantConv2d); x [B, H, W, cin], w [cout, cin, kh, kw], dY [B, Ho, Wo, cout]. */
export function fakeQuantConv2dBackward(x: Tensor, w: Tensor, dy: Tensor, fq: FakeQuantConv2d, grads: FakeQuantLayerGrads = {}): FakeQuantLayerResult {
  const g = fq.geometry;
  if (grads.db && grads.db.size !== g.cout) throw new RangeError(`fakeQuantConv2dBackward: expected db of ${g.cout} values, got [${grads.db.shape}]`);
  if (w.size !== g.cout * g.cin * g.kh * g.kw) throw new RangeError(`fakeQuantConv2dBackward: expected w [${g.cout}, ${g.cin}, ${g.kh}, ${g.kw}], got [${w.shape}]`);
  const [Ho, Wo] = convOutputSize(g, x.shape[1], x.shape[2]);
  if (x.shape.length !== 4 || x.shape[3] !== g.cin || dy.shape.length !== 4 || dy.shape[0] !== x.shape[0] || dy.shape[1] !== Ho || dy.shape[2] !== Wo || dy.shape[3] !== g.cout)
    throw new RangeError(`fakeQuantConv2dBackward: expected x [B, H, W, ${g.cin}] and dY [B, ${Ho}, ${Wo}, ${g.cout}], got [${x.shape}] and [${dy.shape}]`);
  return fqBackward(
    x, w, dy, fq, grads,
    (xq, dwq) => conv2dBackwardWeight(xq, dy, g, dwq, null),
    () => conv2dBackwardInput(dy, fq.wdq, g, x.shape),
    dy.size / g.cout, g.cout,
  );
}

/** Frees a student layer's engine memory. */
export function freeFakeQuant(fq: FakeQuantLinear | FakeQuantConv2d): void {
  for (const t of [fq.wdq, fq.scales, fq.wsum, fq.int8.packed, fq.int8.corr, fq.int8.scale, fq.int8.bias]) t.free();
  if ("padBuf" in fq.int8) fq.int8.padBuf.free();
}
