//! Every WebDAV request is audited through the portal's policy point with channel `webdav` and the
//! client's address, and exactly as often as needed: one `Create`/`Update` per PUT, one `Read` per GET, one `Stat` per PROPFIND
//! of a document (its dead properties come with it), one `List` for a folder listing (the folder and
//! its children) however many children it has, and a refusal is audited with its reason.

mod webdav_support;

use sdx_portal::audit::{AuditAction, AuditEntry, AuditFilter, Outcome};
use sdx_portal::model::{Actor, Channel, Principal};
use webdav_support::*;

async fn trail(w: &World) -> Vec<AuditEntry> {
    let staff = Actor::api(Principal::Staff(w.demo.staff));
    w.portal
        .audit_query(
            &staff,
            AuditFilter {
                login: Some(w.demo.client),
                limit: Some(100_000),
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

/// The entries added by `f`, oldest first.
async fn added<F: std::future::Future<Output = Resp>>(w: &World, f: F) -> (Resp, Vec<AuditEntry>) {
    let before = trail(w).await.len();
    let r = f.await;
    let mut after = trail(w).await;
    after.truncate(after.len() - before);
    after.reverse();
    (r, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_audited_once_with_channel_and_address() {
    let w = World::new().await;
    let srv = w.serve().await;
    let mut c = Conn::open(srv.addr).await;
    let a = auth(&alice());
    let folder = format!("/dav/{M1}/Client%20Documents/");
    let doc = format!("{folder}a.txt");
    for i in 0..20 {
        let r = c.req("PUT", &format!("{folder}f{i}.txt"), &a, b"x").await;
        assert_eq!(r.status, 201);
    }

    let (r, e) = added(&w, c.req("PUT", &doc, &a, b"hello")).await;
    assert_eq!(r.status, 201);
    let acts: Vec<_> = e.iter().map(|e| e.action.clone()).collect();
    assert_eq!(
        acts,
        [AuditAction::Create],
        "a plain PUT is audited once: {e:?}"
    );
    for x in &e {
        assert_eq!(x.channel, Channel::WebDav);
        let remote = x.remote.as_deref().unwrap_or("");
        assert!(remote.starts_with("127.0.0.1:"), "{remote}");
        assert_ne!(
            remote,
            srv.addr.to_string(),
            "the client's address, not the server's"
        );
    }

    let (r, e) = added(&w, c.req("GET", &doc, &a, b"")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].action, AuditAction::Read);
    assert!(matches!(e[0].outcome, Outcome::Allowed));
    assert!(
        e[0].object.ends_with("/Client Documents/a.txt"),
        "{}",
        e[0].object
    );

    let (r, e) = added(
        &w,
        c.req("PROPFIND", &doc, &format!("{a}Depth: 0\r\n"), b""),
    )
    .await;
    assert_eq!(r.status, 207);
    assert_eq!(
        e.iter().map(|e| e.action.clone()).collect::<Vec<_>>(),
        [AuditAction::Stat]
    );

    let (r, e) = added(
        &w,
        c.req("PROPFIND", &folder, &format!("{a}Depth: 1\r\n"), b""),
    )
    .await;
    assert_eq!(r.status, 207);
    assert!(r.body.contains("f19.txt"));
    assert_eq!(
        e.iter().map(|e| e.action.clone()).collect::<Vec<_>>(),
        [AuditAction::List],
        "one audited listing (the folder and its 21 children)"
    );

    // A refusal is audited as such, with the reason.
    let (r, e) = added(
        &w,
        c.req("PUT", &format!("/dav/{M1}/Correspondence/x.txt"), &a, b"x"),
    )
    .await;
    assert_eq!(r.status, 403);
    let last = e.last().unwrap();
    assert_eq!(last.action, AuditAction::Create);
    match &last.outcome {
        Outcome::Denied(why) => assert!(why.contains("Create"), "{why}"),
        o => panic!("{o:?}"),
    }
    srv.server.shutdown().await.unwrap();
}
