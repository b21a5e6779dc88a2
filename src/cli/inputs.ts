// Checks of input files named by flags that need more than "is it a file" (args.ts inputFile): they run before
// any model loads, and every problem is a usage error naming the flag (exit 2).
import * as fs from "node:fs";
import * as path from "node:path";
import { inputFile, UsageError } from "./args.ts";
import { readCalibration } from "../models/calibration.ts";
import { stepqWeightsName } from "../models/converted.ts";

export interface CalibrationUse {
  /** The model folder (pipeline) or unet folder the run loads. */
  model: string;
  /** Whether the run has int8 steps (only they use a calibration). */
  int8: boolean;
  /** The run's precision, for the message. */
  precision: string;
  /** Where warnings go (default: stderr). */
  warn?: (message: string) => void;
}

/** The unet folder of a pipeline folder, or the folder itself when it is a unet folder. */
function unetFolder(model: string): string {
  return fs.existsSync(path.join(model, "model_index.json")) ? path.join(model, "unet") : model;
}

/**
 * --calibration FILE: a readable, valid calibration file (else exit 2). It must also be used: with converted
 * int8 weights (unet/stepq-int8.safetensors) int8 layers take the ranges stored in them, so an explicit
 * calibration would be silently ignored; that is an error. A run without int8 steps uses no calibration: a
 * warning says so. Returns the file (undefined when the flag is not given).
 */
export async function calibrationFlag(file: string | undefined, use: CalibrationUse): Promise<string | undefined> {
  if (file === undefined) return undefined;
  inputFile("--calibration", file);
  try {
    await readCalibration(file);
  } catch (e) {
    throw new UsageError(`--calibration ${(e as Error).message}`);
  }
  const warn = use.warn ?? ((m: string) => process.stderr.write(`stepq: warning: ${m}\n`));
  if (!use.int8) {
    warn(`--calibration ${file} is not used: precision ${use.precision} has no int8 step`);
    return file;
  }
  const converted = path.join(unetFolder(use.model), stepqWeightsName("int8"));
  if (fs.existsSync(converted))
    throw new UsageError(
      `--calibration ${file} would not be used: int8 layers load from the converted ${converted} with the activation ranges stored in it; drop --calibration, or move that file away to quantise from the checkpoint with this calibration`,
    );
  return file;
}
