//! Runs `examples/embed.rs` (compiled in here as a module): the host's own routes answer, the
//! portal's WebDAV works under `/dav/` of the host's server, and the host sees portal events.
#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

use std::process::Command;
use std::time::{Duration, Instant};

async fn curl(args: Vec<String>) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "30", "-w", "\n%{http_code}"])
            .args(&args)
            .output()
            .expect("curl is required for this test");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", ""));
        (body.to_string(), code.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_serves_its_routes_next_to_the_portal() {
    let host = embed::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", host.addr);
    let auth = format!("{}:{}", embed::CLIENT, embed::CLIENT_PASSWORD);

    let (body, code) = curl(vec![format!("{base}/health")]).await;
    assert_eq!((body.as_str(), code.as_str()), ("ok\n", "200"));
    let (_, code) = curl(vec![format!("{base}/elsewhere")]).await;
    assert_eq!(code, "404");
    let (_, code) = curl(vec![format!("{base}/dav/")]).await;
    assert_eq!(code, "401", "the portal asks for credentials");

    let (body, code) = curl(vec![
        "-u".into(),
        auth.clone(),
        "-X".into(),
        "PROPFIND".into(),
        "-H".into(),
        "Depth: 1".into(),
        format!("{base}/dav/"),
    ])
    .await;
    assert_eq!(code, "207");
    assert!(body.contains("2026-001"), "{body}");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("report.pdf");
    std::fs::write(&f, "quarterly figures\n").unwrap();
    let url = format!("{base}/dav/2026-001%20Smith%20v%20Jones/Client%20Documents/report.pdf");
    let (_, code) = curl(vec![
        "-u".into(),
        auth.clone(),
        "-T".into(),
        f.to_str().unwrap().into(),
        url.clone(),
    ])
    .await;
    assert_eq!(code, "201");
    let (body, code) = curl(vec!["-u".into(), auth.clone(), url]).await;
    assert_eq!(
        (body.as_str(), code.as_str()),
        ("quarterly figures\n", "200")
    );

    // The host's subscription saw the upload (events follow the commit).
    let t0 = Instant::now();
    loop {
        let (body, _) = curl(vec![format!("{base}/api/events")]).await;
        if body.contains("DocumentAdded") {
            assert!(body.contains("AccessGranted"), "{body}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no DocumentAdded event: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.stop().await;
}
