// UNet2DConditionModel (diffusers), SD 1.x / 2.x: plain forward code over the nn ops, NHWC activations.
// Module and weight names follow diffusers, so each class here reads like its diffusers counterpart:
// Transformer2DModel with BasicTransformerBlock (self-attention, cross-attention, GEGLU feed-forward),
// CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D / UpBlock2D, over the
// ResnetBlock2D / Downsample2D / Upsample2D of blocks.ts (shared with the VAE). Loading from a model folder
// is loader.ts's job; UNet.fromConfig builds from a WeightStore (or random weights).
// Every block runs inside eng.scope() so its temporaries go back to the allocator when it returns.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { linear, type LinearWeight } from "../nn/linear.ts";
import { conv2d, type ConvWeight } from "../nn/conv.ts";
import { groupNorm, layerNorm } from "../nn/norm.ts";
import { attention } from "../nn/attention.ts";
import type { PrecisionSelector } from "../nn/switch.ts";
import { add, silu, geglu, upsample2x, concatChannels, scale } from "../nn/elementwise.ts";
import { assertSupported, unetAttentionHeads, UNET_SUPPORTED, type UNetConfig } from "./config.ts";
import { WeightStore, type NormParams } from "./weights.ts";
import { cloneTensor } from "./layout.ts";
import { checkpointed, replace, ResnetBlock2D, Downsample2D, Upsample2D } from "./blocks.ts";
import { createPrecisionContext, setCallTimestep, PrecisionError, selectPrecision, type Precision, type PrecisionContext } from "./precision.ts";
import type { Calibration } from "./calibration.ts";

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
// Transformer2DModel

/** diffusers Attention as used by BasicTransformerBlock: to_q/to_k/to_v without bias, to_out.0 with bias. */
class CrossAttention {
  private constructor(
    private toQ: LinearWeight,
    private toK: LinearWeight,
    private toV: LinearWeight,
    private toOut: LinearWeight,
    private heads: number,
    private ctx: PrecisionSelector | null,
  ) {}

  static async load(ws: WeightStore, prefix: string, dim: number, contextDim: number, heads: number): Promise<CrossAttention> {
    return new CrossAttention(
      await ws.linear(`${prefix}.to_q`, dim, dim, { bias: false }),
      await ws.linear(`${prefix}.to_k`, dim, contextDim, { bias: false }),
      await ws.linear(`${prefix}.to_v`, dim, contextDim, { bias: false }),
      await ws.linear(`${prefix}.to_out.0`, dim, dim),
      heads,
      ws.precisionSetup?.ctx ?? null,
    );
  }

  /** x [B,L,C]; context [B,Lc,Cc] or null for self-attention. Scale head_dim^-0.5. */
  forward(x: Tensor, context: Tensor | null): Tensor {
    return x.engine.scope(() => {
      const c = context ?? x;
      const q = linear(x, this.toQ);
      const k = linear(c, this.toK);
      const v = linear(c, this.toV);
      const int8 = !!this.ctx?.int8Attention && this.ctx.current === "int8";
      return linear(attention(q, k, v, this.heads, int8 ? { int8: true } : {}), this.toOut);
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

  static async load(ws: WeightStore, prefix: string, dim: number, contextDim: number, heads: number): Promise<BasicTransformerBlock> {
    const inner = 4 * dim;
    return new BasicTransformerBlock(
      await ws.norm(`${prefix}.norm1`, dim),
      await CrossAttention.load(ws, `${prefix}.attn1`, dim, dim, heads),
      await ws.norm(`${prefix}.norm2`, dim),
      await CrossAttention.load(ws, `${prefix}.attn2`, dim, contextDim, heads),
      await ws.norm(`${prefix}.norm3`, dim),
      await ws.linear(`${prefix}.ff.net.0.proj`, 2 * inner, dim),
      await ws.linear(`${prefix}.ff.net.2`, dim, inner),
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

  static async load(
    ws: WeightStore,
    prefix: string,
    o: { channels: number; heads: number; contextDim: number; layers: number; groups: number },
  ): Promise<Transformer2DModel> {
    const c = o.channels;
    const blocks: BasicTransformerBlock[] = [];
    for (let i = 0; i < o.layers; i++) blocks.push(await BasicTransformerBlock.load(ws, `${prefix}.transformer_blocks.${i}`, c, o.contextDim, o.heads));
    return new Transformer2DModel(await ws.norm(`${prefix}.norm`, c), await ws.linear(`${prefix}.proj_in`, c, c), blocks, await ws.linear(`${prefix}.proj_out`, c, c), o.groups);
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

  static async load(
    ws: WeightStore,
    prefix: string,
    o: LevelParams & { inChannels: number; outChannels: number; layers: number; cross: boolean; downsample: boolean; downsamplePadding: number },
  ): Promise<DownBlock> {
    const resnets: ResnetBlock2D[] = [];
    const attns: Transformer2DModel[] = [];
    for (let i = 0; i < o.layers; i++) {
      resnets.push(
        await ResnetBlock2D.load(ws, `${prefix}.resnets.${i}`, {
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
          await Transformer2DModel.load(ws, `${prefix}.attentions.${i}`, {
            channels: o.outChannels,
            heads: o.heads,
            contextDim: o.contextDim,
            layers: o.transformerLayers,
            groups: o.groups,
          }),
        );
    }
    const down = o.downsample ? await Downsample2D.load(ws, `${prefix}.downsamplers.0`, o.outChannels, o.outChannels, o.downsamplePadding) : null;
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

  static async load(ws: WeightStore, prefix: string, o: LevelParams & { channels: number; outputScaleFactor: number; layers?: number }): Promise<MidBlockCrossAttn> {
    const res = (i: number) =>
      ResnetBlock2D.load(ws, `${prefix}.resnets.${i}`, {
        inChannels: o.channels,
        outChannels: o.channels,
        tembChannels: o.tembChannels,
        groups: o.groups,
        eps: o.eps,
        outputScaleFactor: o.outputScaleFactor,
      });
    const resnets = [await res(0)];
    const attns: Transformer2DModel[] = [];
    for (let i = 0; i < (o.layers ?? 1); i++) {
      attns.push(
        await Transformer2DModel.load(ws, `${prefix}.attentions.${i}`, {
          channels: o.channels,
          heads: o.heads,
          contextDim: o.contextDim,
          layers: o.transformerLayers,
          groups: o.groups,
        }),
      );
      resnets.push(await res(i + 1));
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

  static async load(
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
  ): Promise<UpBlock> {
    const resnets: ResnetBlock2D[] = [];
    const attns: Transformer2DModel[] = [];
    for (let i = 0; i < o.layers; i++) {
      const resSkip = i === o.layers - 1 ? o.inChannels : o.outChannels;
      const resIn = i === 0 ? o.prevOutputChannels : o.outChannels;
      resnets.push(
        await ResnetBlock2D.load(ws, `${prefix}.resnets.${i}`, {
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
          await Transformer2DModel.load(ws, `${prefix}.attentions.${i}`, {
            channels: o.outChannels,
            heads: o.heads,
            contextDim: o.contextDim,
            layers: o.transformerLayers,
            groups: o.groups,
          }),
        );
    }
    const up = o.upsample ? await Upsample2D.load(ws, `${prefix}.upsamplers.0`, o.outChannels, o.outChannels) : null;
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

/** Per-step precision of a UNet built by fromConfig (see src/models/precision.ts; loader.ts loadUNet reads files). */
export interface UNetPrecisionOptions {
  /**
   * Keep these variants of every conv/linear layer resident (e.g. ["bf16", "int8"] for the paper's schedule)
   * and switch between them with setPrecision(). Default: plain fp32 weights, no switching.
   */
  precisions?: readonly Precision[];
  /**
   * INT8 activation ranges for layers quantised from f32 weights: a calibration, or "synthetic" (a fixed range:
   * random-weight latency benchmarks only). None: INT8 layers fail with MissingCalibrationError.
   */
  calibration?: Calibration | "synthetic" | null;
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

  /**
   * Whether the int8 steps also run attention (QK^T, P.V) on the INT8 kernels (default false: f32 attention
   * at every precision, as the paper). Needs the int8 precision loaded.
   */
  setInt8Attention(on: boolean): void {
    if (on && !this.ctx?.loaded.includes("int8")) throw new PrecisionError("UNet: INT8 attention needs the int8 precision loaded");
    if (this.ctx) this.ctx.int8Attention = on;
  }

  get int8Attention(): boolean {
    return !!this.ctx?.int8Attention;
  }

  /** The shared selector of the switch weights (null for a plain fp32 model); `observe` hooks calibration. */
  get precisionContext(): PrecisionContext | null {
    return this.ctx;
  }

  /**
   * Builds the UNet of `config` with weights from `weights`, or random weights of the right shapes
   * ("random", seeded) — e.g. `await UNet.fromConfig(eng, SD15_UNET_CONFIG, "random")` for benchmarks.
   * Unsupported config values throw, naming the field and value.
   */
  static async fromConfig(eng: Engine, config: UNetConfig, weights: WeightStore | "random", seed = 0, opts: UNetPrecisionOptions = {}): Promise<UNet> {
    assertSupported(config as Record<string, any>, UNET_SUPPORTED);
    const ws = weights === "random" ? WeightStore.random(eng, seed) : weights;
    if (opts.precisions) {
      if (ws.precisionSetup) throw new PrecisionError("UNet.fromConfig: the weight store already has precisions set up; pass them one way");
      const ctx = createPrecisionContext(opts.precisions);
      const calibration = ctx.loaded.includes("int8") ? (opts.calibration ?? null) : null;
      await ws.usePrecisions({ ctx, calibration, calibrationFile: calibration && calibration !== "synthetic" ? "the calibration given" : undefined });
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

    const timeLinear1 = await ws.linear("time_embedding.linear_1", tembCh, tIn);
    const timeLinear2 = await ws.linear("time_embedding.linear_2", tembCh, tembCh);
    const kIn = cfg.conv_in_kernel;
    const convIn = await ws.conv("conv_in", { cout: ch[0], cin: cfg.in_channels, kh: kIn, kw: kIn }, { padding: (kIn - 1) >> 1 });

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
    for (const [i, type] of cfg.down_block_types.entries()) {
      const inCh = outCh;
      outCh = ch[i];
      downBlocks.push(
        await DownBlock.load(ws, `down_blocks.${i}`, {
          ...common(i),
          inChannels: inCh,
          outChannels: outCh,
          layers: layersPerBlock[i],
          cross: type === "CrossAttnDownBlock2D",
          downsample: i !== levels - 1,
          downsamplePadding: cfg.downsample_padding,
        }),
      );
    }

    const midBlock = await MidBlockCrossAttn.load(ws, "mid_block", {
      ...common(levels - 1),
      channels: ch[levels - 1],
      outputScaleFactor: cfg.mid_block_scale_factor,
    });

    const rev = (a: any[]) => a.slice().reverse();
    const rCh = rev(ch);
    const rLayers = rev(layersPerBlock);
    const upBlocks: UpBlock[] = [];
    outCh = rCh[0];
    for (const [i, type] of cfg.up_block_types.entries()) {
      const prevOut = outCh;
      outCh = rCh[i];
      const inCh = rCh[Math.min(i + 1, levels - 1)];
      const level = levels - 1 - i;
      upBlocks.push(
        await UpBlock.load(ws, `up_blocks.${i}`, {
          ...common(level),
          inChannels: inCh,
          outChannels: outCh,
          prevOutputChannels: prevOut,
          layers: rLayers[i] + 1,
          cross: type === "CrossAttnUpBlock2D",
          upsample: i !== levels - 1,
        }),
      );
    }

    const convNormOut = await ws.norm("conv_norm_out", ch[0]);
    const kOut = cfg.conv_out_kernel;
    const convOut = await ws.conv("conv_out", { cout: cfg.out_channels, cin: ch[0], kh: kOut, kw: kOut }, { padding: (kOut - 1) >> 1 });
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
        const x = h;
        const states = checkpointed(eng, [x, tembAct, context], () => eng.scope(() => blk.forward(x, tembAct, context)));
        skips.push(...states);
        h = states[states.length - 1];
        record(`down_blocks.${i}`, h);
      });

      const mid = h;
      h = checkpointed(eng, [mid, tembAct, context], () => this.midBlock.forward(mid, tembAct, context));
      record("mid_block", h);

      this.upBlocks.forEach((blk, i) => {
        const mine = skips.splice(skips.length - blk.numResnets, blk.numResnets);
        const x = h;
        // the block consumes its skips array: a recompute (checkpointing) needs it again
        const next = checkpointed(eng, [x, tembAct, context, ...mine], () => blk.forward(x, mine.slice(), tembAct, context));
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
