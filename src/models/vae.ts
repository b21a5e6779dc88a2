// AutoencoderKL (diffusers): Encoder (conv_in, DownEncoderBlock2D…, UNetMidBlock2D, GroupNorm+SiLU,
// conv_out) → quant_conv → posterior mean / logvar; post_quant_conv → Decoder (conv_in, UNetMidBlock2D,
// UpDecoderBlock2D…, GroupNorm+SiLU, conv_out). NHWC activations.
//
// decode(z) is diffusers `vae.decode(z).sample`: no scaling inside. The pipeline divides the denoised
// latents by `scalingFactor` (and adds `shiftFactor` when set) first; encode() likewise returns the
// unscaled posterior.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { linear, type LinearWeight } from "../nn/linear.ts";
import { conv2d, type ConvWeight } from "../nn/conv.ts";
import { groupNorm } from "../nn/norm.ts";
import { attention } from "../nn/attention.ts";
import { add } from "../nn/elementwise.ts";
import { assertSupported, VAE_SUPPORTED, type VaeConfig } from "./config.ts";
import { WeightStore, type NormParams } from "./weights.ts";
import { ResnetBlock2D, Downsample2D, Upsample2D } from "./blocks.ts";

/** The VAE's resnets, attention and output norms all use eps 1e-6. */
const EPS = 1e-6;

/**
 * The mid-block attention of the VAE (diffusers Attention with residual_connection, one head over the
 * H*W positions): group_norm → to_q/to_k/to_v (with bias) → attention → to_out.0, plus the input.
 * Checkpoints saved before diffusers 0.14 name the layers query/key/value/proj_attn; both load.
 */
class VaeAttention {
  private constructor(
    private norm: NormParams,
    private toQ: LinearWeight,
    private toK: LinearWeight,
    private toV: LinearWeight,
    private toOut: LinearWeight,
    private groups: number,
  ) {}

  static async load(ws: WeightStore, prefix: string, channels: number, groups: number): Promise<VaeAttention> {
    const legacy = !ws.has(`${prefix}.to_q.weight`) && ws.has(`${prefix}.query.weight`);
    const name = (modern: string, old: string) => `${prefix}.${legacy ? old : modern}`;
    const c = channels;
    return new VaeAttention(
      await ws.norm(`${prefix}.group_norm`, c),
      await ws.linear(name("to_q", "query"), c, c),
      await ws.linear(name("to_k", "key"), c, c),
      await ws.linear(name("to_v", "value"), c, c),
      await ws.linear(name("to_out.0", "proj_attn"), c, c),
      groups,
    );
  }

  forward(x: Tensor): Tensor {
    return x.engine.scope(() => {
      const [b, h, w, c] = x.shape;
      const t = groupNorm(x, this.groups, this.norm.gamma, this.norm.beta, EPS).reshape([b, h * w, c]);
      const q = linear(t, this.toQ);
      const k = linear(t, this.toK);
      const v = linear(t, this.toV);
      return add(linear(attention(q, k, v, 1), this.toOut).reshape([b, h, w, c]), x);
    });
  }
}

/** UNetMidBlock2D without time embedding: resnet, then (attention, resnet). */
class VaeMidBlock {
  private constructor(
    private resnets: ResnetBlock2D[],
    private attentions: (VaeAttention | null)[],
  ) {}

  static async load(ws: WeightStore, prefix: string, channels: number, groups: number, addAttention: boolean): Promise<VaeMidBlock> {
    const res = (i: number) =>
      ResnetBlock2D.load(ws, `${prefix}.resnets.${i}`, { inChannels: channels, outChannels: channels, tembChannels: null, groups, eps: EPS });
    return new VaeMidBlock([await res(0), await res(1)], [addAttention ? await VaeAttention.load(ws, `${prefix}.attentions.0`, channels, groups) : null]);
  }

  forward(x: Tensor): Tensor {
    return x.engine.scope(() => {
      let h = this.resnets[0].forward(x, null);
      for (let i = 0; i < this.attentions.length; i++) {
        const a = this.attentions[i];
        if (a) {
          const next = a.forward(h);
          h.free();
          h = next;
        }
        const next = this.resnets[i + 1].forward(h, null);
        h.free();
        h = next;
      }
      return h;
    });
  }
}

/** DownEncoderBlock2D (resnets, then a pad-(0,1,0,1) stride-2 Downsample2D) or UpDecoderBlock2D (resnets, then Upsample2D). */
class VaeBlock {
  constructor(
    private resnets: ResnetBlock2D[],
    private resample: Downsample2D | Upsample2D | null,
  ) {}

  forward(x: Tensor): Tensor {
    return x.engine.scope(() => {
      let h = x;
      for (const r of this.resnets) {
        const next = r.forward(h, null);
        if (h !== x) h.free();
        h = next;
      }
      if (this.resample) {
        const next = this.resample.forward(h);
        if (h !== x) h.free();
        h = next;
      }
      return h;
    });
  }
}

async function resnets(ws: WeightStore, prefix: string, n: number, cin: number, cout: number, groups: number): Promise<ResnetBlock2D[]> {
  const out: ResnetBlock2D[] = [];
  for (let i = 0; i < n; i++)
    out.push(await ResnetBlock2D.load(ws, `${prefix}.resnets.${i}`, { inChannels: i === 0 ? cin : cout, outChannels: cout, tembChannels: null, groups, eps: EPS }));
  return out;
}

class Encoder {
  private constructor(
    private convIn: ConvWeight,
    private blocks: VaeBlock[],
    private mid: VaeMidBlock,
    private normOut: NormParams,
    private convOut: ConvWeight,
    private groups: number,
  ) {}

  static async load(ws: WeightStore, cfg: VaeConfig): Promise<Encoder> {
    const ch = cfg.block_out_channels;
    const g = cfg.norm_num_groups;
    const convIn = await ws.conv("conv_in", { cout: ch[0], cin: cfg.in_channels, kh: 3, kw: 3 }, { padding: 1 });
    const blocks: VaeBlock[] = [];
    let out = ch[0];
    for (let i = 0; i < ch.length; i++) {
      const inCh = out;
      out = ch[i];
      const last = i === ch.length - 1;
      blocks.push(
        new VaeBlock(
          await resnets(ws, `down_blocks.${i}`, cfg.layers_per_block, inCh, out, g),
          last ? null : await Downsample2D.load(ws, `down_blocks.${i}.downsamplers.0`, out, out, 0),
        ),
      );
    }
    const top = ch[ch.length - 1];
    const mid = await VaeMidBlock.load(ws, "mid_block", top, g, cfg.mid_block_add_attention);
    const normOut = await ws.norm("conv_norm_out", top);
    const convOut = await ws.conv("conv_out", { cout: 2 * cfg.latent_channels, cin: top, kh: 3, kw: 3 }, { padding: 1 });
    return new Encoder(convIn, blocks, mid, normOut, convOut, g);
  }

  forward(x: Tensor): Tensor {
    const eng = x.engine;
    return eng.scope(() => {
      let h = conv2d(x, this.convIn);
      for (const b of this.blocks) {
        const next = b.forward(h);
        h.free();
        h = next;
      }
      const m = this.mid.forward(h);
      h.free();
      return conv2d(groupNorm(m, this.groups, this.normOut.gamma, this.normOut.beta, EPS, { silu: true }), this.convOut);
    });
  }
}

class Decoder {
  private constructor(
    private convIn: ConvWeight,
    private mid: VaeMidBlock,
    private blocks: VaeBlock[],
    private normOut: NormParams,
    private convOut: ConvWeight,
    private groups: number,
  ) {}

  static async load(ws: WeightStore, cfg: VaeConfig): Promise<Decoder> {
    const rch = cfg.block_out_channels.slice().reverse();
    const g = cfg.norm_num_groups;
    const convIn = await ws.conv("conv_in", { cout: rch[0], cin: cfg.latent_channels, kh: 3, kw: 3 }, { padding: 1 });
    const mid = await VaeMidBlock.load(ws, "mid_block", rch[0], g, cfg.mid_block_add_attention);
    const blocks: VaeBlock[] = [];
    let out = rch[0];
    for (let i = 0; i < rch.length; i++) {
      const prev = out;
      out = rch[i];
      const last = i === rch.length - 1;
      blocks.push(
        new VaeBlock(
          await resnets(ws, `up_blocks.${i}`, cfg.layers_per_block + 1, prev, out, g),
          last ? null : await Upsample2D.load(ws, `up_blocks.${i}.upsamplers.0`, out, out),
        ),
      );
    }
    const c0 = cfg.block_out_channels[0];
    const normOut = await ws.norm("conv_norm_out", c0);
    const convOut = await ws.conv("conv_out", { cout: cfg.out_channels, cin: c0, kh: 3, kw: 3 }, { padding: 1 });
    return new Decoder(convIn, mid, blocks, normOut, convOut, g);
  }

  forward(z: Tensor): Tensor {
    const eng = z.engine;
    return eng.scope(() => {
      const hIn = conv2d(z, this.convIn);
      let h = this.mid.forward(hIn);
      hIn.free();
      for (const b of this.blocks) {
        const next = b.forward(h);
        h.free();
        h = next;
      }
      return conv2d(groupNorm(h, this.groups, this.normOut.gamma, this.normOut.beta, EPS, { silu: true }), this.convOut);
    });
  }
}

export interface VaeLoadOptions {
  /** Load the encoder too (needed for img2img); default true. */
  encoder?: boolean;
}

export class Vae {
  private constructor(
    readonly engine: Engine,
    readonly config: VaeConfig,
    private decoder: Decoder,
    private postQuantConv: ConvWeight | null,
    private encoder: Encoder | null,
    /** quant_conv split into its mean and logvar output halves (DiagonalGaussianDistribution's chunk). */
    private quantMean: ConvWeight | null,
    private quantLogvar: ConvWeight | null,
  ) {}

  /** diffusers: latents = vae.encode(x).latent_dist.sample() * scaling_factor; images from vae.decode(latents / scaling_factor). */
  get scalingFactor(): number {
    return this.config.scaling_factor;
  }

  /** Subtracted before scaling on encode and added back before decode when not null (SD 3 style VAEs; null for SD 1.x/2.x). */
  get shiftFactor(): number | null {
    return this.config.shift_factor;
  }

  get latentChannels(): number {
    return this.config.latent_channels;
  }

  get hasEncoder(): boolean {
    return this.encoder !== null;
  }

  /** Builds the VAE of `config` from `weights` (or random weights of the right shapes). */
  static async fromConfig(eng: Engine, config: VaeConfig, weights: WeightStore | "random", opts: VaeLoadOptions & { seed?: number } = {}): Promise<Vae> {
    assertSupported(config as Record<string, any>, VAE_SUPPORTED);
    const ws = weights === "random" ? WeightStore.random(eng, opts.seed ?? 0) : weights;
    const lat = config.latent_channels;
    const decoder = await Decoder.load(ws.at("decoder."), config);
    const postQuantConv = config.use_post_quant_conv ? await ws.conv("post_quant_conv", { cout: lat, cin: lat, kh: 1, kw: 1 }) : null;
    let encoder: Encoder | null = null;
    let quantMean: ConvWeight | null = null;
    let quantLogvar: ConvWeight | null = null;
    if (opts.encoder !== false) {
      encoder = await Encoder.load(ws.at("encoder."), config);
      if (config.use_quant_conv) {
        const shape = { cout: 2 * lat, cin: 2 * lat, kh: 1, kw: 1 };
        quantMean = await ws.conv("quant_conv", shape, { outputRange: [0, lat] });
        quantLogvar = await ws.conv("quant_conv", shape, { outputRange: [lat, 2 * lat] });
      } else throw new Error("vae config: use_quant_conv false is not supported");
    }
    return new Vae(eng, config, decoder, postQuantConv, encoder, quantMean, quantLogvar);
  }

  /** diffusers `vae.decode(z).sample`: z NHWC [B,h,w,latent_channels] (already divided by scalingFactor) → image NHWC [B,8h,8w,3] in about [-1,1]. */
  decode(z: Tensor): Tensor {
    if (z.shape.length !== 4 || z.shape[3] !== this.latentChannels)
      throw new Error(`Vae.decode: latents must be NHWC [B,h,w,${this.latentChannels}], got [${z.shape}]`);
    return this.engine.scope(() => this.decoder.forward(this.postQuantConv ? conv2d(z, this.postQuantConv) : z));
  }

  /**
   * diffusers `vae.encode(x).latent_dist`: image NHWC [B,H,W,3] in [-1,1] → posterior mean and logvar
   * (clamped to [-30, 20]), each NHWC [B,H/8,W/8,latent_channels], unscaled.
   */
  encode(x: Tensor): { mean: Tensor; logvar: Tensor } {
    if (!this.encoder) throw new Error("Vae.encode: the VAE was loaded without its encoder");
    if (x.shape.length !== 4 || x.shape[3] !== this.config.in_channels)
      throw new Error(`Vae.encode: image must be NHWC [B,H,W,${this.config.in_channels}], got [${x.shape}]`);
    return this.engine.scope(() => {
      const h = this.encoder!.forward(x);
      const mean = conv2d(h, this.quantMean!);
      const logvar = conv2d(h, this.quantLogvar!);
      // torch.clamp(logvar, -30, 20): a few thousand values, done on the host view
      const lv = logvar.f32();
      for (let i = 0; i < lv.length; i++) lv[i] = Math.min(20, Math.max(-30, lv[i]));
      return { mean, logvar };
    });
  }
}
