// Writing files (Node and Deno): every output stepq writes (PNG, safetensors, calibration, JSON reports,
// checkpoints, the files convert links or copies into a new model folder) goes through writeFileAtomic or
// copyFileAtomic, so an interrupted or failed write never leaves a truncated file where a good one was: the
// bytes go to a temporary file in the same folder, are flushed to disk, and the temporary file is renamed
// over the target in one step. What may be written where (overwrite guards, model folders, writability
// before the work starts) is decided in outputs.ts.
//
// Temporary files are named `.<target>.<pid>.<random>.tmp`. A process killed mid-write (SIGKILL, or SIGINT
// with Node's default handler) cannot remove its own; the next write of the same target removes those whose
// process is gone.
import { host } from "../runtime/env.ts";

export class WriteError extends Error {}

/** A fresh temporary path beside `file` (same folder, so the final rename is atomic). */
function tempPathFor(file: string): string {
  const { path, process } = host(`writing ${file}`);
  const dir = path.dirname(path.resolve(file));
  const rand = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
  return path.join(dir, `.${path.basename(file)}.${process.pid}.${rand}.tmp`);
}

function processAlive(pid: number): boolean {
  try {
    host().process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes temporary files of earlier writes of `file` whose writing process no longer exists. */
export function removeStaleTemporaries(file: string): void {
  const { fs, path, process } = host(`writing ${file}`);
  const dir = path.dirname(path.resolve(file));
  const prefix = `.${path.basename(file)}.`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith(prefix) || !n.endsWith(".tmp")) continue;
    const m = /^(\d+)\.[a-z0-9]+\.tmp$/.exec(n.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    try {
      fs.unlinkSync(path.join(dir, n));
    } catch {
      /* gone already */
    }
  }
}

/** fsync of a folder, so a rename in it survives a power cut (not possible on every platform: best effort). */
function syncFolder(dir: string): void {
  const { fs } = host();
  let fd = -1;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    /* Windows cannot open folders; some file systems refuse fsync on them */
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

/**
 * Writes `data` (bytes, text, or a sequence of byte chunks for large files) to `file` atomically: a temporary
 * file beside it, fsync, rename. On failure the temporary file is removed and the target is untouched.
 */
export function writeFileAtomic(file: string, data: Uint8Array | string | Iterable<Uint8Array>): void {
  const { fs, path } = host(`writing ${file}`);
  removeStaleTemporaries(file);
  const tmp = tempPathFor(file);
  let fd = -1;
  try {
    fd = fs.openSync(tmp, "wx", 0o644);
    const chunks = typeof data === "string" ? [new TextEncoder().encode(data)] : data instanceof Uint8Array ? [data] : data;
    for (const c of chunks) {
      let off = 0;
      while (off < c.byteLength) off += fs.writeSync(fd, c, off, c.byteLength - off);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* never created */
    }
    throw new WriteError(`${file}: cannot write (${(e as Error).message})`);
  }
  syncFolder(path.dirname(path.resolve(file)));
}

/**
 * Puts a copy of `src` at `dst` atomically: a hard link when both are on one file system (no bytes copied),
 * else a copy; either way made under a temporary name and renamed over `dst`, so `dst` is at every moment
 * its old file or the complete new one. `src` is never modified.
 */
export function copyFileAtomic(src: string, dst: string): void {
  const { fs, path } = host(`writing ${dst}`);
  removeStaleTemporaries(dst);
  const tmp = tempPathFor(dst);
  try {
    try {
      fs.linkSync(src, tmp);
    } catch {
      fs.copyFileSync(src, tmp, fs.constants.COPYFILE_EXCL);
      const fd = fs.openSync(tmp, "r+");
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
    fs.renameSync(tmp, dst);
    // rename() between two links of one file does nothing (POSIX): the temporary link is then still there
    if (fs.existsSync(tmp)) fs.unlinkSync(tmp);
  } catch (e) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* never created */
    }
    throw new WriteError(`${dst}: cannot write (${(e as Error).message})`);
  }
  syncFolder(path.dirname(path.resolve(dst)));
}
