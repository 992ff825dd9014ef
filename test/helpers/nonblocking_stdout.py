#!/usr/bin/env python3
"""Runs CMD with its standard output a pipe in NON-BLOCKING mode (as a parent process that
created Node's process.stdout on the same pipe leaves it) and copies that pipe to OUT,
reading it slowly in 4 KiB pieces so the pipe is often full. Prints CMD's exit status.

usage: nonblocking_stdout.py OUT CMD...
"""
import fcntl, os, sys, time

out, cmd = sys.argv[1], sys.argv[2:]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.dup2(w, 1)
    os.close(w)
    fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_NONBLOCK)
    os.execv(cmd[0], cmd)
os.close(w)
with open(out, "wb") as f:
    while True:
        b = os.read(r, 4096)
        if not b:
            break
        f.write(b)
        time.sleep(0.0002)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
