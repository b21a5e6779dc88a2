// Small helpers for the CLI: option parsing with clear errors, number checks, and the usage text.
import * as fs from "node:fs";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { resolveDefaultModel } from "../io/places.ts";

export class UsageError extends Error {}

export function parse(argv: string[], options: NonNullable<ParseArgsConfig["options"]>, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: "boolean", short: "h" } }, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^TypeError( \[[A-Z_]+\])?: /, ""));
  }
}

export function intOpt(value: string | undefined, name: string, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got "${value}"`);
  return n;
}

export function numOpt(value: string | undefined, name: string, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number from ${min} to ${max}, got "${value}"`);
  return n;
}

/** --memory accepts bytes or a size with a unit: 512M, 3.5G. */
export function sizeOpt(value: string | undefined, def: number): number {
  if (value === undefined) return def;
  const m = /^(\d+(?:\.\d+)?)([KMG]i?B?)?$/i.exec(value.trim());
  if (!m) throw new UsageError(`--memory must be a size like 512M or 3.5G, got "${value}"`);
  const unit = (m[2] ?? "").toUpperCase()[0];
  const mult = unit === "K" ? 1024 : unit === "M" ? 1024 ** 2 : unit === "G" ? 1024 ** 3 : 1;
  return Math.round(Number(m[1]) * mult);
}

/** The options every engine-running command takes: --threads, --memory, --simd. */
export const ENGINE_OPTIONS = {
  threads: { type: "string", short: "t" },
  memory: { type: "string" },
  simd: { type: "string" },
} as const;

export interface EngineFlags {
  threads?: number;
  memoryBytes?: number;
  simd: "auto" | "relaxed" | "baseline";
}

/** Validated --threads (1..256), --memory (16M..4G) and --simd (auto | relaxed | baseline). */
export function engineFlags(v: { threads?: unknown; memory?: unknown; simd?: unknown }): EngineFlags {
  const threads = v.threads === undefined ? undefined : intOpt(v.threads as string, "threads", 1, 1, 256);
  const memoryBytes = v.memory === undefined ? undefined : sizeOpt(v.memory as string, 0);
  if (memoryBytes !== undefined && (memoryBytes < 16 * 1024 ** 2 || memoryBytes > 4 * 1024 ** 3)) throw new UsageError(`--memory must be from 16M to 4G, got "${v.memory}"`);
  const simd = (v.simd as string | undefined) ?? "auto";
  if (!["auto", "relaxed", "baseline"].includes(simd)) throw new UsageError(`--simd must be auto, relaxed or baseline, got "${simd}"`);
  return { threads, memoryBytes, simd: simd as EngineFlags["simd"] };
}

/**
 * An input file named by a flag (--latents, --calibration, --prompts, ...): it must exist and be a regular
 * file, else a usage error naming the flag (exit 2). Returns the path.
 */
export function inputFile(flag: string, file: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new UsageError(`${flag} ${file}: no such file`);
  }
  if (st.isDirectory()) throw new UsageError(`${flag} ${file}: is a folder, not a file`);
  if (!st.isFile()) throw new UsageError(`${flag} ${file}: not a regular file (a device, FIFO or socket)`);
  return file;
}

/**
 * The --model folder (a path that must be an existing folder, or an http(s) URL a model is served from), or the
 * default model when none is given. A missing folder is a usage error (exit 2) like any input a flag names.
 */
export function modelOption(value: unknown): string {
  if (value === undefined) return resolveDefaultModel();
  const dir = String(value);
  if (/^https?:\/\//i.test(dir)) return dir;
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new UsageError(`--model ${dir}: model folder not found`);
  }
  if (!st.isDirectory()) throw new UsageError(`--model ${dir}: not a folder (expected a diffusers pipeline folder with model_index.json)`);
  return dir;
}

/** --force: the option of every command that writes files (see src/io/outputs.ts for what it allows). */
export const FORCE_OPTION = { force: { type: "boolean" } } as const;
