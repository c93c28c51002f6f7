//! Fuzz the SFTP front end without SSH: a byte stream → the transport's channel task
//! (`sftp::transport::run_in_memory`: framing and request checks, russh-sftp's packet parser, in-order
//! dispatch) → the portal's handler (`PortalSftp`) over an in-memory portal holding the demo firm
//! (built once per process), with every reply read back.
//!
//! Input: the first byte picks the framing, the rest is the client's byte stream.
//! - even: **raw** — the bytes as the client sent them, framed the way `sftp::transport` does
//!   (4-byte big-endian length, `0 < length <= 256 KiB`; a violation ends the session, a partial
//!   tail is dropped), so lying outer lengths are covered;
//! - odd: **u16-framed** — each packet is `u16 length ‖ body`, re-framed with a correct u32 length,
//!   so the fuzzer spends its time on packet contents (whose inner string lengths still lie).
//!
//! Each session starts with a valid `SSH_FXP_INIT` (version 3) ahead of the fuzzed packets.
//! Checks: no panic, no hang (10 s per session), and the replies are well-formed frames, one per
//! request at most.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdx_portal::model::{Actor, Channel, Principal};
use sdx_portal::sftp::TransportConfig;
use sdx_portal::sftp::handler::PortalSftp;
use sdx_portal::{Portal, demo};
use std::sync::OnceLock;
use std::time::Duration;

/// As `TransportConfig::default().max_packet_len`.
const MAX_PACKET: u32 = 256 * 1024;

struct State {
    rt: tokio::runtime::Runtime,
    portal: Portal,
    who: Principal,
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (portal, who) = rt.block_on(async {
            // Documents up to 16 MiB: the in-memory store materialises a write far past the end
            // (the encrypted store keeps it sparse), and inputs are kept between runs.
            let portal = sdx_portal::PortalBuilder::memory()
                .blob_store(std::sync::Arc::new(
                    sdx_portal::blob::mem::MemBlobStore::with_limit(16 << 20),
                ))
                .open()
                .await
                .expect("in-memory portal");
            demo::provision(&portal).await.expect("demo data");
            let who = portal
                .authenticate_password(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
                .await
                .expect("demo login");
            let tree = portal.tree(Actor::api(who));
            let mut up = tree
                .open_write(
                    "/2026-001 Smith v Jones/Client Documents/letter.txt",
                    sdx_portal::tree::WriteOptions::upload(),
                )
                .await
                .expect("upload");
            up.write(&[b'x'; 100_000]).await.expect("write");
            up.commit().await.expect("commit");
            (portal, who)
        });
        State { rt, portal, who }
    })
}

fn frame(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// The client's stream: INIT, then the fuzzed frames (at most 64 of them; in raw mode followed by
/// whatever broke the framing); and how many requests it holds.
fn frames(data: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    frame(&[1, 0, 0, 0, 3], &mut out);
    let mut n = 1;
    let Some((&mode, mut rest)) = data.split_first() else {
        return (out, n);
    };
    while n < 65 {
        if mode % 2 == 0 {
            // The transport's rule: check the length as soon as its 4 bytes are in.
            // A lying length or a cut-short tail goes to the transport as it is: it must end
            // the session (or drop the tail at EOF) after answering the frames before it.
            let Some(h) = rest.get(..4) else {
                out.extend_from_slice(rest);
                break;
            };
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            if len == 0 || len > MAX_PACKET {
                out.extend_from_slice(rest);
                break;
            }
            let Some(body) = rest.get(4..4 + len as usize) else {
                out.extend_from_slice(rest);
                break;
            };
            frame(body, &mut out);
            rest = &rest[4 + len as usize..];
        } else {
            let Some(h) = rest.get(..2) else { break };
            let len = usize::from(u16::from_be_bytes([h[0], h[1]]));
            let body = rest.get(2..2 + len).unwrap_or(&rest[2..]);
            if body.is_empty() {
                break;
            }
            frame(body, &mut out);
            rest = &rest[2 + body.len()..];
        }
        n += 1;
    }
    (out, n)
}

fuzz_target!(|data: &[u8]| {
    let st = state();
    let (input, requests) = frames(data);
    st.rt.block_on(async {
        let tree = st.portal.tree(Actor::new(
            st.who,
            Channel::Sftp,
            Some("127.0.0.1:40000".parse().expect("addr")),
        ));
        // Delivered in pieces whose size the input picks, as SSH packets would split it.
        let piece = 1 + usize::from(data.first().copied().unwrap_or(0) >> 1) * 523;
        let config = TransportConfig::default();
        let session = sdx_portal::sftp::transport::run_in_memory(
            PortalSftp::new(tree),
            &config,
            &input,
            piece,
        );
        let replies = tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the SFTP session did not end within 10 s");
        let mut rest = replies.as_slice();
        let mut count = 0usize;
        while !rest.is_empty() {
            let h = rest.get(..4).expect("a reply's length is cut short");
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            assert!(len > 0, "an empty reply frame");
            assert!(len <= 300 * 1024, "a reply of {len} bytes");
            rest = rest.get(4 + len..).expect("a reply's body is cut short");
            count += 1;
        }
        assert!(
            count <= requests,
            "{count} replies to {requests} requests (the stream desynchronised)"
        );
    });
});
