#!/usr/bin/env bash
# One 1 GiB document uploaded once, then fetched N (5) times through the WebDAV front end of a
# fresh `sdx serve` (HTTPS, TLS 1.3 AES-256-GCM, curl over HTTP/1.1 as in compare.sh): MB/s of
# each GET, the server's CPU seconds per GiB and the client's (curl). OUT is where curl writes
# (default /dev/null, which takes the client out of the way; /dev/shm/... as in compare.sh).
# MODE=batched|immediate, SDX=path. Build first: cargo build --release --bin sdx --example bench_setup.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
needs_time webdav_get.sh
N=${N:-5}; MODE=${MODE:-batched}; OUT=${OUT:-/dev/null}
W=$(mktemp -d /tmp/webdav-get.XXXX); SRC=$(mktemp /dev/shm/webdav-get.XXXX); SP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; rm -rf $W $SRC' EXIT
head -c $((1 << 30)) /dev/urandom > $SRC
start_webdav_sdx "$MODE"
url="$DAV_URL/big"
curl=("${TLS_CURL[@]}" -u "$DAV_USER")
"${curl[@]}" -T $SRC -o /dev/null "$url"
sync
ticks() { awk '{print $14+$15}' /proc/$SP/stat; }
hz=$(getconf CLK_TCK)
for i in $(seq $N); do
  t0=$(ticks)
  /usr/bin/time -f "%U %S" -o $W/ctime "${curl[@]}" -o "$OUT" -w '%{speed_download}\n' "$url" > $W/speed
  t1=$(ticks)
  python3 -c "u, s = open('$W/ctime').read().split()[-2:]; print('GET %d: %.0f MB/s, server CPU %.2f s/GiB, curl CPU %.2f s/GiB' % ($i, float(open('$W/speed').read())/1e6, ($t1-$t0)/$hz, float(u)+float(s)))"
done
