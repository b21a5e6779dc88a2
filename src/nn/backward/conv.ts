// Backward of the NHWC conv2d (src/nn/conv.ts) for training, on f32 weights in torch layout
// [cout, cin, kh, kw] (the layout the checkpoints and prepareConv2d use; master weights and their
// gradients live in it). Kernels: assembly/gemm_backward.ts (its header explains the scheme).
//   dX: the transposed convolution, run on the forward conv kernel (conv2d_f32): stride 1 is one conv over
//       dY with the kernel flipped and in/out channels swapped; stride s is s*s such convs, one per output
//       phase (iy mod s, ix mod s) with that phase's taps, scattered into dX. The weight is repacked for
//       it on every call (cout*cin*kh*kw floats: small next to the conv itself).
//   dW: conv2d_backward_weight_f32, dW[co][ci][ky][kx] = sum over output pixels of dY * x, in pixel order.
//   db: bias_backward_f32, the sum of dY over the output pixels, in pixel order.
// Overwrite or accumulate: every function overwrites its output by default; with accumulate: true it adds
// to it (dW/db of a weight used twice, gradient accumulation over micro-batches, a dX that also receives
// another path's gradient). Results are bit-identical for any thread count.
import type { Engine } from "../../runtime/engine.ts";
import type { Tensor } from "../../runtime/tensor.ts";
import type { ConvGeometry, Padding4 } from "../pack.ts";
import { GEMM_NR, gemmBlocking, panelsFor } from "../pack.ts";

export interface BackwardOptions {
  /** Add to the output tensor instead of overwriting it (default false). */
  accumulate?: boolean;
}

export interface WeightGradOptions extends BackwardOptions {
  /** Output pixels per block of the dW kernel (> 0; default from dwBlockRows). Results do not depend on it. */
  mc?: number;
}

/** The geometry a conv backward needs: channels, kernel, stride and the padding [top, left, bottom, right]. */
export type ConvBackwardGeometry = Pick<ConvGeometry, "cout" | "cin" | "kh" | "kw" | "stride"> & { readonly padding: Padding4 };

function checkF32(what: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: expected f32 tensors, got ${t.dtype} [${t.shape}]`);
    t.f32(); // liveness
  }
}

/** Output size of the conv for an H x W input. */
export function convOutputSize(g: ConvBackwardGeometry, H: number, W: number): [number, number] {
  const p = g.padding;
  return [Math.floor((H + p[0] + p[2] - g.kh) / g.stride) + 1, Math.floor((W + p[1] + p[3] - g.kw) / g.stride) + 1];
}

function checkGeometry(what: string, g: ConvBackwardGeometry): void {
  for (const k of ["cout", "cin", "kh", "kw", "stride"] as const)
    if (!(Number.isInteger(g[k]) && g[k] > 0)) throw new RangeError(`${what}: ${k} must be a positive integer, got ${g[k]}`);
  if (g.padding.length !== 4 || !g.padding.every((v) => Number.isInteger(v) && v >= 0)) throw new RangeError(`${what}: padding must be 4 non-negative integers [top, left, bottom, right], got [${g.padding}]`);
}

/** Checks x [B, H, W, cin] / dY [B, Ho, Wo, cout] against the geometry; returns the sizes. */
function convShapes(what: string, g: ConvBackwardGeometry, dy: Tensor, inShape: readonly number[]) {
  checkGeometry(what, g);
  if (inShape.length !== 4 || inShape[3] !== g.cin) throw new RangeError(`${what}: expected an NHWC input shape [B, H, W, ${g.cin}], got [${inShape}]`);
  const [B, H, W] = inShape;
  const [Ho, Wo] = convOutputSize(g, H, W);
  if (Ho < 1 || Wo < 1) throw new RangeError(`${what}: ${g.kh}x${g.kw} kernel with padding [${g.padding}] does not fit input [${inShape}]`);
  const want = [B, Ho, Wo, g.cout];
  if (dy.shape.length !== 4 || dy.shape.some((d, i) => d !== want[i])) throw new RangeError(`${what}: expected dY [${want}] for input [${inShape}], got [${dy.shape}]`);
  return { B, H, W, Ho, Wo };
}

function checkWeight(what: string, w: Tensor, g: ConvBackwardGeometry): void {
  const want = g.cout * g.cin * g.kh * g.kw;
  if (w.size !== want) throw new RangeError(`${what}: expected a weight [${g.cout}, ${g.cin}, ${g.kh}, ${g.kw}] (${want} values), got [${w.shape}]`);
}

/** Default output pixels per dW block: the thread's packed dY block (<= 256 KiB) stays in L2, the im2col panel (mc x 64 bytes) in L1. */
export function dwBlockRows(cout: number): number {
  const tiles = Math.ceil(cout / 2);
  return Math.max(16, Math.min(256, Math.floor(262144 / (8 * tiles))));
}

/**
 * Per-thread scratch bytes of conv2d_backward_weight_f32 (its doc comment), 64-byte aligned: M output
 * pixels, K = cin*kh*kw, taps = kh*kw.
 */
export function dwScratchStride(cout: number, K: number, taps: number, M: number, mc: number, threads: number): number {
  const ct = Math.ceil(cout / 2), np = Math.ceil(K / 16);
  const cs = taps > 1 && M > mc ? 128 * Math.max(Math.ceil(np / threads) * ct, np * Math.ceil(ct / threads)) : 0;
  return (320 + mc * (80 + 8 * ct) + cs + 63) & ~63;
}

/**
 * Runs conv2d_backward_weight_f32: dw [cout, K] (torch layout, K = cin*kh*kw) from x [B, H, W, cin] and
 * dY [B, Ho, Wo, cout] (as raw pointers; the linear layer is H = 1, W = M, 1x1).
 */
export function runWeightGrad(
  eng: Engine, x: number, B: number, H: number, W: number, dy: number, Ho: number, Wo: number,
  g: ConvBackwardGeometry, dw: number, accumulate: boolean, mcOpt?: number,
): void {
  const mc = mcOpt ?? dwBlockRows(g.cout);
  if (!(Number.isInteger(mc) && mc > 0)) throw new RangeError(`weight gradient: mc must be a positive integer, got ${mc}`);
  const stride = dwScratchStride(g.cout, g.cin * g.kh * g.kw, g.kh * g.kw, B * Ho * Wo, mc, eng.threads);
  const scratch = eng.alloc(stride * eng.threads);
  try {
    eng.run(
      "conv2d_backward_weight_f32", x, B, H, W, g.cin, dy, Ho, Wo, g.cout, g.kh, g.kw, g.stride, g.padding[0], g.padding[1],
      dw, accumulate ? 1 : 0, mc, scratch, stride,
    );
  } finally {
    eng.free(scratch);
  }
}

/** db [n] (+)= column sums of dY [M, n]. */
export function runBiasGrad(eng: Engine, dy: number, M: number, n: number, db: number, accumulate: boolean): void {
  eng.run("bias_backward_f32", dy, M, n, db, accumulate ? 1 : 0);
}

/**
 * Weight (and bias) gradients of y = conv2d(x, w) + b: dw [cout, cin, kh, kw] and db [cout] (either may
 * be null) from the layer input x [B, H, W, cin] and dY [B, Ho, Wo, cout]; overwritten, or added to with
 * accumulate. Sums run over the output pixels in order (bit-identical for any thread count).
 */
export function conv2dBackwardWeight(x: Tensor, dy: Tensor, g: ConvBackwardGeometry, dw: Tensor | null, db: Tensor | null, opts: WeightGradOptions = {}): void {
  checkF32("conv2dBackwardWeight", x, dy);
  const { B, H, W, Ho, Wo } = convShapes("conv2dBackwardWeight", g, dy, x.shape);
  const eng = x.engine;
  if (dw) {
    checkF32("conv2dBackwardWeight", dw);
    checkWeight("conv2dBackwardWeight dw", dw, g);
    runWeightGrad(eng, x.ptr, B, H, W, dy.ptr, Ho, Wo, g, dw.ptr, !!opts.accumulate, opts.mc);
  }
  if (db) {
    checkF32("conv2dBackwardWeight", db);
    if (db.size !== g.cout) throw new RangeError(`conv2dBackwardWeight: expected db of ${g.cout} values, got [${db.shape}]`);
    runBiasGrad(eng, dy.ptr, B * Ho * Wo, g.cout, db.ptr, !!opts.accumulate);
  }
}

/** Taps of output phase r (iy = s*u + r) along one axis: the largest tap index with ky = r + pad (mod s), and how many. */
function phaseTaps(k: number, s: number, r: number, pad: number): { top: number; count: number } {
  const m = (((k - 1 - (r + pad)) % s) + s) % s;
  const top = k - 1 - m;
  return top < 0 ? { top, count: 0 } : { top, count: Math.floor(top / s) + 1 };
}

/**
 * dX [B, H, W, cin] of y = conv2d(x, w) for dY [B, Ho, Wo, cout] and the f32 weight w [cout, cin, kh, kw]
 * (torch layout); inShape = x's shape [B, H, W, cin] (with stride > 1 several input sizes give the same
 * output size). Returns a new tensor, or writes (accumulate: adds) into opts.out.
 */
export function conv2dBackwardInput(dy: Tensor, w: Tensor, g: ConvBackwardGeometry, inShape: readonly number[], opts: BackwardOptions & { out?: Tensor } = {}): Tensor {
  checkF32("conv2dBackwardInput", dy, w);
  checkWeight("conv2dBackwardInput", w, g);
  const { B, H, W, Ho, Wo } = convShapes("conv2dBackwardInput", g, dy, inShape);
  const eng = dy.engine;
  const out = opts.out ?? eng.empty([B, H, W, g.cin]);
  if (opts.out) {
    checkF32("conv2dBackwardInput", out);
    if (out.size !== B * H * W * g.cin) throw new RangeError(`conv2dBackwardInput: expected out of [${B}, ${H}, ${W}, ${g.cin}], got [${out.shape}]`);
  }
  const accumulate = !!opts.accumulate && !!opts.out;
  const s = g.stride, [pT, pL] = g.padding;
  const np = panelsFor(g.cin);
  const temps: number[] = [];
  const tmp = (bytes: number) => {
    const p = eng.alloc(Math.max(64, bytes));
    temps.push(p);
    return p;
  };
  try {
    const zeroBias = tmp(np * GEMM_NR * 4);
    const zeroPix = tmp(g.kw * g.cout * 4);
    new Uint8Array(eng.memory.buffer, zeroBias, np * GEMM_NR * 4).fill(0);
    new Uint8Array(eng.memory.buffer, zeroPix, g.kw * g.cout * 4).fill(0);
    const packed = tmp(np * g.kh * g.kw * g.cout * GEMM_NR * 4);
    // one stride-1 conv over dY per output phase (r, c); y: where it writes [B, Hr, Wc, cin]
    const phaseConv = (ty: { top: number; count: number }, tx: { top: number; count: number }, r: number, c: number, Hr: number, Wc: number, y: number) => {
      eng.run("pack_weight_dx_panels_f32", w.ptr, g.cout, g.cin, g.kh, g.kw, ty.top, ty.count, tx.top, tx.count, s, packed);
      const K = ty.count * tx.count * g.cout;
      const { kc, mcT, pb } = gemmBlocking(B * Hr * Wc, g.cin, K);
      const padT = (ty.top - r - pT) / s, padL = (tx.top - c - pL) / s;
      eng.run("conv2d_f32", dy.ptr, B, Ho, Wo, g.cout, packed, zeroBias, y, g.cin, Hr, Wc, g.cin, ty.count, tx.count, 1, padT, padL, zeroPix, kc, mcT, pb);
    };
    if (s === 1) {
      const y = accumulate ? tmp(out.bytes) : out.ptr;
      phaseConv({ top: g.kh - 1, count: g.kh }, { top: g.kw - 1, count: g.kw }, 0, 0, H, W, y);
      if (accumulate) eng.run("add_f32", out.ptr, y, out.ptr, out.size);
    } else {
      const phases: { r: number; c: number; Hr: number; Wc: number; ty: { top: number; count: number }; tx: { top: number; count: number } }[] = [];
      let complete = true;
      for (let r = 0; r < s; r++)
        for (let c = 0; c < s; c++) {
          const Hr = Math.ceil((H - r) / s), Wc = Math.ceil((W - c) / s);
          if (Hr <= 0 || Wc <= 0) continue;
          const ty = phaseTaps(g.kh, s, r, pT), tx = phaseTaps(g.kw, s, c, pL);
          if (ty.count === 0 || tx.count === 0) complete = false; // no tap reaches these pixels: gradient 0
          else phases.push({ r, c, Hr, Wc, ty, tx });
        }
      if (!accumulate && !complete) new Uint8Array(eng.memory.buffer, out.ptr, out.bytes).fill(0);
      const maxPix = Math.max(0, ...phases.map((p) => B * p.Hr * p.Wc));
      const y = tmp(maxPix * g.cin * 4);
      for (const p of phases) {
        phaseConv(p.ty, p.tx, p.r, p.c, p.Hr, p.Wc, y);
        eng.run("scatter_pixels_f32", y, B, p.Hr, p.Wc, g.cin, out.ptr, H, W, s, p.r, p.c, accumulate || !complete ? 1 : 0);
      }
    }
  } finally {
    for (const p of temps) eng.free(p);
  }
  return out;
}

/**
 * All gradients of y = conv2d(x, w) + b: dX (returned, or null when needInput is false), dw and db when
 * given (overwritten, or added to with accumulate; dX is always a new tensor).
 */
export function conv2dBackward(
  x: Tensor, w: Tensor, dy: Tensor, g: ConvBackwardGeometry,
  grads: { dw?: Tensor | null; db?: Tensor | null; needInput?: boolean } & WeightGradOptions = {},
): Tensor | null {
  conv2dBackwardWeight(x, dy, g, grads.dw ?? null, grads.db ?? null, grads);
  return grads.needInput === false ? null : conv2dBackwardInput(dy, w, g, x.shape);
}

/**
 * Repacks a torch-layout weight w [cout, cin, kh, kw] (and bias [cout], or zeros) into an f32 conv weight
 * prepared by prepareConv2d (same geometry), for an f32 forward on weights that change every step.
 */
export function repackConv2dWeight(w: Tensor, bias: Tensor | null, dst: { packed: Tensor; bias: Tensor; cout: number; cin: number; kh: number; kw: number }): void {
  checkF32("repackConv2dWeight", w);
  if (w.size !== dst.cout * dst.cin * dst.kh * dst.kw) throw new RangeError(`repackConv2dWeight: weight [${w.shape}] does not match [${dst.cout}, ${dst.cin}, ${dst.kh}, ${dst.kw}]`);
  w.engine.run("pack_weight_panels_f32", w.ptr, dst.cout, dst.cin, dst.kh, dst.kw, dst.packed.ptr);
  copyBias(bias, dst.bias, dst.cout);
}

/** Copies bias [n] into a padded bias tensor (zeros when null). */
export function copyBias(bias: Tensor | null, dst: Tensor, n: number): void {
  const d = dst.f32();
  if (bias) {
    if (bias.size !== n) throw new RangeError(`bias: expected ${n} values, got [${bias.shape}]`);
    d.set(bias.f32());
    d.fill(0, n);
  } else d.fill(0);
}
