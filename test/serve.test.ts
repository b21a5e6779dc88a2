// The demo server (src/cli/serve.ts): COOP/COEP/CORP on every response, Range and HEAD for the byte source,
// the URL layout, and refusals (paths outside its folders, symlinks out of them, methods other than GET/HEAD).
// Requests are sent raw (node:http keeps "..", unlike browsers and fetch, which normalise it away).
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDemoServer, parseRange } from "../src/cli/serve.ts";

const root = path.resolve(import.meta.dirname, "..");
let tmp: string;
let model: string;

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function request(port: number, rawPath: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: rawPath, method: opts.method ?? "GET", headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function listen(isolation = true): Promise<{ port: number; close: () => Promise<void> }> {
  const server = createDemoServer({ root, model, isolation });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

beforeAll(() => {
  for (const f of ["dist/demo.html", "build/stepq-simd.wasm"]) if (!fs.existsSync(path.join(root, f))) throw new Error(`${f} is missing: run \`npm run build\` first`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-serve-"));
  model = path.join(tmp, "model");
  fs.mkdirSync(path.join(model, "unet"), { recursive: true });
  fs.writeFileSync(path.join(model, "model_index.json"), '{"_class_name": "StableDiffusionPipeline"}');
  fs.writeFileSync(path.join(model, "unet", "weights.bin"), Buffer.from(Array.from({ length: 1000 }, (_, i) => i & 255)));
  fs.writeFileSync(path.join(model, "empty.txt"), "");
  fs.writeFileSync(path.join(tmp, "secret.txt"), "outside");
  fs.symlinkSync(path.join(tmp, "secret.txt"), path.join(model, "escape.txt"));
  fs.symlinkSync(path.join(model, "unet", "weights.bin"), path.join(model, "inside.bin"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("stepq serve", () => {
  it("sends COOP/COEP/CORP and the right types for the page, bundle, kernels and model", async () => {
    const s = await listen();
    try {
      const cases: [string, string][] = [
        ["/", "text/html; charset=utf-8"],
        ["/dist/demo.js", "text/javascript; charset=utf-8"],
        ["/dist/stepq.browser.js", "text/javascript; charset=utf-8"],
        ["/dist/worker.js", "text/javascript; charset=utf-8"],
        ["/build/stepq-relaxed.wasm", "application/wasm"],
        ["/model/model_index.json", "application/json"],
        ["/nowhere", "text/plain; charset=utf-8"],
      ];
      for (const [p, type] of cases) {
        const r = await request(s.port, p);
        expect(r.headers["cross-origin-opener-policy"], p).toBe("same-origin");
        expect(r.headers["cross-origin-embedder-policy"], p).toBe("require-corp");
        expect(r.headers["cross-origin-resource-policy"], p).toBe("same-origin");
        expect(r.headers["content-type"], p).toBe(type);
      }
      expect((await request(s.port, "/")).body.toString()).toMatch(/<img id="result"/);
      expect((await request(s.port, "/build/stepq-simd.wasm")).body.equals(fs.readFileSync(path.join(root, "build/stepq-simd.wasm")))).toBe(true);
    } finally {
      await s.close();
    }
  });

  it("HEAD and Range requests", async () => {
    const s = await listen();
    try {
      const all = fs.readFileSync(path.join(model, "unet", "weights.bin"));
      const head = await request(s.port, "/model/unet/weights.bin", { method: "HEAD" });
      expect([head.status, head.headers["content-length"], head.headers["accept-ranges"], head.body.length]).toEqual([200, "1000", "bytes", 0]);
      const ranges: [string, number, number][] = [
        ["bytes=10-19", 10, 19],
        ["bytes=990-", 990, 999],
        ["bytes=-5", 995, 999],
        ["bytes=995-5000", 995, 999],
      ];
      for (const [h, a, b] of ranges) {
        const r = await request(s.port, "/model/unet/weights.bin", { headers: { Range: h } });
        expect(r.status, h).toBe(206);
        expect(r.headers["content-range"], h).toBe(`bytes ${a}-${b}/1000`);
        expect(r.body.equals(all.subarray(a, b + 1)), h).toBe(true);
      }
      const bad = await request(s.port, "/model/unet/weights.bin", { headers: { Range: "bytes=1000-" } });
      expect([bad.status, bad.headers["content-range"]]).toEqual([416, "bytes */1000"]);
      // several ranges, or nonsense: the whole file (RFC 9110 lets a server ignore Range)
      for (const h of ["bytes=0-1,5-6", "items=0-1", "bytes=9-3"]) expect((await request(s.port, "/model/unet/weights.bin", { headers: { Range: h } })).status, h).toBe(200);
      const empty = await request(s.port, "/model/empty.txt");
      expect([empty.status, empty.body.length]).toEqual([200, 0]);
      expect((await request(s.port, "/model/empty.txt", { headers: { Range: "bytes=0-" } })).status).toBe(416);
    } finally {
      await s.close();
    }
  });

  it("refuses paths outside its folders, symlinks out of them, other files and methods", async () => {
    const s = await listen();
    try {
      const cases: [string, number, string?][] = [
        ["/model/../../secret.txt", 403],
        ["/model/%2e%2e/secret.txt", 403],
        ["/model/unet/..%2f..%2fsecret.txt", 403],
        ["/dist/../package.json", 403],
        ["/model/./model_index.json", 403],
        ["/model/escape.txt", 403], // a symlink to a file outside the model folder
        ["/model/inside.bin", 200], // a symlink that stays inside
        ["/model/unet", 404], // folders are not listed
        ["/model/", 404],
        ["/package.json", 404],
        ["/dist/cli.js.map", 200],
        ["/dist/sub/x.js", 404],
        ["/build/stepq-simd.wat", 404], // only the .wasm files
        ["/model/%00", 400],
        ["/model/%E0%A4%A", 400],
        ["/model/a\\..\\..\\secret.txt", 400],
      ];
      for (const [p, status] of cases) {
        const r = await request(s.port, p);
        expect(r.status, p).toBe(status);
        if (status !== 200) expect(r.body.toString(), p).not.toBe("outside"); // secret.txt's content
      }
      const post = await request(s.port, "/", { method: "POST" });
      expect([post.status, post.headers.allow]).toEqual([405, "GET, HEAD"]);
    } finally {
      await s.close();
    }
  });

  it("--no-isolation leaves out COOP/COEP", async () => {
    const s = await listen(false);
    try {
      const r = await request(s.port, "/");
      expect(r.status).toBe(200);
      expect(r.headers["cross-origin-opener-policy"]).toBeUndefined();
      expect(r.headers["cross-origin-embedder-policy"]).toBeUndefined();
      expect(r.headers["cross-origin-resource-policy"]).toBe("same-origin");
    } finally {
      await s.close();
    }
  });

  it("the command: binds 127.0.0.1, prints its URL, stops on SIGTERM with status 0; bad flags exit 2", async () => {
    const bin = path.join(root, "bin", "stepq.js");
    const p = spawn(process.execPath, [bin, "serve", "--port", "0", "--model", model], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const url = await new Promise<string>((resolve, reject) => {
      p.stdout!.on("data", (d) => {
        out += d;
        const m = /http:\/\/\S+/.exec(out);
        if (m) resolve(m[0]);
      });
      p.on("exit", (c) => reject(new Error(`exited with ${c}`)));
    });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const r = await request(Number(new URL(url).port), "/model/model_index.json");
    expect(r.status).toBe(200);
    const code = new Promise((resolve) => p.on("exit", (c) => resolve(c)));
    p.kill("SIGTERM");
    expect(await code).toBe(0);
    const bad: [string[], RegExp][] = [
      [["--port", "70000"], /--port must be an integer from 0 to 65535/],
      [["--model", tmp], /not a diffusers folder \(no model_index\.json\)/],
      [["--bogus"], /Unknown option '--bogus'/],
    ];
    for (const [args, re] of bad) {
      const x = spawnSync(process.execPath, [bin, "serve", ...args], { encoding: "utf8", timeout: 30_000 });
      expect(x.status, args.join(" ")).toBe(2);
      expect(x.stderr, args.join(" ")).toMatch(re);
    }
  });

  it("parseRange", () => {
    expect(parseRange("bytes=0-0", 10)).toEqual({ start: 0, end: 0 });
    expect(parseRange("bytes=-20", 10)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=-0", 10)).toBe("unsatisfiable");
    expect(parseRange("bytes=10-", 10)).toBe("unsatisfiable");
    expect(parseRange("bytes=-", 10)).toBeNull();
    expect(parseRange(" bytes=2-3 ", 10)).toEqual({ start: 2, end: 3 });
  });
});
