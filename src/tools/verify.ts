// `stepq verify`: runs golden cases (cases.json + cases.safetensors, e2e.json + e2e.safetensors, the
// ../shared/golden format) against this engine and reports one result per case. Component cases:
// tokenizer (ids exact, SD 1.x and SD 2.x padding), scheduler (the denoising loop with the case's
// model_output_rule), unet (output and every intermediate), text_encoder (last, penultimate, pooled),
// vae (decoded, posterior mean/logvar). e2e cases run the whole pipeline from the stored initial latents
// and check token ids, text embeddings, the latents after every step, the final latents and the image.
import { Engine, type SimdVariant } from "../runtime/engine.ts";
import { maxAbsRelToMax, openGolden, type GoldenSet } from "../io/golden.ts";
import { findWeights } from "../io/diffusers.ts";
import { fileExists, joinLocation, statLocation } from "../io/source.ts";
import { loadClipTextModel, loadUNet, loadVae } from "../models/loader.ts";
import { ClipTokenizer } from "../models/tokenizer.ts";
import { ClipTextModel } from "../models/clip.ts";
import { UNet } from "../models/unet.ts";
import { Vae } from "../models/vae.ts";
import { tensorFromNCHW, tensorToNCHW } from "../models/layout.ts";
import { createScheduler } from "../pipeline/schedulers.ts";
import { StableDiffusionPipeline, weightBytesF32 } from "../pipeline/pipeline.ts";

export interface VerifyOptions {
  /** Folder with cases.json/cases.safetensors and/or e2e.json/e2e.safetensors. */
  dir: string;
  /** More folders to look for the models the cases name (after `dir`). */
  modelDirs?: string[];
  threads?: number;
  simd?: "auto" | SimdVariant;
  /** Only cases whose kind or name contains one of these strings. */
  filter?: string[];
  /** Called with each result as soon as it is known. */
  onResult?: (r: CaseResult) => void;
  /** Progress of slow cases (model loads, e2e steps). */
  onProgress?: (message: string) => void;
}

export interface Check {
  /** What was compared: "out", "down_blocks.1", "step_latents[3]", "ids sd2", ... */
  name: string;
  /** max_abs_rel_to_max (0 or 1 for exact checks). */
  err: number;
  tol: number;
  exact?: boolean;
}

export interface CaseResult {
  kind: string;
  /** e.g. "unet-sd15-tiny#0", "pndm-20", "e2e0". */
  name: string;
  pass: boolean;
  checks: Check[];
  /** Set when the case could not run (missing model, exception). */
  error?: string;
  ms: number;
}

export interface VerifySummary {
  results: CaseResult[];
  passed: number;
  failed: number;
  /** Notes to print once (e.g. default tolerances used). */
  notes: string[];
  /** The filter strings that matched no case (a typo in --only). */
  unmatchedFilters: string[];
}

/** Tolerances for e2e checks when e2e.json does not state them (it may, per case or at the top, in a `tolerance` object). */
export const E2E_DEFAULT_TOLERANCE = {
  text_embeddings: 2e-4,
  step_latents: 5e-4,
  final_latents: 5e-4,
  image: 5e-4,
} as const;

/** The model-output rule of the golden scheduler cases, as a function of (base_i, scaled sample_i). */
const MODEL_OUTPUT_RULES: Record<string, (base: number, scaled: number) => number> = {
  "model_output[i] = model_output_base[i] + 0.01 * scale_model_input(sample_i, t_i)": (b, s) => b + 0.01 * s,
};

const norm = (s: string) => s.replace(/\s+/g, " ").trim();

function fmtErr(x: number): string {
  if (x === 0) return "0";
  if (!Number.isFinite(x)) return String(x);
  return x.toExponential(1).replace(/\.0e/, "e").replace(/e([+-])(\d)$/, "e$10$2");
}

/** One line: `PASS unet unet-sd15-tiny#0  max_err 3.1e-06 <= 2e-04`. */
export function formatResult(r: CaseResult): string {
  const head = `${r.pass ? "PASS" : "FAIL"} ${r.kind} ${r.name}`;
  if (r.error) return `${head}  error: ${r.error}`;
  const approx = r.checks.filter((c) => !c.exact);
  const exact = r.checks.filter((c) => c.exact);
  const parts: string[] = [];
  if (approx.length) {
    // the check closest to (or furthest past) its tolerance
    const worst = approx.reduce((a, b) => (ratio(b) > ratio(a) ? b : a));
    parts.push(`max_err ${fmtErr(worst.err)} ${worst.err <= worst.tol ? "<=" : ">"} ${fmtErr(worst.tol)}${approx.length > 1 || !(worst.err <= worst.tol) ? ` (${worst.name})` : ""}`);
  }
  if (exact.length) {
    const bad = exact.filter((c) => c.err !== 0);
    parts.push(bad.length ? `mismatch: ${bad.map((c) => c.name).join(", ")}` : `${exact.map((c) => c.name).join(", ")} exact`);
  }
  const failing = approx.filter((c) => !(c.err <= c.tol));
  if (failing.length > 1 || (failing.length === 1 && approx.length > 1))
    parts.push(`failing: ${failing.slice(0, 6).map((c) => `${c.name} ${fmtErr(c.err)}`).join(", ")}${failing.length > 6 ? ", ..." : ""}`);
  return `${head}  ${parts.join("  ")}`;
}

const ratio = (c: Check) => (Number.isNaN(c.err) ? Infinity : c.tol > 0 ? c.err / c.tol : c.err > 0 ? Infinity : 0);

function checkClose(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): Check {
  if (actual.length !== expected.length) return { name: `${name} (length ${actual.length}, expected ${expected.length})`, err: Infinity, tol };
  const err = maxAbsRelToMax(actual, expected);
  return { name, err: Number.isNaN(err) ? Infinity : err, tol };
}

function checkExact(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>): Check {
  let same = actual.length === expected.length;
  for (let i = 0; same && i < expected.length; i++) same = actual[i] === expected[i];
  return { name, err: same ? 0 : 1, tol: 0, exact: true };
}

const toleranceOf = (c: any, fallback: number): number => {
  const t = c?.tolerance?.max_abs_rel_to_max;
  return typeof t === "number" ? t : fallback;
};

/** Runs every case of `dir`'s cases.json and e2e.json (either may be absent; not both). */
export async function runVerify(opts: VerifyOptions): Promise<VerifySummary> {
  const dir = opts.dir;
  const hasCases = await fileExists(joinLocation(dir, "cases.json"));
  const hasE2e = await fileExists(joinLocation(dir, "e2e.json"));
  if (!hasCases && !hasE2e) throw new Error(`${dir}: neither cases.json nor e2e.json found`);
  const searchDirs = [dir, ...(opts.modelDirs ?? [])];
  const progress = opts.onProgress ?? (() => {});
  const results: CaseResult[] = [];
  const notes: string[] = [];
  const matched = new Set<string>();
  const wanted = (kind: string, name: string) => {
    if (!opts.filter?.length) return true;
    const hits = opts.filter.filter((f) => kind.includes(f) || name.includes(f) || `${kind} ${name}`.includes(f));
    for (const f of hits) matched.add(f);
    return hits.length > 0;
  };

  const record = (r: CaseResult) => {
    results.push(r);
    opts.onResult?.(r);
  };

  /** Runs fn as one case; exceptions become a failed case with the message. */
  const runCase = async (kind: string, name: string, fn: () => Promise<Check[]> | Check[]) => {
    const t0 = performance.now();
    try {
      const checks = await fn();
      const pass = checks.length > 0 && checks.every((c) => c.err <= c.tol);
      record({ kind, name, pass, checks, ms: performance.now() - t0, error: checks.length ? undefined : "no checks ran" });
    } catch (e) {
      const msg = (e as Error)?.message ?? String(e);
      record({ kind, name, pass: false, checks: [], error: msg.split("\n")[0], ms: performance.now() - t0 });
    }
  };

  const findModel = async (name: string): Promise<string> => {
    for (const d of searchDirs) {
      const p = joinLocation(d, name);
      if ((await statLocation(p)).kind === "folder") return p;
    }
    throw new Error(`model folder "${name}" not found (looked in ${searchDirs.join(", ")})`);
  };

  if (hasCases) {
    const golden = await openGolden(dir, "cases");
    try {
      await verifyCases(golden, { ...opts, findModel, runCase, wanted, progress });
    } finally {
      golden.tensors.close();
    }
  }
  if (hasE2e) {
    const golden = await openGolden(dir, "e2e");
    try {
      await verifyE2e(golden, { ...opts, findModel, runCase, wanted, progress, notes });
    } finally {
      golden.tensors.close();
    }
  }
  const passed = results.filter((r) => r.pass).length;
  return { results, passed, failed: results.length - passed, notes, unmatchedFilters: (opts.filter ?? []).filter((f) => !matched.has(f)) };
}

interface Ctx extends VerifyOptions {
  findModel: (name: string) => Promise<string>;
  runCase: (kind: string, name: string, fn: () => Promise<Check[]> | Check[]) => Promise<void>;
  wanted: (kind: string, name: string) => boolean;
  progress: (message: string) => void;
  notes?: string[];
}

/** Engine memory for a component model folder: its weights as f32 (+50%) and room for the case tensors. */
async function componentMemory(modelDir: string): Promise<number> {
  const w = await weightBytesF32(await findWeights(modelDir));
  const bytes = w * 1.5 + 192 * 1024 * 1024;
  return Math.min(Math.ceil(bytes / (16 << 20)) * (16 << 20), 4096 * 1024 * 1024);
}

async function verifyCases(golden: GoldenSet, ctx: Ctx): Promise<void> {
  const cases: any[] = golden.json.cases ?? [];
  const counters = new Map<string, number>();
  const named = cases.map((c) => {
    const key = c.kind === "tokenizer" ? "tokenizer" : c.kind === "scheduler" ? `${c.scheduler}-${c.num_inference_steps}` : String(c.model ?? c.kind);
    const i = counters.get(key) ?? 0;
    counters.set(key, i + 1);
    const name = c.kind === "scheduler" ? (i ? `${key}#${i}` : key) : `${key}#${i}`;
    return { c, name };
  });

  // tokenizer
  const tokCases = named.filter(({ c, name }) => c.kind === "tokenizer" && ctx.wanted("tokenizer", name));
  if (tokCases.length) {
    let tok: ClipTokenizer | null = null;
    let tokErr: string | null = null;
    try {
      tok = await ClipTokenizer.fromDir(await ctx.findModel("tokenizer"));
    } catch (e) {
      tokErr = (e as Error).message;
    }
    for (const { c, name } of tokCases)
      await ctx.runCase("tokenizer", name, () => {
        if (!tok) throw new Error(tokErr!);
        const checks: Check[] = [];
        if (c.sd1_input_ids) checks.push(checkExact("sd1", tok.encode(c.prompt).ids, c.sd1_input_ids));
        if (c.sd2_input_ids) checks.push(checkExact("sd2", tok.encode(c.prompt, { padId: 0 }).ids, c.sd2_input_ids));
        if (c.input_ids) checks.push(checkExact("ids", tok.encode(c.prompt).ids, c.input_ids));
        return checks;
      });
  }

  // scheduler
  for (const { c, name } of named.filter(({ c, name }) => c.kind === "scheduler" && ctx.wanted("scheduler", name)))
    await ctx.runCase("scheduler", name, () => verifySchedulerCase(golden, c));

  // models: one engine per model folder, closed after its cases
  const byModel = new Map<string, { c: any; name: string }[]>();
  for (const n of named) {
    if (!["unet", "text_encoder", "vae"].includes(n.c.kind) || !ctx.wanted(n.c.kind, n.name)) continue;
    const key = `${n.c.kind}\u0000${n.c.model}`;
    if (!byModel.has(key)) byModel.set(key, []);
    byModel.get(key)!.push(n);
  }
  for (const [key, list] of byModel) {
    const [kind, model] = key.split("\u0000");
    let modelDir: string;
    let eng: Engine | null = null;
    let loaded: UNet | ClipTextModel | Vae;
    try {
      modelDir = await ctx.findModel(model);
      ctx.progress(`loading ${kind} ${model}`);
      eng = await Engine.create({ threads: ctx.threads, simd: ctx.simd, memoryBytes: await componentMemory(modelDir) });
      loaded = kind === "unet" ? await loadUNet(eng, modelDir) : kind === "vae" ? await loadVae(eng, modelDir) : await loadClipTextModel(eng, modelDir);
    } catch (e) {
      eng?.close();
      const msg = (e as Error).message;
      for (const { name } of list) await ctx.runCase(kind, name, () => { throw new Error(msg); });
      continue;
    }
    try {
      for (const { c, name } of list) {
        ctx.progress(`running ${kind} ${name}`);
        await ctx.runCase(kind, name, () =>
          eng!.scope(() =>
            kind === "unet" ? verifyUNetCase(golden, c, loaded as UNet, eng!) : kind === "vae" ? verifyVaeCase(golden, c, loaded as Vae, eng!) : verifyTextCase(golden, c, loaded as ClipTextModel),
          ),
        );
      }
    } finally {
      eng.close();
    }
  }

  for (const { c, name } of named)
    if (!["tokenizer", "scheduler", "unet", "text_encoder", "vae"].includes(c.kind) && ctx.wanted(c.kind, name))
      await ctx.runCase(String(c.kind), name, () => { throw new Error(`unknown case kind ${JSON.stringify(c.kind)}`); });
}

function verifySchedulerCase(golden: GoldenSet, c: any): Check[] {
  const rule = MODEL_OUTPUT_RULES[norm(String(c.model_output_rule ?? ""))];
  if (!rule) throw new Error(`unknown model_output_rule ${JSON.stringify(c.model_output_rule)} (known: ${Object.keys(MODEL_OUTPUT_RULES).join(" | ")})`);
  // golden names: "ddim-v" is DDIM with v-prediction (the config says so); "dpmsolver++" is an alias
  const s = createScheduler(c.scheduler === "ddim-v" ? "ddim" : c.scheduler, c.config ?? {});
  s.setTimesteps(c.num_inference_steps);
  const checks: Check[] = [];
  if (Array.isArray(c.timesteps)) {
    // Euler's timesteps are fractional; the golden file lists them cast to int
    const ours = s.timesteps.map((t) => (c.scheduler === "euler" ? Math.trunc(t) : t));
    checks.push(checkExact("timesteps", ours, c.timesteps));
  }
  if (typeof c.init_noise_sigma === "number") checks.push(checkClose("init_noise_sigma", [s.initNoiseSigma], [c.init_noise_sigma], 1e-6));
  const tol = toleranceOf(c, 1e-4);
  const x0 = golden.get(c.inputs.initial).data;
  const base = golden.get(c.inputs.model_output_base);
  const expected = golden.get(c.expected.samples);
  const n = x0.length;
  if (base.shape[0] !== s.timesteps.length || expected.shape[0] !== s.timesteps.length)
    throw new Error(`${s.timesteps.length} timesteps but ${base.shape[0]} model outputs and ${expected.shape[0]} expected samples`);
  let sample = x0;
  let worst: Check = { name: "samples", err: 0, tol };
  for (let i = 0; i < s.timesteps.length; i++) {
    const t = s.timesteps[i];
    const scaled = s.scaleModelInput(sample, t);
    const mo = new Float32Array(n);
    for (let j = 0; j < n; j++) mo[j] = rule(base.data[i * n + j], scaled[j]);
    sample = s.step(mo, t, sample);
    const ch = checkClose(`sample[${i}]`, sample, expected.data.subarray(i * n, (i + 1) * n), tol);
    if (ratio(ch) > ratio(worst) || i === 0) worst = ch;
  }
  checks.push(worst);
  return checks;
}

/** NCHW golden tensor (or [B,T] for time_embedding) vs an engine tensor (NHWC when 4-d). */
function compareTensor(name: string, t: import("../runtime/tensor.ts").Tensor, expected: { data: Float32Array; shape: number[] }, tol: number): Check {
  const actual = t.shape.length === 4 ? tensorToNCHW(t).data : t.toArray();
  return checkClose(name, actual, expected.data, tol);
}

function verifyUNetCase(golden: GoldenSet, c: any, unet: UNet, eng: Engine): Check[] {
  const tol = toleranceOf(c, 2e-4);
  const sample = golden.get(c.inputs.sample);
  const ctx = golden.get(c.inputs.encoder_hidden_states);
  const x = tensorFromNCHW(eng, sample.data, sample.shape);
  const context = eng.fromArray(ctx.data, ctx.shape);
  const timestep = c.inputs.timestep;
  const ts = typeof timestep === "string" ? Array.from(golden.get(timestep).data) : timestep;
  const inter: Record<string, import("../runtime/tensor.ts").Tensor> = {};
  const wantInter = c.intermediates && Object.keys(c.intermediates).length > 0;
  const out = unet.forward(x, ts, context, wantInter ? { intermediates: inter } : {});
  const checks = [compareTensor("out", out, golden.get(c.expected.sample), tol)];
  for (const [k, v] of Object.entries<string>(c.intermediates ?? {})) {
    const t = inter[k];
    if (!t) checks.push({ name: `${k} (not produced)`, err: Infinity, tol });
    else checks.push(compareTensor(k, t, golden.get(v), tol));
  }
  for (const t of Object.values(inter)) t.free();
  return checks;
}

function verifyTextCase(golden: GoldenSet, c: any, model: ClipTextModel): Check[] {
  const tol = toleranceOf(c, 2e-4);
  const ids = golden.get(c.inputs.input_ids);
  const batch = ids.shape.length === 2 ? ids.shape[0] : 1;
  const out = model.encode(Int32Array.from(ids.data), batch);
  const e = c.expected;
  const checks: Check[] = [];
  if (e.last_hidden_state) checks.push(checkClose("last", out.last.toArray(), golden.get(e.last_hidden_state).data, tol));
  if (e.penultimate_hidden_state) checks.push(checkClose("penultimate", out.penultimate.toArray(), golden.get(e.penultimate_hidden_state).data, tol));
  if (e.pooled) checks.push(checkClose("pooled", out.pooled.toArray(), golden.get(e.pooled).data, tol));
  return checks;
}

function verifyVaeCase(golden: GoldenSet, c: any, vae: Vae, eng: Engine): Check[] {
  const tol = toleranceOf(c, 2e-4);
  const checks: Check[] = [];
  if (c.inputs.latents && c.expected.decoded) {
    const z = golden.get(c.inputs.latents);
    const img = vae.decode(tensorFromNCHW(eng, z.data, z.shape));
    checks.push(compareTensor("decoded", img, golden.get(c.expected.decoded), tol));
  }
  if (c.inputs.image && (c.expected.posterior_mean || c.expected.posterior_logvar)) {
    const x = golden.get(c.inputs.image);
    const { mean, logvar } = vae.encode(tensorFromNCHW(eng, x.data, x.shape));
    if (c.expected.posterior_mean) checks.push(compareTensor("mean", mean, golden.get(c.expected.posterior_mean), tol));
    if (c.expected.posterior_logvar) checks.push(compareTensor("logvar", logvar, golden.get(c.expected.posterior_logvar), tol));
  }
  return checks;
}

// ---------------------------------------------------------------------------------------------------
// e2e

async function verifyE2e(golden: GoldenSet, ctx: Ctx): Promise<void> {
  const json = golden.json;
  const cases: any[] = (json.cases ?? []).filter((c: any, i: number) => ctx.wanted("e2e", c.id ?? `e2e#${i}`));
  if (!cases.length) return;
  if (!cases.some((c) => c.tolerance) && !json.tolerance)
    ctx.notes?.push(`e2e.json states no tolerances: using ${Object.entries(E2E_DEFAULT_TOLERANCE).map(([k, v]) => `${k} ${fmtErr(v)}`).join(", ")}; token ids exact`);
  const pipes = new Map<string, StableDiffusionPipeline | Error>();
  try {
    for (let ci = 0; ci < cases.length; ci++) {
      const c = cases[ci];
      const name = c.id ?? `e2e#${ci}`;
      const model = c.pipeline ?? json.pipeline;
      await ctx.runCase("e2e", name, async () => {
        if (typeof model !== "string") throw new Error("e2e.json names no pipeline folder (\"pipeline\")");
        if (!pipes.has(model)) {
          try {
            const dir = await ctx.findModel(model);
            ctx.progress(`loading pipeline ${model}`);
            pipes.set(model, await StableDiffusionPipeline.load(dir, { threads: ctx.threads, simd: ctx.simd, onWarning: () => {} }));
          } catch (e) {
            pipes.set(model, e as Error);
          }
        }
        const pipe = pipes.get(model)!;
        if (pipe instanceof Error) throw pipe;
        return verifyE2eCase(golden, c, pipe, json.tolerance, (m) => ctx.progress(`${name}: ${m}`));
      });
    }
  } finally {
    for (const p of pipes.values()) if (p instanceof StableDiffusionPipeline) p.close();
  }
}

async function verifyE2eCase(golden: GoldenSet, c: any, pipe: StableDiffusionPipeline, topTol: any, progress: (m: string) => void): Promise<Check[]> {
  const tolFor = (k: keyof typeof E2E_DEFAULT_TOLERANCE): number => {
    for (const src of [c.tolerance, topTol]) {
      const t = src?.[k] ?? src?.max_abs_rel_to_max;
      if (typeof t === "number") return t;
      if (typeof t?.max_abs_rel_to_max === "number") return t.max_abs_rel_to_max;
    }
    return E2E_DEFAULT_TOLERANCE[k];
  };
  const T = c.tensors ?? {};
  const checks: Check[] = [];
  const negative = c.negative_prompt ?? "";

  // token ids: golden rows are [prompt, unconditional]
  const p = pipe.tokenizer.encode(c.prompt);
  const n = pipe.tokenizer.encode(negative);
  if (T.input_ids) {
    const ids = golden.get(T.input_ids).data;
    const L = p.ids.length;
    checks.push(checkExact("ids", p.ids, ids.subarray(0, L)));
    if (ids.length >= 2 * L) checks.push(checkExact("uncond ids", n.ids, ids.subarray(L, 2 * L)));
  }
  // text embeddings, same row order
  if (T.text_embeddings) {
    const exp = golden.get(T.text_embeddings);
    const rows = exp.shape[0] >= 2 ? [p.ids, n.ids] : [p.ids];
    const emb = pipe.engine.scope(() => pipe.textEncoder.encode(Int32Array.from(rows.flat()), rows.length).last.toArray());
    checks.push(checkClose("text_embeddings", emb, exp.data, tolFor("text_embeddings")));
  }

  // the loop from the stored initial latents
  if (!T.initial_latents) throw new Error("case has no initial_latents");
  const init = golden.get(T.initial_latents);
  const steps: Float32Array[] = [];
  const res = await pipe.generate({
    prompt: c.prompt,
    negativePrompt: negative,
    steps: c.num_inference_steps,
    guidance: c.guidance_scale,
    scheduler: c.scheduler,
    width: c.width,
    height: c.height,
    latents: init.data,
    onStep: (s) => {
      steps.push(s.latents);
      if (s.step % 10 === 0 || s.step === s.total) progress(`step ${s.step}/${s.total}`);
    },
    onWarning: () => {},
  });
  if (T.step_latents) {
    const exp = golden.get(T.step_latents);
    const tol = tolFor("step_latents");
    if (exp.shape[0] !== steps.length) checks.push({ name: `step count (${steps.length}, expected ${exp.shape[0]})`, err: Infinity, tol });
    else {
      const per = exp.data.length / exp.shape[0];
      let worst: Check | null = null;
      for (let i = 0; i < steps.length; i++) {
        const ch = checkClose(`step_latents[${i}]`, steps[i], exp.data.subarray(i * per, (i + 1) * per), tol);
        if (!worst || ratio(ch) > ratio(worst)) worst = ch;
      }
      if (worst) checks.push(worst);
    }
  }
  if (T.final_latents) checks.push(checkClose("final_latents", res.latents, golden.get(T.final_latents).data, tolFor("final_latents")));
  if (T.image) checks.push(checkClose("image", res.decoded, golden.get(T.image).data, tolFor("image")));
  return checks;
}
