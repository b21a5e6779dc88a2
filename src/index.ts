// stepq library entry point (Node, Deno and, bundled as dist/stepq.browser.js, browsers).
//
//   import { StableDiffusionPipeline, writePng } from "stepq";
//   const pipe = await StableDiffusionPipeline.load("models/fashion-sd-tiny", { threads: 4 });
//   const { image, width, height } = await pipe.generate({ prompt: "a photo of a sneaker", steps: 20, guidance: 4, seed: 1 });
//   writePng("sneaker.png", image, width, height);
//   pipe.close();
//
// A model folder may also be an http(s) URL it is served from (src/io/source.ts).

// runtime
export { Engine, type EngineOptions, type SimdVariant, type ProbeResult } from "./runtime/engine.ts";
export { Tensor, type DType, DTYPE_BYTES } from "./runtime/tensor.ts";
export { OutOfMemoryError } from "./runtime/memory.ts";
export { Rng } from "./runtime/random.ts";
export { runtime, runtimeName, setKernelLocation, type RuntimeKind } from "./runtime/env.ts";

// pipeline
export {
  StableDiffusionPipeline,
  PipelineError,
  estimatePipelineMemory,
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
export { PrecisionSchedule, parsePrecisionSpec, parsePrecisionSchedule, precisionsForSpec, formatSchedule, PrecisionScheduleError } from "./pipeline/schedule.ts";
export { toRgb8, toByte } from "./pipeline/image.ts";

// models
export { PRECISIONS, PrecisionError, type Precision } from "./models/precision.ts";
export { CALIBRATION_FILE } from "./models/calibration.ts";
export { ClipTokenizer, TokenizerError, type EncodeOptions, type EncodeResult } from "./models/tokenizer.ts";
export { ClipTextModel, type ClipTextOutput } from "./models/clip.ts";
export { UNet, type UNetForwardOptions } from "./models/unet.ts";
export { Vae, type VaeLoadOptions } from "./models/vae.ts";
export { loadUNet, loadVae, loadClipTextModel, type UNetLoadOptions } from "./models/loader.ts";
export { WeightStore, WeightError } from "./models/weights.ts";
export { nchwToNhwc, nhwcToNchw, tensorFromNCHW, tensorToNCHW } from "./models/layout.ts";
export {
  loadUNetConfig,
  loadVaeConfig,
  loadClipTextConfig,
  SD15_UNET_CONFIG,
  SD21_UNET_CONFIG,
  type UNetConfig,
  type VaeConfig,
  type ClipTextConfig,
} from "./models/config.ts";

// files
export { SafetensorsFile, SafetensorsError, writeSafetensors, type TensorInfo, type TensorToWrite, type StDtype } from "./io/safetensors.ts";
export { loadPipelineIndex, loadComponentConfig, findWeights, DiffusersError, type PipelineIndex } from "./io/diffusers.ts";
export { openSource, SourceError, type ByteSource } from "./io/source.ts";
export { encodePng, decodePng, writePng, readPng } from "./io/png.ts";
export { writeFileAtomic, copyFileAtomic, WriteError } from "./io/files.ts";
export { checkOutputFile, checkOutputFolder, OutputError, type OutputKind } from "./io/outputs.ts";
export { openGolden, maxAbsRelToMax, type GoldenSet } from "./io/golden.ts";
export { resolveDefaultModel, defaultModelCandidates, DEFAULT_MODEL } from "./io/places.ts";

// tools
export { runVerify, formatResult, E2E_DEFAULT_TOLERANCE, type VerifyOptions, type VerifySummary, type CaseResult, type Check } from "./tools/verify.ts";
