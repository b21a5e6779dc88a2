// Finds and reads the built kernel modules (build/stepq-{simd,relaxed}.wasm) from src/runtime or dist/.
const FILES = { baseline: "stepq-simd.wasm", relaxed: "stepq-relaxed.wasm" } as const;

export async function loadKernelBytes(variant: keyof typeof FILES): Promise<Uint8Array<ArrayBuffer>> {
  // dist/*.js sits one level below the package root, src/runtime/*.ts two: try the nearer one first so a
  // bundle never picks up a stale build/ further up
  const candidates = [new URL(`../build/${FILES[variant]}`, import.meta.url), new URL(`../../build/${FILES[variant]}`, import.meta.url)];
  if (typeof process !== "undefined" && process.versions?.node) {
    const fs = await import("node:fs");
    for (const u of candidates) if (fs.existsSync(u)) return new Uint8Array(fs.readFileSync(u));
    throw new Error(`kernel module ${FILES[variant]} not found (looked in ${candidates.map((u) => u.pathname).join(", ")}): run \`npm run build\` first`);
  }
  for (const u of candidates) {
    const r = await fetch(u);
    if (r.ok) return new Uint8Array(await r.arrayBuffer());
  }
  throw new Error(`kernel module ${FILES[variant]} not found: run \`npm run build\` first`);
}
