// PNG files with pngjs: RGB8 pixels to PNG bytes (deterministic: same pixels, same bytes on every runtime) and
// back, and the file-level helpers (atomic write, read) for Node/Deno.
//
// Same bytes everywhere: pngjs filters the rows and frames the chunks; the deflate is pako 1.0.11 on every
// runtime. In a browser (dist/stepq.browser.js) pngjs/browser.js writes the PNG, and its deflate is pako 1.0.11
// (its zlib files are source-identical to the pako dependency: test/png.test.ts). On Node and Deno, pngjs's
// PNG.sync.write would call the host's zlib (Chromium's zlib fork in Node), a different deflate program: it
// agrees with pako today only because pngjs asks for Z_RLE, which involves no match hashing (on inputs
// deflated with the default strategy, Node 20/24's zlib and pako differ on most). So Node/Deno run pngjs's
// packer-sync steps here with pako's deflate, and the bytes depend only on the pixels.
import { PNG } from "pngjs";
// null in the browser bundle (scripts/build.mjs), where pngjs/browser.js's PNG.sync.write is used instead
import Packer from "pngjs/lib/packer.js";
import pako from "pako";
import { writeFileAtomic } from "./files.ts";
import { readBytes } from "./source.ts";

/** PNG bytes (8-bit RGB, no alpha) of RGB8 HWC pixels. */
export function encodePng(rgb: Uint8Array, width: number, height: number): Uint8Array {
  if (rgb.length !== width * height * 3) throw new RangeError(`encodePng: ${rgb.length} bytes for ${width}x${height} RGB`);
  const options = { colorType: 2, inputColorType: 2, bitDepth: 8, inputHasAlpha: false } as const;
  if (!Packer) {
    const png = new PNG({ width, height, ...options });
    png.data = rgb as Buffer; // pngjs/browser.js only indexes the pixels
    const buf = PNG.sync.write(png, options);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  // pngjs/lib/packer-sync.js (signature, IHDR, filtered rows deflated into one IDAT, IEND) with pako's deflate
  const packer = new Packer({ ...options });
  const filtered = packer.filterData(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), width, height);
  const deflated = pako.deflate(filtered, packer.getDeflateOptions());
  const buf = Buffer.concat([
    Buffer.from(PNG_SIGNATURE),
    packer.packIHDR(width, height),
    packer.packIDAT(Buffer.from(deflated.buffer, deflated.byteOffset, deflated.byteLength)),
    packer.packIEND(),
  ]);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

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
