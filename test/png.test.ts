// PNG bytes are the same on every runtime (issue 11: the demo page's PNG must equal `stepq generate`'s).
// src/io/png.ts writes PNGs with pngjs's packer and pako's deflate on Node/Deno; the browser bundle uses
// pngjs/browser.js, whose deflate is the pako it carries. Checked here: (1) that carried pako is, file for
// file, the source of the pako dependency, and (2) encodePng's bytes equal pngjs/browser.js's for images of
// many sizes and kinds (pngjs/browser.js runs under Node too). test/browser.test.ts checks it end to end.
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { decodePng, encodePng } from "../src/io/png.ts";

const require = createRequire(import.meta.url);
const BrowserPNG = require("pngjs/browser.js").PNG;

function browserEncode(rgb: Uint8Array, width: number, height: number): Buffer {
  const options = { colorType: 2, inputColorType: 2, bitDepth: 8, inputHasAlpha: false };
  const png = new BrowserPNG({ width, height, ...options });
  png.data = rgb;
  return Buffer.from(BrowserPNG.sync.write(png, options));
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

const KINDS: Record<string, (x: number, y: number, c: number, r: () => number) => number> = {
  noise: (_x, _y, _c, r) => (r() * 256) | 0,
  smooth: (x, y, c) => (Math.sin(x / 7 + c) * 60 + Math.cos(y / 5) * 60 + 128) | 0,
  "smooth+noise": (x, y, c, r) => (Math.sin((x + y) / 9 + c) * 90 + 128 + r() * 12) & 255,
  blocks: (x, y, c) => ((x >> 3) * 37 + (y >> 3) * 91 + c * 13) & 255,
  flat: () => 200,
  sparse: (_x, _y, _c, r) => (r() < 0.9 ? 0 : (r() * 255) | 0),
};
const SIZES: [number, number][] = [[1, 1], [8, 8], [31, 17], [32, 32], [64, 48], [128, 128], [256, 256], [512, 384]];

describe("PNG encoding", () => {
  it("the pako the browser build of pngjs carries is the pako dependency, file for file", () => {
    const bundle = fs.readFileSync(require.resolve("pngjs/browser.js"), "utf8");
    const dir = path.join(path.dirname(require.resolve("pako/package.json")), "lib", "zlib");
    expect(JSON.parse(fs.readFileSync(path.join(dir, "..", "..", "package.json"), "utf8")).version).toBe("1.0.11");
    for (const f of ["deflate.js", "trees.js", "adler32.js", "crc32.js", "zstream.js", "constants.js", "messages.js"])
      expect(bundle.includes(fs.readFileSync(path.join(dir, f), "utf8").trim()), f).toBe(true);
  });

  it("encodePng (Node: pngjs packer + pako) gives pngjs/browser.js's bytes, and decodes back", () => {
    const r = lcg(11);
    let n = 0;
    for (const [kind, f] of Object.entries(KINDS))
      for (const [w, h] of SIZES) {
        const rgb = new Uint8Array(w * h * 3);
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) rgb[(y * w + x) * 3 + c] = f(x, y, c, r);
        const mine = encodePng(rgb, w, h);
        expect(Buffer.from(mine).equals(browserEncode(rgb, w, h)), `${kind} ${w}x${h}`).toBe(true);
        const back = decodePng(mine);
        expect([back.width, back.height]).toEqual([w, h]);
        expect(Buffer.from(back.rgb).equals(Buffer.from(rgb)), `${kind} ${w}x${h} round trip`).toBe(true);
        n++;
      }
    expect(n).toBe(48);
  });

  it("rejects a pixel buffer of the wrong size", () => {
    expect(() => encodePng(new Uint8Array(10), 2, 2)).toThrow(/10 bytes for 2x2 RGB/);
  });
});
