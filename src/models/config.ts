// Typed configs of the model components the engine implements (UNet2DConditionModel, AutoencoderKL,
// CLIPTextModel) with the defaults diffusers/transformers use for missing fields, the built-in SD 1.5 / 2.1
// UNet configs (benchmarks without a checkpoint), and the support rules: every value must be one this engine
// implements, and anything else is reported naming the file and field.
import { componentConfigLocation, DiffusersError } from "../io/diffusers.ts";
import { readJsonObject } from "../io/json.ts";

export interface UNetConfig {
  _class_name: string;
  sample_size: number | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: string[];
  mid_block_type: string | null;
  up_block_types: string[];
  only_cross_attention: boolean | boolean[];
  block_out_channels: number[];
  layers_per_block: number | number[];
  downsample_padding: number;
  mid_block_scale_factor: number;
  dropout: number;
  act_fn: string;
  norm_num_groups: number | null;
  norm_eps: number;
  cross_attention_dim: number | number[];
  transformer_layers_per_block: number | number[] | number[][];
  reverse_transformer_layers_per_block: number[][] | null;
  encoder_hid_dim: number | null;
  encoder_hid_dim_type: string | null;
  /** Despite the name, diffusers uses it as the number of heads per level (SD 2.x: [5, 10, 20, 20]). */
  attention_head_dim: number | number[];
  num_attention_heads: number | number[] | null;
  dual_cross_attention: boolean;
  use_linear_projection: boolean;
  class_embed_type: string | null;
  addition_embed_type: string | null;
  addition_time_embed_dim: number | null;
  num_class_embeds: number | null;
  upcast_attention: boolean;
  resnet_time_scale_shift: string;
  resnet_skip_time_act: boolean;
  resnet_out_scale_factor: number;
  time_embedding_type: string;
  time_embedding_dim: number | null;
  time_embedding_act_fn: string | null;
  timestep_post_act: string | null;
  time_cond_proj_dim: number | null;
  conv_in_kernel: number;
  conv_out_kernel: number;
  projection_class_embeddings_input_dim: number | null;
  attention_type: string;
  class_embeddings_concat: boolean;
  mid_block_only_cross_attention: boolean | null;
  cross_attention_norm: string | null;
  addition_embed_type_num_heads: number;
  [extra: string]: unknown;
}

/** UNet2DConditionModel.__init__ defaults (diffusers). */
export const UNET_DEFAULTS: Readonly<UNetConfig> = Object.freeze({
  _class_name: "UNet2DConditionModel",
  sample_size: null,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  dropout: 0.0,
  act_fn: "silu",
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  reverse_transformer_layers_per_block: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_head_dim: 8,
  num_attention_heads: null,
  dual_cross_attention: false,
  use_linear_projection: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  upcast_attention: false,
  resnet_time_scale_shift: "default",
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1.0,
  time_embedding_type: "positional",
  time_embedding_dim: null,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  projection_class_embeddings_input_dim: null,
  attention_type: "default",
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
  addition_embed_type_num_heads: 64,
});

export interface VaeConfig {
  _class_name: string;
  in_channels: number;
  out_channels: number;
  down_block_types: string[];
  up_block_types: string[];
  block_out_channels: number[];
  layers_per_block: number;
  act_fn: string;
  latent_channels: number;
  norm_num_groups: number;
  sample_size: number;
  scaling_factor: number;
  shift_factor: number | null;
  latents_mean: number[] | null;
  latents_std: number[] | null;
  force_upcast: boolean;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
  mid_block_add_attention: boolean;
  [extra: string]: unknown;
}

/** AutoencoderKL.__init__ defaults (diffusers). */
export const VAE_DEFAULTS: Readonly<VaeConfig> = Object.freeze({
  _class_name: "AutoencoderKL",
  in_channels: 3,
  out_channels: 3,
  down_block_types: ["DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D"],
  block_out_channels: [64],
  layers_per_block: 1,
  act_fn: "silu",
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 32,
  scaling_factor: 0.18215,
  shift_factor: null,
  latents_mean: null,
  latents_std: null,
  force_upcast: true,
  use_quant_conv: true,
  use_post_quant_conv: true,
  mid_block_add_attention: true,
});

export interface ClipTextConfig {
  model_type: string;
  architectures: string[] | null;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  projection_dim: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  attention_dropout: number;
  initializer_range: number;
  initializer_factor: number;
  pad_token_id: number | null;
  bos_token_id: number | null;
  /** Pooled output: first position of this id (legacy configs with eos_token_id 2: argmax of the ids). */
  eos_token_id: number | null;
  [extra: string]: unknown;
}

/** transformers CLIPTextConfig defaults. */
export const CLIP_TEXT_DEFAULTS: Readonly<ClipTextConfig> = Object.freeze({
  model_type: "clip_text_model",
  architectures: null,
  vocab_size: 49408,
  hidden_size: 512,
  intermediate_size: 2048,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  max_position_embeddings: 77,
  hidden_act: "quick_gelu",
  layer_norm_eps: 1e-5,
  attention_dropout: 0.0,
  initializer_range: 0.02,
  initializer_factor: 1.0,
  pad_token_id: 1,
  bos_token_id: 49406,
  eos_token_id: 49407,
});

function withDefaults<T extends object>(defaults: Readonly<T>, raw: Record<string, any>): T {
  const out: Record<string, any> = structuredClone(defaults as Record<string, any>);
  for (const [k, v] of Object.entries(raw)) out[k] = structuredClone(v);
  return out as T;
}

export function unetConfig(raw: Record<string, any>): UNetConfig {
  return withDefaults(UNET_DEFAULTS, raw);
}
export function vaeConfig(raw: Record<string, any>): VaeConfig {
  return withDefaults(VAE_DEFAULTS, raw);
}
export function clipTextConfig(raw: Record<string, any>): ClipTextConfig {
  return withDefaults(CLIP_TEXT_DEFAULTS, raw);
}

/** runwayml/stable-diffusion-v1-5 unet/config.json, with the defaults filled in. */
export const SD15_UNET_CONFIG: Readonly<UNetConfig> = Object.freeze(
  unetConfig({
    _class_name: "UNet2DConditionModel",
    _diffusers_version: "0.6.0",
    act_fn: "silu",
    attention_head_dim: 8,
    block_out_channels: [320, 640, 1280, 1280],
    center_input_sample: false,
    cross_attention_dim: 768,
    down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding: 1,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: 32,
    out_channels: 4,
    sample_size: 64,
    up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  }),
);

/** stabilityai/stable-diffusion-2-1 unet/config.json (768x768, v-prediction), with the defaults filled in. */
export const SD21_UNET_CONFIG: Readonly<UNetConfig> = Object.freeze(
  unetConfig({
    _class_name: "UNet2DConditionModel",
    _diffusers_version: "0.10.0.dev0",
    act_fn: "silu",
    attention_head_dim: [5, 10, 20, 20],
    block_out_channels: [320, 640, 1280, 1280],
    center_input_sample: false,
    cross_attention_dim: 1024,
    down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding: 1,
    dual_cross_attention: false,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: 32,
    num_class_embeds: null,
    only_cross_attention: false,
    out_channels: 4,
    sample_size: 96,
    up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    upcast_attention: true,
    use_linear_projection: true,
  }),
);

/**
 * Attention heads of each UNet level (down order; the mid block uses the last, up blocks the reverse) and
 * their head size, as diffusers computes them: heads = num_attention_heads ?? attention_head_dim, head size
 * = block channels / heads.
 */
export function unetAttentionHeads(cfg: UNetConfig): { heads: number[]; headDim: number[] } {
  const levels = cfg.block_out_channels.length;
  const spec = cfg.num_attention_heads ?? cfg.attention_head_dim;
  const heads = Array.isArray(spec) ? spec.slice() : new Array(levels).fill(spec);
  return { heads, headDim: cfg.block_out_channels.map((c, i) => c / heads[i]) };
}

// ---------------------------------------------------------------------------------------------------------
// support checks

/** A rule for one config field: a check returning a problem description (without the field name) or null. */
export type FieldRule = (value: unknown, config: Record<string, any>) => string | null;

export interface SupportedSpec {
  /** Names the config in messages, e.g. "unet/config.json". */
  label: string;
  fields: Record<string, FieldRule>;
  /**
   * Unknown fields with a value other than null/false/[]: "error" (default; a new diffusers feature may
   * change the architecture) or "warning" (transformers configs carry many generic fields).
   */
  unknown?: "error" | "warning";
  /** Whole-config checks (e.g. list lengths agree); return messages with the field names. */
  checks?: ((config: Record<string, any>) => string[])[];
}

export interface ConfigIssue {
  severity: "error" | "warning";
  field: string;
  message: string;
}

const show = (v: unknown) => JSON.stringify(v);

/** Any value (known field the engine ignores or handles generally). */
export const anyValue: FieldRule = () => null;

/** The value must equal one of `values`. */
export function oneOf(...values: unknown[]): FieldRule {
  return (v) =>
    values.some((x) => x === v) ? null : `${show(v)} is not supported (supported: ${values.map((x) => show(x)).join(", ")})`;
}

/** A positive integer (or a number > 0 when `real`). */
export function positive(real = false): FieldRule {
  return (v) =>
    typeof v === "number" && Number.isFinite(v) && v > 0 && (real || Number.isInteger(v)) ? null : `${show(v)} must be a positive ${real ? "number" : "integer"}`;
}

/**
 * An integer from min to max. Config sizes are bounded so a typo (1e12) is reported naming the field instead of
 * surfacing as an out-of-memory error or a raw RangeError from an allocation.
 */
export function intIn(min: number, max: number): FieldRule {
  return (v) => (typeof v === "number" && Number.isInteger(v) && v >= min && v <= max ? null : `${show(v)} must be an integer from ${min} to ${max}`);
}

/** null, or a value `rule` accepts. */
export function orNull(rule: FieldRule, what: string): FieldRule {
  return (v, c) => (v === null || rule(v, c) === null ? null : `${show(v)} must be ${what} or null`);
}

/** A number (any sign). */
export const isNumber: FieldRule = (v) => (typeof v === "number" && Number.isFinite(v) ? null : `${show(v)} must be a number`);

/** An array whose elements each pass `rule` (messages name `field[i]`), with an optional length check. */
export function eachOf(rule: FieldRule, opts: { scalarOk?: boolean; length?: (c: Record<string, any>) => number | undefined } = {}): FieldRule {
  return (v, c) => {
    if (!Array.isArray(v)) return opts.scalarOk ? rule(v, c) : `${show(v)} must be a list`;
    const want = opts.length?.(c);
    if (want !== undefined && v.length !== want) return `has ${v.length} entries, expected ${want}`;
    for (let i = 0; i < v.length; i++) {
      const m = rule(v[i], c);
      if (m) return `\u0000[${i}] ${m}`; // index marker, spliced after the field name
    }
    return null;
  };
}

/**
 * Checks a config against a spec: every field must have a rule that accepts its value. Unknown fields are
 * warnings when null/false/empty (harmless) or when spec.unknown is "warning", errors otherwise.
 * Fields starting with "_" are metadata.
 * Messages look like `unet/config.json: down_block_types[2] "SimpleCrossAttnDownBlock2D" is not supported`.
 */
export function checkSupported(config: Record<string, any>, spec: SupportedSpec, label = spec.label): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const [field, value] of Object.entries(config)) {
    const rule = spec.fields[field];
    if (!rule) {
      if (field.startsWith("_")) continue;
      const harmless =
        spec.unknown === "warning" || value === null || value === false || (Array.isArray(value) && value.length === 0);
      issues.push({
        severity: harmless ? "warning" : "error",
        field,
        message: `${label}: unknown field ${field} = ${show(value)}${harmless ? " (ignored)" : " is not supported"}`,
      });
      continue;
    }
    const m = rule(value, config);
    if (m) {
      const indexed = m.startsWith("\u0000");
      issues.push({ severity: "error", field, message: `${label}: ${field}${indexed ? m.slice(1) : " " + m}` });
    }
  }
  for (const check of spec.checks ?? [])
    for (const m of check(config)) issues.push({ severity: "error", field: m.split(/[\s[]/)[0], message: `${label}: ${m}` });
  return issues;
}

/** checkSupported, throwing a DiffusersError listing every error; returns the warnings. */
export function assertSupported(config: Record<string, any>, spec: SupportedSpec, label = spec.label): string[] {
  const issues = checkSupported(config, spec, label);
  const errors = issues.filter((i) => i.severity === "error").map((i) => i.message);
  if (errors.length) throw new DiffusersError(errors.join("\n"));
  return issues.filter((i) => i.severity === "warning").map((i) => i.message);
}

const levels = (c: Record<string, any>) => (Array.isArray(c.block_out_channels) ? c.block_out_channels.length : undefined);
/** Bounds of config sizes: far above any real model, low enough that nothing derived from them overflows. */
const MAX_CHANNELS = 16384;
const MAX_LEVELS = 8;
/** Latent cells per side (SD 1.5: 64, SDXL: 128); images are at most 8192 pixels a side. */
const MAX_SAMPLE_SIZE = 1024;
const channels = intIn(1, MAX_CHANNELS);
const intOrPerLevel = eachOf(channels, { scalarOk: true, length: levels });
const levelChannels: FieldRule = (v, c) => {
  if (Array.isArray(v) && (v.length < 1 || v.length > MAX_LEVELS)) return `has ${v.length} entries (levels), expected 1 to ${MAX_LEVELS}`;
  return eachOf(channels)(v, c);
};

/** unet sample_size: a whole number of the UNet's size unit (it halves the latents once per level but the last). */
function sampleSizeCheck(c: Record<string, any>): string[] {
  const n = levels(c);
  const s = c.sample_size;
  if (n === undefined || typeof s !== "number" || !Number.isInteger(s)) return [];
  const unit = 2 ** (n - 1);
  return s % unit ? [`sample_size ${s} is not a multiple of ${unit} (the UNet halves the latents ${n - 1} times)`] : [];
}

function blockCountChecks(c: Record<string, any>): string[] {
  const out: string[] = [];
  const n = levels(c);
  if (n === undefined) return out;
  for (const f of ["down_block_types", "up_block_types"])
    if (Array.isArray(c[f]) && c[f].length !== n) out.push(`${f} has ${c[f].length} entries but block_out_channels has ${n}`);
  if (typeof c.norm_num_groups === "number")
    for (const [i, ch] of (c.block_out_channels as unknown[]).entries())
      if (typeof ch === "number" && ch % c.norm_num_groups !== 0)
        out.push(`block_out_channels[${i}] ${ch} is not divisible by norm_num_groups ${c.norm_num_groups}`);
  return out;
}

/** What the engine's UNet implements: SD 1.x / 2.x UNet2DConditionModel. */
export const UNET_SUPPORTED: SupportedSpec = {
  label: "unet/config.json",
  fields: {
    sample_size: orNull(intIn(1, MAX_SAMPLE_SIZE), `an integer from 1 to ${MAX_SAMPLE_SIZE}`),
    in_channels: channels,
    out_channels: channels,
    center_input_sample: oneOf(false),
    flip_sin_to_cos: oneOf(true),
    freq_shift: oneOf(0),
    down_block_types: eachOf(oneOf("CrossAttnDownBlock2D", "DownBlock2D")),
    mid_block_type: oneOf("UNetMidBlock2DCrossAttn"),
    up_block_types: eachOf(oneOf("UpBlock2D", "CrossAttnUpBlock2D")),
    only_cross_attention: eachOf(oneOf(false), { scalarOk: true }),
    block_out_channels: levelChannels,
    layers_per_block: intIn(1, 64),
    downsample_padding: oneOf(1),
    mid_block_scale_factor: oneOf(1),
    dropout: anyValue,
    act_fn: oneOf("silu"),
    norm_num_groups: channels,
    norm_eps: positive(true),
    cross_attention_dim: channels,
    transformer_layers_per_block: eachOf(oneOf(1), { scalarOk: true }),
    reverse_transformer_layers_per_block: oneOf(null),
    encoder_hid_dim: oneOf(null),
    encoder_hid_dim_type: oneOf(null),
    attention_head_dim: intOrPerLevel,
    num_attention_heads: oneOf(null),
    dual_cross_attention: oneOf(false),
    use_linear_projection: oneOf(false, true),
    class_embed_type: oneOf(null),
    addition_embed_type: oneOf(null),
    addition_time_embed_dim: oneOf(null),
    num_class_embeds: oneOf(null),
    upcast_attention: oneOf(false, true),
    resnet_time_scale_shift: oneOf("default"),
    resnet_skip_time_act: oneOf(false),
    resnet_out_scale_factor: oneOf(1),
    time_embedding_type: oneOf("positional"),
    time_embedding_dim: oneOf(null),
    time_embedding_act_fn: oneOf(null),
    timestep_post_act: oneOf(null),
    time_cond_proj_dim: oneOf(null),
    conv_in_kernel: oneOf(3),
    conv_out_kernel: oneOf(3),
    projection_class_embeddings_input_dim: oneOf(null),
    attention_type: oneOf("default"),
    class_embeddings_concat: oneOf(false),
    mid_block_only_cross_attention: oneOf(null, false),
    cross_attention_norm: oneOf(null),
    addition_embed_type_num_heads: anyValue,
  },
  checks: [
    blockCountChecks,
    sampleSizeCheck,
    (c) => {
      const heads = c.num_attention_heads ?? c.attention_head_dim;
      const out: string[] = [];
      if (!Array.isArray(c.block_out_channels)) return out;
      c.block_out_channels.forEach((ch: unknown, i: number) => {
        const h = Array.isArray(heads) ? heads[i] : heads;
        if (typeof ch === "number" && typeof h === "number" && h > 0 && ch % h !== 0)
          out.push(`attention_head_dim${Array.isArray(heads) ? `[${i}]` : ""} ${h} heads do not divide block_out_channels[${i}] ${ch}`);
      });
      return out;
    },
  ],
};

/** What the engine's VAE implements: SD AutoencoderKL. */
export const VAE_SUPPORTED: SupportedSpec = {
  label: "vae/config.json",
  fields: {
    in_channels: channels,
    out_channels: channels,
    down_block_types: eachOf(oneOf("DownEncoderBlock2D")),
    up_block_types: eachOf(oneOf("UpDecoderBlock2D")),
    block_out_channels: levelChannels,
    layers_per_block: intIn(1, 64),
    act_fn: oneOf("silu"),
    latent_channels: channels,
    norm_num_groups: channels,
    sample_size: anyValue,
    scaling_factor: positive(true),
    shift_factor: (v) => (v === null || (typeof v === "number" && Number.isFinite(v)) ? null : `${show(v)} must be a number or null`),
    latents_mean: oneOf(null),
    latents_std: oneOf(null),
    force_upcast: anyValue,
    use_quant_conv: oneOf(true),
    use_post_quant_conv: oneOf(true),
    mid_block_add_attention: oneOf(true),
  },
  checks: [blockCountChecks],
};

/** What the engine's text encoder implements: CLIPTextModel (CLIP-L quick_gelu, OpenCLIP-H gelu). */
export const CLIP_TEXT_SUPPORTED: SupportedSpec = {
  label: "text_encoder/config.json",
  unknown: "warning",
  fields: {
    model_type: oneOf("clip_text_model"),
    architectures: (v) => (v === null ? null : eachOf(oneOf("CLIPTextModel"))(v, {})),
    // CLIP: 49408 tokens; the largest tokenizers in use have ~256k
    vocab_size: intIn(1, 1_000_000),
    hidden_size: channels,
    intermediate_size: intIn(1, 4 * MAX_CHANNELS),
    projection_dim: anyValue,
    num_hidden_layers: intIn(1, 256),
    num_attention_heads: intIn(1, 1024),
    max_position_embeddings: intIn(1, 8192),
    hidden_act: oneOf("quick_gelu", "gelu"),
    layer_norm_eps: positive(true),
    attention_dropout: anyValue,
    dropout: anyValue,
    initializer_range: anyValue,
    initializer_factor: anyValue,
    pad_token_id: anyValue,
    bos_token_id: anyValue,
    eos_token_id: (v) => (v === null || Number.isInteger(v) ? null : `${show(v)} must be an integer`),
    dtype: anyValue,
    torch_dtype: anyValue,
    transformers_version: anyValue,
  },
  checks: [
    (c) =>
      typeof c.hidden_size === "number" && typeof c.num_attention_heads === "number" && c.hidden_size % c.num_attention_heads !== 0
        ? [`hidden_size ${c.hidden_size} is not divisible by num_attention_heads ${c.num_attention_heads}`]
        : [],
  ],
};

export interface LoadConfigOptions {
  /** Called with each warning (unknown but harmless fields). */
  onWarning?: (message: string) => void;
  /** Skip the support check (default false). */
  noCheck?: boolean;
}

async function loadTyped<T>(
  componentDir: string,
  spec: SupportedSpec,
  build: (raw: Record<string, any>) => T,
  opts: LoadConfigOptions,
): Promise<T> {
  const file = await componentConfigLocation(componentDir);
  const raw = await readJsonObject(file, DiffusersError);
  const cfg = build(raw);
  // messages name the file as found (a path or URL), so a model among several is identified
  if (!opts.noCheck) for (const w of assertSupported(cfg as Record<string, any>, spec, file)) opts.onWarning?.(w);
  return cfg;
}

/** `<componentDir>/config.json` of a UNet2DConditionModel, defaults filled, support-checked. */
export function loadUNetConfig(componentDir: string, opts: LoadConfigOptions = {}): Promise<UNetConfig> {
  return loadTyped(componentDir, UNET_SUPPORTED, unetConfig, opts);
}

/** `<componentDir>/config.json` of an AutoencoderKL, defaults filled, support-checked. */
export function loadVaeConfig(componentDir: string, opts: LoadConfigOptions = {}): Promise<VaeConfig> {
  return loadTyped(componentDir, VAE_SUPPORTED, vaeConfig, opts);
}

/** `<componentDir>/config.json` of a CLIPTextModel, defaults filled, support-checked. */
export function loadClipTextConfig(componentDir: string, opts: LoadConfigOptions = {}): Promise<ClipTextConfig> {
  return loadTyped(componentDir, CLIP_TEXT_SUPPORTED, clipTextConfig, opts);
}
