#!/usr/bin/env python3
"""Where the time of a small SFTP download goes: server side or client side.

    sftp_latency.py capture PORT FILE   # record TCP payload segments of PORT on lo until SIGINT
    sftp_latency.py report FILE         # server and client latency per request

`capture` reads every packet on the loopback interface (AF_PACKET, needs root) and writes one
line per TCP segment with a payload to or from PORT: its kernel receive time, `c` (client to
server) or `s`, and its payload length. `report` pairs each client segment with the next server
segment: the *server* latency is the time from a request arriving to its answer leaving, the
*client* latency the time from an answer to the next request. Used by `sftp_latency.sh`.
"""
import signal
import socket
import statistics
import struct
import sys
import time

SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4


def capture(port, path):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind(("lo", 0))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.settimeout(0.2)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    rows = []
    while not stop:
        try:
            data, anc, _, addr = s.recvmsg(256, 64)
        except (socket.timeout, InterruptedError):
            continue
        if addr[2] == PACKET_OUTGOING or len(data) < 34:
            continue  # loopback shows each packet twice
        ip = data[14:]
        if ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:]
        sport, dport = struct.unpack(">HH", tcp[:4])
        payload = total - ihl - (tcp[12] >> 4) * 4
        if payload <= 0:
            continue
        t = time.time()
        for _, kind, d in anc:
            if kind == SO_TIMESTAMPNS:
                sec, ns = struct.unpack("qq", d[:16])
                t = sec + ns * 1e-9
        if dport == port:
            rows.append((t, "c", payload))
        elif sport == port:
            rows.append((t, "s", payload))
    with open(path, "w") as f:
        for r in rows:
            f.write("%.9f %s %d\n" % r)


def summary(v):
    v = sorted(v)
    n = len(v)
    if n == 0:
        return "no samples"
    return "n=%d median %.1f us, p10 %.1f, p90 %.1f, mean %.1f" % (
        n, v[n // 2] * 1e6, v[n // 10] * 1e6, v[n * 9 // 10] * 1e6, statistics.mean(v) * 1e6)


def report(path):
    rows = []
    with open(path) as f:
        for line in f:
            t, d, n = line.split()
            rows.append((float(t), d, int(n)))
    server, client = [], []
    for i, (t, d, _) in enumerate(rows):
        if d != "c":
            continue
        if i > 0 and rows[i - 1][1] == "s":
            client.append(t - rows[i - 1][0])
        for t2, d2, _ in rows[i + 1:i + 6]:
            if d2 == "s":
                server.append(t2 - t)
                break
            if d2 == "c":
                break
    print("  server latency per request:", summary(server))
    print("  client latency per request:", summary(client))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "capture":
        capture(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)
