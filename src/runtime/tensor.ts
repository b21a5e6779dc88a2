// A tensor is a block of the engine's shared memory with a shape and dtype. Activations use NHWC
// (channels last) for the whole engine: conv as implicit GEMM reads contiguous channel vectors,
// GroupNorm reduces contiguous channel groups, and a [B,H,W,C] map is already the [B,H*W,C] token
// sequence attention and linear layers need, so no transposes sit between conv and attention.
import type { Engine } from "./engine.ts";

export type DType = "f32" | "bf16" | "i8" | "u8" | "i32";

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, bf16: 2, i8: 1, u8: 1, i32: 4 };

export class Tensor {
  private freed = false;
  /** Holders that need the data to outlive free() (a gradient tape's saved tensors); see retain(). */
  private holds = 0;
  private freeWhenReleased = false;

  constructor(
    readonly engine: Engine,
    readonly ptr: number,
    readonly shape: readonly number[],
    readonly dtype: DType = "f32",
    /** The tensor whose memory this one views (reshape); views never free. */
    readonly base: Tensor | null = null,
  ) {}

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get bytes(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  get isFreed(): boolean {
    return this.freed;
  }

  /** A live view of the data (valid until freed; the memory never grows, so views never go stale). */
  f32(): Float32Array {
    this.check("f32");
    return new Float32Array(this.engine.memory.buffer, this.ptr, this.size);
  }

  i8(): Int8Array {
    this.check("i8");
    return new Int8Array(this.engine.memory.buffer, this.ptr, this.size);
  }

  u8(): Uint8Array {
    this.check("u8");
    return new Uint8Array(this.engine.memory.buffer, this.ptr, this.size);
  }

  u16(): Uint16Array {
    this.check("bf16");
    return new Uint16Array(this.engine.memory.buffer, this.ptr, this.size);
  }

  i32(): Int32Array {
    this.check("i32");
    return new Int32Array(this.engine.memory.buffer, this.ptr, this.size);
  }

  /** A copy of the data as a plain Float32Array (f32 tensors). */
  toArray(): Float32Array {
    return this.f32().slice();
  }

  /** Same memory, another shape of the same size. The view does not own the memory. */
  reshape(shape: number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== this.size) throw new Error(`reshape: [${this.shape}] (${this.size}) to [${shape}] (${n})`);
    return new Tensor(this.engine, this.ptr, shape, this.dtype, this.base ?? this);
  }

  free(): void {
    if (this.freed || this.base) return;
    if (this.holds > 0) {
      // a holder still needs the data: free when the last one releases it
      this.freeWhenReleased = true;
      return;
    }
    this.freed = true;
    this.engine.free(this.ptr);
  }

  /**
   * Keeps the memory alive through free() until release(): a gradient tape retains the tensors an op saved for
   * its backward pass, while the model code frees them as usual when its block ends. Views retain their base.
   */
  retain(): void {
    const t = this.base ?? this;
    if (t.freed) throw new Error("retain: tensor used after free");
    t.holds++;
  }

  /** Drops one retain(); frees the memory if free() was called meanwhile. */
  release(): void {
    const t = this.base ?? this;
    if (t.holds <= 0) throw new Error("release: the tensor is not retained");
    if (--t.holds === 0 && t.freeWhenReleased) {
      t.freeWhenReleased = false;
      t.free();
    }
  }

  private check(want: DType) {
    if (this.freed || this.base?.freed) throw new Error("tensor used after free");
    if (this.dtype !== want) throw new Error(`tensor is ${this.dtype}, not ${want}`);
  }
}
