#!/usr/bin/env node
// stepq against other JavaScript-hosted runtimes on the same UNet: the fashion-sd-tiny UNet exported to ONNX
// (../shared/onnx: fp32, and int8 static QDQ), run by onnxruntime-node (native) and onnxruntime-web (wasm,
// SIMD + threads), next to `stepq bench unet --config fashion` under Node and under Deno. Every runtime gets
// 2 threads (the machine's cores), the same shapes (batch 2, 8x8x4 latents, 77x64 context), warm-up calls,
// then timed calls; each measurement runs in its own process so no runtime's idle thread pool competes with
// the next one. Prints a table with ratios and writes bench/results/peers.json.
//
// Setup (once; the peers are not stepq dependencies, they live in bench/peers/):
//   ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix bench/peers     (the skip avoids a CUDA download)
//   npm run build                                                  (stepq's dist/, for the Node column)
// Run:
//   node bench/peers.mjs [--iters 50] [--warmup 5] [--threads 2] [--only ort-node,ort-web,stepq-node,stepq-deno]
//
// Outputs of the onnxruntime sessions are compared with PyTorch's (fashion-unet-io.npz) as a sanity check
// (max abs error in the table); stepq's own accuracy is checked by its tests and `stepq verify`.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const peersDir = path.join(here, "peers");
const shared = process.env.STEPQ_SHARED ?? path.resolve(root, "..", "shared");
const onnxDir = path.join(shared, "onnx");
const MODELS = { fp32: "fashion-unet-fp32.onnx", int8: "fashion-unet-int8-qdq.onnx" };

function parseArgs(argv) {
  const o = { iters: 50, warmup: 5, threads: 2, only: null, one: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--iters") o.iters = Number(val());
    else if (a === "--warmup") o.warmup = Number(val());
    else if (a === "--threads") o.threads = Number(val());
    else if (a === "--only") o.only = val().split(",");
    else if (a === "--one") o.one = val();
    else if (a === "-h" || a === "--help") {
      console.log(fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n"));
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------------
// .npz (numpy.savez, stored) reader

function readNpz(file) {
  const buf = fs.readFileSync(file);
  const out = {};
  // central directory: find the end record, then walk entries
  let eocd = buf.length - 22;
  while (eocd >= 0 && buf.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  if (eocd < 0) throw new Error(`${file}: not a zip file`);
  const n = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  for (let i = 0; i < n; i++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error(`${file}: bad central directory`);
    const method = buf.readUInt16LE(p + 10);
    const csize = buf.readUInt32LE(p + 20);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.toString("utf8", p + 46, p + 46 + nameLen);
    p += 46 + nameLen + extraLen + commentLen;
    if (method !== 0) throw new Error(`${file}: ${name} is compressed (method ${method}); expected numpy.savez (stored)`);
    const lName = buf.readUInt16LE(local + 26);
    const lExtra = buf.readUInt16LE(local + 28);
    const start = local + 30 + lName + lExtra;
    out[name.replace(/\.npy$/, "")] = readNpy(buf.subarray(start, start + csize), name);
  }
  return out;
}

function readNpy(b, name) {
  if (b.toString("latin1", 1, 6) !== "NUMPY") throw new Error(`${name}: not a .npy array`);
  const major = b[6];
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = b.toString("latin1", hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (fortran) throw new Error(`${name}: fortran order is not supported`);
  const data = b.subarray(hstart + hlen);
  const copy = new Uint8Array(data).buffer; // aligned copy
  const types = { "<f4": Float32Array, "<i8": BigInt64Array, "<f8": Float64Array, "<i4": Int32Array };
  const T = types[descr];
  if (!T) throw new Error(`${name}: dtype ${descr} is not supported`);
  return { data: new T(copy), shape, descr };
}

// ---------------------------------------------------------------------------------------------------
// one measurement (runs in a child process: --one RUNTIME:MODEL)

function median(xs) {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function measureOrt(kind, modelKey, o) {
  const io = readNpz(path.join(onnxDir, "fashion-unet-io.npz"));
  const req = createRequire(path.join(peersDir, "package.json"));
  let ort;
  let version;
  const sessionOptions = { graphOptimizationLevel: "all", executionMode: "sequential" };
  if (kind === "ort-node") {
    ort = req("onnxruntime-node");
    version = ort.env.versions?.node ?? "?";
    Object.assign(sessionOptions, { intraOpNumThreads: o.threads, interOpNumThreads: 1 });
  } else {
    ort = await import(pathToFileURL(req.resolve("onnxruntime-web")).href);
    ort.env.wasm.numThreads = o.threads;
    ort.env.wasm.simd = true;
    version = ort.env.versions?.web ?? "?";
    sessionOptions.executionProviders = ["wasm"];
  }
  const model = path.join(onnxDir, MODELS[modelKey]);
  const session = await ort.InferenceSession.create(kind === "ort-node" ? model : new Uint8Array(fs.readFileSync(model)), sessionOptions);
  const feeds = {
    sample: new ort.Tensor("float32", io.sample.data, io.sample.shape),
    timestep: new ort.Tensor("int64", io.timestep.data, io.timestep.shape),
    encoder_hidden_states: new ort.Tensor("float32", io.encoder_hidden_states.data, io.encoder_hidden_states.shape),
  };
  let out;
  for (let i = 0; i < o.warmup; i++) out = await session.run(feeds);
  const cpu0 = process.cpuUsage();
  const seconds = [];
  for (let i = 0; i < o.iters; i++) {
    const t0 = performance.now();
    out = await session.run(feeds);
    seconds.push((performance.now() - t0) / 1000);
  }
  const cpu = process.cpuUsage(cpu0);
  const y = out.out_sample.data;
  const ref = io.out_sample.data;
  let err = 0;
  for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(y[i] - ref[i]));
  await session.release?.();
  const wall = seconds.reduce((a, b) => a + b, 0);
  return {
    runtime: kind,
    version,
    model: modelKey,
    threads: o.threads,
    seconds_per_call: median(seconds),
    seconds_min: Math.min(...seconds),
    iters: o.iters,
    warmup: o.warmup,
    max_abs_err_vs_pytorch: err,
    cpu_share: Math.round(((cpu.user + cpu.system) / 1e6 / (wall * o.threads)) * 1000) / 1000,
    rss_bytes: process.memoryUsage().rss,
  };
}

// ---------------------------------------------------------------------------------------------------
// stepq (its own CLI, in a child process)

function runStepq(kind, precision, o) {
  const args = ["bench", "unet", "--config", "fashion", "--precision", precision, "--iters", String(o.iters), "--warmup", String(o.warmup), "--threads", String(o.threads), "--json", "-q"];
  let cmd;
  let argv;
  if (kind === "stepq-node") {
    if (!fs.existsSync(path.join(root, "dist", "cli.js"))) return { error: "dist/cli.js missing: run npm run build" };
    cmd = process.execPath;
    argv = [path.join(root, "bin", "stepq.js"), ...args];
  } else {
    cmd = path.join(root, "node_modules", ".bin", "deno");
    if (!fs.existsSync(cmd)) return { error: "deno not installed (npm ci installs it)" };
    // --no-liftoff as in bench/sd15.mjs: otherwise a long kernel call can stay in V8's baseline tier
    argv = ["run", "-A", "--v8-flags=--no-liftoff", path.join(root, "src", "cli", "main.ts"), ...args];
  }
  const r = spawnSync(cmd, argv, { cwd: root, encoding: "utf8", timeout: 30 * 60_000 });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || `exit ${r.status}`).trim().split("\n").pop() };
  const j = JSON.parse(r.stdout.trim().split("\n").pop());
  return {
    runtime: kind,
    version: j.runtime,
    model: precision === "fp32" ? "fp32" : precision,
    threads: j.threads,
    simd: j.simd,
    seconds_per_call: j.seconds_per_call,
    seconds_min: j.seconds_min,
    iters: j.iters,
    warmup: j.warmup,
    cpu_share: j.cpu_share,
    peak_bytes: j.peak_bytes,
    rss_bytes: j.rss_bytes,
  };
}

// ---------------------------------------------------------------------------------------------------

function cpuModel() {
  try {
    const m = /model name\s*:\s*(.+)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8"));
    if (m) return m[1].trim();
  } catch {
    /* not Linux */
  }
  return os.cpus()[0]?.model ?? "unknown";
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.one) {
    const [kind, model] = o.one.split(":");
    const r = await measureOrt(kind, model, o);
    process.stdout.write(JSON.stringify(r) + "\n");
    process.exit(0); // ort-web keeps worker threads alive
  }
  const want = (k) => !o.only || o.only.includes(k);
  if ((want("ort-node") || want("ort-web")) && !fs.existsSync(path.join(peersDir, "node_modules")))
    throw new Error("bench/peers/node_modules missing: ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix bench/peers");
  for (const f of Object.values(MODELS)) if (!fs.existsSync(path.join(onnxDir, f))) throw new Error(`${path.join(onnxDir, f)} not found (set STEPQ_SHARED)`);

  const rows = [];
  const log = (s) => process.stderr.write(s + "\n");
  const record = (label, r) => {
    rows.push({ label, ...r });
    log(r.error ? `${label}: ${r.error}` : `${label}: ${(r.seconds_per_call * 1000).toFixed(2)} ms/call median (${(r.seconds_min * 1000).toFixed(2)} min), CPU share ${r.cpu_share}`);
  };
  for (const kind of ["stepq-node", "stepq-deno"]) {
    if (!want(kind)) continue;
    for (const p of ["fp32", "bf16", "int8"]) record(`${kind} ${p}`, runStepq(kind, p, o));
  }
  for (const kind of ["ort-node", "ort-web"]) {
    if (!want(kind)) continue;
    for (const m of Object.keys(MODELS)) {
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--one", `${kind}:${m}`, "--iters", String(o.iters), "--warmup", String(o.warmup), "--threads", String(o.threads)], {
        encoding: "utf8",
        timeout: 30 * 60_000,
      });
      if (r.status !== 0) record(`${kind} ${m}`, { error: (r.stderr || `exit ${r.status}`).trim().split("\n").pop() });
      else record(`${kind} ${m}`, JSON.parse(r.stdout.trim().split("\n").pop()));
    }
  }

  // table: every row's time relative to stepq fp32 under Node (and to the peer of the same precision)
  const base = rows.find((r) => r.label === "stepq-node fp32" && !r.error) ?? rows.find((r) => r.label === "stepq-deno fp32" && !r.error);
  const lines = [];
  const head = `${"runtime".padEnd(22)} ${"weights".padEnd(8)} ${"ms/call".padStart(9)} ${"min ms".padStart(8)} ${"÷ " + (base?.label ?? "stepq").padEnd(16)} ${"CPU".padStart(5)}  note`;
  lines.push(head, "-".repeat(head.length + 10));
  for (const r of rows) {
    const name = r.label.split(" ")[0];
    const model = r.label.split(" ")[1];
    if (r.error) {
      lines.push(`${name.padEnd(22)} ${model.padEnd(8)} ${"—".padStart(9)} ${"—".padStart(8)} ${"—".padStart(18)} ${"".padStart(5)}  ${r.error.slice(0, 110)}`);
      continue;
    }
    const ratio = base ? (r.seconds_per_call / base.seconds_per_call).toFixed(2) : "—";
    const note = r.max_abs_err_vs_pytorch !== undefined ? `${r.version}, max |err| vs PyTorch ${r.max_abs_err_vs_pytorch.toExponential(1)}` : `${r.version}, ${r.simd} SIMD`;
    lines.push(
      `${name.padEnd(22)} ${model.padEnd(8)} ${(r.seconds_per_call * 1000).toFixed(2).padStart(9)} ${(r.seconds_min * 1000).toFixed(2).padStart(8)} ${ratio.padStart(18)} ${(r.cpu_share === null || r.cpu_share === undefined ? "?" : Math.round(r.cpu_share * 100) + "%").padStart(5)}  ${note}`,
    );
  }
  const machine = { cpu: cpuModel(), cores: os.cpus().length, memory_gib: Math.round(os.totalmem() / 2 ** 30), node: process.versions.node, load_average: os.loadavg()[0] };
  const out = [
    `fashion-sd-tiny UNet, batch 2, 8x8x4 latents, 77x64 context; ${o.threads} threads; ${o.warmup} warm-up + ${o.iters} timed calls each`,
    `machine: ${machine.cpu}, ${machine.cores} cores; load average at the end ${machine.load_average.toFixed(2)}`,
    "",
    ...lines,
    "",
    `ratio column: time of the row ÷ time of ${base?.label ?? "(no stepq row)"}: below 1 = faster than stepq.`,
    "CPU: process CPU time during the timed calls ÷ (wall time x threads); well below 100% means other processes took the cores.",
  ].join("\n");
  console.log(out);
  const resDir = path.join(here, "results");
  fs.mkdirSync(resDir, { recursive: true });
  fs.writeFileSync(path.join(resDir, "peers.json"), JSON.stringify({ date: new Date().toISOString(), machine, options: { iters: o.iters, warmup: o.warmup, threads: o.threads }, rows }, null, 1) + "\n");
  log(`wrote ${path.relative(process.cwd(), path.join(resDir, "peers.json"))}`);
}

main().catch((e) => {
  console.error(`peers: ${e?.stack ?? e}`);
  process.exit(1);
});
