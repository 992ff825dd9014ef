/**
 * The machine a run was made on, recorded with every result: numbers only mean something
 * next to the CPU, the kernel, the filesystem and the versions of the tools compared.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, hostname, loadavg, release, totalmem, type } from "node:os";
import { ROOT } from "./env.js";
import { versionOf } from "./proc.js";

export interface MachineInfo {
  host: string;
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  kernel: string;
  os?: string;
  node: string;
  tmpFilesystem?: string;
  tools: Record<string, string | undefined>;
  /** 1, 5 and 15-minute load averages when the run started: other work on the machine. */
  loadAverage: number[];
  /** The measured build: its commit, and the uncommitted changes under src/ it included. */
  ferry: { version?: string; commit?: string; dirty?: boolean; uncommitted?: string[] };
}

function osName(): string | undefined {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync("/etc/os-release", "utf8"));
    return m?.[1];
  } catch {
    return undefined;
  }
}

/** The checkout the measured build came from ($FERRY_BENCH_GIT_DIR when running a copy). */
const GIT_DIR = process.env.FERRY_BENCH_GIT_DIR ?? ROOT;

function git(args: string[]): string | undefined {
  try {
    return execFileSync("git", ["-C", GIT_DIR, ...args], { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
  } catch {
    return undefined;
  }
}

export async function machineInfo(tmp: string, pgBin?: string): Promise<MachineInfo> {
  const cpuList = cpus();
  let fsType: string | undefined;
  try {
    fsType = execFileSync("findmnt", ["-no", "FSTYPE,SOURCE,OPTIONS", "-T", tmp]).toString().trim();
  } catch {}
  const tools: Record<string, string | undefined> = {
    tar: await versionOf(["tar", "--version"]),
    bash: await versionOf(["bash", "--version"]),
    restic: await versionOf(["restic", "version"]),
    borg: await versionOf(["borg", "--version"]),
    pg_dump: await versionOf([pgBin === undefined ? "pg_dump" : `${pgBin}/pg_dump`, "--version"]),
    postgres: pgBin === undefined ? undefined : await versionOf([`${pgBin}/postgres`, "--version"]),
  };
  const status = git(["status", "--porcelain", "--", "src", "package.json"]);
  return {
    host: hostname(),
    cpuModel: cpuList[0]?.model.trim() ?? "unknown",
    cores: cpuList.length,
    memoryBytes: totalmem(),
    kernel: `${type()} ${release()}`,
    os: osName(),
    node: process.version,
    tmpFilesystem: fsType,
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
    tools,
    ferry: {
      version: (() => {
        try {
          return (JSON.parse(readFileSync(`${ROOT}package.json`, "utf8")) as { version: string })
            .version;
        } catch {
          return undefined;
        }
      })(),
      commit: git(["rev-parse", "HEAD"]),
      dirty: status === undefined ? undefined : status !== "",
      uncommitted: status?.split("\n").filter((l) => l !== ""),
    },
  };
}
