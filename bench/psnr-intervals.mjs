// Per-image PSNR against FP32 images, with 95% intervals, from `stepq eval --save-images` files (u8
// [n, H, W, 3] safetensors): the mean over images that differ from FP32 (as stepq eval reports it), its
// normal-approximation 95% interval (mean +- 1.96 sd / sqrt(n)), and for each pair of runs the paired
// difference of the per-image PSNRs (images that differ in both) with its interval.
// Usage: node bench/psnr-intervals.mjs FP32.safetensors A.safetensors [B.safetensors ...]
import * as fs from "node:fs";

function readImages(file) {
  const buf = fs.readFileSync(file);
  const hlen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + hlen).toString("utf8"));
  const [name, t] = Object.entries(header).find(([k]) => k !== "__metadata__");
  if (t.dtype !== "U8") throw new Error(`${file}: ${name} is ${t.dtype}, expected U8`);
  const [n] = t.shape;
  const data = buf.subarray(8 + hlen + t.data_offsets[0], 8 + hlen + t.data_offsets[1]);
  const per = data.length / n;
  return { n, per, data, shape: t.shape };
}

function psnrs(ref, x) {
  if (ref.n !== x.n || ref.per !== x.per) throw new Error("image sets differ in shape");
  const out = new Float64Array(ref.n);
  for (let i = 0; i < ref.n; i++) {
    let s = 0;
    const o = i * ref.per;
    for (let j = 0; j < ref.per; j++) {
      const d = ref.data[o + j] - x.data[o + j];
      s += d * d;
    }
    const mse = s / ref.per;
    out[i] = mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
  }
  return out;
}

function stats(v) {
  const f = v.filter(Number.isFinite);
  const m = f.reduce((a, b) => a + b, 0) / f.length;
  const sd = Math.sqrt(f.reduce((a, b) => a + (b - m) ** 2, 0) / (f.length - 1));
  const h = (1.96 * sd) / Math.sqrt(f.length);
  return { n: f.length, mean: m, lo: m - h, hi: m + h, sd, min: Math.min(...v) };
}

const [refFile, ...files] = process.argv.slice(2);
const ref = readImages(refFile);
const all = files.map((f) => ({ f, p: psnrs(ref, readImages(f)) }));
for (const { f, p } of all) {
  const s = stats(Array.from(p));
  console.log(`${f}: PSNR vs FP32 mean ${s.mean.toFixed(2)} dB, 95% [${s.lo.toFixed(2)}, ${s.hi.toFixed(2)}] (sd ${s.sd.toFixed(2)}, n ${s.n}, identical ${p.length - s.n}), min ${s.min.toFixed(2)}`);
}
for (let a = 0; a < all.length; a++)
  for (let b = a + 1; b < all.length; b++) {
    const d = [];
    for (let i = 0; i < ref.n; i++) if (Number.isFinite(all[a].p[i]) && Number.isFinite(all[b].p[i])) d.push(all[b].p[i] - all[a].p[i]);
    const s = stats(d);
    console.log(`${all[b].f} - ${all[a].f}: paired mean ${s.mean.toFixed(2)} dB, 95% [${s.lo.toFixed(2)}, ${s.hi.toFixed(2)}] (n ${s.n})`);
  }
