// Images out of the pipeline: the VAE's float output in [-1,1] to 8-bit RGB exactly as diffusers'
// image processor does it (float32 (x/2+0.5).clamp(0,1), then numpy (x*255).round() — round half to
// even — to uint8), and RGB8 to PNG bytes with pngjs (deterministic: same pixels, same bytes).
import * as fs from "node:fs";
import { PNG } from "pngjs";

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

/** PNG bytes (8-bit RGB, no alpha) of RGB8 HWC pixels. */
export function encodePng(rgb: Uint8Array, width: number, height: number): Uint8Array {
  if (rgb.length !== width * height * 3) throw new RangeError(`encodePng: ${rgb.length} bytes for ${width}x${height} RGB`);
  const png = new PNG({ width, height, colorType: 2, inputColorType: 2, bitDepth: 8, inputHasAlpha: false });
  png.data = Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength);
  const buf = PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false, bitDepth: 8 });
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Writes RGB8 HWC pixels as a PNG file. */
export function writePng(file: string, rgb: Uint8Array, width: number, height: number): void {
  fs.writeFileSync(file, encodePng(rgb, width, height));
}

/** Decodes a PNG file to RGB8 HWC (alpha dropped), for tests and tools. */
export function readPng(file: string): { rgb: Uint8Array; width: number; height: number } {
  const png = PNG.sync.read(fs.readFileSync(file));
  const n = png.width * png.height;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    rgb[3 * i] = png.data[4 * i];
    rgb[3 * i + 1] = png.data[4 * i + 1];
    rgb[3 * i + 2] = png.data[4 * i + 2];
  }
  return { rgb, width: png.width, height: png.height };
}
