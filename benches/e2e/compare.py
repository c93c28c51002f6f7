#!/usr/bin/env python3
"""End-to-end comparison of sdx with the servers a firm would otherwise run (driver of compare.sh).

Starts, in one run, on 127.0.0.1:
  WebDAV: sdx (`sdx serve`), Apache 2.4 mod_dav_fs (own config), `rclone serve webdav`
  SFTP:   sdx (same process), OpenSSH sshd with internal-sftp (own config, throwaway host key),
          `rclone serve sftp`
then runs the workloads with the same client and flags against each server, interleaving the
servers within every round (the order rotates per round), and prints per workload the median and
min-max over the rounds, the ratio sdx / peer, the server's peak RSS and its CPU time.

Only the Python standard library is used. Everything it starts is stopped on exit (process groups
recorded in WORK/pids, which compare.sh's EXIT trap also reads); all files live in temp dirs that
are removed at the end unless KEEP=1.

Environment (see BENCHMARKS.md): QUICK=1, RUNS=N, TLS=0, ONLY=webdav|sftp, KEEP=1, OUT=FILE.md,
WORKLOADS="big small list conc" (a subset), SDX_ENV="K=V ..." (extra environment for sdx only),
JSON=FILE.json, SDX=path/to/sdx, SETUP=path/to/bench_setup, SFTP_CIPHERS="c1 c2".
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MiB = 1 << 20
GiB = 1 << 30
CLK = os.sysconf("SC_CLK_TCK")

QUICK = os.environ.get("QUICK") == "1"
RUNS = int(os.environ.get("RUNS", "1" if QUICK else "3"))
TLS = os.environ.get("TLS", "1") != "0"
ONLY = os.environ.get("ONLY", "")
KEEP = os.environ.get("KEEP") == "1"
# Each SFTP cipher is its own comparison group (every server that offers it, sdx first).
SFTP_CIPHERS = os.environ.get(
    "SFTP_CIPHERS", "aes256-gcm@openssh.com chacha20-poly1305@openssh.com").replace(",", " ").split()
TLS13_CIPHER = "TLS_AES_256_GCM_SHA384"

BIG = (64 if QUICK else 1024) * MiB
SMALL_N = 200 if QUICK else 2000
SMALL = 4096
LIST_N = 1000 if QUICK else 10_000
CONC_N = 8
CONC = (8 if QUICK else 64) * MiB

MATTER = "2026-001 Bench"
EMAIL = "bench@client.test"
PASSWORD = "bench portal passphrase 2026"
T_OUT = 900  # seconds: any single client command

WORKLOADS = [
    # key, label, unit, higher-is-better
    ("big_up", f"{BIG // MiB} MiB upload", "MB/s", True),
    ("big_down", f"{BIG // MiB} MiB download", "MB/s", True),
    ("small_up", f"{SMALL_N:,}x4 KiB upload", "files/s", True),
    ("small_down", f"{SMALL_N:,}x4 KiB download", "files/s", True),
    ("list", f"list {LIST_N:,} entries", "ms", False),
    ("conc_up", f"{CONC_N}x{CONC // MiB} MiB concurrent up", "MB/s", True),
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Fail(Exception):
    pass


# ---------------------------------------------------------------- processes and /proc


class Cleanup:
    """Process groups we started (killed on exit) and the pid file compare.sh's trap reads."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.groups = []

    def add(self, proc):
        self.groups.append(proc.pid)
        with open(self.pidfile, "a") as f:
            f.write(f"{proc.pid}\n")

    def stop_all(self):
        for pg in reversed(self.groups):
            try:
                os.killpg(pg, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        for pg in reversed(self.groups):
            while time.time() < deadline:
                try:
                    os.killpg(pg, 0)
                except ProcessLookupError:
                    break
                # reap if it is our child
                try:
                    os.waitpid(pg, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            else:
                try:
                    os.killpg(pg, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.groups = []


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def tree_pids(root, multi):
    """root and (for multi-process servers) all its descendants."""
    if not multi:
        return [root]
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            c = read(f"/proc/{p}/task/{t}/children")
            if c:
                todo.extend(int(x) for x in c.split())
    return out


def cpu_ticks(pid):
    s = read(f"/proc/{pid}/stat")
    if not s:
        return 0
    f = s[s.rfind(")") + 2:].split()
    # fields 14-17 (utime stime cutime cstime) are f[11..14] after the state field f[0]
    return sum(int(x) for x in f[11:15])


def status_kib(pid, key):
    s = read(f"/proc/{pid}/status")
    if not s:
        return 0
    m = re.search(rf"^{key}:\s+(\d+) kB", s, re.M)
    return int(m.group(1)) if m else 0


class Sampler(threading.Thread):
    """Samples the summed VmRSS of a server's process tree every 50 ms."""

    def __init__(self, root, multi):
        super().__init__(daemon=True)
        self.root, self.multi = root, multi
        self.peak = 0
        self.stop_ev = threading.Event()

    def run(self):
        n = 0
        pids = tree_pids(self.root, self.multi)
        while not self.stop_ev.is_set():
            if self.multi and n % 4 == 0:
                pids = tree_pids(self.root, self.multi)
            n += 1
            self.peak = max(self.peak, sum(status_kib(p, "VmRSS") for p in pids))
            self.stop_ev.wait(0.05)

    def finish(self):
        self.stop_ev.set()
        self.join()
        return self.peak


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise Fail(f"{what} exited with {proc.returncode} while starting (see its log)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise Fail(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def run(cmd, **kw):
    kw.setdefault("timeout", T_OUT)
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode != 0:
        raise Fail(
            f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}"
        )
    return r


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


# ---------------------------------------------------------------- servers


class Server:
    """One front end of one server process. `multi`: the server forks (sum over its tree)."""

    def __init__(self, name, proto, proc, multi, **kw):
        self.name, self.proto, self.proc, self.multi = name, proto, proc, multi
        self.tag = proto
        self.__dict__.update(kw)

    def with_cipher(self, cipher):
        s = Server(self.name, self.proto, self.proc, self.multi, **{
            k: v for k, v in self.__dict__.items()
            if k not in ("name", "proto", "proc", "multi")})
        s.cipher = cipher
        s.tag = f"sftp-{cipher.split('@')[0]}"
        return s

    @property
    def pid(self):
        return self.proc.pid


def spawn(cleanup, cmd, logpath, **kw):
    logf = open(logpath, "ab")
    p = subprocess.Popen(
        cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, **kw,
    )
    cleanup.add(p)
    return p


def fill_big_dir(path, n, owner=None):
    os.makedirs(path, exist_ok=True)
    for i in range(n):
        with open(os.path.join(path, f"doc-{i:05d}.txt"), "w") as f:
            f.write(f"document {i:05d}\n")


def start_servers(W, cleanup, sdx_bin, setup_bin, me):
    servers = {"webdav": [], "sftp": []}
    key = os.path.join(W, "client_key")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    cert, tkey = os.path.join(W, "tls.crt"), os.path.join(W, "tls.key")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", tkey, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
    scheme = "https" if TLS else "http"
    root_user = os.geteuid() == 0
    if root_user:
        os.chmod(W, 0o711)  # Apache's workers (www-data) must reach their folders below it

    # --- sdx: provision through the public API, then `sdx serve`
    data = os.path.join(W, "sdx-data")
    t0 = time.time()
    run([setup_bin, data, EMAIL, PASSWORD, key + ".pub", str(LIST_N)])
    log(f"sdx data dir provisioned ({LIST_N:,} documents) in {time.time() - t0:.1f} s")
    # Two sdx servers over copies of the same data dir: the default (every acknowledged operation
    # fsynced) and `[storage] durability = "batched"` (fsynced in groups within 200 ms; the peers
    # fsync nothing). SDX_VARIANTS="sdx" or "sdx-batched" runs one of them only.
    data_b = os.path.join(W, "sdx-data-batched")
    shutil.copytree(data, data_b, symlinks=True)
    conf_b = os.path.join(W, "sdx-batched.toml")
    with open(conf_b, "w") as f:
        f.write('[storage]\ndurability = "batched"\nflush_interval_ms = 200\n')
    variants = os.environ.get("SDX_VARIANTS", "sdx sdx-batched").split()
    extra = dict(kv.split("=", 1) for kv in os.environ.get("SDX_ENV", "").split() if "=" in kv)
    for name, d, conf in [("sdx", data, None), ("sdx-batched", data_b, conf_b)]:
        if name not in variants:
            continue
        wp, sp = free_port(), free_port()
        cmd = [sdx_bin, "serve", "--data", d, "--webdav", f"127.0.0.1:{wp}",
               "--sftp", f"127.0.0.1:{sp}"]
        cmd += ["--config", conf] if conf else []
        cmd += ["--tls-cert", cert, "--tls-key", tkey] if TLS else ["--insecure-http"]
        p = spawn(cleanup, cmd, os.path.join(W, f"{name}.log"),
                  env={**os.environ, "SDX_LOG": "warn", **extra})
        wait_port(wp, p, f"{name} (WebDAV)")
        wait_port(sp, p, f"{name} (SFTP)")
        blobdir = os.path.join(d, "blobs")
        servers["webdav"].append(Server(
            name, "webdav", p, False,
            base=f"{scheme}://127.0.0.1:{wp}/dav/{MATTER.replace(' ', '%20')}",
            user=EMAIL, pw=PASSWORD, blobdir=blobdir))
        servers["sftp"].append(Server(
            name, "sftp", p, False, port=sp, user=EMAIL, root=f"/{MATTER}", blobdir=blobdir))

    # --- Apache mod_dav_fs
    aroot = os.path.join(W, "apache-root")
    os.makedirs(os.path.join(aroot, MATTER, "Uploads"))
    fill_big_dir(os.path.join(aroot, MATTER, "Big"), LIST_N)
    if root_user:
        run(["chown", "-R", "www-data:www-data", aroot])
    adir = os.path.join(W, "apache")
    os.makedirs(adir)
    if root_user:
        run(["chown", "www-data:www-data", adir])  # DavLockDB lives here
    run(["htpasswd", "-cb", os.path.join(adir, "htpasswd"), EMAIL, PASSWORD])
    ap = free_port()
    mods = ["mpm_event", "authz_core", "authn_core", "authn_file", "auth_basic", "authz_user",
            "alias", "mime", "dav", "dav_fs"] + (["ssl"] if TLS else [])
    conf = "\n".join(
        [f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in mods] + [
            f"ServerRoot {adir}",
            f"DefaultRuntimeDir {adir}",
            f"PidFile {adir}/apache.pid",
            f"ErrorLog {adir}/error.log",
            "LogLevel warn",
            f"Mutex file:{adir} default",
            "ServerName 127.0.0.1",
            f"Listen 127.0.0.1:{ap}",
            "TypesConfig /etc/mime.types",
            *(["User www-data", "Group www-data"] if root_user else []),
            "KeepAlive On",
            "MaxKeepAliveRequests 0",
            "Timeout 300",
            "LimitRequestBody 0",
            f"DavLockDB {adir}/davlock",
            *([f"SSLEngine on", f"SSLCertificateFile {cert}",
               f"SSLCertificateKeyFile {tkey}"] if TLS else []),
            "<Directory />",
            "  AllowOverride None",
            "</Directory>",
            f'Alias /dav "{aroot}"',
            f'<Directory "{aroot}">',
            "  Dav On",
            "  AuthType Basic",
            '  AuthName "bench"',
            f"  AuthUserFile {adir}/htpasswd",
            "  Require valid-user",
            "</Directory>",
        ]) + "\n"
    with open(os.path.join(adir, "apache.conf"), "w") as f:
        f.write(conf)
    if root_user:
        os.chmod(tkey, 0o600)  # read by the root parent before it drops privileges
    p = spawn(cleanup, ["/usr/sbin/apache2", "-f", os.path.join(adir, "apache.conf"),
                        "-DFOREGROUND"], os.path.join(adir, "stdout.log"))
    wait_port(ap, p, "apache2")
    servers["webdav"].append(Server(
        "apache", "webdav", p, True, base=f"{scheme}://127.0.0.1:{ap}/dav/{MATTER.replace(' ', '%20')}",
        user=EMAIL, pw=PASSWORD, disk=os.path.join(aroot, MATTER, "Uploads")))

    # --- rclone serve webdav / sftp
    rconf = os.path.join(W, "rclone.conf")
    open(rconf, "w").close()
    for proto in ("webdav", "sftp"):
        rroot = os.path.join(W, f"rclone-{proto}-root")
        os.makedirs(os.path.join(rroot, MATTER, "Uploads"))
        fill_big_dir(os.path.join(rroot, MATTER, "Big"), LIST_N)
        port = free_port()
        cmd = ["rclone", "--config", rconf, "serve", proto, rroot, "--addr", f"127.0.0.1:{port}"]
        if proto == "webdav":
            cmd += ["--user", EMAIL, "--pass", PASSWORD, "--baseurl", "/dav"]
            cmd += ["--cert", cert, "--key", tkey] if TLS else []
        else:
            hk = os.path.join(W, "rclone_host_key")
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk])
            cmd += ["--user", "bench", "--authorized-keys", key + ".pub", "--key", hk]
        p = spawn(cleanup, cmd, os.path.join(W, f"rclone-{proto}.log"))
        wait_port(port, p, f"rclone serve {proto}")
        if proto == "webdav":
            servers["webdav"].append(Server(
                "rclone", "webdav", p, False,
                base=f"{scheme}://127.0.0.1:{port}/dav/{MATTER.replace(' ', '%20')}",
                user=EMAIL, pw=PASSWORD, disk=os.path.join(rroot, MATTER, "Uploads")))
        else:
            servers["sftp"].append(Server(
                "rclone", "sftp", p, False, port=port, user="bench", root=f"/{MATTER}",
                disk=os.path.join(rroot, MATTER, "Uploads")))

    # --- OpenSSH sshd, internal-sftp
    sdir = os.path.join(W, "sshd")
    os.makedirs(sdir)
    oroot = os.path.join(W, "openssh-root")
    os.makedirs(os.path.join(oroot, MATTER, "Uploads"))
    fill_big_dir(os.path.join(oroot, MATTER, "Big"), LIST_N)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(sdir, "host_key")])
    shutil.copy(key + ".pub", os.path.join(sdir, "authorized_keys"))
    port = free_port()
    sconf = os.path.join(sdir, "sshd_config")
    with open(sconf, "w") as f:
        f.write("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1",
            f"HostKey {sdir}/host_key", f"PidFile {sdir}/sshd.pid",
            f"AuthorizedKeysFile {sdir}/authorized_keys",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "UseDNS no", "StrictModes no",
            "PermitRootLogin prohibit-password" if root_user else "",
            f"AllowUsers {me}", "PrintMotd no",
            "Subsystem sftp internal-sftp", "ForceCommand internal-sftp",
        ]) + "\n")
    if root_user:
        os.makedirs("/run/sshd", exist_ok=True)
    p = spawn(cleanup, ["/usr/sbin/sshd", "-D", "-e", "-f", sconf], os.path.join(sdir, "log"))
    wait_port(port, p, "sshd")
    servers["sftp"].append(Server(
        "openssh", "sftp", p, True, port=port, user=me, root=os.path.join(oroot, MATTER),
        disk=os.path.join(oroot, MATTER, "Uploads")))

    # the reference peer of each protocol comes second in the list (ratios: sdx / each peer)
    order = {"webdav": ["sdx", "sdx-batched", "apache", "rclone"],
             "sftp": ["sdx", "sdx-batched", "openssh", "rclone"]}
    for proto in servers:
        servers[proto].sort(key=lambda s: order[proto].index(s.name))
    groups = {"webdav": servers["webdav"]}
    for c in SFTP_CIPHERS:
        g = []
        for s in servers["sftp"]:
            sc = s.with_cipher(c)
            probe = os.path.join(W, "batch-probe")
            with open(probe, "w") as f:
                f.write("pwd\n")
            r = subprocess.run(sftp_cmd(sc, key, probe), capture_output=True, timeout=60)
            if r.returncode == 0:
                g.append(sc)
            else:
                log(f"{s.name} SFTP does not work with {c}: left out of that group "
                    f"({r.stderr.decode(errors='replace').strip()[-200:]})")
        if g and g[0].name.startswith("sdx"):
            groups[g[0].tag] = g
        else:
            raise Fail(f"sdx SFTP does not work with {c}")
    return groups, key


# ---------------------------------------------------------------- clients


def curl_base(s):
    c = ["curl", "-sS", "--fail", "--http1.1", "-H", "Expect:", "-u", f"{s.user}:{s.pw}",
         "--max-time", str(T_OUT)]
    if TLS:
        c += ["-k", "--tls13-ciphers", TLS13_CIPHER]
    return c


def sftp_cmd(s, key, batch):
    return ["sftp", "-q", "-b", batch, "-P", str(s.port), "-i", key, "-c", s.cipher,
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"User={s.user}", "127.0.0.1"]


def q(p):
    if '"' in p:
        raise Fail(f"path with a quote: {p}")
    return f'"{p}"'


STAMP = "!date +T%s%N"


def sftp_timed(s, key, lines, W, tag):
    """Runs one sftp session whose batch is STAMP, lines, STAMP; returns (seconds, stdout, t0, t1)."""
    batch = os.path.join(W, f"batch-{tag}")
    with open(batch, "w") as f:
        f.write("\n".join([STAMP, *lines, STAMP]) + "\n")
    r = run(sftp_cmd(s, key, batch))
    out = r.stdout.decode(errors="replace")
    ts = [int(m) for m in re.findall(r"^T(\d+)$", out, re.M)]
    if len(ts) != 2:
        raise Fail(f"sftp session on {s.name}: no timing marks in its output")
    return (ts[1] - ts[0]) / 1e9, out, ts[0], ts[1]


def sftp_untimed(s, key, lines, W, tag):
    batch = os.path.join(W, f"batch-{tag}")
    with open(batch, "w") as f:
        f.write("\n".join(lines) + "\n")
    return run(sftp_cmd(s, key, batch))


def timed(cmd):
    t0 = time.perf_counter()
    r = run(cmd)
    return time.perf_counter() - t0, r


PROPFIND_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    "<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>"
    "</D:prop></D:propfind>"
)


class Bench:
    def __init__(self, W, C, key):
        self.W, self.C, self.key = W, C, key
        self.big = os.path.join(C, "big.bin")
        self.conc = os.path.join(C, "conc.bin")
        self.small_dir = os.path.join(C, "small")
        self.hashes = {}

    def make_inputs(self):
        t0 = time.time()
        with open(self.big, "wb") as f:
            left = BIG
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n
        with open(self.conc, "wb") as f:
            f.write(os.urandom(CONC))
        os.makedirs(self.small_dir)
        self.small = []
        for i in range(SMALL_N):
            p = os.path.join(self.small_dir, f"s{i:05d}")
            b = os.urandom(SMALL)
            with open(p, "wb") as f:
                f.write(b)
            self.small.append((p, hashlib.sha256(b).hexdigest()))
        self.hashes["big"] = sha256_file(self.big)
        self.hashes["conc"] = sha256_file(self.conc)
        log(f"inputs made in {time.time() - t0:.1f} s in {self.C}")

    def scratch(self, name):
        d = os.path.join(self.C, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    # Each workload returns (seconds, bytes moved, operations) and raises Fail on a wrong result.

    def big_up(self, s, r):
        name = f"{s.tag}-r{r}-big.bin"
        if s.proto == "webdav":
            t, _ = timed(curl_base(s) + ["-T", self.big, "-o", "/dev/null", f"{s.base}/Uploads/{name}"])
        else:
            t, *_ = sftp_timed(s, self.key, [f"put {q(self.big)} {q(s.root + '/Uploads/' + name)}"],
                               self.W, "bigup")
        return t, BIG, 1

    def big_down(self, s, r):
        # The timed download goes to /dev/null: written to a tmpfs file, 1 GiB cost the client
        # 0.6-3.2 s of kernel time depending on whether the VM still backed the pages it got
        # (BENCHMARKS.md, session 10), which swamped every server's figure. `verify_big` then
        # downloads the document again, untimed, into a file and checks it byte for byte.
        name = f"{s.tag}-r{r}-big.bin"
        if s.proto == "webdav":
            t, res = timed(curl_base(s) + ["-o", "/dev/null", "-w", "%{size_download}",
                                           f"{s.base}/Uploads/{name}"])
            got = res.stdout.decode(errors="replace").strip()
            if got != str(BIG):
                raise Fail(f"{s.tag} {s.name}: the timed download of {name} moved {got} bytes")
        else:
            t, *_ = sftp_timed(s, self.key, [f"get {q(s.root + '/Uploads/' + name)} /dev/null"],
                               self.W, "bigdown")
        return t, BIG, 1

    def verify_big(self, s, r):
        """Untimed: downloads the 1 GiB upload into a file and checks its size and sha256."""
        name = f"{s.tag}-r{r}-big.bin"
        out = os.path.join(self.scratch("dl"), "big")
        if s.proto == "webdav":
            run(curl_base(s) + ["-o", out, f"{s.base}/Uploads/{name}"])
        else:
            sftp_untimed(s, self.key, [f"get {q(s.root + '/Uploads/' + name)} {q(out)}"],
                         self.W, "bigcheck")
        if os.path.getsize(out) != BIG or sha256_file(out) != self.hashes["big"]:
            raise Fail(f"{s.tag} {s.name}: the downloaded {name} differs from what was uploaded")
        os.remove(out)

    def small_up(self, s, r):
        names = [f"{s.tag}-r{r}-s{i:05d}" for i in range(SMALL_N)]
        if s.proto == "webdav":
            cfg = os.path.join(self.W, "curl-smallup")
            with open(cfg, "w") as f:
                for (p, _), n in zip(self.small, names):
                    f.write(f'url = "{s.base}/Uploads/{n}"\nupload-file = "{p}"\noutput = "/dev/null"\n')
            t, _ = timed(curl_base(s) + ["-K", cfg])
        else:
            lines = [f"put {q(p)} {q(s.root + '/Uploads/' + n)}" for (p, _), n in zip(self.small, names)]
            t, *_ = sftp_timed(s, self.key, lines, self.W, "smallup")
        return t, SMALL_N * SMALL, SMALL_N

    def small_down(self, s, r):
        names = [f"{s.tag}-r{r}-s{i:05d}" for i in range(SMALL_N)]
        d = self.scratch("dl-small")
        if s.proto == "webdav":
            cfg = os.path.join(self.W, "curl-smalldown")
            with open(cfg, "w") as f:
                for n in names:
                    f.write(f'url = "{s.base}/Uploads/{n}"\noutput = "{d}/{n}"\n')
            t, _ = timed(curl_base(s) + ["-K", cfg])
        else:
            lines = [f"get {q(s.root + '/Uploads/' + n)} {q(d + '/' + n)}" for n in names]
            t, *_ = sftp_timed(s, self.key, lines, self.W, "smalldown")
        for (_, h), n in zip(self.small, names):
            with open(os.path.join(d, n), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != h:
                    raise Fail(f"{s.tag} {s.name}: downloaded {n} differs from what was uploaded")
        shutil.rmtree(d)
        return t, SMALL_N * SMALL, SMALL_N

    def list(self, s, r):
        """Three listings in a row; the median one counts (a single request is very noisy)."""
        times = []
        for _ in range(3):
            if s.proto == "webdav":
                out = os.path.join(self.C, "propfind.xml")
                t, _ = timed(curl_base(s) + ["-X", "PROPFIND", "-H", "Depth: 1", "-H",
                                             "Content-Type: application/xml", "--data-binary",
                                             PROPFIND_BODY, "-o", out, f"{s.base}/Big/"])
                with open(out, encoding="utf-8", errors="replace") as f:
                    n = len(re.findall(r"<(?:[A-Za-z0-9]+:)?href>[^<]*doc-\d{5}\.txt", f.read()))
            else:
                t, out, *_ = sftp_timed(s, self.key, [f"ls -l {q(s.root + '/Big')}"], self.W, "ls")
                n = len(re.findall(r"doc-\d{5}\.txt$", out, re.M))
            if n != LIST_N:
                raise Fail(f"{s.tag} {s.name}: the listing shows {n} documents, expected {LIST_N}")
            times.append(t)
        return statistics.median(times), 0, 1

    def conc_up(self, s, r):
        names = [f"{s.tag}-r{r}-c{i}.bin" for i in range(CONC_N)]
        procs = []
        if s.proto == "webdav":
            t0 = time.perf_counter()
            for n in names:
                procs.append(subprocess.Popen(
                    curl_base(s) + ["-T", self.conc, "-o", "/dev/null", f"{s.base}/Uploads/{n}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            for p in procs:
                _, err = p.communicate(timeout=T_OUT)
                if p.returncode != 0:
                    raise Fail(f"curl failed on {s.name}: {err.decode(errors='replace')}")
            t = time.perf_counter() - t0
        else:
            for i, n in enumerate(names):
                batch = os.path.join(self.W, f"batch-conc{i}")
                with open(batch, "w") as f:
                    f.write(f"{STAMP}\nput {q(self.conc)} {q(s.root + '/Uploads/' + n)}\n{STAMP}\n")
                procs.append(subprocess.Popen(sftp_cmd(s, self.key, batch),
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            starts, ends = [], []
            for p in procs:
                out, err = p.communicate(timeout=T_OUT)
                if p.returncode != 0:
                    raise Fail(f"sftp failed on {s.name}: {err.decode(errors='replace')}")
                ts = [int(m) for m in re.findall(r"^T(\d+)$", out.decode(errors="replace"), re.M)]
                if len(ts) != 2:
                    raise Fail(f"sftp on {s.name}: no timing marks")
                starts.append(ts[0])
                ends.append(ts[1])
            t = (max(ends) - min(starts)) / 1e9
        return t, CONC_N * CONC, CONC_N

    def verify_conc(self, s, r):
        """Untimed: downloads the 8 concurrent uploads and checks them."""
        names = [f"{s.tag}-r{r}-c{i}.bin" for i in range(CONC_N)]
        d = self.scratch("dl-conc")
        if s.proto == "webdav":
            cfg = os.path.join(self.W, "curl-conc")
            with open(cfg, "w") as f:
                for n in names:
                    f.write(f'url = "{s.base}/Uploads/{n}"\noutput = "{d}/{n}"\n')
            run(curl_base(s) + ["-K", cfg])
        else:
            sftp_untimed(s, self.key, [f"get {q(s.root + '/Uploads/' + n)} {q(d + '/' + n)}"
                                       for n in names], self.W, "concget")
        for n in names:
            if sha256_file(os.path.join(d, n)) != self.hashes["conc"]:
                raise Fail(f"{s.tag} {s.name}: concurrent upload {n} is wrong")
        shutil.rmtree(d)


def measure(s, fn, r):
    os.sync()
    pids = tree_pids(s.pid, s.multi)
    for p in pids:  # reset the peak-RSS counters (Linux: "5" > clear_refs)
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    cpu0 = sum(cpu_ticks(p) for p in pids)
    sampler = Sampler(s.pid, s.multi)
    sampler.start()
    try:
        secs, nbytes, ops = fn(s, r)
    finally:
        peak = sampler.finish()
    pids = tree_pids(s.pid, s.multi)
    cpu = (sum(cpu_ticks(p) for p in pids) - cpu0) / CLK
    if not s.multi:
        peak = max(peak, status_kib(s.pid, "VmHWM"))
    return {"secs": secs, "bytes": nbytes, "ops": ops, "cpu": cpu, "rss_mib": peak / 1024}


def metric(key, m):
    if key in ("big_up", "big_down", "conc_up"):
        return m["bytes"] / m["secs"] / 1e6
    if key in ("small_up", "small_down"):
        return m["ops"] / m["secs"]
    return m["secs"] * 1000


def cpu_metric(key, m):
    """CPU seconds per GiB for bulk transfers; CPU ms per file / per listing otherwise."""
    if key in ("big_up", "big_down", "conc_up"):
        return m["cpu"] / (m["bytes"] / GiB), "s/GiB"
    return m["cpu"] * 1000 / m["ops"], ("ms/file" if key.startswith("small") else "ms/list")


def blob_files(s):
    """sdx only: the committed blob files (blobs/<matter>/<blob>) in its data dir."""
    d = getattr(s, "blobdir", None)
    if not d:
        return None
    out = set()
    for m in os.listdir(d):
        if len(m) == 16 and os.path.isdir(os.path.join(d, m)):
            out.update(os.path.join(d, m, f) for f in os.listdir(os.path.join(d, m)))
    return out


def reclaim(s, r, before):
    """Deletes what one server's workload uploaded, to bound the disk footprint (~2 GiB).

    Peers: their files. sdx: the blob files written since `before`, removed behind its back —
    deleting through WebDAV/SFTP only moves documents to the trash, which keeps their content. The
    documents stay listed, their content is gone; nothing reads them again. Benchmark-only."""
    d = getattr(s, "disk", None)
    if d:
        for n in os.listdir(d):
            if n.startswith(f"{s.tag}-r{r}-"):
                os.remove(os.path.join(d, n))
    if before is not None:
        for f in blob_files(s) - before:
            os.remove(f)


def fmt(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def report(results, servers):
    lines = []
    md = []
    head = (f"sdx end-to-end comparison (sdx: durability immediate, sdx-batched: batched 200 ms): {RUNS} round(s), servers interleaved (order rotated per "
            f"round); WebDAV {'HTTPS (TLS 1.3 ' + TLS13_CIPHER + ')' if TLS else 'plain HTTP'} "
            f"HTTP/1.1 via curl; SFTP via OpenSSH sftp, one group per cipher")
    lines.append(head)
    lines.append("value: median (min-max) over rounds; ratio: sdx speed / peer speed, median of the"
                 " per-round ratios (>= 1.00x means sdx is at least as fast); RSS: the server's peak"
                 " during the workload, median (max) over rounds")
    md.append("| protocol | workload | server | median | min–max | sdx ratio | sdx-batched ratio | peak RSS MiB median (max) | CPU |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for proto in servers:
        lines.append("")
        lines.append(proto)
        lines.append(f"{'':<7} {'workload':<28} {'server':<11} {'median':>9} "
                     f"{'(min-max)':>19} {'sdx ratio':>16} {'batched ratio':>16} {'RSS MiB':>11} {'CPU':>14}")
        for key, label, unit, higher in WORKLOADS:
            runs_by = {s.name: results.get((proto, key, s.name), []) for s in servers[proto]}
            for s in servers[proto]:
                ms = runs_by[s.name]
                if not ms:
                    continue
                vals = [metric(key, m) for m in ms]
                med = statistics.median(vals)
                ratios = []
                for v in ("sdx", "sdx-batched"):
                    vr = runs_by.get(v, [])
                    if s.name.startswith("sdx") or not vr:
                        ratios.append("")
                        continue
                    per = []
                    for a, b in zip(vr, ms):
                        va, vb = metric(key, a), metric(key, b)
                        per.append(va / vb if higher else vb / va)
                    ratios.append(f"{statistics.median(per):.2f}x ({min(per):.2f}-{max(per):.2f})")
                rss_v = [m["rss_mib"] for m in ms]
                rss = f"{statistics.median(rss_v):.0f} ({max(rss_v):.0f})"
                cpus = [cpu_metric(key, m) for m in ms]
                cpu = f"{statistics.median(c for c, _ in cpus):.2f} {cpus[0][1]}"
                rng = f"({fmt(min(vals))}-{fmt(max(vals))})"
                lines.append(f"{'':<7} {label + ' ' + unit:<28} {s.name:<11} {fmt(med):>9} "
                             f"{rng:>19} {ratios[0]:>16} {ratios[1]:>16} {rss:>11} {cpu:>14}")
                md.append(f"| {proto} | {label} ({unit}) | {s.name} | {fmt(med)} | "
                          f"{fmt(min(vals))}–{fmt(max(vals))} | {ratios[0] or '—'} | "
                          f"{ratios[1] or '—'} | {rss} | {cpu} |")
    return "\n".join(lines), "\n".join(md)


def main():
    sdx_bin = os.environ["SDX"]
    setup_bin = os.environ["SETUP"]
    W = os.environ.get("WORK") or tempfile.mkdtemp(prefix="sdx-e2e-")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    C = tempfile.mkdtemp(prefix="sdx-e2e-client-", dir=shm)
    cleanup = Cleanup(os.path.join(W, "pids"))
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    status = 1

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        log(f"work dir {W} (server data), client files in {C}; QUICK={int(QUICK)} RUNS={RUNS} "
            f"TLS={int(TLS)}")
        servers, key = start_servers(W, cleanup, sdx_bin, setup_bin, me)
        if ONLY:
            servers = {k: v for k, v in servers.items() if k.startswith(ONLY)}
        b = Bench(W, C, key)
        b.make_inputs()
        results = {}
        pairs = [("big_up", "big_down"), ("small_up", "small_down"), ("list",), ("conc_up",)]
        if os.environ.get("WORKLOADS"):
            want = os.environ["WORKLOADS"].replace(",", " ").split()
            pairs = [p for p in pairs if p[0].split("_")[0] in want]
        for r in range(RUNS):
            for group in pairs:
                for proto, ss in servers.items():
                    k = r % len(ss)
                    for s in ss[k:] + ss[:k]:
                        before = blob_files(s)
                        for key_ in group:
                            m = measure(s, getattr(b, key_), r)
                            results.setdefault((proto, key_, s.name), []).append(m)
                            log(f"round {r + 1}/{RUNS} {proto:<22} {key_:<10} {s.name:<11} "
                                f"{fmt(metric(key_, m)):>8} {dict(WORKLOADS_UNITS)[key_]:<7} "
                                f"cpu {m['cpu']:.2f}s rss {m['rss_mib']:.0f} MiB")
                        if group == ("big_up", "big_down"):
                            b.verify_big(s, r)
                        if group == ("conc_up",):
                            b.verify_conc(s, r)
                        reclaim(s, r, before)
        text, md = report(results, servers)
        print(text)
        print()
        print(md)
        if os.environ.get("OUT"):
            with open(os.environ["OUT"], "w") as f:
                f.write(text + "\n\n" + md + "\n")
        if os.environ.get("JSON"):
            with open(os.environ["JSON"], "w") as f:
                json.dump({"|".join(k): v for k, v in results.items()}, f, indent=1)
        status = 0
    except Fail as e:
        log(f"compare: FAILED: {e}")
    except KeyboardInterrupt as e:
        log(f"compare: interrupted ({e})")
        status = 130
    finally:
        cleanup.stop_all()
        shutil.rmtree(C, ignore_errors=True)
        if KEEP:
            log(f"kept {W}")
        else:
            shutil.rmtree(W, ignore_errors=True)
    return status


WORKLOADS_UNITS = [(k, u) for k, _, u, _ in WORKLOADS]

if __name__ == "__main__":
    sys.exit(main())
