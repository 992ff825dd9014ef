#!/usr/bin/env python3
"""Independent check of a Ferry archive with Python's tarfile (not Ferry's own reader).

Prints JSON: {"ok": bool, "problem": str|null, "manifest": {...}, "end": {...},
"entries": N, "payload_bytes": B, "sha256": H, "names": [...]}.
The hashed range is from the first byte after the manifest entry to the first byte of
the end record's header (DESIGN.md, "Archive format").
"""
import hashlib, json, sys, tarfile

def main(path):
    data = open(path, "rb").read()
    out = {"ok": False, "problem": None, "names": []}
    with tarfile.open(path, "r:") as tf:
        members = tf.getmembers()
    if not members or members[0].name != ".ferry/manifest.json":
        out["problem"] = "first entry is not .ferry/manifest.json"
        return out
    m = members[0]
    out["manifest"] = json.loads(data[m.offset_data:m.offset_data + m.size])
    start = m.offset_data + ((m.size + 511) // 512) * 512
    last = members[-1]
    if last.name != ".ferry/end.json":
        out["problem"] = "last entry is not .ferry/end.json"
        return out
    end = json.loads(data[last.offset_data:last.offset_data + last.size])
    out["end"] = end
    payload = data[start:last.offset]
    out["payload_bytes"] = len(payload)
    out["sha256"] = hashlib.sha256(payload).hexdigest()
    out["entries"] = len(members) - 2
    out["names"] = [x.name for x in members[1:-1]]
    problems = []
    if end["payload_bytes"] != len(payload): problems.append("payload_bytes")
    if end["sha256"] != out["sha256"]: problems.append("sha256")
    if end["entries"] != out["entries"]: problems.append("entries")
    out["problem"] = ", ".join(problems) or None
    out["ok"] = not problems
    return out

if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
