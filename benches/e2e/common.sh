# Sourced by the end-to-end scripts beside it: the release build they run (SDX, SETUP; the target
# dir honours CARGO_TARGET_DIR), `fp` (a free loopback port) and `needs_time`.
e2e_target="${CARGO_TARGET_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target}"
SDX=${SDX:-$e2e_target/release/sdx}
SETUP=${SETUP:-$e2e_target/release/examples/bench_setup}
fp() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# needs_time SCRIPT: stop unless /usr/bin/time (GNU time, for the client's CPU) is there.
needs_time() {
    [ -x /usr/bin/time ] || { echo "$1: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
}
# start_webdav_sdx MODE: makes a fresh data dir (bench_setup: one matter, one portal user) and a
# throwaway certificate in $W (the caller makes and removes it), then starts `sdx serve` with
# `durability = MODE` and HTTPS (and SFTP) on free loopback ports. Sets SP (its pid, for the
# caller's trap), DAV_URL (the matter's Uploads folder), DAV_USER (user:password for curl -u) and
# TLS_CURL (curl as compare.sh runs it: HTTP/1.1, TLS 1.3 AES-256-GCM, no Expect).
start_webdav_sdx() {
    ssh-keygen -q -t ed25519 -N "" -f "$W/key"
    "$SETUP" "$W/data" bench@client.test "bench portal passphrase 2026" "$W/key.pub" 10 >/dev/null
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/k.pem" \
        -out "$W/c.pem" -days 2 -subj /CN=127.0.0.1 2>/dev/null
    printf '[storage]\ndurability = "%s"\n' "$1" > "$W/c.toml"
    local port sport i
    port=$(fp); sport=$(fp)
    SDX_LOG=warn "$SDX" serve --data "$W/data" --config "$W/c.toml" --sftp 127.0.0.1:$sport \
        --webdav 127.0.0.1:$port --tls-cert "$W/c.pem" --tls-key "$W/k.pem" >"$W/log" 2>&1 &
    SP=$!
    for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    DAV_URL="https://127.0.0.1:$port/dav/2026-001%20Bench/Uploads"
    DAV_USER="bench@client.test:bench portal passphrase 2026"
    TLS_CURL=(curl -sS --fail --http1.1 -H Expect: -k --tls13-ciphers TLS_AES_256_GCM_SHA384)
}
