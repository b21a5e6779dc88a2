// Image and latent sizes a pipeline folder takes, from its unet and vae configs alone (no weights loaded), so
// a size or a latents file that cannot work is reported before a model is loaded.
import { joinLocation } from "../io/source.ts";
import { loadPipelineIndex } from "../io/diffusers.ts";
import { loadUNetConfig, loadVaeConfig } from "../models/config.ts";

export interface PipelineGeometry {
  /** Pixels per latent cell: 2^(VAE levels - 1) (8 for SD, 4 for fashion-sd-tiny). */
  vaeScale: number;
  /** Latent channels the UNet takes (unet in_channels). */
  latentChannels: number;
  /** Latent height and width must be multiples of this: 2^(UNet levels - 1), one halving per downsampler. */
  latentUnit: number;
  /** Image width and height must be multiples of this: lcm(8, vaeScale * latentUnit) (64 for SD, 16 for fashion-sd-tiny). */
  sizeUnit: number;
  /** The native image size (unet sample_size * vaeScale); null when unet/config.json has no sample_size. */
  nativeSize: number | null;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** The size rules of a diffusers pipeline folder (configs are read and support-checked: errors name file and field). */
export async function pipelineGeometry(dir: string): Promise<PipelineGeometry> {
  await loadPipelineIndex(dir); // a missing folder or component is named as such
  const unet = await loadUNetConfig(joinLocation(dir, "unet"));
  const vae = await loadVaeConfig(joinLocation(dir, "vae"));
  const vaeScale = 2 ** (vae.block_out_channels.length - 1);
  const latentUnit = 2 ** (unet.block_out_channels.length - 1);
  const px = vaeScale * latentUnit;
  return {
    vaeScale,
    latentChannels: unet.in_channels,
    latentUnit,
    sizeUnit: (8 * px) / gcd(8, px),
    nativeSize: unet.sample_size === null ? null : unet.sample_size * vaeScale,
  };
}
