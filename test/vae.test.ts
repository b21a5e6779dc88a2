import { loadVae } from "../src/models/loader.ts";
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import * as path from "node:path";
import { Engine } from "../src/runtime/engine.ts";
import { openGolden, maxAbsRelToMax } from "../src/io/golden.ts";
import { sharedDir } from "../src/io/places.ts";
import { vaeConfig } from "../src/models/config.ts";
import { Vae } from "../src/models/vae.ts";
import { tensorFromNCHW, tensorToNCHW } from "../src/models/layout.ts";

const goldenDir = path.join(sharedDir(), "golden");
const golden = await openGolden(goldenDir, "cases");
const cases = (golden.json.cases as any[]).filter((c) => c.kind === "vae");

for (const threads of [1, 2]) {
  describe(`AutoencoderKL vs diffusers (${threads} thread${threads > 1 ? "s" : ""})`, () => {
    let eng: Engine;
    let vae: Vae;
    beforeAll(async () => {
      eng = await Engine.create({ threads, memoryBytes: 128 << 20 });
      vae = await loadVae(eng, path.join(goldenDir, "vae-tiny"));
    });
    afterAll(() => eng?.close());

    for (const c of cases) {
      it(`${c.inputs.latents}: decode and encode within ${c.tolerance.max_abs_rel_to_max}`, async () => {
        const errors: Record<string, number> = {};
        const before = eng.stats().used;
        eng.scope(() => {
          const z = golden.get(c.inputs.latents);
          const img = vae.decode(tensorFromNCHW(eng, z.data, z.shape));
          const expImg = golden.get(c.expected.decoded);
          const got = tensorToNCHW(img);
          expect(got.shape).toEqual(expImg.shape);
          errors.decoded = maxAbsRelToMax(got.data, expImg.data);

          const x = golden.get(c.inputs.image);
          const post = vae.encode(tensorFromNCHW(eng, x.data, x.shape));
          errors.mean = maxAbsRelToMax(tensorToNCHW(post.mean).data, golden.get(c.expected.posterior_mean).data);
          errors.logvar = maxAbsRelToMax(tensorToNCHW(post.logvar).data, golden.get(c.expected.posterior_logvar).data);
        });
        expect(eng.stats().used, "no tensors left behind").toBe(before);
        console.log(`[vae ${threads}t] ${c.inputs.latents}: ` + Object.entries(errors).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(", "));
        for (const [k, v] of Object.entries(errors)) expect(v, k).toBeLessThanOrEqual(c.tolerance.max_abs_rel_to_max);
      });
    }

    it("fashion-sd-tiny VAE decodes the pipeline's final latents to its images (golden/e2e) within 2e-4", async () => {
      const fashion = await loadVae(eng, path.join(sharedDir(), "models", "fashion-sd-tiny", "vae"));
      const e2e = await openGolden(goldenDir, "e2e");
      for (const c of e2e.json.cases as any[]) {
        eng.scope(() => {
          const z = e2e.get(c.tensors.final_latents);
          const scaled = z.data.map((v) => v / fashion.scalingFactor);
          const img = tensorToNCHW(fashion.decode(tensorFromNCHW(eng, scaled, z.shape)));
          const err = maxAbsRelToMax(img.data, e2e.get(c.tensors.image).data);
          console.log(`[vae ${threads}t] fashion-sd-tiny ${c.id}: image ${err.toExponential(2)}`);
          expect(err, c.id).toBeLessThanOrEqual(2e-4);
        });
      }
    });

    it("scaling factor, decoder-only loading, fashion-sd-tiny fp16 weights, errors", async () => {
      expect(vae.scalingFactor).toBe(0.18215);
      const fashion = await loadVae(eng, path.join(sharedDir(), "models", "fashion-sd-tiny", "vae"), { encoder: false });
      expect(fashion.scalingFactor).toBeCloseTo(0.309004, 6);
      expect(fashion.hasEncoder).toBe(false);
      eng.scope(() => {
        const img = fashion.decode(eng.zeros([1, 8, 8, 4]));
        expect(img.shape).toEqual([1, 32, 32, 3]);
        expect(img.toArray().every(Number.isFinite)).toBe(true);
        expect(() => fashion.encode(eng.zeros([1, 32, 32, 3]))).toThrow(/without its encoder/);
        expect(() => vae.decode(eng.zeros([1, 4, 8, 8]))).toThrow(/NHWC/);
      });
      await expect(Vae.fromConfig(eng, vaeConfig({ up_block_types: ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"], block_out_channels: [32, 32] }), "random")).rejects.toThrow(
        /up_block_types\[1\] "AttnUpDecoderBlock2D"/,
      );
    });
  });
}
