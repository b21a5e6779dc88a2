// NCHW (torch, golden files, diffusers tensors) <-> NHWC (this engine's activation layout) at the model
// boundary. Only inputs and outputs cross it; nothing inside the models transposes.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";

function dims4(shape: readonly number[], what: string): [number, number, number, number] {
  if (shape.length !== 4) throw new RangeError(`${what}: expected a 4-d shape, got [${shape}]`);
  return shape as [number, number, number, number];
}

/** [N,C,H,W] data to [N,H,W,C] (into `out` when given). */
export function nchwToNhwc(src: ArrayLike<number>, shape: readonly number[], out?: Float32Array): Float32Array {
  const [n, c, h, w] = dims4(shape, "nchwToNhwc");
  const hw = h * w;
  const dst = out ?? new Float32Array(n * c * hw);
  if (src.length !== n * c * hw || dst.length < n * c * hw) throw new RangeError(`nchwToNhwc: ${src.length} values for shape [${shape}]`);
  for (let b = 0; b < n; b++) {
    const base = b * c * hw;
    for (let ch = 0; ch < c; ch++) {
      const s = base + ch * hw;
      for (let p = 0; p < hw; p++) dst[base + p * c + ch] = src[s + p];
    }
  }
  return dst;
}

/** [N,H,W,C] data to [N,C,H,W] (into `out` when given). */
export function nhwcToNchw(src: ArrayLike<number>, shape: readonly number[], out?: Float32Array): Float32Array {
  const [n, h, w, c] = dims4(shape, "nhwcToNchw");
  const hw = h * w;
  const dst = out ?? new Float32Array(n * c * hw);
  if (src.length !== n * c * hw || dst.length < n * c * hw) throw new RangeError(`nhwcToNchw: ${src.length} values for shape [${shape}]`);
  for (let b = 0; b < n; b++) {
    const base = b * c * hw;
    for (let p = 0; p < hw; p++) {
      const s = base + p * c;
      for (let ch = 0; ch < c; ch++) dst[base + ch * hw + p] = src[s + ch];
    }
  }
  return dst;
}

/** An NHWC tensor [N,H,W,C] from NCHW data of shape [N,C,H,W]. */
export function tensorFromNCHW(eng: Engine, data: ArrayLike<number>, shape: readonly number[]): Tensor {
  const [n, c, h, w] = dims4(shape, "tensorFromNCHW");
  const t = eng.empty([n, h, w, c]);
  nchwToNhwc(data, shape, t.f32());
  return t;
}

/** NCHW data and shape [N,C,H,W] of an NHWC tensor [N,H,W,C]. */
export function tensorToNCHW(t: Tensor): { data: Float32Array; shape: number[] } {
  const [n, h, w, c] = dims4(t.shape, "tensorToNCHW");
  return { data: nhwcToNchw(t.f32(), t.shape), shape: [n, c, h, w] };
}

/** A copy of a tensor (same shape), allocated in the current scope. */
export function cloneTensor(t: Tensor): Tensor {
  const c = t.engine.empty(t.shape.slice(), t.dtype);
  new Uint8Array(t.engine.memory.buffer, c.ptr, c.bytes).set(new Uint8Array(t.engine.memory.buffer, t.ptr, t.bytes));
  return c;
}
