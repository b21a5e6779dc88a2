// Elementwise FP32 ops over the kernels in assembly/elementwise.ts. Every op returns a new tensor
// (eng.empty, so it belongs to the caller's scope) and leaves its inputs untouched.
import type { Tensor } from "../runtime/tensor.ts";
import { BINARY_ADD_SCALED, BINARY_MUL, UNARY_GELU, UNARY_RELU, UNARY_SCALE, UNARY_SILU } from "../../assembly/abi.ts";

function checkF32(name: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== "f32") throw new TypeError(`${name}: expected an f32 tensor, got ${t.dtype} [${t.shape}]`);
}

/**
 * How b broadcasts over a: a viewed as [P, M, N] and b as [P, N] (b[p, n] used for every m).
 * b's shape is right-aligned against a's (missing leading dims are 1); after dropping dims where both
 * are 1, the dims must read: equal dims (P), then dims where b is 1 (M), then equal dims (N). That
 * covers same shape, suffixes ([C], [1,C] against [...,C]), [B,1,1,C] against [B,H,W,C], [B,1,C]
 * against [B,L,C] and per-position scalars ([B,H,W,1]). Anything else throws.
 */
export function broadcastPlan(aShape: readonly number[], bShape: readonly number[], op = "broadcast"): { P: number; M: number; N: number } {
  const fail = (why: string) => new Error(`${op}: cannot broadcast b [${bShape}] over a [${aShape}]: ${why}`);
  if (bShape.length > aShape.length) throw fail("b has more dims than a");
  const pad = aShape.length - bShape.length;
  let P = 1, M = 1, N = 1;
  let phase = 0; // 0: leading equal dims, 1: broadcast dims, 2: trailing equal dims
  for (let i = 0; i < aShape.length; i++) {
    const ad = aShape[i];
    const bd = i < pad ? 1 : bShape[i - pad];
    if (ad === bd && ad === 1) continue;
    if (ad === bd) {
      if (phase === 0) P *= ad;
      else {
        phase = 2;
        N *= ad;
      }
    } else if (bd === 1) {
      if (phase === 2) throw fail("only one run of broadcast dims is supported (pattern equal*, 1*, equal*)");
      phase = 1;
      M *= ad;
    } else {
      throw fail(`dim ${i} is ${ad} in a but ${bd} in b`);
    }
  }
  if (phase === 0) {
    // b has a's shape: one flat row
    N = P;
    P = 1;
  }
  return { P, M, N };
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
  return binary("add", a, b, BINARY_ADD_SCALED, 1);
}

/** a * b, b broadcast over a. */
export function mul(a: Tensor, b: Tensor): Tensor {
  return binary("mul", a, b, BINARY_MUL, 1);
}

/** a + s * b, b broadcast over a. */
export function addScaled(a: Tensor, b: Tensor, s: number): Tensor {
  return binary("addScaled", a, b, BINARY_ADD_SCALED, s);
}

function unary(name: string, x: Tensor, op: number, alpha: number): Tensor {
  checkF32(name, x);
  const out = x.engine.empty(x.shape);
  if (x.size > 0) x.engine.run("unary_f32", x.ptr, out.ptr, x.size, op, alpha);
  return out;
}

/** x * sigmoid(x) */
export function silu(x: Tensor): Tensor {
  return unary("silu", x, UNARY_SILU, 1);
}

/** Exact GELU 0.5 x (1 + erf(x / sqrt 2)) (torch's default, approximate="none"). */
export function gelu(x: Tensor): Tensor {
  return unary("gelu", x, UNARY_GELU, 0);
}

/** x * sigmoid(1.702 x) (CLIP's quick_gelu). */
export function quickGelu(x: Tensor): Tensor {
  return unary("quickGelu", x, UNARY_SILU, 1.702);
}

/** max(x, 0) (torch.relu: NaN stays NaN). */
export function relu(x: Tensor): Tensor {
  return unary("relu", x, UNARY_RELU, 0);
}

/** s * x */
export function scale(x: Tensor, s: number): Tensor {
  return unary("scale", x, UNARY_SCALE, s);
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
  return out;
}

/** Nearest-neighbour 2x upsampling of an NHWC map [B,H,W,C] -> [B,2H,2W,C]. */
export function upsample2x(x: Tensor): Tensor {
  checkF32("upsample2x", x);
  if (x.shape.length !== 4) throw new Error(`upsample2x: expected NHWC [B,H,W,C], got [${x.shape}]`);
  const [B, H, W, C] = x.shape;
  const out = x.engine.empty([B, 2 * H, 2 * W, C]);
  if (out.size > 0) x.engine.run("upsample2x_f32", x.ptr, out.ptr, B, H, W, C);
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
