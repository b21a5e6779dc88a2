// StableDiffusionPipeline on the real fashion-sd-tiny model: diffusers' golden e2e latents and image from
// the stored initial latents, bit-identical output across thread counts, batched generation bit-identical to
// one image at a time (fp32 and mixed precision), input errors, PNG encoding.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { maxAbsRelToMax, openGolden } from "../src/io/golden.ts";
import { sharedDir } from "../src/io/places.ts";
import { StableDiffusionPipeline, estimatePipelineMemory, PipelineError, type GenerateResult } from "../src/pipeline/pipeline.ts";
import { resolveDefaultModel } from "../src/io/places.ts";
import { encodePng, readPng } from "../src/io/png.ts";
import { toByte, toRgb8 } from "../src/pipeline/image.ts";
import { writeCalibration } from "../src/models/calibration.ts";
import { calibrate } from "../weights-tools/calibrate.ts";

const modelDir = path.join(sharedDir(), "models", "fashion-sd-tiny");
const golden = await openGolden(path.join(sharedDir(), "golden"), "e2e");
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

  it("reads the model's sizes and scheduler", async () => {
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

/** Every per-image output of a batch equals the single-image run, bit for bit. */
function expectSameImage(batched: GenerateResult, alone: GenerateResult, what: string): void {
  expect(Buffer.from(batched.image).equals(Buffer.from(alone.image)), `${what}: image`).toBe(true);
  expect(Buffer.from(batched.latents.buffer, batched.latents.byteOffset, batched.latents.byteLength).equals(Buffer.from(alone.latents.buffer, alone.latents.byteOffset, alone.latents.byteLength)), `${what}: latents`).toBe(true);
  expect(Buffer.from(batched.decoded.buffer, batched.decoded.byteOffset, batched.decoded.byteLength).equals(Buffer.from(alone.decoded.buffer, alone.decoded.byteOffset, alone.decoded.byteLength)), `${what}: decoded`).toBe(true);
  expect(batched.seed).toBe(alone.seed);
  expect(batched.promptIds).toEqual(alone.promptIds);
  expect(batched.negativeIds).toEqual(alone.negativeIds);
  expect(batched.precisions).toEqual(alone.precisions);
}

describe("generateBatch (fashion-sd-tiny)", () => {
  let tmp: string;
  let pipe: StableDiffusionPipeline;
  let mixed: StableDiffusionPipeline;
  const prompts = ["a photo of a sneaker", "a photo of a dress", "a photo of a bag", "a photo of a sneaker"];
  const seeds = [11, 12, 13, 14];
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-batch-"));
    pipe = await StableDiffusionPipeline.load(modelDir, { threads: 2, batch: 4 });
    const cal = await calibrate({ model: modelDir, prompts: ["a photo of a coat"], steps: 3, guidance: 4, threads: 2 });
    const file = path.join(tmp, "cal.json");
    writeCalibration(file, cal);
    mixed = await StableDiffusionPipeline.load(modelDir, { threads: 2, batch: 4, precisions: ["fp32", "bf16", "int8"], calibration: file });
  });
  afterAll(async () => {
    pipe?.close();
    mixed?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  for (const [scheduler, steps] of [["pndm", 5], ["euler", 4], ["dpm++", 4]] as const)
    it(`fp32, ${scheduler}: each image of a batch of 4 is bit-identical to generating it alone`, async () => {
      const common = { steps, guidance: 4, scheduler };
      const batchSteps: number[] = [];
      const r = await pipe.generateBatch({ ...common, prompts, seeds, onStep: (s) => batchSteps.push(s.latents.length) });
      expect(r.batch).toBe(4);
      expect(r.images.length).toBe(4);
      expect(new Set(batchSteps)).toEqual(new Set([4]));
      for (let i = 0; i < 4; i++) expectSameImage(r.images[i], await pipe.generate({ ...common, prompt: prompts[i], seed: seeds[i] }), `image ${i}`);
      // the same prompt with another seed is another image
      expect(Buffer.from(r.images[0].image).equals(Buffer.from(r.images[3].image))).toBe(false);
    });

  it("fp32: per-image negative prompts, given latents, no guidance, a batch of 1", async () => {
    const lat = [0, 1].map((s) => Float32Array.from({ length: 4 * 8 * 8 }, (_, j) => Math.sin(j * 0.37 + s)));
    const neg = ["", "a photo of a bag"];
    const r = await pipe.generateBatch({ prompts: prompts.slice(0, 2), negativePrompt: neg, latents: lat, steps: 3, guidance: 5, scheduler: "ddim" });
    for (let i = 0; i < 2; i++) {
      const one = await pipe.generate({ prompt: prompts[i], negativePrompt: neg[i], latents: lat[i], steps: 3, guidance: 5, scheduler: "ddim" });
      expectSameImage(r.images[i], one, `image ${i}`);
      expect(r.images[i].seed).toBeUndefined();
    }
    const nog = await pipe.generateBatch({ prompts: prompts.slice(0, 3), seeds: seeds.slice(0, 3), steps: 3, guidance: 1 });
    for (let i = 0; i < 3; i++) expectSameImage(nog.images[i], await pipe.generate({ prompt: prompts[i], seed: seeds[i], steps: 3, guidance: 1 }), `no guidance, image ${i}`);
    const single = await pipe.generateBatch({ prompts: [prompts[1]], seeds: [seeds[1]], steps: 3, guidance: 4 });
    expectSameImage(single.images[0], await pipe.generate({ prompt: prompts[1], seed: seeds[1], steps: 3, guidance: 4 }), "batch of 1");
  });

  it("mixed precision (bf16 + calibrated int8): a batch is bit-identical to one image at a time, and across batch splits", async () => {
    for (const precision of ["mixed:1", "int8", "bf16"]) {
      const common = { steps: 4, guidance: 4, scheduler: "pndm", precision };
      const seen: string[] = [];
      const r = await mixed.generateBatch({ ...common, prompts, seeds, onStep: (s) => seen.push(s.precision) });
      if (precision === "mixed:1") expect(seen).toEqual(["bf16", "int8", "int8", "int8", "bf16"]);
      for (let i = 0; i < 4; i++) expectSameImage(r.images[i], await mixed.generate({ ...common, prompt: prompts[i], seed: seeds[i] }), `${precision} image ${i}`);
      const half = await mixed.generateBatch({ ...common, prompts: prompts.slice(2), seeds: seeds.slice(2) });
      for (let i = 0; i < 2; i++) expectSameImage(half.images[i], r.images[2 + i], `${precision} batch of 2, image ${i}`);
    }
    // and int8 really differs from fp32 (the switch took effect in the batched path)
    const f = await mixed.generateBatch({ prompts: prompts.slice(0, 1), seeds: [1], steps: 4, guidance: 4, precision: "fp32" });
    const q = await mixed.generateBatch({ prompts: prompts.slice(0, 1), seeds: [1], steps: 4, guidance: 4, precision: "int8" });
    expect(Buffer.from(f.images[0].image).equals(Buffer.from(q.images[0].image))).toBe(false);
  });

  it("rejects bad batch input with clear errors", async () => {
    await expect(pipe.generateBatch({ prompts: [] })).rejects.toThrow(/prompts must be a non-empty array/);
    await expect(pipe.generateBatch({ prompts: ["a", "b"], seeds: [1] })).rejects.toThrow(/seeds must be an array of 2 seeds/);
    await expect(pipe.generateBatch({ prompts: ["a", "b"], seeds: [1, -1], steps: 1 })).rejects.toThrow(/seeds\[1\] must be an integer/);
    await expect(pipe.generateBatch({ prompts: ["a", "b"], seeds: [1, 2], latents: [new Float32Array(256), new Float32Array(256)] })).rejects.toThrow(/seeds or latents, not both/);
    await expect(pipe.generateBatch({ prompts: ["a", "b"], latents: [new Float32Array(256), new Float32Array(10)], steps: 1 })).rejects.toThrow(/latents\[1\] have 10 values/);
    await expect(pipe.generateBatch({ prompts: ["a", "b"], negativePrompt: ["x"] })).rejects.toThrow(/negativePrompt must be a string or an array of 2/);
  });
});

describe("pipeline helpers", () => {
  it("finds the default model", async () => {
    const d = resolveDefaultModel();
    expect(fs.existsSync(path.join(d, "model_index.json"))).toBe(true);
  });

  it("estimates memory from the weights and the image size", async () => {
    const small = await estimatePipelineMemory(modelDir);
    const big = await estimatePipelineMemory(modelDir, { width: 256, height: 256 });
    expect(small).toBeGreaterThanOrEqual(64 << 20);
    expect(big).toBeGreaterThan(small);
    expect(small % (16 << 20)).toBe(0);
    // batches: the estimate covers B images' activations (SD-size latents make the difference visible)
    const b1 = await estimatePipelineMemory(modelDir, { width: 256, height: 256, batch: 1 });
    const b8 = await estimatePipelineMemory(modelDir, { width: 256, height: 256, batch: 8 });
    expect(b1).toBe(big);
    expect(b8).toBeGreaterThan(b1);
    await expect(estimatePipelineMemory(modelDir, { batch: 0 })).rejects.toThrow(/batch must be a positive integer/);
  });

  it("postprocesses like diffusers (clamp, x*255, round half to even) and writes RGB PNGs", async () => {
    expect([-2, -1, 0, 1, 3].map(toByte)).toEqual([0, 0, 128, 255, 255]);
    // (x/2+0.5)*255 = 0.5 → 0 and 1.5 → 2 with numpy's rounding
    expect(toByte(2 * (0.5 / 255 - 0.5))).toBe(0);
    expect(toByte(NaN)).toBe(0);
    const rgb = toRgb8(Float32Array.from({ length: 2 * 3 * 3 }, (_, i) => i / 9 - 1), 3, 2);
    const file = path.join(os.tmpdir(), `stepq-png-${process.pid}.png`);
    fs.writeFileSync(file, encodePng(rgb, 3, 2));
    const back = await readPng(file);
    fs.rmSync(file);
    expect([back.width, back.height]).toEqual([3, 2]);
    expect(Array.from(back.rgb)).toEqual(Array.from(rgb));
    expect(Array.from(toRgb8([0, 1], 2, 1, 1))).toEqual([128, 128, 128, 255, 255, 255]);
  });
});
