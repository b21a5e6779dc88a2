/** JSON.parse that also accepts Python json's bare Infinity, -Infinity and NaN (diffusers writes them into configs). */
export function parsePythonJson(text: string): any {
  const SENTINEL = "\u0000pyjson:";
  // Strings are matched first so their contents are left alone.
  const fixed = text.replace(/"(?:[^"\\]|\\.)*"|-?Infinity|NaN/g, (m) => (m[0] === '"' ? m : JSON.stringify(SENTINEL + m)));
  return JSON.parse(fixed, (_k, v) => (typeof v === "string" && v.startsWith(SENTINEL) ? Number(v.slice(SENTINEL.length)) : v));
}
