/**
 * Command-line flags of `npm run bench`. Every knob that changes what is measured is
 * recorded in the results file, so a number can always be traced to how it was made.
 */
import { parseArgs } from "node:util";

export interface BenchOptions {
  /** A tenth of the data (the issue's `--quick`). */
  quick: boolean;
  /** Further multiplies the data size; 1 is the size. For smoke tests. */
  scale: number;
  /** Run only these cases (repeatable `--only NAME`, or comma-separated). */
  only: string[];
  /** Measured pairs after the warm-up pair. */
  pairs: number;
  seed: number;
  /** Where to write the JSON; default bench/results/<date>-<host>[-quick].json. */
  json?: string;
  /** Parent of the temporary directory (default: the OS temp dir). */
  tmpdir?: string;
  /** Keep the temporary directory (data, configs, logs) for inspection. */
  keep: boolean;
  /** When Ferry's side of a case is missing, still measure the baseline alone. */
  baselineOnly: boolean;
  list: boolean;
  /** Print the tables of an existing results file instead of measuring. */
  from?: string;
  help: boolean;
}

export const HELP = `Usage: npm run bench -- [--quick] [--only NAME]… [options]

Measures Ferry against GNU tar, pg_dump and restic on seeded, generated data, running
baseline and Ferry alternately (A B A B …) after a warm-up pair.

Options:
  --quick            a tenth of the data (2,000 small files, 4×25.6 MiB)
  --only NAME        run only this case (repeatable, or NAME,NAME); see --list
  --scale X          multiply the data size by X (default 1, or $FERRY_BENCH_SCALE)
  --pairs N          measured pairs per case after the warm-up (default 5, minimum 1)
  --seed N           seed of the generated data (default 6)
  --json FILE        write the results here instead of bench/results/<date>-<host>.json
  --tmpdir DIR       create the temporary directory under DIR (default: $TMPDIR or /tmp)
  --keep             keep the temporary directory
  --baseline-only    for cases whose Ferry side is missing, measure the baseline alone
  --list             list the cases and exit
  --from FILE        print the tables (terminal and Markdown) of an existing results file
  -h, --help         this help
`;

export function parseBenchArgs(argv: string[], env: NodeJS.ProcessEnv): BenchOptions {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      quick: { type: "boolean" },
      only: { type: "string", multiple: true },
      scale: { type: "string" },
      pairs: { type: "string" },
      seed: { type: "string" },
      json: { type: "string" },
      tmpdir: { type: "string" },
      keep: { type: "boolean" },
      "baseline-only": { type: "boolean" },
      list: { type: "boolean" },
      from: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (positionals.length > 0) throw new Error(`unexpected argument ${positionals[0]}`);
  const scale = positiveNumber("--scale", values.scale ?? env.FERRY_BENCH_SCALE ?? "1");
  const pairs = positiveNumber("--pairs", values.pairs ?? "5");
  if (!Number.isInteger(pairs)) throw new Error("--pairs must be a whole number");
  const seed = Number(values.seed ?? "6");
  if (!Number.isInteger(seed) || seed < 0) throw new Error("--seed must be a whole number ≥ 0");
  return {
    quick: values.quick === true,
    scale,
    only: (values.only ?? []).flatMap((o) => o.split(",")).filter((o) => o !== ""),
    pairs,
    seed,
    json: values.json,
    tmpdir: values.tmpdir,
    keep: values.keep === true,
    baselineOnly: values["baseline-only"] === true,
    list: values.list === true,
    from: values.from,
    help: values.help === true,
  };
}

function positiveNumber(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`${flag} must be a positive number, not ${text}`);
  return n;
}
