//! rclone's WebDAV remote (vendor `owncloud`) against the real server, as a portal user: copy up
//! and down, `rclone check` comparing checksums, modification times kept through `X-OC-Mtime`,
//! `oc:checksums` served and bound to the content (a later update by another channel hides them
//! rather than serving stale ones), and an `OC-Checksum` mismatch refused.
//!
//! Needs rclone and curl (fails without them when CI=true).

mod webdav_support;

use sdx_portal::model::{Actor, Principal};
use sdx_portal::tree::WriteOptions;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};
use webdav_support::*;

const FOLDER: &str = "2026-001 Smith v Jones/Client Documents/Tax Returns";

fn rclone(conf: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("rclone")
        .env("RCLONE_CONFIG", conf)
        .args(args)
        .output()
        .expect("rclone runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn md5_hex(b: &[u8]) -> String {
    format!("{:x}", md5::compute(b))
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        b,
    ))
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn mtime_secs(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `rclone lsjson --hash` as (name, size, modtime RFC 3339, md5, sha1).
fn lsjson(conf: &Path) -> Vec<(String, u64, String, String, String)> {
    let (ok, out) = rclone(conf, &["lsjson", "--hash", &format!("dav:{FOLDER}")]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["IsDir"] == false)
        .map(|e| {
            (
                e["Name"].as_str().unwrap().to_string(),
                e["Size"].as_u64().unwrap(),
                e["ModTime"].as_str().unwrap().to_string(),
                e["Hashes"]["md5"].as_str().unwrap_or("").to_string(),
                e["Hashes"]["sha1"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn rfc3339(secs: u64) -> String {
    // Civil date from days since the epoch (inverse of days_from_civil).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_copies_up_and_down_with_checksums_and_mtimes() {
    if !have_tool("rclone") || !have_tool("curl") {
        return;
    }
    let w = World::new().await;
    let srv = w.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up");
    let down = dir.path().join("down");
    std::fs::create_dir_all(&up).unwrap();

    // Files of several sizes with distinct, second-precise modification times.
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.txt", Vec::new()),
        ("small.txt", b"hello rclone\n".to_vec()),
        ("4k.bin", pseudo_random(4096, 1)),
        ("big.bin", pseudo_random(3 * 1024 * 1024 + 17, 2)),
        ("Résumé ünïcode.txt", "naïve café".as_bytes().to_vec()),
    ];
    let base_time = 1_614_834_367u64; // 2021-03-04T05:06:07Z
    for (i, (name, data)) in files.iter().enumerate() {
        let p = up.join(name);
        std::fs::write(&p, data).unwrap();
        set_mtime(&p, base_time + 3600 * i as u64);
    }

    let conf = dir.path().join("rclone.conf");
    let (ok, obscured) = rclone(
        &conf,
        &[
            "obscure",
            webdav_support::alice().split_once(':').unwrap().1,
        ],
    );
    assert!(ok);
    std::fs::write(
        &conf,
        format!(
            "[dav]\ntype = webdav\nurl = {}/\nvendor = owncloud\nuser = {}\npass = {}\n",
            srv.base,
            sdx_portal::demo::DEMO_CLIENT_EMAIL,
            obscured.trim()
        ),
    )
    .unwrap();

    let conf2 = conf.clone();
    let up2 = up.clone();
    let down2 = down.clone();
    let files2 = files.clone();
    tokio::task::spawn_blocking(move || {
        let (conf, up, down, files) = (conf2, up2, down2, files2);
        let remote = format!("dav:{FOLDER}");
        let (ok, out) = rclone(&conf, &["copy", up.to_str().unwrap(), &remote]);
        assert!(ok, "rclone copy up failed:\n{out}");

        // Served back: sizes, modification times and both checksums as computed locally.
        let listed = lsjson(&conf);
        assert_eq!(listed.len(), files.len(), "{listed:?}");
        for (i, (name, data)) in files.iter().enumerate() {
            let (_, size, mtime, md5, sha1) = listed
                .iter()
                .find(|e| e.0 == *name)
                .unwrap_or_else(|| panic!("{name} not listed: {listed:?}"));
            assert_eq!(*size, data.len() as u64, "{name}");
            assert_eq!(*mtime, rfc3339(base_time + 3600 * i as u64), "{name}");
            assert_eq!(*md5, md5_hex(data), "{name}");
            assert_eq!(*sha1, sha1_hex(data), "{name}");
        }

        // rclone check compares the hashes (no "could not be checked").
        let (ok, out) = rclone(&conf, &["check", up.to_str().unwrap(), &remote]);
        assert!(ok, "{out}");
        assert!(out.contains("0 differences found"), "{out}");
        assert!(
            out.contains(&format!("{} matching files", files.len())),
            "{out}"
        );
        assert!(!out.contains("could not be checked"), "{out}");

        // Down again: same bytes, same modification times.
        let (ok, out) = rclone(&conf, &["copy", &remote, down.to_str().unwrap()]);
        assert!(ok, "rclone copy down failed:\n{out}");
        for (i, (name, data)) in files.iter().enumerate() {
            let p = down.join(name);
            assert_eq!(&std::fs::read(&p).unwrap(), data, "{name}");
            assert_eq!(mtime_secs(&p), base_time + 3600 * i as u64, "{name}");
        }

        // A changed file is re-uploaded and its checksums follow the new content.
        let p = up.join("small.txt");
        std::fs::write(&p, b"changed content, longer than before\n").unwrap();
        set_mtime(&p, base_time + 86_400 * 30);
        let (ok, out) = rclone(&conf, &["copy", up.to_str().unwrap(), &remote]);
        assert!(ok, "{out}");
        let (ok, out) = rclone(&conf, &["check", up.to_str().unwrap(), &remote]);
        assert!(ok && out.contains("0 differences found"), "{out}");
        assert!(!out.contains("could not be checked"), "{out}");
    })
    .await
    .unwrap();

    // Server side: the document's modification time is the client's.
    let staff = w.portal.tree(Actor::api(Principal::Staff(w.demo.staff)));
    let e = staff.stat(&format!("/{FOLDER}/big.bin")).await.unwrap();
    assert_eq!(e.modified, (base_time + 3 * 3600) * 1000);

    // Staff replaces 4k.bin through the API (no checksums): the old ones are no longer served.
    let mut u = staff
        .open_write(&format!("/{FOLDER}/4k.bin"), WriteOptions::upload())
        .await
        .unwrap();
    u.write(b"replaced by staff").await.unwrap();
    u.commit().await.unwrap();
    let conf2 = conf.clone();
    let listed = tokio::task::spawn_blocking(move || lsjson(&conf2))
        .await
        .unwrap();
    let e = listed.iter().find(|e| e.0 == "4k.bin").unwrap();
    assert_eq!(e.1, 17);
    assert_eq!(
        (e.3.as_str(), e.4.as_str()),
        ("", ""),
        "stale checksums served: {e:?}"
    );
    let e = listed.iter().find(|e| e.0 == "big.bin").unwrap();
    assert!(!e.3.is_empty(), "untouched documents keep theirs");

    // An OC-Checksum that does not match the body is refused with the reason; nothing is stored.
    let url = format!(
        "{}/{}/Client%20Documents/Tax%20Returns/bad.txt",
        srv.base, M1
    );
    let (code, body) = tokio::task::spawn_blocking(move || {
        curl(&[
            "-u",
            &alice(),
            "-X",
            "PUT",
            "-H",
            "OC-Checksum: SHA1:0000000000000000000000000000000000000000",
            "--data-binary",
            "some content",
            &url,
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("OC-Checksum"), "{body}");
    assert!(
        staff
            .stat(&format!("/{FOLDER}/bad.txt"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    // And a client can't forge oc:checksums.
    let url = format!(
        "{}/{}/Client%20Documents/Tax%20Returns/big.bin",
        srv.base, M1
    );
    let (code, body) = tokio::task::spawn_blocking(move || {
        curl(&[
            "-u",
            &alice(),
            "-X",
            "PROPPATCH",
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:oc="http://owncloud.org/ns"><D:set><D:prop><oc:checksums><oc:checksum>SHA1:00 MD5:00</oc:checksum></oc:checksums></D:prop></D:set></D:propertyupdate>"#,
            &url,
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, "207", "{body}");
    assert!(body.contains("403"), "{body}");
    let listed = tokio::task::spawn_blocking(move || lsjson(&conf))
        .await
        .unwrap();
    let e = listed.iter().find(|e| e.0 == "big.bin").unwrap();
    assert_eq!(e.3, md5_hex(&pseudo_random(3 * 1024 * 1024 + 17, 2)));
    srv.server.shutdown().await.unwrap();
}
