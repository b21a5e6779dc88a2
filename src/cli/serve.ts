// stepq serve: the in-browser demo. A small static server (Node's http) for the page (dist/demo.html and its
// scripts), the library bundle, the kernel worker, the .wasm kernels and one model folder, with the headers
// that make the page cross-origin isolated (so it gets SharedArrayBuffer and can run the engine on several
// threads) and Range support (the library reads model files with HEAD + Range requests).
//
// URL layout (the package's own, so the library bundle finds dist/worker.js and build/*.wasm beside itself):
//   /                 dist/demo.html
//   /dist/NAME        dist/*.js, *.js.map, *.html      (no subfolders)
//   /build/NAME       build/*.wasm
//   /model/PATH       the model folder (--model)
// Anything else is 404; a path with "." or ".." segments, or one whose real path (symlinks followed) leaves
// its folder, is refused with 403.
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import type { AddressInfo } from "node:net";
import { parse, intOpt, UsageError } from "./args.ts";
import { packageRoot, resolveDefaultModel, DEFAULT_MODEL } from "../io/places.ts";

export const summary = "serve the in-browser demo page and a model over HTTP (http://127.0.0.1:8080/)";

export const usage = `Usage: stepq serve [options]

Serves the demo page, which runs stepq in the browser: the engine in a Web Worker that starts the kernel
workers, all sharing one WebAssembly.Memory; the model read over HTTP with Range requests. Open the URL it
prints. The page takes query parameters: prompt, negative, seed, steps, guidance, scheduler, precision,
threads, model and autorun=1, e.g. /?prompt=a+photo+of+a+bag&seed=3&precision=mixed:5&autorun=1

Every response carries Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy: require-corp
and Cross-Origin-Resource-Policy: same-origin, so the page is cross-origin isolated and may use threads.

Options:
  --port N          TCP port (default 8080; 0 picks a free one)
  --host ADDR       address to listen on (default 127.0.0.1: this machine only)
  --model DIR       diffusers model folder served as /model/ (default: the shipped ${DEFAULT_MODEL})
  --no-isolation    leave out COOP/COEP (the page then runs on one thread, and says so)
  -v, --verbose     print every request
  -h, --help        show this help

Example:
  stepq serve --port 8080 --model models/fashion-sd-tiny`;

export interface DemoServerOptions {
  /** The package folder holding dist/ and build/. */
  root: string;
  /** The model folder served as /model/. */
  model: string;
  /** Send COOP/COEP (default true). */
  isolation?: boolean;
  /** One line per request (method, path, status, bytes). */
  log?: (line: string) => void;
}

interface Mount {
  prefix: string;
  dir: string;
  /** File names allowed directly in dir (no subfolders); undefined: any file at any depth. */
  names?: RegExp;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".map": "application/json",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".txt": "text/plain; charset=utf-8",
  ".png": "image/png",
  ".css": "text/css; charset=utf-8",
};

/** Whether `p` is `dir` or inside it (both absolute, normalised). */
function inside(dir: string, p: string): boolean {
  const rel = path.relative(dir, p);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/** A Range header for a file of `size` bytes: the one range asked for, "unsatisfiable", or null (serve it all). */
export function parseRange(header: string, size: number): { start: number; end: number } | "unsatisfiable" | null {
  // one range only (the library asks for one); several, or anything malformed, is ignored as RFC 9110 allows
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (m[1] === "") {
    const n = Number(m[2]);
    return n === 0 || size === 0 ? "unsatisfiable" : { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  if (m[2] !== "" && Number(m[2]) < start) return null;
  if (start >= size) return "unsatisfiable";
  return { start, end: m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1) };
}

/** The demo's HTTP server (not yet listening). */
export function createDemoServer(opts: DemoServerOptions): http.Server {
  const root = fs.realpathSync(opts.root);
  const mounts: Mount[] = [
    { prefix: "/dist/", dir: path.join(root, "dist"), names: /^[\w.-]+\.(js|js\.map|html)$/ },
    { prefix: "/build/", dir: path.join(root, "build"), names: /^[\w.-]+\.wasm$/ },
    { prefix: "/model/", dir: fs.realpathSync(opts.model) },
  ];
  const isolation = opts.isolation ?? true;
  const common: Record<string, string> = {
    ...(isolation ? { "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp" } : {}),
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
  };

  return http.createServer((req, res) => {
    const method = req.method ?? "GET";
    const rawPath = (req.url ?? "/").split(/[?#]/)[0];
    let bytesSent = 0;
    const finish = (status: number, headers: Record<string, string | number>, body?: string) => {
      const text = body === undefined ? undefined : body + "\n";
      res.writeHead(status, { ...common, ...(text !== undefined ? { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) } : {}), ...headers });
      res.end(method === "HEAD" ? undefined : text);
      opts.log?.(`${method} ${rawPath} ${status}`);
    };
    if (method !== "GET" && method !== "HEAD") return finish(405, { Allow: "GET, HEAD" }, "only GET and HEAD");
    let pathname: string;
    try {
      pathname = decodeURIComponent(rawPath);
    } catch {
      return finish(400, {}, "bad URL encoding");
    }
    if (!pathname.startsWith("/") || pathname.includes("\0") || pathname.includes("\\")) return finish(400, {}, "bad path");
    if (pathname.split("/").some((s) => s === "." || s === "..")) return finish(403, {}, "outside the served folders");

    let file: string;
    let mount: Mount | undefined;
    if (pathname === "/" || pathname === "/index.html") {
      mount = mounts[0];
      file = path.join(mount.dir, "demo.html");
    } else {
      mount = mounts.find((m) => pathname.startsWith(m.prefix));
      if (!mount) return finish(404, {}, "not found");
      const rel = pathname.slice(mount.prefix.length);
      if (!rel || (mount.names && !mount.names.test(rel))) return finish(404, {}, "not found");
      file = path.join(mount.dir, rel);
    }
    // the real path (symlinks followed) must stay inside the mount's folder
    let real: string;
    let stat: fs.Stats;
    try {
      real = fs.realpathSync(file);
      stat = fs.statSync(real);
    } catch {
      return finish(404, {}, "not found");
    }
    if (!inside(fs.realpathSync(mount.dir), real)) return finish(403, {}, "outside the served folders");
    if (!stat.isFile()) return finish(404, {}, "not found");

    const size = stat.size;
    const type = TYPES[path.extname(real).toLowerCase()] ?? "application/octet-stream";
    const range = req.headers.range === undefined ? null : parseRange(req.headers.range, size);
    if (range === "unsatisfiable") return finish(416, { "Content-Range": `bytes */${size}` }, "range not satisfiable");
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    const length = size === 0 ? 0 : end - start + 1;
    res.writeHead(range ? 206 : 200, {
      ...common,
      "Content-Type": type,
      "Content-Length": length,
      "Accept-Ranges": "bytes",
      ...(range ? { "Content-Range": `bytes ${start}-${end}/${size}` } : {}),
    });
    if (method === "HEAD" || length === 0) {
      res.end();
      opts.log?.(`${method} ${rawPath} ${res.statusCode}`);
      return;
    }
    const stream = fs.createReadStream(real, { start, end });
    stream.on("data", (chunk) => (bytesSent += chunk.length));
    stream.on("error", (e) => {
      opts.log?.(`${method} ${rawPath}: read failed (${e.message})`);
      res.destroy(e);
    });
    stream.on("end", () => opts.log?.(`${method} ${rawPath} ${res.statusCode} ${bytesSent} B`));
    res.on("close", () => stream.destroy());
    stream.pipe(res);
  });
}

export async function run(argv: string[]): Promise<number> {
  const { values: parsed, positionals } = parse(argv, {
    port: { type: "string" },
    host: { type: "string" },
    model: { type: "string", short: "m" },
    "no-isolation": { type: "boolean" },
    verbose: { type: "boolean", short: "v" },
  });
  const values = parsed as Record<string, string | boolean | undefined>;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const port = intOpt(values.port as string | undefined, "port", 8080, 0, 65535);
  const host = (values.host as string | undefined) ?? "127.0.0.1";
  const model = (values.model as string | undefined) ?? resolveDefaultModel();
  if (!fs.existsSync(path.join(model, "model_index.json"))) throw new UsageError(`--model ${model}: not a diffusers folder (no model_index.json)`);
  const root = packageRoot();
  const needed = ["dist/demo.html", "dist/demo.js", "dist/demo-worker.js", "dist/stepq.browser.js", "dist/worker.js", "build/stepq-simd.wasm", "build/stepq-relaxed.wasm"];
  const missing = needed.filter((f) => !fs.existsSync(path.join(root, f)));
  if (missing.length) throw new Error(`${missing.join(", ")} not found in ${root}: run \`npm run build\` first`);

  const isolation = !values["no-isolation"];
  const server = createDemoServer({ root, model, isolation, log: values.verbose ? (l) => process.stderr.write(`stepq serve: ${l}\n`) : undefined });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(e.code === "EADDRINUSE" ? new UsageError(`port ${port} on ${host} is in use (try --port ${port + 1}, or --port 0 for any free port)`) : e),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shown = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  const url = `http://${shown}:${addr.port}/`;
  process.stdout.write(`stepq serve: ${url}\n`);
  process.stderr.write(
    `stepq serve: model ${path.resolve(model)} as /model/; ${isolation ? "cross-origin isolated (COOP/COEP sent)" : "NOT cross-origin isolated (--no-isolation: the page runs on one thread)"}` +
      `${host === "127.0.0.1" || host === "localhost" || host === "::1" ? "" : `; listening on ${host}: reachable from other machines`}. Ctrl-C stops.\n`,
  );
  // serve until SIGINT/SIGTERM
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      server.close(() => resolve());
      server.closeAllConnections();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  return 0;
}
