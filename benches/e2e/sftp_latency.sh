#!/usr/bin/env bash
# 2,000 (N) x 4 KiB `get`s through OpenSSH `sftp -b` from a fresh `sdx serve` and from OpenSSH's
# sshd with internal-sftp (loopback port, throwaway host key), one after the other, the client's
# files on /dev/shm as in compare.sh: files/s of each and the client's CPU (sftp + ssh), and with SNIFF=1 (root: a packet capture on
# lo, see sftp_latency.py) the server and client latency per request. MODE=batched|immediate,
# CIPHER, SDX=path. Build first: cargo build --release --bin sdx --example bench_setup.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
needs_time sftp_latency.sh
N=${N:-2000}; MODE=${MODE:-batched}; CIPHER=${CIPHER:-aes256-gcm@openssh.com}; SNIFF=${SNIFF:-0}
W=$(mktemp -d /tmp/sftp-lat.XXXX); C=$(mktemp -d /dev/shm/sftp-lat.XXXX); SP=; OP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; [ -n "$OP" ] && kill $OP 2>/dev/null; rm -rf $W $C' EXIT
ssh-keygen -q -t ed25519 -N "" -f $W/key
mkdir -p $C/in $C/out $W/oroot
for i in $(seq -f %05g $N); do head -c 4096 /dev/urandom > $C/in/s$i; cp $C/in/s$i $W/oroot/; done
opts="-q -i $W/key -c $CIPHER -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
gets() { # port batch label user
  local py=
  if [ "$SNIFF" = 1 ]; then python3 "$here/sftp_latency.py" capture $1 $W/cap & py=$!; sleep 0.5; fi
  local t0 t1; t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o $W/ctime sftp $opts -P $1 -o User=$4 -b $2 127.0.0.1 >/dev/null
  t1=$(date +%s.%N)
  echo "$3: $(python3 -c "u, s = open('$W/ctime').read().split()[-2:]; print('%.0f files/s, client CPU %.0f us per file' % ($N/($t1-$t0), (float(u)+float(s))*1e6/$N))")"
  if [ -n "$py" ]; then kill -INT $py; wait $py || true; python3 "$here/sftp_latency.py" report $W/cap; fi
  cmp -s <(cat $C/in/* | sha256sum) <(cat $C/out/* | sha256sum) || { echo "content differs"; exit 1; }
  rm -f $C/out/*
}
# sdx
$SETUP $W/data bench@client.test "bench portal passphrase 2026" $W/key.pub 10 >/dev/null
printf '[storage]\ndurability = "%s"\n' "$MODE" > $W/c.toml
port=$(fp); wp=$(fp)
SDX_LOG=warn "$SDX" serve --data $W/data --config $W/c.toml --sftp 127.0.0.1:$port \
  --webdav 127.0.0.1:$wp --insecure-http >$W/log 2>&1 &
SP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
d="/2026-001 Bench/Uploads"
for f in $C/in/*; do echo "put \"$f\" \"$d/$(basename $f)\""; done > $W/up
for f in $C/in/*; do echo "get \"$d/$(basename $f)\" \"$C/out/$(basename $f)\""; done > $W/down
sftp $opts -P $port -o User=bench@client.test -b $W/up 127.0.0.1 >/dev/null
gets $port $W/down "sdx ($MODE)" bench@client.test
kill $SP; wait $SP 2>/dev/null || true; SP=
# OpenSSH
me=$(id -un)
mkdir $W/sshd; ssh-keygen -q -t ed25519 -N "" -f $W/sshd/host_key; cp $W/key.pub $W/sshd/authorized_keys
oport=$(fp)
cat > $W/sshd/config <<CONF
Port $oport
ListenAddress 127.0.0.1
HostKey $W/sshd/host_key
PidFile $W/sshd/pid
AuthorizedKeysFile $W/sshd/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
$([ "$(id -u)" = 0 ] && echo "PermitRootLogin prohibit-password")
AllowUsers $me
PrintMotd no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
CONF
[ "$(id -u)" = 0 ] && mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f $W/sshd/config 2>$W/sshd/log &
OP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$oport) 2>/dev/null && break; sleep 0.1; done
for f in $C/in/*; do echo "get \"$W/oroot/$(basename $f)\" \"$C/out/$(basename $f)\""; done > $W/odown
gets $oport $W/odown openssh $me
