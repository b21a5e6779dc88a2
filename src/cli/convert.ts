// stepq convert: stepq BF16 / INT8 weights of a model's UNet (weights-tools/convert.ts, format in weights-tools/README.md).
import { parse, UsageError } from "./args.ts";
import { resolveDefaultModel, DEFAULT_MODEL } from "../io/places.ts";
import { convert, type ConvertPrecision } from "../../weights-tools/convert.ts";

export const summary = "write the UNet's BF16 / INT8 weights as stepq safetensors (load with no calibration)";

export const usage = `Usage: stepq convert [--model DIR] --precision bf16,int8 [--out DIR] [--calibration FILE]

Writes unet/stepq-bf16.safetensors (BF16 conv/linear weights) and/or unet/stepq-int8.safetensors (I8
weights, per-channel weight_scale, and each layer's input_scale / input_zero_point from the calibration).
Loading a model with those precisions then builds those layers from these files (no calibration needed; the
layers are bit-identical to the ones quantised from the checkpoint); norms and everything else stay as in the
checkpoint. Format: weights-tools/README.md.

Options:
  --model DIR          diffusers pipeline folder (default: the shipped ${DEFAULT_MODEL})
  --precision LIST     bf16, int8 or bf16,int8
  --out DIR            write a new pipeline folder (other components hard-linked or copied, unet/config.json,
                       the converted files); default: into DIR/unet itself
  --calibration FILE   activation ranges for int8 (default: DIR/unet/stepq-calibration.json; make it with
                       stepq calibrate)
  -q, --quiet          no progress lines
  -h, --help           show this help

Example:
  stepq calibrate --model sd15 --n 20 && stepq convert --model sd15 --precision bf16,int8`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    model: { type: "string", short: "m" },
    precision: { type: "string" },
    out: { type: "string", short: "o" },
    calibration: { type: "string" },
    quiet: { type: "boolean", short: "q" },
  });
  const v = values as Record<string, string | boolean | undefined>;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (v.precision === undefined) throw new UsageError("--precision is required (bf16, int8 or bf16,int8)");
  const list = (v.precision as string).split(",").map((s) => s.trim()).filter(Boolean);
  for (const p of list) if (p !== "bf16" && p !== "int8") throw new UsageError(`--precision: "${p}" is not bf16 or int8 (fp32 is the original checkpoint)`);
  if (!list.length) throw new UsageError("--precision is empty");
  const model = (v.model as string | undefined) ?? resolveDefaultModel();
  const log = v.quiet ? () => {} : (s: string) => process.stderr.write(`stepq convert: ${s}\n`);
  const r = await convert({ model, precisions: list as ConvertPrecision[], out: v.out as string | undefined, calibration: v.calibration as string | undefined, onProgress: log });
  log(`done: ${r.files.map((f) => f.file).join(", ")}`);
  return 0;
}
