//! HTTP/2 over TLS (chosen by ALPN) with curl: a 64 MiB PUT and GET through the real server into
//! the encrypted blob store, byte-identical, with HTTP/1.1 over TLS alongside for comparison
//! (speeds are printed, not asserted: this is a shared, noisy machine).
//!
//! `SDX_H2_MIB` changes the size. Needs curl (fails without it when CI=true).

mod webdav_support;

use sdx_portal::PortalBuilder;
use std::sync::Arc;
use webdav_support::*;

fn sha256_file(p: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    ctx.finish().as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_and_http11_over_tls_put_and_get_64_mib() {
    if !have_tool("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let key = data_dir.join("master.key");
    sdx_portal::crypto::KeyFile::create(&key).unwrap();
    let portal = PortalBuilder::new(&data_dir)
        .key_provider(Arc::new(sdx_portal::crypto::KeyFile::new(key)))
        .open()
        .await
        .unwrap();
    let w = World::with_portal(portal).await;
    let (cert, tls_key) = sdx_portal::tls::generate_self_signed(
        dir.path(),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .unwrap();
    let tls = sdx_portal::tls::load_server_config(&cert, &tls_key).unwrap();
    let server = sdx_portal::webdav::mount::builder(&w.portal, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .tls(Some(tls))
        .bind()
        .await
        .unwrap()
        .spawn();
    let port = server.local_addr().port();

    let mib: usize = std::env::var("SDX_H2_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let src = dir.path().join("src.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for b in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            f.write_all(&block).unwrap();
        }
    }
    let want = sha256_file(&src);
    let dir_path = dir.path().to_path_buf();
    let cert = cert.clone();
    tokio::task::spawn_blocking(move || {
        for (proto, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let url = format!(
                "https://localhost:{port}/dav/{M1}/Internal/big-{}.bin",
                version.replace('.', "")
            );
            let resolve = format!("localhost:{port}:127.0.0.1");
            let common = |extra: &[&str]| {
                let mut v: Vec<String> = vec![
                    "-sS".into(),
                    proto.into(),
                    "--resolve".into(),
                    resolve.clone(),
                    "--cacert".into(),
                    cert.display().to_string(),
                    "-u".into(),
                    staff(),
                ];
                v.extend(extra.iter().map(|s| s.to_string()));
                v
            };
            let out = std::process::Command::new("curl")
                .args(common(&[
                    "-T",
                    src.to_str().unwrap(),
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{http_version} %{speed_upload}",
                    &url,
                ]))
                .output()
                .unwrap();
            let put = String::from_utf8_lossy(&out.stdout).into_owned();
            let p: Vec<&str> = put.split_whitespace().collect();
            assert_eq!(
                p.get(..2),
                Some(&["201", version][..]),
                "PUT {proto}: {put} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let dst = dir_path.join(format!("back-{version}.bin"));
            let out = std::process::Command::new("curl")
                .args(common(&[
                    "-o",
                    dst.to_str().unwrap(),
                    "-w",
                    "%{http_code} %{http_version} %{speed_download}",
                    &url,
                ]))
                .output()
                .unwrap();
            let get = String::from_utf8_lossy(&out.stdout).into_owned();
            let g: Vec<&str> = get.split_whitespace().collect();
            assert_eq!(
                g.get(..2),
                Some(&["200", version][..]),
                "GET {proto}: {get}"
            );
            assert_eq!(std::fs::metadata(&dst).unwrap().len(), (mib << 20) as u64);
            assert_eq!(sha256_file(&dst), want, "{proto}: content differs");
            let mbs = |s: &str| s.parse::<f64>().unwrap_or(0.0) / 1e6;
            eprintln!(
                "{mib} MiB over TLS, HTTP/{version}: PUT {:.0} MB/s, GET {:.0} MB/s",
                mbs(p[2]),
                mbs(g[2])
            );
            let _ = std::fs::remove_file(&dst);
        }
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}
