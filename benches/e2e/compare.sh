#!/usr/bin/env bash
# End-to-end benchmark: sdx vs Apache mod_dav_fs and `rclone serve webdav` (WebDAV), and vs OpenSSH
# internal-sftp and `rclone serve sftp` (SFTP), all started on 127.0.0.1 in the same run.
#
#   benches/e2e/compare.sh            # full run: 1 GiB, 2,000 x 4 KiB, 10,000-entry listing,
#                                     # 8 x 64 MiB concurrent; 3 interleaved rounds (~15-25 min)
#   QUICK=1 benches/e2e/compare.sh    # smoke check: small sizes, 1 round (~1-2 min after the build)
#
# Environment: RUNS=N rounds; TLS=0 for plain HTTP on every WebDAV server (default: HTTPS on all
# three, same certificate, TLS 1.3 AES-256-GCM); ONLY=webdav|sftp; SFTP_CIPHER (default
# aes256-gcm@openssh.com); WORKLOADS="big small list conc" (a subset); SDX_ENV="K=V" (extra
# environment for sdx only); SDX=path (another sdx build); KEEP=1 keeps the work dir; OUT=table.md
# and JSON=raw.json save the results; SDX_VARIANTS="sdx sdx-batched" (default both: durability
# immediate and batched, over copies of the same data dir).
# Needs: cargo, python3, curl, openssl, apache2 (+ mod_dav_fs, mod_ssl), htpasswd, rclone, sshd,
# sftp, ssh-keygen. Run as root or as a user who may run sshd/apache2 (see BENCHMARKS.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

for tool in cargo python3 curl openssl /usr/sbin/apache2 htpasswd rclone /usr/sbin/sshd sftp ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is missing" >&2; exit 2; }
done

echo "building sdx and the provisioning example (release)..." >&2
cargo build -j2 --release --bin sdx --example bench_setup >&2
target="${CARGO_TARGET_DIR:-$repo/target}"
# SDX=/path/to/another/sdx compares a different build (e.g. a branch) with the same peers.
export SDX="${SDX:-$target/release/sdx}" SETUP="${SETUP:-$target/release/examples/bench_setup}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sdx-e2e.XXXXXX")"
export WORK
cleanup() {
    # The driver stops its servers itself; this catches anything left if it was killed hard.
    if [[ -f "$WORK/pids" ]]; then
        while read -r pg; do
            kill -TERM -- "-$pg" 2>/dev/null || true
        done <"$WORK/pids"
        sleep 1
        while read -r pg; do
            kill -KILL -- "-$pg" 2>/dev/null || true
        done <"$WORK/pids"
    fi
    if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

python3 -B "$here/compare.py"
