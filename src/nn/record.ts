// How an op reports itself to the engine's gradient recorder (src/train/tape.ts) when one is set: only when
// an input needs gradients, so inference and frozen models (a teacher) pay one property check per op.
import type { GradRecorder, RecordedOp } from "../runtime/engine.ts";
import type { Tensor } from "../runtime/tensor.ts";

/** The engine's recorder when it should hear about an op on these inputs, else null. */
export function recorder(eng: Tensor["engine"], ...inputs: (Tensor | null | undefined)[]): GradRecorder | null {
  const g = eng.grad;
  if (!g) return null;
  for (const t of inputs) if (t && g.requiresGrad(t)) return g;
  return null;
}

/** Records op on `rec` (from recorder()); a no-op when rec is null. */
export function record(rec: GradRecorder | null, op: RecordedOp): void {
  rec?.record(op);
}
