// The byte source over HTTP (src/io/source.ts HttpSource: HEAD + Range requests; small reads through a few
// cached 1 MiB blocks, large reads streamed into their destination), served by the demo server: the bytes
// equal the file's for reads of every size and place, a model loads from its URL with a few requests per
// megabyte rather than one per tensor, and makes the same image as from its folder.
import * as fs from "node:fs";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import type { Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDemoServer } from "../src/cli/serve.ts";
import { openSource } from "../src/io/source.ts";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";

const root = path.resolve(import.meta.dirname, "..");
const model = path.join(root, "models", "fashion-sd-tiny");
let server: Server;
let base: string;
const requests: string[] = [];

beforeAll(async () => {
  server = createDemoServer({ root, model, log: (l) => requests.push(l) });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/model/`;
});
afterAll(() => {
  server.closeAllConnections();
  server.close();
});

describe("HTTP byte source", () => {
  it("reads of every size and place give the file's bytes", async () => {
    const file = path.join(model, "unet", "diffusion_pytorch_model.safetensors");
    const all = fs.readFileSync(file);
    const src = await openSource(`${base}unet/diffusion_pytorch_model.safetensors`);
    try {
      expect(src.size).toBe(all.length);
      const M = 1 << 20;
      const reads: [number, number][] = [
        [0, 8], [8, 100], [M - 3, 6], [3 * M - 1, 2], [5 * M + 17, 200_000], [M - 10, 300_000], [2 * M, 4 * M + 5],
        [all.length - 7, 7], [all.length - 1, 1], [123, 0], [0, all.length],
      ];
      for (let i = 0; i < 40; i++) reads.push([Math.floor(((i * 7919) % 1000) / 1000 * (all.length - 5000)), 1 + ((i * 104729) % 4096)]);
      for (const [o, n] of reads) {
        const dest = new Uint8Array(n + 3);
        const got = await src.read(o, n, dest);
        expect(got.length, `${o}+${n}`).toBe(n);
        expect(Buffer.from(got).equals(all.subarray(o, o + n)), `${o}+${n}`).toBe(true);
      }
      await expect(src.read(all.length - 2, 3)).rejects.toThrow(/outside the file/);
    } finally {
      src.close();
    }
  });

  it("a model loads from its URL with few requests and makes the folder's image", async () => {
    const opts = { prompt: "a photo of a bag", seed: 5, steps: 3, guidance: 4 };
    requests.length = 0;
    const fromUrl = await StableDiffusionPipeline.load(base, { threads: 2 });
    const gets = requests.filter((l) => l.startsWith("GET ")).length;
    let a: Uint8Array;
    try {
      a = (await fromUrl.generate(opts)).image;
    } finally {
      fromUrl.close();
    }
    // ~700 tensors in 3 files (36 MB): one request each without the block cache; ~25 with it
    expect(gets).toBeLessThan(60);
    const fromDir = await StableDiffusionPipeline.load(model, { threads: 2 });
    try {
      expect(Buffer.from((await fromDir.generate(opts)).image).equals(Buffer.from(a))).toBe(true);
    } finally {
      fromDir.close();
    }
  });
});
