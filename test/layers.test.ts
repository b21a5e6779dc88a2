// The layer order of docs/architecture.md, checked on the import statements of every source file:
//   assembly/abi.ts → src/runtime → src/io, src/nn → src/models → src/pipeline → src/train → src/tools
//   → weights-tools → src/cli, src/browser (the demo page and its engine worker: the library's browser users)
// A file may import its own layer and the layers below it, never above; io and nn (the same level) do not
// import each other; there are no import cycles; and only src/cli imports node: modules, except that
// src/runtime/env.ts loads them dynamically (the one place that knows the runtime).
import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";

const root = path.resolve(import.meta.dirname, "..");

const LAYERS: [prefix: string, rank: number][] = [
  ["assembly/abi.ts", 0],
  ["src/runtime/", 1],
  ["src/io/", 2],
  ["src/nn/", 2],
  ["src/models/", 3],
  ["src/pipeline/", 4],
  ["src/train/", 5],
  ["src/tools/", 6],
  ["src/index.ts", 7],
  ["weights-tools/", 7],
  ["src/cli/", 8],
  ["src/browser/", 8],
];

function layerOf(file: string): { name: string; rank: number } | null {
  for (const [p, rank] of LAYERS) if (file === p || (p.endsWith("/") && file.startsWith(p))) return { name: p, rank };
  return null;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...sources(rel));
    else if (/\.(ts|js|mjs)$/.test(e.name)) out.push(rel);
  }
  return out;
}

const files = [...sources("src"), ...sources("weights-tools")];

/**
 * Static imports and re-exports and dynamic imports. typeOnly: `import type` or only `type` names (erased at
 * run time: they count for the layer order, not for cycles).
 */
function importsOf(file: string): { spec: string; dynamic: boolean; typeOnly: boolean }[] {
  const text = fs.readFileSync(path.join(root, file), "utf8");
  const out: { spec: string; dynamic: boolean; typeOnly: boolean }[] = [];
  for (const m of text.matchAll(/^\s*(import|export)\s([^;]*?)\sfrom\s+"([^"]+)"/gm)) {
    const clause = m[2].trim();
    const names = /^\{([^}]*)\}$/.exec(clause)?.[1].split(",").map((n) => n.trim()).filter(Boolean) ?? [];
    const typeOnly = /^type\s/.test(clause) || (names.length > 0 && names.every((n) => n.startsWith("type ")));
    out.push({ spec: m[3], dynamic: false, typeOnly });
  }
  for (const m of text.matchAll(/^\s*import\s+"([^"]+)"/gm)) out.push({ spec: m[1], dynamic: false, typeOnly: false });
  for (const m of text.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g)) out.push({ spec: m[1], dynamic: true, typeOnly: false });
  return out;
}

function resolve(from: string, spec: string): string {
  return path.posix.normalize(path.posix.join(path.posix.dirname(from), spec));
}

describe("layers", () => {
  it("every source file belongs to a layer", () => {
    const orphans = files.filter((f) => !layerOf(f) && !f.startsWith("src/nn/reference/"));
    expect(orphans).toEqual([]);
  });

  it("no file imports a layer above its own, and io and nn do not import each other", () => {
    const bad: string[] = [];
    for (const f of files) {
      const me = layerOf(f) ?? { name: "src/nn/", rank: 2 }; // nn/reference is nn
      for (const { spec } of importsOf(f)) {
        if (!spec.startsWith(".")) continue;
        const target = resolve(f, spec);
        const them = layerOf(target);
        if (!them) {
          if (!target.startsWith("src/nn/reference/")) bad.push(`${f} imports ${target}, which is in no layer`);
          continue;
        }
        if (them.rank > me.rank) bad.push(`${f} (${me.name}) imports ${target} (${them.name}, a higher layer)`);
        else if (them.rank === me.rank && them.name !== me.name) bad.push(`${f} (${me.name}) imports ${target} (${them.name}, a sibling layer)`);
      }
    }
    expect(bad).toEqual([]);
  });

  it("no import cycles (of imports that exist at run time)", () => {
    const graph = new Map<string, string[]>();
    for (const f of files)
      graph.set(f, importsOf(f).filter((i) => i.spec.startsWith(".") && !i.typeOnly).map((i) => resolve(f, i.spec)).filter((t) => files.includes(t)));
    const state = new Map<string, number>(); // 1 visiting, 2 done
    const cycles: string[] = [];
    const visit = (f: string, stack: string[]) => {
      state.set(f, 1);
      for (const t of graph.get(f) ?? []) {
        if (state.get(t) === 1) cycles.push([...stack.slice(stack.indexOf(t)), t].join(" -> "));
        else if (!state.get(t)) visit(t, [...stack, t]);
      }
      state.set(f, 2);
    };
    for (const f of files) if (!state.get(f)) visit(f, [f]);
    expect(cycles).toEqual([]);
  });

  it("src/browser uses the library only through src/index.ts (its bundle maps that import to stepq.browser.js)", () => {
    const bad: string[] = [];
    for (const f of files.filter((f) => f.startsWith("src/browser/")))
      for (const { spec } of importsOf(f)) if (spec !== "../index.ts" && !spec.startsWith("./")) bad.push(`${f} imports ${spec}`);
    expect(bad).toEqual([]);
  });

  it("only src/cli and weights-tools import node: modules; below them only runtime/env.ts, dynamically", () => {
    const bad: string[] = [];
    for (const f of files) {
      if (f.startsWith("src/cli/") || f.startsWith("weights-tools/")) continue;
      for (const { spec, dynamic } of importsOf(f))
        if (spec.startsWith("node:") && !(dynamic && (f === "src/runtime/env.ts" || f === "src/runtime/worker.js"))) bad.push(`${f} imports ${spec}`);
    }
    expect(bad).toEqual([]);
  });
});
