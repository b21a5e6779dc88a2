import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CLIP_TEXT_SUPPORTED, SD15_UNET_CONFIG, SD21_UNET_CONFIG, UNET_SUPPORTED, VAE_SUPPORTED, checkSupported, loadClipTextConfig, loadUNetConfig, loadVaeConfig, unetAttentionHeads, unetConfig } from "../src/models/config.ts";
import { DiffusersError, checkPipelineComponents, findWeights, loadComponentConfig, loadPipelineIndex } from "../src/io/diffusers.ts";
import { parsePythonJson } from "../src/io/json.ts";
import { sharedDir } from "../src/io/places.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";

const shared = sharedDir();
const fashion = path.join(shared, "models", "fashion-sd-tiny");
const golden = path.join(shared, "golden");

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "stepq-diffusers-"));
}

/** A pipeline folder with copies of the fashion-sd-tiny configs (no weights). */
function fakePipeline(): string {
  const d = tmpDir();
  fs.copyFileSync(path.join(fashion, "model_index.json"), path.join(d, "model_index.json"));
  for (const c of ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]) {
    fs.mkdirSync(path.join(d, c));
    for (const f of fs.readdirSync(path.join(fashion, c)))
      if (f.endsWith(".json")) fs.copyFileSync(path.join(fashion, c, f), path.join(d, c, f));
  }
  return d;
}

describe("fashion-sd-tiny pipeline", () => {
  it("reads model_index.json", async () => {
    const idx = await loadPipelineIndex(fashion);
    expect(idx.className).toBe("StableDiffusionPipeline");
    expect(idx.components.unet).toEqual({ library: "diffusers", className: "UNet2DConditionModel" });
    expect(idx.components.text_encoder).toEqual({ library: "transformers", className: "CLIPTextModel" });
    expect(idx.components.safety_checker).toBeUndefined(); // [null, null]
    expect(idx.raw.requires_safety_checker).toBe(false);
    expect(checkPipelineComponents(idx)).toEqual([]);
  });

  it("loads and checks the component configs", async () => {
    const warnings: string[] = [];
    const unet = await loadUNetConfig(path.join(fashion, "unet"), { onWarning: (w) => warnings.push(w) });
    expect(unet.block_out_channels).toEqual([64, 128, 128]);
    expect(unet.down_block_types).toEqual(["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]);
    expect(unet.cross_attention_dim).toBe(64);
    expect(unetAttentionHeads(unet)).toEqual({ heads: [8, 8, 8], headDim: [8, 16, 16] });
    const vae = await loadVaeConfig(path.join(fashion, "vae"), { onWarning: (w) => warnings.push(w) });
    expect(vae.latent_channels).toBe(4);
    expect(vae.scaling_factor).toBeCloseTo(0.309004, 5);
    const te = await loadClipTextConfig(path.join(fashion, "text_encoder"), { onWarning: (w) => warnings.push(w) });
    expect(te.hidden_act).toBe("quick_gelu");
    expect(te.num_hidden_layers).toBe(4);
    expect(te.eos_token_id).toBe(49407);
    expect(warnings).toEqual([]);
    const sched = await loadComponentConfig(fashion, "scheduler");
    expect(sched._class_name).toBe("PNDMScheduler");
    expect(sched.skip_prk_steps).toBe(true);
    expect((await loadComponentConfig(fashion, "unet")).sample_size).toBe(8);
  });

  it("finds the safetensors weights of each component", async () => {
    for (const [c, f] of [
      ["unet", "diffusion_pytorch_model.safetensors"],
      ["vae", "diffusion_pytorch_model.safetensors"],
      ["text_encoder", "model.safetensors"],
    ]) {
      const p = await findWeights(path.join(fashion, c));
      expect(path.basename(p)).toBe(f);
      const st = await SafetensorsFile.open(p);
      expect(st.tensors.size).toBeGreaterThan(0);
      st.close();
    }
  });
});

describe("golden model configs", () => {
  it("SD 1.5-style and SD 2.1-style tiny UNets", async () => {
    const sd15 = await loadUNetConfig(path.join(golden, "unet-sd15-tiny"));
    expect(sd15.use_linear_projection).toBe(false);
    expect(sd15.upcast_attention).toBe(false);
    expect(unetAttentionHeads(sd15).heads).toEqual([8, 8, 8]);
    const sd21 = await loadUNetConfig(path.join(golden, "unet-sd21-tiny"));
    expect(sd21.use_linear_projection).toBe(true);
    expect(sd21.upcast_attention).toBe(true);
    expect(unetAttentionHeads(sd21)).toEqual({ heads: [2, 4, 4], headDim: [16, 16, 16] });
    expect(path.basename(await findWeights(path.join(golden, "unet-sd21-tiny")))).toBe("diffusion_pytorch_model.safetensors");
  });

  it("VAE and both text encoders", async () => {
    expect((await loadVaeConfig(path.join(golden, "vae-tiny"))).scaling_factor).toBe(0.18215);
    expect((await loadClipTextConfig(path.join(golden, "text-encoder-clip-l-tiny"))).hidden_act).toBe("quick_gelu");
    const h = await loadClipTextConfig(path.join(golden, "text-encoder-openclip-h-tiny"));
    expect(h.hidden_act).toBe("gelu");
    expect(h.pad_token_id).toBe(0);
  });

  it("public SD 1.5 / SD 2.1 UNet configs are supported", async () => {
    expect(checkSupported(SD15_UNET_CONFIG, UNET_SUPPORTED)).toEqual([]);
    expect(checkSupported(SD21_UNET_CONFIG, UNET_SUPPORTED)).toEqual([]);
    expect(SD15_UNET_CONFIG.cross_attention_dim).toBe(768);
    expect(SD21_UNET_CONFIG.cross_attention_dim).toBe(1024);
    expect(SD15_UNET_CONFIG.sample_size).toBe(64);
    expect(SD21_UNET_CONFIG.sample_size).toBe(96);
    expect(unetAttentionHeads(SD15_UNET_CONFIG)).toEqual({ heads: [8, 8, 8, 8], headDim: [40, 80, 160, 160] });
    expect(unetAttentionHeads(SD21_UNET_CONFIG)).toEqual({ heads: [5, 10, 20, 20], headDim: [64, 64, 64, 64] });
    expect(SD21_UNET_CONFIG.upcast_attention).toBe(true);
    expect(SD15_UNET_CONFIG.use_linear_projection).toBe(false);
  });

  it("defaults fill missing fields", async () => {
    const c = unetConfig({ block_out_channels: [32, 64] });
    expect(c.layers_per_block).toBe(2);
    expect(c.act_fn).toBe("silu");
    expect(c.flip_sin_to_cos).toBe(true);
  });
});

describe("errors", () => {
  it("missing model folder / model_index.json", async () => {
    const d = tmpDir();
    await expect(loadPipelineIndex(path.join(d, "nope"))).rejects.toThrow(/model folder not found/);
    await expect(loadPipelineIndex(d)).rejects.toThrow(DiffusersError);
    await expect(loadPipelineIndex(d)).rejects.toThrow(/model_index\.json: not found/);
  });

  it("bad JSON in model_index.json names the file", async () => {
    const d = tmpDir();
    fs.writeFileSync(path.join(d, "model_index.json"), '{"unet": [');
    await expect(loadPipelineIndex(d)).rejects.toThrow(/model_index\.json: invalid JSON/);
  });

  it("missing component in model_index.json and missing component folder", async () => {
    const d = fakePipeline();
    const idx = JSON.parse(fs.readFileSync(path.join(d, "model_index.json"), "utf8"));
    expect((await loadPipelineIndex(d)).components.vae.className).toBe("AutoencoderKL");
    fs.rmSync(path.join(d, "vae"), { recursive: true });
    await expect(loadPipelineIndex(d)).rejects.toThrow(/vae: component folder not found \(vae is listed in .*model_index\.json\)/);
    delete idx.vae;
    fs.writeFileSync(path.join(d, "model_index.json"), JSON.stringify(idx));
    await expect(loadPipelineIndex(d)).rejects.toThrow(/model_index\.json: missing component "vae"/);
    idx.vae = [null, null];
    fs.writeFileSync(path.join(d, "model_index.json"), JSON.stringify(idx));
    await expect(loadPipelineIndex(d)).rejects.toThrow(/missing component "vae"/);
    // not required: fine
    expect((await loadPipelineIndex(d, ["unet"])).components.unet).toBeDefined();
  });

  it("missing or broken component config", async () => {
    const d = fakePipeline();
    await expect(loadComponentConfig(d, "nope")).rejects.toThrow(/nope: component folder not found/);
    fs.rmSync(path.join(d, "unet", "config.json"));
    await expect(loadComponentConfig(d, "unet")).rejects.toThrow(/unet[\\/]config\.json: not found/);
    fs.writeFileSync(path.join(d, "unet", "config.json"), "[1, 2");
    await expect(loadUNetConfig(path.join(d, "unet"))).rejects.toThrow(/unet[\\/]config\.json: invalid JSON/);
    fs.writeFileSync(path.join(d, "unet", "config.json"), "[1, 2]");
    await expect(loadUNetConfig(path.join(d, "unet"))).rejects.toThrow(/expected a JSON object/);
  });

  it("unsupported UNet block type is reported by field and index", async () => {
    const d = fakePipeline();
    const f = path.join(d, "unet", "config.json");
    const cfg = JSON.parse(fs.readFileSync(f, "utf8"));
    cfg.down_block_types[2] = "SimpleCrossAttnDownBlock2D";
    fs.writeFileSync(f, JSON.stringify(cfg));
    await expect(loadUNetConfig(path.join(d, "unet"))).rejects.toThrow(
      'unet/config.json: down_block_types[2] "SimpleCrossAttnDownBlock2D" is not supported',
    );
  });

  it("reports every unsupported value, unknown fields and inconsistent lengths", async () => {
    const cfg = unetConfig({
      ...SD15_UNET_CONFIG,
      act_fn: "gelu",
      up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
      addition_embed_type: "text_time",
      some_new_feature: 3,
      some_new_flag: null,
      attention_head_dim: [5, 10, 20],
    });
    const issues = checkSupported(cfg, UNET_SUPPORTED);
    const msgs = issues.map((i) => `${i.severity}: ${i.message}`);
    expect(msgs).toContain('error: unet/config.json: act_fn "gelu" is not supported (supported: "silu")');
    expect(msgs).toContain('error: unet/config.json: addition_embed_type "text_time" is not supported (supported: null)');
    expect(msgs).toContain("error: unet/config.json: unknown field some_new_feature = 3 is not supported");
    expect(msgs).toContain("warning: unet/config.json: unknown field some_new_flag = null (ignored)");
    expect(msgs).toContain("error: unet/config.json: attention_head_dim has 3 entries, expected 4");
    expect(msgs).toContain("error: unet/config.json: up_block_types has 3 entries but block_out_channels has 4");
  });

  it("VAE and text encoder checks", async () => {
    const vae = { ...loadComponentConfig(fashion, "vae"), up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "AttnUpDecoderBlock2D"] };
    expect(checkSupported(vae, VAE_SUPPORTED).map((i) => i.message)).toEqual([
      'vae/config.json: up_block_types[2] "AttnUpDecoderBlock2D" is not supported (supported: "UpDecoderBlock2D")',
    ]);
    const te = { ...loadComponentConfig(fashion, "text_encoder"), hidden_act: "relu", output_hidden_states: true };
    const issues = checkSupported(te, CLIP_TEXT_SUPPORTED);
    expect(issues.filter((i) => i.severity === "error").map((i) => i.message)).toEqual([
      'text_encoder/config.json: hidden_act "relu" is not supported (supported: "quick_gelu", "gelu")',
    ]);
    expect(issues.filter((i) => i.severity === "warning").map((i) => i.field)).toEqual(["output_hidden_states"]);
  });

  it("findWeights: variants, pickles, nothing", async () => {
    const d = tmpDir();
    const touch = (f: string) => fs.writeFileSync(path.join(d, f), "");
    touch("config.json");
    await expect(findWeights(d)).rejects.toThrow(/no \.safetensors weights file found/);
    touch("diffusion_pytorch_model.bin");
    await expect(findWeights(d)).rejects.toThrow(/PyTorch pickle weights are not supported; convert to safetensors/);
    touch("diffusion_pytorch_model.fp16.safetensors");
    expect(path.basename(await findWeights(d))).toBe("diffusion_pytorch_model.fp16.safetensors");
    touch("diffusion_pytorch_model.safetensors");
    expect(path.basename(await findWeights(d))).toBe("diffusion_pytorch_model.safetensors");
    expect(path.basename(await findWeights(d, { variant: "fp16" }))).toBe("diffusion_pytorch_model.fp16.safetensors");
    const e = tmpDir();
    fs.writeFileSync(path.join(e, "model.ckpt"), "");
    await expect(findWeights(e)).rejects.toThrow(/PyTorch pickle weights are not supported; convert to safetensors \(found model\.ckpt\)/);
    await expect(findWeights(path.join(e, "nope"))).rejects.toThrow(/component folder not found/);
  });
});

describe("parsePythonJson", () => {
  it("accepts NaN / Infinity / -Infinity outside strings", async () => {
    expect(parsePythonJson('{"a": -Infinity, "b": [NaN, Infinity], "c": "NaN -Infinity \\" Infinity"}')).toEqual({
      a: -Infinity,
      b: [NaN, Infinity],
      c: 'NaN -Infinity " Infinity',
    });
  });

  it("parses the golden cases.json", async () => {
    const j = parsePythonJson(fs.readFileSync(path.join(golden, "cases.json"), "utf8"));
    expect(Array.isArray(j.cases)).toBe(true);
  });
});
