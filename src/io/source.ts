// Where model files come from: one byte source for a path on the host's file system (Node, Deno) and for an
// http(s) URL (browsers, or a model served over HTTP), so every loader (safetensors, configs, tokenizer,
// calibration, golden files) reads the same way on every runtime.
//
// A "location" is a string: a file system path, or a URL. Large files are read in ranges (pread on a
// file, HTTP Range requests on a URL), so a large checkpoint never needs a second whole copy in memory:
// tensors go straight from the source into engine memory. Small files (configs, vocabularies) are read
// whole, and only when they are regular files below a size limit, so a path that is a FIFO, a device or a
// symlink to /dev/zero fails at once with a message naming it instead of hanging.
import { hasFileSystem, host } from "../runtime/env.ts";

export class SourceError extends Error {}

/** Whether a location is a URL (http:, https:, blob:, data:) rather than a file system path. */
export function isUrl(loc: string): boolean {
  return /^(https?|blob|data):/i.test(loc);
}

/** base joined with relative parts: a URL (base taken as a folder) or a host path. */
export function joinLocation(base: string, ...parts: string[]): string {
  if (isUrl(base)) {
    let u = new URL(base.endsWith("/") ? base : base + "/");
    for (let i = 0; i < parts.length; i++) u = new URL(parts[i] + (i < parts.length - 1 && !parts[i].endsWith("/") ? "/" : ""), u);
    return u.href;
  }
  if (hasFileSystem) return host().path.join(base, ...parts);
  return [base.replace(/\/+$/, ""), ...parts].join("/");
}

/** A location made absolute (paths resolved against the working directory; URLs as they are), for reports. */
export function absoluteLocation(loc: string): string {
  return isUrl(loc) || !hasFileSystem ? loc : host().path.resolve(loc);
}

/** The last component of a location ("config.json"). */
export function baseName(loc: string): string {
  const s = loc.replace(/\/+$/, "");
  return s.slice(s.lastIndexOf("/") + 1);
}

/** The folder of a location. */
export function parentLocation(loc: string): string {
  if (isUrl(loc)) return new URL(".", loc.replace(/\/+$/, "")).href;
  return hasFileSystem ? host().path.dirname(loc) : loc.replace(/\/+$/, "").replace(/\/[^/]*$/, "") || "/";
}

/** Random access to one file's bytes. */
export interface ByteSource {
  /** The path or URL, for messages. */
  readonly location: string;
  readonly size: number;
  /** Exactly `length` bytes from `offset`, into `dest` when given (dest may view engine memory). */
  read(offset: number, length: number, dest?: Uint8Array): Promise<Uint8Array>;
  close(): void;
}

/** What a location is: a regular file (with its size), a folder, something else, or nothing. */
export type LocationKind = { kind: "file"; size: number } | { kind: "folder" } | { kind: "other" } | { kind: "missing" };

/** stat() of a location (symlinks followed). URLs answer "file" (HEAD succeeded, size from Content-Length) or "missing". */
export async function statLocation(loc: string): Promise<LocationKind> {
  if (isUrl(loc)) {
    const r = await fetchOrFail(loc, { method: "HEAD" });
    if (!r.ok) return { kind: "missing" };
    return { kind: "file", size: Number(r.headers.get("content-length") ?? NaN) };
  }
  const { fs } = host(`reading ${loc}`);
  try {
    const s = await fs.promises.stat(loc);
    return s.isFile() ? { kind: "file", size: s.size } : s.isDirectory() ? { kind: "folder" } : { kind: "other" };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR") return { kind: "missing" };
    throw new SourceError(`${loc}: ${(e as Error).message}`);
  }
}

/** Whether a regular file exists at loc. */
export async function fileExists(loc: string): Promise<boolean> {
  return (await statLocation(loc)).kind === "file";
}

/** Whether a folder exists at loc (URLs: always assumed, since HTTP cannot tell). */
export async function folderExists(loc: string): Promise<boolean> {
  if (isUrl(loc)) return true;
  return (await statLocation(loc)).kind === "folder";
}

/** The names of the regular files in a folder; null when the location cannot be listed (a URL). */
export async function listFiles(folder: string): Promise<string[] | null> {
  if (isUrl(folder)) return null;
  const { fs, path } = host(`listing ${folder}`);
  const names = await fs.promises.readdir(folder);
  const out: string[] = [];
  for (const n of names.sort()) {
    try {
      if ((await fs.promises.stat(path.join(folder, n))).isFile()) out.push(n);
    } catch {
      /* a dangling symlink is not a file */
    }
  }
  return out;
}

/** Opens a file for ranged reads; errors name the location (missing, not a regular file, unreachable). */
export async function openSource(loc: string): Promise<ByteSource> {
  if (isUrl(loc)) return HttpSource.open(loc);
  return FileSource.open(loc);
}

export interface ReadWholeOptions {
  /** Refuse files above this many bytes (default 64 MiB: configs, vocabularies, calibration files). */
  maxBytes?: number;
  /** What the file is, for the size message (e.g. "a config file"). */
  what?: string;
}

/** A whole small file's bytes: only a regular file of at most maxBytes. */
export async function readBytes(loc: string, opts: ReadWholeOptions = {}): Promise<Uint8Array> {
  const max = opts.maxBytes ?? 64 * 1024 * 1024;
  const src = await openSource(loc);
  try {
    if (src.size > max) throw new SourceError(`${loc}: ${src.size} bytes is more than the ${max} bytes ${opts.what ?? "this file"} may have`);
    return await src.read(0, src.size);
  } finally {
    src.close();
  }
}

/** A whole small text file (UTF-8), under the same rules as readBytes. */
export async function readText(loc: string, opts: ReadWholeOptions = {}): Promise<string> {
  return new TextDecoder().decode(await readBytes(loc, opts));
}

class FileSource implements ByteSource {
  private constructor(
    readonly location: string,
    private fd: number,
    readonly size: number,
  ) {}

  static async open(loc: string): Promise<FileSource> {
    const { fs } = host(`reading ${loc}`);
    const st = await statLocation(loc);
    if (st.kind === "missing") throw new SourceError(`${loc}: not found`);
    if (st.kind === "folder") throw new SourceError(`${loc}: is a folder, not a regular file`);
    // a FIFO would block the read forever and a device (/dev/zero) never ends: only regular files are read
    if (st.kind !== "file") throw new SourceError(`${loc}: not a regular file (a device, FIFO or socket)`);
    let fd: number;
    try {
      fd = fs.openSync(loc, "r");
    } catch (e) {
      throw new SourceError(`${loc}: cannot open (${(e as Error).message})`);
    }
    // the size of what was opened (the path may have changed since the stat)
    const s = fs.fstatSync(fd);
    if (!s.isFile()) {
      fs.closeSync(fd);
      throw new SourceError(`${loc}: not a regular file`);
    }
    return new FileSource(loc, fd, s.size);
  }

  async read(offset: number, length: number, dest?: Uint8Array): Promise<Uint8Array> {
    if (this.fd < 0) throw new SourceError(`${this.location}: read after close`);
    checkRange(this, offset, length);
    const out = dest ?? new Uint8Array(length);
    if (out.byteLength < length) throw new SourceError(`${this.location}: destination has ${out.byteLength} bytes, needs ${length}`);
    const { fs } = host();
    let done = 0;
    // readSync takes at most 2 GiB per call; reads are synchronous pread()s (models load before any work
    // starts, and a worker-free CLI gains nothing from the thread-pool round trip of fs.promises)
    while (done < length) {
      const got = fs.readSync(this.fd, out, done, Math.min(length - done, 1 << 30), offset + done);
      if (got <= 0) throw new SourceError(`${this.location}: unexpected end of file at byte ${offset + done} (file changed while reading?)`);
      done += got;
    }
    return out.subarray(0, length);
  }

  close(): void {
    if (this.fd >= 0) host().fs.closeSync(this.fd);
    this.fd = -1;
  }
}

function checkRange(src: ByteSource, offset: number, length: number): void {
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= src.size))
    throw new SourceError(`${src.location}: bytes [${offset}, ${offset + length}) are outside the file (${src.size} bytes)`);
}

async function fetchOrFail(url: string, init?: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (e) {
    throw new SourceError(`${url}: cannot fetch (${(e as Error).message})`);
  }
}

/** Reads up to this size go through the block cache of an HttpSource; larger ones stream straight into dest. */
const HTTP_SMALL_READ = 1 << 20;
const HTTP_BLOCK = 4 << 20;
/** Blocks an HttpSource keeps (16 MiB at most, dropped on close). */
const HTTP_CACHE_BLOCKS = 4;

/**
 * A URL read with Range requests, so only the bytes asked for are transferred and held. A model's many small
 * tensors (most are biases and norm weights of a few hundred bytes) are read through a few cached 4 MiB
 * blocks rather than one request each (a request costs milliseconds in a browser; the shipped model has ~700
 * tensors: ~700 requests before, ~25 now); reads above 1 MiB stream straight into their destination.
 */
class HttpSource implements ByteSource {
  /** Block index -> its bytes (Map order = least recently used first). */
  private blocks = new Map<number, Promise<Uint8Array>>();

  private constructor(
    readonly location: string,
    readonly size: number,
  ) {}

  static async open(url: string): Promise<HttpSource> {
    const r = await fetchOrFail(url, { method: "HEAD" });
    if (!r.ok) throw new SourceError(`${url}: ${r.status === 404 ? "not found" : `HTTP ${r.status} ${r.statusText}`}`);
    const size = Number(r.headers.get("content-length"));
    if (!Number.isSafeInteger(size) || size < 0) throw new SourceError(`${url}: the server sent no Content-Length`);
    return new HttpSource(url, size);
  }

  async read(offset: number, length: number, dest?: Uint8Array): Promise<Uint8Array> {
    checkRange(this, offset, length);
    const out = dest ?? new Uint8Array(length);
    if (out.byteLength < length) throw new SourceError(`${this.location}: destination has ${out.byteLength} bytes, needs ${length}`);
    if (length === 0) return out.subarray(0, 0);
    if (length > HTTP_SMALL_READ) {
      await this.fetchInto(offset, length, out);
      return out.subarray(0, length);
    }
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const b = Math.floor(pos / HTTP_BLOCK);
      const block = await this.block(b);
      const from = pos - b * HTTP_BLOCK;
      const n = Math.min(length - done, block.length - from);
      out.set(block.subarray(from, from + n), done);
      done += n;
    }
    return out.subarray(0, length);
  }

  private block(b: number): Promise<Uint8Array> {
    let p = this.blocks.get(b);
    if (p) this.blocks.delete(b); // re-inserted below as the most recently used
    else {
      const start = b * HTTP_BLOCK;
      const bytes = new Uint8Array(Math.min(HTTP_BLOCK, this.size - start));
      p = this.fetchInto(start, bytes.length, bytes).then(() => bytes);
      p.catch(() => this.blocks.delete(b));
    }
    this.blocks.set(b, p);
    if (this.blocks.size > HTTP_CACHE_BLOCKS) this.blocks.delete(this.blocks.keys().next().value!);
    return p;
  }

  /** Bytes [offset, offset + length) of the URL, streamed into out. */
  private async fetchInto(offset: number, length: number, out: Uint8Array): Promise<void> {
    const whole = offset === 0 && length === this.size;
    const r = await fetchOrFail(this.location, whole ? {} : { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
    if (!(r.status === 206 || (r.status === 200 && whole)))
      throw new SourceError(`${this.location}: ${r.status === 200 ? "the server ignores Range requests" : `HTTP ${r.status} ${r.statusText}`}`);
    // stream the body into out, so a large tensor is never held twice
    const reader = r.body!.getReader();
    let done = 0;
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      if (done + value.byteLength > length) throw new SourceError(`${this.location}: the server sent more than the ${length} bytes asked for`);
      out.set(value, done);
      done += value.byteLength;
    }
    if (done !== length) throw new SourceError(`${this.location}: got ${done} of ${length} bytes (connection cut?)`);
  }

  close(): void {
    this.blocks.clear();
  }
}
