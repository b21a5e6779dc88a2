// UNet2DConditionModel (diffusers), SD 1.x / 2.x: plain forward code over the nn ops, NHWC activations.
// Module and weight names follow diffusers, so each class here reads like its diffusers counterpart:
// ResnetBlock2D, Downsample2D, Upsample2D (shared with the VAE), Transformer2DModel with
// BasicTransformerBlock (self-attention, cross-attention, GEGLU feed-forward), CrossAttnDownBlock2D /
// DownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D / UpBlock2D.
// Every block runs inside eng.scope() so its temporaries go back to the allocator when it returns.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { linear, type LinearWeight } from "../nn/linear.ts";
import { conv2d, type ConvWeight } from "../nn/conv.ts";
import { groupNorm, layerNorm } from "../nn/norm.ts";
import { attention } from "../nn/attention.ts";
import { add, silu, geglu, upsample2x, concatChannels, scale } from "../nn/elementwise.ts";
import {
  assertSupported,
  findWeights,
  loadUNetConfig,
  unetAttentionHeads,
  UNET_SUPPORTED,
  type UNetConfig,
} from "../io/diffusers.ts";
import * as fs from "node:fs";
import * as path from "node:path";
import { WeightStore, type NormParams } from "./weights.ts";
import { cloneTensor } from "./layout.ts";
import {
  createPrecisionContext,
  defaultCalibrationPath,
  setCallTimestep,
  MissingCalibrationError,
  PrecisionError,
  readCalibration,
  selectPrecision,
  stepqWeightsName,
  type Calibration,
  type Precision,
  type PrecisionContext,
} from "./precision.ts";

// ---------------------------------------------------------------------------------------------------
// Timestep embedding

/**
 * diffusers get_timestep_embedding: for t in `timesteps`, [sin(t·f_i) | cos(t·f_i)] with
 * f_i = exp(-ln(maxPeriod)·i / (half - freqShift)), halves swapped when flipSinToCos, zero-padded
 * to odd `dim`. Computed with float32 rounding at the same steps as torch. Returns [N, dim].
 */
export function timestepEmbedding(
  timesteps: ArrayLike<number>,
  dim: number,
  flipSinToCos: boolean,
  freqShift: number,
  scaleFactor = 1,
  maxPeriod = 10000,
): Float32Array {
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = f(Math.exp(f(f(-Math.log(maxPeriod) * i) / (half - freqShift))));
  const out = new Float32Array(timesteps.length * dim);
  for (let n = 0; n < timesteps.length; n++) {
    const t = f(timesteps[n]);
    const row = n * dim;
    for (let i = 0; i < half; i++) {
      const arg = f(f(t * freqs[i]) * scaleFactor);
      const s = Math.sin(arg);
      const c = Math.cos(arg);
      out[row + (flipSinToCos ? half + i : i)] = s;
      out[row + (flipSinToCos ? i : half + i)] = c;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Building blocks shared with the VAE

/** Frees `old` unless it is `keep` (the caller's input): for loops that replace a running tensor. */
function replace(old: Tensor, next: Tensor, keep: Tensor): Tensor {
  if (old !== keep) old.free();
  return next;
}

/**
 * ResnetBlock2D (time_embedding_norm "default"): norm1→SiLU→conv1 (+ time_emb_proj(SiLU(temb))
 * broadcast over H,W), norm2→SiLU→(dropout)→conv2, plus the input (through conv_shortcut 1x1 when
 * channels change), divided by output_scale_factor.
 */
export class ResnetBlock2D {
  private constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    private norm1: NormParams,
    private conv1: ConvWeight,
    private timeEmbProj: LinearWeight | null,
    private norm2: NormParams,
    private conv2: ConvWeight,
    private convShortcut: ConvWeight | null,
    private groups: number,
    private eps: number,
    private outputScaleFactor: number,
  ) {}

  static load(
    ws: WeightStore,
    prefix: string,
    o: { inChannels: number; outChannels: number; tembChannels: number | null; groups: number; eps: number; outputScaleFactor?: number },
  ): ResnetBlock2D {
    const { inChannels: cin, outChannels: cout } = o;
    return new ResnetBlock2D(
      cin,
      cout,
      ws.norm(`${prefix}.norm1`, cin),
      ws.conv(`${prefix}.conv1`, { cout, cin, kh: 3, kw: 3 }, { padding: 1 }),
      o.tembChannels ? ws.linear(`${prefix}.time_emb_proj`, cout, o.tembChannels) : null,
      ws.norm(`${prefix}.norm2`, cout),
      ws.conv(`${prefix}.conv2`, { cout, cin: cout, kh: 3, kw: 3 }, { padding: 1 }),
      cin !== cout ? ws.conv(`${prefix}.conv_shortcut`, { cout, cin, kh: 1, kw: 1 }) : null,
      o.groups,
      o.eps,
      o.outputScaleFactor ?? 1,
    );
  }

  /** x NHWC [B,H,W,Cin]; tembAct = SiLU(temb) [B,T] (computed once per UNet call) or null. */
  forward(x: Tensor, tembAct: Tensor | null): Tensor {
    const eng = x.engine;
    return eng.scope(() => {
      const [b] = x.shape;
      let h = conv2d(groupNorm(x, this.groups, this.norm1.gamma, this.norm1.beta, this.eps, { silu: true }), this.conv1);
      if (this.timeEmbProj) {
        if (!tembAct) throw new Error("ResnetBlock2D: this block has time_emb_proj but no time embedding was given");
        h = add(h, linear(tembAct, this.timeEmbProj).reshape([b, 1, 1, this.outChannels]));
      }
      h = conv2d(groupNorm(h, this.groups, this.norm2.gamma, this.norm2.beta, this.eps, { silu: true }), this.conv2);
      const shortcut = this.convShortcut ? conv2d(x, this.convShortcut) : x;
      const out = add(shortcut, h);
      return this.outputScaleFactor === 1 ? out : scale(out, 1 / this.outputScaleFactor);
    });
  }
}

/**
 * Downsample2D with use_conv: a 3x3 stride-2 conv. padding 0 means diffusers' asymmetric
 * F.pad(x, (0, 1, 0, 1)) (bottom and right only) before an unpadded conv, as in the VAE encoder.
 */
export class Downsample2D {
  private constructor(
    private conv: ConvWeight,
    private padding: number,
  ) {}

  static load(ws: WeightStore, prefix: string, channels: number, outChannels: number, padding: number): Downsample2D {
    return new Downsample2D(ws.conv(`${prefix}.conv`, { cout: outChannels, cin: channels, kh: 3, kw: 3 }, { stride: 2, padding }), padding);
  }

  forward(x: Tensor): Tensor {
    return this.padding === 0 ? conv2d(x, this.conv, { padding: [0, 0, 1, 1] }) : conv2d(x, this.conv);
  }
}

/** Upsample2D with use_conv: nearest 2x, then a 3x3 conv with padding 1. */
export class Upsample2D {
  private constructor(private conv: ConvWeight) {}

  static load(ws: WeightStore, prefix: string, channels: number, outChannels: number): Upsample2D {
    return new Upsample2D(ws.conv(`${prefix}.conv`, { cout: outChannels, cin: channels, kh: 3, kw: 3 }, { padding: 1 }));
  }

  forward(x: Tensor): Tensor {
    return x.engine.scope(() => conv2d(upsample2x(x), this.conv));
  }
}

// ---------------------------------------------------------------------------------------------------
// Transformer2DModel

/** diffusers Attention as used by BasicTransformerBlock: to_q/to_k/to_v without bias, to_out.0 with bias. */
class CrossAttention {
  private constructor(
    private toQ: LinearWeight,
    private toK: LinearWeight,
    private toV: LinearWeight,
    private toOut: LinearWeight,
    private heads: number,
  ) {}

  static load(ws: WeightStore, prefix: string, dim: number, contextDim: number, heads: number): CrossAttention {
    return new CrossAttention(
      ws.linear(`${prefix}.to_q`, dim, dim, { bias: false }),
      ws.linear(`${prefix}.to_k`, dim, contextDim, { bias: false }),
      ws.linear(`${prefix}.to_v`, dim, contextDim, { bias: false }),
      ws.linear(`${prefix}.to_out.0`, dim, dim),
      heads,
    );
  }

  /** x [B,L,C]; context [B,Lc,Cc] or null for self-attention. Scale head_dim^-0.5. */
  forward(x: Tensor, context: Tensor | null): Tensor {
    return x.engine.scope(() => {
      const c = context ?? x;
      const q = linear(x, this.toQ);
      const k = linear(c, this.toK);
      const v = linear(c, this.toV);
      return linear(attention(q, k, v, this.heads), this.toOut);
    });
  }
}

/** BasicTransformerBlock (norm_type layer_norm): self-attn, cross-attn, GEGLU feed-forward, each pre-LN + residual. */
class BasicTransformerBlock {
  private constructor(
    private norm1: NormParams,
    private attn1: CrossAttention,
    private norm2: NormParams,
    private attn2: CrossAttention,
    private norm3: NormParams,
    private ffProj: LinearWeight,
    private ffOut: LinearWeight,
  ) {}

  static load(ws: WeightStore, prefix: string, dim: number, contextDim: number, heads: number): BasicTransformerBlock {
    const inner = 4 * dim;
    return new BasicTransformerBlock(
      ws.norm(`${prefix}.norm1`, dim),
      CrossAttention.load(ws, `${prefix}.attn1`, dim, dim, heads),
      ws.norm(`${prefix}.norm2`, dim),
      CrossAttention.load(ws, `${prefix}.attn2`, dim, contextDim, heads),
      ws.norm(`${prefix}.norm3`, dim),
      ws.linear(`${prefix}.ff.net.0.proj`, 2 * inner, dim),
      ws.linear(`${prefix}.ff.net.2`, dim, inner),
    );
  }

  forward(x: Tensor, context: Tensor): Tensor {
    const eng = x.engine;
    const eps = 1e-5;
    let h = x;
    h = replace(h, eng.scope(() => add(this.attn1.forward(layerNorm(h, this.norm1.gamma, this.norm1.beta, eps), null), h)), x);
    h = replace(h, eng.scope(() => add(this.attn2.forward(layerNorm(h, this.norm2.gamma, this.norm2.beta, eps), context), h)), x);
    h = replace(
      h,
      eng.scope(() => add(linear(geglu(linear(layerNorm(h, this.norm3.gamma, this.norm3.beta, eps), this.ffProj)), this.ffOut), h)),
      x,
    );
    return h;
  }
}

/**
 * Transformer2DModel: GroupNorm (eps 1e-6) → proj_in → transformer blocks on the H*W tokens → proj_out,
 * plus the input. proj_in/proj_out are 1x1 convs (SD 1.x) or linears (use_linear_projection, SD 2.x);
 * on NHWC activations both are the same linear over channels, so both load as linear layers.
 */
export class Transformer2DModel {
  private constructor(
    private norm: NormParams,
    private projIn: LinearWeight,
    private blocks: BasicTransformerBlock[],
    private projOut: LinearWeight,
    private groups: number,
  ) {}

  static load(
    ws: WeightStore,
    prefix: string,
    o: { channels: number; heads: number; contextDim: number; layers: number; groups: number },
  ): Transformer2DModel {
    const c = o.channels;
    const blocks: BasicTransformerBlock[] = [];
    for (let i = 0; i < o.layers; i++) blocks.push(BasicTransformerBlock.load(ws, `${prefix}.transformer_blocks.${i}`, c, o.contextDim, o.heads));
    return new Transformer2DModel(ws.norm(`${prefix}.norm`, c), ws.linear(`${prefix}.proj_in`, c, c), blocks, ws.linear(`${prefix}.proj_out`, c, c), o.groups);
  }

  /** x NHWC [B,H,W,C]; context [B,L,Cc]. */
  forward(x: Tensor, context: Tensor): Tensor {
    return x.engine.scope(() => {
      const [b, hh, ww, c] = x.shape;
      const normed = groupNorm(x, this.groups, this.norm.gamma, this.norm.beta, 1e-6);
      const start = linear(normed.reshape([b, hh * ww, c]), this.projIn);
      normed.free();
      let t = start;
      for (const blk of this.blocks) t = replace(t, blk.forward(t, context), start);
      return add(linear(t, this.projOut).reshape([b, hh, ww, c]), x);
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// UNet blocks

interface LevelParams {
  tembChannels: number;
  groups: number;
  eps: number;
  resnetScale: number;
  heads: number;
  contextDim: number;
  transformerLayers: number;
}

/** CrossAttnDownBlock2D (attentions) or DownBlock2D (no attentions). */
class DownBlock {
  private constructor(
    private resnets: ResnetBlock2D[],
    private attentions: Transformer2DModel[] | null,
    private downsampler: Downsample2D | null,
  ) {}

  static load(
    ws: WeightStore,
    prefix: string,
    o: LevelParams & { inChannels: number; outChannels: number; layers: number; cross: boolean; downsample: boolean; downsamplePadding: number },
  ): DownBlock {
    const resnets: ResnetBlock2D[] = [];
    const attns: Transformer2DModel[] = [];
    for (let i = 0; i < o.layers; i++) {
      resnets.push(
        ResnetBlock2D.load(ws, `${prefix}.resnets.${i}`, {
          inChannels: i === 0 ? o.inChannels : o.outChannels,
          outChannels: o.outChannels,
          tembChannels: o.tembChannels,
          groups: o.groups,
          eps: o.eps,
          outputScaleFactor: o.resnetScale,
        }),
      );
      if (o.cross)
        attns.push(
          Transformer2DModel.load(ws, `${prefix}.attentions.${i}`, {
            channels: o.outChannels,
            heads: o.heads,
            contextDim: o.contextDim,
            layers: o.transformerLayers,
            groups: o.groups,
          }),
        );
    }
    const down = o.downsample ? Downsample2D.load(ws, `${prefix}.downsamplers.0`, o.outChannels, o.outChannels, o.downsamplePadding) : null;
    return new DownBlock(resnets, o.cross ? attns : null, down);
  }

  get downsamples(): boolean {
    return this.downsampler !== null;
  }

  /** The block's output states (each resnet/attention pair's output, then the downsampled one); the last is the block output. */
  forward(x: Tensor, tembAct: Tensor, context: Tensor): Tensor[] {
    const states: Tensor[] = [];
    let h = x;
    for (let i = 0; i < this.resnets.length; i++) {
      h = this.resnets[i].forward(h, tembAct);
      if (this.attentions) {
        const a = this.attentions[i].forward(h, context);
        h.free();
        h = a;
      }
      states.push(h);
    }
    if (this.downsampler) states.push(this.downsampler.forward(h));
    return states;
  }
}

/** UNetMidBlock2DCrossAttn: resnet, then (attention, resnet) pairs. */
class MidBlockCrossAttn {
  private constructor(
    private resnets: ResnetBlock2D[],
    private attentions: Transformer2DModel[],
  ) {}

  static load(ws: WeightStore, prefix: string, o: LevelParams & { channels: number; outputScaleFactor: number; layers?: number }): MidBlockCrossAttn {
    const res = (i: number) =>
      ResnetBlock2D.load(ws, `${prefix}.resnets.${i}`, {
        inChannels: o.channels,
        outChannels: o.channels,
        tembChannels: o.tembChannels,
        groups: o.groups,
        eps: o.eps,
        outputScaleFactor: o.outputScaleFactor,
      });
    const resnets = [res(0)];
    const attns: Transformer2DModel[] = [];
    for (let i = 0; i < (o.layers ?? 1); i++) {
      attns.push(
        Transformer2DModel.load(ws, `${prefix}.attentions.${i}`, {
          channels: o.channels,
          heads: o.heads,
          contextDim: o.contextDim,
          layers: o.transformerLayers,
          groups: o.groups,
        }),
      );
      resnets.push(res(i + 1));
    }
    return new MidBlockCrossAttn(resnets, attns);
  }

  forward(x: Tensor, tembAct: Tensor, context: Tensor): Tensor {
    return x.engine.scope(() => {
      let h = this.resnets[0].forward(x, tembAct);
      for (let i = 0; i < this.attentions.length; i++) {
        h = replace(h, this.attentions[i].forward(h, context), x);
        h = replace(h, this.resnets[i + 1].forward(h, tembAct), x);
      }
      return h;
    });
  }
}

/** CrossAttnUpBlock2D (attentions) or UpBlock2D: each resnet takes cat([h, skip]) along channels, skips popped from the end. */
class UpBlock {
  private constructor(
    private resnets: ResnetBlock2D[],
    private attentions: Transformer2DModel[] | null,
    private upsampler: Upsample2D | null,
  ) {}

  static load(
    ws: WeightStore,
    prefix: string,
    o: LevelParams & {
      inChannels: number;
      outChannels: number;
      prevOutputChannels: number;
      layers: number;
      cross: boolean;
      upsample: boolean;
    },
  ): UpBlock {
    const resnets: ResnetBlock2D[] = [];
    const attns: Transformer2DModel[] = [];
    for (let i = 0; i < o.layers; i++) {
      const resSkip = i === o.layers - 1 ? o.inChannels : o.outChannels;
      const resIn = i === 0 ? o.prevOutputChannels : o.outChannels;
      resnets.push(
        ResnetBlock2D.load(ws, `${prefix}.resnets.${i}`, {
          inChannels: resIn + resSkip,
          outChannels: o.outChannels,
          tembChannels: o.tembChannels,
          groups: o.groups,
          eps: o.eps,
          outputScaleFactor: o.resnetScale,
        }),
      );
      if (o.cross)
        attns.push(
          Transformer2DModel.load(ws, `${prefix}.attentions.${i}`, {
            channels: o.outChannels,
            heads: o.heads,
            contextDim: o.contextDim,
            layers: o.transformerLayers,
            groups: o.groups,
          }),
        );
    }
    const up = o.upsample ? Upsample2D.load(ws, `${prefix}.upsamplers.0`, o.outChannels, o.outChannels) : null;
    return new UpBlock(resnets, o.cross ? attns : null, up);
  }

  get numResnets(): number {
    return this.resnets.length;
  }

  /** `skips` are this block's skip states in down order; they are consumed from the end and freed. */
  forward(x: Tensor, skips: Tensor[], tembAct: Tensor, context: Tensor): Tensor {
    return x.engine.scope(() => {
      let h = x;
      for (let i = 0; i < this.resnets.length; i++) {
        const skip = skips.pop()!;
        const cat = concatChannels(h, skip);
        skip.free();
        if (h !== x) h.free();
        h = this.resnets[i].forward(cat, tembAct);
        cat.free();
        if (this.attentions) h = replace(h, this.attentions[i].forward(h, context), x);
      }
      if (this.upsampler) h = replace(h, this.upsampler.forward(h), x);
      return h;
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// UNet2DConditionModel

export interface UNetForwardOptions {
  /**
   * When given, filled with copies (NHWC; time_embedding [B,T]) of: time_embedding, conv_in,
   * down_blocks.i, mid_block, up_blocks.i, conv_out — the diffusers module outputs. The copies belong
   * to the caller's scope (or to no scope); free them when done.
   */
  intermediates?: Record<string, Tensor>;
}

/** Per-step precision when loading (see src/models/precision.ts). */
export interface UNetPrecisionOptions {
  /**
   * Keep these variants of every conv/linear layer resident (e.g. ["bf16", "int8"] for the paper's schedule)
   * and switch between them with setPrecision(). Default: plain fp32 weights, no switching.
   */
  precisions?: readonly Precision[];
  /**
   * INT8 activation ranges for layers quantised at load: a calibration file path, its contents, or
   * "synthetic" (a fixed range: random-weight latency benchmarks only). Default for load(): the unet
   * folder's stepq-calibration.json. Not needed when the folder has stepq-int8.safetensors (stepq convert).
   */
  calibration?: string | Calibration | "synthetic" | null;
}

/** The unet folder's original checkpoint (not a stepq converted file), or an error. */
function findOriginalWeights(dir: string, why: string): string {
  const st = fs.readdirSync(dir).filter((f) => f.endsWith(".safetensors"));
  const stepq = st.filter((f) => f.startsWith("stepq-"));
  if (stepq.length && st.length === stepq.length)
    throw new PrecisionError(`${dir} has only stepq converted weights (${stepq.join(", ")}); ${why} the original checkpoint`);
  const f = findWeights(dir);
  if (path.basename(f).startsWith("stepq-")) throw new PrecisionError(`${dir}: no original checkpoint found beside ${path.basename(f)}; ${why} it`);
  return f;
}

function resolveCalibration(c: UNetPrecisionOptions["calibration"], fallbackFile: string | null): { calibration: Calibration | "synthetic" | null; file?: string } {
  if (c === "synthetic") return { calibration: "synthetic" };
  if (c && typeof c === "object") return { calibration: c, file: "the calibration given" };
  const file = typeof c === "string" ? c : fallbackFile;
  if (!file) return { calibration: null };
  return fs.existsSync(file) ? { calibration: readCalibration(file), file } : { calibration: null, file };
}

function perLevel<T>(v: T | T[], n: number, field: string): T[] {
  if (!Array.isArray(v)) return new Array(n).fill(v);
  if (v.length !== n) throw new Error(`unet config: ${field} has ${v.length} entries, expected ${n} (one per block)`);
  return v.slice();
}

export class UNet {
  private constructor(
    readonly engine: Engine,
    readonly config: UNetConfig,
    private timeLinear1: LinearWeight,
    private timeLinear2: LinearWeight,
    private convIn: ConvWeight,
    private downBlocks: DownBlock[],
    private midBlock: MidBlockCrossAttn,
    private upBlocks: UpBlock[],
    private convNormOut: NormParams,
    private convOut: ConvWeight,
    private ctx: PrecisionContext | null,
  ) {}

  /**
   * Loads `<dir>/config.json` and the safetensors weights of a diffusers unet folder. With opts.precisions,
   * every listed variant of each conv/linear layer is kept (see UNetPrecisionOptions); variants with a
   * stepq converted file in the folder (stepq-bf16.safetensors, stepq-int8.safetensors) are read from it.
   */
  static load(eng: Engine, dir: string, opts: UNetPrecisionOptions = {}): UNet {
    const config = loadUNetConfig(dir);
    if (!opts.precisions) {
      const ws = WeightStore.open(eng, findOriginalWeights(dir, "fp32 needs"));
      try {
        const unet = UNet.fromConfig(eng, config, ws);
        ws.assertAllUsed("UNet2DConditionModel");
        return unet;
      } finally {
        ws.close();
      }
    }
    const ctx = createPrecisionContext(opts.precisions);
    const files: { bf16?: string; int8?: string } = {};
    for (const p of ["bf16", "int8"] as const) {
      const f = path.join(dir, stepqWeightsName(p));
      if (ctx.loaded.includes(p) && fs.existsSync(f)) files[p] = f;
    }
    const fromCkpt = ctx.loaded.filter((p) => p === "fp32" || !files[p]);
    const parent = path.dirname(path.resolve(dir));
    const modelHint = fs.existsSync(path.join(parent, "model_index.json")) ? parent : dir;
    const primary = fromCkpt.length ? findOriginalWeights(dir, `precisions ${fromCkpt.join(", ")} need`) : (files.bf16 ?? files.int8)!;
    let cal: ReturnType<typeof resolveCalibration> = { calibration: null };
    if (fromCkpt.includes("int8")) {
      cal = resolveCalibration(opts.calibration, defaultCalibrationPath(dir));
      // fail before building anything
      if (!cal.calibration) throw new MissingCalibrationError(cal.file ?? defaultCalibrationPath(dir), modelHint);
    } else if (files.int8 && opts.calibration != null) {
      // not used by the converted layers, but a per-step calibration given explicitly must not be ignored silently
      cal = resolveCalibration(opts.calibration, null);
    }
    const ws = WeightStore.open(eng, primary);
    try {
      ws.usePrecisions({ ctx, calibration: cal.calibration, calibrationFile: cal.file, modelHint, files });
      const unet = UNet.fromConfig(eng, config, ws);
      ws.assertAllUsed("UNet2DConditionModel");
      return unet;
    } finally {
      ws.close();
    }
  }

  /** The variants every conv/linear layer holds (["fp32"] for a plain model). */
  get precisions(): readonly Precision[] {
    return this.ctx?.loaded ?? ["fp32"];
  }

  /** The precision the next forward() runs at. */
  get precision(): Precision {
    return this.ctx?.current ?? "fp32";
  }

  /** Selects the variant the next forward() calls run (error if it was not loaded). */
  setPrecision(p: Precision): void {
    if (!this.ctx) {
      if (p === "fp32") return;
      throw new PrecisionError(`UNet: precision ${p} is not loaded (this UNet was loaded with plain fp32 weights); load it with precisions [${p}]`);
    }
    selectPrecision(this.ctx, p, "UNet");
  }

  /** The shared selector of the switch weights (null for a plain fp32 model); `observe` hooks calibration. */
  get precisionContext(): PrecisionContext | null {
    return this.ctx;
  }

  /**
   * Builds the UNet of `config` with weights from `weights`, or random weights of the right shapes
   * ("random", seeded) — e.g. `UNet.fromConfig(eng, SD15_UNET_CONFIG, "random")` for benchmarks.
   * Unsupported config values throw, naming the field and value.
   */
  static fromConfig(eng: Engine, config: UNetConfig, weights: WeightStore | "random", seed = 0, opts: UNetPrecisionOptions = {}): UNet {
    assertSupported(config as Record<string, any>, UNET_SUPPORTED);
    const ws = weights === "random" ? WeightStore.random(eng, seed) : weights;
    if (opts.precisions) {
      if (ws.precisionSetup) throw new PrecisionError("UNet.fromConfig: the weight store already has precisions set up; pass them one way");
      const ctx = createPrecisionContext(opts.precisions);
      const cal = ctx.loaded.includes("int8") ? resolveCalibration(opts.calibration, null) : { calibration: null };
      ws.usePrecisions({ ctx, calibration: cal.calibration, calibrationFile: (cal as { file?: string }).file });
    }
    const ctx = ws.precisionSetup?.ctx ?? null;
    const cfg = config;
    const levels = cfg.block_out_channels.length;
    const ch = cfg.block_out_channels;
    const groups = cfg.norm_num_groups!;
    const eps = cfg.norm_eps;
    const { heads } = unetAttentionHeads(cfg);
    const layersPerBlock = perLevel(cfg.layers_per_block, levels, "layers_per_block");
    const contextDims = perLevel(cfg.cross_attention_dim, levels, "cross_attention_dim");
    const tLayers = perLevel(cfg.transformer_layers_per_block as number | number[], levels, "transformer_layers_per_block");
    if (tLayers.some((t) => typeof t !== "number"))
      throw new Error(`unet config: transformer_layers_per_block ${JSON.stringify(cfg.transformer_layers_per_block)} (nested lists) is not supported`);
    const tIn = ch[0];
    const tembCh = cfg.time_embedding_dim ?? ch[0] * 4;

    const timeLinear1 = ws.linear("time_embedding.linear_1", tembCh, tIn);
    const timeLinear2 = ws.linear("time_embedding.linear_2", tembCh, tembCh);
    const kIn = cfg.conv_in_kernel;
    const convIn = ws.conv("conv_in", { cout: ch[0], cin: cfg.in_channels, kh: kIn, kw: kIn }, { padding: (kIn - 1) >> 1 });

    const common = (i: number): LevelParams => ({
      tembChannels: tembCh,
      groups,
      eps,
      resnetScale: cfg.resnet_out_scale_factor,
      heads: heads[i],
      contextDim: contextDims[i],
      transformerLayers: tLayers[i] as number,
    });

    const downBlocks: DownBlock[] = [];
    let outCh = ch[0];
    cfg.down_block_types.forEach((type, i) => {
      const inCh = outCh;
      outCh = ch[i];
      downBlocks.push(
        DownBlock.load(ws, `down_blocks.${i}`, {
          ...common(i),
          inChannels: inCh,
          outChannels: outCh,
          layers: layersPerBlock[i],
          cross: type === "CrossAttnDownBlock2D",
          downsample: i !== levels - 1,
          downsamplePadding: cfg.downsample_padding,
        }),
      );
    });

    const midBlock = MidBlockCrossAttn.load(ws, "mid_block", {
      ...common(levels - 1),
      channels: ch[levels - 1],
      outputScaleFactor: cfg.mid_block_scale_factor,
    });

    const rev = (a: any[]) => a.slice().reverse();
    const rCh = rev(ch);
    const rLayers = rev(layersPerBlock);
    const upBlocks: UpBlock[] = [];
    outCh = rCh[0];
    cfg.up_block_types.forEach((type, i) => {
      const prevOut = outCh;
      outCh = rCh[i];
      const inCh = rCh[Math.min(i + 1, levels - 1)];
      const level = levels - 1 - i;
      upBlocks.push(
        UpBlock.load(ws, `up_blocks.${i}`, {
          ...common(level),
          inChannels: inCh,
          outChannels: outCh,
          prevOutputChannels: prevOut,
          layers: rLayers[i] + 1,
          cross: type === "CrossAttnUpBlock2D",
          upsample: i !== levels - 1,
        }),
      );
    });

    const convNormOut = ws.norm("conv_norm_out", ch[0]);
    const kOut = cfg.conv_out_kernel;
    const convOut = ws.conv("conv_out", { cout: cfg.out_channels, cin: ch[0], kh: kOut, kw: kOut }, { padding: (kOut - 1) >> 1 });
    return new UNet(eng, config, timeLinear1, timeLinear2, convIn, downBlocks, midBlock, upBlocks, convNormOut, convOut, ctx);
  }

  /** Latent height and width must be multiples of this (2^number of downsamplers). */
  get sizeMultiple(): number {
    return 2 ** this.downBlocks.filter((b) => b.downsamples).length;
  }

  /**
   * One UNet evaluation, like diffusers `unet(sample, timestep, encoder_hidden_states).sample`.
   * sample NHWC [B,H,W,in_channels]; timestep one value for the batch or one per batch item;
   * context [B,L,cross_attention_dim]. Returns NHWC [B,H,W,out_channels] in the caller's scope.
   */
  forward(sample: Tensor, timestep: number | ArrayLike<number>, context: Tensor, opts: UNetForwardOptions = {}): Tensor {
    const eng = this.engine;
    const cfg = this.config;
    const [b, hh, ww, cin] = sample.shape;
    if (sample.shape.length !== 4 || cin !== cfg.in_channels)
      throw new Error(`UNet.forward: sample must be NHWC [B,H,W,${cfg.in_channels}], got [${sample.shape}]`);
    const m = this.sizeMultiple;
    if (hh % m || ww % m) throw new Error(`UNet.forward: latent size ${hh}x${ww} must be a multiple of ${m}`);
    if (context.shape.length !== 3 || context.shape[0] !== b)
      throw new Error(`UNet.forward: context must be [${b},L,C], got [${context.shape}]`);
    const ts = typeof timestep === "number" ? new Array(b).fill(timestep) : Array.from(timestep);
    if (ts.length !== b) throw new Error(`UNet.forward: ${ts.length} timesteps for batch ${b}`);
    // per-step INT8 ranges: the layers pick the range of this call's (nearest calibrated) timestep
    if (this.ctx) setCallTimestep(this.ctx, ts);

    const inter = opts.intermediates;
    const keep: Record<string, Tensor> = {};
    const record = (name: string, t: Tensor) => {
      if (inter) keep[name] = cloneTensor(t);
    };

    const result = eng.scope(() => {
      // time embedding: sinusoids → linear_1 → SiLU → linear_2; resnets all use SiLU(temb)
      const temb = eng.scope(() => {
        const proj = eng.fromArray(timestepEmbedding(ts, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift), [b, cfg.block_out_channels[0]]);
        return linear(silu(linear(proj, this.timeLinear1)), this.timeLinear2);
      });
      record("time_embedding", temb);
      const tembAct = silu(temb);
      temb.free();

      let h = conv2d(sample, this.convIn);
      record("conv_in", h);
      const skips: Tensor[] = [h];
      this.downBlocks.forEach((blk, i) => {
        const states = eng.scope(() => blk.forward(h, tembAct, context));
        skips.push(...states);
        h = states[states.length - 1];
        record(`down_blocks.${i}`, h);
      });

      h = this.midBlock.forward(h, tembAct, context);
      record("mid_block", h);

      this.upBlocks.forEach((blk, i) => {
        const mine = skips.splice(skips.length - blk.numResnets, blk.numResnets);
        const next = blk.forward(h, mine, tembAct, context);
        h.free();
        h = next;
        record(`up_blocks.${i}`, h);
      });

      const out = eng.scope(() =>
        conv2d(groupNorm(h, cfg.norm_num_groups!, this.convNormOut.gamma, this.convNormOut.beta, cfg.norm_eps, { silu: true }), this.convOut),
      );
      record("conv_out", out);
      return { out, ...keep };
    });
    if (inter) Object.assign(inter, keep);
    return result.out;
  }
}
