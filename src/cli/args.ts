// Small helpers for the CLI: option parsing with clear errors, number checks, and the usage text.
import { parseArgs, type ParseArgsConfig } from "node:util";

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
