// The one place that knows which JavaScript runtime stepq is on (Node, Deno or a browser) and what it
// offers: the host's file system and OS modules (Node and Deno: node:fs etc., loaded here once, never
// imported statically anywhere else below src/cli), the default thread count, how to start a kernel worker,
// where the kernel .wasm files are, and process statistics for benchmarks.
//
// Everything above src/runtime asks this module instead of testing globals itself, so a browser bundle of
// the library (esbuild --platform=browser, node:* left external) never runs a Node code path.

export type RuntimeKind = "node" | "deno" | "browser";

const g = globalThis as any;

/** The runtime this module is running on. Deno also has `process`, so it is told apart first. */
export const runtime: RuntimeKind = g.Deno?.version?.deno ? "deno" : g.process?.versions?.node ? "node" : "browser";

/** Node's modules as Node and Deno provide them. */
export interface HostModules {
  fs: typeof import("node:fs");
  path: typeof import("node:path");
  os: typeof import("node:os");
  zlib: typeof import("node:zlib");
  url: typeof import("node:url");
  process: typeof import("node:process");
}

async function loadHost(): Promise<HostModules | null> {
  if (runtime === "browser") return null;
  const [fs, path, os, zlib, url, proc] = await Promise.all([
    import("node:fs"), import("node:path"), import("node:os"), import("node:zlib"), import("node:url"), import("node:process"),
  ]);
  return { fs, path, os, zlib, url, process: proc.default };
}

const hostModules: HostModules | null = await loadHost();

/** Whether the host has a file system (Node, Deno). */
export const hasFileSystem = hostModules !== null;

/** The host's node: modules; throws in a browser, naming what needed them. */
export function host(what = "this operation"): HostModules {
  if (!hostModules) throw new Error(`${what} needs a file system (Node or Deno); in a browser, load models by URL`);
  return hostModules;
}

/** An environment variable (undefined in a browser or when unset). */
export function envVar(name: string): string | undefined {
  if (runtime === "deno") {
    try {
      return g.Deno.env.get(name);
    } catch {
      return undefined; // no --allow-env
    }
  }
  return g.process?.env?.[name];
}

/** "node 24.22.3", "deno 2.9.6" or the browser's user agent. */
export function runtimeName(): string {
  if (runtime === "deno") return `deno ${g.Deno.version.deno}`;
  if (runtime === "node") return `node ${g.process.versions.node}`;
  return `browser ${g.navigator?.userAgent ?? "unknown"}`;
}

/** The major version of Node (0 elsewhere). */
export function nodeMajor(): number {
  return runtime === "node" ? Number(String(g.process.versions.node).split(".")[0]) : 0;
}

/** The V8 version of the running runtime ("unknown" in browsers). */
export function v8Version(): string {
  return g.Deno?.version?.v8 ?? g.process?.versions?.v8 ?? "unknown";
}

/** Threads the machine offers (logical cores), 1 if unknown. */
export function defaultThreads(): number {
  const os = hostModules?.os;
  if (os?.availableParallelism) return os.availableParallelism();
  if (os?.cpus) return Math.max(1, os.cpus().length);
  return g.navigator?.hardwareConcurrency ?? 1;
}

/** The 1-minute load average (other processes competing for the cores make timings noisy); null where unavailable. */
export function loadAverage(): number | null {
  try {
    const l = hostModules!.os.loadavg()[0];
    return Number.isFinite(l) ? Math.round(l * 100) / 100 : null;
  } catch {
    return null;
  }
}

/** CPU time (user + system) of the whole process so far, in seconds; null where unavailable. */
export function cpuSeconds(): number | null {
  try {
    const u = g.process.cpuUsage();
    return (u.user + u.system) / 1e6;
  } catch {
    return null;
  }
}

/** Resident set size of the process now, in bytes (0 where unavailable). */
export function rssBytes(): number {
  try {
    return g.process.memoryUsage().rss;
  } catch {
    return g.Deno?.memoryUsage?.().rss ?? 0;
  }
}

/** Peak resident set size of the process so far (getrusage maxrss), in bytes; null where unavailable. */
export function maxRssBytes(): number | null {
  try {
    const kb = g.process.resourceUsage?.().maxRSS;
    return typeof kb === "number" && kb > 0 ? kb * 1024 : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------
// workers and kernel modules

/** What the thread pool needs of a started worker. */
export interface WorkerHandle {
  terminate(): void;
}

/**
 * Starts the kernel worker script at `url`, hands it `init` and resolves once it says it is ready. Node uses
 * worker_threads (unref'd, so an idle pool never keeps the process alive); Deno and browsers use module Web
 * Workers (Engine.close() terminates them).
 */
export async function startWorker(url: URL, init: object): Promise<WorkerHandle> {
  if (runtime === "node") {
    const { Worker } = await import("node:worker_threads");
    const w = new Worker(url, { workerData: init });
    w.unref();
    await new Promise<void>((resolve, reject) => {
      w.once("message", () => resolve());
      w.once("error", (e) => reject(new Error(`worker failed to start: ${e.message}`)));
    });
    return w;
  }
  const w = new g.Worker(url, { type: "module" });
  await new Promise<void>((resolve, reject) => {
    w.onmessage = () => resolve();
    w.onerror = (e: any) => reject(new Error(`worker failed to start: ${e.message ?? e}`));
    w.postMessage(init);
  });
  return w;
}

/** Whether this thread may block in Atomics.wait (browsers forbid it on the main thread). */
export function canBlock(): boolean {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
}

const KERNEL_FILES = { baseline: "stepq-simd.wasm", relaxed: "stepq-relaxed.wasm" } as const;
export type KernelBuild = keyof typeof KERNEL_FILES;

let kernelBase: URL | null = null;

/**
 * Where the kernel .wasm files are, for hosts that serve them from elsewhere (a browser page); by default they
 * are looked for in build/ next to this module's package (src/runtime/ or dist/).
 */
export function setKernelLocation(base: URL | string): void {
  kernelBase = new URL(base, g.location?.href);
}

/** The bytes of a built kernel module (build/stepq-{simd,relaxed}.wasm). */
export async function loadKernelBytes(variant: KernelBuild): Promise<Uint8Array<ArrayBuffer>> {
  const name = KERNEL_FILES[variant];
  // dist/*.js sits one level below the package root, src/runtime/*.ts two: try the nearer one first so a
  // bundle never picks up a stale build/ further up
  const candidates = kernelBase ? [new URL(name, kernelBase)] : [new URL(`../build/${name}`, import.meta.url), new URL(`../../build/${name}`, import.meta.url)];
  if (hostModules && candidates[0].protocol === "file:") {
    const { fs } = hostModules;
    for (const u of candidates) if (fs.existsSync(u)) return new Uint8Array(fs.readFileSync(u));
    throw new Error(`kernel module ${name} not found (looked in ${candidates.map((u) => u.pathname).join(", ")}): run \`npm run build\` first`);
  }
  for (const u of candidates) {
    const r = await fetch(u);
    if (r.ok) return new Uint8Array(await r.arrayBuffer());
  }
  throw new Error(`kernel module ${name} not found at ${candidates.map((u) => u.href).join(", ")}: run \`npm run build\` first`);
}
