// safetensors reader/writer. The reader parses and validates the header, then reads each tensor
// on demand straight into a caller-given buffer (e.g. a view of wasm memory): no whole-file copy. It reads
// through a byte source (source.ts), so a path and a URL load the same way.
import { openSource, SourceError, type ByteSource } from "./source.ts";
import { writeFileAtomic } from "./files.ts";
import { describeJsonError } from "./json.ts";

export type StDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const DTYPE_BYTES: Record<StDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Headers above this are rejected: real checkpoints have headers of a few hundred KB. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

export class SafetensorsError extends Error {}

export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};

  private constructor(
    /** The path or URL read. */
    readonly path: string,
    private src: ByteSource | null,
  ) {}

  /** Opens a safetensors file (a path or a URL) and validates its header; errors name the file. */
  static async open(location: string): Promise<SafetensorsFile> {
    let src: ByteSource;
    try {
      src = await openSource(location);
    } catch (e) {
      if (e instanceof SourceError) throw new SafetensorsError(e.message.replace(/: not found$/, ": file not found"));
      throw e;
    }
    const f = new SafetensorsFile(location, src);
    try {
      await f.parseHeader();
    } catch (e) {
      src.close();
      throw e instanceof SourceError ? new SafetensorsError(e.message) : e;
    }
    return f;
  }

  private fail(msg: string): never {
    throw new SafetensorsError(`${this.path}: ${msg}`);
  }

  private async parseHeader() {
    const src = this.src!;
    const fileSize = src.size;
    if (fileSize < 8) this.fail(`truncated: ${fileSize} bytes, not a safetensors file`);
    const lenBuf = await src.read(0, 8);
    const headerLen = Number(new DataView(lenBuf.buffer, lenBuf.byteOffset, 8).getBigUint64(0, true));
    if (headerLen > MAX_HEADER_BYTES) this.fail(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt file?)`);
    if (8 + headerLen > fileSize) this.fail(`truncated: header says ${headerLen} bytes but the file has ${fileSize - 8} after the length`);
    const hbuf = await src.read(8, headerLen);
    let header: Record<string, any>;
    const text = new TextDecoder().decode(hbuf);
    try {
      header = JSON.parse(text);
    } catch (e) {
      this.fail(`header is not valid JSON (${describeJsonError(text, e)})`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) this.fail("header is not a JSON object");
    const dataStart = 8 + headerLen;
    const dataSize = fileSize - dataStart;
    for (const [name, v] of Object.entries(header)) {
      if (name === "__metadata__") {
        if (v && typeof v === "object") for (const [k, s] of Object.entries(v)) this.metadata[k] = String(s);
        continue;
      }
      if (!v || typeof v !== "object") this.fail(`tensor ${name}: entry is not an object`);
      const dtype = v.dtype as StDtype;
      if (!(dtype in DTYPE_BYTES)) this.fail(`tensor ${name}: unsupported dtype ${JSON.stringify(v.dtype)}`);
      const shape = v.shape;
      if (!Array.isArray(shape) || !shape.every((d: unknown) => Number.isSafeInteger(d) && (d as number) >= 0))
        this.fail(`tensor ${name}: invalid shape ${JSON.stringify(shape)}`);
      const offs = v.data_offsets;
      if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d: unknown) => Number.isSafeInteger(d) && (d as number) >= 0))
        this.fail(`tensor ${name}: invalid data_offsets ${JSON.stringify(offs)}`);
      const [b, e] = offs as [number, number];
      const n = shape.reduce((a: number, d: number) => a * d, 1);
      if (e < b || e - b !== n * DTYPE_BYTES[dtype])
        this.fail(`tensor ${name}: data_offsets [${b}, ${e}] do not match shape ${JSON.stringify(shape)} of ${dtype}`);
      if (e > dataSize) this.fail(`truncated: tensor ${name} ends at byte ${e} of the data section but it has only ${dataSize}`);
      this.tensors.set(name, { name, dtype, shape: shape.slice(), begin: dataStart + b, end: dataStart + e });
    }
    this.checkLayout(dataStart, dataSize);
  }

  /**
   * The format's rule for the data section (as the reference implementation checks it): taken in offset order,
   * the tensors' byte ranges tile it exactly, with no overlap (two tensors sharing bytes: a write to one would
   * change the other, and such files are a way to smuggle in data), no gap and nothing after the last.
   */
  private checkLayout(dataStart: number, dataSize: number): void {
    const byStart = [...this.tensors.values()].sort((x, y) => x.begin - y.begin || x.end - y.end);
    let at = dataStart;
    let prev: TensorInfo | null = null;
    for (const t of byStart) {
      if (t.begin < at)
        this.fail(`tensor ${t.name}: data_offsets [${t.begin - dataStart}, ${t.end - dataStart}] overlap those of ${prev!.name} [${prev!.begin - dataStart}, ${prev!.end - dataStart}]`);
      if (t.begin > at)
        this.fail(`tensor ${t.name}: data_offsets start at ${t.begin - dataStart}, leaving bytes [${at - dataStart}, ${t.begin - dataStart}) of the data section unused (the format allows no gaps)`);
      at = t.end;
      prev = t;
    }
    if (at !== dataStart + dataSize)
      this.fail(`${dataStart + dataSize - at} bytes after the last tensor's data (the data section has ${dataSize} bytes, the tensors cover ${at - dataStart})`);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) this.fail(`no tensor named ${name}`);
    return t;
  }

  /** Raw little-endian bytes of a tensor, read into `dest` when given. */
  async readRaw(name: string, dest?: Uint8Array): Promise<Uint8Array> {
    const t = this.info(name);
    const n = t.end - t.begin;
    const out = dest ?? new Uint8Array(n);
    if (out.byteLength < n) this.fail(`tensor ${name}: destination has ${out.byteLength} bytes, needs ${n}`);
    if (!this.src) this.fail(`read of ${name} after close`);
    try {
      return await this.src.read(t.begin, n, out);
    } catch (e) {
      throw e instanceof SourceError ? new SafetensorsError(`${e.message} (reading ${name})`) : e;
    }
  }

  /** A tensor converted to float32 (from F32, F16, BF16, F64 or integer dtypes), into `dest` when given. */
  async readF32(name: string, dest?: Float32Array): Promise<Float32Array> {
    const t = this.info(name);
    const n = t.shape.reduce((a, d) => a * d, 1);
    const out = dest ?? new Float32Array(n);
    if (out.length < n) this.fail(`tensor ${name}: destination has ${out.length} floats, needs ${n}`);
    if (t.dtype === "F32") {
      await this.readRaw(name, new Uint8Array(out.buffer, out.byteOffset, n * 4));
      return out.subarray(0, n);
    }
    const raw = await this.readRaw(name);
    convertToF32(raw, t.dtype, out);
    return out.subarray(0, n);
  }

  close() {
    this.src?.close();
    this.src = null;
  }
}

const f16Table = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) t[h] = s * m * 2 ** -24;
    else if (e === 31) t[h] = m ? NaN : s * Infinity;
    else t[h] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

export function convertToF32(raw: Uint8Array, dtype: StDtype, out: Float32Array): void {
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = raw.byteLength / DTYPE_BYTES[dtype];
  switch (dtype) {
    case "F32":
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return;
    case "F16":
      for (let i = 0; i < n; i++) out[i] = f16Table[dv.getUint16(i * 2, true)];
      return;
    case "BF16": {
      const u = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(i * 2, true) << 16;
      return;
    }
    case "F64":
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      return;
    case "I64":
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(i * 8, true));
      return;
    case "I32":
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
      return;
    case "I16":
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(i * 2, true);
      return;
    case "I8":
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(i);
      return;
    case "U8":
    case "BOOL":
      for (let i = 0; i < n; i++) out[i] = raw[i];
      return;
  }
}

export interface TensorToWrite {
  name: string;
  dtype: StDtype;
  shape: number[];
  data: ArrayBufferView;
}

/** Writes a safetensors file atomically (tensors in the given order, 8-byte aligned header as the format recommends). Node/Deno. */
export function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, d) => a * d, 1) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== n) throw new SafetensorsError(`writeSafetensors: ${t.name} has ${t.data.byteLength} bytes, shape needs ${n}`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  const json = JSON.stringify(header);
  const hb = new TextEncoder().encode(json + " ".repeat((8 - ((8 + new TextEncoder().encode(json).length) % 8)) % 8));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hb.length), true);
  writeFileAtomic(path, (function* () {
    yield len;
    yield hb;
    for (const t of tensors) yield new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  })());
}
