import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { MAX_HEADER_BYTES, SafetensorsError, SafetensorsFile, writeSafetensors } from "../src/io/safetensors.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stepq-st-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let counter = 0;
const tmp = (name = "t") => path.join(dir, `${name}-${counter++}.safetensors`);

/** A safetensors file from a raw header (object or string) and data bytes, with an optional length override. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): string {
  const p = tmp("raw");
  const hb = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(hb.length));
  fs.writeFileSync(p, Buffer.concat([len, hb, Buffer.from(data)]));
  return p;
}

async function open(p: string) {
  return await SafetensorsFile.open(p);
}

describe("round trip", () => {
  it("F32, F16, BF16, I8, U8 tensors with metadata", async () => {
    const p = tmp();
    const f32 = new Float32Array([0, 1, -2.5, 3.25e-8, 1e30, -Infinity, 123456.789]);
    // float16 bits: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), +inf, -0, 0.1 (rounded)
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x7c00, 0x8000, 0x2e66]);
    const f16v = [1, -2, 0.5, 65504, 2 ** -24, Infinity, -0, 0.0999755859375];
    // bfloat16 bits: 1, -2, 3.140625, 1e-40-ish subnormal, large
    const bf16 = new Uint16Array([0x3f80, 0xc000, 0x4049, 0x0001, 0x7f7f]);
    const bf16v = [1, -2, 3.140625, new Float32Array(new Uint32Array([0x00010000]).buffer)[0], new Float32Array(new Uint32Array([0x7f7f0000]).buffer)[0]];
    const i8 = new Int8Array([-128, -1, 0, 1, 127, 42]);
    const u8 = new Uint8Array([0, 1, 127, 128, 255, 7]);
    writeSafetensors(
      p,
      [
        { name: "a.f32", dtype: "F32", shape: [7], data: f32 },
        { name: "b.f16", dtype: "F16", shape: [2, 4], data: f16 },
        { name: "c.bf16", dtype: "BF16", shape: [5, 1], data: bf16 },
        { name: "d.i8", dtype: "I8", shape: [2, 3], data: i8 },
        { name: "e.u8", dtype: "U8", shape: [3, 2], data: u8 },
        { name: "empty", dtype: "F32", shape: [0, 3], data: new Float32Array(0) },
        { name: "scalar", dtype: "F32", shape: [], data: new Float32Array([7.5]) },
      ],
      { format: "pt", note: "hello" },
    );
    // the header is padded so that the data starts 8-byte aligned
    const hl = Number(fs.readFileSync(p).readBigUInt64LE(0));
    expect((8 + hl) % 8).toBe(0);

    const st = await open(p);
    expect([...st.tensors.keys()]).toEqual(["a.f32", "b.f16", "c.bf16", "d.i8", "e.u8", "empty", "scalar"]);
    expect(st.metadata).toEqual({ format: "pt", note: "hello" });
    expect(st.info("b.f16")).toMatchObject({ dtype: "F16", shape: [2, 4] });
    expect(st.has("a.f32")).toBe(true);
    expect(st.has("zzz")).toBe(false);

    expect(Array.from(await st.readF32("a.f32"))).toEqual(Array.from(f32));
    expect(Array.from(await st.readF32("b.f16"))).toEqual(f16v);
    expect(Object.is((await st.readF32("b.f16"))[6], -0)).toBe(true);
    expect(Array.from(await st.readF32("c.bf16"))).toEqual(bf16v);
    expect(Array.from(await st.readF32("d.i8"))).toEqual(Array.from(i8));
    expect(Array.from(await st.readF32("e.u8"))).toEqual(Array.from(u8));
    expect((await st.readF32("empty")).length).toBe(0);
    expect(Array.from(await st.readF32("scalar"))).toEqual([7.5]);

    // raw bytes come back unchanged
    expect(new Uint16Array((await st.readRaw("b.f16")).slice().buffer)).toEqual(f16);
    expect(new Uint16Array((await st.readRaw("c.bf16")).slice().buffer)).toEqual(bf16);
    expect(new Int8Array((await st.readRaw("d.i8")).slice().buffer)).toEqual(i8);
    expect(await st.readRaw("e.u8")).toEqual(u8);
    st.close();
  });

  it("reads into caller buffers (e.g. a view of wasm memory) at an offset", async () => {
    const p = tmp();
    const v = new Float32Array([1, 2, 3, 4]);
    const h = new Uint16Array([0x3c00, 0x4000, 0x4200, 0x4400]); // 1 2 3 4 in f16
    writeSafetensors(p, [
      { name: "f", dtype: "F32", shape: [4], data: v },
      { name: "h", dtype: "F16", shape: [4], data: h },
      { name: "b", dtype: "BF16", shape: [4], data: new Uint16Array([0x3f80, 0x4000, 0x4040, 0x4080]) },
    ]);
    const st = await open(p);
    const mem = new Float32Array(16).fill(-1);
    const out = await st.readF32("f", mem.subarray(3, 9));
    expect(Array.from(out)).toEqual([1, 2, 3, 4]);
    await st.readF32("h", mem.subarray(8, 12));
    await st.readF32("b", mem.subarray(12, 16));
    expect(Array.from(mem)).toEqual([-1, -1, -1, 1, 2, 3, 4, -1, 1, 2, 3, 4, 1, 2, 3, 4]);
    const raw = new Uint8Array(32).fill(9);
    await st.readRaw("h", raw.subarray(4));
    expect(Array.from(raw.subarray(0, 4))).toEqual([9, 9, 9, 9]);
    expect(new Uint16Array(raw.slice(4, 12).buffer)).toEqual(h);
    await expect(st.readF32("f", new Float32Array(3))).rejects.toThrow(/destination has 3 floats, needs 4/);
    await expect(st.readRaw("f", new Uint8Array(15))).rejects.toThrow(/destination has 15 bytes, needs 16/);
    st.close();
  });

  it("writeSafetensors rejects data that does not match the shape", async () => {
    expect(() => writeSafetensors(tmp(), [{ name: "x", dtype: "F32", shape: [3], data: new Float32Array(2) }])).toThrow(
      SafetensorsError,
    );
    expect(() => writeSafetensors(tmp(), [{ name: "x", dtype: "F16", shape: [2, 2], data: new Uint16Array(3) }])).toThrow(
      /x has 6 bytes, shape needs 8/,
    );
  });
});

describe("errors name the file and the problem", () => {
  it("missing file", async () => {
    const p = path.join(dir, "does-not-exist.safetensors");
    await expect(open(p)).rejects.toThrow(SafetensorsError);
    await expect(open(p)).rejects.toThrow(`${p}: file not found`);
  });

  it("a directory instead of a file", async () => {
    await expect(open(dir)).rejects.toThrow(SafetensorsError);
    await expect(open(dir)).rejects.toThrow(/not a regular file/);
  });

  it("file shorter than the 8-byte length", async () => {
    const p = tmp();
    fs.writeFileSync(p, Buffer.from([1, 2, 3]));
    await expect(open(p)).rejects.toThrow(`${p}: truncated: 3 bytes, not a safetensors file`);
    fs.writeFileSync(p, Buffer.alloc(0));
    await expect(open(p)).rejects.toThrow(/truncated: 0 bytes/);
  });

  it("header longer than the file", async () => {
    const p = rawFile({}, new Uint8Array(0), 1000n);
    await expect(open(p)).rejects.toThrow(/truncated: header says 1000 bytes but the file has 2 after the length/);
  });

  it("file cut in the middle of the header", async () => {
    const p = tmp();
    writeSafetensors(p, [{ name: "x", dtype: "F32", shape: [4], data: new Float32Array(4) }]);
    const full = fs.readFileSync(p);
    fs.writeFileSync(p, full.subarray(0, 20));
    await expect(open(p)).rejects.toThrow(/truncated: header says \d+ bytes but the file has 12 after the length/);
  });

  it("header length too large", async () => {
    const p = rawFile({}, new Uint8Array(0), BigInt(MAX_HEADER_BYTES) + 1n);
    await expect(open(p)).rejects.toThrow(/header length \d+ exceeds the \d+-byte limit/);
    const q = rawFile({}, new Uint8Array(0), 0xffffffffffffffffn);
    await expect(open(q)).rejects.toThrow(/exceeds the \d+-byte limit/);
  });

  it("bad JSON and non-object headers", async () => {
    await expect(open(rawFile('{"x": {"dtype": "F32",'))).rejects.toThrow(/header is not valid JSON/);
    await expect(open(rawFile("[1, 2, 3]"))).rejects.toThrow(/header is not a JSON object/);
    await expect(open(rawFile("null"))).rejects.toThrow(/header is not a JSON object/);
    await expect(open(rawFile({ x: 5 }))).rejects.toThrow(/tensor x: entry is not an object/);
  });

  it("bad dtype, shape or data_offsets", async () => {
    const d = new Uint8Array(16);
    await expect(open(rawFile({ x: { dtype: "F8_E4M3", shape: [4], data_offsets: [0, 4] } }, d))).rejects.toThrow(
      /tensor x: unsupported dtype "F8_E4M3"/,
    );
    await expect(open(rawFile({ x: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, d))).rejects.toThrow(/tensor x: invalid shape \[-1\]/);
    await expect(open(rawFile({ x: { dtype: "F32", shape: "4", data_offsets: [0, 16] } }, d))).rejects.toThrow(/invalid shape/);
    await expect(open(rawFile({ x: { dtype: "F32", shape: [4], data_offsets: [0] } }, d))).rejects.toThrow(/tensor x: invalid data_offsets \[0\]/);
    await expect(open(rawFile({ x: { dtype: "F32", shape: [4], data_offsets: [8, 4] } }, d))).rejects.toThrow(/data_offsets \[8, 4\] do not match/);
  });

  it("offsets not matching the shape", async () => {
    const p = rawFile({ w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 16] } }, new Uint8Array(24));
    await expect(open(p)).rejects.toThrow(`${p}: tensor w: data_offsets [0, 16] do not match shape [2,3] of F32`);
    const q = rawFile({ w: { dtype: "F16", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(16));
    await expect(open(q)).rejects.toThrow(/do not match shape \[4\] of F16/);
  });

  it("tensor beyond the end of the file", async () => {
    const p = rawFile(
      {
        a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        b: { dtype: "F32", shape: [4], data_offsets: [8, 24] },
      },
      new Uint8Array(20),
    );
    await expect(open(p)).rejects.toThrow(`${p}: truncated: tensor b ends at byte 24 of the data section but it has only 20`);
    // a real file cut short in its data
    const q = tmp();
    writeSafetensors(q, [{ name: "x", dtype: "F32", shape: [8], data: new Float32Array(8) }]);
    const full = fs.readFileSync(q);
    fs.writeFileSync(q, full.subarray(0, full.length - 1));
    await expect(open(q)).rejects.toThrow(/truncated: tensor x ends at byte 32 of the data section but it has only 31/);
  });

  it("unknown tensor name", async () => {
    const p = tmp();
    writeSafetensors(p, [{ name: "x", dtype: "U8", shape: [1], data: new Uint8Array(1) }]);
    const st = await open(p);
    await expect(st.readF32("y")).rejects.toThrow(`${p}: no tensor named y`);
    expect(() => st.info("y")).toThrow(SafetensorsError);
    st.close();
    st.close(); // idempotent
  });
});
