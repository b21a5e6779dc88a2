#!/usr/bin/env node
// The SD 1.5 UNet rows of docs/performance.md: `stepq bench unet --config sd15` (random weights, batch 2,
// 64x64 latents) for each precision under Node and under Deno, each run in its own process, one after the
// other. Prints a table (median and min seconds per call, engine peak, RSS, CPU share) and writes every
// run's JSON to bench/results/sd15.json.
//
// Needs `npm run build` first (Node runs dist/cli.js through bin/stepq.js; Deno runs src/cli/main.ts with
// --v8-flags=--no-liftoff, its fastest setting here: Deno's V8 keeps a long-running call in the baseline
// tier otherwise).
// Run: node bench/sd15.mjs [--precisions int8,bf16,fp32] [--runtimes node,deno] [--threads 2] [--iters 3]
//                          [--warmup 1] [--size 64] [--profile]
// A runtime NAME=PATH (e.g. node24=/work/tools/node24) runs that Node binary on dist/cli.js directly with
// --no-liftoff (and --experimental-wasm-relaxed-simd where it still exists), without the launcher.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const HELP = fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n");

function parseArgs(argv) {
  const o = { precisions: ["int8", "bf16", "fp32"], runtimes: ["node", "deno"], threads: 2, iters: 3, warmup: 1, size: 64, profile: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "-h" || a === "--help") {
      console.log(HELP);
      process.exit(0);
    } else if (a === "--precisions") o.precisions = val().split(",");
    else if (a === "--runtimes") o.runtimes = val().split(",");
    else if (a === "--threads") o.threads = Number(val());
    else if (a === "--iters") o.iters = Number(val());
    else if (a === "--warmup") o.warmup = Number(val());
    else if (a === "--size") o.size = Number(val());
    else if (a === "--profile") o.profile = true;
    else throw new Error(`unknown option ${a} (see --help)`);
  }
  for (const p of o.precisions) if (!["fp32", "bf16", "int8"].includes(p)) throw new Error(`bad precision ${p}`);
  for (const r of o.runtimes) if (!["node", "deno"].includes(r) && !/^node[\w.-]*=/.test(r)) throw new Error(`bad runtime ${r}`);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
if (!fs.existsSync(path.join(root, "dist", "cli.js"))) throw new Error("dist/cli.js missing: run `npm run build` first");
const deno = path.join(root, "node_modules", ".bin", "deno");

/** A Node binary on dist/cli.js: --no-liftoff, plus the relaxed-SIMD flag where that Node still has it. */
function nodeBinary(exe, args) {
  const flagged = spawnSync(exe, ["--experimental-wasm-relaxed-simd", "-e", "0"]).status === 0;
  return [exe, [...(flagged ? ["--experimental-wasm-relaxed-simd"] : []), "--no-liftoff", path.join(root, "dist", "cli.js"), ...args]];
}

const runs = [];
for (const runtime of opts.runtimes)
  for (const precision of opts.precisions) {
    const args = ["bench", "unet", "--config", "sd15", "--precision", precision, "--threads", String(opts.threads), "--iters", String(opts.iters), "--warmup", String(opts.warmup), "--size", String(opts.size), "--json", ...(opts.profile ? ["--profile"] : [])];
    const [cmd, full] = runtime === "node" ? [process.execPath, [path.join(root, "bin", "stepq.js"), ...args]] : runtime === "deno" ? [deno, ["run", "-A", "--v8-flags=--no-liftoff", path.join(root, "src", "cli", "main.ts"), ...args]] : nodeBinary(runtime.split("=")[1], args);
    process.stderr.write(`sd15: ${runtime} ${precision} ...\n`);
    const r = spawnSync(cmd, full, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 26 });
    if (r.status !== 0) {
      runs.push({ runtime, precision, error: `exit ${r.status}` });
      continue;
    }
    runs.push({ runtime, precision, command: [path.basename(cmd), ...full.map((s) => path.relative(root, s) || s)].join(" "), result: JSON.parse(r.stdout) });
  }

const mib = (b) => (b / 2 ** 20).toFixed(0);
console.log(`SD 1.5 UNet, batch 2, ${opts.size}x${opts.size} latents, ${opts.threads} threads, ${os.cpus()[0]?.model} x${os.cpus().length}`);
console.log("runtime  precision  median s  min s    engine peak MiB  peak RSS MiB  CPU share  simd     int8 dot");
for (const r of runs) {
  if (r.error) {
    console.log(`${r.runtime.padEnd(9)}${r.precision.padEnd(11)}failed (${r.error})`);
    continue;
  }
  const j = r.result;
  console.log(
    `${r.runtime.split("=")[0].padEnd(9)}${r.precision.padEnd(11)}${j.seconds_per_call.toFixed(2).padEnd(10)}${j.seconds_min.toFixed(2).padEnd(9)}${mib(j.peak_bytes).padEnd(17)}${(j.max_rss_bytes ? mib(j.max_rss_bytes) : "-").padEnd(14)}${(j.cpu_share ?? 0).toFixed(2).padEnd(11)}${j.simd.padEnd(9)}${j.int8_dot ?? ""}`,
  );
}
fs.mkdirSync(path.join(root, "bench", "results"), { recursive: true });
fs.writeFileSync(path.join(root, "bench", "results", "sd15.json"), JSON.stringify({ date: new Date().toISOString(), options: opts, runs }, null, 1) + "\n");
console.log("wrote bench/results/sd15.json");
