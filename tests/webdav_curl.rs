//! The WebDAV front end on loopback, driven by the real `curl` client.
use sdx_portal::{Portal, demo};
use std::process::Command;

fn curl(args: &[&str]) -> (String, String) {
    let out = match Command::new("curl")
        .args(["-s", "-S", "--http1.1"])
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            // The test needs curl; under CI it is installed by .ci/run, so its absence is a failure.
            panic!("curl is required for this test (apt-get install curl): {e}");
        }
    };
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_over_http_sees_only_its_matter_and_its_permissions() {
    let portal = Portal::in_memory().await.unwrap();
    demo::provision(&portal).await.unwrap();
    let server = sdx_portal::webdav::mount::builder(&portal, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .bind()
        .await
        .unwrap()
        .spawn();
    let base = format!("http://{}/dav", server.local_addr());
    let user = format!("{}:{}", demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD);
    let m = format!("{base}/2026-001%20Smith%20v%20Jones");

    let t = tokio::task::spawn_blocking(move || {
        // OPTIONS needs no credentials and advertises class 2.
        let (o, _) = curl(&["-i", "-X", "OPTIONS", &format!("{base}/")]);
        assert!(o.to_ascii_lowercase().contains("dav: 1,2"), "{o}");
        // Wrong password: 401.
        let (o, _) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "alice@client.test:wrong",
            &format!("{base}/"),
        ]);
        assert_eq!(o, "401");
        // Root lists only the granted matter.
        let (o, _) = curl(&[
            "-u",
            &user,
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 1",
            &format!("{base}/"),
        ]);
        assert!(
            o.contains("2026-001%20Smith%20v%20Jones") || o.contains("2026-001 Smith v Jones"),
            "{o}"
        );
        // Upload where Create is allowed, read it back.
        let f = std::env::temp_dir().join(format!("sdx-curl-{}.txt", std::process::id()));
        std::fs::write(&f, b"hello over webdav").unwrap();
        let up = |url: &str| {
            curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-u",
                &user,
                "-T",
                f.to_str().unwrap(),
                url,
            ])
            .0
        };
        assert_eq!(up(&format!("{m}/Client%20Documents/a.txt")), "201");
        let (o, _) = curl(&["-u", &user, &format!("{m}/Client%20Documents/a.txt")]);
        assert_eq!(o, "hello over webdav");
        // No Update there: 403; no Create in Correspondence: 403.
        assert_eq!(up(&format!("{m}/Client%20Documents/a.txt")), "403");
        assert_eq!(up(&format!("{m}/Correspondence/b.txt")), "403");
        // Not a portal folder: invisible.
        let (o, _) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            &user,
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 0",
            &format!("{m}/Internal"),
        ]);
        assert_eq!(o, "404");
        let _ = std::fs::remove_file(&f);
    });
    t.await.unwrap();
    server.shutdown().await.unwrap();
}
