// Images out of the pipeline: the VAE's float output in [-1,1] to 8-bit RGB exactly as diffusers' image
// processor does it (float32 (x/2+0.5).clamp(0,1), then numpy (x*255).round(), round half to even, to
// uint8). PNG encoding is src/io/png.ts.

/** Round half to even, like numpy's round. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** One channel value in [-1,1] (any float) to 0..255 as diffusers' postprocess + numpy_to_pil does it. */
export function toByte(x: number): number {
  let v = Math.fround(Math.fround(x / 2) + 0.5);
  if (!(v > 0)) v = 0; // NaN maps to 0 (torch.clamp keeps NaN, uint8 cast of NaN is 0 in practice)
  else if (v > 1) v = 1;
  return roundHalfEven(Math.fround(v * 255));
}

/**
 * An image in [-1,1], interleaved HWC (the VAE's NHWC output for one item: H*W*channels values), to RGB8
 * HWC. Single-channel images are replicated to RGB.
 */
export function toRgb8(hwc: ArrayLike<number>, width: number, height: number, channels = 3): Uint8Array {
  const n = width * height;
  if (hwc.length !== n * channels) throw new RangeError(`toRgb8: ${hwc.length} values for ${width}x${height}x${channels}`);
  if (channels !== 3 && channels !== 1) throw new RangeError(`toRgb8: ${channels} channels (1 or 3 supported)`);
  const out = new Uint8Array(n * 3);
  if (channels === 3) for (let i = 0; i < n * 3; i++) out[i] = toByte(hwc[i]);
  else for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = toByte(hwc[i]);
  return out;
}
