// The stepq converted-weights format (weights-tools/convert.ts writes it, the WeightStore reads it; the
// format is described in weights-tools/README.md): file names, metadata checks, and the f32 weights that
// reproduce stored int8 weights + scales exactly through the nn prepare functions.
import { PrecisionError, type Precision } from "./precision.ts";

export const STEPQ_FORMAT = "stepq";
/**
 * The version stepq convert writes. Version 2 (written by stepq qat when it needs it) adds to int8 files
 * per-step activation params (`X.input_scale_steps` / `X.input_zero_point_steps` with the `timesteps`
 * metadata) and allows weight scales other than max|w| / weight_qmax (learned scales); a version-1 reader
 * would misread either, so it refuses version 2. This stepq reads both.
 */
export const STEPQ_FORMAT_VERSION = "1";
export const STEPQ_FORMAT_VERSIONS_READ: readonly string[] = ["1", "2"];

/** File of a unet folder holding the converted weights of one precision. */
export function stepqWeightsName(p: Exclude<Precision, "fp32">): string {
  return `stepq-${p}.safetensors`;
}

/** Checks a converted file's metadata: format, version and precision. */
export function checkStepqMetadata(meta: Record<string, string>, want: Exclude<Precision, "fp32">, file: string): void {
  if (meta.format !== STEPQ_FORMAT) throw new PrecisionError(`${file}: not a stepq converted weights file (metadata format ${JSON.stringify(meta.format)})`);
  if (!STEPQ_FORMAT_VERSIONS_READ.includes(meta.stepq_format_version))
    throw new PrecisionError(`${file}: stepq weights format version ${meta.stepq_format_version}, this stepq reads ${STEPQ_FORMAT_VERSIONS_READ.join(" and ")} (re-run stepq convert)`);
  if (meta.precision !== want) throw new PrecisionError(`${file}: holds ${meta.precision} weights, expected ${want}`);
}

/** The per-step timestep table of a version-2 int8 file (metadata `timesteps`), or null. */
export function stepqTimesteps(meta: Record<string, string>, file: string): number[] | null {
  if (meta.timesteps === undefined) return null;
  let t: unknown;
  try {
    t = JSON.parse(meta.timesteps);
  } catch {
    t = null;
  }
  if (!Array.isArray(t) || !t.length || !t.every((v) => Number.isFinite(v))) throw new PrecisionError(`${file}: metadata timesteps ${JSON.stringify(meta.timesteps)} is not a list of timesteps`);
  if (meta.stepq_format_version === "1") throw new PrecisionError(`${file}: per-step timesteps in a version-1 file`);
  return t as number[];
}

/** Whether a safetensors file's metadata marks it as stepq converted weights. */
export function isStepqFile(meta: Record<string, string>): boolean {
  return meta.format === STEPQ_FORMAT;
}

/** The f32 neighbour of x (x > 0) `steps` ulps away. */
function f32Step(x: number, steps: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] += steps;
  return f[0];
}

/**
 * f32 weights [out, per] that quantise (quantizeWeightsPerChannel: s = f32(max|w| / qmax), q = round(w / s))
 * to exactly the given q and per-channel scales: q * s, with every |q| = qmax entry set to an f32 m for
 * which f32(m / qmax) is s (such an m exists: s was made that way from the original weights). qmax: 127
 * (int8 weights) or 63 (7-bit weights). So INT8 layers
 * of a converted file go through the nn prepare functions (whatever packing the kernels use) and come out
 * bit-identical to the ones quantised from the original checkpoint, with no calibration needed.
 */
export function weightsForQuantized(q: Int8Array, scales: Float32Array, out: number, per: number, qmax = 127): Float32Array {
  if (q.length !== out * per || scales.length !== out) throw new RangeError(`weightsForQuantized: ${q.length} weights / ${scales.length} scales for [${out}, ${per}]`);
  const w = new Float32Array(q.length);
  for (let o = 0; o < out; o++) {
    const s = scales[o];
    if (!(s > 0) || !Number.isFinite(s)) throw new RangeError(`weightsForQuantized: channel ${o} has scale ${s}`);
    let hasMax = false;
    for (let k = 0; k < per; k++) if (q[o * per + k] === qmax || q[o * per + k] === -qmax) hasMax = true;
    if (!hasMax) {
      // only an all-zero channel (scale 1) has no +-qmax entry
      for (let k = 0; k < per; k++) if (q[o * per + k] !== 0) throw new RangeError(`weightsForQuantized: channel ${o} has no +-${qmax} entry: not symmetric per-channel with range ${qmax}`);
      if (s !== 1) throw new RangeError(`weightsForQuantized: all-zero channel ${o} with scale ${s} (expected 1)`);
      continue;
    }
    const c = Math.fround(qmax * s);
    let m = NaN;
    for (let d = 0; d <= 8 && m !== m; d++)
      for (const cand of d ? [f32Step(c, d), f32Step(c, -d)] : [c]) if (Math.fround(cand / qmax) === s) { m = cand; break; }
    if (m !== m) throw new RangeError(`weightsForQuantized: no f32 maximum gives scale ${s} for channel ${o}`);
    for (let k = 0; k < per; k++) {
      const v = q[o * per + k];
      w[o * per + k] = v === qmax ? m : v === -qmax ? -m : Math.fround(v * s);
    }
  }
  return w;
}
