// Where the INT8 UNet's error comes from: PSNR vs the FP32 image of the same seed when only the activations
// are quantised (8-bit asymmetric per tensor, the calibration's ranges; weights f32), only the weights (7-bit
// symmetric per output channel, dequantised into an f32 UNet), both (emulated), and the engine's INT8 itself.
// The activation emulation fake-quantises each conv/linear input in place just before the layer runs (the
// precision selector's observe hook) and restores it at the next layer, holding the tensor meanwhile.
// Per-step calibrations (stepq calibrate --per-step) are used per step, as the engine does. Images: stepq eval's
// (n/10 per class, seeds 0..n-1, PNDM 50 steps, guidance 4), so --ref is an `stepq eval --save-images` FP32 file.
// "both" agrees with "int8" to 0.01 dB on fashion-sd-tiny (docs/quality.md), which checks the emulation.
// Usage: sh bench/int8-error-split.sh --ref=FP32.safetensors [--n=100] [--mode=act|weight|both|int8|fp32]
//   [--layers=REGEX] [--calibration=FILE] [--model=DIR] [--batch=50] [--smooth=ALPHA]
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline.ts";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";
import { classifierClasses, evalLabels, promptFor, readReferenceImages } from "../src/tools/eval.ts";
import { defaultCalibrationPrompts } from "../src/tools/prompts.ts";
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

// --smooth=ALPHA (SmoothQuant's migration, an experiment: the engine's kernels do not do this): per input channel
// c, s_c = max|x_c|^alpha / max|W_c|^(1 - alpha); the activations are quantised as x_c / s_c (one per-tensor
// range over the calibration prompts' x / s) and multiplied back, the weights as W[:, c] * s_c per output
// channel and divided back, so only the rounding changes. Channel stats: a min/max pass over the calibration's
// prompts (stepq calibrate's default: 20 prompts, seeds 10000..10019).
const alpha = opt("smooth") === undefined ? null : Number(opt("smooth"));
const smooth = new Map<string, { s: Float32Array; lo: number; hi: number }>();
if (alpha !== null) {
  const chanMin = new Map<string, Float64Array>(), chanMax = new Map<string, Float64Array>();
  const p0 = await StableDiffusionPipeline.load(model, { threads: 2, precisions: ["fp32", "int8"], calibration: calFile, batch: 10, onWarning: () => {} });
  const c0 = p0.unet.precisionContext!;
  c0.observe = (layer, x) => {
    const C = x.shape[x.shape.length - 1];
    let mn = chanMin.get(layer), mx = chanMax.get(layer);
    if (!mn || !mx) {
      chanMin.set(layer, (mn = new Float64Array(C).fill(Infinity)));
      chanMax.set(layer, (mx = new Float64Array(C).fill(-Infinity)));
    }
    const v = x.f32();
    for (let i = 0; i < v.length; i++) {
      const c = i % C;
      if (v[i] < mn[c]) mn[c] = v[i];
      if (v[i] > mx[c]) mx[c] = v[i];
    }
  };
  const prompts = defaultCalibrationPrompts(model, 20);
  for (let i0 = 0; i0 < prompts.length; i0 += 10)
    await p0.generateBatch({ prompts: prompts.slice(i0, i0 + 10), seeds: prompts.slice(i0, i0 + 10).map((_, k) => 10000 + i0 + k), steps: 50, guidance: 4, scheduler: "pndm", precision: "fp32" });
  p0.close();
  const st = await SafetensorsFile.open(path.join(model, "unet/diffusion_pytorch_model.safetensors"));
  for (const [layer, mn] of chanMin) {
    const mx = chanMax.get(layer)!;
    const w = await st.readF32(`${layer}.weight`);
    const info = st.info(`${layer}.weight`);
    const C = mn.length;
    const per = w.length / info.shape[0] / C; // kernel taps per input channel (PyTorch [O, Cin, kh, kw])
    if (!Number.isInteger(per) || info.shape[1] !== C) throw new Error(`${layer}: input has ${C} channels, weight shape [${info.shape}]`);
    const wmax = new Float64Array(C);
    for (let k = 0; k < w.length; k++) {
      const c = Math.floor((k % (C * per)) / per);
      wmax[c] = Math.max(wmax[c], Math.abs(w[k]));
    }
    const s = new Float32Array(C);
    let lo = 0, hi = 0;
    for (let c = 0; c < C; c++) {
      const a = Math.max(Math.abs(mn[c]), Math.abs(mx[c]));
      s[c] = a > 0 && wmax[c] > 0 ? Math.fround(a ** alpha / wmax[c] ** (1 - alpha)) : 1;
      lo = Math.min(lo, mn[c] / s[c]);
      hi = Math.max(hi, mx[c] / s[c]);
    }
    smooth.set(layer, { s, lo, hi });
  }
  console.error(`smoothing (alpha ${alpha}): ${smooth.size} layers`);
}

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
      const sm = smooth.get(layer);
      const per = sm ? K / sm.s.length : 1;
      const sAt = (k: number) => (sm ? sm.s[Math.floor(k / per)] : 1);
      const src = sm ? data.map((v, i) => v * sAt(i % K)) : data;
      const { q: qw, scales } = quantizeWeightsPerChannel(src, O, K, weightQmax);
      data = new Float32Array(data.length);
      for (let o = 0; o < O; o++) for (let k = 0; k < K; k++) data[o * K + k] = (qw[o * K + k] * scales[o]) / sAt(k);
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
    const sm = smooth.get(layer);
    const p = normalizeActParams(sm ? actParamsFromRange(sm.lo, sm.hi, actQmax, weightQmax) : actParamsFromRange(r.min, r.max, actQmax, weightQmax));
    const v = x.f32();
    x.retain();
    held = { x, saved: v.slice() };
    if (sm) {
      const C = sm.s.length;
      for (let i = 0; i < v.length; i++) {
        const sc = sm.s[i % C];
        v[i] = Math.fround((quantizeActValue(v[i] / sc, p.invScale, p.zeroPoint, p.qmax) - p.zeroPoint) * p.scale * sc);
      }
    } else for (let i = 0; i < v.length; i++) v[i] = Math.fround((quantizeActValue(v[i], p.invScale, p.zeroPoint, p.qmax) - p.zeroPoint) * p.scale);
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
console.log(JSON.stringify({ mode, smooth: alpha, layers: layerRe.source, calibration: calFile, n, psnr: mean, ci95: 1.96 * sd / Math.sqrt(n), quantised_inputs: quantised, per_image: psnrs.map((v) => Math.round(v * 1000) / 1000) }));
pipe.close();
if (dir !== model) fs.rmSync(dir, { recursive: true });

