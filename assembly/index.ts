// Kernel module entry. Every kernel is `export function name(tid: i32, nt: i32, ...ptrs/sizes): void`:
// it does thread tid's share of the work out of nt threads, on raw pointers into the shared memory.
// Kernels allocate nothing and keep no state in globals, so any worker can run any share.
export * from "./probe";
export * from "./elementwise";
export * from "./gemm";
export * from "./norm";
export * from "./attention";
export * from "./quantize";
export * from "./gemm_int8";
export * from "./gemm_bf16";
export * from "./pooling";
export * from "./norm_backward";
export * from "./attention_backward";
export * from "./elementwise_backward";
export * from "./gemm_backward";
export * from "./quantize_backward";
export * from "./attention_int8";
export * from "./optim";
