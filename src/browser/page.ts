// The demo page's script (main thread; bundled as dist/demo.js). It fills the form from the query string,
// starts the engine worker (dist/demo-worker.js) and draws what the worker reports: the per-step precision
// strip, progress with ETA, the image, the timing split and the engine. The main thread never blocks: the
// engine (and its kernel workers) run in the worker.
//
// For tests and links: ?prompt=&negative=&seed=&steps=&guidance=&scheduler=&precision=&threads=&model=&autorun=1
// fill the form (and start a run); document.body.dataset.state is idle, running, then done or error; the
// image is <img id="result"> with the PNG as a data: URL.
import type { FromWorker, GenerateRequest, Timings, ToWorker } from "./protocol.ts";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const input = (id: string) => $<HTMLInputElement>(id);

const isolated = self.crossOriginIsolated === true;
const cores = navigator.hardwareConcurrency || 1;

function setState(state: "idle" | "running" | "done" | "error"): void {
  document.body.dataset.state = state;
  $<HTMLButtonElement>("run").disabled = state === "running" || !workerReady;
}

function showError(message: string): void {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  $("status").textContent = "Failed";
  setState("error");
}

function fmtS(ms: number): string {
  const s = ms / 1000;
  return s < 10 ? s.toFixed(2) : s.toFixed(1);
}

// ---------------------------------------------------------------------------------------------------
// the form and the query string

const PRESETS = ["fp32", "bf16", "int8"];

function precisionSpec(): string {
  const kind = $<HTMLSelectElement>("precision-kind").value;
  if (kind === "mixed") return `mixed:${input("mixed-k").value.trim()}`;
  if (kind === "custom") return input("custom-schedule").value.trim();
  return kind;
}

function setPrecision(spec: string): void {
  const s = spec.trim();
  const m = /^mixed\s*:\s*(\d+)$/i.exec(s);
  const kind = PRESETS.includes(s.toLowerCase()) ? s.toLowerCase() : m ? "mixed" : "custom";
  $<HTMLSelectElement>("precision-kind").value = kind;
  if (m) input("mixed-k").value = m[1];
  // anything else (a schedule, or a word the worker will reject) is kept as written
  if (kind === "custom") input("custom-schedule").value = s;
  showPrecisionFields();
}

function showPrecisionFields(): void {
  const kind = $<HTMLSelectElement>("precision-kind").value;
  $("mixed-k-label").hidden = kind !== "mixed";
  $("custom-label").hidden = kind !== "custom";
}

function readQuery(): boolean {
  const q = new URLSearchParams(location.search);
  const fields: [string, string][] = [["prompt", "prompt"], ["negative", "negative"], ["negative_prompt", "negative"], ["seed", "seed"], ["steps", "steps"], ["guidance", "guidance"], ["threads", "threads"], ["model", "model"]];
  for (const [param, id] of fields) {
    const v = q.get(param);
    if (v !== null) input(id).value = v;
  }
  const sched = q.get("scheduler");
  if (sched !== null) {
    const sel = $<HTMLSelectElement>("scheduler");
    // an unknown name is added as written, so the worker names it in its message
    if (!Array.from(sel.options).some((o) => o.value === sched)) sel.add(new Option(sched, sched));
    sel.value = sched;
  }
  const prec = q.get("precision") ?? q.get("schedule");
  if (prec !== null) setPrecision(prec);
  return q.get("autorun") === "1";
}

function request(): GenerateRequest {
  const threads = Number(input("threads").value);
  return {
    model: new URL(input("model").value.trim() || "model/", location.href).href,
    prompt: input("prompt").value,
    negativePrompt: input("negative").value,
    seed: input("seed").value,
    steps: input("steps").value,
    guidance: input("guidance").value,
    scheduler: $<HTMLSelectElement>("scheduler").value,
    precision: precisionSpec(),
    threads: isolated ? threads : 1,
  };
}

/** The form as a query string, so the address reproduces the image. */
function writeQuery(r: GenerateRequest): void {
  const q = new URLSearchParams({ prompt: r.prompt, seed: r.seed, steps: r.steps, guidance: r.guidance, precision: r.precision });
  if (r.negativePrompt) q.set("negative", r.negativePrompt);
  if (r.scheduler) q.set("scheduler", r.scheduler);
  const model = input("model").value.trim();
  if (model && model !== "model/") q.set("model", model);
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

// ---------------------------------------------------------------------------------------------------
// drawing what the worker reports

let cells: HTMLElement[] = [];

function drawPlan(precisions: string[], schedule: string): void {
  const strip = $("strip");
  strip.replaceChildren();
  cells = precisions.map((p, i) => {
    const c = document.createElement("div");
    c.className = `cell p-${p}`;
    c.title = `step ${i + 1}: ${p}`;
    strip.append(c);
    return c;
  });
  $("schedule-text").textContent = `· ${schedule}`;
}

function drawStep(s: Extract<FromWorker, { type: "step" }>): void {
  cells.forEach((c, i) => {
    c.classList.toggle("done", i < s.denoisingStep);
    c.classList.toggle("active", i === s.denoisingStep - 1 && s.step < s.total);
  });
  const p = $<HTMLProgressElement>("progress");
  p.max = s.total;
  p.value = s.step;
  const per = s.elapsedMs / s.step;
  $("progress-text").textContent = `step ${s.step}/${s.total} [${s.precision}] · ${fmtS(s.stepMs)} s/step · ETA ${fmtS(per * (s.total - s.step))} s`;
}

function drawTimings(t: Timings): void {
  const rows: [string, string, string][] = [];
  rows.push(["model load", t.loadMs ? fmtS(t.loadMs) : "reused", ""]);
  rows.push(["text encoder", fmtS(t.textMs), ""]);
  for (const u of t.unet) rows.push([`UNet ${u.precision}`, fmtS(u.ms), `${u.calls} call${u.calls > 1 ? "s" : ""}, ${fmtS(u.ms / u.calls)} s each`]);
  rows.push(["VAE decode", fmtS(t.decodeMs), ""]);
  rows.push(["PNG encode", fmtS(t.encodeMs), ""]);
  const body = $("timings").querySelector("tbody")!;
  body.replaceChildren();
  for (const [name, s, note] of [...rows, ["total", fmtS(t.totalMs), ""] as [string, string, string]]) {
    const tr = body.insertRow();
    if (name === "total") tr.className = "total";
    tr.insertCell().textContent = name;
    const v = tr.insertCell();
    v.className = "num";
    v.textContent = s === "reused" ? s : `${s} s`;
    tr.insertCell().textContent = note;
  }
}

function dataUrl(png: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < png.length; i += 0x8000) bin += String.fromCharCode(...png.subarray(i, i + 0x8000));
  return `data:image/png;base64,${btoa(bin)}`;
}

function onMessage(m: FromWorker): void {
  switch (m.type) {
    case "ready":
      workerReady = true;
      if (document.body.dataset.state !== "running") {
        $("status").textContent = "Ready";
        $<HTMLButtonElement>("run").disabled = false;
      }
      if (pending) {
        const r = pending;
        pending = null;
        send(r);
      }
      break;
    case "phase":
      $("status").textContent = m.phase === "loading" ? `Loading the model… ${m.detail.replace(/^loading /, "")}` : m.phase === "generating" ? "Generating…" : "Encoding the PNG…";
      break;
    case "warning": {
      const w = $("warnings");
      w.textContent = (w.textContent ? w.textContent + "\n" : "") + `warning: ${m.message}`;
      w.hidden = false;
      break;
    }
    case "engine":
      $("threads-used").textContent = `${m.threads} (${cores} logical cores${isolated ? "" : "; one thread without cross-origin isolation"})`;
      $("simd").textContent = `${m.simd} (${m.probe})`;
      $("memory").textContent = `${m.memoryMiB} MiB shared wasm memory${m.reused ? " (model already loaded)" : ""}`;
      break;
    case "plan":
      drawPlan(m.precisions, `${m.schedule} · ${m.scheduler}, ${m.calls} UNet calls · seed ${m.seed}`);
      if (input("seed").value.trim() === "") input("seed").value = String(m.seed);
      break;
    case "step":
      drawStep(m);
      break;
    case "done": {
      const img = $<HTMLImageElement>("result");
      const url = dataUrl(m.png);
      img.src = url;
      const a = $<HTMLAnchorElement>("download");
      a.href = url;
      a.hidden = false;
      $("size").textContent = `${m.width}x${m.height}, ${m.png.length} bytes, shown at ${Math.round(256 / m.width)}x`;
      drawTimings(m.timings);
      $("status").textContent = `Done in ${fmtS(m.timings.totalMs)} s`;
      setState("done");
      break;
    }
    case "error":
      showError(m.message);
      break;
  }
}

// ---------------------------------------------------------------------------------------------------
// start

let workerReady = false;
let pending: GenerateRequest | null = null;
const worker = new Worker(new URL("./demo-worker.js", import.meta.url), { type: "module" });
worker.onmessage = (ev: MessageEvent<FromWorker>) => onMessage(ev.data);
worker.onerror = (ev: ErrorEvent) => {
  ev.preventDefault();
  workerReady = false;
  showError(`the engine worker failed: ${ev.message || "its script did not load (is dist/demo-worker.js served?)"}`);
};
worker.onmessageerror = () => showError("a message from the engine worker could not be read");

function send(r: GenerateRequest): void {
  worker.postMessage({ type: "generate", request: r } satisfies ToWorker);
}

function run(): void {
  $("error").hidden = true;
  $("warnings").hidden = true;
  $("warnings").textContent = "";
  $("progress-text").textContent = "";
  $<HTMLProgressElement>("progress").value = 0;
  cells.forEach((c) => c.classList.remove("done", "active"));
  let r: GenerateRequest;
  try {
    r = request();
  } catch (e) {
    showError(String((e as Error).message ?? e));
    return;
  }
  writeQuery(r);
  setState("running");
  $("status").textContent = "Starting…";
  if (workerReady) send(r);
  else pending = r;
}

$("isolated").textContent = isolated ? "yes (SharedArrayBuffer available)" : "no";
if (!isolated) {
  const note = $("isolation");
  note.textContent =
    "This page is not cross-origin isolated: the server did not send the headers Cross-Origin-Opener-Policy: same-origin and " +
    "Cross-Origin-Embedder-Policy: require-corp, so the browser offers no SharedArrayBuffer and the engine cannot share its memory " +
    "with worker threads. It runs on one thread (the same image, more slowly). `stepq serve` sends these headers unless started with --no-isolation.";
  note.hidden = false;
}
input("threads").value = String(isolated ? Math.min(cores, 16) : 1);
input("model").value = "model/";
const autorun = readQuery();
if (!isolated) {
  input("threads").value = "1";
  input("threads").disabled = true;
}
showPrecisionFields();
$("precision-kind").addEventListener("change", showPrecisionFields);
$("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (document.body.dataset.state !== "running") run();
});
setState("idle");
if (autorun) run();
