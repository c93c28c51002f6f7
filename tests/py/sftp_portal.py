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


def escape(a):
    """Every path form that might leave the user's tree or reach another matter. a.root is the
    user's own matter, a.other a matter of the firm the user is not in, a.nothing a matter that
    does not exist, a.folder a folder of a.root where the user has every permission."""
    t, sftp = connect(a)
    own = a.root + "/" + a.folder
    r = {}

    def ls(p):
        return outcome(lambda: {"names": sorted(sftp.listdir(p))})

    def real(p):
        return outcome(lambda: {"path": sftp.normalize(p)})

    def stat(p):
        return outcome(lambda: {"size": sftp.stat(p).st_size})

    with sftp.open(own + "/mine.txt", "w") as f:
        f.write(b"mine")

    # 1. ".." and friends are clamped at the root.
    for p in ["/", "/..", "/../..", "../../..", ".", "", "/./../.", "//..//..//"]:
        r["ls " + p] = ls(p)
    for p in ["..", "/../../..", "../../etc", a.root + "/../../..", "/" + "../" * 40 + "etc"]:
        r["realpath " + p] = real(p)

    # 2. The other matter, by every spelling, and compared with one that does not exist at all.
    for name, m in [("other", a.other), ("nothing", a.nothing)]:
        r[name + " stat"] = stat("/" + m)
        r[name + " ls"] = ls("/" + m)
        r[name + " ls folder"] = ls("/" + m + "/Client Documents")
        r[name + " get"] = get(sftp, "/" + m + "/Client Documents/secret.txt")
        r[name + " get via .."] = get(sftp, own + "/../../../" + m + "/Client Documents/secret.txt")
        r[name + " get upper"] = get(sftp, "/" + m.upper() + "/Client Documents/SECRET.TXT")
        r[name + " put"] = put(sftp, "/" + m + "/Client Documents/planted.txt", b"x")
        r[name + " put via .."] = put(sftp, own + "/../../" + m + "/Client Documents/planted2.txt", b"x")
        r[name + " rename in"] = outcome(
            lambda: sftp.rename(own + "/mine.txt", "/" + m + "/Client Documents/moved.txt"))
        r[name + " posix-rename in"] = outcome(
            lambda: sftp.posix_rename(own + "/mine.txt", "/" + m + "/Client Documents/moved.txt"))
        r[name + " rename out"] = outcome(
            lambda: sftp.rename("/" + m + "/Client Documents/secret.txt", own + "/stolen.txt"))
        r[name + " rm"] = outcome(lambda: sftp.remove("/" + m + "/Client Documents/secret.txt"))
        r[name + " setstat"] = outcome(
            lambda: sftp.utime("/" + m + "/Client Documents/secret.txt", (1, 1)))
        r[name + " mkdir"] = outcome(lambda: sftp.mkdir("/" + m + "/Client Documents/sub"))

    # 3. Host paths.
    for p in ["/etc/passwd", "//etc/passwd", "/proc/self/environ", "~/.ssh/authorized_keys",
              "\\etc\\passwd", "C:\\Windows\\win.ini", "/" + a.root + "/../../../../etc/passwd"]:
        r["host get " + p] = get(sftp, p)
        r["host stat " + p] = stat(p)
    r["host put"] = put(sftp, a.host_file, b"escaped")
    r["host put via .."] = put(sftp, own + "/../../../.." + a.host_file, b"escaped")

    # 4. Symbolic links.
    r["symlink abs"] = outcome(lambda: sftp.symlink("/etc/passwd", own + "/link"))
    r["symlink rel"] = outcome(lambda: sftp.symlink("../../../" + a.other, own + "/link2"))
    r["readlink"] = outcome(lambda: sftp.readlink(own + "/mine.txt"))
    r["ls after symlinks"] = ls(own)

    # 5. NUL bytes.
    r["nul ls"] = ls("/\0")
    r["nul get"] = get(sftp, own + "/mine.txt\0.pdf")
    r["nul put"] = put(sftp, own + "/a\0b.txt", b"x")
    r["nul put escape"] = put(sftp, own + "/x\0/../../../" + a.other + "/Client Documents/n.txt", b"x")
    r["nul realpath"] = real("/\0/../etc")

    # 6. Overlong names and paths (within the packet limit).
    r["long name 256"] = put(sftp, own + "/" + "n" * 252 + ".txt", b"x")
    r["long name 10000"] = put(sftp, own + "/" + "n" * 10000, b"x")
    r["long path 5000"] = stat("/" + "a/" * 2500)
    r["deep path"] = stat("/" + "a/" * 40 + "b")
    r["long path 200000"] = stat("/" + "b" * 200000)
    r["long realpath"] = real("/" + "../" * 60000)
    r["long rename"] = outcome(lambda: sftp.rename(own + "/mine.txt", own + "/" + "z" * 100000))

    # 7. Names that are not UTF-8 (russh-sftp replaces the bad bytes).
    r["latin1 get"] = get(sftp, own.encode() + b"/caf\xe9.txt")
    r["latin1 put"] = put(sftp, own.encode() + b"/caf\xe9.txt", b"x")

    # Still the same, working session.
    r["final ls /"] = ls("/")
    r["final get mine"] = get(sftp, own + "/mine.txt")
    t.close()
    out(r)


# ---------------------------------------------------------------------------------------------
# Replays of WinSCP and FileZilla, request by request


def raw(sftp):
    """Low-level requests with exactly the flags a given client sends."""
    import paramiko
    from paramiko.sftp import (CMD_CLOSE, CMD_EXTENDED, CMD_OPEN, CMD_REMOVE, CMD_RENAME,
                               CMD_SETSTAT, CMD_WRITE, int64)

    class Raw:
        def open(self, path, flags):
            t, msg = sftp._request(CMD_OPEN, path, flags, paramiko.SFTPAttributes())
            return msg.get_binary()

        def write_all(self, h, data, start=0, chunk=32768):
            """Pipelined writes, as both clients send them."""
            nums = []
            for off in range(0, len(data), chunk):
                nums.append(sftp._async_request(
                    type(None), CMD_WRITE, h, int64(start + off), data[off:off + chunk]))
            for n in nums:
                sftp._read_response(n)

        def close(self, h):
            sftp._request(CMD_CLOSE, h)

        def posix_rename(self, a, b):
            sftp._request(CMD_EXTENDED, "posix-rename@openssh.com", a, b)

        def rename(self, a, b):
            sftp._request(CMD_RENAME, a, b)

        def remove(self, p):
            sftp._request(CMD_REMOVE, p)

        def setstat_times(self, p, mtime, mode=None):
            at = paramiko.SFTPAttributes()
            at.st_atime = mtime
            at.st_mtime = mtime
            if mode is not None:
                at.st_mode = mode
            sftp._request(CMD_SETSTAT, p, at)

    return Raw()


W = 0x02  # SSH_FXF_WRITE
APPEND = 0x04
CREAT = 0x08
TRUNC = 0x10


def file_state(sftp, p):
    def go():
        st = sftp.stat(p)
        with sftp.open(p, "r") as f:
            data = f.read()
        return {"size": st.st_size, "mtime": st.st_mtime, "sha256": sha256(data)}
    return outcome(go)


def winscp(a):
    """WinSCP's upload to NAME.filepart, rename over the target, SETSTAT for the mtime; and its
    resume of an interrupted upload (the .filepart is reopened and written from its size on)."""
    t, sftp = connect(a)
    r = raw(sftp)
    d = a.root + "/" + a.folder
    res = {}
    mtime = 1_600_000_000
    new = bytes(range(256)) * 1200 + b"tail"  # 307,204 bytes

    # 1. Replace an existing document: .filepart, posix-rename over it, SETSTAT (mtime + mode).
    put(sftp, d + "/report.pdf", b"old version")

    def upload_over():
        h = r.open(d + "/report.pdf.filepart", W | CREAT | TRUNC)
        r.write_all(h, new)
        r.close(h)
        sftp.stat(d + "/report.pdf")  # WinSCP checks the target
        r.posix_rename(d + "/report.pdf.filepart", d + "/report.pdf")
        r.setstat_times(d + "/report.pdf", mtime, 0o100644)
    res["over_posix"] = outcome(upload_over)
    res["over_posix_state"] = file_state(sftp, d + "/report.pdf")
    res["over_posix_filepart_left"] = outcome(lambda: sftp.stat(d + "/report.pdf.filepart") and None)

    # 2. Without posix-rename (older WinSCP / option off): REMOVE the target, RENAME, SETSTAT.
    put(sftp, d + "/b.txt", b"old b")

    def upload_remove_rename():
        h = r.open(d + "/b.txt.filepart", W | CREAT | TRUNC)
        r.write_all(h, new[:5000])
        r.close(h)
        r.remove(d + "/b.txt")
        r.rename(d + "/b.txt.filepart", d + "/b.txt")
        r.setstat_times(d + "/b.txt", mtime + 60)
    res["remove_rename"] = outcome(upload_remove_rename)
    res["remove_rename_state"] = file_state(sftp, d + "/b.txt")

    # 3. Resume. The first attempt is cancelled after part of the file (WinSCP closes the handle,
    #    then the connection); the second reopens the .filepart and continues at its size.
    big = bytes((i * 7) % 251 for i in range(400_000))
    half = 150_000

    def first_attempt():
        h = r.open(d + "/big.iso.filepart", W | CREAT | TRUNC)
        r.write_all(h, big[:half])
        r.close(h)
    res["resume_first"] = outcome(first_attempt)
    t.close()

    t, sftp = connect(a)
    r = raw(sftp)

    def second_attempt():
        size = sftp.stat(d + "/big.iso.filepart").st_size
        h = r.open(d + "/big.iso.filepart", W | APPEND)
        r.write_all(h, big[size:], start=size)
        r.close(h)
        r.rename(d + "/big.iso.filepart", d + "/big.iso")
        r.setstat_times(d + "/big.iso", mtime + 120)
        return {"resumed_at": size}
    res["resume_second"] = outcome(second_attempt)
    res["resume_state"] = file_state(sftp, d + "/big.iso")

    # 4. Resume with WRITE only (no APPEND), writing at the offset.
    def resume_write_only():
        h = r.open(d + "/c.bin.filepart", W | CREAT | TRUNC)
        r.write_all(h, big[:1000])
        r.close(h)
        h = r.open(d + "/c.bin.filepart", W)
        r.write_all(h, big[1000:3000], start=1000)
        r.close(h)
        r.rename(d + "/c.bin.filepart", d + "/c.bin")
    res["resume_write_only"] = outcome(resume_write_only)
    res["resume_write_only_state"] = file_state(sftp, d + "/c.bin")

    res["expected"] = {
        "new_sha256": sha256(new), "new_size": len(new),
        "b_sha256": sha256(new[:5000]),
        "big_sha256": sha256(big), "big_size": len(big), "half": half,
        "c_sha256": sha256(big[:3000]),
        "mtime": mtime,
    }

    # 5. The same upload into a folder with Create but no Delete/Update (a drop box).
    if a.dropbox:
        drop = a.root + "/" + a.dropbox

        def dropbox_upload():
            h = r.open(drop + "/new.pdf.filepart", W | CREAT | TRUNC)
            r.write_all(h, new)
            r.close(h)
            r.rename(drop + "/new.pdf.filepart", drop + "/new.pdf")
            r.setstat_times(drop + "/new.pdf", mtime)
        res["dropbox"] = outcome(dropbox_upload)
        res["dropbox_state"] = file_state(sftp, drop + "/new.pdf")
        res["dropbox_filepart"] = outcome(lambda: {"size": sftp.stat(drop + "/new.pdf.filepart").st_size})
    t.close()
    out(res)


def filezilla(a):
    """What FileZilla reads from a listing: the longname of every entry, which its `ls -l` parser
    turns into file/folder, size, date and name; plus its plain upload (OPEN, WRITE, CLOSE,
    SETSTAT mtime)."""
    import stat as st

    t, sftp = connect(a)
    r = raw(sftp)
    listing = {}
    for p in a.paths.split("|"):
        listing[p] = [{"name": e.filename, "longname": e.longname, "is_dir": st.S_ISDIR(e.st_mode),
                       "size": e.st_size, "mtime": e.st_mtime}
                      for e in sftp.listdir_attr(p)]

    def upload():
        h = r.open(a.root + "/" + a.folder + "/fz.txt", W | CREAT | TRUNC)
        r.write_all(h, b"filezilla")
        r.close(h)
        r.setstat_times(a.root + "/" + a.folder + "/fz.txt", 1_500_000_000)
    up = outcome(upload)
    state = file_state(sftp, a.root + "/" + a.folder + "/fz.txt")
    t.close()
    out({"listing": listing, "upload": up, "state": state})


# ---------------------------------------------------------------------------------------------
# Robustness: malformed packets, absurd lengths, handle exhaustion, stalled and vanished clients


class RawSftp:
    """An SFTP subsystem channel spoken by hand."""

    def __init__(self, t):
        import struct

        self.struct = struct
        self.ch = t.open_session(timeout=10)
        self.ch.invoke_subsystem("sftp")
        self.ch.settimeout(10)

    def send(self, body):
        self.ch.sendall(self.struct.pack(">I", len(body)) + body)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            d = self.ch.recv(n - len(buf))
            if not d:
                raise EOFError("channel closed")
            buf += d
        return buf

    def reply(self):
        """(type, id, status code or None, payload) of the next packet, "timeout" or "closed"."""
        import socket

        try:
            (n,) = self.struct.unpack(">I", self.recv_exact(4))
            body = self.recv_exact(n)
        except socket.timeout:
            return "timeout"
        except EOFError:
            return "closed"
        kind = body[0]
        rid = self.struct.unpack(">I", body[1:5])[0] if len(body) >= 5 else None
        code = self.struct.unpack(">I", body[5:9])[0] if kind == 101 and len(body) >= 9 else None
        return {"type": kind, "id": rid, "code": code, "len": len(body)}

    def s(self, b):
        if isinstance(b, str):
            b = b.encode()
        return self.struct.pack(">I", len(b)) + b

    def u32(self, v):
        return self.struct.pack(">I", v)

    def u64(self, v):
        return self.struct.pack(">Q", v)

    def init(self):
        self.send(b"\x01" + self.u32(3))
        return self.reply()

    def realpath_ok(self, rid):
        self.send(b"\x10" + self.u32(rid) + self.s("/"))
        r = self.reply()
        return isinstance(r, dict) and r["type"] == 104 and r["id"] == rid


def malformed(a):
    import paramiko

    t, sftp = connect(a)
    raw = RawSftp(t)
    res = {"init": raw.init()}
    doc = a.root + "/" + a.folder + "/" + a.doc
    # a valid read handle for the handle-based cases
    raw.send(b"\x03" + raw.u32(1) + raw.s(doc) + raw.u32(1) + raw.u32(0))
    h = raw.reply()
    res["open"] = h
    # the handle string, read back from a fresh request (HANDLE packet: type, id, string)
    raw.send(b"\x03" + raw.u32(2) + raw.s(doc) + raw.u32(1) + raw.u32(0))
    (n,) = raw.struct.unpack(">I", raw.recv_exact(4))
    body = raw.recv_exact(n)
    handle = body[9:9 + raw.struct.unpack(">I", body[5:9])[0]]
    dir_h = None
    raw.send(b"\x0b" + raw.u32(3) + raw.s("/"))
    (n,) = raw.struct.unpack(">I", raw.recv_exact(4))
    body = raw.recv_exact(n)
    dir_h = body[9:9 + raw.struct.unpack(">I", body[5:9])[0]]

    cases = [
        ("truncated open", b"\x03" + raw.u32(100) + raw.u32(1000) + b"abc"),
        ("unknown type", b"\x63" + raw.u32(101)),
        ("client status", b"\x65" + raw.u32(102) + raw.u32(0)),
        ("client data", b"\x67" + raw.u32(103) + raw.s("x")),
        ("write data too long", b"\x06" + raw.u32(104) + raw.s(handle) + raw.u64(0) + raw.u32(1 << 30) + b"xx"),
        ("write no offset", b"\x06" + raw.u32(105) + raw.s(handle) + b"\x00\x00"),
        ("string len 4G", b"\x10" + raw.u32(106) + raw.u32(0xFFFFFFFF)),
        ("open attr flags garbage", b"\x03" + raw.u32(107) + raw.s("/x") + raw.u32(1) + raw.u32(0xFFFFFFFF)),
        ("posix-rename one path", b"\xc8" + raw.u32(108) + raw.s("posix-rename@openssh.com") + raw.s("/a")),
        ("unknown extension", b"\xc8" + raw.u32(109) + raw.s("evil@example.com") + b"\x00" * 64),
        ("read absurd length", b"\x05" + raw.u32(110) + raw.s(handle) + raw.u64(0) + raw.u32(0xFFFFFFFF)),
        ("read absurd offset", b"\x05" + raw.u32(111) + raw.s(handle) + raw.u64(1 << 63) + raw.u32(4096)),
        ("write on read handle", b"\x06" + raw.u32(112) + raw.s(handle) + raw.u64(0) + raw.s("x")),
        ("read on dir handle", b"\x05" + raw.u32(113) + raw.s(dir_h) + raw.u64(0) + raw.u32(10)),
        ("bogus handle", b"\x05" + raw.u32(114) + raw.s("h999999") + raw.u64(0) + raw.u32(10)),
        ("huge handle", b"\x04" + raw.u32(115) + raw.s("h" * 100000)),
        ("second init", b"\x01" + raw.u32(3)),
        ("non-utf8 path", b"\x11" + raw.u32(116) + raw.s(b"/\xff\xfe")),
    ]
    for name, pkt in cases:
        raw.send(pkt)
        res[name] = raw.reply()
        res[name + " then"] = raw.realpath_ok(900)
    # Fatal cases, each on its own channel: the session closes without a flood of replies,
    # the connection and the server carry on.
    for name, pkt in [
        ("too short for an id", b"\x03\x00\x00"),
        ("length 4G", None),
        ("length zero", b""),
    ]:
        r2 = RawSftp(t)
        r2.init()
        if pkt is None:
            r2.ch.sendall(r2.u32(0xFFFFFFFF) + b"\x03" + b"\x00" * 100)
        else:
            r2.send(pkt)
        got = []
        while True:
            x = r2.reply()
            got.append(x)
            if not isinstance(x, dict) or len(got) > 5:
                break
        res[name] = got
    res["same connection after"] = outcome(lambda: {"names": sorted(sftp.listdir("/"))})
    t.close()
    t2, sftp2 = connect(a)
    res["new connection after"] = outcome(lambda: {"names": sorted(sftp2.listdir("/"))})
    t2.close()
    out(res)


def handles(a):
    """Open read handles until the server refuses; close one, open again; close all."""
    t, sftp = connect(a)
    doc = a.root + "/" + a.folder + "/" + a.doc
    files = []
    refusal = None
    for _ in range(a.count):
        try:
            files.append(sftp.open(doc, "r"))
        except IOError as e:
            refusal = str(e)
            break
    opened = len(files)
    dir_refusal = outcome(lambda: sftp.listdir("/") and None)
    files.pop().close()
    again = outcome(lambda: files.append(sftp.open(doc, "r")))
    for f in files:
        f.close()
    after = outcome(lambda: {"names": sorted(sftp.listdir("/"))})
    t.close()
    out({"opened": opened, "refusal": refusal, "listdir_when_full": dir_refusal,
         "reopen_after_close": again, "listdir_after_closing": after})


def vanish(a):
    """Start an upload and a download, then drop the TCP connection without a word."""
    t, sftp = connect(a)
    d = a.root + "/" + a.folder
    f = sftp.open(d + "/vanished.bin", "w")
    f.write(b"x" * 200000)
    f.flush()
    g = sftp.open(d + "/" + a.doc, "r")
    g.prefetch()
    g.read(10)
    t.sock.close()  # no channel close, no disconnect message
    out({"vanished": True})


def stall(a):
    """Ask for far more data than the SSH window allows and never read it; then hang up."""
    import time

    t, sftp = connect(a)
    raw = RawSftp(t)
    raw.init()
    doc = a.root + "/" + a.folder + "/" + a.doc
    raw.send(b"\x03" + raw.u32(1) + raw.s(doc) + raw.u32(1) + raw.u32(0))
    (n,) = raw.struct.unpack(">I", raw.recv_exact(4))
    body = raw.recv_exact(n)
    handle = body[9:9 + raw.struct.unpack(">I", body[5:9])[0]]
    print("OPEN", flush=True)  # logged in, file open: the test takes its baseline now
    sys.stdin.readline()
    asked = 0
    for i in range(a.count):
        raw.send(b"\x05" + raw.u32(10 + i) + raw.s(handle) + raw.u64(i * 262144) + raw.u32(262144))
        asked += 262144
    print("STALLED %d" % asked, flush=True)
    sys.stdin.readline()
    t.close()
    out({"asked": asked})


def idle(a):
    """Say nothing for a while on an open SFTP session; then a new client."""
    import time

    t, sftp = connect(a)
    before = sorted(sftp.listdir("/"))
    time.sleep(a.seconds)
    alive = t.is_active()
    after_idle = outcome(lambda: sftp.listdir("/") and None) if alive else "transport closed"
    t.close()
    t2, sftp2 = connect(a)
    new = sorted(sftp2.listdir("/"))
    t2.close()
    out({"before": before, "active_after_idle": alive, "after_idle": after_idle, "new_client": new})


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
    p.add_argument("--other", default="")
    p.add_argument("--nothing", default="")
    p.add_argument("--host-file", default="")
    p.add_argument("--dropbox", default="")
    p.add_argument("--paths", default="/")
    p.add_argument("--doc", default="")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    {
        "fs-edit": fs_edit,
        "matrix": matrix,
        "live": live,
        "escape": escape,
        "winscp": winscp,
        "filezilla": filezilla,
        "malformed": malformed,
        "handles": handles,
        "vanish": vanish,
        "stall": stall,
        "idle": idle,
    }[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
