//! The SFTP request handler driven directly (no network): each request is a tree operation, so the
//! portal's permissions decide the status codes.
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use russh_sftp::server::Handler;
use sdx_portal::model::{Actor, Channel};
use sdx_portal::sftp::handler::PortalSftp;
use sdx_portal::{Portal, demo};

const CD: &str = "/2026-001 Smith v Jones/Client Documents";

async fn session() -> (Portal, PortalSftp) {
    let portal = Portal::in_memory().await.unwrap();
    demo::provision(&portal).await.unwrap();
    let who = portal
        .authenticate_password(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
        .await
        .unwrap();
    let s = PortalSftp::new(portal.tree(Actor::new(who, Channel::Sftp, None)));
    (portal, s)
}

fn ssh_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

#[tokio::test]
async fn out_of_order_writes_commit_on_close_and_read_back() {
    let (_p, mut s) = session().await;
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let h = s
        .open(1, format!("{CD}/a.bin"), flags, FileAttributes::empty())
        .await
        .unwrap()
        .handle;
    s.write(2, h.clone(), 5, b"world".to_vec()).await.unwrap();
    s.write(3, h.clone(), 0, b"hello".to_vec()).await.unwrap();
    // Nothing visible before close.
    assert!(s.stat(4, format!("{CD}/a.bin")).await.is_err());
    s.close(5, h).await.unwrap();
    let st = s.stat(6, format!("{CD}/a.bin")).await.unwrap();
    assert_eq!(st.attrs.size, Some(10));
    let r = s
        .open(
            7,
            format!("{CD}/a.bin"),
            OpenFlags::READ,
            FileAttributes::empty(),
        )
        .await
        .unwrap()
        .handle;
    assert_eq!(
        s.read(8, r.clone(), 0, 100).await.unwrap().data,
        b"helloworld"
    );
    let eof = s.read(9, r.clone(), 10, 100).await.unwrap_err();
    assert_eq!(eof.status_code, StatusCode::Eof);
    s.close(10, r).await.unwrap();
}

#[tokio::test]
async fn refusals_map_to_permission_denied_with_a_reason() {
    let (_p, mut s) = session().await;
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let e = s
        .open(
            1,
            "/2026-001 Smith v Jones/Correspondence/x".into(),
            flags,
            FileAttributes::empty(),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.status_code, StatusCode::PermissionDenied);
    assert!(e.error_message.unwrap_or_default().contains("Create"));
    let e = s
        .mkdir(2, format!("{CD}/new"), FileAttributes::empty())
        .await
        .unwrap_err();
    assert_eq!(e.status_code, StatusCode::PermissionDenied);
    let e = s
        .stat(3, "/2026-001 Smith v Jones/Internal".into())
        .await
        .unwrap_err();
    assert_eq!(e.status_code, StatusCode::NoSuchFile);
    let e = s.symlink(4, "/a".into(), "/b".into()).await.unwrap_err();
    assert_eq!(e.status_code, StatusCode::PermissionDenied);
}

#[tokio::test]
async fn realpath_is_absolute_and_clamped_and_listing_has_longnames() {
    let (_p, mut s) = session().await;
    let n = s.realpath(1, "../../..".into()).await.unwrap();
    assert_eq!(n.files[0].filename, "/");
    let n = s.realpath(2, ".".into()).await.unwrap();
    assert_eq!(n.files[0].filename, "/");
    let h = s
        .opendir(3, "/2026-001 Smith v Jones".into())
        .await
        .unwrap()
        .handle;
    let names = s.readdir(4, h.clone()).await.unwrap();
    assert!(
        names.files.iter().all(|f| f.longname.starts_with('d')),
        "{:?}",
        names.files
    );
    assert_eq!(
        s.readdir(5, h).await.unwrap_err().status_code,
        StatusCode::Eof
    );
}

#[tokio::test]
async fn posix_rename_goes_through_the_policy() {
    let (_p, mut s) = session().await;
    let tr = format!("{CD}/Tax Returns");
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    for (i, name) in ["a.filepart", "a"].iter().enumerate() {
        let h = s
            .open(
                i as u32,
                format!("{tr}/{name}"),
                flags,
                FileAttributes::empty(),
            )
            .await
            .unwrap()
            .handle;
        s.write(10, h.clone(), 0, name.as_bytes().to_vec())
            .await
            .unwrap();
        s.close(11, h).await.unwrap();
    }
    // WinSCP: upload to .filepart, then rename over the target (Full permission there).
    let mut data = ssh_str(&format!("{tr}/a.filepart"));
    data.extend(ssh_str(&format!("{tr}/a")));
    s.extended(12, "posix-rename@openssh.com".into(), data)
        .await
        .unwrap();
    assert_eq!(
        s.stat(13, format!("{tr}/a")).await.unwrap().attrs.size,
        Some(10)
    );
    // Client Documents has no Delete: renaming out of it is refused.
    let h = s
        .open(14, format!("{CD}/b"), flags, FileAttributes::empty())
        .await
        .unwrap()
        .handle;
    s.close(15, h).await.unwrap();
    let e = s
        .rename(16, format!("{CD}/b"), format!("{CD}/c"))
        .await
        .unwrap_err();
    assert_eq!(e.status_code, StatusCode::PermissionDenied);
}

async fn upload(s: &mut PortalSftp, path: &str, data: &[u8]) {
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let h = s
        .open(90, path.into(), flags, FileAttributes::empty())
        .await
        .unwrap()
        .handle;
    s.write(91, h.clone(), 0, data.to_vec()).await.unwrap();
    s.close(92, h).await.unwrap();
}

async fn content(s: &mut PortalSftp, path: &str) -> Vec<u8> {
    let h = s
        .open(93, path.into(), OpenFlags::READ, FileAttributes::empty())
        .await
        .unwrap()
        .handle;
    let mut out = Vec::new();
    while let Ok(d) = s.read(94, h.clone(), out.len() as u64, 65536).await {
        out.extend(d.data);
    }
    s.close(95, h).await.unwrap();
    out
}

#[tokio::test]
async fn open_without_create_needs_an_existing_document_and_append_writes_at_the_end() {
    let (_p, mut s) = session().await;
    let tr = format!("{CD}/Tax Returns");
    // No SSH_FXF_CREAT: a missing document is "no such file", and nothing is created.
    let e = s
        .open(
            1,
            format!("{tr}/missing.txt"),
            OpenFlags::READ | OpenFlags::WRITE,
            FileAttributes::empty(),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.status_code, StatusCode::NoSuchFile);
    assert!(s.stat(2, format!("{tr}/missing.txt")).await.is_err());
    // An existing one opens read+write without truncation.
    upload(&mut s, &format!("{tr}/log.txt"), b"0123456789").await;
    let h = s
        .open(
            3,
            format!("{tr}/log.txt"),
            OpenFlags::READ | OpenFlags::WRITE,
            FileAttributes::empty(),
        )
        .await
        .unwrap()
        .handle;
    s.write(4, h.clone(), 2, b"ab".to_vec()).await.unwrap();
    s.close(5, h).await.unwrap();
    assert_eq!(
        content(&mut s, &format!("{tr}/log.txt")).await,
        b"01ab456789"
    );
    // SSH_FXF_APPEND: the offset is ignored.
    let h = s
        .open(
            6,
            format!("{tr}/log.txt"),
            OpenFlags::WRITE | OpenFlags::APPEND,
            FileAttributes::empty(),
        )
        .await
        .unwrap()
        .handle;
    s.write(7, h.clone(), 0, b"XY".to_vec()).await.unwrap();
    s.close(8, h).await.unwrap();
    assert_eq!(
        content(&mut s, &format!("{tr}/log.txt")).await,
        b"01ab456789XY"
    );
}

#[tokio::test]
async fn setstat_size_truncates_through_the_policy_and_read_handles_cant_be_truncated() {
    let (_p, mut s) = session().await;
    let tr = format!("{CD}/Tax Returns");
    upload(&mut s, &format!("{tr}/t.txt"), b"hello world").await;
    let size = |n| {
        let mut a = FileAttributes::empty();
        a.size = Some(n);
        a
    };
    s.setstat(1, format!("{tr}/t.txt"), size(5)).await.unwrap();
    assert_eq!(content(&mut s, &format!("{tr}/t.txt")).await, b"hello");
    s.setstat(2, format!("{tr}/t.txt"), size(0)).await.unwrap();
    assert_eq!(
        s.stat(3, format!("{tr}/t.txt")).await.unwrap().attrs.size,
        Some(0)
    );
    // Missing document: no such file (and nothing created).
    let e = s
        .setstat(4, format!("{tr}/none.txt"), size(3))
        .await
        .unwrap_err();
    assert_eq!(e.status_code, StatusCode::NoSuchFile);
    assert!(s.stat(5, format!("{tr}/none.txt")).await.is_err());
    // Client Documents: Create but no Update, so no truncation of an existing document.
    upload(&mut s, &format!("{CD}/keep.txt"), b"keep me").await;
    let e = s
        .setstat(6, format!("{CD}/keep.txt"), size(0))
        .await
        .unwrap_err();
    assert_eq!(e.status_code, StatusCode::PermissionDenied);
    assert_eq!(content(&mut s, &format!("{CD}/keep.txt")).await, b"keep me");
    // ftruncate on a handle opened for reading.
    let h = s
        .open(
            7,
            format!("{CD}/keep.txt"),
            OpenFlags::READ,
            FileAttributes::empty(),
        )
        .await
        .unwrap()
        .handle;
    let e = s.fsetstat(8, h.clone(), size(0)).await.unwrap_err();
    assert_eq!(e.status_code, StatusCode::PermissionDenied);
    s.close(9, h).await.unwrap();
    assert_eq!(content(&mut s, &format!("{CD}/keep.txt")).await, b"keep me");
}

#[tokio::test]
async fn remove_is_for_documents_and_rmdir_for_folders() {
    let (p, mut s) = session().await;
    let tr = format!("{CD}/Tax Returns");
    upload(&mut s, &format!("{tr}/doc.txt"), b"doc").await;
    // rmdir of a document must not trash it.
    let e = s.rmdir(1, format!("{tr}/doc.txt")).await.unwrap_err();
    assert_eq!(e.status_code, StatusCode::Failure);
    assert!(s.stat(2, format!("{tr}/doc.txt")).await.is_ok());
    // Staff may delete folders, but not through REMOVE (rm), which would take the whole folder.
    let staff = p
        .authenticate_password(demo::DEMO_STAFF_EMAIL, demo::DEMO_PASSWORD)
        .await
        .unwrap();
    let mut st = PortalSftp::new(p.tree(Actor::new(staff, Channel::Sftp, None)));
    let e = st.remove(3, tr.clone()).await.unwrap_err();
    assert_eq!(e.status_code, StatusCode::Failure);
    assert!(st.stat(4, format!("{tr}/doc.txt")).await.is_ok());
    // The document itself is removed with REMOVE.
    st.remove(5, format!("{tr}/doc.txt")).await.unwrap();
    assert!(st.stat(6, format!("{tr}/doc.txt")).await.is_err());
}

async fn client_entries(p: &Portal, demo: &demo::Demo) -> Vec<sdx_portal::audit::AuditEntry> {
    let staff = Actor::api(sdx_portal::model::Principal::Staff(demo.staff));
    let mut v = p
        .audit_query(
            &staff,
            sdx_portal::audit::AuditFilter {
                login: Some(demo.client),
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    v.sort_by_key(|e| e.seq);
    v
}

#[tokio::test]
async fn stat_probes_are_audited_in_the_commit_of_the_next_operation() {
    use sdx_portal::audit::{AuditAction, Outcome};
    let (p, mut s) = session().await;
    let demo = demo::provision(&p).await.unwrap();
    let path = format!("{CD}/probed.bin");
    upload(&mut s, &path, b"probe me").await;
    // What OpenSSH's `get` sends: LSTAT, STAT, OPEN; plus a probe of a missing name.
    let (c0, _) = p.store().stats();
    s.lstat(1, path.clone()).await.unwrap();
    s.stat(2, path.clone()).await.unwrap();
    let missing = s.stat(3, format!("{CD}/nope.bin")).await.unwrap_err();
    assert_eq!(missing.status_code, StatusCode::NoSuchFile);
    let h = s
        .open(4, path.clone(), OpenFlags::READ, FileAttributes::empty())
        .await
        .unwrap()
        .handle;
    // The open answers before its entry is committed; the first READ waits for that commit.
    let data = s.read(5, h.clone(), 0, 65_536).await.unwrap().data;
    assert_eq!(data, b"probe me");
    let (c1, _) = p.store().stats();
    // One commit for the open and its three probes (two if the machine stalled past the flush
    // delay between the probes and the open); each probe on its own would be three more.
    assert!(c1 - c0 <= 2, "{} commits for 3 probes and an open", c1 - c0);
    s.close(7, h).await.unwrap();
    let entries = client_entries(&p, &demo).await;
    let tail: Vec<_> = entries
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(|e| {
            (
                e.action.clone(),
                e.object.rsplit('/').next().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        vec![
            (AuditAction::Stat, "probed.bin".to_string()),
            (AuditAction::Stat, "probed.bin".to_string()),
            (AuditAction::Stat, "nope.bin".to_string()),
            (AuditAction::Read, "probed.bin".to_string()),
        ],
        "every probe recorded, in order, before the read"
    );
    let nope = entries.iter().rev().nth(1).unwrap();
    assert!(!matches!(nope.outcome, Outcome::Allowed), "{nope:?}");

    // A probe followed by nothing is committed on its own after a short delay.
    let before = client_entries(&p, &demo).await.len();
    s.stat(6, format!("{CD}/alone.bin")).await.unwrap_err();
    let mut found = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let now = client_entries(&p, &demo).await;
        if now.len() > before {
            let last = now.last().unwrap();
            assert_eq!(last.action, AuditAction::Stat);
            assert!(last.object.ends_with("alone.bin"), "{last:?}");
            found = true;
            break;
        }
    }
    assert!(found, "the lone probe was never audited");
}

async fn staff_put(staff: &sdx_portal::tree::Tree, path: &str, data: &[u8]) {
    let mut up = staff
        .open_write(path, sdx_portal::tree::WriteOptions::upload())
        .await
        .unwrap();
    up.write(data).await.unwrap();
    up.commit().await.unwrap();
}

/// A session remembers what its last probe found only while nothing has changed: a document
/// uploaded, a grant revoked in between is seen by the next probe and by the next open.
#[tokio::test]
async fn a_remembered_probe_never_outlives_a_change() {
    let (p, mut s) = session().await;
    let demo = demo::provision(&p).await.unwrap();
    let staff = p.tree(Actor::api(sdx_portal::model::Principal::Staff(demo.staff)));
    let path = format!("{CD}/later.bin");

    // Missing, then created by someone else: the next probe (same path) sees it.
    let e = s.lstat(1, path.clone()).await.unwrap_err();
    assert_eq!(e.status_code, StatusCode::NoSuchFile);
    staff_put(&staff, &path, b"twelve bytes").await;
    let a = s.stat(2, path.clone()).await.unwrap();
    assert_eq!(a.attrs.size, Some(12));

    // Found, then changed by someone else: the next probe shows the new size.
    staff_put(&staff, &path, b"five!").await;
    assert_eq!(s.stat(3, path.clone()).await.unwrap().attrs.size, Some(5));
    // Probed (which also prepares the open), then changed: the download gets the new content.
    staff_put(&staff, &path, b"changed again").await;
    assert_eq!(content(&mut s, &path).await, b"changed again");
    s.lstat(31, path.clone()).await.unwrap();
    s.stat(32, path.clone()).await.unwrap();
    assert_eq!(content(&mut s, &path).await, b"changed again");

    // Probed as missing, then Create withdrawn from the folder: the upload is refused.
    use sdx_portal::model::{Permission, Permissions};
    let sys = Actor::system();
    let fresh = format!("{CD}/fresh.bin");
    s.stat(4, fresh.clone()).await.unwrap_err();
    let general = p.find_matter_type(&sys, "General").await.unwrap().unwrap();
    let client = p
        .find_participant_type(&sys, "Client")
        .await
        .unwrap()
        .unwrap();
    let list_read = Permissions::NONE
        .with(Permission::List)
        .with(Permission::Read);
    p.set_portal_permissions(&sys, general, "Client Documents", client, list_read)
        .await
        .unwrap();
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let e = s
        .open(5, fresh.clone(), flags, FileAttributes::empty())
        .await
        .unwrap_err();
    assert_eq!(e.status_code, StatusCode::PermissionDenied, "{e:?}");

    // Found, then the grant revoked: the next probe of it is refused.
    s.stat(6, path.clone()).await.unwrap();
    for part in p.participants(&sys, demo.matter).await.unwrap() {
        if part.portal_access {
            p.revoke_access(&sys, demo.matter, part.id).await.unwrap();
        }
    }
    let e = s
        .open(61, path.clone(), OpenFlags::READ, FileAttributes::empty())
        .await
        .unwrap_err();
    assert_eq!(e.status_code, StatusCode::NoSuchFile, "{e:?}");
    let e = s.stat(7, path.clone()).await.unwrap_err();
    assert_eq!(e.status_code, StatusCode::NoSuchFile, "{e:?}");
}
