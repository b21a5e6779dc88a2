// Prompts for the tools that run the pipeline without a user prompt (calibrate, sensitivity, eval, QAT):
// the captions fashion-sd-tiny was trained on, and generic prompts for other Stable Diffusion models.
import { absoluteLocation, baseName, readText } from "../io/source.ts";

/** Fashion-MNIST class names (the captions fashion-sd-tiny was trained on: "a photo of a {class}"). */
export const FASHION_CLASSES = ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

/** Generic prompts for Stable Diffusion models (COCO-caption style, varied subjects and styles). */
export const GENERIC_PROMPTS = [
  "a photograph of an astronaut riding a horse",
  "a bowl of fruit on a wooden table, still life",
  "a red sports car parked on a city street at night",
  "portrait of an old man with a beard, oil painting",
  "a cozy living room with a fireplace and a large window",
  "a mountain lake at sunrise, mist over the water",
  "a cat sleeping on a stack of books",
  "a futuristic city skyline, digital art",
  "a plate of pasta with tomato sauce and basil",
  "a lighthouse on a rocky coast during a storm",
  "a group of people walking in a busy market",
  "a watercolor painting of a flower field",
  "an owl perched on a branch in a snowy forest",
  "a close-up photo of a vintage camera",
  "a sailboat on a calm sea under a clear blue sky",
  "a child flying a kite on a beach",
  "an ancient temple in a tropical jungle",
  "a steaming cup of coffee next to a laptop",
  "a dog running through a field of tall grass",
  "a medieval castle on a hill, fantasy illustration",
];

/** Whether a model folder looks like fashion-sd-tiny (its name, or its 32x32 native size with 3 VAE levels). */
export function isFashionModel(model: string): boolean {
  return /fashion/i.test(baseName(absoluteLocation(model)));
}

/** n default prompts for a model: the fashion captions (cycled) for fashion-sd-tiny, else GENERIC_PROMPTS (cycled). */
export function defaultCalibrationPrompts(model: string, n: number): string[] {
  const base = isFashionModel(model) ? FASHION_CLASSES.map((c) => `a photo of a ${c}`) : GENERIC_PROMPTS;
  return Array.from({ length: n }, (_, i) => base[i % base.length]);
}

/** Prompts from a text file: one per line, blank lines and lines starting with # ignored. */
export async function readPromptsFile(file: string): Promise<string[]> {
  const lines = (await readText(file, { maxBytes: 64 * 1024 * 1024, what: "a prompts file" })).split(/\r?\n/).map((l) => l.trim());
  const prompts = lines.filter((l) => l && !l.startsWith("#"));
  if (!prompts.length) throw new Error(`${file}: no prompts (one per line)`);
  return prompts;
}
