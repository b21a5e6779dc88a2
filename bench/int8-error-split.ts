// Where the INT8 UNet's error comes from: PSNR vs the FP32 image of the same seed when only the activations
// are quantised (8-bit asymmetric per tensor, the calibration's ranges; weights f32), only the weights (7-bit
// symmetric per output channel, dequantised into an f32 UNet), both (emulated), and the engine's INT8 itself.
// The activation emulation fake-quantises each conv/linear input in place just before the layer runs (the
// precision selector's observe hook) and restores it at the next layer, holding the tensor meanwhile.
// Per-step calibrations (stepq calibrate --per-step) are used per step, as the engine does. Images: stepq eval's
// (n/10 per class, seeds 0..n-1, PNDM 50 steps, guidance 4), so --ref is an `stepq eval --save-images` FP32 file.
// "both" agrees with "int8" to 0.01 dB on fashion-sd-tiny (docs/quality.md), which checks the emulation.
// Usage: sh bench/int8-error-split.sh --ref=FP32.safetensors [--n=100] [--mode=act|weight|both|int8|fp32]
//   [--layers=REGEX] [--calibration=FILE] [--model=DIR] [--batch=50]
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";
import { classifierClasses, evalLabels, promptFor, readReferenceImages } from "../src/tools/eval.ts";
import { psnr } from "../src/tools/metrics.ts";
import { sharedDir } from "../src/io/places.ts";
import { readCalibration, type Calibration } from "../src/models/calibration.ts";
import { actParamsFromRange, normalizeActParams, quantizeActValue, quantizeWeightsPerChannel } from "../src/nn/quant.ts";
import type { Tensor } from "../src/runtime/tensor.ts";

const args = process.argv.slice(2);
const opt = (k: string, d?: string) => args.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d;
const model = opt("model", "models/fashion-sd-tiny")!;
const ref = opt("ref");
const n = Number(opt("n", "100"));
const mode = opt("mode", "both")!;
const batch = Number(opt("batch", "50"));
const layerRe = new RegExp(opt("layers", ".")!);
const calFile = opt("calibration", path.join(model, "unet/stepq-calibration.json"))!;
if (!ref) throw new Error("--ref=FP32.safetensors is required");

// a model with a converted INT8 UNet (stepq convert / qat) brings its own ranges
const converted = fs.existsSync(path.join(model, "unet", "stepq-int8.safetensors"));
if (converted && mode !== "int8") throw new Error(`${model}: a converted INT8 model; only --mode=int8 applies`);
const cal = converted ? { layers: {} as Calibration["layers"], actQmax: 255 } : await readCalibration(calFile);
const actQmax = cal.actQmax ?? 255;
const weightQmax = (cal as { weightQmax?: number }).weightQmax ?? 127;
const quantAct = mode === "act" || mode === "both";
const quantWeight = mode === "weight" || mode === "both";

// weights: a temporary pipeline folder whose UNet holds the 7-bit per-channel weights, dequantised
let dir = model;
if (quantWeight) {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-wq-"));
  for (const c of fs.readdirSync(model)) if (c !== "unet") fs.symlinkSync(path.resolve(model, c), path.join(dir, c));
  fs.mkdirSync(path.join(dir, "unet"));
  fs.copyFileSync(path.join(model, "unet/config.json"), path.join(dir, "unet/config.json"));
  const st = await SafetensorsFile.open(path.join(model, "unet/diffusion_pytorch_model.safetensors"));
  const out: TensorToWrite[] = [];
  let q = 0;
  for (const info of st.tensors.values()) {
    let data = await st.readF32(info.name);
    const layer = info.name.replace(/\.weight$/, "");
    if (info.name.endsWith(".weight") && cal.layers[layer] && layerRe.test(layer)) {
      const O = info.shape[0];
      const K = data.length / O;
      const { q: qw, scales } = quantizeWeightsPerChannel(data, O, K, weightQmax);
      data = new Float32Array(data.length);
      for (let o = 0; o < O; o++) for (let k = 0; k < K; k++) data[o * K + k] = qw[o * K + k] * scales[o];
      q++;
    }
    out.push({ name: info.name, dtype: "F32", shape: info.shape, data });
  }
  writeSafetensors(path.join(dir, "unet/diffusion_pytorch_model.safetensors"), out);
  console.error(`weights: ${q} layers quantised to |q| <= ${weightQmax}`);
}

const pipe = await StableDiffusionPipeline.load(dir, { threads: 2, precisions: mode === "int8" ? ["int8"] : ["fp32", "int8"], calibration: converted ? undefined : calFile, batch, onWarning: () => {} });
const ctx = pipe.unet.precisionContext!;
let held: { x: Tensor; saved: Float32Array } | null = null;
const restore = () => {
  if (!held) return;
  held.x.f32().set(held.saved);
  held.x.release();
  held = null;
};
let quantised = 0;
if (quantAct) {
  ctx.observe = (layer, x) => {
    restore();
    const lr = cal.layers[layer];
    if (!lr || !layerRe.test(layer)) return;
    const si = ctx.stepIndex ?? -1;
    const r = lr.steps && si >= 0 ? lr.steps[si] : lr;
    const p = normalizeActParams(actParamsFromRange(r.min, r.max, actQmax, weightQmax));
    const v = x.f32();
    x.retain();
    held = { x, saved: v.slice() };
    for (let i = 0; i < v.length; i++) v[i] = Math.fround((quantizeActValue(v[i], p.invScale, p.zeroPoint, p.qmax) - p.zeroPoint) * p.scale);
    quantised++;
  };
}

const classes = await classifierClasses(path.join(sharedDir()!, "models/fashion-classifier"));
const labels = evalLabels(n, classes.length);
const refImages = await readReferenceImages(ref, { n, steps: 50, guidance: 4, scheduler: "pndm", seed0: 0, width: pipe.defaultWidth, height: pipe.defaultHeight });
const px = pipe.defaultWidth * pipe.defaultHeight * 3;
const psnrs: number[] = [];
const t0 = performance.now();
for (let i0 = 0; i0 < n; i0 += batch) {
  const idx = Array.from({ length: Math.min(batch, n - i0) }, (_, k) => i0 + k);
  const res = await pipe.generateBatch({
    prompts: idx.map((i) => promptFor(classes[labels[i]])),
    seeds: idx,
    steps: 50,
    guidance: 4,
    scheduler: "pndm",
    precision: mode === "int8" ? "int8" : "fp32",
  });
  restore();
  idx.forEach((i, k) => psnrs.push(psnr(res.images[k].image, refImages.subarray(i * px, (i + 1) * px))));
  console.error(`${idx[idx.length - 1] + 1}/${n} ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}
const mean = psnrs.reduce((a, b) => a + b, 0) / n;
const sd = Math.sqrt(psnrs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
console.log(JSON.stringify({ mode, layers: layerRe.source, calibration: calFile, n, psnr: mean, ci95: 1.96 * sd / Math.sqrt(n), quantised_inputs: quantised, per_image: psnrs.map((v) => Math.round(v * 1000) / 1000) }));
pipe.close();
if (dir !== model) fs.rmSync(dir, { recursive: true });

