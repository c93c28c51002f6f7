//! A bad-input corpus sent to the running `sdx serve` over SFTP (issue 8): SFTP packets with lying
//! outer and inner lengths, truncated and unknown packets, invalid UTF-8 and overlong names, absurd
//! attribute counts, a flood of junk packets; and junk on the SSH port itself. After a real SSH
//! login (paramiko) each case opens the `sftp` subsystem, sends INIT and the bad bytes, and must be
//! answered with an error status or dropped (channel closed), with a bounded amount of reply; the
//! server must stay up, and a normal client must list the matter right after. Needs python3 with
//! paramiko (fails without it under `CI=true`, else skipped).

mod fault_util;

use fault_util::{Server, have, python, sftp_py};
use sdx_portal::demo;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// A correctly framed packet: type, request id, body.
fn pkt(t: u8, id: u32, body: &[u8]) -> Vec<u8> {
    let mut inner = vec![t];
    inner.extend_from_slice(&id.to_be_bytes());
    inner.extend_from_slice(body);
    s(&inner)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

const DOC_DIR: &str = "/2026-001 Smith v Jones/Client Documents/Tax Returns";

/// (name, bytes after INIT, whether the session must be closed for it).
fn corpus() -> Vec<(&'static str, Vec<u8>, bool)> {
    let u32b = |v: u32| v.to_be_bytes().to_vec();
    let path = |p: &str| s(p.as_bytes());
    let open_w = |name: &[u8]| {
        let mut b = s(name);
        b.extend_from_slice(&u32b(0x1a)); // WRITE|CREAT|TRUNC
        b.extend_from_slice(&u32b(0)); // no attrs
        b
    };
    vec![
        ("outer length 0", u32b(0), true),
        (
            "outer length 4 GiB",
            cat(&[u32b(u32::MAX), vec![0x11; 64]]),
            true,
        ),
        (
            "outer length over the limit, body sent",
            cat(&[u32b(300_000), vec![0x11; 300_000]]),
            true,
        ),
        (
            "inner path length beyond the packet",
            cat(&[s(&[
                17, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf0, b'a', b'b', b'c',
            ])]),
            false,
        ),
        ("truncated packet (type only)", s(&[17]), false),
        ("packet without its id", s(&[3, 0, 0]), false),
        ("unknown packet type", pkt(0xee, 7, b"whatever"), false),
        (
            "invalid utf-8 path",
            pkt(17, 2, &s(b"/\xff\xfe\xfd")),
            false,
        ),
        (
            "invalid utf-8 upload name",
            pkt(
                3,
                3,
                &open_w(b"/2026-001 Smith v Jones/Client Documents/Tax Returns/\xc0\xaf.txt"),
            ),
            false,
        ),
        (
            "overlong upload name",
            pkt(
                3,
                4,
                &open_w(format!("{DOC_DIR}/{}", "n".repeat(10_000)).as_bytes()),
            ),
            false,
        ),
        (
            "2000-segment path",
            pkt(17, 5, &path(&"/a".repeat(2000))),
            false,
        ),
        (
            "nul in path",
            pkt(17, 6, &path("/2026-001 Smith v Jones\0/x")),
            false,
        ),
        (
            "write length beyond the packet",
            pkt(
                6,
                8,
                &cat(&[
                    s(b"h1"),
                    0u64.to_be_bytes().to_vec(),
                    u32b(1 << 30),
                    vec![1; 10],
                ]),
            ),
            false,
        ),
        (
            "write at offset 2^63 on an upload",
            cat(&[
                pkt(3, 9, &open_w(format!("{DOC_DIR}/far.bin").as_bytes())),
                pkt(
                    6,
                    10,
                    &cat(&[s(b"h1"), (1u64 << 63).to_be_bytes().to_vec(), s(b"xyz")]),
                ),
                pkt(4, 11, &s(b"h1")),
            ]),
            false,
        ),
        (
            "read of 4 GiB on a bogus handle",
            pkt(
                5,
                12,
                &cat(&[s(b"nope"), 0u64.to_be_bytes().to_vec(), u32b(u32::MAX)]),
            ),
            false,
        ),
        (
            "mkdir with 4 billion extended attributes",
            pkt(
                14,
                13,
                &cat(&[
                    path(&format!("{DOC_DIR}/d")),
                    u32b(0x8000_0000),
                    u32b(u32::MAX),
                    s(b"k"),
                    s(b"v"),
                ]),
            ),
            false,
        ),
        (
            "setstat with every attribute flag and nothing after",
            pkt(
                9,
                14,
                &cat(&[path(&format!("{DOC_DIR}/x")), u32b(u32::MAX)]),
            ),
            false,
        ),
        (
            "posix-rename with lying inner lengths",
            pkt(
                200,
                15,
                &cat(&[
                    s(b"posix-rename@openssh.com"),
                    u32b(1 << 30),
                    b"/a".to_vec(),
                ]),
            ),
            false,
        ),
        ("extended with an empty name", pkt(200, 16, &s(b"")), false),
        ("a second INIT", pkt(1, 3, &[]), false),
        (
            "1000 junk packets",
            (0..1000u32)
                .flat_map(|i| pkt((i % 256) as u8, i, &i.to_le_bytes()))
                .collect(),
            false,
        ),
    ]
}

fn raw(server: &Server, bytes: &[u8]) -> (usize, bool) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    let out = sftp_py(&[
        "raw",
        &server.sftp.port().to_string(),
        demo::DEMO_CLIENT_EMAIL,
        demo::DEMO_PASSWORD,
        &format!("@{}", f.path().display()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let received = text
        .lines()
        .find_map(|l| l.strip_prefix("RECEIVED "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the raw probe broke: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (received, text.contains("CLOSED yes"))
}

fn normal_client(server: &Server) {
    let out = sftp_py(&[
        "ls",
        &server.sftp.port().to_string(),
        demo::DEMO_CLIENT_EMAIL,
        demo::DEMO_PASSWORD,
        "/2026-001 Smith v Jones",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Client Documents"),
        "normal SFTP client: {text}"
    );
}

#[test]
fn bad_sftp_input_is_refused_and_the_server_stays_up() {
    if !have(&python(), &["-c", "import paramiko"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&tmp.path().join("data"), true);
    let rss0 = server.rss_kib();
    // What INIT alone draws (the VERSION reply), for comparison.
    let (base, closed) = raw(&server, &[]);
    assert!(
        base > 0 && !closed,
        "INIT alone: {base} bytes, closed {closed}"
    );
    let mut report = vec![format!("INIT alone: {base} bytes")];
    for (name, bytes, must_close) in corpus() {
        let t = Instant::now();
        let (got, closed) = raw(&server, &bytes);
        let took = t.elapsed();
        report.push(format!(
            "{name}: {got} bytes back, closed {closed}, {} ms, server RSS {} KiB",
            took.as_millis(),
            server.rss_kib()
        ));
        if must_close {
            assert!(closed, "{name}: the session was not closed");
            assert!(
                got <= base + 1024,
                "{name}: {got} bytes of replies to a framing violation"
            );
        } else {
            assert!(
                closed || got > base,
                "{name}: neither an answer nor a close"
            );
        }
        // One reply at most per request (a status is well under 1 KiB).
        assert!(got <= base + 1100 * 1024, "{name}: {got} bytes of replies");
        assert!(server.alive(), "{name}: the server died");
        normal_client(&server);
    }
    // Junk on the SSH port itself: nothing served, server fine, other clients unaffected.
    let mut held = Vec::new();
    for junk in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0u8; 70_000],
        format!("SSH-2.0-{}\r\n", "x".repeat(100_000)).into_bytes(),
        b"SSH-2.0-ok\r\n\x00\x00\xff\xff\x00junk".to_vec(),
    ] {
        let mut c = TcpStream::connect(server.sftp).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = c.write_all(&junk);
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        let t = Instant::now();
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        let closed = t.elapsed() < Duration::from_secs(3);
        report.push(format!(
            "SSH junk of {} bytes: {total} bytes back, {}",
            junk.len(),
            if closed {
                format!("closed after {} ms", t.elapsed().as_millis())
            } else {
                "still open after 3 s (waiting for the rest of an SSH packet; the login grace time ends it)".into()
            }
        ));
        assert!(total < 64 * 1024, "{total} bytes sent back to junk");
        assert!(server.alive());
        held.push(c);
    }
    // With those connections still open, a normal client gets in.
    normal_client(&server);
    drop(held);
    println!("{}", report.join("\n"));
    let grew = server.rss_kib().saturating_sub(rss0);
    println!("server RSS growth over the corpus: {grew} KiB");
    // Each SSH login runs one Argon2id verification that allocates 19 MiB on a blocking thread;
    // glibc keeps that block in the thread's malloc arena after it is freed, so RSS steps up by
    // ~19 MiB per login until every arena (8 per core) holds one (~300 MiB), then stays flat.
    // This bounds that; a leak per connection would pass it only with far fewer connections.
    assert!(
        grew < 512 * 1024,
        "the corpus grew the server by {grew} KiB"
    );
    assert!(server.stop(), "the server did not stop cleanly");
}
