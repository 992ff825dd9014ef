/**
 * User and group lookups through the C library (so NSS sources such as LDAP or
 * systemd's dynamic users are honoured, not only /etc/passwd).
 */
import koffi from "koffi";
import { libc } from "./libc.js";

const Passwd = koffi.struct("ferry_passwd", {
  pw_name: "str",
  pw_passwd: "str",
  pw_uid: "uint32_t",
  pw_gid: "uint32_t",
  pw_gecos: "str",
  pw_dir: "str",
  pw_shell: "str",
});
const Group = koffi.struct("ferry_group", {
  gr_name: "str",
  gr_passwd: "str",
  gr_gid: "uint32_t",
  gr_mem: "void *",
});

const getpwnam = libc.func("void *getpwnam(const char *)");
const getpwuid = libc.func("void *getpwuid(uint32_t)");
const getgrgid = libc.func("void *getgrgid(uint32_t)");
const getgrnam = libc.func("void *getgrnam(const char *)");

export interface UserInfo {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

function toUser(ptr: unknown): UserInfo | undefined {
  if (ptr === null) return undefined;
  const p = koffi.decode(ptr, Passwd) as {
    pw_name: string;
    pw_uid: number;
    pw_gid: number;
    pw_dir: string;
  };
  return { name: p.pw_name, uid: p.pw_uid, gid: p.pw_gid, home: p.pw_dir };
}

/** A user by name, or by numeric id written as a string of digits. */
export function lookupUser(nameOrId: string): UserInfo | undefined {
  if (/^[0-9]+$/.test(nameOrId)) return lookupUid(Number(nameOrId));
  return toUser(getpwnam(nameOrId));
}

const uidNames = new Map<number, string>();
const gidNames = new Map<number, string>();

export function lookupUid(uid: number): UserInfo | undefined {
  return toUser(getpwuid(uid));
}

/** The user name of a uid, cached; "" when there is none (tar's convention). */
export function userName(uid: number): string {
  let name = uidNames.get(uid);
  if (name === undefined) {
    name = lookupUid(uid)?.name ?? "";
    uidNames.set(uid, name);
  }
  return name;
}

/** The group name of a gid, cached; "" when there is none. */
export function groupName(gid: number): string {
  let name = gidNames.get(gid);
  if (name === undefined) {
    const ptr = getgrgid(gid);
    name = ptr === null ? "" : (koffi.decode(ptr, Group) as { gr_name: string }).gr_name;
    gidNames.set(gid, name);
  }
  return name;
}

export function lookupGroupId(name: string): number | undefined {
  if (/^[0-9]+$/.test(name)) return Number(name);
  const ptr = getgrnam(name);
  return ptr === null ? undefined : (koffi.decode(ptr, Group) as { gr_gid: number }).gr_gid;
}

const getgrouplist = libc.func(
  "int getgrouplist(const char *, uint32_t, _Out_ uint32_t *groups, _Inout_ int *ngroups)",
);

/** Every group `user` is in (its primary group first), as setpriv --init-groups sets them. */
export function groupsOf(user: UserInfo): number[] {
  let size = 64;
  for (let attempt = 0; attempt < 8; attempt++) {
    const groups = new Array<number>(size).fill(0);
    const n = [size];
    if ((getgrouplist(user.name, user.gid, groups, n) as number) >= 0) {
      return groups.slice(0, n[0]);
    }
    size = Math.max(size * 2, (n[0] as number) + 1);
  }
  return [user.gid];
}
