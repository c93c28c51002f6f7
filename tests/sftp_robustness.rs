//! The SFTP front end over the real portal against hostile, broken, slow and vanishing clients
//! (Python paramiko, raw SFTP packets): malformed packets are answered with the client's own
//! request id or close the session; absurd lengths are capped or refused; open handles are capped
//! per session; a client that stops reading or vanishes costs no memory and leaves nothing
//! behind; idle sessions time out. After each, the server serves a new client at once.

mod sftp_common;

use sdx_portal::audit::{AuditAction, AuditFilter, Outcome};
use sdx_portal::model::{Actor, Principal};
use sdx_portal::tree::WriteOptions;
use serde_json::{Value, json};
use sftp_common::*;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(120);
const FOLDER: &str = "Client Documents/Tax Returns";

/// Tests share one process: the memory measurement runs alone (write lock), the others share.
static RSS_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn seed(srv: &PortalServer, name: &str, len: usize) -> Vec<u8> {
    let data = pattern(len, 42);
    let mut up = srv
        .client_tree()
        .open_write(&format!("{MATTER}/{FOLDER}/{name}"), WriteOptions::upload())
        .await
        .unwrap();
    for chunk in data.chunks(1 << 20) {
        up.write(chunk).await.unwrap();
    }
    up.commit().await.unwrap();
    data
}

async fn probe(port: u16, command: &str, args: &[&str]) -> Value {
    let mut a = vec!["--root", MATTER, "--folder", FOLDER];
    a.extend_from_slice(args);
    portal_probe(port, command, &a, LIMIT).await
}

fn own_root() -> Value {
    json!({ "names": [MATTER.trim_start_matches('/')] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_are_answered_with_their_id_or_close_the_session() {
    let _shared = RSS_LOCK.read().await;
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    seed(&srv, "big.bin", 1 << 20).await;
    let v = probe(srv.port(), "malformed", &["--doc", "big.bin"]).await;
    let status = |id: u32, code: u32| json!({"type": 101, "id": id, "code": code});
    let bad = 5; // SSH_FX_BAD_MESSAGE
    let unsupported = 8; // SSH_FX_OP_UNSUPPORTED
    let failure = 4; // SSH_FX_FAILURE
    let expect = [
        ("truncated open", 100, bad),
        ("unknown type", 101, unsupported),
        ("client status", 102, bad),
        ("client data", 103, bad),
        ("write data too long", 104, bad),
        ("write no offset", 105, bad),
        ("string len 4G", 106, bad),
        ("open attr flags garbage", 107, bad),
        ("posix-rename one path", 108, bad),
        ("unknown extension", 109, unsupported),
        ("write on read handle", 112, 3), // SSH_FX_PERMISSION_DENIED
        ("read on dir handle", 113, failure),
        ("bogus handle", 114, failure),
        ("huge handle", 115, failure),
        ("non-utf8 path", 116, bad),
    ];
    for (name, id, code) in expect {
        let got = &v[name];
        assert_eq!(
            json!({"type": got["type"], "id": got["id"], "code": got["code"]}),
            status(id, code),
            "{name}: {v}"
        );
        assert_eq!(
            v[format!("{name} then")],
            true,
            "{name}: session still serves"
        );
    }
    // An absurd read length is capped (256 KiB of data), an absurd offset is the end of file.
    assert_eq!(v["read absurd length"]["type"], 103, "{v}"); // SSH_FXP_DATA
    let len = v["read absurd length"]["len"].as_u64().unwrap();
    assert!(len <= 256 * 1024 + 9, "{v}");
    assert_eq!(v["read absurd offset"]["code"], 1, "{v}"); // SSH_FX_EOF
    assert_eq!(v["second init"]["type"], 2, "{v}"); // SSH_FXP_VERSION
    // Violations close that session and nothing else is sent.
    for name in ["too short for an id", "length 4G", "length zero"] {
        assert_eq!(v[name], json!(["closed"]), "{name}: {v}");
    }
    assert_eq!(v["same connection after"], own_root(), "{v}");
    assert_eq!(v["new connection after"], own_root(), "{v}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_handles_are_capped_per_session() {
    let _shared = RSS_LOCK.read().await;
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    seed(&srv, "doc.bin", 1000).await;
    let v = probe(
        srv.port(),
        "handles",
        &["--doc", "doc.bin", "--count", "400"],
    )
    .await;
    let cap = sdx_portal::sftp::handler::MAX_HANDLES;
    assert_eq!(v["opened"], cap, "{v}");
    assert!(
        v["refusal"]
            .as_str()
            .is_some_and(|m| m.contains("too many open handles")),
        "{v}"
    );
    assert!(
        v["listdir_when_full"]
            .as_str()
            .is_some_and(|m| m.contains("too many open handles")),
        "{v}"
    );
    assert_eq!(v["reopen_after_close"], "ok", "{v}");
    assert_eq!(v["listdir_after_closing"], own_root(), "{v}");
    // A refused open is not audited as a read: one Read entry per handle actually opened.
    let staff = Actor::api(Principal::Staff(srv.demo.staff));
    let reads = srv
        .portal
        .audit_query(
            &staff,
            AuditFilter {
                login: Some(srv.demo.client),
                limit: Some(100_000),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::Read && e.object.ends_with("doc.bin"))
        .count();
    assert_eq!(reads, cap + 1, "Read audit entries");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_leaves_nothing_behind() {
    let _shared = RSS_LOCK.read().await;
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    seed(&srv, "big.bin", 4 << 20).await;
    let v = probe(srv.port(), "vanish", &["--doc", "big.bin"]).await;
    assert_eq!(v["vanished"], true);
    // The upload in progress is dropped and audited as interrupted; nothing becomes visible.
    let staff = Actor::api(Principal::Staff(srv.demo.staff));
    let mut interrupted = false;
    for _ in 0..100 {
        let entries = srv
            .portal
            .audit_query(
                &staff,
                AuditFilter {
                    login: Some(srv.demo.client),
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        interrupted = entries
            .iter()
            .any(|e| e.object.ends_with("vanished.bin") && matches!(e.outcome, Outcome::Failed(_)));
        if interrupted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(interrupted, "the abandoned upload was not audited");
    assert!(
        srv.client_tree()
            .stat(&format!("{MATTER}/{FOLDER}/vanished.bin"))
            .await
            .is_err()
    );
    let v = probe(srv.port(), "handles", &["--doc", "big.bin", "--count", "3"]).await;
    assert_eq!(v["listdir_after_closing"], own_root(), "{v}");
    srv.stop().await;
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_no_memory() {
    let _exclusive = RSS_LOCK.write().await;
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    seed(&srv, "huge.bin", 64 << 20).await;
    // 256 reads of 256 KiB (64 MiB) asked at once, none of the answers read.
    let mut c = Command::new(python());
    c.arg(py_script("sftp_portal.py"))
        .arg("stall")
        .args(["--port", &srv.port().to_string(), "--user", USER])
        .args(["--password", PASSWORD, "--root", MATTER, "--folder", FOLDER])
        .args(["--doc", "huge.bin", "--count", "256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdin = child.stdin.take().unwrap();
    // The baseline is taken once the client is logged in with the document open: the login's
    // Argon2 memory (kept by the allocator, per thread) is not what is measured here.
    let open = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("open in time")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(open, "OPEN");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = vm_rss_kib();
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(vm_rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    stdin.write_all(b"go\n").await.unwrap();
    let stalled = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("stalled in time")
        .unwrap()
        .unwrap_or_default();
    assert!(stalled.starts_with("STALLED"), "{stalled}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled_peak = peak.load(Ordering::Relaxed);
    stdin.write_all(b"\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("probe ends")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sampler.abort();
    let grew = stalled_peak.saturating_sub(base);
    eprintln!(
        "stalled reader: server RSS {} MiB before, peak {} MiB (+{} KiB) with 64 MiB asked, none read",
        base / 1024,
        stalled_peak / 1024,
        grew
    );
    assert!(grew < 16 * 1024, "server RSS grew by {grew} KiB");
    // The server carries on.
    let v = probe(
        srv.port(),
        "handles",
        &["--doc", "huge.bin", "--count", "2"],
    )
    .await;
    assert_eq!(v["listdir_after_closing"], own_root(), "{v}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_time_out_and_new_clients_get_in() {
    let _shared = RSS_LOCK.read().await;
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start_with(|b| b.inactivity_timeout(Duration::from_secs(1))).await;
    let v = probe(srv.port(), "idle", &["--seconds", "3"]).await;
    assert_eq!(v["before"], json!([MATTER.trim_start_matches('/')]), "{v}");
    assert_eq!(v["active_after_idle"], false, "{v}");
    assert_eq!(
        v["new_client"],
        json!([MATTER.trim_start_matches('/')]),
        "{v}"
    );
    srv.stop().await;
}
