// Reads ../shared/golden-style case files (cases.json + cases.safetensors, e2e.json + e2e.safetensors)
// and compares results with the tolerance metric they use. Used by `stepq verify` and by the tests.
import * as fs from "node:fs";
import * as path from "node:path";
import { SafetensorsFile } from "./safetensors.ts";
import { parsePythonJson } from "./json.ts";

export interface GoldenSet {
  dir: string;
  json: any;
  tensors: SafetensorsFile;
  /** A tensor of the set as float32 with its shape. Names may carry a description after a space. */
  get(name: string): { data: Float32Array; shape: number[] };
}

export function openGolden(dir: string, base: "cases" | "e2e"): GoldenSet {
  const jsonPath = path.join(dir, `${base}.json`);
  if (!fs.existsSync(jsonPath)) throw new Error(`${jsonPath}: not found`);
  // Python's json writes -Infinity (e.g. lambda_min_clipped) which JSON.parse rejects
  const json = parsePythonJson(fs.readFileSync(jsonPath, "utf8"));
  const tensors = SafetensorsFile.open(path.join(dir, `${base}.safetensors`));
  return {
    dir,
    json,
    tensors,
    get(name: string) {
      const key = name.split(" ")[0];
      return { data: tensors.readF32(key), shape: tensors.info(key).shape };
    },
  };
}

/** max|a-b| / max|b|: the `max_abs_rel_to_max` tolerance metric of the golden files. */
export function maxAbsRelToMax(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length mismatch: ${actual.length} vs ${expected.length}`);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= maxDiff)) maxDiff = d; // NaN propagates as failure
    const r = Math.abs(expected[i]);
    if (r > maxRef) maxRef = r;
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}

/** Where ../shared is: $STEPQ_SHARED, else ../shared beside the checkout. */
export function sharedDir(): string {
  return process.env.STEPQ_SHARED ?? path.resolve(process.cwd(), "..", "shared");
}
