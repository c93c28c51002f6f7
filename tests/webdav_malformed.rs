//! Malformed and hostile requests get clear statuses, nothing panics, and the server keeps
//! serving: bad XML, entity expansion (billion laughs), deeply nested XML, oversized bodies on the
//! XML methods (bounded: refused after the limit, without reading the rest), absurd `Depth`
//! values, unknown methods, oversized headers, garbage request lines.

mod webdav_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use webdav_support::*;

static PANICS: AtomicUsize = AtomicUsize::new(0);

const PROPFIND: &[u8] = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>"#;

fn billion_laughs() -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    s.push_str("<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n");
    for i in 2..10 {
        let p = format!("&lol{};", i - 1);
        s.push_str(&format!("<!ENTITY lol{i} \"{}\">\n", p.repeat(10)));
    }
    s.push_str("]>\n<D:propfind xmlns:D=\"DAV:\"><D:prop><D:displayname>&lol9;</D:displayname></D:prop></D:propfind>");
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_statuses_and_the_server_keeps_serving() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(info);
    }));
    let w = World::new().await;
    let srv = w.serve().await;
    let addr = srv.addr;
    let a = auth(&staff());
    let folder = format!("/dav/{M1}/Internal/");
    let doc = format!("/dav/{M1}/Internal/doc.txt");
    assert_eq!(http(addr, "PUT", &doc, &a, b"content").await.status, 201);

    // Bad XML: 400 from every XML method.
    for (method, body) in [
        ("PROPFIND", &b"<D:propfind xmlns:D=\"DAV:\"><D:prop>"[..]),
        ("PROPFIND", b"this is not xml"),
        ("PROPFIND", b"<x:propfind xmlns:x=\"urn:other\"/>"),
        ("PROPPATCH", b"<D:propertyupdate xmlns:D=\"DAV:\"><D:set>"),
        ("PROPPATCH", b"<<<>>>"),
        ("LOCK", b"<D:lockinfo xmlns:D=\"DAV:\"><D:lockscope>"),
    ] {
        let r = http(addr, method, &doc, &format!("{a}Depth: 0\r\n"), body).await;
        assert_eq!(
            r.status,
            400,
            "{method} {:?}: {}",
            String::from_utf8_lossy(body),
            r.body
        );
    }

    // Entity expansion and other DTD tricks: refused at once, with the reason.
    let t = Instant::now();
    for method in ["PROPFIND", "PROPPATCH", "LOCK"] {
        let r = http(
            addr,
            method,
            &doc,
            &format!("{a}Depth: 0\r\n"),
            &billion_laughs(),
        )
        .await;
        assert_eq!(r.status, 400, "{method}: {}", r.body);
        assert!(r.body.contains("DTD"), "{}", r.body);
    }
    let xxe = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&e;</D:displayname></D:prop></D:propfind>"#;
    let r = http(addr, "PROPFIND", &doc, &format!("{a}Depth: 0\r\n"), xxe).await;
    assert_eq!(r.status, 400);
    assert!(!r.body.contains("root:"), "{}", r.body);
    // An undeclared entity is just bad XML.
    let r = http(
        addr,
        "PROPFIND",
        &doc,
        &format!("{a}Depth: 0\r\n"),
        br#"<D:propfind xmlns:D="DAV:"><D:prop><D:x>&lol9;</D:x></D:prop></D:propfind>"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Non-UTF-8 bodies.
    let r = http(
        addr,
        "PROPFIND",
        &doc,
        &format!("{a}Depth: 0\r\n"),
        &[0xFF, 0xFE, b'<', 0, b'a', 0],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // Deep nesting (which used to overflow a worker's stack and abort the server).
    for n in [100usize, 9000] {
        let body = format!(
            "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\">{}{}</D:propfind>",
            "<a>".repeat(n),
            "</a>".repeat(n)
        );
        for method in ["PROPFIND", "PROPPATCH", "LOCK"] {
            let r = http(
                addr,
                method,
                &doc,
                &format!("{a}Depth: 0\r\n"),
                body.as_bytes(),
            )
            .await;
            assert_eq!(r.status, 400, "{method} depth {n}: {}", r.body);
            assert!(r.body.contains("nest"), "{}", r.body);
        }
    }

    // Huge bodies on the XML methods: refused once past the limit, without reading the rest.
    for method in ["PROPFIND", "PROPPATCH", "LOCK", "MKCOL", "DELETE"] {
        let mut c = Conn::open(addr).await;
        let head = format!(
            "{method} {doc} HTTP/1.1\r\nHost: x\r\n{a}Depth: 0\r\nContent-Length: 10737418240\r\n\r\n"
        );
        c.write(head.as_bytes()).await;
        let t = Instant::now();
        // 128 KiB of the announced 10 GiB.
        for _ in 0..2 {
            c.write(&vec![b' '; 64 * 1024]).await;
        }
        let r = c.read_response().await;
        assert_eq!(r.status, 413, "{method}: {}", r.body);
        assert!(r.body.contains("too large"), "{}", r.body);
        assert!(t.elapsed() < Duration::from_secs(10));
    }
    // A whole 1 MiB body is refused the same way.
    let big = vec![b'x'; 1 << 20];
    let r = http(addr, "PROPPATCH", &doc, &a, &big).await;
    assert_eq!(r.status, 413);

    // Absurd Depth values.
    let r = http(
        addr,
        "PROPFIND",
        &folder,
        &format!("{a}Depth: infinity\r\n"),
        PROPFIND,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("propfind-finite-depth"), "{}", r.body);
    for d in ["99", "2", "-1", "1,0", "infinite", "0x1", "ünendlich"] {
        let r = http(
            addr,
            "PROPFIND",
            &folder,
            &format!("{a}Depth: {d}\r\n"),
            PROPFIND,
        )
        .await;
        assert_eq!(r.status, 400, "Depth {d}: {}", r.body);
        assert!(r.body.contains("Depth"), "{}", r.body);
    }
    let r = http(
        addr,
        "PROPFIND",
        &folder,
        &format!("{a}Depth: 0\r\nDepth: 1\r\n"),
        PROPFIND,
    )
    .await;
    assert_eq!(r.status, 400);
    for method in ["LOCK", "COPY", "MOVE", "DELETE", "GET"] {
        let r = http(addr, method, &doc, &format!("{a}Depth: 99\r\n"), b"").await;
        assert_eq!(r.status, 400, "{method}");
    }
    // Depth 1 makes no sense for LOCK (0 or infinity only).
    let r = http(
        addr,
        "LOCK",
        &doc,
        &format!("{a}Depth: 1\r\n"),
        br#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#,
    )
    .await;
    assert!(
        r.status == 400 || r.status == 412,
        "{} {}",
        r.status,
        r.body
    );

    // Unknown and unsupported methods.
    for method in [
        "FOO",
        "TRACE",
        "SEARCH",
        "BIND",
        "MKCALENDAR",
        "REPORT",
        "ACL",
    ] {
        let r = http(addr, method, &doc, &a, b"").await;
        assert!(r.status == 501 || r.status == 405, "{method}: {}", r.status);
    }
    let r = http(addr, "PATCH", &doc, &a, b"x").await;
    assert_eq!(r.status, 405, "documents are replaced whole, never patched");

    // Huge and many headers; a garbage request line; an absurd Content-Length; bad If headers.
    let r = http(
        addr,
        "GET",
        &doc,
        &format!("{a}X-Big: {}\r\n", "a".repeat(70 * 1024)),
        b"",
    )
    .await;
    assert_eq!(r.status, 431);
    let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = http(addr, "GET", &doc, &format!("{a}{many}"), b"").await;
    assert!(r.status == 431 || r.status == 400, "{}", r.status);
    let r = http(
        addr,
        "GET",
        &doc,
        &format!("{a}Destination: {}\r\n", "/dav/x".repeat(12_000)),
        b"",
    )
    .await;
    assert!(r.status == 431 || r.status == 400, "{}", r.status);
    let mut c = Conn::open(addr).await;
    let r = c.send_raw(b"GARBAGE\r\n\r\n").await;
    assert_eq!(r.status, 400);
    let mut c = Conn::open(addr).await;
    let r = c
        .send_raw(
            format!("GET {doc} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n{a}\r\n").as_bytes(),
        )
        .await;
    assert_eq!(r.status, 400);
    for ifh in [
        "(<garbage",
        "<http://x/> (",
        "(Not)",
        "((<a>))",
        "([\"etag\"] <opaquelocktoken:x>",
    ] {
        let r = http(addr, "PUT", &doc, &format!("{a}If: {ifh}\r\n"), b"new").await;
        assert!(
            r.status == 400 || r.status == 412,
            "If: {ifh} -> {} {}",
            r.status,
            r.body
        );
    }
    for (k, v) in [
        ("If-Match", "\""),
        ("If-None-Match", "W/\""),
        ("If-Range", "\""),
    ] {
        let r = http(addr, "GET", &doc, &format!("{a}{k}: {v}\r\n"), b"").await;
        assert_eq!(r.status, 400, "{k}: {v} -> {}", r.body);
    }
    for range in [
        "bytes=999999999999-",
        "bytes=-0",
        "bytes=5-2",
        "bytes=0-18446744073709551615",
        "bytes=-18446744073709551615",
        "bytes=18446744073709551615-18446744073709551615",
        "bytes=0-0,-1,3-",
        "bytes=",
        "chars=0-1",
    ] {
        let r = http(addr, "GET", &doc, &format!("{a}Range: {range}\r\n"), b"").await;
        assert!(
            [200, 206, 400, 416].contains(&r.status),
            "Range {range}: {} {}",
            r.status,
            r.body
        );
    }
    for t in [
        "Second-4294967295",
        "Second-",
        "Infinite, Second-5",
        "Second-99999999999999",
    ] {
        let r = http(
            addr,
            "LOCK",
            &doc,
            &format!("{a}Timeout: {t}\r\n"),
            br#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#,
        )
        .await;
        assert!(
            r.status == 200 || r.status == 400,
            "Timeout {t}: {} {}",
            r.status,
            r.body
        );
    }
    let r = http(
        addr,
        "GET",
        &doc,
        "Authorization: Basic \u{7f}\u{7f}\r\n",
        b"",
    )
    .await;
    assert!(r.status == 401 || r.status == 400, "{}", r.status);
    let r = http(addr, "GET", &format!("/dav/{M1}/%zz"), &a, b"").await;
    assert_eq!(r.status, 400);
    let r = http(
        addr,
        "GET",
        &format!("/dav/{M1}/x?{}", "q".repeat(200)),
        &a,
        b"",
    )
    .await;
    assert!(r.status == 404 || r.status == 400, "{}", r.status);

    // Still serving, nothing panicked.
    let r = http(
        addr,
        "PROPFIND",
        &folder,
        &format!("{a}Depth: 1\r\n"),
        PROPFIND,
    )
    .await;
    assert_eq!(r.status, 207);
    assert!(r.body.contains("doc.txt"));
    let r = http(addr, "GET", &doc, &a, b"").await;
    assert_eq!((r.status, r.body.as_str()), (200, "content"));
    srv.server.shutdown().await.unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a request panicked");
}
