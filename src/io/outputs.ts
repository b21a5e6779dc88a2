// What a command may write where, decided before any work starts (Node and Deno). Every command that writes
// files checks its outputs here first, so a typo in --out never costs a user a file and a write problem (a
// missing or read-only folder, a folder where a file should go) is reported at once, not after an hour of
// generation:
//   - an existing file is replaced only when it is of the kind being written (a PNG over a PNG, safetensors
//     over safetensors, JSON over JSON; an empty file counts as any kind) and writable; anything else needs
//     `force` (the CLI's --force);
//   - nothing inside a model folder (a folder with model_index.json, one of its component folders, or a
//     folder the command reads a model from) is written unless it is the file the command owns there
//     (stepq calibrate: unet/stepq-calibration.json; stepq convert: unet/stepq-bf16|int8.safetensors), or
//     with `force`;
//   - symlinks are resolved first, so a path that leads into a model folder through a link counts as inside;
//   - an output folder (stepq convert --out, stepq eval --out-dir) may not be, or be inside, a model folder
//     the command reads (`force` does not change this: a copy of a model inside itself never ends);
//   - the output's folder must exist and take a new file (probed by creating and removing a temporary file).
// The writes themselves are atomic (files.ts).
import { host } from "../runtime/env.ts";
import { removeStaleTemporaries } from "./files.ts";

/** A problem with an output path found before the work starts (the CLI reports it as a usage error, exit 2). */
export class OutputError extends Error {}

export type OutputKind = "png" | "safetensors" | "json";

const KIND_NAMES: Record<OutputKind | "other", string> = {
  png: "a PNG image",
  safetensors: "a safetensors file",
  json: "a JSON file",
  other: "a file that is not PNG, safetensors or JSON",
};

/** What a file's first bytes say it is (size: the whole file's, for the safetensors header check). */
export function sniffFileKind(head: Uint8Array, size: number): OutputKind | "empty" | "other" {
  if (size === 0) return "empty";
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (head.length >= 8 && png.every((b, i) => head[i] === b)) return "png";
  if (head.length >= 9 && size >= 10) {
    const n = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
    if (n >= 2 && 8 + n <= size && head[8] === 0x7b) return "safetensors";
  }
  for (const b of head) {
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) continue;
    return b === 0x7b || b === 0x5b ? "json" : "other";
  }
  return "other";
}

/** The kind of an existing regular file. */
export function fileKind(file: string): OutputKind | "empty" | "other" {
  const { fs } = host(`reading ${file}`);
  const fd = fs.openSync(file, "r");
  try {
    const size = fs.fstatSync(fd).size;
    const head = new Uint8Array(Math.min(64, size));
    fs.readSync(fd, head, 0, head.length, 0);
    return sniffFileKind(head, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** The real path of `p` (symlinks resolved), for a path whose last components may not exist yet. */
export function realPathOf(p: string): string {
  const { fs, path } = host();
  const abs = path.resolve(p);
  const rest: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return path.join(fs.realpathSync.native(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return abs;
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

/** Whether `p` is `folder` or inside it (both already real paths). */
export function isSameOrInside(p: string, folder: string): boolean {
  const { path } = host();
  const rel = path.relative(folder, p);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

function exists(p: string): boolean {
  return host().fs.existsSync(p);
}

/** Whether a folder is a diffusers component folder (config.json beside model*.safetensors or diffusion_pytorch_model*). */
function isComponentFolder(dir: string): boolean {
  const { fs, path } = host();
  if (!exists(path.join(dir, "config.json")) && !exists(path.join(dir, "scheduler_config.json"))) return false;
  try {
    return fs.readdirSync(dir).some((n) => /^(diffusion_pytorch_model|model|stepq-)[^/]*\.safetensors$/.test(n));
  } catch {
    return false;
  }
}

/**
 * The model folder `realPath` is in (or is), or null: one of `readFolders`, else the nearest folder above
 * (or at) it with model_index.json, else the component folder (config.json + weights) it is in.
 */
export function modelFolderContaining(realPath: string, readFolders: readonly string[] = []): string | null {
  const { path } = host();
  for (const f of readFolders) if (isSameOrInside(realPath, realPathOf(f))) return f;
  let d = realPath;
  for (;;) {
    if (exists(path.join(d, "model_index.json"))) return d;
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  const dir = path.dirname(realPath);
  if (isComponentFolder(dir)) return dir;
  if (isComponentFolder(realPath)) return realPath;
  return null;
}

/** Creates and removes a temporary file in `dir`: does the folder take a new file? Throws OutputError naming why not. */
function probeWritable(dir: string, label: string): void {
  const { fs, path, process } = host();
  // named like writeFileAtomic's temporaries, so one left by a killed process is removed by the next probe
  const probe = path.join(dir, `.stepq-write-test.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`);
  removeStaleTemporaries(path.join(dir, "stepq-write-test"));
  try {
    fs.closeSync(fs.openSync(probe, "wx", 0o644));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "EACCES" || code === "EPERM" ? "permission denied" : code === "EROFS" ? "read-only file system" : code === "ENOSPC" ? "no space left on the device" : code ?? (e as Error).message;
    throw new OutputError(`${label}: cannot write in ${dir} (${why})`);
  }
  try {
    fs.unlinkSync(probe);
  } catch {
    /* removed by someone else */
  }
}

export interface OutputFileCheck {
  /** What will be written. */
  kind: OutputKind;
  /** How the user named the output, for messages: a flag ("--out") or a description. */
  flag: string;
  /** Replace a file of another kind, a read-only file, or write inside a model folder. */
  force?: boolean;
  /** Model folders the command reads: writing inside them is refused unless `owned`. */
  readFolders?: readonly string[];
  /** The file is the one the command owns inside a model folder (e.g. unet/stepq-calibration.json). */
  owned?: boolean;
}

/** What checkOutputFile found. */
export interface OutputFileInfo {
  /** The path made absolute. */
  path: string;
  /** Whether a file is there now (and will be replaced). */
  replaces: boolean;
}

/**
 * Checks, before any work, that `file` may be written (see the file header); throws OutputError naming the
 * file and the reason. Also removes temporary files left by killed earlier writes of it.
 */
export function checkOutputFile(file: string, o: OutputFileCheck): OutputFileInfo {
  const { fs, path } = host(`writing ${file}`);
  const label = `${o.flag} ${file}`;
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  let dst: { isDirectory(): boolean; isFile(): boolean } | null = null;
  try {
    const ds = fs.statSync(dir);
    if (!ds.isDirectory()) throw new OutputError(`${label}: ${dir} is not a folder`);
  } catch (e) {
    if (e instanceof OutputError) throw e;
    throw new OutputError(`${label}: folder ${dir} does not exist`);
  }
  try {
    dst = fs.statSync(abs);
  } catch {
    dst = null; // missing, or a dangling symlink (the rename replaces the link)
  }
  if (dst) {
    if (dst.isDirectory()) throw new OutputError(`${label}: is a folder (give a file name)`);
    if (!dst.isFile()) throw new OutputError(`${label}: is not a regular file (a device, FIFO or socket); give a file name`);
    let kind: ReturnType<typeof fileKind>;
    try {
      kind = fileKind(abs);
    } catch (e) {
      throw new OutputError(`${label}: cannot read the existing file (${(e as Error).message})`);
    }
    if (kind !== o.kind && kind !== "empty" && !o.force)
      throw new OutputError(`${label}: refusing to replace ${KIND_NAMES[kind]} with ${KIND_NAMES[o.kind]} (pass --force to replace it)`);
    if (!o.force) {
      try {
        fs.accessSync(abs, fs.constants.W_OK);
      } catch {
        throw new OutputError(`${label}: the existing file is read-only (pass --force to replace it anyway)`);
      }
    }
  }
  const real = path.join(realPathOf(dir), path.basename(abs));
  const model = modelFolderContaining(real, o.readFolders);
  if (model && !o.owned && !o.force)
    throw new OutputError(`${label}: is inside the model folder ${model}; write it elsewhere (or pass --force)`);
  probeWritable(dir, label);
  removeStaleTemporaries(abs);
  return { path: abs, replaces: dst !== null };
}

export interface OutputFolderCheck {
  /** How the user named the folder, for messages ("--out"). */
  flag: string;
  /** Model folders the command reads: the output folder may not be, or be inside, one of them. */
  readFolders?: readonly string[];
  /** Data folders the command reads (the same rule, named "data folder" in messages). */
  dataFolders?: readonly string[];
  /** Write inside another model folder anyway. */
  force?: boolean;
}

/**
 * Checks, before any work, that files may be written into the folder `dir` (created later if missing):
 * not a file, not (inside) a folder being read, not inside another model folder unless `force`, and its
 * nearest existing ancestor takes new files. Returns the absolute path.
 */
export function checkOutputFolder(dir: string, o: OutputFolderCheck): string {
  const { fs, path } = host(`writing into ${dir}`);
  const label = `${o.flag} ${dir}`;
  const abs = path.resolve(dir);
  const real = realPathOf(abs);
  const read = [...(o.readFolders ?? []).map((f) => [f, "model"]), ...(o.dataFolders ?? []).map((f) => [f, "data"])];
  for (const [f, what] of read) {
    const rf = realPathOf(f);
    if (isSameOrInside(real, rf))
      throw new OutputError(`${label}: is ${real === rf ? "" : "inside "}the ${what} folder ${f} being read${real === rf ? "" : " (a copy of a folder inside itself never ends)"}; give a folder outside it`);
  }
  let existing = abs;
  while (!exists(existing)) existing = path.dirname(existing);
  if (existing === abs && !fs.statSync(abs).isDirectory()) throw new OutputError(`${label}: is a file, not a folder`);
  if (!fs.statSync(existing).isDirectory()) throw new OutputError(`${label}: ${existing} is a file, not a folder`);
  const model = modelFolderContaining(path.join(real, ".probe"));
  if (model && !isSameOrInside(model, real) && !o.force)
    throw new OutputError(`${label}: is inside the model folder ${model}; give a folder outside it (or pass --force)`);
  probeWritable(existing, label);
  return abs;
}
