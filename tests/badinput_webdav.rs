//! A bad-input corpus sent to the running `sdx serve` over WebDAV (issue 8): malformed XML, entity
//! expansion and external entities, huge headers, absurd Depth, invalid UTF-8 and overlong names,
//! lying Content-Length and chunk sizes, smuggling, junk bytes. Each request goes over its own raw
//! TCP connection (`Connection: close`; the client half-closes only where its body is cut short)
//! and must be answered with an error (4xx/5xx other than 500) or dropped — never a success,
//! never a 500 — within 10 s (two exceptions, checked for what makes them safe: an external
//! entity may be accepted because it is never resolved, an unparseable Depth is answered one level
//! deep, and a CL+TE request is read as chunked and the connection closed, per RFC 9112); the server must stay up, and a normal client must
//! succeed right after each one. Needs curl (fails without it under `CI=true`, else skipped).

mod fault_util;

use fault_util::{Server, curl, have, url_path};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const FOLDER: &str = "/2026-001 Smith v Jones/Client Documents/Tax Returns";

fn auth() -> String {
    use base64::Engine;
    let t = base64::engine::general_purpose::STANDARD.encode(fault_util::demo_user());
    format!("Authorization: Basic {t}\r\n")
}

/// Sends raw bytes; returns the status of the first response (None = dropped without one) and
/// the response bytes (at most 1 MiB).
fn send(server: &Server, bytes: &[u8], half_close: bool) -> (Option<u16>, Vec<u8>, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(server.webdav).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    if half_close {
        // The client gives up sending (its body is cut short).
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.len() < (1 << 20) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = got
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok());
    (status, got, t.elapsed())
}

fn req(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}{headers}Content-Length: {}\r\n\r\n",
        auth(),
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

fn folder() -> String {
    format!("/dav{}/", url_path(FOLDER))
}

fn doc(name: &str) -> String {
    format!("/dav{}", url_path(&format!("{FOLDER}/{name}")))
}

const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:x>&lol9;</Z:x></D:prop></D:set></D:propertyupdate>"#;

const XXE: &str = r#"<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:x>&xxe;</Z:x></D:prop></D:set></D:propertyupdate>"#;

/// The corpus: (name, request bytes).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut c: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |n: &str, b: Vec<u8>| c.push((n.to_string(), b));
    let pf = |body: &str| req("PROPFIND", &folder(), "Depth: 1\r\n", body.as_bytes());
    // Malformed XML.
    add(
        "propfind truncated xml",
        pf(r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>"#),
    );
    add(
        "propfind mismatched tags",
        pf(r#"<D:propfind xmlns:D="DAV:"><D:prop></D:propfind></D:prop>"#),
    );
    add(
        "propfind unbound prefix",
        pf(r#"<X:propfind><X:allprop/></X:propfind>"#),
    );
    add("propfind not xml", pf("\u{0}\u{1}\u{2}garbage<<<>>>"));
    add("propfind invalid utf-8", {
        let mut b = req("PROPFIND", &folder(), "Depth: 1\r\n", &[]);
        b.truncate(b.len() - 4 - "Content-Length: 0".len());
        let body = b"<D:propfind xmlns:D=\"DAV:\"><D:prop><D:\xff\xfe/></D:prop></D:propfind>";
        b.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        b.extend_from_slice(body);
        b
    });
    add(
        "lock malformed",
        req(
            "LOCK",
            &doc("lockme.txt"),
            "Timeout: Second-60\r\n",
            b"<D:lockinfo xmlns:D=\"DAV:\"><D:lockscope>",
        ),
    );
    add(
        "proppatch empty element soup",
        req("PROPPATCH", &folder(), "", "<a>".repeat(5000).as_bytes()),
    );
    add(
        "propfind deep nesting",
        pf(&format!(
            "{}{}",
            "<D:prop xmlns:D=\"DAV:\">".repeat(20_000),
            "</D:prop>".repeat(20_000)
        )),
    );
    // Entity expansion and external entities.
    add(
        "proppatch billion laughs",
        req("PROPPATCH", &doc("keep.txt"), "", BILLION_LAUGHS.as_bytes()),
    );
    add(
        "propfind billion laughs",
        pf(&BILLION_LAUGHS.replace("propertyupdate", "propfind")),
    );
    add(
        "proppatch external entity",
        req("PROPPATCH", &doc("keep.txt"), "", XXE.as_bytes()),
    );
    add(
        "lock billion laughs",
        req(
            "LOCK",
            &doc("keep.txt"),
            "",
            BILLION_LAUGHS
                .replace("propertyupdate", "lockinfo")
                .as_bytes(),
        ),
    );
    // Bodies over the 64 KiB XML limit.
    add(
        "propfind 2 MiB body",
        pf(&format!(
            "<D:propfind xmlns:D=\"DAV:\"><!--{}--></D:propfind>",
            "x".repeat(2 << 20)
        )),
    );
    // Huge headers.
    add(
        "one 200 KiB header",
        req(
            "PROPFIND",
            &folder(),
            &format!("X-Big: {}\r\n", "a".repeat(200 << 10)),
            b"",
        ),
    );
    add(
        "500 headers",
        req(
            "PROPFIND",
            &folder(),
            &(0..500)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>(),
            b"",
        ),
    );
    add(
        "huge request line",
        req("GET", &format!("/dav/{}", "a".repeat(300 << 10)), "", b""),
    );
    add("huge authorization", {
        let mut b = format!("PROPFIND {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {}\r\n\r\n", folder(), "QUFB".repeat(15_000)).into_bytes();
        b.truncate(b.len());
        b
    });
    // Absurd Depth.
    for d in [
        "99999999999999999999",
        "-1",
        "infinity",
        "1,1",
        "\u{7f}",
        "0 1",
        "",
    ] {
        add(
            &format!("depth {d:?}"),
            req("PROPFIND", "/dav/", &format!("Depth: {d}\r\n"), b""),
        );
    }
    add(
        "depth 123456789 on COPY of a document",
        req(
            "COPY",
            &doc("keep.txt"),
            &format!("Depth: 123456789\r\nDestination: {}\r\n", doc("c.txt")),
            b"",
        ),
    );
    // Invalid UTF-8 and overlong names.
    add(
        "put percent-encoded invalid utf-8",
        req(
            "PUT",
            &format!("/dav{}/%FF%FE%C0%AF.txt", url_path(FOLDER)),
            "",
            b"x",
        ),
    );
    add("put raw invalid utf-8 in request line", {
        let mut b = b"PUT /dav/\xff\xfe.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
        b.extend_from_slice(auth().as_bytes());
        b.extend_from_slice(b"Content-Length: 1\r\n\r\nx");
        b
    });
    add(
        "put overlong name",
        req("PUT", &doc(&"n".repeat(5000)), "", b"x"),
    );
    add(
        "mkcol overlong name",
        req("MKCOL", &doc(&"é".repeat(300)), "", b""),
    );
    add(
        "put 2000 segments",
        req(
            "PUT",
            &format!("/dav{}/{}x", url_path(FOLDER), "a/".repeat(2000)),
            "",
            b"x",
        ),
    );
    add(
        "put nul in name",
        req(
            "PUT",
            &format!("/dav{}/a%00b.txt", url_path(FOLDER)),
            "",
            b"x",
        ),
    );
    add(
        "put dotdot escape",
        req("PUT", "/dav/../../../../etc/passwd", "", b"x"),
    );
    add(
        "put encoded dotdot",
        req(
            "PUT",
            &format!("/dav{}/%2e%2e%2f%2e%2e%2fx", url_path(FOLDER)),
            "",
            b"x",
        ),
    );
    add(
        "put backslash",
        req(
            "PUT",
            &format!("/dav{}/a%5C..%5Cb", url_path(FOLDER)),
            "",
            b"x",
        ),
    );
    add(
        "move destination invalid utf-8",
        req(
            "MOVE",
            &doc("keep.txt"),
            "Destination: /dav/%FF%FF\r\n",
            b"",
        ),
    );
    add(
        "move destination overlong",
        req(
            "MOVE",
            &doc("keep.txt"),
            &format!("Destination: {}\r\n", doc(&"d".repeat(5000))),
            b"",
        ),
    );
    add(
        "move destination outside prefix (fuzz finding)",
        req(
            "MOVE",
            &doc("keep.txt"),
            "Destination: /davdata\r\nOverwrite: T\r\n",
            b"",
        ),
    );
    add(
        "copy destination dotdot outside",
        req(
            "COPY",
            &doc("keep.txt"),
            "Destination: /dav/../../etc/x\r\n",
            b"",
        ),
    );
    add(
        "copy destination garbage",
        req("COPY", &doc("keep.txt"), "Destination: ::::\r\n", b""),
    );
    // Lying lengths and framing.
    add("content-length larger than body", {
        let mut b = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Length: 100000\r\n\r\n",
            doc("short.txt"),
            auth()
        )
        .into_bytes();
        b.extend_from_slice(&[b'x'; 10]);
        b
    });
    add("content-length huge number", format!("PUT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Length: 99999999999999999999999\r\n\r\nx", doc("huge.txt"), auth()).into_bytes());
    add(
        "content-length negative",
        format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Length: -5\r\n\r\nx",
            doc("neg.txt"),
            auth()
        )
        .into_bytes(),
    );
    add("two content-lengths", format!("PUT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Length: 1\r\nContent-Length: 2\r\n\r\nxy", doc("two.txt"), auth()).into_bytes());
    add("chunked bad size", format!("PUT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Transfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n", doc("chunk.txt"), auth()).into_bytes());
    add("chunked huge size", format!("PUT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nxx\r\n", doc("chunk2.txt"), auth()).into_bytes());
    add("smuggling cl+te", format!("PUT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", doc("smug.txt"), auth()).into_bytes());
    // Methods, versions, junk.
    add("unknown method", req("FROBNICATE", &folder(), "", b""));
    add(
        "patch (disabled)",
        req(
            "PATCH",
            &doc("keep.txt"),
            "Content-Range: bytes 0-0/*\r\n",
            b"x",
        ),
    );
    add("http/0.9", b"GET /dav/\r\n".to_vec());
    add(
        "http/2 preface on http/1",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec(),
    );
    add(
        "binary junk",
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    );
    add("bad basic auth", format!("PROPFIND {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic !!!!\r\n\r\n", folder()).into_bytes());
    add("lock absurd timeout", req("LOCK", &doc("keep.txt"), "Timeout: Second-999999999999999999999, Infinite\r\nDepth: 0\r\n", br#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#));
    add(
        "if header garbage",
        req("PUT", &doc("keep.txt"), "If: (<<<<>>>> [\"x\"\r\n", b"x"),
    );
    c
}

fn normal_client(server: &Server) {
    let (code, body) = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &format!("http://{}{}", server.webdav, folder()),
    ]);
    assert_eq!(
        code,
        207,
        "normal PROPFIND: {}",
        String::from_utf8_lossy(&body)
    );
    let (code, body) = curl(&[&format!("http://{}{}", server.webdav, doc("keep.txt"))]);
    assert_eq!(
        (code, body.as_slice()),
        (200, &b"keep me"[..]),
        "normal GET"
    );
}

#[test]
fn bad_webdav_input_is_refused_and_the_server_stays_up() {
    if !have("curl", &["--version"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&tmp.path().join("data"), true);
    let url = format!("http://{}{}", server.webdav, doc("keep.txt"));
    let (code, _) = curl(&[
        "-H",
        "Expect:",
        "--data-binary",
        "keep me",
        "-X",
        "PUT",
        &url,
    ]);
    assert_eq!(code, 201);
    let rss0 = server.rss_kib();
    let mut report = Vec::new();
    for (name, bytes) in corpus() {
        let half_close = name.contains("larger than body") || name.starts_with("chunked");
        let (status, resp, took) = send(&server, &bytes, half_close);
        let text = String::from_utf8_lossy(&resp[..resp.len().min(300)]).into_owned();
        report.push(format!("{name}: {status:?} in {} ms", took.as_millis()));
        assert!(took < Duration::from_secs(10), "{name}: took {took:?}");
        let full = String::from_utf8_lossy(&resp).into_owned();
        assert!(
            !full.contains("root:"),
            "{name}: leaked a local file: {full}"
        );
        if name.contains("external entity") {
            // The parser never fetches external entities: the property is stored empty. Success
            // is fine as long as nothing of the file comes back (checked above and below).
            assert!(
                matches!(status, Some(207) | Some(400..=499) | None),
                "{name}: {text}"
            );
        } else if name.starts_with("depth ") && matches!(status, Some(201 | 207)) {
            // An unparseable Depth counts as absent (RFC 4918 default for PROPFIND is infinity,
            // but dav-server answers one level and refuses `infinity`): the answer must stay one
            // level deep, never a walk of the whole tree.
            assert!(
                !full.contains("Client%20Documents"),
                "{name}: recursed: {text}"
            );
        } else if name.starts_with("lock absurd timeout") && status == Some(200) {
            // Granted, but with a bounded timeout of the server's choosing.
            let secs: Option<u64> = full
                .split("<D:timeout>Second-")
                .nth(1)
                .and_then(|r| r.split('<').next())
                .and_then(|n| n.parse().ok());
            println!("{name}: granted for {secs:?} s");
            assert!(
                secs.is_some_and(|s| s <= 7 * 86400),
                "{name}: unbounded lock: {full}"
            );
        } else if name.starts_with("smuggling") {
            // RFC 9112 §6.1: Transfer-Encoding wins over Content-Length and the connection must
            // close afterwards; hyper does exactly that, so the smuggled request never runs.
            assert_eq!(
                text.matches("HTTP/1.1").count(),
                1,
                "{name}: a second response: {text}"
            );
            assert!(
                status.is_none() || text.contains("connection: close"),
                "{name}: {text}"
            );
        } else if let Some(code) = status {
            assert!(
                code >= 400 && code != 500,
                "{name}: answered {code}, not a clear refusal: {text}"
            );
        }
        assert!(server.alive(), "{name}: the server died");
        normal_client(&server);
    }
    println!("{}", report.join("\n"));
    let grew = server.rss_kib().saturating_sub(rss0);
    println!("server RSS growth over the corpus: {grew} KiB");
    assert!(
        grew < 200 * 1024,
        "the corpus grew the server by {grew} KiB"
    );
    // The external entity was never resolved into a stored property.
    let (_, body) = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 0",
        &format!("http://{}{}", server.webdav, doc("keep.txt")),
    ]);
    assert!(
        !String::from_utf8_lossy(&body).contains("root:"),
        "a local file leaked into a property"
    );
    // Nothing the corpus tried to create is there.
    let (_, body) = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &format!("http://{}{}", server.webdav, folder()),
    ]);
    let listing = String::from_utf8_lossy(&body).into_owned();
    for n in [
        "short.txt",
        "huge.txt",
        "neg.txt",
        "two.txt",
        "chunk",
        "passwd",
    ] {
        assert!(!listing.contains(n), "{n} was created: {listing}");
    }
    assert!(server.stop(), "the server did not stop cleanly");
}
