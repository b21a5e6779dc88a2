// stepq bench (run in-process): the JSON fields exist and are sane. Timings are not checked (benchmarks
// never fail CI); SD 1.5 / 2.1 are only checked by parameter count and memory sizing, never built here.
import { describe, expect, it } from "vitest";
import { run } from "../src/cli/bench.ts";
import { UsageError } from "../src/cli/args.ts";
import { BenchError, kernelOpType, precisionAvailable, resolveUNetSource, unetBenchMemory } from "../src/tools/bench.ts";
import { unetParamCount } from "../src/models/memory.ts";
import { Engine } from "../src/runtime/engine.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { findWeights } from "../src/io/diffusers.ts";
import { sharedDir } from "../src/io/places.ts";
import * as path from "node:path";

function capture() {
  const c = { out: "", err: "" };
  const io = { out: (s: string) => void (c.out += s), err: (s: string) => void (c.err += s), errIsTty: false };
  return { c, io };
}

async function checkpointParams(dir: string): Promise<number> {
  const st = await SafetensorsFile.open(await findWeights(dir));
  try {
    let n = 0;
    for (const t of st.tensors.values()) n += t.shape.reduce((a: number, b: number) => a * b, 1);
    return n;
  } finally {
    st.close();
  }
}

describe("bench library", () => {
  it("counts the parameters a config builds", async () => {
    expect(unetParamCount((await resolveUNetSource("sd15")).config)).toBe(859_520_964);
    expect(unetParamCount((await resolveUNetSource("sd21")).config)).toBe(865_910_724);
    const fashion = await resolveUNetSource("fashion");
    expect(unetParamCount(fashion.config)).toBe(await checkpointParams(fashion.dir!));
    for (const tiny of ["unet-sd15-tiny", "unet-sd21-tiny"]) {
      const s = await resolveUNetSource(path.join(sharedDir(), "golden", tiny));
      expect(unetParamCount(s.config)).toBe(await checkpointParams(s.dir!));
    }
  });

  it("sizes the engine from the config and precision, at most 4 GiB", async () => {
    const sd15 = (await resolveUNetSource("sd15")).config;
    const f32 = unetBenchMemory(sd15, "fp32", 2, 64);
    expect(f32).toBeGreaterThan(859_520_964 * 4);
    expect(f32).toBeLessThanOrEqual(4 * 1024 ** 3);
    const i8 = unetBenchMemory(sd15, "int8", 2, 64);
    expect(i8).toBeGreaterThan(859_520_964);
    expect(i8).toBeLessThan(unetBenchMemory(sd15, "bf16", 2, 64));
    expect(unetBenchMemory(sd15, "bf16", 2, 64)).toBeLessThan(f32);
    expect(kernelOpType("conv2d_f32")).toBe("conv");
    expect(kernelOpType("gemm_int8_packed")).toBe("linear");
    expect(kernelOpType("groupnorm_stats_f32")).toBe("norm");
  });

  it("Engine.profile is off by default and counts kernel calls when set", async () => {
    const eng = await Engine.create({ threads: 2, memoryBytes: 16 << 20 });
    try {
      expect(eng.profile).toBeNull();
      const a = eng.fromArray(new Float32Array(64).fill(1), [64]);
      const c = eng.empty([64]);
      eng.run("add_f32", a.ptr, a.ptr, c.ptr, 64);
      eng.profile = new Map();
      eng.run("add_f32", a.ptr, a.ptr, c.ptr, 64);
      eng.run("add_f32", a.ptr, a.ptr, c.ptr, 64);
      const p = eng.profile.get("add_f32")!;
      expect(p.calls).toBe(2);
      expect(p.ms).toBeGreaterThanOrEqual(0);
      expect(c.f32()[5]).toBe(2);
    } finally {
      eng.close();
    }
  });
});

describe("stepq bench", () => {
  it("bench unet --config fashion --iters 1 --json", async () => {
    const { c, io } = capture();
    const code = await run(["unet", "--config", "fashion", "--iters", "1", "--warmup", "0", "--threads", "2", "--json"], io);
    expect(code).toBe(0);
    const r = JSON.parse(c.out);
    for (const k of ["seconds_per_call", "seconds_min", "peak_bytes", "rss_bytes", "threads", "simd", "runtime", "precision", "config", "batch", "latent_size"])
      expect(r, k).toHaveProperty(k);
    expect(r.seconds_per_call).toBeGreaterThan(0);
    expect(r.seconds_min).toBeLessThanOrEqual(r.seconds_per_call);
    expect(r.seconds).toHaveLength(1);
    expect(r.config).toBe("fashion");
    expect(r.precision).toBe("fp32");
    expect(r.weights).toBe("checkpoint");
    expect(r.batch).toBe(2);
    expect(r.latent_size).toBe(8);
    expect(r.threads).toBe(2);
    expect(["relaxed", "baseline"]).toContain(r.simd);
    expect(r.runtime).toMatch(/^(node|deno) \d+\./);
    expect(r.params).toBe(8_613_316);
    // the weights are in engine memory; the peak adds the activations and stays inside the engine
    expect(r.weight_bytes).toBeGreaterThanOrEqual(r.params * 4);
    expect(r.peak_bytes).toBeGreaterThan(r.weight_bytes);
    expect(r.peak_bytes).toBeLessThanOrEqual(r.capacity_bytes);
    expect(r.rss_bytes).toBeGreaterThan(r.weight_bytes);
    expect(r.output_finite).toBe(true);
    expect(c.err).toMatch(/building fashion-sd-tiny UNet/);
  }, 60_000);

  it("bench unet --profile: time by kernel, shares within the wall time", async () => {
    const { c, io } = capture();
    expect(await run(["unet", "--config", "fashion", "--size", "16", "--batch", "1", "--iters", "2", "--warmup", "0", "--profile", "--json", "-q"], io)).toBe(0);
    const r = JSON.parse(c.out);
    expect(c.err).toBe("");
    expect(r.latent_size).toBe(16);
    const kernels = r.profile.map((p: { kernel: string }) => p.kernel);
    expect(kernels).toContain("conv2d_f32");
    expect(kernels).toContain("attention_f32");
    const conv = r.profile.find((p: { kernel: string }) => p.kernel === "conv2d_f32");
    expect(conv.calls).toBeGreaterThan(10);
    const share = r.profile.reduce((a: number, p: { share: number }) => a + p.share, 0);
    expect(share).toBeGreaterThan(0);
    expect(share).toBeLessThanOrEqual(1.0001);
    expect(r.profile_outside_kernels).toBeGreaterThanOrEqual(0);
    // the text form prints the table
    const t = capture();
    expect(await run(["unet", "--config", "fashion", "--iters", "1", "--warmup", "0", "--profile", "-q"], t.io)).toBe(0);
    expect(t.c.out).toMatch(/per call\s+[\d.]+ s median/);
    expect(t.c.out).toMatch(/conv2d_f32\s+conv/);
  }, 60_000);

  it("bench image: a short generation with the time of each stage", async () => {
    const { c, io } = capture();
    expect(await run(["image", "--steps", "2", "--threads", "2", "--json", "-q"], io)).toBe(0);
    const r = JSON.parse(c.out);
    expect(r.steps).toBe(2);
    expect(r.step_seconds).toHaveLength(r.unet_calls);
    expect(r.unet_calls).toBeGreaterThanOrEqual(2);
    for (const k of ["load_seconds", "text_seconds", "denoise_seconds", "decode_seconds", "total_seconds"]) expect(r[k], k).toBeGreaterThan(0);
    expect(r.total_seconds).toBeGreaterThanOrEqual(r.denoise_seconds);
    expect(r.width).toBe(32);
    expect(r.peak_bytes).toBeGreaterThan(0);
    expect(r.image_mean).toBeGreaterThan(0);
  }, 60_000);

  it("bench unet --precision bf16 / int8 on the fashion UNet", async () => {
    for (const p of ["bf16", "int8"] as const) {
      expect(precisionAvailable(p).ok).toBe(true);
      const { c, io } = capture();
      expect(await run(["unet", "--config", "fashion", "--precision", p, "--iters", "1", "--warmup", "0", "--json", "-q"], io)).toBe(0);
      const r = JSON.parse(c.out);
      expect(r.precision).toBe(p);
      expect(r.output_finite).toBe(true);
      // packed weights take about 2 (bf16) or 1 (int8) bytes per parameter, plus f32 biases, scales and norms
      expect(r.weight_bytes).toBeLessThan(r.params * (p === "bf16" ? 2.5 : 1.5));
      if (p === "int8") expect(["synthetic", "calibrated"]).toContain(r.act_ranges);
      else expect(r.act_ranges).toBeNull();
    }
  }, 60_000);

  it("usage errors", async () => {
    const { io } = capture();
    await expect(run([], io)).rejects.toThrow(UsageError);
    await expect(run(["frob"], io)).rejects.toThrow(/unknown benchmark "frob"/);
    await expect(run(["unet", "--precision", "fp16"], io)).rejects.toThrow(/--precision must be one of fp32, bf16, int8/);
    await expect(run(["unet", "--bogus"], io)).rejects.toThrow(UsageError);
    await expect(run(["unet", "--config", "/nonexistent"], io)).rejects.toThrow(BenchError);
    await expect(run(["unet", "--config", "fashion", "--size", "6"], io)).rejects.toThrow(/multiple of 4/);
  });
});
