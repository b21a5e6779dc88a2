// Thread pool over one shared WebAssembly.Memory. The calling thread is thread 0 and runs its share
// too; workers 1..n-1 wait on a job counter in a small SharedArrayBuffer. run() is synchronous: it
// returns when every thread has finished its share, so model code reads as plain sequential calls.
// Each kernel partitions its output statically by (tid, nt) and never reduces across threads in a
// thread-count-dependent order, which is what keeps results bit-identical for any thread count.

import { canBlock, startWorker, type WorkerHandle } from "./env.ts";

const SEQ = 0, KERNEL = 1, NARGS = 2, DONE = 3, ERR = 4, NT = 5, QUIT = 6;
const MAX_ARGS = 32;
const SPINS = 20000;

type KernelFn = (...args: number[]) => void;

export class KernelError extends Error {}

/**
 * A control buffer the workers share. A browser page that is not cross-origin isolated has no
 * SharedArrayBuffer (its shared wasm memory still works, on one thread): a pool of one shares nothing.
 */
function controlBuffer(bytes: number): ArrayBufferLike {
  return typeof SharedArrayBuffer === "function" ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
}

export class ThreadPool {
  private ctrl = new Int32Array(controlBuffer(64));
  private argsBuf = controlBuffer(MAX_ARGS * 8);
  private args = new Float64Array(this.argsBuf);
  private errBuf = controlBuffer(1024);
  private workers: WorkerHandle[] = [];
  private closed = false;
  /** Browsers forbid Atomics.wait on the main thread: spin there instead. */
  private canWait = true;

  private constructor(
    readonly threads: number,
    private fns: KernelFn[],
    private names: string[],
    /** The calling thread's instance exports (kernels and the abi_* helpers). */
    readonly exports: WebAssembly.Exports,
  ) {}

  static async create(threads: number, module: WebAssembly.Module, memory: WebAssembly.Memory, mainInstance: WebAssembly.Instance): Promise<ThreadPool> {
    if (threads > 1 && typeof SharedArrayBuffer !== "function")
      throw new KernelError(`${threads} threads need SharedArrayBuffer, which this host does not offer (a browser page must be cross-origin isolated: COOP/COEP headers); use 1 thread`);
    const names = Object.keys(mainInstance.exports).filter((n) => typeof mainInstance.exports[n] === "function");
    const fns = names.map((n) => mainInstance.exports[n] as KernelFn);
    const pool = new ThreadPool(threads, fns, names, mainInstance.exports);
    const url = new URL("./worker.js", import.meta.url);
    const starts: Promise<WorkerHandle>[] = [];
    for (let tid = 1; tid < threads; tid++) {
      const init = { module, memory, ctrlBuf: pool.ctrl.buffer, argsBuf: pool.argsBuf, errBuf: pool.errBuf, tid, names };
      starts.push(startWorker(url, init));
    }
    // wait for every start, so a failure never leaves a half-started worker running
    const started = await Promise.allSettled(starts);
    for (const s of started) if (s.status === "fulfilled") pool.workers.push(s.value);
    const failed = started.find((s) => s.status === "rejected");
    if (failed) {
      pool.close();
      throw new KernelError(((failed as PromiseRejectedResult).reason as Error).message);
    }
    pool.canWait = canBlock();
    return pool;
  }

  kernelIndex(name: string): number {
    const i = this.names.indexOf(name);
    if (i < 0) throw new KernelError(`no kernel named ${name}`);
    return i;
  }

  /** Runs kernel `name` as fn(tid, nt, ...args) on every thread and returns when all are done. */
  run(name: string, args: number[]): void {
    if (this.closed) throw new KernelError("the engine was closed");
    const k = this.kernelIndex(name);
    const fn = this.fns[k];
    // a call with the wrong number of arguments would run on shifted pointers: wasm pads or drops silently
    if (fn.length !== args.length + 2) throw new KernelError(`${name} takes ${fn.length - 2} arguments after (tid, nt), got ${args.length}`);
    const nt = this.threads;
    if (nt === 1) {
      fn(0, 1, ...args);
      return;
    }
    if (args.length > MAX_ARGS) throw new KernelError(`${name}: ${args.length} arguments, at most ${MAX_ARGS}`);
    const ctrl = this.ctrl;
    for (let i = 0; i < args.length; i++) this.args[i] = args[i];
    Atomics.store(ctrl, KERNEL, k);
    Atomics.store(ctrl, NARGS, args.length);
    Atomics.store(ctrl, NT, nt);
    Atomics.store(ctrl, DONE, 0);
    Atomics.store(ctrl, ERR, 0);
    Atomics.add(ctrl, SEQ, 1);
    Atomics.notify(ctrl, SEQ);
    let mainError: unknown = null;
    try {
      fn(0, nt, ...args);
    } catch (e) {
      mainError = e;
    }
    let spins = 0;
    let d: number;
    while ((d = Atomics.load(ctrl, DONE)) !== nt - 1) {
      if (this.canWait && ++spins > SPINS) Atomics.wait(ctrl, DONE, d, 100);
    }
    if (mainError) throw new KernelError(`kernel ${name} failed on thread 0: ${(mainError as Error).message ?? mainError}`);
    const bad = Atomics.load(ctrl, ERR);
    if (bad) {
      const bytes = new Uint8Array(this.errBuf).slice();
      const end = bytes.indexOf(0);
      const msg = new TextDecoder().decode(bytes.subarray(0, end < 0 ? bytes.length : end));
      throw new KernelError(`kernel ${name} failed on thread ${bad - 1}: ${msg}`);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.ctrl, QUIT, 1);
    Atomics.add(this.ctrl, SEQ, 1);
    Atomics.notify(this.ctrl, SEQ);
    for (const w of this.workers) w.terminate();
    this.workers = [];
  }
}
