#!/usr/bin/env python3
"""paramiko client for the fault and bad-input tests (tests/fault_*.rs, tests/badinput_*.rs).

Sub-commands (all connect to 127.0.0.1:PORT as USER with PASSWORD):
  upload PORT USER PASS LIST   LIST has "local<TAB>remote" lines; each is uploaded (open 'wb',
                               32 KiB writes, close) and "OK remote" is printed once the server
                               acknowledged the close; "ERR remote reason" on failure. Stops at
                               the first connection loss.
  put PORT USER PASS REMOTE SIZE   uploads SIZE bytes; prints "OK" or "ERR reason"
  sha PORT USER PASS REMOTE        prints the sha256 of the remote file, or "ERR reason"
  ls PORT USER PASS PATH           prints the names in PATH, one a line, or "ERR reason"
  raw PORT USER PASS HEX|@FILE     opens the sftp subsystem, sends INIT and then the raw bytes (HEX
                                   or the contents of FILE),
                                   prints "RECEIVED n" and "CLOSED yes|no" after the server went
                                   quiet for 2 s (or closed the channel)
Exit status 0 unless the script itself broke; the Rust test decides.
"""
import hashlib
import socket
import struct
import sys
import time

import paramiko
from paramiko.file import BufferedFile
from paramiko.sftp import CMD_CLOSE


def connect(port, user, password):
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=20)
    t = paramiko.Transport(sock)
    t.banner_timeout = 20
    t.auth_timeout = 20
    t.connect(username=user, password=password)
    return t


def checked_close(fh):
    """Closes an SFTP file and raises if the server refused the CLOSE.

    paramiko's own close() swallows every error of the CLOSE request, and the server commits an
    upload on CLOSE: without this a failed commit would look like success.
    """
    fh.flush()
    if fh.pipelined:
        fh.sftp._finish_responses(fh)
    BufferedFile.close(fh)  # marks it closed, so paramiko never sends its own CLOSE
    fh.sftp._request(CMD_CLOSE, fh.handle)


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cmd_upload(port, user, password, listfile):
    try:
        t = connect(port, user, password)
        sftp = paramiko.SFTPClient.from_transport(t)
        sftp.get_channel().settimeout(20)
    except Exception as e:  # server gone (killed) or refused
        out("CONNECT-ERR %r" % (e,))
        return
    with open(listfile) as f:
        pairs = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    for local, remote in pairs:
        try:
            with open(local, "rb") as src:
                fh = sftp.open(remote, "wb")
                fh.set_pipelined(True)
                while True:
                    b = src.read(32768)
                    if not b:
                        break
                    fh.write(b)
                checked_close(fh)
            out("OK " + remote)
        except Exception as e:
            out("ERR %s %r" % (remote, e))
            if not t.is_active():
                return
    t.close()


def cmd_put(port, user, password, remote, size):
    size = int(size)
    try:
        t = connect(port, user, password)
        sftp = paramiko.SFTPClient.from_transport(t)
        sftp.get_channel().settimeout(30)
        fh = sftp.open(remote, "wb")
        piece = bytes(range(256)) * 128
        left = size
        while left > 0:
            n = min(left, len(piece))
            fh.write(piece[:n])
            left -= n
        checked_close(fh)
        out("OK")
        t.close()
    except Exception as e:
        out("ERR %r" % (e,))


def cmd_sha(port, user, password, remote):
    try:
        t = connect(port, user, password)
        sftp = paramiko.SFTPClient.from_transport(t)
        sftp.get_channel().settimeout(30)
        h = hashlib.sha256()
        with sftp.open(remote, "rb") as fh:
            while True:
                b = fh.read(1 << 20)
                if not b:
                    break
                h.update(b)
        out(h.hexdigest())
        t.close()
    except Exception as e:
        out("ERR %r" % (e,))


def cmd_ls(port, user, password, path):
    try:
        t = connect(port, user, password)
        sftp = paramiko.SFTPClient.from_transport(t)
        sftp.get_channel().settimeout(30)
        for n in sorted(sftp.listdir(path)):
            out(n)
        t.close()
    except Exception as e:
        out("ERR %r" % (e,))


def cmd_raw(port, user, password, hexbytes):
    t = connect(port, user, password)
    ch = t.open_session()
    ch.invoke_subsystem("sftp")
    ch.settimeout(2)
    init = struct.pack(">IBI", 5, 1, 3)
    ch.sendall(init)
    if hexbytes.startswith("@"):
        with open(hexbytes[1:], "rb") as f:
            data = f.read()
    else:
        data = bytes.fromhex(hexbytes)
    try:
        ch.sendall(data)
    except Exception:
        pass
    got = 0
    closed = False
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            b = ch.recv(65536)
        except socket.timeout:
            break
        except Exception:
            closed = True
            break
        if not b:
            closed = True
            break
        got += len(b)
    closed = closed or ch.closed or ch.eof_received
    out("RECEIVED %d" % got)
    out("CLOSED %s" % ("yes" if closed else "no"))
    t.close()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"upload": cmd_upload, "put": cmd_put, "sha": cmd_sha, "ls": cmd_ls, "raw": cmd_raw}[cmd](*args)


if __name__ == "__main__":
    main()
