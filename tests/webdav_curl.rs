//! The WebDAV front end on loopback, driven by the real `curl` client as a portal user who sees
//! only their own matter: one request per permission case, and every refusal says why in its
//! body.
//!
//! The demo matter type gives the client: `Client Documents` List+Read+Create,
//! `Client Documents/Tax Returns` everything, `Correspondence` List+Read, `Internal` nothing. The
//! test adds a Create-only drop box (`Drop Box`) to see "no List → lists empty".

mod webdav_support;

use sdx_portal::model::{Actor, Permission, Permissions, Principal};
use sdx_portal::tree::WriteOptions;
use webdav_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_over_http_sees_only_its_matter_and_its_permissions() {
    if !have_tool("curl") {
        return;
    }
    let w = World::new().await;
    let sys = Actor::system();
    let general = w
        .portal
        .find_matter_type(&sys, "General")
        .await
        .unwrap()
        .unwrap();
    let client_t = w
        .portal
        .find_participant_type(&sys, "Client")
        .await
        .unwrap()
        .unwrap();
    w.portal
        .set_matter_type_folders(
            &sys,
            general,
            &[
                "Client Documents",
                "Client Documents/Tax Returns",
                "Correspondence",
                "Internal",
                "Drop Box",
            ],
        )
        .await
        .unwrap();
    w.portal
        .set_portal_permissions(
            &sys,
            general,
            "Drop Box",
            client_t,
            Permissions::NONE.with(Permission::Create),
        )
        .await
        .unwrap();
    // Staff documents in each folder.
    let staff = w.portal.tree(Actor::api(Principal::Staff(w.demo.staff)));
    for f in ["Correspondence", "Internal", "Drop Box", "Client Documents"] {
        let mut up = staff
            .open_write(
                &format!("/2026-001 Smith v Jones/{f}/from-staff.txt"),
                WriteOptions::upload(),
            )
            .await
            .unwrap();
        up.write(b"written by the firm").await.unwrap();
        up.commit().await.unwrap();
    }
    let srv = w.serve().await;
    let base = srv.base.clone();

    tokio::task::spawn_blocking(move || {
        let m = format!("{base}/{M1}");
        let u = alice();
        let file = std::env::temp_dir().join(format!("sdx-curl-{}.txt", std::process::id()));
        std::fs::write(&file, b"hello over webdav").unwrap();
        let f = file.to_str().unwrap().to_string();
        let put = |url: &str| curl(&["-u", &u, "-T", &f, url]);
        let propfind = |url: &str, depth: &str| {
            curl(&[
                "-u",
                &u,
                "-X",
                "PROPFIND",
                "-H",
                &format!("Depth: {depth}"),
                url,
            ])
        };

        // OPTIONS needs no credentials and advertises class 2.
        let out = std::process::Command::new("curl")
            .args(["-s", "-i", "-X", "OPTIONS", &format!("{base}/")])
            .output()
            .unwrap();
        let o = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(o.contains("dav: 1,2"), "{o}");
        // Wrong password: 401, and the body says so.
        let (code, body) = curl(&["-u", "alice@client.test:wrong", &format!("{base}/")]);
        assert_eq!(code, "401");
        assert!(body.contains("Wrong user name or password"), "{body}");

        // The root lists only Alice's matter.
        let (code, body) = propfind(&format!("{base}/"), "1");
        assert_eq!(code, "207");
        assert!(body.contains(M1), "{body}");
        assert!(!body.contains("2026-002"), "{body}");
        // The matter lists only the folders she has rights on ("Internal" has none).
        let (code, body) = propfind(&format!("{m}/"), "1");
        assert_eq!(code, "207");
        for f in ["Client%20Documents", "Correspondence", "Drop%20Box"] {
            assert!(body.contains(f), "{f}: {body}");
        }
        assert!(!body.contains("Internal"), "{body}");
        let (code, _) = propfind(&format!("{m}/Internal"), "0");
        assert_eq!(code, "404");
        let (code, _) = curl(&["-u", &u, &format!("{m}/Internal/from-staff.txt")]);
        assert_eq!(code, "404");

        // Create allowed: upload, read back.
        assert_eq!(put(&format!("{m}/Client%20Documents/a.txt")).0, "201");
        let (code, body) = curl(&["-u", &u, &format!("{m}/Client%20Documents/a.txt")]);
        assert_eq!((code.as_str(), body.as_str()), ("200", "hello over webdav"));

        // No Update: PUT over an existing name is refused, saying which permission on which folder.
        let (code, body) = put(&format!("{m}/Client%20Documents/from-staff.txt"));
        assert_eq!(code, "403");
        assert!(
            body.contains("Update") && body.contains("Client Documents"),
            "{body}"
        );
        // No Create: PUT of a new name is refused.
        let (code, body) = put(&format!("{m}/Correspondence/b.txt"));
        assert_eq!(code, "403");
        assert!(
            body.contains("Create") && body.contains("Correspondence"),
            "{body}"
        );
        // List+Read: the firm's letter can be read.
        let (code, body) = curl(&["-u", &u, &format!("{m}/Correspondence/from-staff.txt")]);
        assert_eq!(
            (code.as_str(), body.as_str()),
            ("200", "written by the firm")
        );
        // No Delete.
        let (code, body) = curl(&[
            "-u",
            &u,
            "-X",
            "DELETE",
            &format!("{m}/Client%20Documents/a.txt"),
        ]);
        assert_eq!(code, "403");
        assert!(body.contains("Delete"), "{body}");
        // A rename needs Delete at the source too.
        let (code, body) = curl(&[
            "-u",
            &u,
            "-X",
            "MOVE",
            "-H",
            &format!("Destination: {m}/Client%20Documents/renamed.txt"),
            &format!("{m}/Client%20Documents/a.txt"),
        ]);
        assert_eq!(code, "403");
        assert!(body.contains("Delete"), "{body}");
        // Portal users never create folders.
        let (code, body) = curl(&[
            "-u",
            &u,
            "-X",
            "MKCOL",
            &format!("{m}/Client%20Documents/New/"),
        ]);
        assert_eq!(code, "403");
        assert!(body.contains("creating folders"), "{body}");
        // Full rights in Tax Returns: create, replace, rename, delete.
        let t = format!("{m}/Client%20Documents/Tax%20Returns");
        assert_eq!(put(&format!("{t}/2025.pdf")).0, "201");
        assert_eq!(put(&format!("{t}/2025.pdf")).0, "204");
        let (code, _) = curl(&[
            "-u",
            &u,
            "-X",
            "MOVE",
            "-H",
            &format!("Destination: {t}/2025-final.pdf"),
            &format!("{t}/2025.pdf"),
        ]);
        assert_eq!(code, "201");
        let (code, _) = curl(&["-u", &u, "-X", "DELETE", &format!("{t}/2025-final.pdf")]);
        assert_eq!(code, "204");

        // Create-only drop box: the upload works, the folder lists empty, nothing can be read.
        assert_eq!(put(&format!("{m}/Drop%20Box/mine.txt")).0, "201");
        let (code, body) = propfind(&format!("{m}/Drop%20Box/"), "1");
        assert_eq!(code, "207");
        assert!(
            !body.contains("from-staff.txt") && !body.contains("mine.txt"),
            "{body}"
        );
        let (code, _) = curl(&["-u", &u, &format!("{m}/Drop%20Box/from-staff.txt")]);
        assert_ne!(code, "200");

        // The other client's matter does not exist for Alice, whatever the method.
        let other = format!("{base}/{M2}/Client%20Documents/secret.txt");
        assert_eq!(propfind(&format!("{base}/{M2}/"), "0").0, "404");
        let (code, body) = curl(&["-u", &u, &other]);
        assert_eq!(code, "404");
        assert!(!body.contains("confidential"), "{body}");
        assert_ne!(put(&other).0, "201");
        // Bob sees his own.
        let (code, body) = curl(&["-u", &bob(), &other]);
        assert_eq!(code, "200");
        assert_eq!(body.as_bytes(), SECRET);
        let _ = std::fs::remove_file(&file);
    })
    .await
    .unwrap();
    srv.server.shutdown().await.unwrap();
}
