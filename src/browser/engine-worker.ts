// The demo's engine worker: a dedicated module worker that owns the stepq pipeline. It is thread 0 of the
// engine: Engine.create (inside StableDiffusionPipeline.load) starts the kernel workers (dist/worker.js) from
// here, all on one shared WebAssembly.Memory, and the kernels' synchronous run() may block in Atomics.wait,
// which a browser allows in a worker but not on the page. The model is read over HTTP by the library's byte
// source (HEAD + Range requests streamed into engine memory). Progress goes to the page as messages while the
// (synchronous) denoising loop runs; the finished image goes back as PNG bytes.
//
// Bundled by scripts/build.mjs as dist/demo-worker.js, with the library left as an import of the library
// bundle beside it ("./stepq.browser.js"), exactly as an application would use it.
import {
  PrecisionSchedule,
  PrecisionScheduleError,
  SCHEDULER_NAMES,
  StableDiffusionPipeline,
  encodePng,
  type Precision,
} from "../index.ts";
import type { FromWorker, GenerateRequest, Timings, ToWorker } from "./protocol.ts";

interface WorkerScope {
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
}
const scope = self as unknown as WorkerScope;
const post = (m: FromWorker, transfer?: Transferable[]) => scope.postMessage(m, transfer);

class InputError extends Error {}

/** The same checks and defaults as `stepq generate` (src/cli/generate.ts), so equal inputs make equal images. */
function checkRequest(r: GenerateRequest) {
  const int = (text: string, name: string, min: number, max: number, def?: number): number => {
    if (text.trim() === "" && def !== undefined) return def;
    const n = Number(text);
    if (text.trim() === "" || !Number.isInteger(n) || n < min || n > max) throw new InputError(`${name} must be an integer from ${min} to ${max}, got "${text}"`);
    return n;
  };
  if (typeof r.prompt !== "string" || !r.prompt.trim()) throw new InputError("the prompt is empty");
  const steps = int(r.steps, "steps", 1, 1000, 50);
  const g = r.guidance.trim() === "" ? 7.5 : Number(r.guidance);
  if (!Number.isFinite(g) || g < 0 || g > 100) throw new InputError(`guidance must be a number from 0 to 100, got "${r.guidance}"`);
  const seed = int(r.seed, "seed", 0, 0xffffffff, Math.floor(Math.random() * 0x100000000));
  const scheduler = r.scheduler.trim() || undefined;
  if (scheduler !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(scheduler) && scheduler !== "dpmsolver++")
    throw new InputError(`scheduler must be one of ${SCHEDULER_NAMES.join(", ")}, got "${scheduler}"`);
  let schedule: PrecisionSchedule;
  try {
    schedule = PrecisionSchedule.parse(r.precision.trim() || "fp32", steps);
  } catch (e) {
    if (e instanceof PrecisionScheduleError) throw new InputError(`precision: ${e.message}`);
    throw e;
  }
  if (!Number.isInteger(r.threads) || r.threads < 1 || r.threads > 256) throw new InputError(`threads must be an integer from 1 to 256, got ${r.threads}`);
  let model: URL;
  try {
    model = new URL(r.model);
  } catch {
    throw new InputError(`the model location "${r.model}" is not a URL`);
  }
  if (model.protocol !== "http:" && model.protocol !== "https:") throw new InputError(`the model location must be an http(s) URL, got "${r.model}"`);
  return { prompt: r.prompt, negativePrompt: r.negativePrompt, steps, guidance: g, seed, scheduler, schedule, threads: r.threads, model: model.href };
}

let pipe: StableDiffusionPipeline | null = null;
let pipeKey = "";

async function generate(r: GenerateRequest): Promise<void> {
  const t0 = performance.now();
  const req = checkRequest(r);
  // one pipeline at a time: reused while the model, the UNet variants and the thread count stay the same
  const key = `${req.model} ${req.schedule.toLoad?.join(",") ?? "fp32"} ${req.threads}`;
  let loadMs = 0;
  if (!pipe || key !== pipeKey) {
    pipe?.close();
    pipe = null;
    post({ type: "phase", phase: "loading", detail: `loading ${req.model}` });
    try {
      pipe = await StableDiffusionPipeline.load(req.model, {
        threads: req.threads,
        precisions: req.schedule.toLoad,
        onWarning: (m) => post({ type: "warning", message: m }),
      });
    } catch (e) {
      throw new Error(`could not load the model at ${req.model}: ${(e as Error).message}`);
    }
    pipeKey = key;
    loadMs = pipe.loadMs;
  }
  const eng = pipe.engine;
  post({
    type: "engine",
    threads: eng.threads,
    simd: eng.simd,
    probe: eng.probe.ok ? "relaxed SIMD probe passed" : eng.probe.reason,
    memoryMiB: Math.round(eng.stats().capacity / 1048576),
    reused: loadMs === 0,
  });
  const scheduler = pipe.createScheduler(req.scheduler);
  scheduler.setTimesteps(req.steps);
  post({
    type: "plan",
    precisions: [...req.schedule.perStep],
    calls: scheduler.timesteps.length,
    schedule: req.schedule.toString(),
    scheduler: scheduler.name,
    seed: req.seed,
  });
  post({ type: "phase", phase: "generating", detail: "" });
  const res = await pipe.generate({
    prompt: req.prompt,
    negativePrompt: req.negativePrompt,
    steps: req.steps,
    guidance: req.guidance,
    seed: req.seed,
    scheduler: req.scheduler,
    width: pipe.defaultWidth,
    height: pipe.defaultHeight,
    precision: req.schedule,
    onWarning: (m) => post({ type: "warning", message: m }),
    onStep: (s) =>
      post({ type: "step", step: s.step, total: s.total, denoisingStep: s.denoisingStep, precision: s.precision, stepMs: s.stepMs, elapsedMs: s.elapsedMs }),
  });
  post({ type: "phase", phase: "encoding", detail: "" });
  const tPng = performance.now();
  const png = encodePng(res.image, res.width, res.height);
  const encodeMs = performance.now() - tPng;
  const byPrecision = new Map<Precision, { calls: number; ms: number }>();
  res.timings.stepMs.forEach((ms, i) => {
    const p = res.precisions[i];
    const e = byPrecision.get(p) ?? { calls: 0, ms: 0 };
    e.calls++;
    e.ms += ms;
    byPrecision.set(p, e);
  });
  const timings: Timings = {
    loadMs,
    textMs: res.timings.textMs,
    unet: [...byPrecision].map(([precision, e]) => ({ precision, ...e })),
    decodeMs: res.timings.decodeMs,
    encodeMs,
    totalMs: performance.now() - t0,
  };
  post({ type: "done", png, width: res.width, height: res.height, timings }, [png.buffer]);
}

// requests run one after another (the page sends one at a time; a second must not share a running pipeline)
let queue = Promise.resolve();
scope.onmessage = (ev) => {
  const msg = ev.data;
  if (msg?.type !== "generate") return;
  queue = queue.then(() =>
    generate(msg.request).catch((e: unknown) => {
      // a failed load leaves no pipeline; a failed run keeps the loaded one for the next try
      post({ type: "error", message: e instanceof Error ? e.message : String(e) });
    }),
  );
};
post({ type: "ready" });
