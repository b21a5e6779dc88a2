// StableDiffusionPipeline on the real fashion-sd-tiny model: diffusers' golden e2e latents and image from
// the stored initial latents, bit-identical output across thread counts, input errors, PNG encoding.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { maxAbsRelToMax, openGolden, sharedDir } from "../src/io/golden.ts";
import { StableDiffusionPipeline, estimatePipelineMemory, PipelineError, resolveDefaultModel } from "../src/pipeline/pipeline.ts";
import { encodePng, readPng, toByte, toRgb8 } from "../src/pipeline/png.ts";

const modelDir = path.join(sharedDir(), "models", "fashion-sd-tiny");
const golden = openGolden(path.join(sharedDir(), "golden"), "e2e");
const e2e = (id: string) => golden.json.cases.find((c: any) => c.id === id);

describe("StableDiffusionPipeline (fashion-sd-tiny)", () => {
  const pipes: StableDiffusionPipeline[] = [];
  let p1: StableDiffusionPipeline;
  let p2: StableDiffusionPipeline;
  beforeAll(async () => {
    p1 = await StableDiffusionPipeline.load(modelDir, { threads: 1 });
    p2 = await StableDiffusionPipeline.load(modelDir, { threads: 2 });
    pipes.push(p1, p2);
  });
  afterAll(() => pipes.forEach((p) => p.close()));

  it("reads the model's sizes and scheduler", () => {
    expect(p1.defaultWidth).toBe(32);
    expect(p1.defaultHeight).toBe(32);
    expect(p1.vaeScale).toBe(4); // 3 VAE levels: 32x32 images, 8x8 latents
    expect(p1.createScheduler().name).toBe("pndm");
    // the estimate covers the weights and what a generate call needs
    expect(p1.engine.stats().capacity).toBeGreaterThan(p1.engine.stats().used + 16 * 1024 * 1024);
  });

  for (const id of ["e2e0", "e2e3", "e2e5"]) {
    it(`${id}: from the golden initial latents, every step, final latents and image match diffusers`, async () => {
      const c = e2e(id);
      const init = golden.get(c.tensors.initial_latents).data;
      const steps: Float32Array[] = [];
      const res = await p2.generate({
        prompt: c.prompt,
        negativePrompt: c.negative_prompt,
        steps: c.num_inference_steps,
        guidance: c.guidance_scale,
        scheduler: c.scheduler,
        latents: init,
        onStep: (s) => steps.push(s.latents),
      });
      expect(res.width).toBe(32);
      expect(res.latentShape).toEqual([1, 4, 8, 8]);
      expect(res.seed).toBeUndefined();
      const stepLat = golden.get(c.tensors.step_latents);
      expect(steps.length).toBe(stepLat.shape[0]);
      const per = stepLat.data.length / steps.length;
      steps.forEach((s, i) => expect(maxAbsRelToMax(s, stepLat.data.subarray(i * per, (i + 1) * per)), `step ${i}`).toBeLessThan(2e-4));
      expect(maxAbsRelToMax(res.latents, golden.get(c.tensors.final_latents).data)).toBeLessThan(2e-4);
      const img = golden.get(c.tensors.image).data;
      expect(maxAbsRelToMax(res.decoded, img)).toBeLessThan(2e-4);
      // RGB8 is the golden image run through diffusers' postprocessing, give or take rounding at .5
      const ref = new Uint8Array(32 * 32 * 3);
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) for (let ch = 0; ch < 3; ch++) ref[(y * 32 + x) * 3 + ch] = toByte(img[ch * 1024 + y * 32 + x]);
      let maxDiff = 0;
      for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i] - res.image[i]));
      expect(maxDiff).toBeLessThanOrEqual(1);
    });
  }

  it("the same seed gives the same PNG bytes with 1 and 2 threads (and again)", async () => {
    const opts = { prompt: "a photo of a sandal", steps: 8, guidance: 4, seed: 1234, scheduler: "euler" };
    const a = await p1.generate(opts);
    const b = await p2.generate(opts);
    const c = await p2.generate(opts);
    expect(a.seed).toBe(1234);
    const pa = encodePng(a.image, a.width, a.height);
    expect(Buffer.from(encodePng(b.image, b.width, b.height)).equals(Buffer.from(pa))).toBe(true);
    expect(Buffer.from(encodePng(c.image, c.width, c.height)).equals(Buffer.from(pa))).toBe(true);
    expect(Array.from(a.latents)).toEqual(Array.from(b.latents));
    // a different seed gives a different image
    const d = await p1.generate({ ...opts, seed: 1235 });
    expect(Buffer.from(encodePng(d.image, d.width, d.height)).equals(Buffer.from(pa))).toBe(false);
  });

  it("generates other sizes (multiples of 16 for this model) and reports per-step progress", async () => {
    const infos: number[] = [];
    const r = await p2.generate({ prompt: "a bag", steps: 3, guidance: 2, seed: 5, width: 64, height: 48, scheduler: "ddim", onStep: (s) => infos.push(s.step) });
    expect([r.width, r.height]).toEqual([64, 48]);
    expect(r.image.length).toBe(64 * 48 * 3);
    expect(r.latentShape).toEqual([1, 4, 12, 16]);
    expect(infos).toEqual([1, 2, 3]);
    expect(r.timings.stepMs.length).toBe(3);
  });

  it("warns when the prompt is longer than 77 tokens", async () => {
    const warnings: string[] = [];
    const prompt = Array(30).fill("a photo of a coat").join(" ") + " zebra";
    const r = await p1.generate({ prompt, steps: 1, seed: 1, onWarning: (m) => warnings.push(m) });
    expect(r.truncated).toBe(true);
    expect(warnings.length).toBe(1);
    expect(warnings[0]).toMatch(/truncated: ".*zebra"/);
    expect(r.promptIds.length).toBe(77);
  });

  it("rejects bad input with clear errors", async () => {
    await expect(p1.generate({ prompt: "x", width: 30 })).rejects.toThrow(/width must be a multiple of 8, got 30/);
    await expect(p1.generate({ prompt: "x", height: 40 })).rejects.toThrow(/multiples of 16 for this model/);
    await expect(p1.generate({ prompt: "x", scheduler: "lms" })).rejects.toThrow(/unknown scheduler "lms"; valid names: pndm, ddim, euler, dpm\+\+/);
    await expect(p1.generate({ prompt: "x", steps: 0 })).rejects.toThrow(/steps must be an integer/);
    await expect(p1.generate({ prompt: "x", latents: new Float32Array(10) })).rejects.toThrow(/latents have 10 values; 32x32 needs \[1,4,8,8\]/);
    await expect(p1.generate({ prompt: "x", width: 32, height: 32, latents: new Float32Array(4 * 16 * 16) })).rejects.toThrow(PipelineError);
    await expect(StableDiffusionPipeline.load(path.join(os.tmpdir(), "no-such-model-dir"))).rejects.toThrow(/no-such-model-dir: model folder not found/);
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-empty-"));
    await expect(StableDiffusionPipeline.load(empty)).rejects.toThrow(/model_index.json: not found/);
    fs.rmSync(empty, { recursive: true });
  });
});

describe("pipeline helpers", () => {
  it("finds the default model", () => {
    const d = resolveDefaultModel();
    expect(fs.existsSync(path.join(d, "model_index.json"))).toBe(true);
  });

  it("estimates memory from the weights and the image size", () => {
    const small = estimatePipelineMemory(modelDir);
    const big = estimatePipelineMemory(modelDir, { width: 256, height: 256 });
    expect(small).toBeGreaterThanOrEqual(64 << 20);
    expect(big).toBeGreaterThan(small);
    expect(small % (16 << 20)).toBe(0);
  });

  it("postprocesses like diffusers (clamp, x*255, round half to even) and writes RGB PNGs", () => {
    expect([-2, -1, 0, 1, 3].map(toByte)).toEqual([0, 0, 128, 255, 255]);
    // (x/2+0.5)*255 = 0.5 → 0 and 1.5 → 2 with numpy's rounding
    expect(toByte(2 * (0.5 / 255 - 0.5))).toBe(0);
    expect(toByte(NaN)).toBe(0);
    const rgb = toRgb8(Float32Array.from({ length: 2 * 3 * 3 }, (_, i) => i / 9 - 1), 3, 2);
    const file = path.join(os.tmpdir(), `stepq-png-${process.pid}.png`);
    fs.writeFileSync(file, encodePng(rgb, 3, 2));
    const back = readPng(file);
    fs.rmSync(file);
    expect([back.width, back.height]).toEqual([3, 2]);
    expect(Array.from(back.rgb)).toEqual(Array.from(rgb));
    expect(Array.from(toRgb8([0, 1], 2, 1, 1))).toEqual([128, 128, 128, 255, 255, 255]);
  });
});
