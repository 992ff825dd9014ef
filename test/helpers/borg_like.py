#!/usr/bin/env python3
"""Stands in for `borg import-tar` then `borg export-tar` in the fast layout tests: reads
the tar Ferry gives borg on stdin with Python's tarfile, as borg 1.2 does (archiver.py
`_import_tar`), and writes what export-tar would give back (`_export_tar`): every member
but the layout, in GNU format, with whole-second times and no pax records. The layout
member's body goes to the file named by argv[1].

Usage: borg_like.py LAYOUT_OUT < borg-input.tar > export.tar
"""
import stat, sys, tarfile

LAYOUT = ".ferry-borg-layout"

src = tarfile.open(fileobj=sys.stdin.buffer, mode="r|")
dst = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.GNU_FORMAT)
for m in src:
    data = src.extractfile(m) if m.isreg() else None
    if m.name == LAYOUT:
        with open(sys.argv[1], "wb") as f:
            f.write(data.read())
        continue
    out = tarfile.TarInfo(m.name)
    out.mtime = int(m.mtime)
    out.mode = stat.S_IMODE(m.mode)
    out.uid, out.gid, out.uname, out.gname = m.uid, m.gid, m.uname, m.gname
    out.type = m.type if m.type != tarfile.AREGTYPE else tarfile.REGTYPE
    out.linkname = m.linkname
    out.size = m.size if m.isreg() else 0
    dst.addfile(out, data)
dst.close()
