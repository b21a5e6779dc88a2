// stepq verify: checks this engine against golden reference vectors (see src/pipeline/verify.ts).
import * as fs from "node:fs";
import { parse, intOpt, UsageError } from "./args.ts";
import { runVerify, formatResult } from "../tools/verify.ts";

export const summary = "check the engine against golden reference vectors (cases.json, e2e.json)";

export const usage = `Usage: stepq verify DIR [options]

Runs every case in DIR/cases.json (+ cases.safetensors) and DIR/e2e.json (+ e2e.safetensors) and prints
one line per case:  PASS unet unet-sd15-tiny#0  max_err 3.1e-06 <= 2e-04
Errors are max|actual - expected| / max|expected|, against each case's tolerance. Model folders named by
the cases are looked up in DIR, then in each --models folder. Exit code 1 if any case fails.

Options:
  --models DIR     another folder holding the models the cases name (repeatable)
  --threads N      worker threads including the main one (default: all cores)
  --simd MODE      auto | relaxed | baseline (default auto)
  --only TEXT      run only cases whose kind or name contains TEXT (repeatable), e.g. --only unet; a TEXT
                   that matches no case is a usage error (exit 2)
  -q, --quiet      print failures and the summary only
  -h, --help       show this help

Example:
  stepq verify ../shared/golden --models ../shared/models`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      models: { type: "string", multiple: true },
      threads: { type: "string", short: "t" },
      simd: { type: "string" },
      only: { type: "string", multiple: true },
      quiet: { type: "boolean", short: "q" },
    },
    true,
  );
  const v = values as Record<string, string | boolean | string[] | undefined>;
  if (positionals.length !== 1) throw new UsageError(positionals.length ? `expected one DIR, got ${positionals.length}` : "DIR is required");
  const dir = positionals[0];
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UsageError(`${dir}: not a folder`);
  const threads = v.threads === undefined ? undefined : intOpt(v.threads as string, "threads", 1, 1, 256);
  const simd = (v.simd as string | undefined) ?? "auto";
  if (!["auto", "relaxed", "baseline"].includes(simd)) throw new UsageError(`--simd must be auto, relaxed or baseline, got "${simd}"`);
  const modelDirs = (v.models as string[] | undefined) ?? [];
  for (const m of modelDirs) if (!fs.existsSync(m)) throw new UsageError(`--models ${m}: not found`);
  const quiet = !!v.quiet;
  const t0 = performance.now();
  const res = await runVerify({
    dir,
    modelDirs,
    threads,
    simd: simd as "auto" | "relaxed" | "baseline",
    filter: v.only as string[] | undefined,
    onResult: (r) => {
      if (!quiet || !r.pass) process.stdout.write(formatResult(r) + "\n");
    },
    onProgress: quiet ? undefined : (m) => process.stderr.write(`verify: ${m}\n`),
  });
  for (const n of res.notes) process.stderr.write(`verify: note: ${n}\n`);
  if (res.unmatchedFilters.length) {
    const what = res.unmatchedFilters.map((f) => `"${f}"`).join(", ");
    if (!res.results.length) throw new UsageError(`--only ${what} matches no case (kinds: unet, vae, text_encoder, tokenizer, scheduler, e2e)`);
    process.stderr.write(`stepq verify: --only ${what} matched no case (see stepq verify --help)\n`);
    process.stdout.write(`verify: ${res.passed} passed, ${res.failed} failed (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
    return 2;
  }
  process.stdout.write(`verify: ${res.passed} passed, ${res.failed} failed (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
  return res.failed ? 1 : 0;
}
