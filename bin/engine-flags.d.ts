/** The Node flags the stepq engine needs on the runtime whose process.versions is `versions` (default: the running one); see engine-flags.js. */
export function engineFlags(versions?: { node: string; deno?: string; bun?: string }): string[];
