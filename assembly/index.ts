// Kernel module entry. Every kernel is `export function name(tid: i32, nt: i32, ...ptrs/sizes): void`:
// it does thread tid's share of the work out of nt threads, on raw pointers into the shared memory.
// Kernels allocate nothing and keep no state in globals, so any worker can run any share.
export * from "./probe";
export * from "./elementwise";
export * from "./gemm";
