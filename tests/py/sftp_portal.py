#!/usr/bin/env python3
"""Client-side probes for the SFTP tests over the real portal (tests/sftp_*.rs).

Each sub-command does one scenario and prints ONE line of JSON with what it observed; the Rust test
decides pass/fail. The exit status is non-zero only when the probe itself broke.
"""
import argparse
import hashlib
import json
import os
import random
import sys


def out(obj):
    print(json.dumps(obj), flush=True)


def sha256(b):
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------------------------
# sshfs: random-offset edits of an existing file through a mount


def fs_edit(a):
    """Open an existing file read+write on the mount, pwrite at random offsets (one past the end),
    fsync, statvfs, close; then read it back through a new open and compare with the same edits
    applied locally."""
    path = a.path
    with open(path, "rb") as f:
        original = f.read()
    expected = bytearray(original)
    rng = random.Random(a.seed)
    fd = os.open(path, os.O_RDWR)
    writes = []
    try:
        for i in range(a.writes):
            if i == a.writes - 1:
                off = len(expected) + rng.randrange(1, 5000)  # past the end: a hole, then data
            else:
                off = rng.randrange(0, max(1, len(expected)))
            n = rng.randrange(1, 70000)
            data = bytes(rng.getrandbits(8) for _ in range(min(n, 256))) * (n // 256 + 1)
            data = data[:n]
            wrote = os.pwrite(fd, data, off)
            writes.append([off, wrote])
            if off > len(expected):
                expected.extend(b"\0" * (off - len(expected)))
            expected[off:off + n] = data
        # read back through the same descriptor before closing
        same_fd = os.pread(fd, len(expected) + 10, 0)
        os.fsync(fd)
        st = os.fstat(fd)
        vfs = os.statvfs(os.path.dirname(path))
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        back = f.read()
    out({
        "writes": writes,
        "original_len": len(original),
        "expected_len": len(expected),
        "expected_sha256": sha256(bytes(expected)),
        "same_fd_matches": same_fd == bytes(expected),
        "fstat_size": st.st_size,
        "statvfs": {"bsize": vfs.f_bsize, "blocks": vfs.f_blocks, "bavail": vfs.f_bavail,
                    "namemax": vfs.f_namemax},
        "back_len": len(back),
        "back_sha256": sha256(back),
    })


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--path", default="/")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--writes", type=int, default=40)
    a = p.parse_args()
    {
        "fs-edit": fs_edit,
    }[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
