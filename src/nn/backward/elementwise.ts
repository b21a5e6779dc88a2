// Backward of the elementwise and layout ops in src/nn/elementwise.ts, over the kernels in
// assembly/elementwise_backward.ts (and the forward kernels where the backward is a forward op: the
// gradient of a scale is a scale, of a product a product). Every function returns new tensors (in
// the caller's scope), also where the gradient is the incoming one unchanged (add): callers that can
// alias may skip those calls.
import type { Tensor } from "../../runtime/tensor.ts";
import { broadcastPlan } from "../tiling.ts";
import { BINARY_MUL, UNARY_GELU, UNARY_RELU, UNARY_SCALE, UNARY_SILU } from "../../../assembly/abi.ts";

function check(name: string, dy: Tensor, x: Tensor): void {
  if (dy.dtype !== "f32" || x.dtype !== "f32") throw new TypeError(`${name}: expected f32 tensors, got ${dy.dtype} and ${x.dtype}`);
  if (dy.shape.length !== x.shape.length || dy.shape.some((d, i) => d !== x.shape[i])) throw new Error(`${name}: dy [${dy.shape}] must match x [${x.shape}]`);
}

function unaryBackward(name: string, dy: Tensor, x: Tensor, op: number, alpha: number): Tensor {
  check(name, dy, x);
  const dx = x.engine.empty(x.shape);
  if (x.size > 0) x.engine.run("unary_backward_f32", x.ptr, dy.ptr, dx.ptr, x.size, op, alpha);
  return dx;
}

/** Backward of silu(x): dx = dy * s (1 + x (1 - s)), s = sigmoid(x). x is the forward's input. */
export function siluBackward(dy: Tensor, x: Tensor): Tensor {
  return unaryBackward("siluBackward", dy, x, UNARY_SILU, 1);
}

/** Backward of quickGelu(x) = x sigmoid(1.702 x). */
export function quickGeluBackward(dy: Tensor, x: Tensor): Tensor {
  return unaryBackward("quickGeluBackward", dy, x, UNARY_SILU, 1.702);
}

/** Backward of the exact gelu(x): dx = dy * (Phi(x) + x phi(x)). */
export function geluBackward(dy: Tensor, x: Tensor): Tensor {
  return unaryBackward("geluBackward", dy, x, UNARY_GELU, 0);
}

/** Backward of relu(x): dy where x > 0, else 0. */
export function reluBackward(dy: Tensor, x: Tensor): Tensor {
  return unaryBackward("reluBackward", dy, x, UNARY_RELU, 0);
}

/** Backward of scale(x, s): s * dy. */
export function scaleBackward(dy: Tensor, s: number): Tensor {
  if (dy.dtype !== "f32") throw new TypeError(`scaleBackward: expected f32, got ${dy.dtype}`);
  const dx = dy.engine.empty(dy.shape);
  if (dy.size > 0) dy.engine.run("unary_f32", dy.ptr, dx.ptr, dy.size, UNARY_SCALE, s);
  return dx;
}

/** Backward of geglu(x) (x [..., 2N] = hidden | gate, output [..., N]): dx [..., 2N]. */
export function gegluBackward(dy: Tensor, x: Tensor): Tensor {
  if (dy.dtype !== "f32" || x.dtype !== "f32") throw new TypeError("gegluBackward: expected f32 tensors");
  const last = x.shape[x.shape.length - 1];
  if (x.shape.length === 0 || last % 2 !== 0) throw new Error(`gegluBackward: x's last dim must be even, got [${x.shape}]`);
  const N = last / 2;
  const want = [...x.shape.slice(0, -1), N];
  if (dy.shape.length !== want.length || dy.shape.some((d, i) => d !== want[i])) throw new Error(`gegluBackward: dy [${dy.shape}] must be [${want}]`);
  const dx = x.engine.empty(x.shape);
  if (dy.size > 0) x.engine.run("geglu_backward_f32", x.ptr, dy.ptr, dx.ptr, dy.size / Math.max(N, 1), N);
  return dx;
}

/**
 * Gradient of an operand b of shape bShape that was broadcast over an output of dy's shape (see
 * broadcastPlan), times s: db = s * sum of dy over the broadcast axes (times a, when given: b's gradient
 * in a product a * b). E.g. the time embedding [B,1,1,C] added to every pixel of [B,H,W,C]: db[b, c] sums
 * the H*W pixels. Each sum runs in one thread in a fixed order (blocks of 64 rows).
 */
export function broadcastGrad(dy: Tensor, bShape: readonly number[], s = 1, a?: Tensor): Tensor {
  if (dy.dtype !== "f32") throw new TypeError(`broadcastGrad: expected f32, got ${dy.dtype}`);
  if (a) check("broadcastGrad", dy, a);
  const { P, M, N } = broadcastPlan(dy.shape, bShape, "broadcastGrad");
  const db = dy.engine.empty(bShape);
  if (db.size > 0) {
    if (dy.size === 0) new Float32Array(dy.engine.memory.buffer, db.ptr, db.size).fill(0);
    else dy.engine.run("bcast_reduce_f32", dy.ptr, a ? a.ptr : 0, db.ptr, P, M, N, s);
  }
  return db;
}

/** Backward of add(a, b) (b broadcast over a): da = dy (a copy), db = dy summed over b's broadcast axes. */
export function addBackward(dy: Tensor, bShape: readonly number[]): { da: Tensor; db: Tensor } {
  return { da: scaleBackward(dy, 1), db: broadcastGrad(dy, bShape) };
}

/** Backward of addScaled(a, b, s) = a + s b: da = dy (a copy), db = s * dy summed over b's broadcast axes. */
export function addScaledBackward(dy: Tensor, bShape: readonly number[], s: number): { da: Tensor; db: Tensor } {
  return { da: scaleBackward(dy, 1), db: broadcastGrad(dy, bShape, s) };
}

/** Backward of mul(a, b) (b broadcast over a): da = dy * b (broadcast), db = sum over the broadcast axes of dy * a. */
export function mulBackward(dy: Tensor, a: Tensor, b: Tensor): { da: Tensor; db: Tensor } {
  check("mulBackward", dy, a);
  if (b.dtype !== "f32") throw new TypeError(`mulBackward: b must be f32, got ${b.dtype}`);
  const { P, M, N } = broadcastPlan(a.shape, b.shape, "mulBackward");
  const da = a.engine.empty(a.shape);
  if (a.size > 0) a.engine.run("binary_bcast_f32", dy.ptr, b.ptr, da.ptr, P, M, N, BINARY_MUL, 1);
  return { da, db: broadcastGrad(dy, b.shape, 1, a) };
}

/** Backward of upsample2x: dy [B,2H,2W,C] -> dx [B,H,W,C], each input pixel the sum of its 4 copies. */
export function upsample2xBackward(dy: Tensor): Tensor {
  if (dy.dtype !== "f32") throw new TypeError(`upsample2xBackward: expected f32, got ${dy.dtype}`);
  if (dy.shape.length !== 4 || dy.shape[1] % 2 || dy.shape[2] % 2) throw new Error(`upsample2xBackward: expected NHWC [B,2H,2W,C], got [${dy.shape}]`);
  const [B, H2, W2, C] = dy.shape;
  const dx = dy.engine.empty([B, H2 / 2, W2 / 2, C]);
  if (dx.size > 0) dy.engine.run("upsample2x_backward_f32", dy.ptr, dx.ptr, B, H2 / 2, W2 / 2, C);
  return dx;
}

/** Backward of concatChannels(a, b) with a's channel count ca: splits dy [..., ca+cb] into da [..., ca], db [..., cb]. */
export function concatChannelsBackward(dy: Tensor, ca: number): { da: Tensor; db: Tensor } {
  if (dy.dtype !== "f32") throw new TypeError(`concatChannelsBackward: expected f32, got ${dy.dtype}`);
  const co = dy.shape[dy.shape.length - 1];
  if (dy.shape.length < 1 || !Number.isInteger(ca) || ca < 0 || ca > co) throw new Error(`concatChannelsBackward: cannot split [${dy.shape}] at channel ${ca}`);
  const cb = co - ca;
  const lead = dy.shape.slice(0, -1);
  const P = lead.reduce((x, y) => x * y, 1);
  const da = dy.engine.empty([...lead, ca]);
  const db = dy.engine.empty([...lead, cb]);
  if (dy.size > 0) dy.engine.run("concat_channels_backward_f32", dy.ptr, da.ptr, db.ptr, P, ca, cb);
  return { da, db };
}
