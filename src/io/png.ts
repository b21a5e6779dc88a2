// PNG files with pngjs: RGB8 pixels to PNG bytes (deterministic: same pixels, same bytes) and back, and the
// file-level helpers (atomic write, read) for Node/Deno.
import { PNG } from "pngjs";
import { writeFileAtomic } from "./files.ts";
import { readBytes } from "./source.ts";

/** PNG bytes (8-bit RGB, no alpha) of RGB8 HWC pixels. */
export function encodePng(rgb: Uint8Array, width: number, height: number): Uint8Array {
  if (rgb.length !== width * height * 3) throw new RangeError(`encodePng: ${rgb.length} bytes for ${width}x${height} RGB`);
  const png = new PNG({ width, height, colorType: 2, inputColorType: 2, bitDepth: 8, inputHasAlpha: false });
  png.data = Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength);
  const buf = PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false, bitDepth: 8 });
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Writes RGB8 HWC pixels as a PNG file (atomically). */
export function writePng(file: string, rgb: Uint8Array, width: number, height: number): void {
  writeFileAtomic(file, encodePng(rgb, width, height));
}

/** Decodes PNG bytes to RGB8 HWC (alpha dropped). */
export function decodePng(bytes: Uint8Array): { rgb: Uint8Array; width: number; height: number } {
  const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const n = png.width * png.height;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    rgb[3 * i] = png.data[4 * i];
    rgb[3 * i + 1] = png.data[4 * i + 1];
    rgb[3 * i + 2] = png.data[4 * i + 2];
  }
  return { rgb, width: png.width, height: png.height };
}

/** Decodes a PNG file to RGB8 HWC (alpha dropped), for tests and tools. */
export async function readPng(file: string): Promise<{ rgb: Uint8Array; width: number; height: number }> {
  return decodePng(await readBytes(file, { maxBytes: 1 << 30, what: "a PNG file" }));
}
