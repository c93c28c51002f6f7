#!/usr/bin/env bash
# A/B of sdx builds through OpenSSH sftp, one fresh `sdx serve` per run, the builds alternated:
#   SDXS="/path/a /path/b" WORKLOAD=small|big RUNS=3 MODE=batched|immediate bash benches/e2e/sftp_ab.sh
# small: 2,000 (N) 4 KiB puts then gets in one `sftp -b` session each (files/s, and the server's
# CPU and context switches per file, all its threads, from /proc); big: one 1 GiB put then get (MB/s). CIPHER (default aes256-gcm@openssh.com); EXTRA adds lines to
# the server's [storage] section (e.g. EXTRA='inline_max_kib = 0'). Build first:
# cargo build --release --bin sdx --example bench_setup (SDXS defaults to that build).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SDXS=${SDXS:-$SDX}
WORKLOAD=${WORKLOAD:-small}; RUNS=${RUNS:-3}; MODE=${MODE:-batched}; N=${N:-2000}
CIPHER=${CIPHER:-aes256-gcm@openssh.com}
W=$(mktemp -d /tmp/sftp-ab.XXXX)
SP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; rm -rf $W' EXIT
ssh-keygen -q -t ed25519 -N "" -f $W/key
mkdir $W/in $W/out
if [ "$WORKLOAD" = small ]; then
  for i in $(seq -f %05g $N); do head -c 4096 /dev/urandom > $W/in/s$i; done
else
  head -c $((1 << 30)) /dev/urandom > $W/in/big
fi
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' /proc/$SP/stat; }
csw() { cat /proc/$SP/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s+=$2} END {print s}'; }
one() { # $1 = sdx binary
  rm -rf $W/data $W/out/*
  $SETUP $W/data bench@client.test "bench portal passphrase 2026" $W/key.pub 10 >/dev/null
  printf '[storage]\ndurability = "%s"\n%b\n' "$MODE" "${EXTRA:-}" > $W/c.toml
  local port wp; port=$(fp); wp=$(fp)
  SDX_LOG=warn "$1" serve --data $W/data --config $W/c.toml --sftp 127.0.0.1:$port \
    --webdav 127.0.0.1:$wp --insecure-http >$W/log 2>&1 &
  SP=$!
  for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  local s="sftp -q -P $port -i $W/key -c $CIPHER -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o User=bench@client.test"
  local d="/2026-001 Bench/Uploads"
  if [ "$WORKLOAD" = small ]; then
    for f in $W/in/*; do echo "put \"$f\" \"$d/$(basename $f)\""; done > $W/up
    for f in $W/in/*; do echo "get \"$d/$(basename $f)\" \"$W/out/$(basename $f)\""; done > $W/down
  else
    echo "put \"$W/in/big\" \"$d/big\"" > $W/up
    echo "get \"$d/big\" \"$W/out/big\"" > $W/down
  fi
  local t0 t1 t2 c0 c1 c2 w0 w1 w2
  c0=$(ticks); w0=$(csw); t0=$(date +%s.%N); $s -b $W/up 127.0.0.1 >/dev/null
  c1=$(ticks); w1=$(csw); t1=$(date +%s.%N); $s -b $W/down 127.0.0.1 >/dev/null
  c2=$(ticks); w2=$(csw); t2=$(date +%s.%N)
  kill $SP; wait $SP 2>/dev/null || true; SP=
  cmp -s <(cat $W/in/* | sha256sum) <(cat $W/out/* | sha256sum) || { echo "content differs"; exit 1; }
  if [ "$WORKLOAD" = small ]; then
    python3 -c "print('up %.0f files/s (%.0f us CPU, %.1f switches per file), down %.0f files/s (%.0f us, %.1f)' % ($N/($t1-$t0), ($c1-$c0)*1e6/$hz/$N, ($w1-$w0)/$N, $N/($t2-$t1), ($c2-$c1)*1e6/$hz/$N, ($w2-$w1)/$N))"
  else
    python3 -c "print('up %.0f MB/s, down %.0f MB/s' % (1073.741824/($t1-$t0), 1073.741824/($t2-$t1)))"
  fi
}
for r in $(seq $RUNS); do
  for b in $SDXS; do echo "run $r $b: $(one $b)"; done
done
