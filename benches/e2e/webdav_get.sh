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
ssh-keygen -q -t ed25519 -N "" -f $W/key
$SETUP $W/data bench@client.test "bench portal passphrase 2026" $W/key.pub 10 >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $W/k.pem -out $W/c.pem \
    -days 2 -subj /CN=127.0.0.1 2>/dev/null
printf '[storage]\ndurability = "%s"\n' $MODE > $W/c.toml
port=$(fp); sport=$(fp)
SDX_LOG=warn "$SDX" serve --data $W/data --config $W/c.toml --sftp 127.0.0.1:$sport \
    --webdav 127.0.0.1:$port --tls-cert $W/c.pem --tls-key $W/k.pem >$W/log 2>&1 &
SP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
url="https://127.0.0.1:$port/dav/2026-001%20Bench/Uploads/big"
curl=(curl -sS --fail --http1.1 -H Expect: -k --tls13-ciphers TLS_AES_256_GCM_SHA384
      -u "bench@client.test:bench portal passphrase 2026")
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
