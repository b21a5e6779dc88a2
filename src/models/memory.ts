// Sizes of a UNet from its config, without building it: parameter count and the peak activation bytes of
// one call. The one formula the pipeline's memory estimate and the benchmarks share.
import type { UNetConfig } from "./config.ts";

/**
 * Peak activation bytes of one UNet call on `batch` latents of `cells` = h * w positions: feature maps and skips
 * at each level (each level has 1/4 the cells of the one above) plus the GEGLU projection at the top;
 * attention is flash-style (src/nn/attention.ts), so there are no [L, L] score matrices to budget for.
 */
export function unetActivationBytes(cfg: Pick<UNetConfig, "block_out_channels">, batch: number, cells: number): number {
  const ch = cfg.block_out_channels;
  let maps = 0;
  ch.forEach((c, i) => (maps += (c * 12 * cells) / 4 ** i));
  const ff = 8 * ch[0] * cells;
  return 2 * 4 * batch * (maps + ff);
}

/**
 * Parameters of the UNet a config builds (counted like UNet.fromConfig builds it; random stores add a bias
 * wherever a checkpoint may have one, as diffusers does). SD 1.5: 859,520,964; SD 2.1: 865,910,724.
 */
export function unetParamCount(cfg: UNetConfig): number {
  const levels = cfg.block_out_channels.length;
  const ch = cfg.block_out_channels;
  const per = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : new Array(levels).fill(v));
  const layers = per(cfg.layers_per_block as number | number[]);
  const ctx = per(cfg.cross_attention_dim as number | number[]);
  const tl = per(cfg.transformer_layers_per_block as number | number[]);
  const tIn = ch[0];
  const temb = cfg.time_embedding_dim ?? ch[0] * 4;
  const lin = (o: number, i: number, bias = true) => o * i + (bias ? o : 0);
  const conv = (o: number, i: number, k: number) => o * i * k * k + o;
  const resnet = (cin: number, cout: number) =>
    2 * cin + conv(cout, cin, 3) + lin(cout, temb) + 2 * cout + conv(cout, cout, 3) + (cin !== cout ? conv(cout, cin, 1) : 0);
  const block = (c: number, cd: number) =>
    6 * c +
    (3 * lin(c, c, false) + lin(c, c)) + // attn1
    (lin(c, c, false) + 2 * lin(c, cd, false) + lin(c, c)) + // attn2
    lin(8 * c, c) + lin(c, 4 * c); // GEGLU feed-forward
  const transformer = (c: number, cd: number, n: number) => 2 * c + 2 * lin(c, c) + n * block(c, cd);

  let n = lin(temb, tIn) + lin(temb, temb) + conv(ch[0], cfg.in_channels, cfg.conv_in_kernel);
  let outCh = ch[0];
  cfg.down_block_types.forEach((type, i) => {
    const inCh = outCh;
    outCh = ch[i];
    for (let j = 0; j < layers[i]; j++) {
      n += resnet(j === 0 ? inCh : outCh, outCh);
      if (type === "CrossAttnDownBlock2D") n += transformer(outCh, ctx[i], tl[i]);
    }
    if (i !== levels - 1) n += conv(outCh, outCh, 3);
  });
  const top = ch[levels - 1];
  n += 2 * resnet(top, top) + transformer(top, ctx[levels - 1], tl[levels - 1]);
  const rCh = ch.slice().reverse();
  const rLayers = layers.slice().reverse();
  outCh = rCh[0];
  cfg.up_block_types.forEach((type, i) => {
    const prevOut = outCh;
    outCh = rCh[i];
    const inCh = rCh[Math.min(i + 1, levels - 1)];
    const level = levels - 1 - i;
    const nl = rLayers[i] + 1;
    for (let j = 0; j < nl; j++) {
      n += resnet((j === 0 ? prevOut : outCh) + (j === nl - 1 ? inCh : outCh), outCh);
      if (type === "CrossAttnUpBlock2D") n += transformer(outCh, ctx[level], tl[level]);
    }
    if (i !== levels - 1) n += conv(outCh, outCh, 3);
  });
  n += 2 * ch[0] + conv(cfg.out_channels, ch[0], cfg.conv_out_kernel);
  return n;
}

