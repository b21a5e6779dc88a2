// Messages between the demo page (page.ts, main thread) and its engine worker (engine-worker.ts). The page
// only draws; the worker owns the pipeline, checks every input and reports what happens.

/** One image to make; every field as the page's form (or query string) gave it, checked by the worker. */
export interface GenerateRequest {
  /** The model folder's absolute URL. */
  model: string;
  prompt: string;
  negativePrompt: string;
  seed: string;
  steps: string;
  guidance: string;
  /** A scheduler name, or "" for the model's own. */
  scheduler: string;
  /** fp32 | bf16 | int8 | mixed:K | a schedule such as bf16*5,int8*40,bf16*5. */
  precision: string;
  threads: number;
}

export type ToWorker = { type: "generate"; request: GenerateRequest };

/** Per-phase wall-clock milliseconds of one image. */
export interface Timings {
  /** Loading the model (0 when the loaded pipeline was reused). */
  loadMs: number;
  textMs: number;
  /** UNet calls (with their scheduler steps) by precision. */
  unet: { precision: string; calls: number; ms: number }[];
  decodeMs: number;
  encodeMs: number;
  totalMs: number;
}

export type FromWorker =
  /** The worker's module graph loaded (the library bundle included). */
  | { type: "ready" }
  | { type: "phase"; phase: "loading" | "generating" | "encoding"; detail: string }
  /** Something the user should know that does not stop the run (e.g. a prompt cut to CLIP's 77 tokens). */
  | { type: "warning"; message: string }
  /** The engine that runs the image. */
  | { type: "engine"; threads: number; simd: string; probe: string; memoryMiB: number; reused: boolean }
  /** The run's precision per denoising step, and how many UNet calls it makes (PNDM: one more). */
  | { type: "plan"; precisions: string[]; calls: number; schedule: string; scheduler: string; seed: number }
  | { type: "step"; step: number; total: number; denoisingStep: number; precision: string; stepMs: number; elapsedMs: number }
  | { type: "done"; png: Uint8Array; width: number; height: number; timings: Timings }
  | { type: "error"; message: string };
