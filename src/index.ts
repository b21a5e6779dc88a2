// stepq library entry point.
//
//   import { StableDiffusionPipeline, encodePng } from "stepq";
//   const pipe = await StableDiffusionPipeline.load("models/fashion-sd-tiny", { threads: 4 });
//   const { image, width, height } = await pipe.generate({ prompt: "a photo of a sneaker", steps: 20, guidance: 4, seed: 1 });
//   fs.writeFileSync("sneaker.png", encodePng(image, width, height));
//   pipe.close();

// runtime
export { Engine, type EngineOptions, type SimdVariant, type ProbeResult } from "./runtime/engine.ts";
export { Tensor, type DType, DTYPE_BYTES } from "./runtime/tensor.ts";
export { OutOfMemoryError } from "./runtime/memory.ts";

// pipeline
export {
  StableDiffusionPipeline,
  PipelineError,
  estimatePipelineMemory,
  resolveDefaultModel,
  defaultModelCandidates,
  DEFAULT_MODEL,
  type PipelineLoadOptions,
  type GenerateOptions,
  type GenerateResult,
  type GenerateTimings,
  type StepInfo,
  type PromptEncoding,
} from "./pipeline/pipeline.ts";
export {
  createScheduler,
  schedulerFromConfig,
  parseSchedulerConfigJson,
  SCHEDULER_NAMES,
  SchedulerConfigError,
  PNDMScheduler,
  DDIMScheduler,
  EulerDiscreteScheduler,
  DPMSolverMultistepScheduler,
  type Scheduler,
  type SchedulerName,
  type SchedulerConfig,
} from "./pipeline/schedulers.ts";
export {
  parsePrecisionSpec,
  parsePrecisionSchedule,
  precisionsForSpec,
  formatSchedule,
  PrecisionScheduleError,
} from "./pipeline/precision.ts";
export { PRECISIONS, PrecisionError, CALIBRATION_FILE, type Precision } from "./models/precision.ts";
export { Rng } from "./runtime/random.ts";
export { encodePng, writePng, readPng, toRgb8, toByte } from "./pipeline/png.ts";
export { runVerify, formatResult, E2E_DEFAULT_TOLERANCE, type VerifyOptions, type VerifySummary, type CaseResult, type Check } from "./pipeline/verify.ts";

// models
export { ClipTokenizer, TokenizerError, type EncodeOptions, type EncodeResult } from "./models/tokenizer.ts";
export { ClipTextModel, type ClipTextOutput } from "./models/clip.ts";
export { UNet, type UNetForwardOptions } from "./models/unet.ts";
export { Vae, type VaeLoadOptions } from "./models/vae.ts";
export { WeightStore, WeightError } from "./models/weights.ts";
export { nchwToNhwc, nhwcToNchw, tensorFromNCHW, tensorToNCHW } from "./models/layout.ts";

// files
export { SafetensorsFile, SafetensorsError, writeSafetensors, type TensorInfo, type TensorToWrite, type StDtype } from "./io/safetensors.ts";
export {
  loadPipelineIndex,
  loadComponentConfig,
  loadUNetConfig,
  loadVaeConfig,
  loadClipTextConfig,
  findWeights,
  DiffusersError,
  SD15_UNET_CONFIG,
  SD21_UNET_CONFIG,
  type PipelineIndex,
  type UNetConfig,
  type VaeConfig,
  type ClipTextConfig,
} from "./io/diffusers.ts";
export { openGolden, maxAbsRelToMax, type GoldenSet } from "./io/golden.ts";
