// Converts a diffusers UNet checkpoint into stepq weights (one safetensors file per precision in the unet
// folder: stepq-bf16.safetensors, stepq-int8.safetensors) that WeightStore builds layers from with no
// calibration: the stored BF16 values, int8 weights, scales and activation params are what the layers get. The format is documented in weights-tools/README.md.
//
// Layers are the checkpoint's `*.weight` tensors of rank 2 (linear) or 4 (conv; SD 1.x's 1x1 proj_in/out
// too): exactly the tensors UNet loading builds conv/linear layers from (the rank-1 `*.weight` tensors are
// norm scales). Everything else (norms, embeddings) is copied with its dtype unchanged.
//   bf16: X.weight as BF16 (round to nearest even, as torch's .to(torch.bfloat16)), X.bias as F32.
//   int8: X.weight as I8 (symmetric per output channel, q = round(w / s), s = max|w| / 127, the exact
//         function INT8 loading uses), X.weight_scale F32 [out], X.input_scale F32 [1] and
//         X.input_zero_point I32 [1] (the layer's activation params from the calibration), X.bias F32.
// CLI: stepq convert (src/cli/convert.ts).
import * as fs from "node:fs";
import * as path from "node:path";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";
import { findWeights } from "../src/io/diffusers.ts";
import { f32ArrayToBf16Bits, quantizeWeightsPerChannel, ACT_QMAX_DEFAULT } from "../src/nn/quant.ts";
import { actParamsFor, CALIBRATION_FILE, defaultCalibrationPath, hasPerStepRanges, MissingCalibrationError, readCalibration, writeCalibration, type Calibration } from "../src/models/calibration.ts";
import { STEPQ_FORMAT, STEPQ_FORMAT_VERSION, stepqWeightsName } from "../src/models/converted.ts";
import { copyFileAtomic } from "../src/io/files.ts";
import { checkOutputFile, checkOutputFolder, OutputError, realPathOf } from "../src/io/outputs.ts";

export type ConvertPrecision = "bf16" | "int8";

export interface ConvertOptions {
  /** diffusers pipeline folder (or a unet folder). */
  model: string;
  precisions: ConvertPrecision[];
  /**
   * Output pipeline folder: gets the other components (hard links, else copies), unet/config.json and the
   * converted files. Default: write the converted files into the model's own unet folder.
   */
  out?: string;
  /** Calibration for int8 (default: <unet>/stepq-calibration.json). */
  calibration?: string;
  /**
   * Write into an `out` folder that exists and is neither empty nor an earlier convert output (files of the
   * same names are replaced), or over converted files that are not safetensors. Never allows an `out` that is
   * inside the model folder.
   */
  force?: boolean;
  onProgress?: (message: string) => void;
}

export interface ConvertResult {
  /** The unet folder written to. */
  unetDir: string;
  files: { precision: ConvertPrecision; file: string; layers: number; bytes: number }[];
}

/** The unet folder of a pipeline folder, or the folder itself when it is a unet folder. */
export function unetDirOf(model: string): string {
  if (fs.existsSync(path.join(model, "model_index.json"))) return path.join(model, "unet");
  if (fs.existsSync(path.join(model, "config.json"))) return model;
  throw new Error(`${model}: neither a diffusers pipeline folder (model_index.json) nor a unet folder (config.json)`);
}

/** Whether a checkpoint tensor is a conv/linear layer weight (rank 2 or 4 `*.weight`). */
export function isLayerWeight(name: string, shape: readonly number[]): boolean {
  return name.endsWith(".weight") && (shape.length === 2 || shape.length === 4);
}

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Converts one checkpoint file into the stepq file of one precision; returns the layer count. */
export async function convertFile(src: string, dst: string, precision: ConvertPrecision, cal: Calibration | null, calLabel: string): Promise<{ layers: number; bytes: number }> {
  const st = await SafetensorsFile.open(src);
  try {
    const layerNames = new Set<string>();
    for (const t of st.tensors.values()) if (isLayerWeight(t.name, t.shape)) layerNames.add(t.name.slice(0, -".weight".length));
    if (precision === "int8") {
      if (!cal) throw new Error("int8 conversion needs a calibration");
      for (const l of layerNames) actParamsFor(cal, l, calLabel); // every layer has a range, before writing anything
    }
    const out: TensorToWrite[] = [];
    for (const t of st.tensors.values()) {
      const isBias = t.name.endsWith(".bias") && layerNames.has(t.name.slice(0, -".bias".length));
      const layer = isLayerWeight(t.name, t.shape) ? t.name.slice(0, -".weight".length) : null;
      if (layer) {
        const w = await st.readF32(t.name);
        if (precision === "bf16") {
          const bits = f32ArrayToBf16Bits(w);
          out.push({ name: t.name, dtype: "BF16", shape: t.shape, data: new Uint8Array(bits.buffer) });
        } else {
          const n = t.shape[0];
          const { q, scales } = quantizeWeightsPerChannel(w, n, w.length / n, cal!.weightQmax ?? 127);
          const act = actParamsFor(cal!, layer, calLabel);
          out.push({ name: t.name, dtype: "I8", shape: t.shape, data: q });
          out.push({ name: `${layer}.weight_scale`, dtype: "F32", shape: [n], data: f32Bytes(scales) });
          out.push({ name: `${layer}.input_scale`, dtype: "F32", shape: [1], data: f32Bytes(Float32Array.of(act.scale)) });
          out.push({ name: `${layer}.input_zero_point`, dtype: "I32", shape: [1], data: new Uint8Array(Int32Array.of(act.zeroPoint).buffer) });
        }
      } else if (isBias) out.push({ name: t.name, dtype: "F32", shape: t.shape, data: f32Bytes(await st.readF32(t.name)) });
      else out.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: await st.readRaw(t.name) });
    }
    const meta: Record<string, string> = {
      format: STEPQ_FORMAT,
      stepq_format_version: STEPQ_FORMAT_VERSION,
      precision,
      source: path.basename(src),
      layers: String(layerNames.size),
      created: new Date().toISOString(),
    };
    if (precision === "bf16") meta.weight_format = "BF16 (round to nearest even); biases F32";
    else {
      meta.act_qmax = String(cal!.actQmax ?? ACT_QMAX_DEFAULT);
      const wq = cal!.weightQmax ?? 127;
      meta.weight_qmax = String(wq);
      meta.weight_quantization = `int8 symmetric per output channel: q = clamp(round_half_even(w / s), -${wq}, ${wq}), s = f32(max|w| / ${wq}) (weight_scale)`;
      meta.activation_quantization = `asymmetric per tensor: q = clamp(round(x / input_scale) + input_zero_point, 0, ${meta.act_qmax})`;
      meta.calibration = JSON.stringify({ model: cal!.model, steps: cal!.steps, guidance: cal!.guidance, scheduler: cal!.scheduler, prompts: cal!.prompts, observer: cal!.observer, created: cal!.created });
    }
    writeSafetensors(dst, out, meta);
    return { layers: layerNames.size, bytes: fs.statSync(dst).size };
  } finally {
    st.close();
  }
}

/** Puts src (a file, or a folder recursively) at dst: hard links where possible, else copies; each file atomically. */
function linkOrCopy(src: string, dst: string): void {
  if (fs.statSync(src).isDirectory()) {
    fs.mkdirSync(dst, { recursive: true });
    for (const f of fs.readdirSync(src)) linkOrCopy(path.join(src, f), path.join(dst, f));
    return;
  }
  copyFileAtomic(src, dst);
}

/** Whether `dir` looks like a folder an earlier convert wrote: its unet holds stepq files and no original checkpoint. */
function isConvertOutput(dir: string, isPipeline: boolean): boolean {
  if (isPipeline && !fs.existsSync(path.join(dir, "model_index.json"))) return false;
  const unet = isPipeline ? path.join(dir, "unet") : dir;
  let names: string[];
  try {
    names = fs.readdirSync(unet).filter((f) => f.endsWith(".safetensors"));
  } catch {
    return false;
  }
  return names.length > 0 && names.every((f) => f.startsWith("stepq-"));
}

/** Converts the UNet of a model (see the file header); returns what was written. */
export async function convert(o: ConvertOptions): Promise<ConvertResult> {
  const progress = o.onProgress ?? (() => {});
  const precisions = [...new Set(o.precisions)];
  if (!precisions.length) throw new Error("convert: no precisions (bf16, int8)");
  for (const p of precisions) if (p !== "bf16" && p !== "int8") throw new Error(`convert: precision must be bf16 or int8, got "${p}" (fp32 is the original checkpoint)`);
  const srcUnet = unetDirOf(o.model);
  const src = await findWeights(srcUnet);
  if (path.basename(src).startsWith("stepq-")) throw new Error(`${srcUnet}: no original checkpoint to convert (only ${path.basename(src)})`);
  let cal: Calibration | null = null;
  let calLabel = "";
  if (precisions.includes("int8")) {
    calLabel = o.calibration ?? defaultCalibrationPath(srcUnet);
    if (!fs.existsSync(calLabel)) throw new MissingCalibrationError(calLabel, o.model);
    cal = await readCalibration(calLabel);
    // a converted int8 layer stores one input_scale / input_zero_point
    if (hasPerStepRanges(cal))
      throw new Error(`${calLabel} has per-step ranges (stepq calibrate --per-step), which converted int8 files cannot hold (one activation range per layer); convert with a calibration made without --per-step`);
  }
  // where the files go, checked before anything is written: in place (the model's own unet folder, whose
  // stepq-*.safetensors this command owns), or a new folder outside the model (symlinks resolved: an --out
  // that leads into the model folder would copy the model into itself)
  const inPlace = !o.out || realPathOf(o.out) === realPathOf(o.model);
  const isPipeline = fs.existsSync(path.join(o.model, "model_index.json"));
  if (inPlace) {
    for (const p of precisions) {
      try {
        checkOutputFile(path.join(srcUnet, stepqWeightsName(p)), { kind: "safetensors", flag: "convert output", owned: true, force: o.force });
      } catch (e) {
        throw e instanceof OutputError && /cannot write in/.test(e.message) ? new OutputError(`${e.message}; pass --out DIR`) : e;
      }
    }
  } else {
    checkOutputFolder(o.out!, { flag: "--out", readFolders: [o.model], force: o.force });
    const existing = fs.existsSync(o.out!) ? fs.readdirSync(o.out!) : [];
    if (existing.length && !isConvertOutput(o.out!, isPipeline) && !o.force)
      throw new OutputError(`--out ${o.out}: the folder exists and holds files that are not an earlier stepq convert output (${existing.slice(0, 3).join(", ")}${existing.length > 3 ? ", ..." : ""}); give a new folder, or pass --force to replace files of the same names`);
  }
  let unetDir = srcUnet;
  if (!inPlace) {
    const out = o.out!;
    fs.mkdirSync(out, { recursive: true });
    if (isPipeline) {
      for (const f of fs.readdirSync(o.model)) if (f !== "unet") linkOrCopy(path.join(o.model, f), path.join(out, f));
      unetDir = path.join(out, "unet");
    } else unetDir = out;
    fs.mkdirSync(unetDir, { recursive: true });
    for (const p of precisions) checkOutputFile(path.join(unetDir, stepqWeightsName(p)), { kind: "safetensors", flag: "convert output", owned: true, force: o.force });
    linkOrCopy(path.join(srcUnet, "config.json"), path.join(unetDir, "config.json"));
    if (cal) writeCalibration(path.join(unetDir, CALIBRATION_FILE), cal);
    progress(`writing into ${path.resolve(out)} (other components ${isPipeline ? "linked or copied" : "not needed"})`);
  }
  const files: ConvertResult["files"] = [];
  for (const p of precisions) {
    const dst = path.join(unetDir, stepqWeightsName(p));
    const t0 = performance.now();
    const r = await convertFile(src, dst, p, cal, calLabel);
    progress(`${p}: ${r.layers} layers -> ${dst} (${(r.bytes / 1048576).toFixed(1)} MiB, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    files.push({ precision: p, file: dst, ...r });
  }
  return { unetDir, files };
}
