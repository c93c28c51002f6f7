//! Issue 2, audit trail and storage rules: what an entry records, staff queries, tamper evidence
//! (edited, deleted, reordered entries found by `audit_verify` on a redb file edited behind the
//! portal's back), the schema version check.

mod common;

use common::*;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use sdx_portal::audit::{AuditAction, AuditFilter, Outcome};
use sdx_portal::model::*;
use sdx_portal::store::SCHEMA_VERSION;
use sdx_portal::{Error, Portal, PortalBuilder};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const AUDIT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");

#[tokio::test]
async fn every_operation_is_audited_with_time_actor_matter_object_action_channel_remote_outcome() {
    let fx = Fx::new().await;
    let read_only = Permissions::NONE
        .with(Permission::List)
        .with(Permission::Read);
    fx.set_perms(fx.general, CD, fx.client, read_only).await;
    let (m, mp) = fx.matter("2026-200", "Audit", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let doc = format!("{mp}/{CD}/report.pdf");
    let t0 = now_millis();

    let staff_addr: std::net::SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let staff_dav = fx.portal.tree(Actor::new(
        Principal::Staff(fx.staff_login),
        Channel::WebDav,
        Some(staff_addr),
    ));
    let e = put(&staff_dav, &doc, b"%PDF").await.unwrap();
    let d = e.document.unwrap();

    let user_addr: std::net::SocketAddr = "[::1]:40002".parse().unwrap();
    let ut = fx.portal.tree(Actor::new(
        c.actor.principal,
        Channel::Sftp,
        Some(user_addr),
    ));
    assert_eq!(read_all(&ut, &doc).await.unwrap(), b"%PDF");
    let denied = put(&ut, &doc, b"changed").await;
    assert!(is_denied_for(&denied, Permission::Update));
    let t1 = now_millis();

    // By document: the staff upload, the user's read and the refused update, newest first.
    let by_doc = fx
        .portal
        .audit_query(
            &fx.staff,
            AuditFilter {
                matter: Some(m),
                document: Some(d),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let actions: Vec<_> = by_doc.iter().map(|e| e.action.clone()).collect();
    assert_eq!(
        actions,
        [AuditAction::Update, AuditAction::Read, AuditAction::Create]
    );
    let (upd, read, create) = (&by_doc[0], &by_doc[1], &by_doc[2]);
    assert!(matches!(upd.outcome, Outcome::Denied(ref why) if why.contains("Update")));
    assert_eq!(read.outcome, Outcome::Allowed);
    assert_eq!(create.outcome, Outcome::Allowed);
    assert_eq!(create.actor, Principal::Staff(fx.staff_login));
    assert_eq!(create.channel, Channel::WebDav);
    assert_eq!(create.remote.as_deref(), Some("127.0.0.1:40001"));
    assert_eq!(read.actor, c.actor.principal);
    assert_eq!(read.channel, Channel::Sftp);
    assert_eq!(read.remote.as_deref(), Some("[::1]:40002"));
    for e in &by_doc {
        assert_eq!(e.matter, Some(m));
        assert_eq!(e.document, Some(d));
        assert!(e.object.contains("report.pdf"), "{}", e.object);
        assert!(
            e.at >= t0 && e.at <= t1 + 1000,
            "time {} not in [{t0}, {t1}]",
            e.at
        );
    }
    assert!(upd.seq > read.seq && read.seq > create.seq);

    // By user: only that login's activity.
    let by_user = fx.audit_of(c.login).await;
    assert_eq!(by_user.len(), 2);
    assert!(by_user.iter().all(|e| e.actor == c.actor.principal));
    // By matter: staff set-up (grant) and tree activity on the matter.
    let by_matter = fx.audit_of_matter(m).await;
    assert!(
        by_matter
            .iter()
            .any(|e| e.action == AuditAction::Admin("grant_access".into()))
    );
    assert!(by_matter.iter().any(|e| e.seq == upd.seq));
    assert!(by_matter.iter().all(|e| e.matter == Some(m)));
    // `since` cuts older entries.
    let recent = fx
        .portal
        .audit_query(
            &fx.staff,
            AuditFilter {
                login: Some(c.login),
                since: Some(upd.at),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(recent.iter().all(|e| e.at >= upd.at) && !recent.is_empty());
}

#[tokio::test]
async fn authentication_attempts_and_refusals_are_audited() {
    let fx = Fx::new().await;
    let (m, _) = fx.matter("2026-201", "Auth", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    fx.portal
        .set_password(&fx.firm, c.login, "correct horse battery")
        .await
        .unwrap();
    let bad = fx
        .portal
        .authenticate_password("carol@client.test", "wrong")
        .await;
    assert!(matches!(bad, Err(Error::AuthenticationFailed)));
    let latest = fx
        .portal
        .audit_query(&fx.staff, AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(latest[0].action, AuditAction::Login);
    assert!(!allowed(&latest[0].outcome));
    assert!(latest[0].object.contains("carol@client.test"));
    let unknown = fx.portal.authenticate_password("nobody@x.test", "x").await;
    assert!(matches!(unknown, Err(Error::AuthenticationFailed)));
    let ok = fx
        .portal
        .authenticate_password("carol@client.test", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(ok, c.actor.principal);
    let mine = fx.audit_of(c.login).await;
    assert_eq!(mine[0].action, AuditAction::Login);
    assert_eq!(mine[0].outcome, Outcome::Allowed);
    let all = fx
        .portal
        .audit_query(&fx.staff, AuditFilter::default())
        .await
        .unwrap();
    let logins = all
        .iter()
        .filter(|e| e.action == AuditAction::Login)
        .count();
    assert_eq!(logins, 3);
}

// ---------- on-disk trail, edited behind the portal's back ----------

/// Opens the redb file directly once the portal has let go of it.
fn open_raw(path: &Path) -> redb::Database {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match redb::Database::open(path) {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the portal did not let go of {}: {e}", path.display()),
        }
    }
}

/// Drops the portal and waits for its writer thread to close the database.
async fn close(p: Portal) {
    let path = p.data_dir().expect("on disk").join("portal.redb");
    drop(p);
    tokio::task::spawn_blocking(move || drop(open_raw(&path)))
        .await
        .unwrap();
}

/// Fills an on-disk portal with a little history; returns the staff login.
async fn make_trail(dir: &Path) -> LoginId {
    let portal = PortalBuilder::new(dir).open().await.unwrap();
    let fx = Fx::with_portal(portal).await;
    fx.set_perms(fx.general, CD, fx.client, Permissions::FULL)
        .await;
    let (m, mp) = fx.matter("2026-210", "Tamper", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let t = c.tree(&fx.portal);
    for i in 0..5 {
        put(&t, &format!("{mp}/{CD}/doc{i}.txt"), b"x")
            .await
            .unwrap();
    }
    put(&t, &format!("{mp}/{CD}/marker-secret.txt"), b"y")
        .await
        .unwrap();
    t.list(&format!("{mp}/{CD}")).await.unwrap();
    assert!(t.mkdir(&format!("{mp}/{CD}/nope")).await.is_err());
    let staff = fx.staff_login;
    drop(t);
    close(fx.portal).await;
    staff
}

fn copy_db(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("portal.redb"), to.join("portal.redb")).unwrap();
    to.to_path_buf()
}

fn raw_entries(db: &redb::Database) -> Vec<(Vec<u8>, Vec<u8>)> {
    let r = db.begin_read().unwrap();
    let t = r.open_table(AUDIT).unwrap();
    t.iter()
        .unwrap()
        .map(|x| {
            let (k, v) = x.unwrap();
            (k.value().to_vec(), v.value().to_vec())
        })
        .collect()
}

fn seq_of(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().expect("8-byte key"))
}

async fn verify(dir: &Path, staff: LoginId) -> sdx_portal::audit::VerifyReport {
    let p = PortalBuilder::new(dir).open().await.unwrap();
    let r = p
        .audit_verify(&Actor::api(Principal::Staff(staff)))
        .await
        .unwrap();
    close(p).await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_catches_edited_deleted_and_reordered_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let staff = make_trail(&orig).await;
    let total = {
        let db = open_raw(&orig.join("portal.redb"));
        let n = raw_entries(&db).len() as u64;
        assert!(n > 12, "a trail to tamper with: {n} entries");
        n
    };

    // Untouched: verifies, every entry checked.
    let pristine = copy_db(&orig, &tmp.path().join("pristine"));
    let rep = verify(&pristine, staff).await;
    assert!(rep.ok(), "{rep:?}");
    assert_eq!(rep.entries, total);

    // Edited: one byte of one entry's object text.
    let edited = copy_db(&orig, &tmp.path().join("edited"));
    let edited_seq = {
        let db = open_raw(&edited.join("portal.redb"));
        let needle = b"marker-secret";
        let (k, mut v) = raw_entries(&db)
            .into_iter()
            .find(|(_, v)| v.windows(needle.len()).any(|w| w == needle))
            .expect("an entry naming the marker");
        let pos = v.windows(needle.len()).position(|w| w == needle).unwrap();
        v[pos] = b'M';
        let w = db.begin_write().unwrap();
        w.open_table(AUDIT)
            .unwrap()
            .insert(k.as_slice(), v.as_slice())
            .unwrap();
        w.commit().unwrap();
        seq_of(&k)
    };
    let rep = verify(&edited, staff).await;
    let problem = rep.problem.clone().expect("the edit is found");
    assert!(
        problem.contains(&format!("entry {edited_seq}")),
        "{problem}"
    );
    assert!(problem.contains("edited"), "{problem}");
    assert_eq!(rep.entries, edited_seq - 1);

    // Deleted: one entry from the middle.
    let deleted = copy_db(&orig, &tmp.path().join("deleted"));
    let gone = total / 2;
    {
        let db = open_raw(&deleted.join("portal.redb"));
        let w = db.begin_write().unwrap();
        let removed = w
            .open_table(AUDIT)
            .unwrap()
            .remove(gone.to_be_bytes().as_slice())
            .unwrap()
            .is_some();
        assert!(removed);
        w.commit().unwrap();
    }
    let rep = verify(&deleted, staff).await;
    let problem = rep.problem.clone().expect("the deletion is found");
    assert!(
        problem.contains(&format!("entry {gone} is missing")),
        "{problem}"
    );

    // Reordered: two neighbouring entries swapped.
    let reordered = copy_db(&orig, &tmp.path().join("reordered"));
    let a = total / 3;
    {
        let db = open_raw(&reordered.join("portal.redb"));
        let all = raw_entries(&db);
        let va = all.iter().find(|(k, _)| seq_of(k) == a).unwrap().1.clone();
        let vb = all
            .iter()
            .find(|(k, _)| seq_of(k) == a + 1)
            .unwrap()
            .1
            .clone();
        assert_ne!(va, vb);
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(AUDIT).unwrap();
            t.insert(a.to_be_bytes().as_slice(), vb.as_slice()).unwrap();
            t.insert((a + 1).to_be_bytes().as_slice(), va.as_slice())
                .unwrap();
        }
        w.commit().unwrap();
    }
    let rep = verify(&reordered, staff).await;
    let problem = rep.problem.clone().expect("the swap is found");
    assert!(problem.contains(&format!("entry {a}")), "{problem}");
    assert!(problem.contains("reordered"), "{problem}");

    // The untouched trail still verifies after a restart and more activity: the chain continues.
    let p = PortalBuilder::new(&pristine).open().await.unwrap();
    let staff_actor = Actor::api(Principal::Staff(staff));
    p.create_participant_type(&staff_actor, "Expert")
        .await
        .unwrap();
    let rep = p.audit_verify(&staff_actor).await.unwrap();
    assert!(rep.ok(), "{rep:?}");
    // total + the earlier verify + create_participant_type.
    assert_eq!(rep.entries, total + 2);
    close(p).await;
}

#[tokio::test]
async fn completed_operations_and_their_audit_entries_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let staff = make_trail(&dir).await;
    let p = PortalBuilder::new(&dir).open().await.unwrap();
    let sa = Actor::api(Principal::Staff(staff));
    let ms = p.matters(&sa).await.unwrap();
    assert_eq!(ms.len(), 1);
    let entries = p
        .audit_query(
            &sa,
            AuditFilter {
                matter: Some(ms[0].id),
                limit: Some(100_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let creates = entries
        .iter()
        .filter(|e| e.action == AuditAction::Create && allowed(&e.outcome))
        .count();
    assert_eq!(creates, 6, "all six uploads were durably audited");
    assert!(
        entries
            .iter()
            .any(|e| e.action == AuditAction::Mkdir && matches!(e.outcome, Outcome::Denied(_)))
    );
    close(p).await;
}

#[tokio::test]
async fn a_database_from_a_newer_schema_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let p = PortalBuilder::new(&dir).open().await.unwrap();
    p.create_participant_type(&Actor::system(), "Client")
        .await
        .unwrap();
    close(p).await;
    {
        let db = open_raw(&dir.join("portal.redb"));
        let r = db.begin_read().unwrap();
        let v = r
            .open_table(META)
            .unwrap()
            .get(b"schema_version".as_slice())
            .unwrap()
            .map(|v| v.value().to_vec());
        assert_eq!(
            v,
            Some(SCHEMA_VERSION.to_be_bytes().to_vec()),
            "the version is recorded"
        );
        drop(r);
        let w = db.begin_write().unwrap();
        w.open_table(META)
            .unwrap()
            .insert(
                b"schema_version".as_slice(),
                (SCHEMA_VERSION + 1).to_be_bytes().as_slice(),
            )
            .unwrap();
        w.commit().unwrap();
    }
    let r = PortalBuilder::new(&dir).open().await;
    match r {
        Err(Error::SchemaTooNew { found, supported }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let msg = Error::SchemaTooNew {
        found: SCHEMA_VERSION + 1,
        supported: SCHEMA_VERSION,
    }
    .to_string();
    assert!(msg.contains("upgrade"), "{msg}");
    // Put back, it opens again.
    {
        let db = open_raw(&dir.join("portal.redb"));
        let w = db.begin_write().unwrap();
        w.open_table(META)
            .unwrap()
            .insert(
                b"schema_version".as_slice(),
                SCHEMA_VERSION.to_be_bytes().as_slice(),
            )
            .unwrap();
        w.commit().unwrap();
    }
    let p = PortalBuilder::new(&dir).open().await.unwrap();
    close(p).await;
}

#[tokio::test]
async fn an_abandoned_upload_is_audited_once_and_leaves_nothing() {
    let fx = Fx::new().await;
    fx.set_perms(fx.general, CD, fx.client, Permissions::FULL)
        .await;
    let (m, mp) = fx.matter("2026-220", "Abandon", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let t = c.tree(&fx.portal);

    // Cancelled.
    let (r, e) = fx
        .audited(c.login, "abort", async {
            let mut up = t
                .open_write(
                    &format!("{mp}/{CD}/a.txt"),
                    sdx_portal::tree::WriteOptions::upload(),
                )
                .await?;
            up.write(b"partial").await?;
            up.abort().await
        })
        .await;
    r.unwrap();
    assert_eq!(e.action, AuditAction::Create);
    assert!(matches!(e.outcome, Outcome::Failed(_)), "{:?}", e.outcome);

    // Dropped (connection lost): audited in the background, once.
    let before = fx.audit_of(c.login).await.len();
    {
        let mut up = t
            .open_write(
                &format!("{mp}/{CD}/b.txt"),
                sdx_portal::tree::WriteOptions::upload(),
            )
            .await
            .unwrap();
        up.write(b"partial").await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = fx.audit_of(c.login).await;
    while after.len() == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = fx.audit_of(c.login).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = fx.audit_of(c.login).await;
    assert_eq!(after.len(), before + 1);
    assert!(matches!(after[0].outcome, Outcome::Failed(_)));
    let listed = c
        .tree(&fx.portal)
        .list(&format!("{mp}/{CD}"))
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
