#!/usr/bin/env bash
# What the client's output file costs a 1 GiB WebDAV GET: one fresh `sdx serve` (batched) and one
# `rclone serve webdav` serving the same 1 GiB file over HTTPS (TLS 1.3 AES-256-GCM, curl over
# HTTP/1.1 as in compare.sh), fetched alternately N (4) times each into OUT (default a file on
# /dev/shm, removed after each GET, as compare.sh did before session 10; OUT=/dev/null for the sink
# compare.sh uses now). Prints MB/s and curl's user and system CPU seconds per GET.
# Needs rclone, curl, openssl and /usr/bin/time. Build first: cargo build --release --bin sdx --example bench_setup.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
needs_time webdav_get_sink.sh
N=${N:-4}; OUT=${OUT:-/dev/shm/webdav-get-sink.out}
W=$(mktemp -d /tmp/webdav-get-sink.XXXX); SRC=$(mktemp /dev/shm/webdav-get-sink.XXXX); SP=; RP=
trap '[ -n "$SP" ] && kill $SP; [ -n "$RP" ] && kill $RP; rm -rf $W $SRC; [ "$OUT" = /dev/null ] || rm -f "$OUT"' EXIT
head -c $((1 << 30)) /dev/urandom > $SRC
start_webdav_sdx batched
rport=$(fp)
mkdir -p $W/rclone/M && cp $SRC $W/rclone/M/big && touch $W/rclone.conf
rclone --config $W/rclone.conf serve webdav $W/rclone --addr 127.0.0.1:$rport --user u --pass p \
    --baseurl /dav --cert $W/c.pem --key $W/k.pem >$W/rclone.log 2>&1 &
RP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$rport) 2>/dev/null && break; sleep 0.2; done
curl=("${TLS_CURL[@]}")
sdx_url="$DAV_URL/big"
sdx_user="$DAV_USER"
"${curl[@]}" -u "$sdx_user" -T $SRC -o /dev/null "$sdx_url"
sync
get() { # name url user
  /usr/bin/time -f "%U %S" -o $W/ctime "${curl[@]}" -u "$3" -o "$OUT" -w '%{speed_download}\n' "$2" > $W/speed
  [ "$OUT" = /dev/null ] || rm -f "$OUT"
  python3 -c "u, s = open('$W/ctime').read().split()[-2:]; print('%-6s %5.0f MB/s, curl user %.2f s, sys %.2f s' % ('$1', float(open('$W/speed').read()) / 1e6, float(u), float(s)))"
}
for i in $(seq $N); do
  get sdx "$sdx_url" "$sdx_user"
  get rclone "https://127.0.0.1:$rport/dav/M/big" u:p
done
