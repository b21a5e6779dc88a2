import { loadClassifier } from "../src/models/loader.ts";
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { Engine } from "../src/runtime/engine.ts";
import { sharedDir } from "../src/io/places.ts";
import { readIdx, readIdxImages, parseIdx, IdxError } from "../src/io/idx.ts";
import { maxPool2d } from "../src/nn/pooling.ts";
import { relu } from "../src/nn/elementwise.ts";
import { FashionClassifier, u8ImagesToInput, rgb8ToInput, decodedToInput, argmaxRows, CLASSIFIER_SIZE } from "../src/models/classifier.ts";

const SHARED = sharedDir();
const CLS_DIR = path.join(SHARED, "models", "fashion-classifier");
const DATA = path.join(SHARED, "data", "fashion-mnist");

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function maxPoolRef(x: Float32Array, B: number, H: number, W: number, C: number): Float32Array {
  const Ho = H >> 1, Wo = W >> 1;
  const out = new Float32Array(B * Ho * Wo * C);
  for (let b = 0; b < B; b++)
    for (let i = 0; i < Ho; i++)
      for (let j = 0; j < Wo; j++)
        for (let c = 0; c < C; c++) {
          let m = -Infinity;
          for (let di = 0; di < 2; di++)
            for (let dj = 0; dj < 2; dj++) m = Math.max(m, x[((b * H + 2 * i + di) * W + 2 * j + dj) * C + c]);
          out[((b * Ho + i) * Wo + j) * C + c] = m;
        }
  return out;
}

describe("maxPool2d and relu (src/nn/elementwise.ts)", () => {
  const engines: Engine[] = [];
  beforeAll(async () => {
    engines.push(await Engine.create({ threads: 1, memoryBytes: 32 << 20, simd: "baseline" }));
    engines.push(await Engine.create({ threads: 3, memoryBytes: 32 << 20 }));
  });
  afterAll(() => engines.forEach((e) => e.close()));

  for (const [B, H, W, C] of [[1, 4, 4, 1], [2, 7, 5, 3], [3, 28, 28, 32], [1, 3, 9, 13], [2, 14, 14, 64]]) {
    it(`maxPool2d [${B},${H},${W},${C}] matches the reference at 1 and 3 threads`, async () => {
      const r = rng(B * 1000 + H * 100 + W * 10 + C);
      const x = Float32Array.from({ length: B * H * W * C }, () => r() * 4 - 2);
      const ref = maxPoolRef(x, B, H, W, C);
      for (const eng of engines) {
        eng.scope(() => {
          const y = maxPool2d(eng.fromArray(x, [B, H, W, C]));
          expect(y.shape).toEqual([B, H >> 1, W >> 1, C]);
          expect(Array.from(y.f32())).toEqual(Array.from(ref));
        });
      }
    });
  }

  it("maxPool2d propagates NaN and rejects bad shapes", async () => {
    const eng = engines[0];
    eng.scope(() => {
      const y = maxPool2d(eng.fromArray([1, NaN, 2, 3], [1, 2, 2, 1]));
      expect(Number.isNaN(y.f32()[0])).toBe(true);
      expect(() => maxPool2d(eng.fromArray([1, 2], [1, 1, 2, 1]))).toThrow(/does not fit/);
      expect(() => maxPool2d(eng.fromArray([1, 2, 3, 4], [2, 2, 1]))).toThrow(/NHWC/);
    });
  });

  it("relu matches max(x, 0) (tails, NaN, -0) at 1 and 3 threads", async () => {
    for (const n of [1, 3, 4, 7, 64, 1001]) {
      const r = rng(n);
      const x = Float32Array.from({ length: n }, () => r() * 2 - 1);
      if (n > 3) {
        x[1] = NaN;
        x[2] = -0;
        x[3] = -Infinity;
      }
      for (const eng of engines)
        eng.scope(() => {
          const y = relu(eng.fromArray(x, [n])).f32();
          for (let i = 0; i < n; i++) {
            if (Number.isNaN(x[i])) expect(Number.isNaN(y[i])).toBe(true);
            else expect(y[i]).toBe(x[i] > 0 ? x[i] : 0);
          }
        });
    }
  });
});

describe("IDX reader", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-idx-"));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  function idx(type: number, dims: number[], body: Uint8Array): Uint8Array {
    const head = new Uint8Array(4 + 4 * dims.length);
    const dv = new DataView(head.buffer);
    head[2] = type;
    head[3] = dims.length;
    dims.forEach((d, i) => dv.setUint32(4 + 4 * i, d, false));
    return Buffer.concat([head, body]);
  }

  it("reads plain and gzip u8 files and big-endian wider types", async () => {
    const body = Uint8Array.from([1, 2, 3, 4, 5, 6]);
    const plain = path.join(tmp, "a.idx");
    fs.writeFileSync(plain, idx(0x08, [2, 3], body));
    const gz = path.join(tmp, "a.idx.gz");
    fs.writeFileSync(gz, zlib.gzipSync(idx(0x08, [2, 3], body)));
    for (const f of [plain, gz]) {
      const r = await readIdx(f);
      expect(r.type).toBe("u8");
      expect(r.dims).toEqual([2, 3]);
      expect(Array.from(r.data)).toEqual([1, 2, 3, 4, 5, 6]);
    }
    const i32 = parseIdx(idx(0x0c, [2], Uint8Array.from([0, 0, 1, 0, 0xff, 0xff, 0xff, 0xfe])));
    expect(Array.from(i32.data)).toEqual([256, -2]);
    const f32b = new Uint8Array(4);
    new DataView(f32b.buffer).setFloat32(0, 1.5, false);
    expect(Array.from(parseIdx(idx(0x0d, [1], f32b)).data)).toEqual([1.5]);
  });

  it("rejects truncated, corrupt and malformed files with clear errors", async () => {
    const good = zlib.gzipSync(idx(0x08, [4, 5], new Uint8Array(20).fill(7)));
    const trunc = path.join(tmp, "trunc.gz");
    fs.writeFileSync(trunc, good.subarray(0, good.length - 10));
    await expect(readIdx(trunc)).rejects.toThrow(IdxError);
    await expect(readIdx(trunc)).rejects.toThrow(/corrupt or truncated gzip/);
    const corrupt = Buffer.from(good);
    for (let i = 12; i < corrupt.length - 8; i++) corrupt[i] ^= 0x5a;
    const cf = path.join(tmp, "corrupt.gz");
    fs.writeFileSync(cf, corrupt);
    await expect(readIdx(cf)).rejects.toThrow(IdxError);
    // valid gzip, truncated payload
    const short = path.join(tmp, "short.gz");
    fs.writeFileSync(short, zlib.gzipSync(idx(0x08, [4, 5], new Uint8Array(19))));
    await expect(readIdx(short)).rejects.toThrow(/truncated: dimensions \[4,5\] need 32 bytes, the data has 31/);
    expect(() => parseIdx(idx(0x08, [2], new Uint8Array(3)))).toThrow(/trailing/);
    expect(() => parseIdx(Uint8Array.from([1, 2, 3, 4, 5]))).toThrow(/not an IDX file/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 0x08]))).toThrow(/too short/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 0x08, 3, 0, 0]))).toThrow(/truncated header/);
    await expect(readIdx(path.join(tmp, "missing.gz"))).rejects.toThrow(/cannot read/);
    // labels that do not match the images
    const im = path.join(tmp, "im.gz");
    const lb = path.join(tmp, "lb.gz");
    fs.writeFileSync(im, zlib.gzipSync(idx(0x08, [3, 2, 2], new Uint8Array(12))));
    fs.writeFileSync(lb, zlib.gzipSync(idx(0x08, [2], new Uint8Array(2))));
    await expect(readIdxImages(im, lb)).rejects.toThrow(/2 labels for 3 images/);
  });
});

describe("classifier inputs", () => {
  it("crops the central 28x28 of channel 0 and maps to [0,1]", async () => {
    const W = 32, H = 32;
    const rgb = new Uint8Array(W * H * 3);
    const dec = new Float32Array(3 * W * H);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        rgb[(y * W + x) * 3] = (y * 7 + x) & 255;
        rgb[(y * W + x) * 3 + 1] = 255;
        dec[y * W + x] = ((y * 7 + x) & 255) / 127.5 - 1;
      }
    const a = rgb8ToInput(rgb, W, H);
    const b = decodedToInput(dec, W, H);
    expect(a.length).toBe(CLASSIFIER_SIZE * CLASSIFIER_SIZE);
    expect(a[0]).toBeCloseTo(((2 * 7 + 2) & 255) / 255, 6);
    expect(a[27 * 28 + 27]).toBeCloseTo(((29 * 7 + 29) & 255) / 255, 6);
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i], 5);
    expect(decodedToInput(new Float32Array(32 * 32).fill(3), 32, 32)[0]).toBe(1);
    expect(decodedToInput(new Float32Array(32 * 32).fill(-3), 32, 32)[0]).toBe(0);
    expect(Array.from(argmaxRows([1, 3, 3, 0, -1, NaN], 3))).toEqual([1, 0]);
  });
});

const haveData = fs.existsSync(path.join(CLS_DIR, "model.safetensors")) && fs.existsSync(path.join(DATA, "t10k-images-idx3-ubyte.gz"));

describe.skipIf(!haveData)("fashion classifier on the Fashion-MNIST test set", () => {
  let eng: Engine;
  beforeAll(async () => {
    eng = await Engine.create({ threads: 2, memoryBytes: 256 << 20 });
  });
  afterAll(() => eng?.close());

  it("reads the 10k test set", async () => {
    const t = await readIdxImages(path.join(DATA, "t10k-images-idx3-ubyte.gz"), path.join(DATA, "t10k-labels-idx1-ubyte.gz"));
    expect([t.count, t.rows, t.cols]).toEqual([10000, 28, 28]);
    const hist = new Array(10).fill(0);
    for (const l of t.labels!) hist[l]++;
    expect(hist).toEqual(new Array(10).fill(1000));
  });

  it("loads, and reaches the reference test accuracy 0.9088 on all 10k images", async () => {
    const clf = await loadClassifier(eng, CLS_DIR);
    expect(clf.classes.length).toBe(10);
    expect(clf.featureDim).toBe(128);
    const t = await readIdxImages(path.join(DATA, "t10k-images-idx3-ubyte.gz"), path.join(DATA, "t10k-labels-idx1-ubyte.gz"));
    const t0 = performance.now();
    const r = clf.classify(u8ImagesToInput(t.images), { batch: 250 });
    const ms = performance.now() - t0;
    let correct = 0;
    for (let i = 0; i < t.count; i++) if (r.predictions[i] === t.labels![i]) correct++;
    console.log(`classifier: ${correct}/10000 correct (${correct / 100}%), ${(ms / 1000).toFixed(2)} s on ${eng.threads} threads`);
    expect(Math.abs(correct / 10000 - 0.9088)).toBeLessThanOrEqual(0.001);
    // features are post-ReLU and finite; batching does not change results
    let neg = 0, nonFinite = 0;
    for (const v of r.features) {
      if (v < 0) neg++;
      if (!Number.isFinite(v)) nonFinite++;
    }
    expect(neg + nonFinite).toBe(0);
    const one = clf.classify(u8ImagesToInput(t.images.subarray(0, 784 * 7)), { batch: 3 });
    for (let i = 0; i < 7 * 128; i++) expect(one.features[i]).toBeCloseTo(r.features[i], 4);
    clf.free();
  });
});
