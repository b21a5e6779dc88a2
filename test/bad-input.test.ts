// Bad input, as a careless user or an attacker would give it (issue 13): every damaged model or file is built
// on the fly from a copy of the shipped models/fashion-sd-tiny, the built CLI (process.execPath dist/cli.js, no
// launcher) runs on it, and each case asserts the exit code (2 usage, 1 runtime), that the error is one line
// naming the file / field / flag, that it comes fast, and that nothing the user owns was changed. Then the
// interrupt tests: SIGINT during convert and during calibrate leaves the previous outputs whole and valid.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";
import { readBytes, readText } from "../src/io/source.ts";
import { describeJsonError } from "../src/io/json.ts";
import { copyFileAtomic, writeFileAtomic } from "../src/io/files.ts";
import { checkOutputFile, checkOutputFolder, sniffFileKind } from "../src/io/outputs.ts";
import { readCalibration } from "../src/models/calibration.ts";

const root = path.resolve(import.meta.dirname, "..");
const cli = path.join(root, "dist", "cli.js");
const shipped = path.join(root, "models", "fashion-sd-tiny");
let tmp: string;
/** A clean copy of the shipped model (damaged copies are made from it). */
let base: string;
let counter = 0;

/** The newest modification time of the files under `dir`. */
function newest(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs);
  }
  return t;
}

beforeAll(() => {
  // dist/cli.js must be the current sources (npm test builds only the kernels)
  const srcTime = Math.max(newest(path.join(root, "src")), newest(path.join(root, "weights-tools")));
  if (!fs.existsSync(cli) || fs.statSync(cli).mtimeMs < srcTime)
    execFileSync(process.execPath, [path.join(root, "scripts", "build.mjs"), ...(fs.existsSync(path.join(root, "build", "stepq-simd.wasm")) ? ["--dist-only"] : [])], { cwd: root, stdio: "inherit" });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-bad-"));
  base = path.join(tmp, "base");
  fs.cpSync(shipped, base, { recursive: true });
  for (const f of fs.readdirSync(path.join(base, "unet"))) if (f.startsWith("stepq-") && f.endsWith(".safetensors")) fs.rmSync(path.join(base, "unet", f));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Run {
  code: number | null;
  stderr: string;
  stdout: string;
  ms: number;
}

function stepq(...args: string[]): Run {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: tmp, encoding: "utf8", timeout: 60_000 });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout, ms: performance.now() - t0 };
}

/** A fresh copy of the model, damaged by `damage` (which gets the copy's folder). */
function damaged(damage: (dir: string) => void = () => {}): string {
  const d = path.join(tmp, `m${counter++}`);
  fs.cpSync(base, d, { recursive: true });
  damage(d);
  return d;
}

function editJson(file: string, edit: (j: Record<string, any>) => void): void {
  const j = JSON.parse(fs.readFileSync(file, "utf8"));
  edit(j);
  fs.writeFileSync(file, JSON.stringify(j));
}

/** Rewrites a safetensors file's header in place (data unchanged). */
function editHeader(file: string, edit: (h: Record<string, any>) => void): void {
  const b = fs.readFileSync(file);
  const n = Number(b.readBigUInt64LE(0));
  const h = JSON.parse(b.subarray(8, 8 + n).toString("utf8"));
  edit(h);
  const hb = Buffer.from(JSON.stringify(h));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.length));
  fs.writeFileSync(file, Buffer.concat([len, hb, b.subarray(8 + n)]));
}

/** Rewrites a safetensors file with one tensor replaced. */
async function replaceTensor(file: string, name: string, make: (shape: number[]) => TensorToWrite): Promise<void> {
  const st = await SafetensorsFile.open(file);
  const out: TensorToWrite[] = [];
  for (const t of st.tensors.values()) out.push(t.name === name ? make(t.shape) : { name: t.name, dtype: t.dtype, shape: t.shape, data: await st.readRaw(t.name) });
  const meta = { ...st.metadata };
  st.close();
  writeSafetensors(file, out, meta);
}

const sha = (f: string) => crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex");

/** The run failed with `code`, one line on stderr (the last; a generate may log its load first) matching re. */
function expectError(r: Run, code: number, re: RegExp, what = ""): void {
  const lines = r.stderr.trim().split("\n");
  expect(r.code, `${what}\n${r.stderr}`).toBe(code);
  expect(lines.at(-1), what).toMatch(re);
  expect(lines.at(-1), what).toMatch(/^stepq \w+: /);
  expect(r.ms, what).toBeLessThan(20_000);
}

const gen = (model: string, ...more: string[]) => ["generate", "--model", model, "--prompt", "a bag", "--steps", "2", "--threads", "1", "-q", ...more];

describe("data loss: outputs", () => {
  it("generate --out onto a model's checkpoint, another kind of file, a folder, inside a model: refused before loading", () => {
    const m = damaged();
    const ckpt = path.join(m, "unet", "diffusion_pytorch_model.safetensors");
    const before = sha(ckpt);
    let r = stepq(...gen(m, "--out", ckpt));
    expectError(r, 2, /--out .*diffusion_pytorch_model\.safetensors: refusing to replace a safetensors file with a PNG image \(pass --force/);
    expect(r.stderr).not.toMatch(/loaded/);
    expect(sha(ckpt)).toBe(before);
    r = stepq(...gen(m, "--out", path.join(m, "unet", "new.png")));
    expectError(r, 2, /new\.png: is inside the model folder .*; write it elsewhere \(or pass --force\)/);
    // through a symlink into the model folder
    fs.symlinkSync(path.join(m, "unet"), path.join(tmp, `link${counter}`));
    r = stepq(...gen(m, "--out", path.join(tmp, `link${counter}`, "x.png")));
    expectError(r, 2, /is inside the model folder/);
    fs.writeFileSync(path.join(tmp, "notes.txt"), "my notes\n");
    r = stepq(...gen(m, "--out", "notes.txt"));
    expectError(r, 2, /--out notes\.txt: refusing to replace a file that is not PNG, safetensors or JSON with a PNG image/);
    expect(fs.readFileSync(path.join(tmp, "notes.txt"), "utf8")).toBe("my notes\n");
    expectError(stepq(...gen(m, "--out", tmp)), 2, /is a folder \(give a file name\)/);
    expectError(stepq(...gen(m, "--out", path.join(tmp, "no", "such", "x.png"))), 2, /folder .*no\/such does not exist/);
    // a PNG over a PNG is fine and says so; --force replaces anything
    r = stepq(...gen(m, "--out", "notes.txt", "--force"));
    expect(r.code, r.stderr).toBe(0);
    expect(sniffFileKind(fs.readFileSync(path.join(tmp, "notes.txt")), fs.statSync(path.join(tmp, "notes.txt")).size)).toBe("png");
    r = stepq("generate", "--model", m, "--prompt", "a bag", "--steps", "2", "--threads", "1", "--out", "notes.txt");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/wrote notes\.txt \(replaced the existing file\)\n$/);
  });

  it.skipIf(process.getuid?.() === 0)("a read-only output folder is reported before loading", () => {
    const ro = path.join(tmp, "ro");
    fs.mkdirSync(ro);
    fs.chmodSync(ro, 0o555);
    const r = stepq(...gen(damaged(), "--out", path.join(ro, "x.png")));
    fs.chmodSync(ro, 0o755);
    expectError(r, 2, /cannot write in .*ro \(permission denied\)/);
    expect(r.stderr).not.toMatch(/loaded/);
  });

  it("convert --out: a symlink to the model is in place; inside the model (also through a link) or a non-empty folder is refused", () => {
    const m = damaged();
    const link = path.join(tmp, `L${counter++}`);
    fs.symlinkSync(m, link);
    let r = stepq("convert", "--model", m, "--precision", "bf16", "--out", link, "-q");
    expect(r.code, r.stderr).toBe(0);
    expect(fs.existsSync(path.join(m, "model_index.json"))).toBe(true);
    expect(fs.readdirSync(path.join(m, "unet")).sort()).toEqual(["config.json", "diffusion_pytorch_model.safetensors", "stepq-bf16.safetensors", "stepq-calibration.json"]);
    for (const out of [path.join(m, "converted"), path.join(link, "unet", "converted")]) {
      r = stepq("convert", "--model", m, "--precision", "bf16", "--out", out, "-q");
      expectError(r, 2, /--out .*converted: is inside the model folder .* being read/);
      expect(r.stderr.length).toBeLessThan(600);
      expect(fs.existsSync(path.join(m, "converted")) || fs.existsSync(path.join(m, "unet", "converted"))).toBe(false);
    }
    const other = path.join(tmp, `other${counter++}`);
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "keep.txt"), "mine");
    expectError(stepq("convert", "--model", m, "--precision", "bf16", "--out", other, "-q"), 2, /holds files that are not an earlier stepq convert output \(keep\.txt\)/);
    // a new folder, then again into it (an earlier convert output), then --force into the occupied one
    const fresh = path.join(tmp, `conv${counter++}`);
    for (let i = 0; i < 2; i++) expect(stepq("convert", "--model", m, "--precision", "bf16", "--out", fresh, "-q").code).toBe(0);
    expect(fs.readdirSync(path.join(fresh, "unet")).sort()).toEqual(["config.json", "stepq-bf16.safetensors"]);
    expect(stepq("convert", "--model", m, "--precision", "bf16", "--out", other, "--force", "-q").code).toBe(0);
    expect(fs.readFileSync(path.join(other, "keep.txt"), "utf8")).toBe("mine");
  });

  it("calibrate --out inside the model (not its own file) or over a checkpoint is refused", () => {
    const m = damaged();
    const ckpt = path.join(m, "unet", "diffusion_pytorch_model.safetensors");
    expectError(stepq("calibrate", "--model", m, "--n", "1", "--steps", "1", "--out", ckpt, "-q"), 2, /refusing to replace a safetensors file with a JSON file/);
    expectError(stepq("calibrate", "--model", m, "--n", "1", "--steps", "1", "--out", path.join(m, "cal.json"), "-q"), 2, /is inside the model folder/);
  });
});

describe("crashes and hangs", () => {
  it("a schedule count of 10^20: a one-line usage error, at once", () => {
    const r = stepq(...gen(damaged(), "--schedule", "bf16*99999999999999999999"));
    expectError(r, 2, /--schedule: .*the count in "bf16\*99999999999999999999" must be a positive integer no larger than the step count \(2\)/);
    expect(r.ms).toBeLessThan(5000);
  });

  it("scheduler num_train_timesteps 1e9: named, in well under a second of work", () => {
    const m = damaged((d) => editJson(path.join(d, "scheduler", "scheduler_config.json"), (j) => (j.num_train_timesteps = 1e9)));
    const r = stepq(...gen(m));
    expectError(r, 1, /scheduler\/scheduler_config\.json: num_train_timesteps 1000000000 must be an integer from 1 to 100000/);
    expect(r.ms).toBeLessThan(5000);
  });

  it("a config that is a symlink to /dev/zero or a FIFO fails at once naming it", () => {
    for (const [what, make] of [
      ["/dev/zero", (f: string) => fs.symlinkSync("/dev/zero", f)],
      ["fifo", (f: string) => execFileSync("mkfifo", [f])],
    ] as const) {
      for (const rel of ["unet/config.json", "tokenizer/vocab.json", "model_index.json"]) {
        const m = damaged((d) => {
          fs.rmSync(path.join(d, rel));
          make(path.join(d, rel));
        });
        const r = stepq(...gen(m));
        expectError(r, 1, new RegExp(`${rel.replace(".", "\\.")}: not a regular file \\(a device, FIFO or socket\\)`), `${what} ${rel}`);
      }
    }
    // and as files named by flags: usage errors
    const fifo = path.join(tmp, "fifo");
    execFileSync("mkfifo", [fifo]);
    expectError(stepq(...gen(damaged(), "--calibration", fifo)), 2, /--calibration .*fifo: not a regular file/);
    expectError(stepq("calibrate", "--model", damaged(), "--prompts", "/dev/zero"), 2, /--prompts \/dev\/zero: not a regular file/);
  });

  it("library reads: FIFO, /dev/zero, size limits", async () => {
    const fifo = path.join(tmp, "fifo2");
    execFileSync("mkfifo", [fifo]);
    await expect(readText(fifo)).rejects.toThrow(/fifo2: not a regular file/);
    const z = path.join(tmp, "zero.json");
    fs.symlinkSync("/dev/zero", z);
    await expect(readBytes(z)).rejects.toThrow(/zero\.json: not a regular file/);
    const big = path.join(tmp, "big.json");
    fs.writeFileSync(big, Buffer.alloc(2048, 0x20));
    await expect(readText(big, { maxBytes: 1024, what: "a config file" })).rejects.toThrow(/big\.json: 2048 bytes is more than the 1024 bytes a config file may have/);
  });
});

describe("silently wrong", () => {
  it("safetensors data ranges that overlap, leave a gap, or stop short of the end are rejected naming the tensor", async () => {
    const vae = (d: string) => path.join(d, "vae", "diffusion_pytorch_model.safetensors");
    const overlap = damaged((d) =>
      editHeader(vae(d), (h) => {
        const ts = Object.entries(h).filter(([k]) => k !== "__metadata__").sort((a: any, b: any) => a[1].data_offsets[0] - b[1].data_offsets[0]);
        // two neighbours of one dtype and shape: the second now reads the first's bytes
        const i = ts.findIndex(([, v]: any, k) => k + 1 < ts.length && JSON.stringify([v.dtype, v.shape]) === JSON.stringify([(ts[k + 1][1] as any).dtype, (ts[k + 1][1] as any).shape]));
        (ts[i + 1][1] as any).data_offsets = (ts[i][1] as any).data_offsets;
      }),
    );
    expectError(stepq(...gen(overlap)), 1, /vae\/diffusion_pytorch_model\.safetensors: tensor [\w.]+: data_offsets \[\d+, \d+\] overlap those of [\w.]+/);
    const trailing = damaged((d) => fs.appendFileSync(vae(d), Buffer.alloc(16)));
    expectError(stepq(...gen(trailing)), 1, /diffusion_pytorch_model\.safetensors: 16 bytes after the last tensor's data/);
    // library level: a gap
    const f = path.join(tmp, "gap.safetensors");
    const hb = Buffer.from(JSON.stringify({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] }, b: { dtype: "F32", shape: [1], data_offsets: [8, 12] } }));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hb.length));
    fs.writeFileSync(f, Buffer.concat([len, hb, Buffer.alloc(12)]));
    await expect(SafetensorsFile.open(f)).rejects.toThrow(/tensor b: data_offsets start at 8, leaving bytes \[4, 8\) of the data section unused/);
  });

  it("an I64 or BOOL tensor where the model has a float weight is an error naming it", async () => {
    for (const dtype of ["I64", "BOOL"] as const) {
      const m = damaged();
      const file = path.join(m, "vae", "diffusion_pytorch_model.safetensors");
      await replaceTensor(file, "decoder.conv_in.bias", (shape) => ({ name: "decoder.conv_in.bias", dtype, shape, data: dtype === "I64" ? new BigInt64Array(shape[0]) : new Uint8Array(shape[0]) }));
      expectError(stepq(...gen(m)), 1, new RegExp(`vae/diffusion_pytorch_model\\.safetensors: tensor decoder\\.conv_in\\.bias is ${dtype}; weights must be float tensors`));
    }
  });

  it("--calibration: an error with converted int8 weights, a warning without int8 steps", () => {
    const m = damaged();
    const cal = path.join(m, "unet", "stepq-calibration.json");
    const copy = path.join(tmp, "cal-copy.json");
    fs.copyFileSync(cal, copy);
    expect(stepq("convert", "--model", m, "--precision", "int8", "-q").code).toBe(0);
    expectError(stepq(...gen(m, "--precision", "int8", "--calibration", copy, "--out", "c.png")), 2, /--calibration .*cal-copy\.json would not be used: int8 layers load from the converted .*stepq-int8\.safetensors/);
    const r = stepq(...gen(m, "--calibration", copy, "--out", "c.png"));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: --calibration .*cal-copy\.json is not used: precision fp32 has no int8 step/);
    fs.writeFileSync(path.join(tmp, "broken.json"), "{bad");
    expectError(stepq(...gen(m, "--precision", "int8", "--calibration", "broken.json")), 2, /--calibration broken\.json: invalid JSON/);
  });

  it("--int8-attention: changes only an int8 run's image; a warning without int8 steps", () => {
    const png = (name: string) => fs.readFileSync(path.join(tmp, name));
    for (const [out, extra] of [["q.png", []], ["qa.png", ["--int8-attention"]], ["f.png", []], ["fa.png", ["--int8-attention"]]] as const) {
      const r = stepq(...gen(base, "--precision", out.startsWith("q") ? "int8" : "fp32", "--seed", "1", "--out", out, ...extra));
      expect(r.code, r.stderr).toBe(0);
      if (out === "fa.png") expect(r.stderr).toMatch(/warning: INT8 attention is not used: no int8 precision is loaded \(fp32\)/);
    }
    expect(png("qa.png").equals(png("q.png"))).toBe(false);
    expect(png("fa.png").equals(png("f.png"))).toBe(true);
  });
});

describe("errors that name their cause", () => {
  it("unet sample_size 0 / \"big\" / 100000 / null, text encoder vocab_size 1e12, scheduler beta_end 5 / steps_offset 1e6", () => {
    const cases: [string, string, unknown, RegExp][] = [
      ["unet/config.json", "sample_size", 0, /unet\/config\.json: sample_size 0 must be an integer from 1 to 1024 or null/],
      ["unet/config.json", "sample_size", "big", /unet\/config\.json: sample_size "big" must be an integer from 1 to 1024 or null/],
      ["unet/config.json", "sample_size", 100000, /unet\/config\.json: sample_size 100000 must be an integer from 1 to 1024/],
      ["unet/config.json", "sample_size", 6, /unet\/config\.json: sample_size 6 is not a multiple of 4/],
      ["unet/config.json", "sample_size", null, /unet\/config\.json: sample_size is null, so the model has no native image size; give width and height/],
      ["text_encoder/config.json", "vocab_size", 1e12, /text_encoder\/config\.json: vocab_size 1000000000000 must be an integer from 1 to 1000000/],
      ["scheduler/scheduler_config.json", "beta_end", 5.0, /scheduler\/scheduler_config\.json: beta_end 5 must be a number from 0 to 1 \(exclusive\)/],
      ["scheduler/scheduler_config.json", "steps_offset", 1e6, /scheduler\/scheduler_config\.json: steps_offset 1000000 must be an integer from 0 to 999/],
      ["scheduler/scheduler_config.json", "steps_offset", 999, /scheduler\/scheduler_config\.json: steps_offset 999 with 2 steps gives timestep 1499, past the last training timestep 999/],
      ["scheduler/scheduler_config.json", "beta_end", 0.99, /scheduler\/scheduler_config\.json: the noise schedule .* leaves no signal from training timestep \d+ on/],
    ];
    for (const [file, field, value, re] of cases) {
      const m = damaged((d) => editJson(path.join(d, file), (j) => (j[field] = value)));
      expectError(stepq(...gen(m)), 1, re, `${file} ${field} ${value}`);
    }
  });

  it("--latents of shape [1,4,5,7] and --width 8: usage errors naming the flag, before loading", async () => {
    const m = damaged();
    const lat = path.join(tmp, "lat.safetensors");
    writeSafetensors(lat, [{ name: "l", dtype: "F32", shape: [1, 4, 5, 7], data: new Float32Array(140) }]);
    let r = stepq(...gen(m, "--latents", lat));
    expectError(r, 2, /--latents .*lat\.safetensors: shape \[1,4,5,7\]: latent height and width must be multiples of 4 for this model/);
    expect(r.stderr).not.toMatch(/loaded/);
    r = stepq(...gen(m, "--width", "8"));
    expectError(r, 2, /--width 8 is not a multiple of 16, this model's size unit/);
    expect(r.stderr).not.toMatch(/loaded/);
    writeSafetensors(lat, [{ name: "l", dtype: "F32", shape: [1, 4, 8, 8], data: new Float32Array(256).fill(NaN) }]);
    expectError(stepq(...gen(m, "--latents", lat)), 2, /--latents .*: tensor l has a non-finite value \(NaN\) at index 0/);
    fs.writeFileSync(lat, "not a safetensors file at all");
    expectError(stepq(...gen(m, "--latents", lat)), 2, /--latents .*lat\.safetensors: /);
  });

  it("a bad merges.txt line names the file and line; a config pointing at another file does not echo it", () => {
    const m = damaged((d) => {
      const f = path.join(d, "tokenizer", "merges.txt");
      const lines = fs.readFileSync(f, "utf8").split("\n");
      lines[4] = "abc";
      fs.writeFileSync(f, lines.join("\n"));
    });
    expectError(stepq(...gen(m)), 1, /tokenizer\/merges\.txt: line 5 is not a merge rule "a b": "abc"/);
    const secret = path.join(tmp, "secret.txt");
    fs.writeFileSync(secret, "root:x:0:0:secret-password\n");
    for (const target of [secret, path.join(base, "vae", "diffusion_pytorch_model.safetensors")]) {
      const m2 = damaged((d) => {
        fs.rmSync(path.join(d, "unet", "config.json"));
        fs.symlinkSync(target, path.join(d, "unet", "config.json"));
      });
      const r = stepq(...gen(m2));
      expectError(r, 1, /unet\/config\.json: (invalid JSON|\d+ bytes is more than)/);
      expect(r.stderr).not.toMatch(/secret-password|root:x/);
    }
    expect(describeJsonError("PK\u0003\u0004zipdata", new SyntaxError("x"))).toBe("binary data, not JSON text");
    let msg = "";
    try {
      JSON.parse("root:x:0:0");
    } catch (e) {
      msg = describeJsonError("root:x:0:0", e);
    }
    expect(msg).not.toMatch(/root:x/);
  });

  it("verify --only matching nothing fails; convert --help names no model it does not take; missing input files are usage errors", () => {
    const golden = path.join(root, "..", "shared", "golden");
    if (fs.existsSync(golden)) expectError(stepq("verify", golden, "--only", "no-such-case"), 2, /--only "no-such-case" matches no case/);
    const h = stepq("convert", "--help");
    expect(h.code).toBe(0);
    expect(h.stdout).not.toMatch(/--model sd15\b/);
    expect(h.stdout).toMatch(/Overwrites: /);
    for (const cmd of ["generate", "calibrate", "eval"]) expect(stepq(cmd, "--help").stdout, cmd).toMatch(/--force/);
    const m = damaged();
    expectError(stepq(...gen(m, "--latents", "nope.safetensors")), 2, /--latents nope\.safetensors: no such file/);
    expectError(stepq(...gen(m, "--calibration", "nope.json")), 2, /--calibration nope\.json: no such file/);
    expectError(stepq("calibrate", "--model", m, "--prompts", "nope.txt"), 2, /--prompts nope\.txt: no such file/);
    expectError(stepq("convert", "--model", m, "--precision", "int8", "--calibration", "nope.json"), 2, /--calibration nope\.json: no such file/);
  });
});

describe("output guards (library)", () => {
  it("kinds, model folders, folders; copyFileAtomic over its own hard link leaves no temporary file", () => {
    expect(sniffFileKind(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0]), 100)).toBe("png");
    expect(sniffFileKind(new TextEncoder().encode(' {"a":1}'), 8)).toBe("json");
    expect(sniffFileKind(new Uint8Array(0), 0)).toBe("empty");
    const m = damaged();
    expect(() => checkOutputFile(path.join(m, "unet", "stepq-calibration.json"), { kind: "json", flag: "--out" })).toThrow(/inside the model folder/);
    expect(checkOutputFile(path.join(m, "unet", "stepq-calibration.json"), { kind: "json", flag: "--out", owned: true }).replaces).toBe(true);
    expect(() => checkOutputFolder(path.join(m, "vae", "x"), { flag: "--out", readFolders: [m] })).toThrow(/inside the model folder .* being read/);
    expect(() => checkOutputFolder(m, { flag: "--out", readFolders: [m] })).toThrow(/is the model folder .* being read/);
    const a = path.join(tmp, "a.bin");
    fs.writeFileSync(a, "x");
    const b = path.join(tmp, "b.bin");
    fs.linkSync(a, b);
    copyFileAtomic(a, b);
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });
});

/** Polls (busy) until pred() or the deadline; returns whether pred() came true. */
function waitFor(pred: () => boolean, ms: number): boolean {
  const end = Date.now() + ms;
  while (Date.now() < end) if (pred()) return true;
  return false;
}

/** Whether a child process is still running (not exited; an unreaped zombie counts as exited). Linux /proc. */
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\S+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}

const temps = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith(".tmp"));

describe("interrupts", () => {
  it("SIGINT in the middle of an atomic write: the old file stays whole; the next write removes the leftover", async () => {
    const target = path.join(tmp, "atomic.bin");
    fs.writeFileSync(target, "old contents");
    // a child that writes half the data, then blocks inside the (synchronous) write until it is killed
    const script = `import { writeFileAtomic } from ${JSON.stringify(path.join(root, "dist", "index.js"))};
      writeFileAtomic(${JSON.stringify(target)}, (function* () { yield new Uint8Array(4096); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000); yield new Uint8Array(4096); })());`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: "ignore" });
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on("exit", (_c, s) => res(s)));
    expect(waitFor(() => temps(tmp).some((f) => f.startsWith(".atomic.bin.")), 20_000)).toBe(true);
    child.kill("SIGINT");
    expect(await exited).toBe("SIGINT");
    expect(fs.readFileSync(target, "utf8")).toBe("old contents");
    expect(temps(tmp).filter((f) => f.startsWith(".atomic.bin."))).toHaveLength(1);
    writeFileAtomic(target, "new contents");
    expect(fs.readFileSync(target, "utf8")).toBe("new contents");
    expect(temps(tmp).filter((f) => f.startsWith(".atomic.bin."))).toHaveLength(0);
  });

  it("SIGINT during convert leaves the previous converted files whole and loadable", async () => {
    const m = damaged();
    const unet = path.join(m, "unet");
    expect(stepq("convert", "--model", m, "--precision", "bf16,int8", "-q").code).toBe(0);
    const files = ["stepq-bf16.safetensors", "stepq-int8.safetensors"].map((f) => path.join(unet, f));
    const sizes = files.map((f) => fs.statSync(f).size);
    const shas = files.map(sha);
    const child = spawn(process.execPath, [cli, "convert", "--model", m, "--precision", "bf16,int8", "-q"], { stdio: "ignore" });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.on("exit", (code, signal) => res({ code, signal })));
    // interrupt while a converted file is being written (the poll sees its temporary file), else as soon as it ends
    let seen = false;
    waitFor(() => (seen = temps(unet).length > 0) || !running(child.pid!), 20_000);
    child.kill("SIGINT");
    const { code, signal } = await exited;
    expect(signal === "SIGINT" || code === 0, `code ${code} signal ${signal} (a temporary file seen: ${seen})`).toBe(true);
    if (signal === "SIGINT") {
      // killed: a temporary file it left names the target it was writing, which must be exactly the old one
      const writing = temps(unet).map((t) => files.findIndex((f) => t.startsWith(`.${path.basename(f)}.`))).filter((i) => i >= 0);
      for (const i of writing) expect(sha(files[i])).toBe(shas[i]);
    }
    for (const [i, f] of files.entries()) {
      expect(fs.statSync(f).size).toBe(sizes[i]); // the old file, or (rename done before the signal) the complete new one
      const st = await SafetensorsFile.open(f);
      expect(st.metadata.format).toBe("stepq");
      for (const t of st.tensors.keys()) await st.readRaw(t);
      st.close();
    }
    // a later run finishes and clears what the killed one left
    expect(stepq("convert", "--model", m, "--precision", "bf16,int8", "-q").code).toBe(0);
    expect(temps(unet)).toEqual([]);
  });

  it("SIGINT during calibrate leaves the previous calibration whole and valid", async () => {
    const m = damaged();
    const cal = path.join(m, "unet", "stepq-calibration.json");
    const before = sha(cal);
    const child = spawn(process.execPath, [cli, "calibrate", "--model", m, "--n", "4", "--steps", "20", "--threads", "1"], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    const started = new Promise<void>((res) => child.stderr!.on("data", (d) => ((err += d), res())));
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on("exit", (_c, s) => res(s)));
    await started; // its first line is printed before the model loads
    await new Promise((r) => setTimeout(r, 400));
    child.kill("SIGINT");
    expect(await exited, err).toBe("SIGINT");
    expect(sha(cal)).toBe(before);
    expect(Object.keys((await readCalibration(cal)).layers).length).toBeGreaterThan(0);
    expect(temps(path.join(m, "unet"))).toEqual([]);
  });
});
