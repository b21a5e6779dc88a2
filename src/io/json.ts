import { readText, SourceError } from "./source.ts";

/** JSON.parse that also accepts Python json's bare Infinity, -Infinity and NaN (diffusers writes them into configs). */
export function parsePythonJson(text: string): any {
  const SENTINEL = "\u0000pyjson:";
  // Strings are matched first so their contents are left alone.
  const fixed = text.replace(/"(?:[^"\\]|\\.)*"|-?Infinity|NaN/g, (m) => (m[0] === '"' ? m : JSON.stringify(SENTINEL + m)));
  return JSON.parse(fixed, (_k, v) => (typeof v === "string" && v.startsWith(SENTINEL) ? Number(v.slice(SENTINEL.length)) : v));
}

/** Config-sized JSON files: anything bigger is not a config (a wrong path, or an attack). */
export const MAX_JSON_BYTES = 16 * 1024 * 1024;

/**
 * Reads and parses a JSON object file (a path or URL; Python's Infinity/NaN accepted). Errors name the file
 * (not found, not a regular file, too large, invalid JSON, not an object) and are thrown as `Err`.
 */
export async function readJsonObject(loc: string, Err: new (m: string) => Error = Error, maxBytes = MAX_JSON_BYTES): Promise<Record<string, any>> {
  let text: string;
  try {
    text = await readText(loc, { maxBytes, what: "a JSON file" });
  } catch (e) {
    throw e instanceof SourceError ? new Err(e.message) : e;
  }
  let j: unknown;
  try {
    j = parsePythonJson(text);
  } catch (e) {
    throw new Err(`${loc}: invalid JSON (${(e as Error).message})`);
  }
  if (!j || typeof j !== "object" || Array.isArray(j)) throw new Err(`${loc}: expected a JSON object`);
  return j as Record<string, any>;
}
