// Where stepq's own files are on a Node/Deno host: the package root (its models/ folder holds the default
// model), and ../shared, the reference material beside a checkout (golden vectors, the classifier, Fashion-
// MNIST). The one answer to "where is ../shared" for the CLI, the tools and the tests.
import { envVar, host } from "../runtime/env.ts";

/** The package root (the folder with stepq's package.json), from this module's location in src/ or dist/. */
export function packageRoot(): string {
  const { fs, path, url } = host("finding the package root");
  let d = path.dirname(url.fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const pj = path.join(d, "package.json");
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, "utf8")).name === "stepq") return d;
      } catch {
        /* keep looking */
      }
    }
    d = path.dirname(d);
  }
  return path.resolve(path.dirname(url.fileURLToPath(import.meta.url)), "..", "..");
}

/** Candidate ../shared folders, in order: $STEPQ_SHARED, beside the package, beside the working directory. */
export function sharedDirCandidates(): string[] {
  const { path } = host("finding ../shared");
  const c: string[] = [];
  const env = envVar("STEPQ_SHARED");
  if (env) c.push(path.resolve(env));
  c.push(path.resolve(packageRoot(), "..", "shared"), path.resolve(host().process.cwd(), "..", "shared"));
  return [...new Set(c)];
}

/** The ../shared folder: the first candidate that exists (else the first candidate, for messages). */
export function sharedDir(): string {
  const { fs } = host();
  const c = sharedDirCandidates();
  return c.find((d) => fs.existsSync(d)) ?? c[0];
}

/** First folder of `rel` under the package root or a ../shared candidate that holds `probe`; null if none. */
export function findBundledOrShared(rel: string[], probe: string): { found: string | null; candidates: string[] } {
  const { fs, path } = host();
  const bases = [packageRoot(), ...sharedDirCandidates()];
  const candidates = [...new Set(bases.map((b) => path.join(b, ...rel)))];
  return { found: candidates.find((d) => fs.existsSync(path.join(d, probe))) ?? null, candidates };
}

/** The model `stepq generate` uses without --model. */
export const DEFAULT_MODEL = "fashion-sd-tiny";

/** Where the default model is looked for: <package>/models/fashion-sd-tiny, then the ../shared candidates. */
export function defaultModelCandidates(): string[] {
  return findBundledOrShared(["models", DEFAULT_MODEL], "model_index.json").candidates;
}

/** The default model folder; throws naming every place looked in when none exists. */
export function resolveDefaultModel(): string {
  const { found, candidates } = findBundledOrShared(["models", DEFAULT_MODEL], "model_index.json");
  if (!found) throw new Error(`no --model given and the default model ${DEFAULT_MODEL} was not found (looked in ${candidates.join(", ")})`);
  return found;
}
