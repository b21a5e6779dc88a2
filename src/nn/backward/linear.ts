// Backward of the linear layer y[..., out] = x[..., in] W^T + b (src/nn/linear.ts) for training, on an
// f32 weight in torch layout W [out, in]:
//   dX [M, in]  = dY [M, out] W        gemm_f32_packed (the forward kernel) with W packed as its B operand
//                                      (pack_weight_dx_panels_f32, every call: out*in floats)
//   dW [out, in] = dY^T X              conv2d_backward_weight_f32 as a 1x1 conv (sum over rows in order)
//   db [out]    = sum over rows of dY  bias_backward_f32
// dW/db are overwritten by default, added to with accumulate: true (see src/nn/backward/conv.ts).
import type { Tensor } from "../../runtime/tensor.ts";
import { GEMM_NR, gemmBlocking, panelsFor } from "../pack.ts";
import { copyBias, runBiasGrad, runWeightGrad, type BackwardOptions, type WeightGradOptions } from "./conv.ts";

function checkF32(what: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: expected f32 tensors, got ${t.dtype} [${t.shape}]`);
    t.f32();
  }
}

/** Rows M of x [..., inF] and dY [..., out] (same leading dims). */
function rowsOf(what: string, x: readonly number[], dy: readonly number[], inF: number, out: number): number {
  if (x.length < 1 || x[x.length - 1] !== inF) throw new RangeError(`${what}: expected x [..., ${inF}], got [${x}]`);
  if (dy.length !== x.length || dy[dy.length - 1] !== out || dy.slice(0, -1).some((d, i) => d !== x[i]))
    throw new RangeError(`${what}: expected dY [${[...x.slice(0, -1), out]}] for x [${x}], got [${dy}]`);
  return x.slice(0, -1).reduce((a, b) => a * b, 1);
}

/** dX [..., inF] = dY [..., out] W for the f32 weight w [out, inF]. New tensor, or written (accumulate: added) into opts.out. */
export function linearBackwardInput(dy: Tensor, w: Tensor, out: number, inF: number, opts: BackwardOptions & { out?: Tensor } = {}): Tensor {
  checkF32("linearBackwardInput", dy, w);
  if (w.size !== out * inF) throw new RangeError(`linearBackwardInput: expected a weight [${out}, ${inF}], got [${w.shape}]`);
  if (dy.shape.length < 1 || dy.shape[dy.shape.length - 1] !== out) throw new RangeError(`linearBackwardInput: expected dY [..., ${out}], got [${dy.shape}]`);
  const eng = dy.engine;
  const M = dy.size / out;
  const dx = opts.out ?? eng.empty([...dy.shape.slice(0, -1), inF]);
  if (opts.out) {
    checkF32("linearBackwardInput", dx);
    if (dx.size !== M * inF) throw new RangeError(`linearBackwardInput: expected out of ${M}x${inF} values, got [${dx.shape}]`);
  }
  const accumulate = !!opts.accumulate && !!opts.out;
  const np = panelsFor(inF);
  const packed = eng.alloc(np * out * GEMM_NR * 4);
  const zeroBias = eng.alloc(np * GEMM_NR * 4);
  const y = accumulate ? eng.alloc(Math.max(4, M * inF * 4)) : dx.ptr;
  try {
    new Uint8Array(eng.memory.buffer, zeroBias, np * GEMM_NR * 4).fill(0);
    eng.run("pack_weight_dx_panels_f32", w.ptr, out, inF, 1, 1, 0, 1, 0, 1, 1, packed);
    const { kc, mcT, pb } = gemmBlocking(M, inF, out);
    eng.run("gemm_f32_packed", dy.ptr, out, packed, zeroBias, y, inF, M, inF, out, kc, mcT, pb);
    if (accumulate) eng.run("add_f32", dx.ptr, y, dx.ptr, M * inF);
  } finally {
    if (accumulate) eng.free(y);
    eng.free(zeroBias);
    eng.free(packed);
  }
  return dx;
}

/**
 * dw [out, inF] = dY^T x and db [out] = column sums of dY (either may be null) for x [..., inF] and
 * dY [..., out]; overwritten, or added to with accumulate. Sums run over the rows in order.
 */
export function linearBackwardWeight(x: Tensor, dy: Tensor, dw: Tensor | null, db: Tensor | null, opts: WeightGradOptions = {}): void {
  checkF32("linearBackwardWeight", x, dy);
  const inF = x.shape[x.shape.length - 1], out = dy.shape[dy.shape.length - 1];
  const M = rowsOf("linearBackwardWeight", x.shape, dy.shape, inF, out);
  const eng = x.engine;
  if (dw) {
    checkF32("linearBackwardWeight", dw);
    if (dw.size !== out * inF) throw new RangeError(`linearBackwardWeight: expected dw [${out}, ${inF}], got [${dw.shape}]`);
    runWeightGrad(eng, x.ptr, 1, 1, M, dy.ptr, 1, M, { cout: out, cin: inF, kh: 1, kw: 1, stride: 1, padding: [0, 0, 0, 0] }, dw.ptr, !!opts.accumulate, opts.mc);
  }
  if (db) {
    checkF32("linearBackwardWeight", db);
    if (db.size !== out) throw new RangeError(`linearBackwardWeight: expected db of ${out} values, got [${db.shape}]`);
    runBiasGrad(eng, dy.ptr, M, out, db.ptr, !!opts.accumulate);
  }
}

/**
 * All gradients of y = x W^T + b: dX (returned, or null when needInput is false), dw / db when given
 * (overwritten, or added to with accumulate; dX is always a new tensor).
 */
export function linearBackward(
  x: Tensor, w: Tensor, dy: Tensor,
  grads: { dw?: Tensor | null; db?: Tensor | null; needInput?: boolean } & WeightGradOptions = {},
): Tensor | null {
  linearBackwardWeight(x, dy, grads.dw ?? null, grads.db ?? null, grads);
  if (grads.needInput === false) return null;
  return linearBackwardInput(dy, w, dy.shape[dy.shape.length - 1], x.shape[x.shape.length - 1]);
}

/**
 * Repacks a torch-layout weight w [out, inF] (and bias [out], or zeros) into an f32 linear weight prepared
 * by prepareLinear, for an f32 forward on weights that change every step.
 */
export function repackLinearWeight(w: Tensor, bias: Tensor | null, dst: { packed: Tensor; bias: Tensor; out: number; inF: number }): void {
  checkF32("repackLinearWeight", w);
  if (w.size !== dst.out * dst.inF) throw new RangeError(`repackLinearWeight: weight [${w.shape}] does not match [${dst.out}, ${dst.inF}]`);
  w.engine.run("pack_weight_panels_f32", w.ptr, dst.out, dst.inF, 1, 1, dst.packed.ptr);
  copyBias(bias, dst.bias, dst.out);
}
