//! The standard WebDAV conformance suite, litmus, against the real portal on loopback, run as a
//! staff user inside a matter folder: `basic`, `copymove`, `props` and `locks` must all pass.
use sdx_portal::{Portal, demo};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litmus_basic_copymove_props_locks_pass_inside_a_matter_folder() {
    let portal = Portal::in_memory().await.unwrap();
    demo::provision(&portal).await.unwrap();
    let server = sdx_portal::webdav::mount::builder(&portal, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .bind()
        .await
        .unwrap()
        .spawn();
    let url = format!(
        "http://{}/dav/2026-001%20Smith%20v%20Jones/Internal/",
        server.local_addr()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("litmus")
            .env("TESTS", "basic copymove props locks")
            .args([url.as_str(), demo::DEMO_STAFF_EMAIL, demo::DEMO_PASSWORD])
            .output()
            .expect("litmus is required for this test (apt-get install litmus)")
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    server.shutdown().await.unwrap();
    for suite in ["basic", "copymove", "props", "locks"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("summary for `{suite}'")))
            .unwrap_or_else(|| panic!("litmus did not run `{suite}`:\n{text}"));
        assert!(line.contains(" 0 failed"), "{line}\n{text}");
    }
}
