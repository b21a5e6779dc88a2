import { loadClipTextModel } from "../src/models/loader.ts";
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import * as path from "node:path";
import { Engine } from "../src/runtime/engine.ts";
import { openGolden, maxAbsRelToMax } from "../src/io/golden.ts";
import { sharedDir } from "../src/io/places.ts";
import { clipTextConfig } from "../src/models/config.ts";
import { ClipTextModel } from "../src/models/clip.ts";

const goldenDir = path.join(sharedDir(), "golden");
const golden = await openGolden(goldenDir, "cases");
const cases = (golden.json.cases as any[]).filter((c) => c.kind === "text_encoder");

for (const threads of [1, 2]) {
  describe(`CLIPTextModel vs transformers (${threads} thread${threads > 1 ? "s" : ""})`, () => {
    let eng: Engine;
    const models = new Map<string, ClipTextModel>();
    beforeAll(async () => {
      eng = await Engine.create({ threads, memoryBytes: 128 << 20 });
    });
    afterAll(() => eng?.close());

    for (const c of cases) {
      it(`${c.model} ${c.inputs.input_ids}: last, penultimate, pooled within ${c.tolerance.max_abs_rel_to_max}`, async () => {
        let model = models.get(c.model);
        if (!model) models.set(c.model, (model = await loadClipTextModel(eng, path.join(goldenDir, c.model))));
        const ids = golden.get(c.inputs.input_ids);
        const [batch, L] = ids.shape;
        const before = eng.stats().used;
        const errors: Record<string, number> = {};
        eng.scope(() => {
          const out = model!.encode(Int32Array.from(ids.data), batch);
          expect(out.last.shape).toEqual([batch, L, model!.hiddenSize]);
          expect(out.penultimate.shape).toEqual([batch, L, model!.hiddenSize]);
          expect(out.pooled.shape).toEqual([batch, model!.hiddenSize]);
          errors.last = maxAbsRelToMax(out.last.toArray(), golden.get(c.expected.last_hidden_state).data);
          errors.penultimate = maxAbsRelToMax(out.penultimate.toArray(), golden.get(c.expected.penultimate_hidden_state).data);
          errors.pooled = maxAbsRelToMax(out.pooled.toArray(), golden.get(c.expected.pooled).data);
        });
        expect(eng.stats().used, "no tensors left behind").toBe(before);
        console.log(`[clip ${threads}t] ${c.inputs.input_ids}: ` + Object.entries(errors).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(", "));
        for (const [k, v] of Object.entries(errors)) expect(v, k).toBeLessThanOrEqual(c.tolerance.max_abs_rel_to_max);
      });
    }

    it("the fashion-sd-tiny text encoder (fp16 weights) loads and encodes a padded prompt", async () => {
      const model = await loadClipTextModel(eng, path.join(sharedDir(), "models", "fashion-sd-tiny", "text_encoder"));
      eng.scope(() => {
        const ids = new Int32Array(2 * 77).fill(49407);
        ids.set([49406, 320, 1125, 539, 320, 49407], 0);
        ids.set([49406, 49407], 77);
        const out = model.encode(ids, 2);
        expect(out.last.shape).toEqual([2, 77, 64]);
        expect(out.last.toArray().every(Number.isFinite)).toBe(true);
        // pooled is the row of the first end-of-text token
        const last = out.last.toArray();
        expect(Array.from(out.pooled.toArray().subarray(0, 64))).toEqual(Array.from(last.subarray(5 * 64, 6 * 64)));
        expect(Array.from(out.pooled.toArray().subarray(64))).toEqual(Array.from(last.subarray((77 + 1) * 64, (77 + 2) * 64)));
      });
    });

    it("fashion-sd-tiny text encoder matches the pipeline's text embeddings (golden/e2e) within 2e-4", async () => {
      const model = await loadClipTextModel(eng, path.join(sharedDir(), "models", "fashion-sd-tiny", "text_encoder"));
      const e2e = await openGolden(goldenDir, "e2e");
      for (const c of e2e.json.cases as any[]) {
        eng.scope(() => {
          const ids = e2e.get(c.tensors.input_ids);
          const out = model.encode(Int32Array.from(ids.data), ids.shape[0]);
          const err = maxAbsRelToMax(out.last.toArray(), e2e.get(c.tensors.text_embeddings).data);
          console.log(`[clip ${threads}t] fashion-sd-tiny ${c.id} "${c.prompt}": last ${err.toExponential(2)}`);
          expect(err, c.id).toBeLessThanOrEqual(2e-4);
        });
      }
    });

    it("bad ids and configs give clear errors", async () => {
      const model = models.get(cases[0].model) ?? await loadClipTextModel(eng, path.join(goldenDir, cases[0].model));
      expect(() => model.encode(new Int32Array(77).fill(49408), 1)).toThrow(/token id 49408 at position 0 is outside the vocabulary/);
      expect(() => model.encode(new Int32Array(78), 1)).toThrow(/sequence length 78/);
      await expect(ClipTextModel.fromConfig(eng, clipTextConfig({ hidden_size: 32, num_attention_heads: 4, hidden_act: "relu" }), "random")).rejects.toThrow(/hidden_act "relu"/);
    });
  });
}
