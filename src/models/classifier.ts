// The Fashion-MNIST classifier used for FID features and prompt accuracy (../shared/models/fashion-classifier):
//
//   x [B,28,28,1] in [0,1]
//   conv3x3(1->32, pad 1) + ReLU + maxpool2   -> [B,14,14,32]
//   conv3x3(32->64, pad 1) + ReLU + maxpool2  -> [B,7,7,64]
//   conv3x3(64->128, pad 1) + ReLU + maxpool2 -> [B,3,3,128]   (floor: the 7th row/column is dropped)
//   flatten, fc1(1152->128) + ReLU            -> features [B,128]  (FID features)
//   fc2(128->10)                              -> logits [B,10]
//
// Activations are NHWC, so the flatten is in (h, w, c) order; torch flattens NCHW in (c, h, w) order.
// fc1's weight columns are permuted once at load time to match, instead of transposing every batch
// (which is why fc1 is read with WeightStore.array and prepared here rather than with WeightStore.linear).
//
// Inputs: Fashion-MNIST images (28x28 u8) map to [0,1] by /255; generated 32x32 images use the central
// 28x28 of channel 0, mapped from [-1,1] to [0,1] (for 8-bit RGB output that is the red byte / 255).
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { WeightStore, WeightError } from "./weights.ts";
import { conv2d, freeConv2d, type ConvWeight } from "../nn/conv.ts";
import { linear, prepareLinear, freeLinear, type LinearWeight } from "../nn/linear.ts";
import { maxPool2d } from "../nn/pooling.ts";
import { relu } from "../nn/elementwise.ts";

/** Side of the classifier's square input. */
export const CLASSIFIER_SIZE = 28;

export interface ClassifierConfig {
  classes: string[];
  /** The reference test accuracy recorded beside the weights (informative). */
  test_accuracy?: number;
  architecture?: string;
  input?: string;
}

export interface ClassifierOutput {
  /** [N * featureDim] fc1 outputs after ReLU, row-major. */
  features: Float32Array;
  /** [N * classes] logits. */
  logits: Float32Array;
  /** argmax of each row of logits (first maximum on ties). */
  predictions: Int32Array;
}

export class FashionClassifier {
  private constructor(
    readonly engine: Engine,
    readonly config: ClassifierConfig,
    private convs: ConvWeight[],
    private fc1: LinearWeight,
    private fc2: LinearWeight,
  ) {}

  /** Class names in label order. */
  get classes(): string[] {
    return this.config.classes;
  }

  get numClasses(): number {
    return this.fc2.out;
  }

  /** Width of the feature vector (fc1 outputs). */
  get featureDim(): number {
    return this.fc1.out;
  }

  /**
   * Builds the classifier of `config` from `store` (loader.ts loadClassifier opens config.json and
   * model.safetensors) into the engine (outside any scope). Channel counts come from the checkpoint's shapes;
   * the layer chain is checked against the architecture above. `cfgPath` names the config in messages.
   */
  static async fromWeights(eng: Engine, config: ClassifierConfig, store: WeightStore, cfgPath: string): Promise<FashionClassifier> {
    if (!Array.isArray(config.classes) || !config.classes.every((c) => typeof c === "string"))
      throw new WeightError(`${cfgPath}: "classes" must be a list of class names`);
    const shape = (name: string, rank: number): number[] => {
      const s = store.shapeOf(name);
      if (!s) throw new WeightError(`${store.label}: missing tensor ${name}`);
      if (s.length !== rank) throw new WeightError(`${store.label}: ${name} has shape [${s}], expected ${rank} dims`);
      return s;
    };
    const convs: ConvWeight[] = [];
    let cin = 1;
    let side = CLASSIFIER_SIZE;
    for (const name of ["conv1", "conv2", "conv3"]) {
      const [cout, ci, kh, kw] = shape(`${name}.weight`, 4);
      if (ci !== cin || kh !== 3 || kw !== 3) throw new WeightError(`${store.label}: ${name}.weight is [${cout},${ci},${kh},${kw}], expected [*,${cin},3,3]`);
      convs.push(await store.conv(name, { cout, cin, kh: 3, kw: 3 }, { padding: 1 }));
      cin = cout;
      side = Math.floor(side / 2);
    }
    const flat = side * side * cin;
    const [hidden, fin] = shape("fc1.weight", 2);
    if (fin !== flat) throw new WeightError(`${store.label}: fc1.weight is [${hidden},${fin}], expected [*,${flat}] (${cin}x${side}x${side} after the convs)`);
    // torch column index c*side*side + p (p = h*side + w)  ->  NHWC column p*cin + c
    const w = await store.array("fc1.weight", [hidden, fin]);
    const wn = new Float32Array(w.length);
    const hw = side * side;
    for (let o = 0; o < hidden; o++)
      for (let c = 0; c < cin; c++) for (let p = 0; p < hw; p++) wn[o * fin + p * cin + c] = w[o * fin + c * hw + p];
    const b = store.has("fc1.bias") ? await store.array("fc1.bias", [hidden]) : null;
    const fc1 = prepareLinear(eng, wn, b, hidden, fin);
    const [ncls, h2] = shape("fc2.weight", 2);
    if (h2 !== hidden) throw new WeightError(`${store.label}: fc2.weight is [${ncls},${h2}], expected [*,${hidden}]`);
    if (ncls !== config.classes.length) throw new WeightError(`${store.label}: fc2 has ${ncls} outputs but ${cfgPath} names ${config.classes.length} classes`);
    const fc2 = await store.linear("fc2", ncls, hidden);
    store.assertAllUsed("fashion classifier");
    return new FashionClassifier(eng, config, convs, fc1, fc2);
  }

  /** x [B,28,28,1] NHWC in [0,1] -> features [B,128] (after ReLU) and logits [B,10], in the caller's scope. */
  forward(x: Tensor): { features: Tensor; logits: Tensor } {
    const S = CLASSIFIER_SIZE;
    if (x.shape.length !== 4 || x.shape[1] !== S || x.shape[2] !== S || x.shape[3] !== 1)
      throw new Error(`FashionClassifier.forward: expected input [B,${S},${S},1] (NHWC), got [${x.shape}]`);
    const eng = this.engine;
    return eng.scope(() => {
      let h = x;
      for (const c of this.convs) h = maxPool2d(relu(conv2d(h, c)));
      const B = x.shape[0];
      const features = relu(linear(h.reshape([B, h.size / B]), this.fc1));
      const logits = linear(features, this.fc2);
      return { features, logits };
    });
  }

  /**
   * Runs the classifier on N images given as [N, 28, 28] floats in [0,1] (row-major), `batch` at a time,
   * and returns features, logits and predictions as host arrays.
   */
  classify(images: Float32Array, opts: { batch?: number } = {}): ClassifierOutput {
    const px = CLASSIFIER_SIZE * CLASSIFIER_SIZE;
    if (images.length % px) throw new Error(`FashionClassifier.classify: ${images.length} values is not a whole number of ${CLASSIFIER_SIZE}x${CLASSIFIER_SIZE} images`);
    const n = images.length / px;
    const batch = Math.max(1, Math.floor(opts.batch ?? 256));
    const F = this.featureDim;
    const K = this.numClasses;
    const features = new Float32Array(n * F);
    const logits = new Float32Array(n * K);
    const eng = this.engine;
    for (let i0 = 0; i0 < n; i0 += batch) {
      const b = Math.min(batch, n - i0);
      eng.scope(() => {
        const x = eng.fromArray(images.subarray(i0 * px, (i0 + b) * px), [b, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 1]);
        const r = this.forward(x);
        features.set(r.features.f32(), i0 * F);
        logits.set(r.logits.f32(), i0 * K);
      });
    }
    return { features, logits, predictions: argmaxRows(logits, K) };
  }

  /** Frees the engine memory of the weights. */
  free(): void {
    for (const c of this.convs) freeConv2d(c);
    freeLinear(this.fc1);
    freeLinear(this.fc2);
  }
}

/** Row-wise argmax of a [rows, k] matrix (first maximum on ties; NaN never wins). */
export function argmaxRows(m: ArrayLike<number>, k: number): Int32Array {
  const rows = Math.floor(m.length / k);
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    let bv = -Infinity;
    for (let j = 0; j < k; j++) {
      const v = m[r * k + j];
      if (v > bv) {
        bv = v;
        best = j;
      }
    }
    out[r] = best;
  }
  return out;
}

/** Fashion-MNIST u8 images [N, 28, 28] -> classifier input in [0,1] (x / 255). */
export function u8ImagesToInput(images: Uint8Array): Float32Array {
  const out = new Float32Array(images.length);
  for (let i = 0; i < images.length; i++) out[i] = images[i] / 255;
  return out;
}

/**
 * Classifier input from an 8-bit interleaved image (height*width*channels bytes, e.g. the pipeline's RGB
 * output): the central 28x28 of channel 0, / 255, written to out at `offset` (in floats).
 * An 8-bit image is round((x/2 + 0.5) * 255) of the decoder output x in [-1,1], so this is the
 * [-1,1] -> [0,1] mapping of the reference (up to the 8-bit rounding).
 */
export function rgb8ToInput(image: Uint8Array, width: number, height: number, channels = 3, out?: Float32Array, offset = 0): Float32Array {
  const S = CLASSIFIER_SIZE;
  if (width < S || height < S) throw new Error(`classifier input: the image is ${width}x${height}, smaller than ${S}x${S}`);
  if (image.length !== width * height * channels) throw new Error(`classifier input: ${image.length} bytes for a ${width}x${height}x${channels} image`);
  const dst = out ?? new Float32Array(S * S);
  const y0 = (height - S) >> 1;
  const x0 = (width - S) >> 1;
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) dst[offset + y * S + x] = image[((y0 + y) * width + x0 + x) * channels] / 255;
  return dst;
}

/**
 * Classifier input from a decoder output NCHW [1, C, H, W] in [-1,1]: the central 28x28 of channel 0,
 * mapped to [0,1] by x/2 + 0.5 and clamped (diffusers' postprocessing), without 8-bit rounding.
 */
export function decodedToInput(decoded: Float32Array, width: number, height: number, out?: Float32Array, offset = 0): Float32Array {
  const S = CLASSIFIER_SIZE;
  if (width < S || height < S) throw new Error(`classifier input: the image is ${width}x${height}, smaller than ${S}x${S}`);
  if (decoded.length < width * height) throw new Error(`classifier input: ${decoded.length} values for a ${width}x${height} image`);
  const dst = out ?? new Float32Array(S * S);
  const y0 = (height - S) >> 1;
  const x0 = (width - S) >> 1;
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const v = decoded[(y0 + y) * width + x0 + x] / 2 + 0.5;
      dst[offset + y * S + x] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  return dst;
}
