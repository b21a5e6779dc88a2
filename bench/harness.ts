// What every kernel benchmark in bench/ shares: --key=value arguments, best-of timing, a seeded uniform
// generator for inputs (the values do not matter for speed, only that every run sees the same ones), and the
// op benchmarks' case matrix (cases x SIMD builds x thread counts, best of rounds, table, JSON).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeFileAtomic } from "../src/io/files.ts";
import { Engine, type SimdVariant } from "../src/runtime/engine.ts";

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

/** One benchmark case: `setup` builds its inputs on an engine and returns the call to time. */
export interface OpCase {
  name: string;
  unit: "GB/s" | "GFLOP/s";
  /** Bytes moved or flops per call. */
  work: number;
  setup(e: Engine): () => void;
}

export interface OpRow {
  case: string;
  unit: string;
  simd: SimdVariant;
  threads: number;
  ms: number;
  rate: number;
}

/**
 * Times every case on every (SIMD build, thread count) engine, `rounds` times over the whole matrix keeping
 * each cell's best (robust against other load), prints progress to stderr and a table (one line per case,
 * columns simd x threads) to stdout, and writes bench/results/<resultFile> atomically.
 */
export async function runOpMatrix(o: {
  cases: readonly OpCase[];
  simds: readonly SimdVariant[];
  threads: readonly number[];
  rounds: number;
  minTime: number;
  minRepeats: number;
  only?: string;
  quick: boolean;
  resultFile: string;
  /** Table cells also show milliseconds per call. */
  showMs?: boolean;
}): Promise<OpRow[]> {
  const cases = o.cases.filter((c) => !o.only || c.name.includes(o.only));
  const w = Math.max(44, ...cases.map((c) => c.name.length));
  const rows: OpRow[] = [];
  for (let round = 0; round < o.rounds; round++)
    for (const simd of o.simds)
      for (const threads of o.threads) {
        const e = await Engine.create({ threads, simd, memoryBytes: 1024 << 20 });
        for (const c of cases) {
          const fn = e.scope(() => c.setup(e));
          const t = timeBest(fn, o.minTime, o.minRepeats);
          const rate = c.work / t / 1e9;
          const prev = rows.find((r) => r.case === c.name && r.simd === simd && r.threads === threads);
          if (!prev) rows.push({ case: c.name, unit: c.unit, simd, threads, ms: t * 1e3, rate });
          else if (rate > prev.rate) Object.assign(prev, { ms: t * 1e3, rate });
          console.error(`[${round + 1}/${o.rounds}] ${c.name.padEnd(w)} ${simd.padEnd(8)} t=${threads}  ${(t * 1e3).toFixed(2).padStart(9)} ms  ${rate.toFixed(2).padStart(8)} ${c.unit}`);
        }
        e.close();
      }
  const cols = o.simds.flatMap((s) => o.threads.map((t) => ({ s, t })));
  const cw = o.showMs ? 16 : 12;
  console.log(["case".padEnd(w), "unit".padEnd(8), ...cols.map((c) => `${c.s.slice(0, 4)} t${c.t}`.padStart(cw))].join(" "));
  for (const c of cases) {
    const vals = cols.map(({ s, t }) => rows.find((r) => r.case === c.name && r.simd === s && r.threads === t));
    const cell = (r: OpRow | undefined) => (!r ? "-" : o.showMs ? `${r.rate.toFixed(1)} (${r.ms.toFixed(2)}ms)` : r.rate.toFixed(2));
    console.log([c.name.padEnd(w), c.unit.padEnd(8), ...vals.map((r) => cell(r).padStart(cw))].join(" "));
  }
  const outDir = path.join(process.cwd(), "bench", "results");
  fs.mkdirSync(outDir, { recursive: true });
  const meta = { date: new Date().toISOString(), node: process.version, quick: o.quick, rounds: o.rounds, cpu: os.cpus()[0]?.model, cores: os.cpus().length, loadavg: os.loadavg() };
  writeFileAtomic(path.join(outDir, o.resultFile), JSON.stringify({ meta, rows }, null, 1) + "\n");
  console.log(`wrote bench/results/${o.resultFile}`);
  return rows;
}
