// Precision schedules: which precision the UNet runs at each denoising step.
//
//   fp32 | bf16 | int8            every step at that precision
//   mixed:K                       the paper's schedule: BF16 for the first K and the last K steps, INT8 between
//                                 (K = 0: all INT8; 2K = steps: all BF16; 2K > steps is an error)
//   bf16*5,int8*40,bf16*5         an explicit list of precision*count (a bare precision counts 1); the counts
//                                 must add up to the number of steps
//
// Steps are the denoising steps as the user sees them: `--steps N` gives N steps, whatever the scheduler.
// Some schedulers evaluate the UNet more often than that: PNDM (as Stable Diffusion configures it,
// skip_prk_steps) runs N + 1 UNet calls for N steps, evaluating the second timestep twice (its first PLMS
// step is a two-call predictor-corrector); without skip_prk_steps its 3 Runge-Kutta warm-up steps take 4
// calls each (N + 9 calls). Every UNet call belongs to one denoising step and runs at that step's precision:
// a repeated timestep belongs to the same step as the call before it (callSteps below).
import { PRECISIONS, type Precision } from "../models/precision.ts";

export class PrecisionScheduleError extends Error {}

const WORDS = `fp32, bf16, int8, mixed:K, or a list like bf16*5,int8*40,bf16*5`;

/** Denoising steps at most (the pipeline takes 1000; the bound keeps per-step lists small whatever a caller passes). */
const MAX_STEPS = 100_000;

function checkSteps(steps: number): void {
  if (!Number.isInteger(steps) || steps < 1 || steps > MAX_STEPS)
    throw new PrecisionScheduleError(`the number of steps must be a positive integer (at most ${MAX_STEPS}), got ${steps}`);
}

function asPrecision(word: string, spec: string): Precision {
  if ((PRECISIONS as readonly string[]).includes(word)) return word as Precision;
  throw new PrecisionScheduleError(
    `unknown precision "${word}"${word === spec ? "" : ` in "${spec}"`} (expected ${PRECISIONS.join(", ")}; a schedule is ${WORDS})`,
  );
}

/** One precision per denoising step (length = steps) for a spec (see the file header). */
export function parsePrecisionSpec(spec: string, steps: number): Precision[] {
  checkSteps(steps);
  if (typeof spec !== "string" || !spec.trim()) throw new PrecisionScheduleError(`empty precision (expected ${WORDS})`);
  const s = spec.trim().toLowerCase();
  const m = /^mixed\s*:\s*(.*)$/.exec(s);
  if (m) {
    const kText = m[1].trim();
    if (!/^[+-]?\d+$/.test(kText)) throw new PrecisionScheduleError(`${spec}: K must be a non-negative integer (mixed:K = BF16 for the first K and last K steps, INT8 between)`);
    const k = Number(kText);
    if (k < 0) throw new PrecisionScheduleError(`${spec}: K must be a non-negative integer, got ${k}`);
    if (2 * k > steps)
      throw new PrecisionScheduleError(
        `${spec} needs at least 2*${k} = ${2 * k} steps (BF16 for the first ${k} and the last ${k}) but the run has ${steps}; use K <= ${Math.floor(steps / 2)}`,
      );
    return Array.from({ length: steps }, (_, i) => (i < k || i >= steps - k ? "bf16" : "int8"));
  }
  if (!s.includes(",") && !s.includes("*")) return new Array(steps).fill(asPrecision(s, spec));
  // read every entry and add up the counts before building the list: a count like 99999999999999999999 is an
  // error message, not an allocation
  const runs: [Precision, number][] = [];
  let total = 0;
  const parts = s.split(",").map((p) => p.trim());
  for (const part of parts) {
    if (!part) throw new PrecisionScheduleError(`"${spec}": empty entry (entries are precision*count separated by commas)`);
    const pm = /^([a-z0-9_]+)\s*(?:\*\s*([+-]?\d+))?$/.exec(part);
    if (!pm) throw new PrecisionScheduleError(`"${spec}": cannot read "${part}" (entries are precision*count, e.g. int8*40)`);
    const p = asPrecision(pm[1], spec);
    const n = pm[2] === undefined ? 1 : Number(pm[2]);
    if (!(Number.isSafeInteger(n) && n >= 1))
      throw new PrecisionScheduleError(`"${spec}": the count in "${part}" must be a positive integer${n >= 1 ? ` no larger than the step count (${steps})` : ""}`);
    runs.push([p, n]);
    total += n;
  }
  if (total !== steps)
    throw new PrecisionScheduleError(`schedule "${spec}" covers ${total} steps but the run has ${steps} (the counts must add up to the step count)`);
  return runs.flatMap(([p, n]) => new Array<Precision>(n).fill(p));
}

/**
 * The denoising step (0-based) of each UNet call, for a scheduler's timesteps (one entry per UNet call)
 * and the number of steps asked for. Identity when there is one call per step; otherwise a call whose
 * timestep repeats the previous call's belongs to the same step (PNDM with skip_prk_steps: 0,1,1,2,3,...);
 * PNDM's Runge-Kutta warm-up (N + 9 calls) maps its first 12 calls 4 per step; anything else is spread
 * proportionally.
 */
export function callSteps(timesteps: readonly number[], steps: number): number[] {
  checkSteps(steps);
  const calls = timesteps.length;
  if (calls === steps) return Array.from({ length: calls }, (_, i) => i);
  const grouped: number[] = [];
  let k = -1;
  for (let i = 0; i < calls; i++) {
    if (i === 0 || timesteps[i] !== timesteps[i - 1]) k++;
    grouped.push(k);
  }
  if (k + 1 === steps) return grouped;
  if (calls === steps + 9 && steps >= 4) return Array.from({ length: calls }, (_, i) => (i < 12 ? Math.floor(i / 4) : i - 9));
  return Array.from({ length: calls }, (_, i) => Math.min(steps - 1, Math.floor((i * steps) / calls)));
}

/**
 * One precision per UNet call: the spec's per-step precisions mapped onto the calls (timesteps: the
 * scheduler's, one per call; omitted: one call per step).
 */
export function parsePrecisionSchedule(spec: string, steps: number, timesteps?: readonly number[]): Precision[] {
  const s = PrecisionSchedule.parse(spec, steps);
  return timesteps ? s.forCalls(timesteps) : [...s.perStep];
}

/** The precisions a schedule uses, in canonical order (what a pipeline must load). */
export function precisionsUsed(list: readonly Precision[]): Precision[] {
  return PRECISIONS.filter((p) => list.includes(p));
}

/**
 * The pipeline's `precisions` load option for a run that uses `used`: none (plain fp32 weights, no per-layer
 * switch) when that is fp32 alone. (Loading with ["fp32"] builds switch weights, which calibration hooks into.)
 */
export function precisionsToLoad(used: readonly Precision[]): Precision[] | undefined {
  return used.length === 1 && used[0] === "fp32" ? undefined : [...used];
}

/**
 * The precisions a spec may use without knowing the step count: exact for fp32/bf16/int8 and lists,
 * bf16 + int8 for mixed:K (with steps given: exact).
 */
export function precisionsForSpec(spec: string, steps?: number): Precision[] {
  if (steps !== undefined) return precisionsUsed(parsePrecisionSpec(spec, steps));
  const s = spec.trim().toLowerCase();
  if (/^mixed\s*:/.test(s)) {
    const k = Number(s.split(":")[1]);
    parsePrecisionSpec(s, Number.isInteger(k) && k > 0 && k <= MAX_STEPS / 2 ? 2 * k : 1); // validates K
    return k === 0 ? ["int8"] : ["bf16", "int8"];
  }
  const words = s.split(",").map((p) => p.trim().split("*")[0].trim());
  return precisionsUsed(words.map((w) => asPrecision(w, spec)));
}

/** Compact form of a per-step list: "bf16*5,int8*40,bf16*5" (a run of one: the bare name; one precision throughout: its name). */
export function formatSchedule(list: readonly Precision[]): string {
  const runs: [Precision, number][] = [];
  for (const p of list) {
    const last = runs[runs.length - 1];
    if (last && last[0] === p) last[1]++;
    else runs.push([p, 1]);
  }
  if (runs.length === 1) return runs[0][0];
  return runs.map(([p, n]) => (n === 1 ? p : `${p}*${n}`)).join(",");
}

/**
 * A parsed precision schedule: one precision per denoising step. Parse a spec once (PrecisionSchedule.parse)
 * and pass the value down; the pipeline maps it onto its scheduler's UNet calls (forCalls).
 */
export class PrecisionSchedule {
  private constructor(readonly perStep: readonly Precision[]) {}

  /** The schedule of a spec (fp32 | bf16 | int8 | mixed:K | bf16*5,int8*40,...) over `steps` denoising steps. */
  static parse(spec: string, steps: number): PrecisionSchedule {
    return new PrecisionSchedule(parsePrecisionSpec(spec, steps));
  }

  /** The same precision at every step. */
  static uniform(p: Precision, steps: number): PrecisionSchedule {
    checkSteps(steps);
    return new PrecisionSchedule(new Array(steps).fill(p));
  }

  get steps(): number {
    return this.perStep.length;
  }

  /** The precisions used, in canonical order (what a pipeline must load). */
  get used(): Precision[] {
    return precisionsUsed(this.perStep);
  }

  /** The pipeline's `precisions` load option for this schedule (see precisionsToLoad). */
  get toLoad(): Precision[] | undefined {
    return precisionsToLoad(this.used);
  }

  /** Compact form: "bf16*5,int8*40,bf16*5". */
  toString(): string {
    return formatSchedule(this.perStep);
  }

  /** One precision per UNet call of a scheduler with these timesteps (one entry per call). */
  forCalls(timesteps: readonly number[]): Precision[] {
    return callSteps(timesteps, this.steps).map((i) => this.perStep[i]);
  }
}
