import { loadUNet } from "../src/models/loader.ts";
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { Engine } from "../src/runtime/engine.ts";
import type { Tensor } from "../src/runtime/tensor.ts";
import { openGolden, maxAbsRelToMax } from "../src/io/golden.ts";
import { sharedDir } from "../src/io/places.ts";
import { loadUNetConfig, unetConfig, SD15_UNET_CONFIG } from "../src/models/config.ts";
import { UNet, timestepEmbedding } from "../src/models/unet.ts";
import { tensorFromNCHW, tensorToNCHW } from "../src/models/layout.ts";

const goldenDir = path.join(sharedDir(), "golden");
const golden = await openGolden(goldenDir, "cases");
const cases = (golden.json.cases as any[]).filter((c) => c.kind === "unet");
const ORDER = ["time_embedding", "conv_in", "down_blocks.0", "down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2", "conv_out"];

/** NCHW data of an engine tensor (2-D tensors as they are). */
function nchw(t: Tensor): Float32Array {
  return t.shape.length === 4 ? tensorToNCHW(t).data : t.toArray();
}

/** Arrays of an uncompressed .npz (np.savez): little-endian f4 / i8 only. */
function readNpz(file: string): Record<string, { data: Float32Array; shape: number[] }> {
  const buf = fs.readFileSync(file);
  const out: Record<string, { data: Float32Array; shape: number[] }> = {};
  let off = 0;
  while (buf.readUInt32LE(off) === 0x04034b50) {
    const method = buf.readUInt16LE(off + 8);
    let size = buf.readUInt32LE(off + 18);
    const nameLen = buf.readUInt16LE(off + 26);
    const extraLen = buf.readUInt16LE(off + 28);
    const name = buf.toString("utf8", off + 30, off + 30 + nameLen);
    const start = off + 30 + nameLen + extraLen;
    if (size === 0xffffffff) size = Number(buf.readBigUInt64LE(start - extraLen + 4 + 8)); // zip64 extra: [id, len, usize, csize]
    if (method !== 0) throw new Error(`${file}: ${name} is compressed`);
    const npy = buf.subarray(start, start + size);
    const hlen = npy[6] === 1 ? npy.readUInt16LE(8) : npy.readUInt32LE(8);
    const hoff = npy[6] === 1 ? 10 : 12;
    const header = npy.toString("latin1", hoff, hoff + hlen);
    const descr = /'descr':\s*'([^']+)'/.exec(header)![1];
    const shape = /'shape':\s*\(([^)]*)\)/.exec(header)![1].split(",").filter((x) => x.trim()).map(Number);
    const body = npy.subarray(hoff + hlen);
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = descr === "<f4" ? body.readFloatLE(i * 4) : descr === "<i8" ? Number(body.readBigInt64LE(i * 8)) : NaN;
    out[name.replace(/\.npy$/, "")] = { data, shape };
    off = start + size;
  }
  return out;
}

const outputs = new Map<string, Float32Array>();

describe("timestep embedding", () => {
  it("matches get_timestep_embedding(flip_sin_to_cos=True, shift 0) at a few points", async () => {
    const e = timestepEmbedding([0, 981], 8, true, 0);
    // t = 0: cos part 1, sin part 0; flip puts cos first
    expect(Array.from(e.subarray(0, 8))).toEqual([1, 1, 1, 1, 0, 0, 0, 0]);
    const f = [1, Math.exp(-Math.log(10000) / 4), Math.exp((-Math.log(10000) * 2) / 4), Math.exp((-Math.log(10000) * 3) / 4)];
    for (let i = 0; i < 4; i++) {
      expect(e[8 + i]).toBeCloseTo(Math.cos(981 * f[i]), 4);
      expect(e[12 + i]).toBeCloseTo(Math.sin(981 * f[i]), 4);
    }
    const g = timestepEmbedding([5], 5, false, 1);
    expect(g[4]).toBe(0); // odd dim zero-padded
    expect(g[0]).toBeCloseTo(Math.sin(5), 6);
  });
});

for (const threads of [1, 2]) {
  describe(`UNet2DConditionModel vs diffusers (${threads} thread${threads > 1 ? "s" : ""})`, () => {
    let eng: Engine;
    const models = new Map<string, UNet>();
    beforeAll(async () => {
      eng = await Engine.create({ threads, memoryBytes: 256 << 20 });
    });
    afterAll(() => eng?.close());

    for (const [ci, c] of cases.entries()) {
      it(`${c.model} timestep ${c.inputs.timestep}: output and every block within ${c.tolerance.max_abs_rel_to_max}`, async () => {
        let unet = models.get(c.model);
        if (!unet) models.set(c.model, (unet = await loadUNet(eng, path.join(goldenDir, c.model))));
        const tol = c.tolerance.max_abs_rel_to_max;
        const before = eng.stats().used;
        const errors: Record<string, number> = {};
        eng.scope(() => {
          const s = golden.get(c.inputs.sample);
          const ctx = golden.get(c.inputs.encoder_hidden_states);
          const sample = tensorFromNCHW(eng, s.data, s.shape);
          const context = eng.fromArray(ctx.data, ctx.shape);
          const inter: Record<string, Tensor> = {};
          const out = unet!.forward(sample, c.inputs.timestep, context, { intermediates: inter });
          expect(out.shape).toEqual([s.shape[0], s.shape[2], s.shape[3], s.shape[1]]);
          const outData = nchw(out);
          outputs.set(`${threads}:${ci}`, outData);
          for (const name of ORDER) {
            const exp = golden.get(c.intermediates[name]);
            expect(inter[name], name).toBeDefined();
            errors[name] = maxAbsRelToMax(nchw(inter[name]), exp.data);
          }
          errors.out = maxAbsRelToMax(outData, golden.get(c.expected.sample).data);
        });
        expect(eng.stats().used, "no tensors left behind").toBe(before);
        console.log(`[unet ${threads}t] ${c.model} t=${c.inputs.timestep}: ` + Object.entries(errors).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(", "));
        for (const name of [...ORDER, "out"]) expect(errors[name], `${name} max_abs_rel_to_max`).toBeLessThanOrEqual(tol);
      });
    }

    it("fashion-sd-tiny UNet (fp16 weights) matches PyTorch on onnx/fashion-unet-io.npz within 2e-4", async () => {
      const io = readNpz(path.join(sharedDir(), "onnx", "fashion-unet-io.npz"));
      const unet = await loadUNet(eng, path.join(sharedDir(), "models", "fashion-sd-tiny", "unet"));
      let err = 0;
      eng.scope(() => {
        const out = unet.forward(
          tensorFromNCHW(eng, io.sample.data, io.sample.shape),
          io.timestep.data,
          eng.fromArray(io.encoder_hidden_states.data, io.encoder_hidden_states.shape),
        );
        err = maxAbsRelToMax(tensorToNCHW(out).data, io.out_sample.data);
      });
      console.log(`[unet ${threads}t] fashion-sd-tiny onnx io: out ${err.toExponential(2)}`);
      expect(err).toBeLessThanOrEqual(2e-4);
    });

    it("random weights (fromConfig) run with the right shapes, finite output, per-item timesteps", async () => {
      const cfg = await loadUNetConfig(path.join(goldenDir, "unet-sd21-tiny"));
      const unet = await UNet.fromConfig(eng, cfg, "random", 7);
      eng.scope(() => {
        const sample = eng.fromArray(Float32Array.from({ length: 2 * 8 * 16 * 4 }, (_, i) => Math.sin(i)), [2, 8, 16, 4]);
        const ctx = eng.fromArray(Float32Array.from({ length: 2 * 77 * 64 }, (_, i) => Math.cos(i) * 0.5), [2, 77, 64]);
        const out = unet.forward(sample, [10, 900], ctx);
        expect(out.shape).toEqual([2, 8, 16, 4]);
        expect(out.toArray().every(Number.isFinite)).toBe(true);
        expect(() => unet.forward(eng.zeros([1, 6, 8, 4]), 1, eng.zeros([1, 77, 64]))).toThrow(/multiple of 4/);
      });
    });
  });
}

describe("UNet outputs and errors", () => {
  it("1 and 2 threads give bit-identical outputs", async () => {
    for (let ci = 0; ci < cases.length; ci++) {
      const a = outputs.get(`1:${ci}`);
      const b = outputs.get(`2:${ci}`);
      if (!a || !b) continue;
      expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer)), `case ${ci}`).toBe(true);
    }
  });

  it("unsupported config values throw naming the field and value", async () => {
    const eng = await Engine.create({ threads: 1, memoryBytes: 64 << 20 });
    try {
      const base = await loadUNetConfig(path.join(goldenDir, "unet-sd15-tiny"));
      await expect(UNet.fromConfig(eng, unetConfig({ ...base, class_embed_type: "timestep" }), "random")).rejects.toThrow(/class_embed_type "timestep"/);
      await expect(UNet.fromConfig(eng, unetConfig({ ...base, addition_embed_type: "text_time" }), "random")).rejects.toThrow(/addition_embed_type "text_time"/);
      await expect(UNet.fromConfig(eng, unetConfig({ ...base, down_block_types: ["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"] }), "random")).rejects.toThrow(
        /down_block_types\[0\] "SimpleCrossAttnDownBlock2D"/,
      );
      expect(SD15_UNET_CONFIG.block_out_channels).toEqual([320, 640, 1280, 1280]);
    } finally {
      eng.close();
    }
  });
});
