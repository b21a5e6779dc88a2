// Building blocks shared by the UNet and the VAE (diffusers' resnet.py / downsampling.py / upsampling.py):
// ResnetBlock2D, Downsample2D, Upsample2D. Plain forward code over the nn ops, NHWC activations; every block
// runs inside eng.scope() so its temporaries go back to the allocator when it returns.
import type { Engine } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { linear, type LinearWeight } from "../nn/linear.ts";
import { conv2d, type ConvWeight } from "../nn/conv.ts";
import { groupNorm } from "../nn/norm.ts";
import { add, scale, upsample2x } from "../nn/elementwise.ts";
import type { NormParams, WeightStore } from "./weights.ts";

/**
 * Runs one model block; while training with gradient checkpointing (src/train), the block's activations are
 * recomputed in the backward pass instead of kept. `inputs`: every tensor the block reads (not its weights).
 */
export function checkpointed<T extends Tensor | Tensor[]>(eng: Engine, inputs: readonly Tensor[], fn: () => T): T {
  return eng.grad ? eng.grad.checkpoint(inputs, fn) : fn();
}

/** Frees `old` unless it is `keep` (the caller's input): for loops that replace a running tensor. */
export function replace(old: Tensor, next: Tensor, keep: Tensor): Tensor {
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

  static async load(
    ws: WeightStore,
    prefix: string,
    o: { inChannels: number; outChannels: number; tembChannels: number | null; groups: number; eps: number; outputScaleFactor?: number },
  ): Promise<ResnetBlock2D> {
    const { inChannels: cin, outChannels: cout } = o;
    return new ResnetBlock2D(
      cin,
      cout,
      await ws.norm(`${prefix}.norm1`, cin),
      await ws.conv(`${prefix}.conv1`, { cout, cin, kh: 3, kw: 3 }, { padding: 1 }),
      o.tembChannels ? await ws.linear(`${prefix}.time_emb_proj`, cout, o.tembChannels) : null,
      await ws.norm(`${prefix}.norm2`, cout),
      await ws.conv(`${prefix}.conv2`, { cout, cin: cout, kh: 3, kw: 3 }, { padding: 1 }),
      cin !== cout ? await ws.conv(`${prefix}.conv_shortcut`, { cout, cin, kh: 1, kw: 1 }) : null,
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

  static async load(ws: WeightStore, prefix: string, channels: number, outChannels: number, padding: number): Promise<Downsample2D> {
    return new Downsample2D(await ws.conv(`${prefix}.conv`, { cout: outChannels, cin: channels, kh: 3, kw: 3 }, { stride: 2, padding }), padding);
  }

  forward(x: Tensor): Tensor {
    return this.padding === 0 ? conv2d(x, this.conv, { padding: [0, 0, 1, 1] }) : conv2d(x, this.conv);
  }
}

/** Upsample2D with use_conv: nearest 2x, then a 3x3 conv with padding 1. */
export class Upsample2D {
  private constructor(private conv: ConvWeight) {}

  static async load(ws: WeightStore, prefix: string, channels: number, outChannels: number): Promise<Upsample2D> {
    return new Upsample2D(await ws.conv(`${prefix}.conv`, { cout: outChannels, cin: channels, kh: 3, kw: 3 }, { padding: 1 }));
  }

  forward(x: Tensor): Tensor {
    return x.engine.scope(() => conv2d(upsample2x(x), this.conv));
  }
}

