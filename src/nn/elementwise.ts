// Elementwise FP32 ops over the kernels in assembly/elementwise.ts. Every op returns a new tensor
// (eng.empty, so it belongs to the caller's scope) and leaves its inputs untouched.
import type { Tensor } from "../runtime/tensor.ts";
import { broadcastPlan } from "./tiling.ts";
import { recorder } from "./record.ts";
import {
  broadcastGrad,
  concatChannelsBackward,
  gegluBackward,
  geluBackward,
  mulBackward,
  quickGeluBackward,
  reluBackward,
  scaleBackward,
  siluBackward,
  upsample2xBackward,
} from "./backward/elementwise.ts";
import { BINARY_ADD_SCALED, BINARY_MUL, UNARY_GELU, UNARY_RELU, UNARY_SCALE, UNARY_SILU } from "../../assembly/abi.ts";

function checkF32(name: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== "f32") throw new TypeError(`${name}: expected an f32 tensor, got ${t.dtype} [${t.shape}]`);
}

function binary(name: string, a: Tensor, b: Tensor, op: number, s: number): Tensor {
  checkF32(name, a, b);
  const { P, M, N } = broadcastPlan(a.shape, b.shape, name);
  const eng = a.engine;
  const out = eng.empty(a.shape);
  if (a.size > 0) eng.run("binary_bcast_f32", a.ptr, b.ptr, out.ptr, P, M, N, op, s);
  return out;
}

/** a + b, b broadcast over a (see broadcastPlan). */
export function add(a: Tensor, b: Tensor): Tensor {
  return addScaled(a, b, 1);
}

/** a * b, b broadcast over a. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const y = binary("mul", a, b, BINARY_MUL, 1);
  recorder(a.engine, a, b)?.record({
    name: "mul",
    inputs: [a, b],
    outputs: [y],
    saved: [a, b],
    backward: ([dy]) => {
      const g = mulBackward(dy, a, b);
      return [g.da, g.db];
    },
  });
  return y;
}

/** a + s * b, b broadcast over a. */
export function addScaled(a: Tensor, b: Tensor, s: number): Tensor {
  const y = binary(s === 1 ? "add" : "addScaled", a, b, BINARY_ADD_SCALED, s);
  const bShape = b.shape.slice();
  recorder(a.engine, a, b)?.record({
    name: "add",
    inputs: [a, b],
    outputs: [y],
    saved: [],
    // dy passes to a unchanged (handed on, not copied); b's gradient sums dy over the broadcast axes
    backward: ([dy]) => [dy, s === 1 && sameShape(dy.shape, bShape) ? dy : broadcastGrad(dy, bShape, s)],
  });
  return y;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function unary(name: string, x: Tensor, op: number, alpha: number): Tensor {
  checkF32(name, x);
  const out = x.engine.empty(x.shape);
  if (x.size > 0) x.engine.run("unary_f32", x.ptr, out.ptr, x.size, op, alpha);
  return out;
}

/** Records a unary op whose backward reads its input. */
function recordUnary(name: string, x: Tensor, y: Tensor, backward: (dy: Tensor, x: Tensor) => Tensor): Tensor {
  recorder(x.engine, x)?.record({ name, inputs: [x], outputs: [y], saved: [x], backward: ([dy]) => [backward(dy, x)] });
  return y;
}

/** x * sigmoid(x) */
export function silu(x: Tensor): Tensor {
  return recordUnary("silu", x, unary("silu", x, UNARY_SILU, 1), siluBackward);
}

/** Exact GELU 0.5 x (1 + erf(x / sqrt 2)) (torch's default, approximate="none"). */
export function gelu(x: Tensor): Tensor {
  return recordUnary("gelu", x, unary("gelu", x, UNARY_GELU, 0), geluBackward);
}

/** x * sigmoid(1.702 x) (CLIP's quick_gelu). */
export function quickGelu(x: Tensor): Tensor {
  return recordUnary("quickGelu", x, unary("quickGelu", x, UNARY_SILU, 1.702), quickGeluBackward);
}

/** max(x, 0) (torch.relu: NaN stays NaN). */
export function relu(x: Tensor): Tensor {
  return recordUnary("relu", x, unary("relu", x, UNARY_RELU, 0), reluBackward);
}

/** s * x */
export function scale(x: Tensor, s: number): Tensor {
  const y = unary("scale", x, UNARY_SCALE, s);
  recorder(x.engine, x)?.record({ name: "scale", inputs: [x], outputs: [y], saved: [], backward: ([dy]) => [scaleBackward(dy, s)] });
  return y;
}

/** diffusers GEGLU on the projection output x [..., 2N]: hidden = x[..., :N], gate = x[..., N:]; hidden * gelu(gate). */
export function geglu(x: Tensor): Tensor {
  checkF32("geglu", x);
  const last = x.shape[x.shape.length - 1];
  if (x.shape.length === 0 || last % 2 !== 0) throw new Error(`geglu: last dim must be even, got [${x.shape}]`);
  const N = last / 2;
  const rows = x.size / Math.max(last, 1);
  const out = x.engine.empty([...x.shape.slice(0, -1), N]);
  if (out.size > 0) x.engine.run("geglu_f32", x.ptr, out.ptr, rows, N);
  return recordUnary("geglu", x, out, gegluBackward);
}

/** Nearest-neighbour 2x upsampling of an NHWC map [B,H,W,C] -> [B,2H,2W,C]. */
export function upsample2x(x: Tensor): Tensor {
  checkF32("upsample2x", x);
  if (x.shape.length !== 4) throw new Error(`upsample2x: expected NHWC [B,H,W,C], got [${x.shape}]`);
  const [B, H, W, C] = x.shape;
  const out = x.engine.empty([B, 2 * H, 2 * W, C]);
  if (out.size > 0) x.engine.run("upsample2x_f32", x.ptr, out.ptr, B, H, W, C);
  recorder(x.engine, x)?.record({ name: "upsample2x", inputs: [x], outputs: [out], saved: [], backward: ([dy]) => [upsample2xBackward(dy)] });
  return out;
}

/** Concatenates two NHWC maps (same B,H,W) along channels: [B,H,W,ca] ++ [B,H,W,cb] -> [B,H,W,ca+cb]. */
export function concatChannels(a: Tensor, b: Tensor): Tensor {
  checkF32("concatChannels", a, b);
  if (a.shape.length < 1 || a.shape.length !== b.shape.length || a.shape.slice(0, -1).some((d, i) => d !== b.shape[i]))
    throw new Error(`concatChannels: shapes [${a.shape}] and [${b.shape}] differ outside the last (channel) dim`);
  const ca = a.shape[a.shape.length - 1];
  const cb = b.shape[b.shape.length - 1];
  const P = a.shape.slice(0, -1).reduce((x, y) => x * y, 1);
  const out = a.engine.empty([...a.shape.slice(0, -1), ca + cb]);
  if (out.size > 0) a.engine.run("concat_channels_f32", a.ptr, b.ptr, out.ptr, P, ca, cb);
  recorder(a.engine, a, b)?.record({
    name: "concatChannels",
    inputs: [a, b],
    outputs: [out],
    saved: [],
    backward: ([dy]) => {
      const g = concatChannelsBackward(dy, ca);
      return [g.da, g.db];
    },
  });
  return out;
}

/** a += s * b in place (same shapes, or b broadcast over a as in add): gradient accumulation. Returns a. */
export function addInPlace(a: Tensor, b: Tensor, s = 1): Tensor {
  checkF32("addInPlace", a, b);
  const { P, M, N } = broadcastPlan(a.shape, b.shape, "addInPlace");
  // each output element reads only its own a element, so out = a is safe
  if (a.size > 0) a.engine.run("binary_bcast_f32", a.ptr, b.ptr, a.ptr, P, M, N, BINARY_ADD_SCALED, s);
  return a;
}
