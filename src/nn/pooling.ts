// Pooling ops over the kernels in assembly/pooling.ts. Every op returns a new tensor (eng.empty, so it
// belongs to the caller's scope) and leaves its input untouched.
import type { Tensor } from "../runtime/tensor.ts";

/** Output size [Ho, Wo] of maxPool2d on an h x w map: floor(h/2) x floor(w/2). */
export function maxPool2dOutSize(h: number, w: number): [number, number] {
  return [Math.floor(h / 2), Math.floor(w / 2)];
}

/**
 * 2x2 max pooling with stride 2 on an NHWC map [B,H,W,C] -> [B,floor(H/2),floor(W/2),C] (torch's
 * MaxPool2d(2), floor mode: an odd last row/column is dropped). NaN propagates.
 */
export function maxPool2d(x: Tensor): Tensor {
  if (x.dtype !== "f32") throw new TypeError(`maxPool2d: expected an f32 tensor, got ${x.dtype} [${x.shape}]`);
  if (x.shape.length !== 4) throw new Error(`maxPool2d: expected NHWC [B,H,W,C], got [${x.shape}]`);
  const [B, H, W, C] = x.shape;
  const [Ho, Wo] = maxPool2dOutSize(H, W);
  if (Ho < 1 || Wo < 1) throw new Error(`maxPool2d: a 2x2 window does not fit input [${x.shape}] (H and W must be >= 2)`);
  const out = x.engine.empty([B, Ho, Wo, C]);
  if (out.size > 0) x.engine.run("maxpool2d_f32", x.ptr, out.ptr, B, H, W, C);
  return out;
}

