//! The direct PROPFIND answer (plain `DAV:` live properties, `Depth: 0`/`1`) says exactly what
//! dav-server says for the same request. dav-server answers when the body also names a property
//! nobody has (it leaves such properties out, so the two answers must be identical), and for
//! everything the direct path does not take (`allprop`), which still works.

mod webdav_support;

use sdx_portal::audit::{AuditAction, AuditFilter};
use sdx_portal::model::{Actor, Principal};
use webdav_support::*;

const LIVE: &str = "<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><D:creationdate/><D:getcontenttype/>";

fn body(extra: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>{LIVE}{extra}</D:prop></D:propfind>"#
    )
    .into_bytes()
}

/// The `<D:response>` elements, sorted (children come in the store's order on both paths, but
/// don't depend on it).
fn responses(xml: &str) -> Vec<String> {
    let mut v: Vec<String> = xml
        .split("<D:response>")
        .skip(1)
        .map(|s| s.to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_answer_matches_dav_server() {
    let w = World::new().await;
    let srv = w.serve().await;
    let mut c = Conn::open(srv.addr).await;
    let a = auth(&alice());
    let folder = format!("/dav/{M1}/Client%20Documents");
    for name in [
        "plain.txt",
        "with%20space.pdf",
        "%C3%BCml%26aut.docx",
        "noext",
    ] {
        let r = c
            .req("PUT", &format!("{folder}/{name}"), &a, b"12345")
            .await;
        assert_eq!(r.status, 201, "{name}");
    }
    let r = c
        .req("MKCOL", &format!("{folder}/Sub%20folder"), &a, b"")
        .await;
    assert!(r.status == 201 || r.status == 403, "{}", r.status);

    let unknown = r#"<x:nothing xmlns:x="urn:sdx-test"/>"#;
    for (path, depth) in [
        (format!("{folder}/"), "1"),
        (folder.clone(), "1"),
        (format!("{folder}/"), "0"),
        (format!("{folder}/with%20space.pdf"), "0"),
        (format!("{folder}/with%20space.pdf"), "1"),
        (format!("/dav/{M1}/"), "1"),
        ("/dav/".to_string(), "1"),
    ] {
        let head = format!("{a}Depth: {depth}\r\nContent-Type: application/xml\r\n");
        let fast = c.req("PROPFIND", &path, &head, &body("")).await;
        let slow = c.req("PROPFIND", &path, &head, &body(unknown)).await;
        assert_eq!(fast.status, 207, "{path} {depth}: {}", fast.body);
        assert_eq!(slow.status, 207, "{path} {depth}");
        assert_eq!(
            responses(&fast.body),
            responses(&slow.body),
            "{path} Depth {depth}"
        );
        assert!(fast.body.starts_with(
            r#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:">"#
        ));
        assert!(fast.body.ends_with("</D:multistatus>"));
        assert_eq!(
            fast.header("content-location"),
            slow.header("content-location"),
            "{path}"
        );
        assert_eq!(
            fast.header("content-type"),
            Some("application/xml; charset=utf-8")
        );
    }
    let head = format!("{a}Depth: 1\r\n");
    let fast = c
        .req("PROPFIND", &format!("{folder}/"), &head, &body(""))
        .await;
    for href in [
        "Client%20Documents/plain.txt</D:href>",
        "Client%20Documents/with%20space.pdf</D:href>",
        "Client%20Documents/%C3%BCml%26aut.docx</D:href>",
    ] {
        assert!(fast.body.contains(href), "{href} in {}", fast.body);
    }
    assert!(
        fast.body
            .contains("<D:getcontenttype>application/pdf</D:getcontenttype>")
    );
    assert!(
        fast.body
            .contains("<D:getcontentlength>5</D:getcontentlength>")
    );

    // Errors: a missing node is 404 on both paths, a matter Alice can't see too.
    for path in [format!("{folder}/missing.txt"), format!("/dav/{M2}/")] {
        let head = format!("{a}Depth: 1\r\n");
        let fast = c.req("PROPFIND", &path, &head, &body("")).await;
        let slow = c.req("PROPFIND", &path, &head, &body(unknown)).await;
        assert_eq!(fast.status, 404, "{path}");
        assert_eq!(slow.status, 404, "{path}");
    }

    // allprop still goes to dav-server (dead and lock properties included).
    let all = c
        .req(
            "PROPFIND",
            &format!("{folder}/"),
            &head,
            br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#,
        )
        .await;
    assert_eq!(all.status, 207);
    assert!(all.body.contains("<D:supportedlock>"), "{}", all.body);
    srv.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_is_one_audit_entry_on_both_paths() {
    let w = World::new().await;
    let srv = w.serve().await;
    let mut c = Conn::open(srv.addr).await;
    let a = auth(&alice());
    let folder = format!("/dav/{M1}/Client%20Documents/");
    for i in 0..5 {
        let r = c.req("PUT", &format!("{folder}f{i}.txt"), &a, b"x").await;
        assert_eq!(r.status, 201);
    }
    let staff = Actor::api(Principal::Staff(w.demo.staff));
    let count = || async {
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
    };
    let head = format!("{a}Depth: 1\r\n");
    for extra in ["", r#"<x:nothing xmlns:x="urn:sdx-test"/>"#] {
        let before = count().await.len();
        let r = c.req("PROPFIND", &folder, &head, &body(extra)).await;
        assert_eq!(r.status, 207);
        assert!(r.body.contains("f4.txt"));
        let after = count().await;
        assert_eq!(after.len(), before + 1, "{extra:?}");
        assert_eq!(after[0].action, AuditAction::List, "{:?}", after[0]);
    }
    srv.server.shutdown().await.unwrap();
}
