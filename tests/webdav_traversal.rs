//! A portal user can't reach another client's matter by any URL form: `..` plain and encoded
//! (`%2e%2e`, `.%2E`, double-encoded), encoded slashes (`%2f`), backslashes (raw and `%5c`),
//! double slashes, Unicode look-alikes (fullwidth solidus and full stop, one/two dot leaders,
//! overlong UTF-8), other spellings of the matter's name, overlong and over-deep paths, and the
//! same tricks in a COPY/MOVE `Destination`. Requests are sent byte for byte on raw connections
//! (no client-side normalisation). Nothing is read, written or copied across, and the server
//! answers every one with a clear status.

mod webdav_support;

use sdx_portal::model::{Actor, Principal};
use webdav_support::*;

const TAIL: &str = "Client%20Documents/secret.txt";

/// Path forms that try to climb from Alice's matter into Bob's.
fn escapes() -> Vec<String> {
    let mut v = vec![
        format!("/dav/{M1}/../{M2}/{TAIL}"),
        format!("/dav/{M1}/Client%20Documents/../../{M2}/{TAIL}"),
        format!("/dav/{M1}/%2e%2e/{M2}/{TAIL}"),
        format!("/dav/{M1}/%2E%2E/{M2}/{TAIL}"),
        format!("/dav/{M1}/.%2e/{M2}/{TAIL}"),
        format!("/dav/{M1}/%2e./{M2}/{TAIL}"),
        format!("/dav/{M1}/%252e%252e/{M2}/{TAIL}"),
        format!("/dav/{M1}/..%2f{M2}/{TAIL}"),
        format!("/dav/{M1}%2f..%2f{M2}%2f{TAIL}"),
        format!("/dav/{M1}/%2F..%2F{M2}/{TAIL}"),
        format!("/dav/{M1}/..\\{M2}\\Client%20Documents\\secret.txt"),
        format!("/dav/{M1}/..%5c{M2}%5cClient%20Documents%5csecret.txt"),
        format!("/dav/{M1}/%5c..%5c{M2}/{TAIL}"),
        format!("/dav//{M2}/{TAIL}"),
        format!("/dav/{M1}//..//{M2}//{TAIL}"),
        format!("//dav//{M2}//{TAIL}"),
        format!("/dav/./{M2}/{TAIL}"),
        format!("/dav/{M1}/..;/{M2}/{TAIL}"),
        // Unicode look-alikes: fullwidth solidus and full stops, leaders, overlong UTF-8 dots.
        format!("/dav/{M1}/%EF%BC%8F..%EF%BC%8F{M2}/{TAIL}"),
        format!("/dav/{M1}%EF%BC%8F..%EF%BC%8F{M2}%EF%BC%8F{TAIL}"),
        format!("/dav/{M1}/%EF%BC%8E%EF%BC%8E/{M2}/{TAIL}"),
        format!("/dav/{M1}/%E2%80%A5/{M2}/{TAIL}"),
        format!("/dav/{M1}/%E2%80%A4%E2%80%A4/{M2}/{TAIL}"),
        format!("/dav/{M1}/%C0%AE%C0%AE/{M2}/{TAIL}"),
        format!("/dav/{M1}/%E0%80%AE%E0%80%AE/{M2}/{TAIL}"),
        format!("/dav/{M1}/%E2%88%95..%E2%88%95{M2}/{TAIL}"),
        // Other spellings of Bob's matter, straight from the root.
        format!("/dav/{M2}/{TAIL}"),
        format!("/dav/2026-002%20OTHER%20V%20ELSE/{TAIL}"),
        format!("/dav/2026-002%20Other%20v%20Else%20/{TAIL}"),
        format!("/dav/2026-002%C2%A0Other%20v%20Else/{TAIL}"),
        format!("/dav/%32026-002%20Other%20v%20Else/{TAIL}"),
        // Overlong: thousands of ".." and over-deep paths.
        format!("/dav/{M1}/{}{M2}/{TAIL}", "../".repeat(3000)),
        format!("/dav/{M1}/{}{M2}/{TAIL}", "a/".repeat(100)),
        format!("/dav/{M1}/{}/{M2}/{TAIL}", "x".repeat(7000)),
    ];
    // Every climbing form again, pointed at Bob's folder instead of the file.
    let dirs: Vec<String> = v
        .iter()
        .filter_map(|p| p.strip_suffix("/secret.txt").map(|d| format!("{d}/")))
        .collect();
    v.extend(dirs);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_url_form_reaches_another_matter() {
    let w = World::new().await;
    let srv = w.serve().await;
    let a = auth(&alice());
    let secret = String::from_utf8_lossy(SECRET).into_owned();
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for path in escapes() {
        for (method, head, body) in [
            ("GET", String::new(), Vec::new()),
            ("HEAD", String::new(), Vec::new()),
            ("PROPFIND", "Depth: 1\r\n".to_string(), Vec::new()),
            ("PUT", String::new(), b"planted by alice".to_vec()),
            ("DELETE", String::new(), Vec::new()),
            ("LOCK", String::new(), br#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#.to_vec()),
            (
                "COPY",
                format!("Destination: /dav/{M1}/Client%20Documents/stolen.txt\r\n"),
                Vec::new(),
            ),
            (
                "MOVE",
                format!("Destination: http://localhost/dav/{M1}/Client%20Documents/stolen2.txt\r\n"),
                Vec::new(),
            ),
        ] {
            let r = http(srv.addr, method, &path, &format!("{a}{head}"), &body).await;
            let short: String = path.chars().take(120).collect();
            assert!(
                r.status >= 400 && r.status < 600,
                "{method} {short}: answered {}\n{}",
                r.status,
                r.body
            );
            assert!(!r.body.contains(&secret), "{method} {short}: leaked");
            assert!(!r.body.contains("secret.txt"), "{method} {short}: listed\n{}", r.body);
            *seen.entry(r.status).or_default() += 1;
        }
    }
    eprintln!("statuses: {seen:?}");

    // Destinations that climb out of Alice's matter.
    let src = format!("/dav/{M1}/Client%20Documents/mine.txt");
    let r = http(srv.addr, "PUT", &src, &a, b"alice's own").await;
    assert_eq!(r.status, 201);
    for dest in [
        format!("/dav/{M1}/../{M2}/Client%20Documents/planted.txt"),
        format!("http://localhost/dav/{M1}/%2e%2e/{M2}/Client%20Documents/planted.txt"),
        format!("http://localhost/dav/{M1}/..%2f{M2}/Client%20Documents/planted.txt"),
        format!("http://localhost/dav/{M1}\\..\\{M2}\\Client%20Documents\\planted.txt"),
        format!("http://localhost/dav/{M2}/Client%20Documents/planted.txt"),
        format!("http://localhost/dav//{M2}/Client%20Documents/planted.txt"),
        format!("http://localhost/{M2}/Client%20Documents/planted.txt"),
        format!("http://localhost/dav/../dav/{M2}/Client%20Documents/planted.txt"),
    ] {
        for method in ["COPY", "MOVE"] {
            let r = http(
                srv.addr,
                method,
                &src,
                &format!("{a}Destination: {dest}\r\n"),
                b"",
            )
            .await;
            assert!(
                r.status >= 400 && r.status < 500,
                "{method} -> {dest}: {} {}",
                r.status,
                r.body
            );
        }
    }

    // Bob's matter is untouched and nothing of his reached Alice's.
    let staff = w.portal.tree(Actor::api(Principal::Staff(w.demo.staff)));
    let names: Vec<String> = staff
        .list(&format!("/{M2_NAME}/Client Documents"))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| !e.is_dir())
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["secret.txt"]);
    let mut theirs = Vec::new();
    for f in ["Client Documents", "Correspondence"] {
        for e in staff
            .list(&format!("/2026-001 Smith v Jones/{f}"))
            .await
            .unwrap()
        {
            theirs.push(e.name);
        }
    }
    assert!(
        theirs.iter().all(|n| n == "mine.txt" || n == "Tax Returns"),
        "{theirs:?}"
    );
    // The server still serves.
    let r = http(srv.addr, "GET", &src, &a, b"").await;
    assert_eq!((r.status, r.body.as_str()), (200, "alice's own"));
    srv.server.shutdown().await.unwrap();
}
