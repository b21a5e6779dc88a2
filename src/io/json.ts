import { readText, SourceError } from "./source.ts";

/** JSON.parse that also accepts Python json's bare Infinity, -Infinity and NaN (diffusers writes them into configs). */
export function parsePythonJson(text: string): any {
  const SENTINEL = "\u0000pyjson:";
  // Strings are matched first so their contents are left alone.
  const fixed = text.replace(/"(?:[^"\\]|\\.)*"|-?Infinity|NaN/g, (m) => (m[0] === '"' ? m : JSON.stringify(SENTINEL + m)));
  return JSON.parse(fixed, (_k, v) => (typeof v === "string" && v.startsWith(SENTINEL) ? Number(v.slice(SENTINEL.length)) : v));
}

/**
 * Why `text` is not JSON, in one line that does not echo the text: V8's messages quote the start of the input
 * ("Unexpected token 'r', "root:x:0:0"... is not valid JSON"), which for a config path pointing at some other
 * file would print that file's first bytes. Positions become line and column.
 */
export function describeJsonError(text: string, e: unknown): string {
  if (/[\u0000-\u0008\u000e-\u001f]/.test(text.slice(0, 4096))) return "binary data, not JSON text";
  let m = String((e as Error)?.message ?? e);
  m = m.replace(/,\s*"[^]*?"(\.\.\.)? is not valid JSON$/, "");
  m = m.replace(/'([^]*?)'/, (_all, c: string) => (/^[\x20-\x7e]+$/.test(c) ? `'${c}'` : `U+${(c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`));
  const pos = /at position (\d+)(?! \(line)/.exec(m);
  if (pos) {
    const before = text.slice(0, Number(pos[1]));
    const line = before.split("\n").length;
    m = m.replace(/at position \d+/, `at line ${line} column ${before.length - before.lastIndexOf("\n")}`);
  } else m = m.replace(/at position \d+ \((line \d+ column \d+)\)/, "at $1");
  return m.split("\n")[0].slice(0, 200);
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
    throw new Err(`${loc}: invalid JSON (${describeJsonError(text, e)})`);
  }
  if (!j || typeof j !== "object" || Array.isArray(j)) throw new Err(`${loc}: expected a JSON object`);
  return j as Record<string, any>;
}
