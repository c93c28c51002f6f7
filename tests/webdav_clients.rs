//! Desktop clients' request sequences, replayed byte for byte on one kept-alive connection against
//! the real server on loopback, as the demo client (Alice, whose "Client Documents" folder allows
//! List, Read and Create but not Update):
//! - Windows' mini-redirector: PUT 0 bytes → LOCK (no Depth) → PUT → PROPPATCH Win32 times →
//!   UNLOCK, and PROPFIND on a folder without its trailing slash;
//! - macOS Finder (WebDAVFS): chunked PUT with `X-Expected-Entity-Length` and no
//!   `Content-Length`, RFC 4331 quota properties;
//! - gvfs (Nautilus): PROPFIND of every parent up to `/`.

mod webdav_support;

use sdx_portal::Portal;
use std::time::{Duration, Instant};
use webdav_support::*;

const LOCKINFO: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>ALICE-PC\alice</D:href></D:owner></D:lockinfo>"#;

fn win_head(extra: &str) -> String {
    format!(
        "User-Agent: Microsoft-WebDAV-MiniRedir/10.0.19045\r\nTranslate: f\r\n{}{extra}",
        auth(&alice())
    )
}

/// The `<D:getlastmodified>` value in a PROPFIND answer.
fn last_modified(xml: &str) -> Option<String> {
    let a = xml.find("getlastmodified>")? + "getlastmodified>".len();
    let b = xml[a..].find('<')?;
    Some(xml[a..a + b].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_upload_sequence_sets_content_and_modification_time() {
    let w = World::new().await;
    let srv = w.serve().await;
    let mut c = Conn::open(srv.addr).await;
    let doc = format!("/dav/{M1}/Client%20Documents/Quarterly%20report.docx");
    let content = b"PK\x03\x04 pretend this is a Word document".repeat(1000);

    // 1. Explorer creates the file empty.
    let r = c.req("PUT", &doc, &win_head(""), b"").await;
    assert_eq!(r.status, 201, "{}", r.body);
    // 2. LOCK without a Depth header.
    let r = c
        .req(
            "LOCK",
            &doc,
            &win_head("Timeout: Second-3600\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n"),
            LOCKINFO.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r
        .header("Lock-Token")
        .expect("Lock-Token")
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    assert!(r.body.contains(&token), "lock discovery shows the new lock");
    let if_tok = format!("If: (<{token}>)\r\n");
    // 3. The content, under the lock. The folder has no Update permission: replacing one's own
    //    empty placeholder needs only Create.
    let r = c.req("PUT", &doc, &win_head(&if_tok), &content).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // 4. The times and attributes.
    let proppatch = r#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Mon, 01 Jan 2024 08:00:00 GMT</Z:Win32CreationTime><Z:Win32LastAccessTime>Wed, 03 Jan 2024 09:00:00 GMT</Z:Win32LastAccessTime><Z:Win32LastModifiedTime>Tue, 02 Jan 2024 03:04:05 GMT</Z:Win32LastModifiedTime><Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#;
    let r = c
        .req(
            "PROPPATCH",
            &doc,
            &win_head(&format!(
                "{if_tok}Content-Type: text/xml; charset=\"utf-8\"\r\n"
            )),
            proppatch.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.body);
    assert!(r.body.contains("200 OK"), "{}", r.body);
    assert!(
        !r.body.contains("403") && !r.body.contains("424"),
        "{}",
        r.body
    );
    // 5. UNLOCK.
    let r = c
        .req(
            "UNLOCK",
            &doc,
            &win_head(&format!("Lock-Token: <{token}>\r\n")),
            b"",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    // The document has the content and the modification time Windows set.
    let r = c
        .req(
            "PROPFIND",
            &doc,
            &win_head("Depth: 0\r\n"),
            br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getlastmodified/><D:getcontentlength/></D:prop></D:propfind>"#,
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.body);
    assert_eq!(
        last_modified(&r.body).as_deref(),
        Some("Tue, 02 Jan 2024 03:04:05 GMT"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains(&format!("getcontentlength>{}<", content.len())),
        "{}",
        r.body
    );
    let r = c.req("GET", &doc, &win_head(""), b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.raw, content);

    // Only an empty placeholder may be replaced without Update: the real content may not.
    let r = c.req("PUT", &doc, &win_head(""), b"overwrite").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Update"), "{}", r.body);
    // Nor may the times of someone else's document: Alice did not write the staff's file.
    let staff_doc = format!("/dav/{M1}/Client%20Documents/from-staff.txt");
    let r = c
        .req("PUT", &staff_doc, &auth(&staff()), b"written by staff")
        .await;
    assert_eq!(r.status, 201);
    let r = c
        .req(
            "PROPPATCH",
            &staff_doc,
            &win_head("Content-Type: text/xml\r\n"),
            proppatch.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Update"), "{}", r.body);

    // PROPFIND on a folder without the trailing slash: 207 (no redirect), listing the document.
    let r = c
        .req(
            "PROPFIND",
            &format!("/dav/{M1}/Client%20Documents"),
            &win_head("Depth: 1\r\n"),
            b"",
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.body);
    assert!(r.header("Location").is_none());
    assert!(r.body.contains("Quarterly%20report.docx"), "{}", r.body);
    srv.server.shutdown().await.unwrap();
}

fn finder_head(extra: &str) -> String {
    format!(
        "User-Agent: WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (x86_64)\r\n{}{extra}",
        auth(&alice())
    )
}

/// A chunked request with the given body pieces (no Content-Length).
fn chunked(method: &str, path: &str, head: &str, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n{head}\r\n"
    )
    .into_bytes();
    for p in pieces {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finder_chunked_upload_and_quota() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::with_portal(Portal::open(dir.path()).await.unwrap()).await;
    let srv = w.serve().await;
    let mut c = Conn::open(srv.addr).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let pieces: Vec<&[u8]> = vec![
        &data[..1],
        &data[1..70_000],
        &data[70_000..70_001],
        &data[70_001..],
    ];

    // Finder's sequence: an empty file, LOCK, then the content chunked with
    // X-Expected-Entity-Length and no Content-Length, then UNLOCK.
    let doc = format!("/dav/{M1}/Client%20Documents/Photo%201.jpg");
    let r = c.req("PUT", &doc, &finder_head(""), b"").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = c
        .req(
            "LOCK",
            &doc,
            &finder_head("Depth: 0\r\nTimeout: Second-600\r\nContent-Type: text/xml\r\n"),
            LOCKINFO.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r
        .header("Lock-Token")
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    let head = finder_head(&format!(
        "X-Expected-Entity-Length: {}\r\nIf: (<{token}>)\r\n",
        data.len()
    ));
    let r = c.send_raw(&chunked("PUT", &doc, &head, &pieces)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = c
        .req(
            "UNLOCK",
            &doc,
            &finder_head(&format!("Lock-Token: <{token}>\r\n")),
            b"",
        )
        .await;
    assert_eq!(r.status, 204);
    let r = c.req("GET", &doc, &finder_head(""), b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.raw.len(), data.len(), "the full file, never 0 bytes");
    assert!(r.raw == data);

    // A chunked upload of a new name, straight away.
    let doc2 = format!("/dav/{M1}/Client%20Documents/Photo%202.jpg");
    let head = finder_head(&format!("X-Expected-Entity-Length: {}\r\n", data.len()));
    let r = c.send_raw(&chunked("PUT", &doc2, &head, &pieces)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = http(srv.addr, "GET", &doc2, &finder_head(""), b"").await;
    assert!(r.raw == data);

    // A body shorter than announced is refused and leaves nothing behind.
    let doc3 = format!("/dav/{M1}/Client%20Documents/Photo%203.jpg");
    let head = finder_head(&format!("X-Expected-Entity-Length: {}\r\n", data.len()));
    let mut c3 = Conn::open(srv.addr).await;
    let r = c3
        .send_raw(&chunked("PUT", &doc3, &head, &[&data[..1000]]))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("incomplete"), "{}", r.body);
    let r = http(
        srv.addr,
        "PROPFIND",
        &doc3,
        &finder_head("Depth: 0\r\n"),
        b"",
    )
    .await;
    assert_eq!(r.status, 404, "no partial or empty document: {}", r.body);

    // RFC 4331 quota properties, answered quickly.
    let t = Instant::now();
    let r = c
        .req(
            "PROPFIND",
            "/dav/",
            &finder_head("Depth: 0\r\n"),
            br#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>"#,
        )
        .await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(r.status, 207, "{}", r.body);
    let avail = r
        .body
        .split("quota-available-bytes>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no quota-available-bytes: {}", r.body));
    assert!(avail > 0);
    assert!(r.body.contains("quota-used-bytes>"), "{}", r.body);
    // The same for a folder.
    let r = c
        .req(
            "PROPFIND",
            &format!("/dav/{M1}/"),
            &finder_head("Depth: 1\r\n"),
            br#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/><D:quota-used-bytes/><D:resourcetype/></D:prop></D:propfind>"#,
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.body);
    assert!(r.body.contains("quota-available-bytes>"), "{}", r.body);
    srv.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gvfs_walks_up_to_the_root() {
    let w = World::new().await;
    let srv = w.serve().await;
    let mut c = Conn::open(srv.addr).await;
    let head = format!("User-Agent: gvfs/1.50.2\r\n{}", auth(&alice()));
    let body = br#"<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:prop><D:creationdate/><D:displayname/><D:getcontentlength/><D:getcontenttype/><D:getetag/><D:getlastmodified/><D:resourcetype/></D:prop></D:propfind>"#;
    for (path, href) in [
        (
            format!("/dav/{M1}/Client%20Documents"),
            format!("/dav/{M1}/Client%20Documents/"),
        ),
        (
            format!("/dav/{M1}/Client%20Documents/"),
            format!("/dav/{M1}/Client%20Documents/"),
        ),
        (format!("/dav/{M1}"), format!("/dav/{M1}/")),
        (format!("/dav/{M1}/"), format!("/dav/{M1}/")),
        ("/dav/".to_string(), "/dav/".to_string()),
        ("/dav".to_string(), "/dav/".to_string()),
        ("/".to_string(), "/".to_string()),
    ] {
        for depth in ["0", "1"] {
            let r = c
                .req(
                    "PROPFIND",
                    &path,
                    &format!("{head}Depth: {depth}\r\n"),
                    body,
                )
                .await;
            assert_eq!(r.status, 207, "{path} depth {depth}: {}", r.body);
            assert!(
                r.body.contains(&format!("<D:href>{href}</D:href>")),
                "{path}: {}",
                r.body
            );
            assert!(r.body.contains("<D:collection"), "{path}: {}", r.body);
        }
    }
    // Depth 1 on "/" shows the /dav/ collection; on /dav/ only Alice's matter.
    let r = c
        .req("PROPFIND", "/", &format!("{head}Depth: 1\r\n"), body)
        .await;
    assert!(r.body.contains("<D:href>/dav/</D:href>"), "{}", r.body);
    let r = c
        .req("PROPFIND", "/dav/", &format!("{head}Depth: 1\r\n"), body)
        .await;
    assert!(r.body.contains(M1), "{}", r.body);
    assert!(!r.body.contains("2026-002"), "{}", r.body);
    // Without credentials "/" asks for them like the rest.
    let r = c
        .req(
            "PROPFIND",
            "/",
            "User-Agent: gvfs/1.50.2\r\nDepth: 0\r\n",
            body,
        )
        .await;
    assert_eq!(r.status, 401);
    srv.server.shutdown().await.unwrap();
}
