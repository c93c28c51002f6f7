#!/usr/bin/env bash
# 8 parallel `curl -T` of 64 MiB (HTTPS, TLS_AES_256_GCM_SHA384) against one fresh `sdx serve`:
# MB/s and the server's CPU (utime+stime from /proc/PID/stat) per round. ROUNDS, MODE=immediate|
# batched, SDX=path (another build). Round 1 includes the logins (Argon2id). Build first: cargo
# build --release --bin sdx --example bench_setup.
# 8x64 MiB concurrent WebDAV PUT: server CPU + wall. SDX, ROUNDS
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ROUNDS=${ROUNDS:-3}
W=$(mktemp -d /tmp/conc.XXXX); SP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf $W' EXIT
start_webdav_sdx "${MODE:-immediate}"
C="${TLS_CURL[*]}"
U="$DAV_USER"
mkdir $W/in; for i in 1 2 3 4 5 6 7 8; do head -c 67108864 /dev/urandom > $W/in/c$i; done
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
for r in $(seq $ROUNDS); do
  sleep ${GAP:-0}
  t0=$(ticks $SP); s0=$(date +%s%N)
  pids=""; for i in 1 2 3 4 5 6 7 8; do $C -u "$U" -T $W/in/c$i -o /dev/null "$DAV_URL/r$r-c$i" & pids="$pids $!"; done; wait $pids
  s1=$(date +%s%N); t1=$(ticks $SP)
  python3 -c "print('round $r: %.0f MB/s, server cpu %d ms' % (536.870912/(($s1-$s0)/1e9), ($t1-$t0)*10))"
done
