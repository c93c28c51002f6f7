//! An already "mounted" client (one kept-alive connection, the login cache warm) is stopped on its
//! very next request when staff revoke its grant, change its password or disable its login; and
//! the login cache really is in use before that (one password check for many requests).

mod webdav_support;

use sdx_portal::audit::{AuditAction, AuditFilter};
use sdx_portal::model::{Actor, Principal};
use webdav_support::*;

const LIST: &[u8] = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grant_changed_password_and_disabled_login_stop_a_mounted_client() {
    let w = World::new().await;
    let sys = Actor::system();
    let staff = Actor::api(Principal::Staff(w.demo.staff));
    let alice_part = w
        .portal
        .participants(&sys, w.demo.matter)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.portal_access)
        .unwrap()
        .id;
    let srv = w.serve().await;
    let doc = format!("/dav/{M1}/Client%20Documents/notes.txt");
    let mut c = Conn::open(srv.addr).await;
    let a = auth(&alice());
    let depth1 = format!("{a}Depth: 1\r\n");

    // Mounted: several requests on one connection, one password check.
    let r = c.req("PUT", &doc, &a, b"alice's notes").await;
    assert_eq!(r.status, 201, "{}", r.body);
    for _ in 0..5 {
        let r = c
            .req("PROPFIND", &format!("/dav/{M1}/"), &depth1, LIST)
            .await;
        assert_eq!(r.status, 207);
        let r = c.req("GET", &doc, &a, b"").await;
        assert_eq!(r.status, 200);
    }
    let logins = |w: &World, staff: Actor| {
        let p = w.portal.clone();
        let client = w.demo.client;
        async move {
            p.audit_query(
                &staff,
                AuditFilter {
                    login: Some(client),
                    limit: Some(100_000),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == AuditAction::Login)
            .count()
        }
    };
    assert_eq!(
        logins(&w, staff.clone()).await,
        1,
        "the login cache was not used"
    );

    // 1. The grant is revoked: the very next request no longer sees the matter.
    w.portal
        .revoke_access(&sys, w.demo.matter, alice_part)
        .await
        .unwrap();
    let r = c.req("GET", &doc, &a, b"").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = c.req("PROPFIND", "/dav/", &depth1, LIST).await;
    assert_eq!(r.status, 207);
    assert!(!r.body.contains(M1), "{}", r.body);
    let r = c.req("PUT", &doc, &a, b"after revocation").await;
    assert!(
        r.status == 404 || r.status == 409,
        "{} {}",
        r.status,
        r.body
    );
    // Granted again: back.
    w.portal
        .grant_access(&sys, w.demo.matter, alice_part)
        .await
        .unwrap();
    let r = c.req("GET", &doc, &a, b"").await;
    assert_eq!((r.status, r.body.as_str()), (200, "alice's notes"));

    // 2. Password changed by staff: the old one stops working at once, the new one works.
    w.portal
        .set_password(&staff, w.demo.client, "a brand new passphrase 2026")
        .await
        .unwrap();
    let r = c.req("GET", &doc, &a, b"").await;
    assert_eq!(r.status, 401, "{}", r.body);
    let new_auth = auth(&format!(
        "{}:a brand new passphrase 2026",
        sdx_portal::demo::DEMO_CLIENT_EMAIL
    ));
    let r = c.req("GET", &doc, &new_auth, b"").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // 3. Login disabled: refused on the next request, with the cache warm.
    let r = c.req("GET", &doc, &new_auth, b"").await;
    assert_eq!(r.status, 200);
    w.portal
        .set_login_disabled(&staff, w.demo.client, true)
        .await
        .unwrap();
    let r = c.req("GET", &doc, &new_auth, b"").await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = c
        .req(
            "PROPFIND",
            &format!("/dav/{M1}/"),
            &format!("{new_auth}Depth: 1\r\n"),
            LIST,
        )
        .await;
    assert_eq!(r.status, 401);
    w.portal
        .set_login_disabled(&staff, w.demo.client, false)
        .await
        .unwrap();
    let r = c.req("GET", &doc, &new_auth, b"").await;
    assert_eq!(r.status, 200);

    // 4. An access change elsewhere (Bob's grant) also makes the cache check again, once.
    let before = logins(&w, staff.clone()).await;
    w.portal
        .revoke_access(&sys, w.m2, w.bob_part)
        .await
        .unwrap();
    for _ in 0..3 {
        let r = c.req("GET", &doc, &new_auth, b"").await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(logins(&w, staff.clone()).await, before + 1);
    // All of this on the one kept-alive connection, except for the reconnect clients make after
    // the refused PUT (the server closes a connection whose upload body it did not read).
    assert_eq!(c.reconnects, 1);
    srv.server.shutdown().await.unwrap();
}
