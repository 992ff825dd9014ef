#!/usr/bin/env python3
"""Races ferryd for a restore's staging directory, as an attacker would, until SIGTERM or
SECONDS pass; prints a JSON report {"seen": N, "won": N, "lost": N}.

usage: staging_racer.py plant DIR PREFIX SECONDS
  (the backup user) inotify on DIR; the instant a directory named PREFIX* is created,
  try to make DIR/NAME/planted inside it.
usage: staging_racer.py exchange DIR PREFIX VICTIM SECONDS
  (an application's owner who can write DIR) poll DIR; the first time a PREFIX* entry
  shows up, exchange it with VICTIM (renameat2 RENAME_EXCHANGE), once per name.
"""
import ctypes, json, os, signal, struct, sys, time

libc = ctypes.CDLL(None, use_errno=True)
report = {"seen": 0, "won": 0, "lost": 0}

def done(*_):
    print(json.dumps(report), flush=True)
    os._exit(0)

signal.signal(signal.SIGTERM, done)
mode, d, prefix = sys.argv[1], sys.argv[2], sys.argv[3]

if mode == "plant":
    seconds = float(sys.argv[4])
    IN_CREATE = 0x100
    ifd = libc.inotify_init()
    if ifd < 0 or libc.inotify_add_watch(ifd, d.encode(), IN_CREATE) < 0:
        report["error"] = os.strerror(ctypes.get_errno())
        done()
    deadline = time.time() + seconds
    signal.signal(signal.SIGALRM, done)
    signal.alarm(int(seconds) + 1)
    while time.time() < deadline:
        buf = os.read(ifd, 65536)
        off = 0
        while off < len(buf):
            _wd, _mask, _cookie, n = struct.unpack_from("iIII", buf, off)
            name = buf[off + 16: off + 16 + n].rstrip(b"\0").decode(errors="replace")
            off += 16 + n
            if not name.startswith(prefix):
                continue
            report["seen"] += 1
            try:
                os.mkdir(os.path.join(d, name, "planted"))
                report["won"] += 1
            except OSError:
                report["lost"] += 1
    done()

if mode == "exchange":
    victim, seconds = sys.argv[4], float(sys.argv[5])
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    done_names = set()
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if not name.startswith(prefix) or name in done_names:
                continue
            done_names.add(name)
            report["seen"] += 1
            a = os.path.join(d, name).encode()
            if libc.renameat2(AT_FDCWD, a, AT_FDCWD, victim.encode(), RENAME_EXCHANGE) == 0:
                report["won"] += 1
            else:
                report["lost"] += 1
    done()
