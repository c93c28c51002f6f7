#!/usr/bin/env bash
# Is the server's memory flat during a 1 GiB WebDAV transfer? One fresh `sdx serve` (MODE=immediate
# (default) | batched; HTTPS, TLS 1.3 AES-256-GCM, curl over HTTP/1.1 as in compare.sh): a 1 GiB PUT
# then a 1 GiB GET (to /dev/null), the server's VmRSS sampled every 100 ms. Prints, per transfer,
# the RSS before it, at each quarter of its samples and its peak: flat means the last quarters are
# no higher than the first. SIZE_MIB changes the size (default 1024).
# Build first: cargo build --release --bin sdx --example bench_setup.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MODE=${MODE:-immediate}; SIZE_MIB=${SIZE_MIB:-1024}
W=$(mktemp -d /tmp/webdav-rss.XXXX); SRC=$(mktemp /dev/shm/webdav-rss.XXXX); SP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; rm -rf $W $SRC' EXIT
head -c $((SIZE_MIB << 20)) /dev/urandom > $SRC
start_webdav_sdx "$MODE"
url="$DAV_URL/big"
curl=("${TLS_CURL[@]}" -u "$DAV_USER")
rss() { awk '/^VmRSS/ {print $2}' /proc/$SP/status; }
watch() { # label, then the command to run while sampling
  local label=$1; shift
  local before; before=$(rss)
  "$@" & local cp=$!
  : > $W/samples
  while kill -0 $cp 2>/dev/null; do rss >> $W/samples; sleep 0.1; done
  wait $cp
  python3 - "$label" "$before" $W/samples <<'PY'
import sys
label, before, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = [int(x) for x in open(path).read().split()]
q = [s[min(len(s) - 1, i * len(s) // 4)] for i in range(4)] + [s[-1]]
mib = lambda k: f"{k / 1024:.0f}"
print(f"{label}: {len(s)} samples, RSS MiB before {mib(before)}, at 0/25/50/75/100 % "
      f"{' / '.join(mib(x) for x in q)}, peak {mib(max(s))}")
PY
}
watch "PUT ${SIZE_MIB} MiB" "${curl[@]}" -T $SRC -o /dev/null "$url"
watch "GET ${SIZE_MIB} MiB" "${curl[@]}" -o /dev/null "$url"
