// The verify runner (what `stepq verify` prints) in-process on ../shared/golden with the models of
// ../shared/models, at 1 and 2 threads: every golden case must pass. Plus its failure reporting.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { sharedDir } from "../src/io/places.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { formatResult, runVerify, type CaseResult } from "../src/tools/verify.ts";

const goldenDir = path.join(sharedDir(), "golden");
const modelsDir = path.join(sharedDir(), "models");

const byKind = (rs: CaseResult[]) => rs.reduce<Record<string, number>>((a, r) => ((a[r.kind] = (a[r.kind] ?? 0) + 1), a), {});

describe("verify ../shared/golden", () => {
  for (const threads of [1, 2]) {
    it(`every case passes with ${threads} thread${threads > 1 ? "s" : ""}`, async () => {
      const lines: string[] = [];
      const res = await runVerify({ dir: goldenDir, modelDirs: [modelsDir], threads, onResult: (r) => lines.push(formatResult(r)) });
      const failed = res.results.filter((r) => !r.pass).map(formatResult);
      expect(failed).toEqual([]);
      expect(byKind(res.results)).toEqual({ tokenizer: 48, scheduler: 9, unet: 6, text_encoder: 4, vae: 2, e2e: 6 });
      expect(res.passed).toBe(75);
      expect(res.failed).toBe(0);
      expect(lines.length).toBe(75);
      // every unet case checked its output and all 10 intermediates
      for (const r of res.results.filter((r) => r.kind === "unet")) expect(r.checks.length).toBe(11);
      for (const r of res.results.filter((r) => r.kind === "e2e"))
        expect(r.checks.map((c) => c.name.replace(/\[\d+\]/, ""))).toEqual(["ids", "uncond ids", "text_embeddings", "step_latents", "final_latents", "image"]);
      expect(lines.find((l) => l.includes("unet-sd15-tiny#0"))).toMatch(/^PASS unet unet-sd15-tiny#0  max_err \d\.\de-\d\d <= 2e-04/);
      expect(lines.find((l) => l.includes("tokenizer#0"))).toBe("PASS tokenizer tokenizer#0  sd1, sd2 exact");
    });
  }
});

describe("verify failure reporting", () => {
  const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "stepq-verify-"));

  it("needs cases.json or e2e.json", async () => {
    const d = tmp();
    await expect(runVerify({ dir: d })).rejects.toThrow(/neither cases.json nor e2e.json/);
    fs.rmSync(d, { recursive: true });
  });

  it("fails clearly on an unknown model_output_rule, a missing model, a wrong expectation and an unknown kind", async () => {
    const d = tmp();
    const n = 4;
    const f32 = (v: number[]) => ({ dtype: "F32" as const, shape: [v.length / n, n], data: Float32Array.from(v) });
    writeSafetensors(path.join(d, "cases.safetensors"), [
      { name: "x0", ...f32([1, 2, 3, 4]) },
      { name: "eps", ...f32(new Array(n * 2).fill(0.1)) },
      { name: "xs", ...f32(new Array(n * 2).fill(0)) },
    ]);
    const sched = {
      kind: "scheduler",
      scheduler: "ddim",
      config: {},
      num_inference_steps: 2,
      inputs: { initial: "x0", model_output_base: "eps" },
      expected: { samples: "xs" },
      tolerance: { max_abs_rel_to_max: 1e-4 },
    };
    const cases = [
      { ...sched, model_output_rule: "model_output[i] = 2 * model_output_base[i]" },
      { ...sched, model_output_rule: "model_output[i] = model_output_base[i] + 0.01 * scale_model_input(sample_i, t_i)" },
      { kind: "unet", model: "no-such-unet", inputs: {}, expected: {} },
      { kind: "tokenizer", prompt: "a cat", sd1_input_ids: [1, 2, 3] },
      { kind: "controlnet" },
    ];
    fs.writeFileSync(path.join(d, "cases.json"), JSON.stringify({ cases }));
    const res = await runVerify({ dir: d, modelDirs: [goldenDir] });
    const lines = res.results.map(formatResult);
    expect(res.failed).toBe(5);
    expect(lines[0]).toMatch(/^FAIL tokenizer tokenizer#0  mismatch: sd1$/);
    expect(lines[1]).toMatch(/^FAIL scheduler ddim-2  error: unknown model_output_rule "model_output\[i\] = 2 \* model_output_base\[i\]"/);
    expect(lines[2]).toMatch(/^FAIL scheduler ddim-2#1  max_err 1e\+00 > 1e-04 \(sample\[\d\]\)/);
    expect(lines[3]).toMatch(/^FAIL unet no-such-unet#0  error: model folder "no-such-unet" not found \(looked in .*\)/);
    expect(lines[4]).toMatch(/^FAIL controlnet controlnet#0  error: unknown case kind "controlnet"/);
    fs.rmSync(d, { recursive: true });
  });
});
