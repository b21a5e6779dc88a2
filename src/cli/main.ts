// stepq command line: `stepq <command> [options]`. Each command module exports a description, its
// usage text and run(argv) returning the exit code. Usage errors print one line and exit 2; other
// errors print one line (the stack with STEPQ_DEBUG=1) and exit 1.
import * as fs from "node:fs";
import { UsageError } from "./args.ts";
import { OutputError } from "../io/outputs.ts";
import * as bench from "./bench.ts";
import * as calibrate from "./calibrate.ts";
import * as convert from "./convert.ts";
import * as evalCmd from "./eval.ts";
import * as generate from "./generate.ts";
import * as qatCmd from "./qat.ts";
import * as sensitivity from "./sensitivity.ts";
import * as serve from "./serve.ts";
import * as verify from "./verify.ts";

interface Command {
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  generate,
  verify,
  bench,
  eval: evalCmd,
  calibrate,
  convert,
  qat: qatCmd,
  sensitivity,
  serve,
};

function version(): string {
  for (const rel of ["../package.json", "../../package.json"]) {
    try {
      const j = JSON.parse(fs.readFileSync(new URL(rel, import.meta.url), "utf8"));
      if (j.name === "stepq") return j.version;
    } catch {
      /* next */
    }
  }
  return "unknown";
}

function mainUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  return [
    "Usage: stepq <command> [options]",
    "",
    "Pure-TypeScript Stable Diffusion: Wasm SIMD kernels on shared-memory worker threads.",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`),
    "",
    "Options:",
    "  -h, --help     show help (also: stepq <command> --help)",
    "  -v, --version  print the version",
    "",
    'Example: stepq generate --prompt "a photo of a sneaker" --seed 1 --out sneaker.png',
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "-h" || cmd === "--help" || cmd === "help") {
    if (cmd === "help" && rest[0] && COMMANDS[rest[0]]) {
      process.stdout.write(COMMANDS[rest[0]].usage + "\n");
      return 0;
    }
    if (cmd === undefined) {
      process.stderr.write(mainUsage() + "\n");
      return 2;
    }
    process.stdout.write(mainUsage() + "\n");
    return 0;
  }
  if (cmd === "-v" || cmd === "--version") {
    process.stdout.write(`stepq ${version()}\n`);
    return 0;
  }
  const command = COMMANDS[cmd];
  if (!command) {
    process.stderr.write(`stepq: unknown command "${cmd}" (commands: ${Object.keys(COMMANDS).join(", ")}; see stepq --help)\n`);
    return 2;
  }
  if (rest.includes("-h") || rest.includes("--help")) {
    process.stdout.write(command.usage + "\n");
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    // usage errors (exit 2): bad flags and values, input files named by flags that are missing or invalid,
    // outputs that may not be written (src/io/outputs.ts); anything else failed while running (exit 1)
    if (e instanceof UsageError || e instanceof OutputError) {
      // node:util parseArgs appends advice about "--" to unknown options: keep the first sentence
      const msg = e.message.replace(/\. To specify a positional argument[^]*$/, "");
      process.stderr.write(`stepq ${cmd}: ${msg} (see stepq ${cmd} --help)\n`);
      return 2;
    }
    const err = e as Error;
    if (process.env.STEPQ_DEBUG) process.stderr.write(`${err?.stack ?? err}\n`);
    process.stderr.write(`stepq ${cmd}: ${oneLine(err?.message ?? String(e))}\n`);
    return 1;
  }
}

function oneLine(s: string): string {
  return s.split("\n").filter(Boolean).join(" ");
}

// Run when executed directly (node dist/cli.js, tsx/deno src/cli/main.ts), not when imported.
function realpath(p: string | undefined): string {
  try {
    return p ? fs.realpathSync.native(p) : "";
  } catch {
    return "";
  }
}
if (realpath(process.argv[1]) === realpath(new URL(import.meta.url).pathname)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      // engines are closed by the commands; should anything still hold the event loop, exit anyway
      setTimeout(() => process.exit(code), 2000).unref();
    },
    (e) => {
      process.stderr.write(`stepq: ${(e as Error)?.stack ?? e}\n`);
      process.exitCode = 1;
    },
  );
}
