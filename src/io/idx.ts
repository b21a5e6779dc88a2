// IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed (detected by the gzip magic).
//
//   bytes 0-1  zero
//   byte  2    element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
//   byte  3    number of dimensions d
//   then d big-endian uint32 dimension sizes, then the elements row-major, big-endian.
//
// Errors (IdxError) name the file and what is wrong: bad gzip data, a bad magic, a size that does not
// match the dimensions (truncated or trailing bytes).
import { host } from "../runtime/env.ts";
import { readBytes, SourceError } from "./source.ts";

export class IdxError extends Error {}

export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface IdxArray {
  /** Element type name: "u8", "i8", "i16", "i32", "f32", "f64". */
  type: "u8" | "i8" | "i16" | "i32" | "f32" | "f64";
  dims: number[];
  data: IdxData;
}

const TYPES: Record<number, { type: IdxArray["type"]; bytes: number }> = {
  0x08: { type: "u8", bytes: 1 },
  0x09: { type: "i8", bytes: 1 },
  0x0b: { type: "i16", bytes: 2 },
  0x0c: { type: "i32", bytes: 4 },
  0x0d: { type: "f32", bytes: 4 },
  0x0e: { type: "f64", bytes: 8 },
};

/** Parses IDX bytes (already decompressed). `label` names the source in errors. */
export function parseIdx(buf: Uint8Array, label = "IDX data"): IdxArray {
  if (buf.length < 4) throw new IdxError(`${label}: ${buf.length} bytes, too short for an IDX header`);
  if (buf[0] !== 0 || buf[1] !== 0 || !TYPES[buf[2]])
    throw new IdxError(
      `${label}: not an IDX file (magic ${[...buf.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ")}; expected 00 00 <type 08/09/0b/0c/0d/0e> <ndims>)`,
    );
  const { type, bytes } = TYPES[buf[2]];
  const nd = buf[3];
  if (nd === 0) throw new IdxError(`${label}: IDX header declares 0 dimensions`);
  const head = 4 + 4 * nd;
  if (buf.length < head) throw new IdxError(`${label}: truncated header (${buf.length} bytes, ${nd} dimensions need ${head})`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims: number[] = [];
  let n = 1;
  for (let i = 0; i < nd; i++) {
    const d = dv.getUint32(4 + 4 * i, false);
    dims.push(d);
    n *= d;
  }
  const want = head + n * bytes;
  if (buf.length < want) throw new IdxError(`${label}: truncated: dimensions [${dims}] need ${want} bytes, the data has ${buf.length}`);
  if (buf.length > want) throw new IdxError(`${label}: ${buf.length - want} unexpected trailing bytes after [${dims}] ${type} elements`);
  let data: IdxData;
  switch (type) {
    case "u8":
      data = buf.slice(head, want);
      break;
    case "i8":
      data = new Int8Array(buf.slice(head, want).buffer);
      break;
    default: {
      const out = type === "i16" ? new Int16Array(n) : type === "i32" ? new Int32Array(n) : type === "f32" ? new Float32Array(n) : new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const o = head + i * bytes;
        out[i] =
          type === "i16" ? dv.getInt16(o, false) : type === "i32" ? dv.getInt32(o, false) : type === "f32" ? dv.getFloat32(o, false) : dv.getFloat64(o, false);
      }
      data = out;
    }
  }
  return { type, dims, data };
}

/** IDX files above this are refused (Fashion-MNIST's largest, train-images, is 47 MB unpacked). */
const MAX_IDX_BYTES = 1 << 30;

/** Reads an IDX file (a path or URL), gunzipping it first when it starts with the gzip magic (1f 8b). */
export async function readIdx(file: string): Promise<IdxArray> {
  let raw: Uint8Array;
  try {
    raw = await readBytes(file, { maxBytes: MAX_IDX_BYTES, what: "an IDX file" });
  } catch (e) {
    if (!(e instanceof SourceError)) throw e;
    const why = e.message.startsWith(`${file}: `) ? e.message.slice(file.length + 2) : e.message;
    throw new IdxError(`${file}: cannot read (${why})`);
  }
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      raw = await gunzip(raw);
    } catch (e) {
      throw new IdxError(`${file}: corrupt or truncated gzip data (${(e as Error).message})`);
    }
  }
  return parseIdx(raw, file);
}

async function gunzip(raw: Uint8Array): Promise<Uint8Array> {
  const { zlib } = host("gunzip");
  return zlib.gunzipSync(raw);
}

/** Reads an images file (u8, [N, rows, cols]) and, if given, its labels file (u8, [N]); checks they agree. */
export async function readIdxImages(imagesFile: string, labelsFile?: string): Promise<{ images: Uint8Array; count: number; rows: number; cols: number; labels?: Uint8Array }> {
  const im = await readIdx(imagesFile);
  if (im.type !== "u8" || im.dims.length !== 3) throw new IdxError(`${imagesFile}: expected u8 images [N, rows, cols], got ${im.type} [${im.dims}]`);
  const [count, rows, cols] = im.dims;
  let labels: Uint8Array | undefined;
  if (labelsFile !== undefined) {
    const lb = await readIdx(labelsFile);
    if (lb.type !== "u8" || lb.dims.length !== 1) throw new IdxError(`${labelsFile}: expected u8 labels [N], got ${lb.type} [${lb.dims}]`);
    if (lb.dims[0] !== count) throw new IdxError(`${labelsFile}: ${lb.dims[0]} labels for ${count} images in ${imagesFile}`);
    labels = lb.data as Uint8Array;
  }
  return { images: im.data as Uint8Array, count, rows, cols, labels };
}
