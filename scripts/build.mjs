// Build: compiles assembly/ into two kernel modules (baseline SIMD and SIMD + relaxed SIMD) with asc,
// then bundles src/ with esbuild into dist/ (library, CLI) and copies the worker script.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const asc = path.join(root, "node_modules", ".bin", "asc");
fs.mkdirSync(path.join(root, "build"), { recursive: true });
// --dist-only: bundle dist/ without recompiling the kernels (tests that run dist/cli.js refresh it this way)
for (const target of process.argv.includes("--dist-only") ? [] : ["simd", "relaxed"]) {
  const t0 = Date.now();
  execFileSync(asc, ["assembly/index.ts", "--config", "asconfig.json", "--target", target], { cwd: root, stdio: "inherit" });
  console.log(`build: build/stepq-${target}.wasm (${fs.statSync(path.join(root, "build", `stepq-${target}.wasm`)).size} bytes, ${Date.now() - t0} ms)`);
}

if (!process.argv.includes("--wasm-only")) {
  const esbuild = await import("esbuild");
  const entryPoints = { index: path.join(root, "src/index.ts"), cli: path.join(root, "src/cli/main.ts") };
  await esbuild.build({
    entryPoints,
    outdir: path.join(root, "dist"),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    sourcemap: true,
    logLevel: "warning",
  });
  fs.copyFileSync(path.join(root, "src/runtime/worker.js"), path.join(root, "dist/worker.js"));
  // the library for browsers: no Node shims; node: imports (reached only on Node/Deno code paths, see
  // src/runtime/env.ts) stay external, and pngjs comes as its own self-contained browser build, which also
  // writes the PNGs there with the pako it carries (src/io/png.ts: the Node/Deno-only imports of pngjs's
  // packer and of pako become null)
  const pngjsForBrowsers = {
    name: "pngjs-for-browsers",
    setup(b) {
      b.onResolve({ filter: /^(pngjs\/lib\/packer\.js|pako)$/ }, (a) => ({ path: a.path, namespace: "stepq-null" }));
      b.onLoad({ filter: /.*/, namespace: "stepq-null" }, () => ({ contents: "export default null;", loader: "js" }));
    },
  };
  await esbuild.build({
    entryPoints: { "stepq.browser": path.join(root, "src/index.ts") },
    outdir: path.join(root, "dist"),
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    external: ["node:*"],
    alias: { pngjs: "pngjs/browser.js" },
    plugins: [pngjsForBrowsers],
    sourcemap: true,
    logLevel: "warning",
  });
  // the demo page (src/browser): its script and its engine worker, which imports the library bundle above
  // as an application would ("./stepq.browser.js" beside it) rather than carrying a second copy
  const libraryAsBundle = {
    name: "library-as-bundle",
    setup(b) {
      b.onResolve({ filter: /^\.\.\/index\.ts$/ }, () => ({ path: "./stepq.browser.js", external: true }));
    },
  };
  await esbuild.build({
    entryPoints: { demo: path.join(root, "src/browser/page.ts"), "demo-worker": path.join(root, "src/browser/engine-worker.ts") },
    outdir: path.join(root, "dist"),
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    plugins: [libraryAsBundle],
    sourcemap: true,
    logLevel: "warning",
  });
  fs.copyFileSync(path.join(root, "src/browser/index.html"), path.join(root, "dist/demo.html"));
  console.log("build: dist/ bundled (node: index.js, cli.js; browser: stepq.browser.js; demo page: demo.html, demo.js, demo-worker.js)");
}
