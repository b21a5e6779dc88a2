#!/usr/bin/env node
// Launcher for the stepq CLI (dist/cli.js). When this Node needs V8 flags for the engine (Node 20:
// bin/engine-flags.js) it re-runs Node with them, forwards SIGINT/SIGTERM/SIGHUP to that child and exits
// with the child's status (128 + signal number if a signal killed it). Otherwise the CLI runs in this
// process. STEPQ_NO_RESPAWN=1 never re-runs Node (the engine's probe then picks baseline SIMD if relaxed
// SIMD is unusable); STEPQ_RESPAWN=1 always does (tests of the signal path).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import { fileURLToPath } from "node:url";
import { engineFlags } from "./engine-flags.js";

const cliUrl = new URL("../dist/cli.js", import.meta.url);
const cli = fileURLToPath(cliUrl);
if (!existsSync(cli)) {
  console.error("stepq: dist/cli.js not found: run `npm run build` first");
  process.exit(1);
}
const missing = engineFlags().filter((f) => !process.execArgv.includes(f));
// (under Deno, process.execPath is deno: never re-run there)
const respawn = !process.env.STEPQ_NO_RESPAWN && !process.versions.deno && (missing.length > 0 || !!process.env.STEPQ_RESPAWN);

if (!respawn) {
  // dist/cli.js runs main() itself only when it is the entry script, so call it here
  const { main } = await import(cliUrl.href);
  let code = 1;
  try {
    code = await main(process.argv.slice(2));
  } catch (e) {
    console.error(`stepq: ${e?.stack ?? e}`);
  }
  process.exitCode = code;
  // the commands close their engines; should anything still hold the event loop, exit anyway
  setTimeout(() => process.exit(code), 2000).unref();
} else {
  const child = spawn(process.execPath, [...process.execArgv, ...missing, cli, ...process.argv.slice(2)], { stdio: "inherit" });
  // Ctrl-C reaches the child too (same process group); a second SIGINT to a process that is exiting is harmless
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => child.kill(sig));
  child.on("error", (e) => {
    console.error(`stepq: could not run ${process.execPath}: ${e.message}`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => {
    if (signal) {
      console.error(`stepq: killed by ${signal}${signal === "SIGKILL" ? " (out of memory?)" : ""}`);
      process.exit(128 + (constants.signals[signal] ?? 0));
    }
    process.exit(code ?? 1);
  });
}
