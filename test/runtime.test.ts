import { describe, it, expect, afterAll } from "vitest";
import { Engine } from "../src/runtime/engine.ts";
import { Arena, OutOfMemoryError } from "../src/runtime/memory.ts";

describe("engine runtime", () => {
  const engines: Engine[] = [];
  afterAll(() => engines.forEach((e) => e.close()));

  it("selects relaxed SIMD when the probe passes (this process runs with the launcher's flags, bin/engine-flags.js)", async () => {
    const e = await Engine.create({ threads: 2, simd: "auto", memoryBytes: 64 << 20 });
    engines.push(e);
    expect(e.probe.ok).toBe(true);
    expect(e.simd).toBe("relaxed");
  });

  for (const simd of ["baseline", "relaxed"] as const)
    for (const threads of [1, 2, 4])
      it(`add_f32 is exact for ${threads} threads (${simd})`, async () => {
        const e = await Engine.create({ threads, simd, memoryBytes: 64 << 20 });
        engines.push(e);
        const n = 1003;
        const a = e.fromArray(Float32Array.from({ length: n }, (_, i) => i * 0.5), [n]);
        const b = e.fromArray(Float32Array.from({ length: n }, (_, i) => -i), [n]);
        const c = e.empty([n]);
        e.run("add_f32", a.ptr, b.ptr, c.ptr, n);
        expect(Array.from(c.f32())).toEqual(Array.from({ length: n }, (_, i) => i * 0.5 - i));
      });

  it("a kernel that traps fails the call and the pool stays usable", async () => {
    const e = await Engine.create({ threads: 2, memoryBytes: 64 << 20 });
    engines.push(e);
    // out of bounds: pointer past the end of memory traps in whichever thread touches it
    expect(() => e.run("add_f32", 0xfffffff0, 0, 0, 1 << 20)).toThrow(/kernel add_f32 failed on thread \d/);
    const a = e.fromArray([1, 2, 3], [3]);
    const c = e.empty([3]);
    e.run("add_f32", a.ptr, a.ptr, c.ptr, 3);
    expect(Array.from(c.f32())).toEqual([2, 4, 6]);
  });

  it("unknown kernel names and bad options give clear errors", async () => {
    const e = await Engine.create({ threads: 1, memoryBytes: 64 << 20 });
    engines.push(e);
    expect(() => e.run("nope")).toThrow(/no kernel named nope/);
    await expect(Engine.create({ threads: 0 })).rejects.toThrow(/threads/);
    await expect(Engine.create({ memoryBytes: 8 * 2 ** 30 })).rejects.toThrow(/memoryBytes/);
  });

  it("scopes free temporaries and keep returned tensors", async () => {
    const e = await Engine.create({ threads: 1, memoryBytes: 64 << 20 });
    engines.push(e);
    const before = e.stats().used;
    const kept = e.scope(() => {
      e.empty([1000]);
      const inner = e.scope(() => {
        e.empty([500]);
        return e.empty([10]);
      });
      e.empty([2000]);
      return inner;
    });
    expect(kept.isFreed).toBe(false);
    expect(e.stats().used - before).toBe(64);
    kept.free();
    expect(e.stats().used).toBe(before);
    expect(e.stats().fragments).toBe(1);
  });
});

describe("arena allocator", () => {
  it("coalesces freed blocks back into one", async () => {
    const a = new Arena(1024, 1 << 20);
    const ptrs = Array.from({ length: 50 }, (_, i) => a.alloc(100 + i * 37));
    for (let i = 0; i < 50; i += 2) a.free(ptrs[i]);
    for (let i = 1; i < 50; i += 2) a.free(ptrs[i]);
    expect(a.used).toBe(0);
    expect(a.fragments).toBe(1);
    expect(a.alloc(1 << 20)).toBe(1024);
  });

  it("reports how much was asked and what is free when memory is exhausted", async () => {
    const a = new Arena(0, 1 << 20);
    a.alloc(600 << 10);
    expect(() => a.alloc(600 << 10)).toThrow(OutOfMemoryError);
    expect(() => a.alloc(600 << 10)).toThrow(/asked 600\.0 MiB|asked 0\.6 MiB/);
    expect(() => a.alloc(600 << 10)).toThrow(/free of 1\.0 MiB/);
  });

  it("rejects double free", async () => {
    const a = new Arena(0, 1 << 20);
    const p = a.alloc(10);
    a.free(p);
    expect(() => a.free(p)).toThrow(/double free/);
  });
});

describe("persistent allocations", () => {
  it("survive the scope they were made in", async () => {
    const e = await Engine.create({ threads: 1, memoryBytes: 64 << 20 });
    const w = e.scope(() => {
      const p = e.persistent(() => e.empty([100]));
      e.empty([100]);
      return null;
    });
    expect(w).toBe(null);
    expect(e.stats().used).toBe(448); // the persistent one (400 B → 448 aligned) stays
    e.close();
  });
});

describe("scopes and errors", () => {
  it("a scope that throws frees what it allocated", async () => {
    const e = await Engine.create({ threads: 1, memoryBytes: 64 << 20 });
    const before = e.stats().used;
    expect(() =>
      e.scope(() => {
        e.empty([1000]);
        e.empty([1 << 30]); // out of memory
      }),
    ).toThrow(/out of engine memory/);
    expect(e.stats().used).toBe(before);
    e.close();
  });
});
