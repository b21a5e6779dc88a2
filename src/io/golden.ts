// Reads ../shared/golden-style case files (cases.json + cases.safetensors, e2e.json + e2e.safetensors)
// and compares results with the tolerance metric they use. Used by `stepq verify` and by the tests.
import { SafetensorsFile } from "./safetensors.ts";
import { parsePythonJson } from "./json.ts";
import { joinLocation, readText, SourceError } from "./source.ts";

export interface GoldenSet {
  dir: string;
  json: any;
  tensors: SafetensorsFile;
  /** A tensor of the set as float32 with its shape. Names may carry a description after a space. */
  get(name: string): { data: Float32Array; shape: number[] };
}

export async function openGolden(dir: string, base: "cases" | "e2e"): Promise<GoldenSet> {
  const jsonPath = joinLocation(dir, `${base}.json`);
  let text: string;
  try {
    text = await readText(jsonPath, { maxBytes: 256 * 1024 * 1024 });
  } catch (e) {
    throw e instanceof SourceError ? new Error(e.message) : e;
  }
  // Python's json writes -Infinity (e.g. lambda_min_clipped) which JSON.parse rejects
  const json = parsePythonJson(text);
  const tensors = await SafetensorsFile.open(joinLocation(dir, `${base}.safetensors`));
  // golden sets are a few MB: read every tensor now, so cases look them up synchronously
  const data = new Map<string, Float32Array>();
  for (const name of tensors.tensors.keys()) data.set(name, await tensors.readF32(name));
  return {
    dir,
    json,
    tensors,
    get(name: string) {
      const key = name.split(" ")[0];
      const d = data.get(key);
      if (!d) tensors.info(key); // throws naming the file and tensor
      return { data: d!.slice(), shape: tensors.info(key).shape };
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
