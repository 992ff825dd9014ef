#!/usr/bin/env python3
"""Builds Ferry archives for tests with Python's tarfile (not Ferry's own writer), so the
attack suite exercises ferryd's reader on archives it did not make.

Reads a JSON spec on stdin, writes the archive to stdout:
  {"app": "notes", "driver": "files", "paths": ["/x"],
   "entries": [{"name": "data/0/", "type": "dir"|"file"|"symlink"|"hardlink"|"fifo"|"chr"|"blk",
                "data": "text", "linkname": "...", "mode": 0o644, "uid": 0, "gid": 0,
                "mtime": 1700000000, "pax": {"path": "..."}}],
   "many_empty": N,        # then N empty files data/0/e<i>
   "deep": D,              # then D nested directories data/0/d/d/...
   "corrupt_sha": true,    # end record with a wrong SHA-256
   "no_end": true,         # no end record at all
   "truncate": B}          # cut the output after B bytes
"""
import hashlib, io, json, sys, tarfile, time

TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
         "blk": tarfile.BLKTYPE}

def add(tf, name, typ="file", data=b"", linkname="", mode=None, uid=1000, gid=1000, mtime=None, pax=None):
    ti = tarfile.TarInfo(name)
    ti.type = TYPES[typ]
    ti.mode = mode if mode is not None else (0o755 if typ == "dir" else 0o644)
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    ti.mtime = mtime if mtime is not None else 1700000000
    ti.linkname = linkname
    if pax:
        ti.pax_headers = dict(pax)
    if typ == "file":
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        if typ in ("chr", "blk"):
            ti.devmajor, ti.devminor = 1, 3
        tf.addfile(ti)

def main():
    spec = json.load(sys.stdin)
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
    manifest = {"format": 1, "app": spec.get("app", "notes"), "driver": spec.get("driver", "files"),
                "driver_version": 1, "paths": spec.get("paths", ["/x"]), "host": "test",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    add(tf, ".ferry/manifest.json", data=json.dumps(manifest).encode(), uid=0, gid=0)
    start = buf.tell()
    count = 0
    for e in spec.get("entries", []):
        data = e.get("data", "")
        data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        add(tf, e["name"], e.get("type", "file"), data, e.get("linkname", ""), e.get("mode"),
            e.get("uid", 1000), e.get("gid", 1000), e.get("mtime"), e.get("pax"))
        count += 1
    for i in range(spec.get("many_empty", 0)):
        add(tf, "data/0/e%d" % i)
        count += 1
    path = "data/0"
    for _ in range(spec.get("deep", 0)):
        path += "/d"
        add(tf, path + "/", "dir")
        count += 1
    end_at = buf.tell()
    payload = buf.getvalue()[start:end_at]
    if not spec.get("no_end"):
        sha = hashlib.sha256(payload).hexdigest()
        if spec.get("corrupt_sha"):
            sha = ("0" if sha[0] != "0" else "1") + sha[1:]
        end = {"entries": count, "payload_bytes": len(payload), "sha256": sha}
        add(tf, ".ferry/end.json", data=json.dumps(end).encode(), uid=0, gid=0)
    tf.close()
    out = buf.getvalue()
    if "truncate" in spec:
        out = out[: spec["truncate"]]
    sys.stdout.buffer.write(out)

main()
