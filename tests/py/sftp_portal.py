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


# ---------------------------------------------------------------------------------------------
# paramiko helpers


def connect(a, several_attempts=False):
    """An authenticated paramiko transport and SFTP client."""
    import socket

    import paramiko

    sock = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    cls = paramiko.transport.ServiceRequestingTransport if several_attempts else paramiko.Transport
    t = cls(sock)
    t.start_client(timeout=30)
    t.auth_password(a.user, a.password)
    if not t.is_authenticated():
        raise SystemExit("authentication failed")
    return t, paramiko.SFTPClient.from_transport(t)


def outcome(fn):
    """Runs fn; "ok" (or its result if it returned one), or how the server refused it."""
    import errno

    try:
        r = fn()
        return "ok" if r is None else r
    except IOError as e:  # paramiko maps SFTP status codes to IOError errnos
        if e.errno == errno.EACCES:
            return "denied"
        if e.errno == errno.ENOENT:
            return "nosuch"
        return "failed: %s" % (e,)
    except Exception as e:  # noqa: BLE001 - report whatever happened
        return "error: %s: %s" % (type(e).__name__, e)


def put(sftp, path, data):
    def go():
        with sftp.open(path, "w") as f:
            f.write(data)
    return outcome(go)


def get(sftp, path):
    def go():
        with sftp.open(path, "r") as f:
            return {"sha256": sha256(f.read())}
    return outcome(go)


def matrix(a):
    """For each folder of a.root: list, get, put new, put over existing, rm, rename, posix-rename."""
    t, sftp = connect(a)
    res = {}
    for folder in a.folders.split(","):
        d = a.root + "/" + folder
        r = {}
        r["list"] = outcome(lambda: {"names": sorted(sftp.listdir(d))})
        r["get"] = get(sftp, d + "/existing.txt")
        r["put_new"] = put(sftp, d + "/new.txt", b"new content")
        r["put_over"] = put(sftp, d + "/existing.txt", b"replaced content")
        r["rm"] = outcome(lambda: sftp.remove(d + "/victim.txt"))
        r["rename"] = outcome(lambda: sftp.rename(d + "/mover.txt", d + "/moved.txt"))
        r["posix_rename"] = outcome(lambda: sftp.posix_rename(d + "/pmover.txt", d + "/ptarget.txt"))
        r["mkdir"] = outcome(lambda: sftp.mkdir(d + "/sub"))
        res[folder] = r
    t.close()
    out(res)


def live(a):
    """Open a session and handles, wait for the test to change access (READY / a line on stdin),
    then try again on the same session."""
    t, sftp = connect(a)
    d = a.root + "/" + a.folder
    before = {}
    before["list_root"] = outcome(lambda: {"names": sorted(sftp.listdir("/"))})
    before["list"] = outcome(lambda: {"names": sorted(sftp.listdir(d))})
    rf = sftp.open(d + "/existing.txt", "r")
    before["read"] = outcome(lambda: {"len": len(rf.read(10))})
    wf = sftp.open(d + "/during.txt", "w")
    before["write"] = outcome(lambda: wf.write(b"x" * 1000))
    print("READY", flush=True)
    sys.stdin.readline()
    after = {}
    after["list_root"] = outcome(lambda: {"names": sorted(sftp.listdir("/"))})
    after["list"] = outcome(lambda: {"names": sorted(sftp.listdir(d))})

    def read_far():
        rf.seek(50000)  # past paramiko's read buffer: a new request
        return {"len": len(rf.read(10))}
    after["read"] = outcome(read_far)
    after["write"] = outcome(lambda: wf.write(b"y" * 1000))
    # paramiko's close() swallows errors; ask the server directly.
    import paramiko

    def close_raw():
        wf._closed = True
        sftp._request(paramiko.sftp.CMD_CLOSE, wf.handle)
    after["close_upload"] = outcome(close_raw)
    after["stat"] = outcome(lambda: {"size": sftp.stat(d + "/existing.txt").st_size})
    after["open_new"] = outcome(lambda: sftp.open(d + "/existing.txt", "r").close())
    alive = t.is_active()
    t.close()
    out({"before": before, "after": after, "transport_alive": alive})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--path", default="/")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--writes", type=int, default=40)
    p.add_argument("--root", default="/")
    p.add_argument("--folders", default="")
    p.add_argument("--folder", default="")
    a = p.parse_args()
    {
        "fs-edit": fs_edit,
        "matrix": matrix,
        "live": live,
    }[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
