#!/usr/bin/env bash
# What durability costs one small WebDAV operation: N (1,000) sequential 4 KiB PUTs, then N GETs
# of them, over one HTTPS connection (curl -K, HTTP/1.1, TLS 1.3 AES-256-GCM as compare.sh), from
# a fresh `sdx serve` with `durability = "immediate"` and one with "batched", alternated ROUNDS
# (2) times. Prints ms per operation, and the cost of a bare fdatasync of one 4 KiB page on the
# filesystem of the data dir (500 rewrites of a preallocated file): the floor that any design
# making each operation durable before answering pays on this disk.
# Build first: cargo build --release --bin sdx --example bench_setup.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
N=${N:-1000}; ROUNDS=${ROUNDS:-2}
W=; SP=
stop() { [ -n "$SP" ] && kill $SP 2>/dev/null && wait $SP 2>/dev/null; SP=; [ -n "$W" ] && rm -rf "$W"; W=; }
trap stop EXIT
one() { # MODE
  W=$(mktemp -d /tmp/webdav-small-fsync.XXXX)
  start_webdav_sdx "$1"
  local c=("${TLS_CURL[@]}") i t0 t1 t2
  head -c 4096 /dev/urandom > "$W/f"
  for i in $(seq $N); do printf 'upload-file = "%s"\nurl = "%s/s%05d"\noutput = "/dev/null"\n' "$W/f" "$DAV_URL" $i; done > "$W/up"
  for i in $(seq $N); do printf 'url = "%s/s%05d"\noutput = "/dev/null"\n' "$DAV_URL" $i; done > "$W/down"
  "${c[@]}" -u "$DAV_USER" -o /dev/null "$DAV_URL/" -X PROPFIND -H "Depth: 0"  # log in once
  t0=$(date +%s%N); "${c[@]}" -u "$DAV_USER" -K "$W/up"
  t1=$(date +%s%N); "${c[@]}" -u "$DAV_USER" -K "$W/down"
  t2=$(date +%s%N)
  python3 -c "print('%-9s PUT %.3f ms, GET %.3f ms per 4 KiB file' % ('$1', ($t1-$t0)/1e6/$N, ($t2-$t1)/1e6/$N))"
  python3 - "$W/data" <<'EOF'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, 1 << 20); os.fsync(fd)
b = os.urandom(4096); t = time.perf_counter()
for i in range(500):
    os.pwrite(fd, b, (i % 256) * 4096); os.fdatasync(fd)
print("          bare fdatasync of one 4 KiB page: %.3f ms" % ((time.perf_counter() - t) / 500 * 1e3))
os.close(fd); os.unlink(p)
EOF
  stop
}
for r in $(seq $ROUNDS); do one immediate; one batched; done
