#!/usr/bin/env python3
"""The application's user attacking ferryd: for SECONDS, atomically exchange the directory
DIR/sub with a symlink pointing OUTSIDE (renameat2 RENAME_EXCHANGE, so "sub" is always
one or the other), in the live tree and in any old tree ferryd is removing beside it
(.NAME.ferry-restore-*). Prints the number of swaps done.

usage: racer.py LIVE OUTSIDE SECONDS
"""
import ctypes, os, sys, time

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2

def exchange(a, b):
    return libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) == 0

live, outside, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
parent, name = os.path.split(live)
swaps = 0
targets = [live]
deadline = time.time() + seconds
i = 0
while time.time() < deadline:
    if i % 200 == 0:
        try:
            targets = [live] + [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith("." + name + ".ferry-restore-")]
        except OSError:
            targets = [live]
    i += 1
    for t in targets:
        sub, link = os.path.join(t, "sub"), os.path.join(t, "sub.link")
        try:
            if not os.path.lexists(link):
                os.symlink(outside, link)
            if exchange(sub, link):
                swaps += 1
        except OSError:
            pass
print(swaps)
