// Types for the two untyped modules src/io/png.ts uses: pako 1.0.x's deflate, and pngjs's packer (the class
// PNG.sync.write uses; not part of pngjs's typed API). The browser bundle replaces the packer with null.
declare module "pako" {
  const pako: { deflate(data: Uint8Array, options?: { level?: number; strategy?: number; chunkSize?: number }): Uint8Array };
  export default pako;
}

declare module "pngjs/lib/packer.js" {
  interface PngPacker {
    filterData(data: Buffer, width: number, height: number): Buffer;
    getDeflateOptions(): { chunkSize: number; level: number; strategy: number };
    packIHDR(width: number, height: number): Buffer;
    packIDAT(data: Buffer): Buffer;
    packIEND(): Buffer;
  }
  const Packer: (new (options: { colorType: number; inputColorType: number; bitDepth: number; inputHasAlpha: boolean }) => PngPacker) | null;
  export default Packer;
}
