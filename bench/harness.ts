// What every kernel benchmark in bench/ shares: --key=value arguments, best-of timing, and a seeded uniform
// generator for inputs (the values do not matter for speed, only that every run sees the same ones).

/** The command line's `--key=value` (or bare `--flag`, value "1") arguments. */
export function benchArgs(argv: readonly string[] = process.argv.slice(2)): Map<string, string> {
  return new Map(
    argv.map((a) => {
      const [k, v] = a.replace(/^--/, "").split("=");
      return [k, v ?? "1"] as [string, string];
    }),
  );
}

/**
 * Best time in seconds of one call of fn, over repeats lasting at least minTime seconds in total and at least
 * minRepeats of them, after one untimed warm-up call (the best is robust against other load on the machine).
 */
export function timeBest(fn: () => void, minTime: number, minRepeats: number): number {
  fn();
  let best = Infinity, total = 0, n = 0;
  while (total < minTime || n < minRepeats) {
    const t0 = performance.now();
    fn();
    const dt = (performance.now() - t0) / 1000;
    best = Math.min(best, dt);
    total += dt;
    n++;
  }
  return best;
}

/** n values uniform in [lo, hi) from a 32-bit LCG seeded with seed. */
export function lcgUniform(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = lo + (hi - lo) * (s / 4294967296);
  }
  return a;
}
