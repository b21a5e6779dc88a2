#!/usr/bin/env node
// Launcher for the stepq CLI. Relaxed SIMD is behind a flag on Node 20, and Node's baseline wasm
// compiler (Liftoff) computes relaxed_dot wrongly, so re-run Node with both flags set; the engine's
// startup probe still checks and falls back to baseline SIMD if anything is off.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
if (!existsSync(cli)) {
  console.error("stepq: dist/cli.js not found: run `npm run build` first");
  process.exit(1);
}
const flags = ["--experimental-wasm-relaxed-simd", "--no-liftoff"];
const major = Number(process.versions.node.split(".")[0]);
// Node 22+ may enable relaxed SIMD by default; the flag is accepted either way.
const need = flags.filter((f) => !process.execArgv.includes(f));
if (need.length && !process.env.STEPQ_NO_RESPAWN && major >= 20) {
  // Ctrl-C reaches the whole process group: the child decides what it means (stepq qat writes a checkpoint
  // first), so this launcher waits for it instead of dying at once
  process.on("SIGINT", () => {});
  const r = spawnSync(process.execPath, [...process.execArgv, ...need, cli, ...process.argv.slice(2)], { stdio: "inherit" });
  if (r.error) throw r.error;
  process.exit(r.status ?? (r.signal ? 1 : 0));
} else {
  await import(cli);
}
