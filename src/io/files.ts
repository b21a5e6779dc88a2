// Writing files (Node and Deno): every output stepq writes (PNG, safetensors, calibration, JSON reports,
// checkpoints) goes through writeFileAtomic, so an interrupted or failed write never leaves a truncated file
// where a good one was: the bytes go to a temporary file in the same folder, are flushed to disk, and the
// temporary file is renamed over the target in one step.
import { host } from "../runtime/env.ts";

export class WriteError extends Error {}

/**
 * Writes `data` (bytes, text, or a sequence of byte chunks for large files) to `file` atomically: a temporary
 * file beside it, fsync, rename. On failure the temporary file is removed and the target is untouched.
 */
export function writeFileAtomic(file: string, data: Uint8Array | string | Iterable<Uint8Array>): void {
  const { fs, path } = host(`writing ${file}`);
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}.tmp`);
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
}
