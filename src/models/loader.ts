// Loading model components from their folders (a path, or a URL the folder is served from; every read goes
// through src/io's byte source): which file of a folder holds the weights, which stepq converted files and
// calibration sit beside them, and which component classes build from them. The model classes themselves only
// build from a WeightStore (fromConfig), so this is the one place that knows the folder layout of a component.
import type { Engine } from "../runtime/engine.ts";
import { findWeights } from "../io/diffusers.ts";
import { readJsonObject } from "../io/json.ts";
import { baseName, fileExists, joinLocation, listFiles, parentLocation } from "../io/source.ts";
import { loadClipTextConfig, loadUNetConfig, loadVaeConfig } from "./config.ts";
import { WeightStore, WeightError, type TrainingSetup } from "./weights.ts";
import { UNet } from "./unet.ts";
import { Vae, type VaeLoadOptions } from "./vae.ts";
import { ClipTextModel } from "./clip.ts";
import { FashionClassifier, type ClassifierConfig } from "./classifier.ts";
import { createPrecisionContext, PrecisionError, type Precision } from "./precision.ts";
import { defaultCalibrationPath, MissingCalibrationError, readCalibration, type Calibration } from "./calibration.ts";
import { stepqWeightsName } from "./converted.ts";

/** Runs build with a store over `file`, then checks every tensor was used; the file is closed either way. */
async function withStore<T>(eng: Engine, file: string, build: (ws: WeightStore) => Promise<T>): Promise<T> {
  const ws = await WeightStore.open(eng, file);
  try {
    return await build(ws);
  } finally {
    ws.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// UNet

/** How loadUNet builds the per-step precision variants (see src/models/precision.ts). */
export interface UNetLoadOptions {
  /**
   * Keep these variants of every conv/linear layer resident (e.g. ["bf16", "int8"] for the paper's schedule)
   * and switch between them with setPrecision(). Default: plain fp32 weights, no switching.
   */
  precisions?: readonly Precision[];
  /**
   * INT8 activation ranges for layers quantised at load: a calibration file (path or URL), its contents, or
   * "synthetic" (a fixed range: random-weight latency benchmarks only). Default: the unet folder's
   * stepq-calibration.json. Not needed when the folder has stepq-int8.safetensors (stepq convert).
   */
  calibration?: string | Calibration | "synthetic" | null;
  /** Build trainable layers over f32 master weights (src/train; not with precisions). */
  training?: TrainingSetup;
}

/** The unet folder's original checkpoint (not a stepq converted file), or an error. */
async function findOriginalWeights(dir: string, why: string): Promise<string> {
  const st = ((await listFiles(dir)) ?? []).filter((f) => f.endsWith(".safetensors"));
  const stepq = st.filter((f) => f.startsWith("stepq-"));
  if (stepq.length && st.length === stepq.length)
    throw new PrecisionError(`${dir} has only stepq converted weights (${stepq.join(", ")}); ${why} the original checkpoint`);
  const f = await findWeights(dir);
  if (baseName(f).startsWith("stepq-")) throw new PrecisionError(`${dir}: no original checkpoint found beside ${baseName(f)}; ${why} it`);
  return f;
}

async function resolveCalibration(c: UNetLoadOptions["calibration"], fallbackFile: string | null): Promise<{ calibration: Calibration | "synthetic" | null; file?: string }> {
  if (c === "synthetic") return { calibration: "synthetic" };
  if (c && typeof c === "object") return { calibration: c, file: "the calibration given" };
  const file = typeof c === "string" ? c : fallbackFile;
  if (!file) return { calibration: null };
  return (await fileExists(file)) ? { calibration: await readCalibration(file), file } : { calibration: null, file };
}

/**
 * Loads `<dir>/config.json` and the safetensors weights of a diffusers unet folder. With opts.precisions,
 * every listed variant of each conv/linear layer is kept (see UNetLoadOptions); variants with a stepq
 * converted file in the folder (stepq-bf16.safetensors, stepq-int8.safetensors) are read from it.
 */
export async function loadUNet(eng: Engine, dir: string, opts: UNetLoadOptions = {}): Promise<UNet> {
  const config = await loadUNetConfig(dir);
  if (opts.training && opts.precisions) throw new PrecisionError("loadUNet: a trainable UNet has f32 master weights; precisions do not apply");
  if (!opts.precisions)
    return withStore(eng, await findOriginalWeights(dir, opts.training ? "training needs" : "fp32 needs"), async (ws) => {
      if (opts.training) ws.useTraining(opts.training);
      const unet = await UNet.fromConfig(eng, config, ws);
      ws.assertAllUsed("UNet2DConditionModel");
      return unet;
    });
  const ctx = createPrecisionContext(opts.precisions);
  const files: { bf16?: string; int8?: string } = {};
  for (const p of ["bf16", "int8"] as const) {
    const f = joinLocation(dir, stepqWeightsName(p));
    if (ctx.loaded.includes(p) && (await fileExists(f))) files[p] = f;
  }
  const fromCkpt = ctx.loaded.filter((p) => p === "fp32" || !files[p]);
  const parent = parentLocation(dir.replace(/\/+$/, ""));
  const modelHint = (await fileExists(joinLocation(parent, "model_index.json"))) ? parent : dir;
  const primary = fromCkpt.length ? await findOriginalWeights(dir, `precisions ${fromCkpt.join(", ")} need`) : (files.bf16 ?? files.int8)!;
  let cal: Awaited<ReturnType<typeof resolveCalibration>> = { calibration: null };
  if (fromCkpt.includes("int8")) {
    cal = await resolveCalibration(opts.calibration, defaultCalibrationPath(dir));
    // fail before building anything
    if (!cal.calibration) throw new MissingCalibrationError(cal.file ?? defaultCalibrationPath(dir), modelHint);
  } else if (files.int8 && opts.calibration != null) {
    // not used by the converted layers, but a per-step calibration given explicitly must not be ignored silently
    cal = await resolveCalibration(opts.calibration, null);
  }
  return withStore(eng, primary, async (ws) => {
    await ws.usePrecisions({ ctx, calibration: cal.calibration, calibrationFile: cal.file, modelHint, files });
    const unet = await UNet.fromConfig(eng, config, ws);
    ws.assertAllUsed("UNet2DConditionModel");
    return unet;
  });
}

// ---------------------------------------------------------------------------------------------------
// VAE, text encoder, classifier

/** Loads `<dir>/config.json` and the safetensors weights of a diffusers vae folder. */
export async function loadVae(eng: Engine, dir: string, opts: VaeLoadOptions = {}): Promise<Vae> {
  const config = await loadVaeConfig(dir);
  return withStore(eng, await findWeights(dir), async (ws) => {
    const vae = await Vae.fromConfig(eng, config, ws, opts);
    if (opts.encoder !== false) ws.assertAllUsed("AutoencoderKL");
    else ws.assertAllUsed("AutoencoderKL decoder", (n) => n.startsWith("encoder.") || n.startsWith("quant_conv."));
    return vae;
  });
}

/** Loads `<dir>/config.json` and the safetensors weights of a transformers CLIPTextModel folder. */
export async function loadClipTextModel(eng: Engine, dir: string): Promise<ClipTextModel> {
  const config = await loadClipTextConfig(dir);
  return withStore(eng, await findWeights(dir), async (ws) => {
    // transformers 4.x saves CLIPTextModel weights under "text_model.", 5.x without
    const prefix = ws.has("text_model.embeddings.token_embedding.weight") ? "text_model." : "";
    const model = await ClipTextModel.fromConfig(eng, config, ws.at(prefix));
    ws.assertAllUsed("CLIPTextModel", (n) => n.endsWith("embeddings.position_ids"));
    return model;
  });
}

/** Loads config.json + model.safetensors of the fashion classifier (../shared/models/fashion-classifier). */
export async function loadClassifier(eng: Engine, dir: string): Promise<FashionClassifier> {
  const cfgPath = joinLocation(dir, "config.json");
  const config = (await readJsonObject(cfgPath, WeightError)) as ClassifierConfig;
  return withStore(eng, joinLocation(dir, "model.safetensors"), (ws) => FashionClassifier.fromWeights(eng, config, ws, cfgPath));
}
