// The kernels and the ops agree on their contract (assembly/abi.ts): the sizes both sides compute, and every
// kernel call's argument count (Engine.run checks it against the kernel's wasm signature).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { attBK, attBwdFixedFloats, attBwdQTile, gnTiles, lnBlockRows } from "../src/nn/tiling.ts";

describe("kernel ABI", () => {
  let eng: Engine;
  beforeAll(async () => {
    eng = await Engine.create({ threads: 1, memoryBytes: 8 << 20 });
  });
  afterAll(() => eng.close());

  it("attention keys per tile and GroupNorm tiles match the kernels' for every size", async () => {
    const ex = eng.pool.exports;
    const keys = ex.abi_att_keys_per_tile as (d: number) => number;
    const tiles = ex.abi_gn_tiles as (hw: number) => number;
    for (let d = 1; d <= 512; d++) expect(attBK(d), `D=${d}`).toBe(keys(d));
    for (const hw of [1, 2, 63, 64, 65, 255, 256, 4096, 16383, 16384, 16385, 65536, 1 << 20, 5000000]) expect(gnTiles(hw), `HW=${hw}`).toBe(tiles(hw));
  });

  it("backward work cuts match the kernels': LayerNorm blocks, attention-backward query tiles and scratch", async () => {
    const ex = eng.pool.exports;
    const blocks = ex.abi_ln_block_rows as (rows: number) => number;
    const qTile = ex.abi_att_bwd_q_tile as (d: number) => number;
    const fixed = ex.abi_att_bwd_fixed_floats as (d: number) => number;
    for (const rows of [1, 31, 32, 33, 8191, 8192, 8193, 1 << 16, 1 << 20]) expect(lnBlockRows(rows), `rows=${rows}`).toBe(blocks(rows));
    for (let d = 1; d <= 512; d++) {
      expect(attBwdQTile(d), `D=${d}`).toBe(qTile(d));
      expect(attBwdFixedFloats(d), `D=${d}`).toBe(fixed(d));
    }
  });

  it("a kernel called with the wrong number of arguments fails instead of running", async () => {
    const x = eng.zeros([8]);
    expect(() => eng.run("unary_f32", x.ptr, x.ptr, 8, 0)).toThrow(/unary_f32 takes 5 arguments after \(tid, nt\), got 4/);
    expect(() => eng.run("no_such_kernel")).toThrow(/no kernel named no_such_kernel/);
    x.free();
  });
});
