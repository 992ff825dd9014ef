#!/usr/bin/env python3
"""A minimal FUSE file system (raw /dev/fuse protocol, no library) holding one regular
file, 'stuck', of 1 MiB whose READ is never answered: a stand-in for an NFS hard mount
whose server went away, a disk retrying a bad sector, or a FUSE file system that hangs.
Metadata is answered (with STUCK_LOOKUP=1 the lookup of 'stuck' is not answered either).
A process reading 'stuck' waits in the kernel, unkillable, until this server answers or
exits (killing it ends the mount's requests with an error).

usage: stuckfs.py MOUNTPOINT   (root; mounts with allow_other; runs until killed;
prints "mounted", then "read received; not answering" when a read arrives)"""
import ctypes, os, struct, sys, time, threading
mnt = sys.argv[1]
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
if libc.mount(b"stuckfs", mnt.encode(), b"fuse", 6, opts) != 0:  # MS_NOSUID|MS_NODEV
    sys.exit("mount: " + os.strerror(ctypes.get_errno()))
print("mounted", flush=True)
SIZE = 1 << 20
now = int(time.time())
def attr(ino):
    mode = 0o40755 if ino == 1 else 0o100644
    size = 0 if ino == 1 else SIZE
    return struct.pack("<QQQQQQIIIIIIIIII", ino, size, (size + 511) // 512, now, now, now,
                       0, 0, 0, mode, 2 if ino == 1 else 1, 0, 0, 0, 4096, 0)
def reply(unique, payload=b"", err=0):
    os.write(fd, struct.pack("<IiQ", 16 + len(payload), -err, unique) + payload)
def dirent(ino, off, name, typ):
    e = struct.pack("<QQII", ino, off, len(name), typ) + name
    return e + b"\0" * ((8 - len(e) % 8) % 8)
while True:
    try:
        req = os.read(fd, (1 << 20) + 4096)
    except OSError as e:
        if e.errno in (4, 2): continue
        break
    ln, op, unique, node = struct.unpack_from("<IIQQ", req)
    body = req[40:]
    if op == 26:  # INIT
        major, minor = struct.unpack_from("<II", body)
        reply(unique, struct.pack("<IIIIHHIIHHI", 7, 31, 1 << 17, 0, 16, 12, 1 << 17, 1, 32, 0, 0) + b"\0" * 28)
    elif op == 1:  # LOOKUP
        name = body.split(b"\0")[0]
        if os.environ.get("STUCK_LOOKUP") and name == b"stuck":
            print("lookup received; not answering", flush=True)
        elif node == 1 and name == b"stuck":
            reply(unique, struct.pack("<QQQQII", 2, 0, 3600, 3600, 0, 0) + attr(2))
        else:
            reply(unique, err=2)
    elif op == 3:  # GETATTR
        reply(unique, struct.pack("<QII", 3600, 0, 0) + attr(node))
    elif op in (14, 27):  # OPEN, OPENDIR
        reply(unique, struct.pack("<QII", 1, 0, 0))
    elif op == 28:  # READDIR
        _fh, off = struct.unpack_from("<QQ", body)
        out = b"" if off > 0 else dirent(2, 1, b"stuck", 8)
        reply(unique, out)
    elif op == 15:  # READ: never answered
        print("read received; not answering", flush=True)
    elif op in (18, 29, 25):  # RELEASE, RELEASEDIR, FLUSH
        reply(unique)
    elif op in (2, 42):  # FORGET, BATCH_FORGET: no reply
        pass
    elif op == 36:  # INTERRUPT: ignored (the read stays unanswered)
        pass
    elif op == 38:  # DESTROY
        reply(unique); break
    else:
        reply(unique, err=38)  # ENOSYS
