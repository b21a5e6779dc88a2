// Allocator for the one shared wasm memory (which never grows: growing a shared memory leaves
// other threads' views stale). Best-fit over a sorted free list with coalescing, 64-byte aligned
// blocks (cache lines; SIMD loads stay aligned). Weights live for the model's lifetime; activations
// are freed by scopes (Engine.scope), so a UNet call returns the memory to one block and repeated
// calls do not fragment it. Best-fit keeps the big weight blocks apart from short-lived activations.

export const ALIGN = 64;

export class OutOfMemoryError extends Error {}

const MiB = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;

export class Arena {
  /** Free blocks sorted by start: parallel arrays of start and size. */
  private freeStart: number[] = [];
  private freeSize: number[] = [];
  private sizes = new Map<number, number>();
  used = 0;
  peak = 0;

  constructor(readonly base: number, readonly capacity: number) {
    this.freeStart.push(base);
    this.freeSize.push(capacity);
  }

  alloc(bytes: number): number {
    if (!(bytes >= 0) || !Number.isFinite(bytes)) throw new RangeError(`alloc: invalid size ${bytes}`);
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    let best = -1;
    for (let i = 0; i < this.freeSize.length; i++) {
      const s = this.freeSize[i];
      if (s >= size && (best < 0 || s < this.freeSize[best])) {
        best = i;
        if (s === size) break;
      }
    }
    if (best < 0) {
      const free = this.capacity - this.used;
      const largest = this.freeSize.reduce((a, b) => Math.max(a, b), 0);
      throw new OutOfMemoryError(
        `out of engine memory: asked ${MiB(bytes)}, ${MiB(free)} free of ${MiB(this.capacity)} (largest free block ${MiB(largest)}); ` +
          `start the engine with more memory (memoryBytes / --memory)`,
      );
    }
    const ptr = this.freeStart[best];
    if (this.freeSize[best] === size) {
      this.freeStart.splice(best, 1);
      this.freeSize.splice(best, 1);
    } else {
      this.freeStart[best] += size;
      this.freeSize[best] -= size;
    }
    this.sizes.set(ptr, size);
    this.used += size;
    if (this.used > this.peak) this.peak = this.used;
    return ptr;
  }

  free(ptr: number): void {
    const size = this.sizes.get(ptr);
    if (size === undefined) throw new Error(`free: ${ptr} is not an allocated block (double free?)`);
    this.sizes.delete(ptr);
    this.used -= size;
    // binary search for the insertion point
    let lo = 0, hi = this.freeStart.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.freeStart[mid] < ptr) lo = mid + 1;
      else hi = mid;
    }
    let start = ptr, len = size;
    const nextIsAdjacent = lo < this.freeStart.length && this.freeStart[lo] === ptr + size;
    const prevIsAdjacent = lo > 0 && this.freeStart[lo - 1] + this.freeSize[lo - 1] === ptr;
    if (prevIsAdjacent && nextIsAdjacent) {
      this.freeSize[lo - 1] += size + this.freeSize[lo];
      this.freeStart.splice(lo, 1);
      this.freeSize.splice(lo, 1);
    } else if (prevIsAdjacent) {
      this.freeSize[lo - 1] += size;
    } else if (nextIsAdjacent) {
      this.freeStart[lo] = start;
      this.freeSize[lo] += len;
    } else {
      this.freeStart.splice(lo, 0, start);
      this.freeSize.splice(lo, 0, len);
    }
  }

  isAllocated(ptr: number): boolean {
    return this.sizes.has(ptr);
  }

  /** Number of free blocks: 1 when nothing is fragmented. */
  get fragments(): number {
    return this.freeStart.length;
  }
}
