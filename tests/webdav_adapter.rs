//! The WebDAV filesystem adapter driven through dav-server's handler (no network): every request is a
//! tree operation, so the portal's permissions decide the status codes.
use bytes::Bytes;
use dav_server::DavHandler;
use http_body_util::{BodyExt, Full};
use sdx_portal::model::{Actor, Principal};
use sdx_portal::webdav::DavCtx;
use sdx_portal::webdav::fs::PortalDavFs;
use sdx_portal::{Portal, demo};

const M: &str = "/dav/2026-001%20Smith%20v%20Jones";

type Ctx = DavCtx<Principal>;

async fn setup() -> (Portal, DavHandler<Ctx>, Ctx) {
    let portal = Portal::in_memory().await.unwrap();
    demo::provision(&portal).await.unwrap();
    let who = portal
        .authenticate_password(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
        .await
        .unwrap();
    let ctx = DavCtx::new(who, "127.0.0.1:1".parse().unwrap());
    let h = DavHandler::builder()
        .filesystem(Box::new(PortalDavFs::new(portal.clone())))
        .locksystem(dav_server::memls::MemLs::new())
        .strip_prefix("/dav")
        .build_handler();
    (portal, h, ctx)
}

async fn req(
    h: &DavHandler<Ctx>,
    tree: &Ctx,
    method: &str,
    url: &str,
    body: &'static [u8],
    hdrs: &[(&str, &str)],
) -> (u16, String) {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in hdrs {
        b = b.header(*k, *v);
    }
    let r = b.body(Full::new(Bytes::from_static(body))).unwrap();
    let resp = h.handle_guarded(r, "alice".into(), tree.clone()).await;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn client_uploads_reads_and_is_refused_where_the_matter_type_says() {
    let (_p, h, t) = setup().await;
    let cd = format!("{M}/Client%20Documents");
    assert_eq!(
        req(&h, &t, "PUT", &format!("{cd}/a.txt"), b"hello", &[])
            .await
            .0,
        201
    );
    let (s, body) = req(&h, &t, "GET", &format!("{cd}/a.txt"), b"", &[]).await;
    assert_eq!((s, body.as_str()), (200, "hello"));
    let (s, body) = req(
        &h,
        &t,
        "PROPFIND",
        &format!("{cd}/"),
        b"",
        &[("Depth", "1")],
    )
    .await;
    assert_eq!(s, 207);
    assert!(body.contains("a.txt"), "{body}");
    // No Update in Client Documents: overwriting is refused, the old content stays.
    assert_eq!(
        req(&h, &t, "PUT", &format!("{cd}/a.txt"), b"changed", &[])
            .await
            .0,
        403
    );
    assert_eq!(
        req(&h, &t, "GET", &format!("{cd}/a.txt"), b"", &[]).await.1,
        "hello"
    );
    // No Delete there either.
    assert_eq!(
        req(&h, &t, "DELETE", &format!("{cd}/a.txt"), b"", &[])
            .await
            .0,
        403
    );
    // Correspondence is List+Read only: no new documents.
    assert_eq!(
        req(
            &h,
            &t,
            "PUT",
            &format!("{M}/Correspondence/b.txt"),
            b"x",
            &[]
        )
        .await
        .0,
        403
    );
    // Portal users never create folders; "Internal" is invisible.
    assert_eq!(
        req(&h, &t, "MKCOL", &format!("{cd}/new"), b"", &[]).await.0,
        403
    );
    assert_eq!(
        req(
            &h,
            &t,
            "PROPFIND",
            &format!("{M}/Internal"),
            b"",
            &[("Depth", "0")]
        )
        .await
        .0,
        404
    );
    // Full in the configured sub-folder: update and delete work there.
    let tr = format!("{cd}/Tax%20Returns/t.pdf");
    assert_eq!(req(&h, &t, "PUT", &tr, b"v1", &[]).await.0, 201);
    assert_eq!(req(&h, &t, "PUT", &tr, b"v2", &[]).await.0, 204);
    assert_eq!(req(&h, &t, "GET", &tr, b"", &[]).await.1, "v2");
    assert_eq!(req(&h, &t, "DELETE", &tr, b"", &[]).await.0, 204);
    assert_eq!(req(&h, &t, "GET", &tr, b"", &[]).await.0, 404);
}

#[tokio::test]
async fn os_junk_never_reaches_the_firms_folders() {
    let (p, h, t) = setup().await;
    let cd = format!("{M}/Client%20Documents");
    assert_eq!(
        req(&h, &t, "PUT", &format!("{cd}/.DS_Store"), b"junk", &[])
            .await
            .0,
        201
    );
    assert_eq!(
        req(&h, &t, "GET", &format!("{cd}/.DS_Store"), b"", &[])
            .await
            .1,
        "junk"
    );
    let staff = p.tree(Actor::system());
    let listed = staff
        .list("/2026-001 Smith v Jones/Client Documents")
        .await
        .unwrap();
    assert!(listed.iter().all(|e| e.name != ".DS_Store"), "{listed:?}");
}
