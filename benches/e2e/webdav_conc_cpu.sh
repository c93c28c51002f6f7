#!/usr/bin/env bash
# 8 parallel `curl -T` of 64 MiB (HTTPS, TLS_AES_256_GCM_SHA384) against one fresh `sdx serve`:
# MB/s and the server's CPU (utime+stime from /proc/PID/stat) per round. ROUNDS, MODE=immediate|
# batched, SDX=path (another build). Round 1 includes the logins (Argon2id). Build first: cargo
# build --release --bin sdx --example bench_setup.
# 8x64 MiB concurrent WebDAV PUT: server CPU + wall. SDX, ROUNDS
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ROUNDS=${ROUNDS:-3}
W=$(mktemp -d /tmp/conc.XXXX)
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf $W' EXIT
ssh-keygen -q -t ed25519 -N "" -f $W/key
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $W/t.key -out $W/t.crt -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
$SETUP $W/data bench@client.test "bench portal passphrase 2026" $W/key.pub 10 >/dev/null
printf '[storage]\ndurability = "%s"\n' ${MODE:-immediate} > $W/c.toml
PORT=$(fp); WP=$(fp)
SDX_LOG=warn $SDX serve --data $W/data --config $W/c.toml --sftp 127.0.0.1:$PORT --webdav 127.0.0.1:$WP --tls-cert $W/t.crt --tls-key $W/t.key >$W/log 2>&1 &
SP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$WP) 2>/dev/null && break; sleep 0.2; done
C="curl -sS --fail --http1.1 -H Expect: -k --tls13-ciphers TLS_AES_256_GCM_SHA384"
U="bench@client.test:bench portal passphrase 2026"
mkdir $W/in; for i in 1 2 3 4 5 6 7 8; do head -c 67108864 /dev/urandom > $W/in/c$i; done
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
for r in $(seq $ROUNDS); do
  sleep ${GAP:-0}
  t0=$(ticks $SP); s0=$(date +%s%N)
  pids=""; for i in 1 2 3 4 5 6 7 8; do $C -u "$U" -T $W/in/c$i -o /dev/null "https://127.0.0.1:$WP/dav/2026-001%20Bench/Uploads/r$r-c$i" & pids="$pids $!"; done; wait $pids
  s1=$(date +%s%N); t1=$(ticks $SP)
  python3 -c "print('round $r: %.0f MB/s, server cpu %d ms' % (536.870912/(($s1-$s0)/1e9), ($t1-$t0)*10))"
done
