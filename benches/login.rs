//! Login cost: one Argon2id verify with the chosen parameters, and a burst of 50 parallel
//! logins on the tokio runtime (`verify_async`: blocking pool + one hashing slot per core).
//!
//! `cargo bench -j2 --bench login` prints criterion's figures and, for the burst, the total
//! time and p50/p95/max per-login latency over several bursts.

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

criterion_group!(benches, single, parallel, sweep);
criterion_main!(benches);
