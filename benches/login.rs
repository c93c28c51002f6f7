//! Login cost: one Argon2id verify with the chosen parameters, and a burst of 50 parallel
//! logins on the tokio runtime (`verify_async`: blocking pool + one hashing slot per core).
//!
//! `cargo bench -j2 --bench login` prints criterion's figures and, for the bursts, the total
//! time and p50/p95/max per-login latency over several bursts:
//! - `verify_async` alone (Argon2id on the blocking pool, one hashing slot per core);
//! - the whole portal path, `Portal::authenticate_password_from` (throttle, login lookup,
//!   Argon2id, audit entry committed to an on-disk store), from 50 different addresses and from
//!   one address (an office behind NAT: the throttle lets at most 20 attempts per address be
//!   in flight);
//! - over the wire: 50 parallel WebDAV `PROPFIND`s with Basic auth of 50 different logins on
//!   loopback (the server's login cache off, so every request verifies).
//!
//! The burst reports are printed (stderr) before criterion's own figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sdx_portal::accounts::password::{
    ARGON2_M_COST_KIB, ARGON2_P_COST, ARGON2_T_COST, hash_password, verify_async, verify_dummy,
    verify_password,
};

const BURST: usize = 50;

fn single(c: &mut Criterion) {
    let phc = hash_password("bench password 0001").unwrap_or_default();
    let mut g = c.benchmark_group(format!(
        "argon2id m={ARGON2_M_COST_KIB}KiB t={ARGON2_T_COST} p={ARGON2_P_COST}"
    ));
    g.sample_size(20);
    g.bench_function("verify (wrong password)", |b| {
        b.iter(|| black_box(verify_password(black_box("bench password 0002"), &phc)))
    });
    g.bench_function("verify_dummy (unknown login)", |b| {
        b.iter(|| black_box(verify_dummy(black_box("bench password 0002"))))
    });
    g.bench_function("hash", |b| {
        b.iter(|| black_box(hash_password(black_box("bench password 0003"))))
    });
    g.finish();
}

/// One burst: returns (total, per-login latencies).
async fn burst(phc: &str) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..BURST)
        .map(|i| {
            let phc = phc.to_owned();
            tokio::spawn(async move {
                let t = Instant::now();
                let pw = if i % 2 == 0 {
                    "bench password 0001"
                } else {
                    "wrong"
                };
                let _ = verify_async(pw.to_owned(), Some(phc)).await;
                t.elapsed()
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(BURST);
    for t in tasks {
        if let Ok(d) = t.await {
            lat.push(d);
        }
    }
    (start.elapsed(), lat)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn parallel(c: &mut Criterion) {
    let phc = hash_password("bench password 0001").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Explicit percentile report over 10 bursts (500 logins).
    let mut all = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..10 {
        let (total, lat) = rt.block_on(burst(&phc));
        totals.push(total);
        all.extend(lat);
    }
    all.sort();
    totals.sort();
    eprintln!(
        "burst of {BURST} parallel logins x10: total median {:.0} ms (min {:.0}, max {:.0}); \
         per-login p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        pct(&totals, 0.5).as_secs_f64() * 1e3,
        totals.first().copied().unwrap_or_default().as_secs_f64() * 1e3,
        totals.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        pct(&all, 0.5).as_secs_f64() * 1e3,
        pct(&all, 0.95).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    let mut g = c.benchmark_group("login burst");
    g.sample_size(10);
    g.bench_function(format!("{BURST} parallel verify_async (total)"), |b| {
        b.iter_custom(|iters| {
            let mut sum = Duration::ZERO;
            for _ in 0..iters {
                sum += rt.block_on(burst(&phc)).0;
            }
            sum
        })
    });
    g.finish();
}

/// The tuning data behind the chosen parameters: raw Argon2id cost for a few (m, t) pairs.
/// Run alone with `cargo bench --bench login -- sweep`.
fn sweep(c: &mut Criterion) {
    use argon2::{Algorithm, Argon2, Params, Version};
    let mut g = c.benchmark_group("argon2id sweep");
    g.sample_size(10);
    for (m, t) in [
        (19_456u32, 2u32),
        (19_456, 3),
        (19_456, 4),
        (32_768, 2),
        (47_104, 1),
        (65_536, 1),
    ] {
        let Ok(params) = Params::new(m, t, 1, Some(32)) else {
            continue;
        };
        let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = [0u8; 32];
        g.bench_function(format!("m={m}KiB t={t} p=1"), |b| {
            b.iter(|| a.hash_password_into(b"bench password", b"0123456789abcdef", &mut out))
        });
    }
    g.finish();
}

fn report(what: &str, totals: &mut [Duration], all: &mut [Duration]) {
    all.sort();
    totals.sort();
    eprintln!(
        "{what}: {} bursts of {BURST}: total median {:.0} ms (min {:.0}, max {:.0}); \
         per-login p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        totals.len(),
        pct(totals, 0.5).as_secs_f64() * 1e3,
        totals.first().copied().unwrap_or_default().as_secs_f64() * 1e3,
        totals.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        pct(all, 0.5).as_secs_f64() * 1e3,
        pct(all, 0.95).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// A portal on disk with `BURST` portal logins (`user{i}@bench.test`, one password).
async fn bench_portal(dir: &std::path::Path) -> sdx_portal::Portal {
    use sdx_portal::model::*;
    let portal = sdx_portal::Portal::open(dir).await.expect("portal");
    let firm = Actor::system();
    for i in 0..BURST {
        let c = portal
            .create_contact(&firm, "Bench", &format!("user{i}@bench.test"))
            .await
            .expect("contact");
        portal
            .create_portal_login(&firm, c, Some("bench password 0001"))
            .await
            .expect("login");
    }
    portal
}

fn portal_path(c: &mut Criterion) {
    use sdx_portal::model::Channel;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let portal = rt.block_on(bench_portal(dir.path()));
    for (label, one_address) in [
        ("portal, 50 addresses", false),
        ("portal, one address", true),
    ] {
        let mut totals = Vec::new();
        let mut all = Vec::new();
        for _ in 0..10 {
            let start = Instant::now();
            let tasks: Vec<_> = (0..BURST)
                .map(|i| {
                    let portal = portal.clone();
                    let ip = if one_address {
                        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
                    } else {
                        IpAddr::V4(Ipv4Addr::new(10, 0, 1, i as u8))
                    };
                    rt.spawn(async move {
                        let t = Instant::now();
                        let r = portal
                            .authenticate_password_from(
                                &format!("user{i}@bench.test"),
                                "bench password 0001",
                                Channel::WebDav,
                                Some(SocketAddr::new(ip, 40000)),
                            )
                            .await;
                        assert!(r.is_ok(), "{r:?}");
                        t.elapsed()
                    })
                })
                .collect();
            for t in tasks {
                if let Ok(d) = rt.block_on(t) {
                    all.push(d);
                }
            }
            totals.push(start.elapsed());
        }
        report(label, &mut totals, &mut all);
    }

    // Over the wire: WebDAV on loopback, plain HTTP/1.1, login cache off.
    let server = rt.block_on(async {
        sdx_portal::webdav::mount::builder(&portal, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("builder")
            .limits(sdx_portal::webdav::ServerLimits {
                auth_cache_ttl: Duration::ZERO,
                ..Default::default()
            })
            .bind()
            .await
            .expect("bind")
            .spawn()
    });
    let addr = server.local_addr();
    let mut totals = Vec::new();
    let mut all = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let tasks: Vec<_> = (0..BURST).map(|i| rt.spawn(propfind(addr, i))).collect();
        for t in tasks {
            if let Ok(d) = rt.block_on(t) {
                all.push(d);
            }
        }
        totals.push(start.elapsed());
    }
    report(
        "WebDAV PROPFIND, 50 logins, cache off",
        &mut totals,
        &mut all,
    );
    rt.block_on(server.shutdown()).expect("shutdown");

    let mut g = c.benchmark_group("login burst, portal path");
    g.sample_size(10);
    g.bench_function(
        format!("{BURST} parallel authenticate_password_from"),
        |b| {
            b.iter_custom(|iters| {
                let mut sum = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..BURST)
                        .map(|i| {
                            let portal = portal.clone();
                            rt.spawn(async move {
                                let _ = portal
                                    .authenticate_password_from(
                                        &format!("user{i}@bench.test"),
                                        "bench password 0001",
                                        Channel::WebDav,
                                        Some(SocketAddr::new(
                                            IpAddr::V4(Ipv4Addr::new(10, 0, 2, i as u8)),
                                            40000,
                                        )),
                                    )
                                    .await;
                            })
                        })
                        .collect();
                    for t in tasks {
                        let _ = rt.block_on(t);
                    }
                    sum += start.elapsed();
                }
                sum
            })
        },
    );
    g.finish();
}

/// One PROPFIND Depth 0 of `/dav/` as `user{i}` over a fresh connection; its latency.
async fn propfind(addr: std::net::SocketAddr, i: usize) -> Duration {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = Instant::now();
    let cred = base64::engine::general_purpose::STANDARD
        .encode(format!("user{i}@bench.test:bench password 0001"));
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "PROPFIND /dav/ HTTP/1.1\r\nHost: {addr}\r\nDepth: 0\r\nAuthorization: Basic {cred}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(12)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 207"), "{head}");
    t.elapsed()
}

criterion_group!(benches, single, parallel, sweep, portal_path);
criterion_main!(benches);
