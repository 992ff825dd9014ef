#!/usr/bin/env python3
"""The application's user attacking ferryd: for SECONDS, atomically exchange the directory
DIR/sub with a symlink pointing OUTSIDE (renameat2 RENAME_EXCHANGE, so "sub" is always
one or the other), in the live tree and in any old tree ferryd is removing beside it
(.NAME.ferry-restore-*, re-listed every few loops so a short-lived one is caught).
Prints, as JSON, the swaps that landed per kind of target: {"live": N, "old": M,
"old_trees": K} where K is how many distinct old trees got at least one swap.

usage: racer.py LIVE OUTSIDE SECONDS
"""
import ctypes, json, os, sys, time

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2

def exchange(a, b):
    return libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) == 0

live, outside, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
parent, name = os.path.split(live)
prefix = "." + name + ".ferry-restore-"
swaps = {"live": 0, "old": 0}
old_trees = set()
targets = [live]
deadline = time.time() + seconds
i = 0
while time.time() < deadline:
    if i % 5 == 0:
        try:
            targets = [live] + [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)]
        except OSError:
            targets = [live]
    i += 1
    for t in targets:
        sub, link = os.path.join(t, "sub"), os.path.join(t, "sub.link")
        try:
            if not os.path.lexists(link):
                os.symlink(outside, link)
            if exchange(sub, link):
                if t == live:
                    swaps["live"] += 1
                else:
                    swaps["old"] += 1
                    old_trees.add(os.path.basename(t))
        except OSError:
            pass
print(json.dumps({"live": swaps["live"], "old": swaps["old"], "old_trees": len(old_trees)}))
