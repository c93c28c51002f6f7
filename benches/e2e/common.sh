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
