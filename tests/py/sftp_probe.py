#!/usr/bin/env python3
"""paramiko probes for tests/sftp_transport.rs.

Each sub-command connects to 127.0.0.1:PORT, does one thing and prints ONE line of JSON with what
it observed; the Rust test decides pass/fail. Exit status 0 unless the probe itself broke.
"""
import argparse
import hashlib
import json
import socket
import struct
import sys
import time

import paramiko


def transport(port, several_attempts=False):
    """A started client transport.

    paramiko's classic Transport sends SERVICE_REQUEST "ssh-userauth" again before every auth
    attempt; russh 0.65 ignores a repeated service request, so a second attempt on a classic
    Transport waits forever. ServiceRequestingTransport (paramiko >= 3.2) asks once, as OpenSSH
    does; use it wherever a connection makes more than one attempt.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    cls = paramiko.transport.ServiceRequestingTransport if several_attempts else paramiko.Transport
    t = cls(sock)
    t.start_client(timeout=30)
    return t


def authed(a):
    t = transport(a.port)
    t.auth_password(a.user, a.password)
    if not t.is_authenticated():
        raise SystemExit("authentication failed")
    return t


def out(obj):
    print(json.dumps(obj), flush=True)


def auth_retry(a):
    t = transport(a.port, several_attempts=True)
    wrong_refused = False
    try:
        t.auth_password(a.user, "wrong-" + a.password)
    except paramiko.AuthenticationException:
        wrong_refused = True
    t.auth_password(a.user, a.password)
    sftp = paramiko.SFTPClient.from_transport(t)
    names = sorted(sftp.listdir("/"))
    t.close()
    out({"wrong_refused": wrong_refused, "authenticated": True, "listdir": names})


def auth_cap(a):
    t = transport(a.port, several_attempts=True)
    failures = 0
    ended_by = None
    for _ in range(30):
        try:
            t.auth_password(a.user, "wrong-" + a.password)
            ended_by = "accepted"
            break
        except paramiko.AuthenticationException:
            failures += 1
        except (paramiko.SSHException, EOFError, OSError) as e:
            ended_by = type(e).__name__ + ": " + str(e)
            break
    time.sleep(0.2)
    out({"failures": failures, "ended_by": ended_by, "active": t.is_active()})
    t.close()


def expect_refused(fn):
    try:
        fn()
        return "accepted"
    except (paramiko.SSHException, paramiko.ChannelException, EOFError, OSError) as e:
        return "refused: " + type(e).__name__


def refusals(a):
    t = authed(a)
    res = {}

    def on_channel(f):
        ch = t.open_session(timeout=10)
        try:
            return expect_refused(lambda: f(ch))
        finally:
            ch.close()

    res["exec"] = on_channel(lambda ch: ch.exec_command("id"))
    res["shell"] = on_channel(lambda ch: ch.invoke_shell())
    res["pty"] = on_channel(lambda ch: ch.get_pty())
    res["subsystem_other"] = on_channel(lambda ch: ch.invoke_subsystem("netconf"))
    res["direct_tcpip"] = expect_refused(
        lambda: t.open_channel("direct-tcpip", ("127.0.0.1", a.port), ("127.0.0.1", 4711), timeout=10)
    )
    res["x11_channel"] = expect_refused(lambda: t.open_channel("x11", src_addr=("127.0.0.1", 6010), timeout=10))
    res["tcpip_forward"] = expect_refused(lambda: t.request_port_forward("127.0.0.1", 0))
    # The connection is still usable for SFTP afterwards.
    sftp = paramiko.SFTPClient.from_transport(t)
    res["listdir_after"] = sorted(sftp.listdir("/"))
    t.close()
    out(res)


class HashSink:
    def __init__(self):
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return len(b)


def getfo(a):
    t = authed(a)
    sftp = paramiko.SFTPClient.from_transport(t)
    sink = HashSink()
    start = time.monotonic()
    sftp.getfo(a.path, sink)
    secs = time.monotonic() - start
    t.close()
    out({"bytes": sink.n, "sha256": sink.h.hexdigest(), "seconds": secs})


def recv_exact(ch, n):
    buf = b""
    while len(buf) < n:
        d = ch.recv(n - len(buf))
        if not d:
            raise EOFError("channel closed after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def bad_packet(a):
    t = authed(a)
    ch = t.open_session(timeout=10)
    ch.invoke_subsystem("sftp")
    ch.settimeout(10)
    ch.sendall(struct.pack(">IBI", 5, 1, 3))  # SSH_FXP_INIT, version 3
    (n,) = struct.unpack(">I", recv_exact(ch, 4))
    version = recv_exact(ch, n)
    res = {"version_packet_type": version[0]}
    # A well-formed request first: it must be answered normally.
    ch.sendall(struct.pack(">IBII", 10, 16, 1, 1) + b"/")  # SSH_FXP_REALPATH id=1 "/"
    (n,) = struct.unpack(">I", recv_exact(ch, 4))
    reply = recv_exact(ch, n)
    res["realpath_reply_type"] = reply[0]
    # Now the violation: a packet whose length field announces `size - 4` bytes (so the whole
    # packet is `size` bytes), or a zero-length packet.
    if a.size > 0:
        length = a.size - 4
        pkt = struct.pack(">IBI", length, 3, 2) + b"\0" * (length - 5)  # looks like SSH_FXP_OPEN
    else:
        pkt = struct.pack(">I", 0) + struct.pack(">IBII", 10, 16, 3, 1) + b"/"
    try:
        ch.sendall(pkt)
        res["send"] = "complete"
    except (socket.timeout, OSError, paramiko.SSHException, EOFError) as e:
        res["send"] = "interrupted: " + type(e).__name__
    got = 0
    closed = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            d = ch.recv(65536)
        except socket.timeout:
            break
        if not d:
            closed = True
            break
        got += len(d)
    res["bytes_after_violation"] = got
    res["closed"] = closed
    # Same connection, new channel: still served.
    try:
        sftp = paramiko.SFTPClient.from_transport(t)
        res["same_connection_listdir"] = sorted(sftp.listdir("/"))
    except Exception as e:  # noqa: BLE001 - report whatever happened
        res["same_connection_listdir"] = "failed: %r" % (e,)
    t.close()
    # New connection: still served.
    t2 = authed(a)
    sftp2 = paramiko.SFTPClient.from_transport(t2)
    res["new_connection_listdir"] = sorted(sftp2.listdir("/"))
    t2.close()
    out(res)


def idle(a):
    t = authed(a)
    ch = t.open_session(timeout=10)
    ch.invoke_subsystem("sftp")
    time.sleep(a.seconds)
    out({"active_after_idle": t.is_active()})
    t.close()


def channel_cap(a):
    t = authed(a)
    opened = []
    refused = None
    for _ in range(50):
        try:
            opened.append(t.open_session(timeout=10))
        except (paramiko.ChannelException, paramiko.SSHException) as e:
            refused = type(e).__name__ + ": " + str(e)
            break
    # closing one frees a slot
    opened[0].close()
    time.sleep(0.5)
    try:
        again = t.open_session(timeout=10)
        again.invoke_subsystem("sftp")
        reopened = True
    except (paramiko.ChannelException, paramiko.SSHException):
        reopened = False
    out({"opened": len(opened), "refused": refused, "reopened_after_close": reopened})
    t.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="alice")
    p.add_argument("--password", default="secret")
    p.add_argument("--path", default="/")
    p.add_argument("--size", type=int, default=300000)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    {
        "auth-retry": auth_retry,
        "auth-cap": auth_cap,
        "refusals": refusals,
        "getfo": getfo,
        "bad-packet": bad_packet,
        "idle": idle,
        "channel-cap": channel_cap,
    }[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
