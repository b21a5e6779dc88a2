// stepq convert: stepq BF16 / INT8 weights of a model's UNet (weights-tools/convert.ts, format in weights-tools/README.md).
import { parse, UsageError, FORCE_OPTION, inputFile, modelOption } from "./args.ts";
import { DEFAULT_MODEL } from "../io/places.ts";
import { convert, type ConvertPrecision } from "../../weights-tools/convert.ts";
import { readCalibration } from "../models/calibration.ts";

export const summary = "write the UNet's BF16 / INT8 weights as stepq safetensors (load with no calibration)";

export const usage = `Usage: stepq convert [--model DIR] --precision bf16,int8 [--out DIR] [--calibration FILE] [--force]

Writes unet/stepq-bf16.safetensors (BF16 conv/linear weights) and/or unet/stepq-int8.safetensors (I8
weights, per-channel weight_scale, and each layer's input_scale / input_zero_point from the calibration).
Loading a model with those precisions then builds those layers from these files (no calibration needed; the
layers are bit-identical to the ones quantised from the checkpoint); norms and everything else stay as in the
checkpoint. Format: weights-tools/README.md.

Options:
  --model DIR          diffusers pipeline folder (default: the shipped ${DEFAULT_MODEL})
  --precision LIST     bf16, int8 or bf16,int8
  --out DIR            write a new pipeline folder (other components hard-linked or copied, unet/config.json,
                       the converted files); default: into DIR/unet itself. It must be outside the model
                       folder (symlinks resolved; --out DIR itself means in place) and new, empty, or a
                       folder an earlier convert wrote
  --calibration FILE   activation ranges for int8 (default: DIR/unet/stepq-calibration.json; make it with
                       stepq calibrate); not used for bf16 (a warning says so)
  --force              write into an existing --out folder that holds other files (files of the same names
                       are replaced), or replace converted files that are not safetensors
  -q, --quiet          no progress lines

Overwrites: DIR/unet/stepq-bf16.safetensors and stepq-int8.safetensors (or those in --out), each replaced
atomically: interrupted, the previous file stays whole. Nothing else in DIR is written.
  -h, --help           show this help

Example:
  stepq calibrate --model models/sd15 --n 20 && stepq convert --model models/sd15 --precision bf16,int8`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    model: { type: "string", short: "m" },
    precision: { type: "string" },
    out: { type: "string", short: "o" },
    calibration: { type: "string" },
    ...FORCE_OPTION,
    quiet: { type: "boolean", short: "q" },
  });
  const v = values as Record<string, string | boolean | undefined>;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (v.precision === undefined) throw new UsageError("--precision is required (bf16, int8 or bf16,int8)");
  const list = (v.precision as string).split(",").map((s) => s.trim()).filter(Boolean);
  for (const p of list) if (p !== "bf16" && p !== "int8") throw new UsageError(`--precision: "${p}" is not bf16 or int8 (fp32 is the original checkpoint)`);
  if (!list.length) throw new UsageError("--precision is empty");
  const model = modelOption(v.model);
  const log = v.quiet ? () => {} : (s: string) => process.stderr.write(`stepq convert: ${s}\n`);
  let calibration = v.calibration as string | undefined;
  if (calibration !== undefined) {
    inputFile("--calibration", calibration);
    try {
      await readCalibration(calibration);
    } catch (e) {
      throw new UsageError(`--calibration ${(e as Error).message}`);
    }
    if (!list.includes("int8")) {
      process.stderr.write(`stepq convert: warning: --calibration ${calibration} is not used: bf16 conversion needs no calibration\n`);
      calibration = undefined;
    }
  }
  const r = await convert({ model, precisions: list as ConvertPrecision[], out: v.out as string | undefined, calibration, force: !!v.force, onProgress: log });
  log(`done: ${r.files.map((f) => f.file).join(", ")}`);
  return 0;
}
