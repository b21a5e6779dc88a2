// Diffusers folder layout: model_index.json, <component>/config.json (scheduler/scheduler_config.json),
// <component>/*.safetensors. Folders are locations (source.ts): a path, or a URL a model is served from.
// The typed component configs and their support rules are in src/models/config.ts.
import { readJsonObject } from "./json.ts";
import { fileExists, folderExists, joinLocation, listFiles, statLocation } from "./source.ts";

export class DiffusersError extends Error {}

// ---------------------------------------------------------------------------------------------------------
// model_index.json

export interface ComponentRef {
  /** "diffusers", "transformers", ... */
  library: string;
  className: string;
}

export interface PipelineIndex {
  dir: string;
  file: string;
  /** _class_name, e.g. "StableDiffusionPipeline". */
  className: string;
  diffusersVersion?: string;
  /** Components listed as [library, class]; [null, null] entries (e.g. safety_checker) are left out. */
  components: Record<string, ComponentRef>;
  /** The whole parsed model_index.json. */
  raw: Record<string, any>;
}

export const SD_PIPELINE_COMPONENTS = ["tokenizer", "text_encoder", "unet", "vae", "scheduler"] as const;

/**
 * Reads `<dir>/model_index.json` and checks that each `required` component is listed and has its folder.
 * Errors name the file: missing, bad JSON, missing component, missing component folder.
 */
export async function loadPipelineIndex(dir: string, required: readonly string[] = SD_PIPELINE_COMPONENTS): Promise<PipelineIndex> {
  if (!(await folderExists(dir))) throw new DiffusersError(`${dir}: model folder not found`);
  const file = joinLocation(dir, "model_index.json");
  if ((await statLocation(file)).kind === "missing")
    throw new DiffusersError(`${file}: not found (expected a diffusers pipeline folder with model_index.json)`);
  const raw = await readJsonObject(file, DiffusersError);
  const components: Record<string, ComponentRef> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k.startsWith("_") || !Array.isArray(v)) continue;
    if (v.length !== 2) throw new DiffusersError(`${file}: component "${k}" should be [library, class], got ${JSON.stringify(v)}`);
    if (v[0] === null && v[1] === null) continue;
    if (typeof v[0] !== "string" || typeof v[1] !== "string")
      throw new DiffusersError(`${file}: component "${k}" should be [library, class], got ${JSON.stringify(v)}`);
    components[k] = { library: v[0], className: v[1] };
  }
  for (const c of required) {
    if (!components[c]) throw new DiffusersError(`${file}: missing component "${c}"`);
    const cdir = joinLocation(dir, c);
    if (!(await folderExists(cdir)))
      throw new DiffusersError(`${cdir}: component folder not found (${c} is listed in ${file})`);
  }
  return {
    dir,
    file,
    className: typeof raw._class_name === "string" ? raw._class_name : "",
    diffusersVersion: typeof raw._diffusers_version === "string" ? raw._diffusers_version : undefined,
    components,
    raw,
  };
}

/** Component classes the engine implements, by component name. */
export const SUPPORTED_COMPONENT_CLASSES: Record<string, readonly string[]> = {
  unet: ["UNet2DConditionModel"],
  vae: ["AutoencoderKL"],
  text_encoder: ["CLIPTextModel"],
  tokenizer: ["CLIPTokenizer", "CLIPTokenizerFast"],
};

/** Problems with the component classes of a pipeline index (e.g. an SDXL second text encoder). */
export function checkPipelineComponents(index: PipelineIndex): string[] {
  const issues: string[] = [];
  for (const [name, classes] of Object.entries(SUPPORTED_COMPONENT_CLASSES)) {
    const c = index.components[name];
    if (c && !classes.includes(c.className))
      issues.push(`model_index.json: ${name} class "${c.className}" is not supported (supported: ${classes.join(", ")})`);
  }
  for (const extra of ["text_encoder_2", "tokenizer_2", "image_encoder", "controlnet"])
    if (index.components[extra]) issues.push(`model_index.json: component "${extra}" is not supported`);
  return issues;
}

// ---------------------------------------------------------------------------------------------------------
// component configs and weights

/** Config file of a component folder: config.json, or scheduler_config.json for schedulers. */
export async function componentConfigLocation(componentDir: string): Promise<string> {
  for (const name of ["config.json", "scheduler_config.json"]) {
    const p = joinLocation(componentDir, name);
    if ((await statLocation(p)).kind !== "missing") return p;
  }
  if (!(await folderExists(componentDir))) throw new DiffusersError(`${componentDir}: component folder not found`);
  throw new DiffusersError(`${joinLocation(componentDir, "config.json")}: not found`);
}

/** The raw config of `<dir>/<component>` (config.json or scheduler/scheduler_config.json). */
export async function loadComponentConfig(dir: string, component: string): Promise<Record<string, any>> {
  return readJsonObject(await componentConfigLocation(joinLocation(dir, component)), DiffusersError);
}

const SAFETENSORS_BASES = ["diffusion_pytorch_model", "model"];
const PICKLE_EXT = [".bin", ".ckpt", ".pt", ".pth", ".pkl"];

export interface FindWeightsOptions {
  /** Prefer `<name>.<variant>.safetensors` (e.g. "fp16"); by default the plain file is preferred. */
  variant?: string;
}

/**
 * The safetensors weights file of a component folder: diffusion_pytorch_model.safetensors or
 * model.safetensors, or their `.fp16` (any variant) forms; else the only *.safetensors file there.
 * Folders with only PyTorch pickles (.bin/.ckpt/...) get a clear "convert to safetensors" error.
 */
export async function findWeights(componentDir: string, options: FindWeightsOptions = {}): Promise<string> {
  if (!(await folderExists(componentDir))) throw new DiffusersError(`${componentDir}: component folder not found`);
  const order: string[] = [];
  const plain = SAFETENSORS_BASES.map((b) => `${b}.safetensors`);
  const variantOf = (v: string) => SAFETENSORS_BASES.map((b) => `${b}.${v}.safetensors`);
  if (options.variant) order.push(...variantOf(options.variant), ...plain);
  else order.push(...plain, ...variantOf("fp16"));
  const files = await listFiles(componentDir);
  if (!files) {
    // a URL cannot be listed: the standard names, in order of preference
    for (const name of order) if (await fileExists(joinLocation(componentDir, name))) return joinLocation(componentDir, name);
    throw new DiffusersError(`${componentDir}: no weights at the standard names (${order.join(", ")})`);
  }
  const st = files.filter((f) => f.endsWith(".safetensors"));
  for (const name of order) if (st.includes(name)) return joinLocation(componentDir, name);
  // other variants of the standard names (e.g. .bf16), then a lone file
  const other = st.filter((f) => SAFETENSORS_BASES.some((b) => f.startsWith(b + ".")));
  if (other.length >= 1) return joinLocation(componentDir, other.sort()[0]);
  if (st.length === 1) return joinLocation(componentDir, st[0]);
  if (st.length > 1)
    throw new DiffusersError(`${componentDir}: several safetensors files and none with a standard name: ${st.join(", ")}`);
  if (files.some((f) => f.endsWith(".safetensors.index.json")))
    throw new DiffusersError(`${componentDir}: sharded safetensors weights (*.safetensors.index.json) are not supported`);
  const pickles = files.filter((f) => PICKLE_EXT.some((e) => f.endsWith(e)));
  if (pickles.length)
    throw new DiffusersError(
      `${componentDir}: PyTorch pickle weights are not supported; convert to safetensors (found ${pickles.join(", ")})`,
    );
  throw new DiffusersError(`${componentDir}: no .safetensors weights file found`);
}

