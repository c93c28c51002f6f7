#!/usr/bin/env bash
# 256 MiB put + get through OpenSSH sftp against one `sdx serve` (batched durability, aes256-gcm),
# 3 rounds per client request size in BS (default "default 32768"; "default" is what the client negotiates,
# 255 KiB with limits@openssh.com). Build first: cargo build --release --bin sdx --example bench_setup.
# SDX=path compares another build. Prints MB/s per round; checks the download byte for byte.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
W=$(mktemp -d /tmp/bigb.XXXX)
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null; rm -rf $W' EXIT
ssh-keygen -q -t ed25519 -N "" -f $W/key
$SETUP $W/data bench@client.test "bench portal passphrase 2026" $W/key.pub 10 >/dev/null
printf '[storage]\ndurability = "batched"\n' > $W/c.toml
PORT=$(fp); WP=$(fp)
SDX_LOG=warn $SDX serve --data $W/data --config $W/c.toml --sftp 127.0.0.1:$PORT --webdav 127.0.0.1:$WP --insecure-http >$W/log 2>&1 &
SP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
head -c $((256<<20)) /dev/urandom > $W/big
S="sftp -q -P $PORT -i $W/key -c aes256-gcm@openssh.com -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o User=bench@client.test"
for r in 1 2 3; do for B in ${BS:-default 32768}; do
  opt=""; [ $B != default ] && opt="-B $B"
  printf '!date +T%%s%%N\nput %s "/2026-001 Bench/Uploads/b-%s-%s"\n!date +T%%s%%N\nget "/2026-001 Bench/Uploads/b-%s-%s" %s/out\n!date +T%%s%%N\n' $W/big $B $r $B $r $W > $W/batch
  t=$($S $opt -b $W/batch 127.0.0.1 | grep '^T' | tr -d T | paste -sd' ')
  python3 -c "t=list(map(int,'$t'.split())); print('r$r B=$B up %.0f MB/s down %.0f MB/s' % (268.435456/((t[1]-t[0])/1e9), 268.435456/((t[2]-t[1])/1e9)))"
  cmp -s $W/big $W/out || echo MISMATCH
done; done
