// stepq convert: BF16 / INT8 stepq weights of a UNet (unet-sd15-tiny golden). The converted files carry the
// format metadata and dtypes of weights-tools/README.md, load without a calibration, and give outputs
// bit-identical to the same precisions built from the original checkpoint.
import { loadUNet } from "../src/models/loader.ts";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { UNet } from "../src/models/unet.ts";
import { openGolden } from "../src/io/golden.ts";
import { sharedDir } from "../src/io/places.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { tensorFromNCHW, tensorToNCHW } from "../src/models/layout.ts";
import { CALIBRATION_FORMAT, MinMaxObserver, MissingCalibrationError, readCalibration, writeCalibration, type Calibration } from "../src/models/calibration.ts";
import { convert } from "../weights-tools/convert.ts";
import { run as convertCli } from "../src/cli/convert.ts";
import { UsageError } from "../src/cli/args.ts";

const goldenDir = path.join(sharedDir(), "golden");
const golden = await openGolden(goldenDir, "cases");
const cases = (golden.json.cases as any[]).filter((c) => c.kind === "unet" && c.model === "unet-sd15-tiny");
const unetDir = path.join(goldenDir, "unet-sd15-tiny");

describe("stepq convert (unet-sd15-tiny)", () => {
  let eng: Engine;
  let tmp: string;
  let calFile: string;
  let out: string;
  const input = (c: any) => {
    const s = golden.get(c.inputs.sample);
    const ctx = golden.get(c.inputs.encoder_hidden_states);
    return { x: tensorFromNCHW(eng, s.data, s.shape), t: c.inputs.timestep, ctx: eng.fromArray(ctx.data, ctx.shape) };
  };
  beforeAll(async () => {
    eng = await Engine.create({ threads: 2, memoryBytes: 256 << 20 });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-convert-"));
    const obs = new MinMaxObserver();
    const u = await loadUNet(eng, unetDir, { precisions: ["fp32"] });
    u.precisionContext!.observe = (n, x) => obs.observe(n, x);
    for (const c of cases)
      eng.scope(() => {
        const i = input(c);
        u.forward(i.x, i.t, i.ctx);
        obs.endCall();
      });
    const cal: Calibration = { format: CALIBRATION_FORMAT, version: 1, model: unetDir, steps: 0, guidance: 0, scheduler: "", prompts: 0, unetCalls: obs.calls, seed0: 0, observer: obs.info, actQmax: 127, created: "", layers: obs.layers() };
    calFile = path.join(tmp, "cal.json");
    writeCalibration(calFile, cal);
    out = path.join(tmp, "converted");
    await convert({ model: unetDir, precisions: ["bf16", "int8"], out, calibration: calFile });
  });
  afterAll(async () => {
    eng?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("writes the documented format: metadata, BF16 / I8 layers, scales, activation params, the rest unchanged", async () => {
    expect(fs.readdirSync(out).sort()).toEqual(["config.json", "stepq-bf16.safetensors", "stepq-calibration.json", "stepq-int8.safetensors"]);
    const orig = await SafetensorsFile.open(path.join(unetDir, "diffusion_pytorch_model.safetensors"));
    const b = await SafetensorsFile.open(path.join(out, "stepq-bf16.safetensors"));
    const q = await SafetensorsFile.open(path.join(out, "stepq-int8.safetensors"));
    try {
      expect(b.metadata).toMatchObject({ format: "stepq", stepq_format_version: "1", precision: "bf16" });
      expect(q.metadata).toMatchObject({ format: "stepq", stepq_format_version: "1", precision: "int8", act_qmax: "127" });
      const layer = "down_blocks.0.resnets.0.conv1";
      expect(b.info(`${layer}.weight`).dtype).toBe("BF16");
      expect(q.info(`${layer}.weight`)).toMatchObject({ dtype: "I8", shape: orig.info(`${layer}.weight`).shape });
      expect(q.info(`${layer}.weight_scale`)).toMatchObject({ dtype: "F32", shape: [orig.info(`${layer}.weight`).shape[0]] });
      expect(q.info(`${layer}.input_scale`)).toMatchObject({ dtype: "F32", shape: [1] });
      expect(q.info(`${layer}.input_zero_point`)).toMatchObject({ dtype: "I32", shape: [1] });
      expect(q.info(`${layer}.bias`).dtype).toBe("F32");
      const norm = "down_blocks.0.resnets.0.norm1.weight";
      expect(Buffer.from(await q.readRaw(norm)).equals(Buffer.from(await orig.readRaw(norm)))).toBe(true);
      expect(q.info(norm).dtype).toBe(orig.info(norm).dtype);
    } finally {
      orig.close();
      b.close();
      q.close();
    }
  });

  it("loading the converted files needs no calibration and gives the same outputs, bit for bit", async () => {
    // no calibration next to the converted weights: they carry the activation params
    fs.rmSync(path.join(out, "stepq-calibration.json"));
    const conv = await loadUNet(eng, out, { precisions: ["bf16", "int8"] });
    const orig = await loadUNet(eng, unetDir, { precisions: ["bf16", "int8"], calibration: calFile });
    for (const c of cases)
      for (const p of ["bf16", "int8"] as const) {
        conv.setPrecision(p);
        orig.setPrecision(p);
        const [a, b] = eng.scope(() => {
          const i = input(c);
          return [tensorToNCHW(conv.forward(i.x, i.t, i.ctx)).data, tensorToNCHW(orig.forward(i.x, i.t, i.ctx)).data];
        });
        expect(Array.from(a), `${p} t=${c.inputs.timestep}`).toEqual(Array.from(b));
      }
    // fp32 needs the original checkpoint
    await expect(loadUNet(eng, out)).rejects.toThrow(/only stepq converted weights/);
    await expect(loadUNet(eng, out, { precisions: ["fp32", "int8"] })).rejects.toThrow(/precisions fp32 need the original checkpoint/);
  });

  it("errors: int8 without a calibration, CLI usage", async () => {
    await expect(convert({ model: unetDir, precisions: ["int8"], out: path.join(tmp, "x") })).rejects.toThrow(MissingCalibrationError);
    await expect(convertCli(["--model", unetDir, "--precision", "fp32"])).rejects.toThrow(UsageError);
    await expect(convertCli(["--model", unetDir])).rejects.toThrow(/--precision is required/);
  });

  it("per-step calibrations: convert refuses them, and loading converted int8 with one is an error", async () => {
    const cal = await readCalibration(calFile);
    const perStep: Calibration = { ...cal, timesteps: [500], layers: Object.fromEntries(Object.entries(cal.layers).map(([k, r]) => [k, { ...r, steps: [{ min: r.min, max: r.max }] }])) };
    const f = path.join(tmp, "per-step.json");
    writeCalibration(f, perStep);
    await expect(convert({ model: unetDir, precisions: ["int8"], out: path.join(tmp, "y"), calibration: f })).rejects.toThrow(/has per-step ranges .*converted int8 files cannot hold/);
    await expect(loadUNet(eng, out, { precisions: ["int8"], calibration: f })).rejects.toThrow(/has per-step ranges, but int8 is loaded from the converted/);
    // a calibration without per-step ranges is still ignored by converted layers
    expect((await loadUNet(eng, out, { precisions: ["int8"], calibration: calFile })).precisions).toEqual(["int8"]);
  });
});
