//! The full permission matrix of a portal user over SFTP (Python paramiko): a matter type
//! configured through the admin API with one folder per permission set; every operation is allowed
//! exactly where the configuration says and refused with `SSH_FX_PERMISSION_DENIED` elsewhere; a
//! folder without List lists empty. Revoking the grant, or disabling the login, stops an already
//! open session on its next request.

mod sftp_common;

use sdx_portal::Portal;
use sdx_portal::model::{Actor, MatterId, ParticipantId, Permission, Permissions, Principal};
use sdx_portal::tree::{Tree, WriteOptions};
use serde_json::{Value, json};
use sftp_common::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(120);
const BOB: &str = "bob@matrix.test";
const BOB_PASSWORD: &str = "matrix test pass phrase 4711";
const ROOT: &str = "/2026-777 Matrix Test";

/// The folders of the "Matrix" matter type and what the participant type may do in each.
fn folders() -> Vec<(&'static str, Permissions)> {
    use Permission::*;
    let p = |ps: &[Permission]| ps.iter().fold(Permissions::NONE, |a, p| a.with(*p));
    vec![
        ("L", p(&[List])),
        ("LR", p(&[List, Read])),
        ("LRC", p(&[List, Read, Create])),
        ("LRU", p(&[List, Read, Update])),
        ("LRD", p(&[List, Read, Delete])),
        ("LRCD", p(&[List, Read, Create, Delete])),
        ("Full", Permissions::FULL),
        ("RC", p(&[Read, Create])),
        ("C", p(&[Create])),
        ("Hidden", Permissions::NONE),
    ]
}

const SEEDED: [&str; 5] = [
    "existing.txt",
    "victim.txt",
    "mover.txt",
    "pmover.txt",
    "ptarget.txt",
];

struct Matrix {
    matter: MatterId,
    participant: ParticipantId,
    login: sdx_portal::model::LoginId,
    staff_tree: Tree,
}

fn existing_content() -> Vec<u8> {
    pattern(100_000, 5)
}

async fn put_doc(tree: &Tree, path: &str, data: &[u8]) {
    let mut up = tree
        .open_write(path, WriteOptions::upload())
        .await
        .unwrap_or_else(|e| panic!("seed {path}: {e}"));
    up.write(data).await.unwrap();
    up.commit().await.unwrap();
}

async fn set_up(portal: &Portal, staff: Principal) -> Matrix {
    let sys = Actor::system();
    let ptype = portal
        .find_participant_type(&sys, "Client")
        .await
        .unwrap()
        .expect("the demo's Client type");
    let names: Vec<&str> = folders().iter().map(|(n, _)| *n).collect();
    let mt = portal
        .create_matter_type(&sys, "Matrix", &names)
        .await
        .unwrap();
    for (name, perms) in folders() {
        portal
            .set_portal_permissions(&sys, mt, name, ptype, perms)
            .await
            .unwrap();
    }
    let matter = portal
        .create_matter(&sys, "2026-777", "Matrix Test", mt)
        .await
        .unwrap();
    let contact = portal
        .create_contact(&sys, "Bob Matrix", BOB)
        .await
        .unwrap();
    let login = portal
        .create_portal_login(&sys, contact, Some(BOB_PASSWORD))
        .await
        .unwrap();
    let participant = portal
        .add_participant(&sys, matter, contact, ptype)
        .await
        .unwrap();
    portal
        .grant_access(&sys, matter, participant)
        .await
        .unwrap();
    let staff_tree = portal.tree(Actor::api(staff));
    for (folder, _) in folders() {
        for doc in SEEDED {
            let data = if doc == "existing.txt" {
                existing_content()
            } else {
                doc.as_bytes().to_vec()
            };
            put_doc(&staff_tree, &format!("{ROOT}/{folder}/{doc}"), &data).await;
        }
    }
    Matrix {
        matter,
        participant,
        login,
        staff_tree,
    }
}

async fn bob_probe(port: u16, command: &str, args: &[&str]) -> Value {
    let mut c = Command::new(python());
    c.arg(py_script("sftp_portal.py"))
        .arg(command)
        .args(["--port", &port.to_string(), "--user", BOB])
        .args(["--password", BOB_PASSWORD, "--root", ROOT])
        .args(args);
    let out = run(&mut c, LIMIT).await;
    assert!(out.status.success(), "{command}: {}", out.text());
    serde_json::from_str(out.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{command} output: {e}: {}", out.text()))
}

fn allowed(ok: bool) -> Value {
    json!(if ok { "ok" } else { "denied" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_is_exactly_the_configuration() {
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    let m = set_up(&srv.portal, Principal::Staff(srv.demo.staff)).await;
    let names: Vec<&str> = folders().iter().map(|(n, _)| *n).collect();
    let v = bob_probe(srv.port(), "matrix", &["--folders", &names.join(",")]).await;
    let want_content = json!({ "sha256": sha256_hex(&existing_content()) });
    for (folder, perms) in folders() {
        let r = &v[folder];
        let has = |p: Permission| perms.contains(p);
        let ctx = format!("folder {folder} ({perms:?}): {r}");
        if perms.is_empty() {
            // Not configured: the folder does not exist for this user.
            for op in [
                "list",
                "get",
                "put_new",
                "put_over",
                "rm",
                "rename",
                "posix_rename",
            ] {
                assert_eq!(r[op], "nosuch", "{op} in {ctx}");
            }
            continue;
        }
        // List: the documents, or an empty listing.
        let names = r["list"]["names"]
            .as_array()
            .unwrap_or_else(|| panic!("list failed in {ctx}"));
        if has(Permission::List) {
            assert!(names.contains(&json!("existing.txt")), "{ctx}");
        } else {
            assert!(names.is_empty(), "{ctx}");
        }
        // get needs Read.
        if has(Permission::Read) {
            assert_eq!(r["get"], want_content, "{ctx}");
        } else {
            assert_eq!(r["get"], "denied", "{ctx}");
        }
        assert_eq!(r["put_new"], allowed(has(Permission::Create)), "{ctx}");
        assert_eq!(r["put_over"], allowed(has(Permission::Update)), "{ctx}");
        assert_eq!(r["rm"], allowed(has(Permission::Delete)), "{ctx}");
        // A rename is a Delete at the source and a Create at the target (plus Update when it
        // replaces a document).
        let mv = has(Permission::Delete) && has(Permission::Create);
        assert_eq!(r["rename"], allowed(mv), "{ctx}");
        assert_eq!(
            r["posix_rename"],
            allowed(mv && has(Permission::Update)),
            "{ctx}"
        );
        // Portal users never create folders.
        assert_eq!(r["mkdir"], "denied", "{ctx}");

        // What the portal holds agrees with what the client was told.
        let st = &m.staff_tree;
        let exists = |name: &'static str| {
            let path = format!("{ROOT}/{folder}/{name}");
            async move { st.stat(&path).await.is_ok() }
        };
        assert_eq!(exists("new.txt").await, has(Permission::Create), "{ctx}");
        assert_eq!(
            exists("victim.txt").await,
            !has(Permission::Delete),
            "{ctx}"
        );
        assert_eq!(exists("moved.txt").await, mv, "{ctx}");
        assert_eq!(exists("mover.txt").await, !mv, "{ctx}");
        let replaced = st
            .stat(&format!("{ROOT}/{folder}/existing.txt"))
            .await
            .unwrap()
            .len;
        let want_len = if has(Permission::Update) {
            "replaced content".len() as u64
        } else {
            existing_content().len() as u64
        };
        assert_eq!(replaced, want_len, "{ctx}");
    }
    let _ = (m.matter, m.participant, m.login);
    srv.stop().await;
}

/// Runs the `live` probe: opens handles, waits, lets `change` alter access, then tries again on
/// the same session.
async fn live_session(port: u16, folder: &str, change: impl AsyncFnOnce()) -> Value {
    let mut c = Command::new(python());
    c.arg(py_script("sftp_portal.py"))
        .arg("live")
        .args(["--port", &port.to_string(), "--user", BOB])
        .args([
            "--password",
            BOB_PASSWORD,
            "--root",
            ROOT,
            "--folder",
            folder,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("python");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(LIMIT, stdout.next_line())
        .await
        .expect("the probe got ready in time")
        .unwrap();
    if ready.as_deref() != Some("READY") {
        let out = child.wait_with_output().await.unwrap();
        panic!(
            "probe not ready: {ready:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    change().await;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"GO\n").await.unwrap();
    drop(stdin);
    let last = tokio::time::timeout(LIMIT, async {
        let mut last = None;
        while let Some(l) = stdout.next_line().await.unwrap() {
            last = Some(l);
        }
        last
    })
    .await
    .expect("the probe finished in time");
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("the probe exited")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(last.as_deref().unwrap_or_default()).unwrap()
}

fn assert_before_ok(v: &Value) {
    let b = &v["before"];
    assert_eq!(
        b["list_root"]["names"],
        json!(["2026-777 Matrix Test"]),
        "{v}"
    );
    assert!(b["list"]["names"].is_array(), "{v}");
    assert_eq!(b["read"]["len"], 10, "{v}");
    assert_eq!(b["write"], "ok", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_grant_or_disabling_the_login_stops_an_open_session() {
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    let m = set_up(&srv.portal, Principal::Staff(srv.demo.staff)).await;
    let sys = Actor::system();
    let during = format!("{ROOT}/Full/during.txt");

    // 1. Revoke the grant while the session is open.
    let portal = srv.portal.clone();
    let v = live_session(srv.port(), "Full", async || {
        assert!(
            portal
                .revoke_access(&sys, m.matter, m.participant)
                .await
                .unwrap()
        );
    })
    .await;
    assert_before_ok(&v);
    let a = &v["after"];
    // The matter is gone from the root, its folders don't exist any more, an open download and
    // an open upload stop.
    assert_eq!(a["list_root"]["names"], json!([]), "{v}");
    assert_eq!(a["list"], "nosuch", "{v}");
    assert_eq!(a["read"], "denied", "{v}");
    // A write into an upload that is already open is only staged (the tree re-checks uploads
    // when they commit); the commit at close is refused and nothing becomes visible.
    assert_ne!(a["close_upload"], "ok", "{v}");
    assert_eq!(a["stat"], "nosuch", "{v}");
    assert_eq!(a["open_new"], "nosuch", "{v}");
    assert!(m.staff_tree.stat(&during).await.is_err(), "{v}");

    // 2. Grant again: a new session works.
    srv.portal
        .grant_access(&sys, m.matter, m.participant)
        .await
        .unwrap();
    // 3. Disable the login while the session is open.
    let portal = srv.portal.clone();
    let login = m.login;
    let v = live_session(srv.port(), "Full", async || {
        portal.set_login_disabled(&sys, login, true).await.unwrap();
    })
    .await;
    assert_before_ok(&v);
    let a = &v["after"];
    for op in ["list_root", "list", "read", "stat", "open_new"] {
        assert_eq!(a[op], "denied", "{op}: {v}");
    }
    assert_ne!(a["close_upload"], "ok", "{v}");
    assert!(m.staff_tree.stat(&during).await.is_err(), "{v}");
    srv.stop().await;
}
