//! Fuzz the WebDAV front end end to end: method, URL, headers and body → `DavService::handle` →
//! response, against an in-memory portal holding the demo firm (built once per process).
//!
//! Input format (text-like, so seeds are readable and the fuzzer's mutations stay meaningful):
//!
//! ```text
//! METHOD PATH\n          PATH without a leading '/' is taken under /dav/
//! Name: value\n          any number of headers
//! \n
//! body bytes
//! ```
//!
//! Requests are authenticated as the demo client (a fuzzed `Authorization` header is dropped so
//! the fuzzer can't lock the login out); a method line starting with `!` sends no credentials.
//!
//! Checks: no panic, no hang (10 s per request), no 500 (an internal error on client input is a
//! bug: bad input must be answered with a 4xx), a well-formed response whose body can be read.
#![no_main]

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use sdx_portal::model::Principal;
use sdx_portal::webdav::DavService;
use sdx_portal::{Portal, demo};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

struct State {
    rt: tokio::runtime::Runtime,
    svc: DavService<Principal>,
    auth: HeaderValue,
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let svc = rt.block_on(async {
            let portal = Portal::in_memory().await.expect("in-memory portal");
            demo::provision(&portal).await.expect("demo data");
            // A document to read, copy, move and lock.
            let who = portal
                .authenticate_password(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
                .await
                .expect("demo login");
            let tree = portal.tree(sdx_portal::model::Actor::api(who));
            let mut up = tree
                .open_write(
                    "/2026-001 Smith v Jones/Client Documents/letter.txt",
                    sdx_portal::tree::WriteOptions::upload(),
                )
                .await
                .expect("upload");
            up.write(b"Dear Sir or Madam,\n").await.expect("write");
            up.commit().await.expect("commit");
            sdx_portal::webdav::mount::builder(&portal, "127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("webdav builder")
                .build_service()
        });
        let token = base64_basic(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD);
        State {
            rt,
            svc,
            auth: HeaderValue::from_str(&token).expect("auth header"),
        }
    })
}

fn base64_basic(user: &str, pass: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{pass}").into_bytes();
    let mut out = String::from("Basic ");
    for c in raw.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Splits the input into (method line, header lines, body).
fn parse(data: &[u8]) -> Option<(bool, Request<Full<Bytes>>)> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = lines.next()?;
    let (anon, first) = match first.strip_prefix(b"!") {
        Some(rest) => (true, rest),
        None => (false, first),
    };
    let sp = first.iter().position(|b| *b == b' ')?;
    let method = Method::from_bytes(&first[..sp]).ok()?;
    let raw_path = std::str::from_utf8(&first[sp + 1..]).ok()?;
    let path = if raw_path.starts_with('/') || raw_path == "*" {
        raw_path.to_string()
    } else {
        format!("/dav/{raw_path}")
    };
    let mut req = Request::builder().method(method).uri(path);
    let mut has_len = false;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let Ok(name) = HeaderName::from_bytes(&line[..colon]) else {
            continue;
        };
        if name == http::header::AUTHORIZATION {
            continue;
        }
        let v = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        let Ok(value) = HeaderValue::from_bytes(v) else {
            continue;
        };
        has_len |= name == http::header::CONTENT_LENGTH;
        req = req.header(name, value);
    }
    if !has_len && !body.is_empty() {
        req = req.header(http::header::CONTENT_LENGTH, body.len());
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).ok()?;
    Some((anon, req))
}

fuzz_target!(|data: &[u8]| {
    let Some((anon, mut req)) = parse(data) else {
        return;
    };
    let st = state();
    if !anon {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, st.auth.clone());
    }
    let remote: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let method = req.method().clone();
    let uri = req.uri().clone();
    st.rt.block_on(async {
        let fut = st.svc.handle(req, remote);
        let resp = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .unwrap_or_else(|_| panic!("{method} {uri}: no response within 10 s"));
        let status = resp.status();
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {uri}: internal error on client input"
        );
        // Read the whole body (bounded): PROPFIND bodies are generated while streaming.
        let mut body = resp.into_body();
        let mut total = 0usize;
        let read = async {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(d) = frame.data_ref() {
                    total += d.len();
                    assert!(total <= 64 << 20, "{method} {uri}: response over 64 MiB");
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| panic!("{method} {uri}: body not finished within 10 s"));
    });
});
