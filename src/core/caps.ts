/**
 * Linux capabilities as the kernel reports them in /proc/<pid>/status.
 */
import { readFileSync } from "node:fs";

const NAMES = [
  "chown",
  "dac_override",
  "dac_read_search",
  "fowner",
  "fsetid",
  "kill",
  "setgid",
  "setuid",
  "setpcap",
  "linux_immutable",
  "net_bind_service",
  "net_broadcast",
  "net_admin",
  "net_raw",
  "ipc_lock",
  "ipc_owner",
  "sys_module",
  "sys_rawio",
  "sys_chroot",
  "sys_ptrace",
  "sys_pacct",
  "sys_admin",
  "sys_boot",
  "sys_nice",
  "sys_resource",
  "sys_time",
  "sys_tty_config",
  "mknod",
  "lease",
  "audit_write",
  "audit_control",
  "setfcap",
  "mac_override",
  "mac_admin",
  "syslog",
  "wake_alarm",
  "block_suspend",
  "audit_read",
  "perfmon",
  "bpf",
  "checkpoint_restore",
];

/** The capabilities ferryd holds in production: root's operating rights, not its identity. */
export const SERVICE_CAPS = [
  "dac_read_search",
  "dac_override",
  "chown",
  "fowner",
  "fsetid",
  "setuid",
  "setgid",
] as const;

export interface CapSets {
  effective: string[];
  permitted: string[];
  ambient: string[];
  bounding: string[];
  uid: number[]; // real, effective, saved, fs
  gid: number[];
}

export function decodeCaps(hex: string): string[] {
  const mask = BigInt(`0x${hex}`);
  const out: string[] = [];
  for (let i = 0; i < 64; i++) {
    if (mask & (1n << BigInt(i))) out.push(NAMES[i] ?? `cap_${i}`);
  }
  return out;
}

/** Parses a /proc/<pid>/status text. */
export function parseStatus(text: string): CapSets {
  const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, "m").exec(text)?.[1]?.trim() ?? "";
  return {
    effective: decodeCaps(field("CapEff") || "0"),
    permitted: decodeCaps(field("CapPrm") || "0"),
    ambient: decodeCaps(field("CapAmb") || "0"),
    bounding: decodeCaps(field("CapBnd") || "0"),
    uid: field("Uid").split(/\s+/).map(Number),
    gid: field("Gid").split(/\s+/).map(Number),
  };
}

export function readCaps(pid: number | "self" = "self"): CapSets {
  return parseStatus(readFileSync(`/proc/${pid}/status`, "utf8"));
}
