// The engine: one shared WebAssembly.Memory (allocated once at its full size), the kernel module
// compiled once (relaxed SIMD when the startup probe passes, baseline SIMD otherwise), a thread pool
// that shares both, and the allocator. Everything above (src/nn) calls kernels through run().
import { Arena } from "./memory.ts";
import { ThreadPool } from "./threads.ts";
import { defaultThreads, loadKernelBytes } from "./env.ts";
import { Tensor, DTYPE_BYTES, type DType } from "./tensor.ts";

export type SimdVariant = "baseline" | "relaxed";

export interface EngineOptions {
  /** Threads including the calling one (default: the machine's core count). */
  threads?: number;
  /** Size of the shared memory in bytes, at most 4 GiB (default 512 MiB). */
  memoryBytes?: number;
  /** "auto" (default) probes relaxed SIMD and falls back to baseline; "relaxed" fails if the probe fails. */
  simd?: "auto" | SimdVariant;
}

const PAGE = 65536;
const MAX_PAGES = 65536;
/** Low memory holds the kernel module's static data and the probe scratch; tensors start above it. */
const RESERVED = 1 << 20;
const PROBE_SCRATCH = 1 << 19;

/** One op as the nn layer reports it to a GradRecorder. */
export interface RecordedOp {
  /** The op, for messages ("linear", "groupNorm", ...). */
  name: string;
  /** Tensors gradients may flow to (activations, parameters); null for inputs that take none. */
  inputs: readonly (Tensor | null)[];
  outputs: readonly Tensor[];
  /** Tensors backward reads: the recorder keeps them alive (Tensor.retain) until backward has run. */
  saved: readonly Tensor[];
  /** Gradients of the outputs (zeros where none flowed) -> gradients of the inputs (null: none). */
  backward(gradOutputs: readonly Tensor[]): (Tensor | null)[];
}

/**
 * What a gradient recorder (src/train/tape.ts) offers the layers below it. While one is set on an engine
 * (Engine.grad), every nn op it runs on tensors that need gradients reports itself (record), and model code
 * can mark blocks whose activations are recomputed in the backward pass instead of kept (checkpoint).
 */
export interface GradRecorder {
  /** Whether gradients flow to t: a parameter, or an output of a recorded op with such an input. */
  requiresGrad(t: Tensor): boolean;
  record(op: RecordedOp): void;
  /** Runs fn(); when gradient checkpointing is on, recomputes it in the backward pass rather than keeping what it saves. */
  checkpoint<T extends Tensor | Tensor[]>(inputs: readonly Tensor[], fn: () => T): T;
  /** True while a checkpointed block runs again inside the backward pass (ops must not repeat side effects such as observer updates). */
  readonly recomputing: boolean;
}

export interface ProbeResult {
  ok: boolean;
  reason: string;
}

export class Engine {
  /** Innermost last; null marks an unscoped region (see persistent()). */
  private scopes: (Set<Tensor> | null)[] = [];

  private constructor(
    readonly memory: WebAssembly.Memory,
    readonly simd: SimdVariant,
    readonly probe: ProbeResult,
    readonly pool: ThreadPool,
    readonly arena: Arena,
  ) {}

  static async create(opts: EngineOptions = {}): Promise<Engine> {
    const threads = opts.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw new RangeError(`threads must be an integer from 1 to 256, got ${threads}`);
    const bytes = opts.memoryBytes ?? 512 * 1024 * 1024;
    const pages = Math.ceil(bytes / PAGE);
    if (!(pages >= 32 && pages <= MAX_PAGES)) throw new RangeError(`memoryBytes must be from 2 MiB to 4 GiB, got ${bytes}`);
    let memory: WebAssembly.Memory;
    try {
      memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    } catch (e) {
      throw new Error(`could not allocate ${(pages * PAGE / 1048576).toFixed(0)} MiB of shared wasm memory: ${(e as Error).message}`);
    }
    const want = opts.simd ?? "auto";
    let probe: ProbeResult = { ok: false, reason: "not probed (baseline requested)" };
    let module: WebAssembly.Module | null = null;
    let instance: WebAssembly.Instance | null = null;
    if (want !== "baseline") {
      probe = { ok: false, reason: "" };
      try {
        module = new WebAssembly.Module(await loadKernelBytes("relaxed"));
        instance = new WebAssembly.Instance(module, { env: { memory } });
        probe = probeRelaxed(instance, memory);
      } catch (e) {
        probe = { ok: false, reason: `relaxed module does not compile here (${(e as Error).message})` };
      }
      if (!probe.ok) {
        if (want === "relaxed") throw new Error(`relaxed SIMD requested but unusable: ${probe.reason}`);
        module = instance = null;
      }
    }
    if (!module) {
      module = new WebAssembly.Module(await loadKernelBytes("baseline"));
      instance = new WebAssembly.Instance(module, { env: { memory } });
    }
    const pool = await ThreadPool.create(threads, module, memory, instance!);
    const arena = new Arena(RESERVED, pages * PAGE - RESERVED);
    return new Engine(memory, probe.ok ? "relaxed" : "baseline", probe, pool, arena);
  }

  get threads(): number {
    return this.pool.threads;
  }

  /** The gradient recorder of a training step (src/train), or null: ops only compute. */
  grad: GradRecorder | null = null;

  /**
   * Op timer: when set to a Map, run() adds each kernel call's count and wall-clock milliseconds under the
   * kernel's name (`stepq bench unet --profile`). null (the default) costs one check per call.
   */
  profile: Map<string, { calls: number; ms: number }> | null = null;

  /** Runs a kernel on all threads: fn(tid, nt, ...args). Synchronous. */
  run(kernel: string, ...args: number[]): void {
    if (this.profile === null) {
      this.pool.run(kernel, args);
      return;
    }
    const t0 = performance.now();
    this.pool.run(kernel, args);
    const ms = performance.now() - t0;
    const e = this.profile.get(kernel);
    if (e) {
      e.calls++;
      e.ms += ms;
    } else this.profile.set(kernel, { calls: 1, ms });
  }

  alloc(bytes: number): number {
    return this.arena.alloc(bytes);
  }

  free(ptr: number): void {
    this.arena.free(ptr);
  }

  /** A new uninitialised tensor, owned by the innermost scope if there is one. */
  empty(shape: readonly number[], dtype: DType = "f32"): Tensor {
    for (const d of shape) if (!Number.isInteger(d) || d < 0) throw new RangeError(`invalid shape [${shape}]`);
    const n = shape.reduce((a, b) => a * b, 1);
    const t = new Tensor(this, this.alloc(n * DTYPE_BYTES[dtype]), shape.slice(), dtype);
    this.scopes[this.scopes.length - 1]?.add(t);
    return t;
  }

  zeros(shape: readonly number[], dtype: DType = "f32"): Tensor {
    const t = this.empty(shape, dtype);
    new Uint8Array(this.memory.buffer, t.ptr, t.bytes).fill(0);
    return t;
  }

  /** A tensor holding a copy of data. */
  fromArray(data: ArrayLike<number>, shape: readonly number[], dtype: DType = "f32"): Tensor {
    const t = this.empty(shape, dtype);
    if (data.length !== t.size) throw new RangeError(`fromArray: ${data.length} values for shape [${shape}] (${t.size})`);
    const view = dtype === "f32" ? t.f32() : dtype === "i8" ? t.i8() : dtype === "u8" ? t.u8() : dtype === "i32" ? t.i32() : t.u16();
    view.set(data as any);
    return t;
  }

  /**
   * Runs fn and frees every tensor it allocated except those it returns (a tensor, or tensors in a
   * returned array or object), which move to the enclosing scope. Model forward code wraps blocks in
   * scopes so temporaries go back to the allocator as soon as the block is done.
   */
  scope<T>(fn: () => T): T {
    const mine = new Set<Tensor>();
    this.scopes.push(mine);
    let result: T;
    try {
      result = fn();
    } catch (e) {
      // a failed block (e.g. out of memory mid-step) must not leak what it allocated
      for (const t of mine) t.free();
      throw e;
    } finally {
      this.scopes.pop();
    }
    const kept = new Set<Tensor>();
    const collect = (v: unknown) => {
      if (v instanceof Tensor) kept.add(v.base ?? v);
    };
    if (result instanceof Tensor) collect(result);
    else if (Array.isArray(result)) result.forEach(collect);
    else if (result && typeof result === "object") Object.values(result).forEach(collect);
    const parent = this.scopes[this.scopes.length - 1];
    for (const t of mine) {
      if (kept.has(t)) parent?.add(t);
      else t.free();
    }
    return result;
  }

  /**
   * Runs fn with allocations owned by no scope: for weights and other long-lived data prepared while
   * a scope may be open (loading a model inside a scoped block must not free its weights at the end).
   */
  persistent<T>(fn: () => T): T {
    this.scopes.push(null);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /** Memory statistics in bytes. */
  stats() {
    return { used: this.arena.used, peak: this.arena.peak, capacity: this.arena.capacity, fragments: this.arena.fragments };
  }

  close(): void {
    this.pool.close();
  }
}

/** Runs the relaxed ops on fixed inputs and checks the lanes against the results the kernels rely on. */
function probeRelaxed(instance: WebAssembly.Instance, memory: WebAssembly.Memory): ProbeResult {
  (instance.exports.probe_relaxed as (p: number) => void)(PROBE_SCRATCH);
  const i32 = new Int32Array(memory.buffer, PROBE_SCRATCH, 4);
  const dot = [1020, 1053, 1086, 1119];
  for (let i = 0; i < 4; i++)
    if (i32[i] !== dot[i]) return { ok: false, reason: `i32x4.relaxed_dot_i8x16_i7x16_add_s gave [${Array.from(i32)}], expected [${dot}] (run Node with --no-liftoff)` };
  const f32 = new Float32Array(memory.buffer, PROBE_SCRATCH + 16, 4);
  const fused = -(2 ** -46);
  for (let i = 0; i < 4; i++)
    if (f32[i] !== fused) return { ok: false, reason: `f32x4.relaxed_madd is not fused here (lane ${i} = ${f32[i]})` };
  return { ok: true, reason: "relaxed dot and fused madd verified" };
}
