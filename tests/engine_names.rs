//! Issue 2, naming rules: one canonical form (NFC), case-insensitive uniqueness within a folder,
//! names legal on Windows, macOS and Linux (clear errors, never a panic), matter folder names made
//! safe.

mod common;

use common::*;
use sdx_portal::Error;
use sdx_portal::model::*;
use sdx_portal::tree::{EntryKind, Tree, WriteOptions};

async fn setup() -> (Fx, User, String) {
    let fx = Fx::new().await;
    fx.set_perms(fx.general, CD, fx.client, Permissions::FULL)
        .await;
    let (m, mp) = fx.matter("2026-300", "Names", fx.general).await;
    let u = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    (fx, u, format!("{mp}/{CD}"))
}

async fn docs(t: &Tree, folder: &str) -> Vec<String> {
    let v = t.list(folder).await.unwrap();
    let mut n: Vec<String> = v
        .into_iter()
        .filter(|e| e.kind == EntryKind::Document)
        .map(|e| e.name)
        .collect();
    n.sort();
    n
}

async fn create_new(t: &Tree, path: &str, data: &[u8]) -> sdx_portal::Result<()> {
    let mut up = t
        .open_write(
            path,
            WriteOptions {
                truncate: true,
                create_new: true,
            },
        )
        .await?;
    up.write(data).await?;
    up.commit().await.map(|_| ())
}

#[tokio::test]
async fn nfc_and_nfd_spellings_are_one_name_in_a_folder() {
    let (fx, u, folder) = setup().await;
    let t = u.tree(&fx.portal);
    let nfc = "R\u{e9}sum\u{e9}.txt";
    let nfd = "Re\u{301}sume\u{301}.txt";
    assert_ne!(nfc, nfd);
    // Created with the decomposed spelling, stored in the composed one.
    let e = put(&t, &format!("{folder}/{nfd}"), b"one").await.unwrap();
    assert_eq!(e.name, nfc);
    assert_eq!(docs(&t, &folder).await, vec![nfc.to_string()]);
    // The other spelling is the same document: no second one can be created.
    let r = create_new(&t, &format!("{folder}/{nfc}"), b"dup").await;
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
    let s = t.stat(&format!("{folder}/{nfc}")).await.unwrap();
    assert_eq!(s.document, e.document);
    let e2 = put(&t, &format!("{folder}/{nfc}"), b"two").await.unwrap();
    assert_eq!(
        e2.document, e.document,
        "an upload under the other spelling updates it"
    );
    assert_eq!(docs(&t, &folder).await, vec![nfc.to_string()]);
    assert_eq!(
        read_all(&t, &format!("{folder}/{nfd}")).await.unwrap(),
        b"two"
    );
}

#[tokio::test]
async fn case_insensitive_duplicates_are_refused_in_one_folder() {
    let (fx, u, folder) = setup().await;
    let t = u.tree(&fx.portal);
    let staff = fx.staff_tree();
    let e = put(&t, &format!("{folder}/Report.PDF"), b"r")
        .await
        .unwrap();
    put(&t, &format!("{folder}/other.txt"), b"o").await.unwrap();
    for spelling in ["report.pdf", "REPORT.PDF", "rEpOrT.pDf"] {
        let r = create_new(&t, &format!("{folder}/{spelling}"), b"x").await;
        assert!(
            matches!(r, Err(Error::AlreadyExists(_))),
            "{spelling}: {r:?}"
        );
        assert_eq!(
            t.stat(&format!("{folder}/{spelling}"))
                .await
                .unwrap()
                .document,
            e.document
        );
    }
    let r = t
        .rename(
            &format!("{folder}/other.txt"),
            &format!("{folder}/REPORT.pdf"),
            false,
        )
        .await;
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
    assert_eq!(
        docs(&t, &folder).await,
        vec!["Report.PDF".to_string(), "other.txt".into()]
    );
    // Non-ASCII case folding too.
    put(&t, &format!("{folder}/\u{c4}rger.txt"), b"a")
        .await
        .unwrap();
    let r = create_new(&t, &format!("{folder}/\u{e4}RGER.TXT"), b"b").await;
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
    // Folders: staff can't make a case-variant twin either, and a document can't take its name.
    let r = staff.mkdir(&format!("{folder}/tax returns")).await;
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
    let r = put(&staff, &format!("{folder}/TAX RETURNS"), b"x").await;
    assert!(r.is_err(), "{r:?}");
    // A case-only rename of the same document is allowed.
    t.rename(
        &format!("{folder}/Report.PDF"),
        &format!("{folder}/report.pdf"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        docs(&t, &folder).await,
        vec![
            "other.txt".to_string(),
            "report.pdf".into(),
            "\u{c4}rger.txt".into()
        ]
    );
    // The same for a staff folder rename.
    staff
        .rename(
            &format!("{folder}/Tax Returns"),
            &format!("{folder}/TAX returns"),
            false,
        )
        .await
        .unwrap();
    let sub: Vec<String> = staff
        .list(&folder)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EntryKind::Folder)
        .map(|e| e.name)
        .collect();
    assert_eq!(sub, vec!["TAX returns".to_string()]);
}

const ILLEGAL: &[&str] = &[
    "a:b",
    "a*b",
    "a?b",
    "a\"b",
    "a<b",
    "a>b",
    "a|b",
    "trailing.",
    "trailing ",
    "ctl\u{1}char",
    "tab\tname",
    "new\nline",
    "nul\0byte",
];

async fn refused_everywhere(fx: &Fx, u: &User, folder: &str, name: &str) {
    let t = u.tree(&fx.portal);
    let staff = fx.staff_tree();
    let path = format!("{folder}/{name}");
    let show = name.escape_debug().to_string();
    let invalid = |r: &sdx_portal::Result<()>| matches!(r, Err(Error::InvalidName { .. }));
    let r = put(&t, &path, b"x").await.map(|_| ());
    assert!(invalid(&r), "upload of {show}: {r:?}");
    let r = t.stat(&path).await.map(|_| ());
    assert!(invalid(&r), "stat of {show}: {r:?}");
    let r = t.rename(&format!("{folder}/ok.txt"), &path, false).await;
    assert!(invalid(&r), "rename to {show}: {r:?}");
    let r = staff.mkdir(&path).await.map(|_| ());
    assert!(invalid(&r), "mkdir of {show}: {r:?}");
    let r = put(&staff, &path, b"x").await.map(|_| ());
    assert!(invalid(&r), "staff upload of {show}: {r:?}");
    if let Err(Error::InvalidName { reason, .. }) = put(&t, &path, b"x").await {
        assert!(!reason.is_empty());
    }
}

#[tokio::test]
async fn illegal_names_are_refused_with_invalid_name() {
    let (fx, u, folder) = setup().await;
    put(&u.tree(&fx.portal), &format!("{folder}/ok.txt"), b"ok")
        .await
        .unwrap();
    for name in ILLEGAL {
        refused_everywhere(&fx, &u, &folder, name).await;
    }
    let long = "x".repeat(256);
    refused_everywhere(&fx, &u, &folder, &long).await;
    // Multi-byte: 100 × 3 bytes is over 255 bytes.
    let long = "\u{20ac}".repeat(100);
    refused_everywhere(&fx, &u, &folder, &long).await;
    // Nothing was created along the way.
    assert_eq!(
        docs(&u.tree(&fx.portal), &folder).await,
        vec!["ok.txt".to_string()]
    );
    // A name just at the limit is fine.
    let at_limit = format!("{}.txt", "y".repeat(251));
    assert_eq!(at_limit.len(), 255);
    put(&u.tree(&fx.portal), &format!("{folder}/{at_limit}"), b"ok")
        .await
        .unwrap();
}

#[tokio::test]
async fn reserved_device_names_are_refused_with_invalid_name() {
    let (fx, u, folder) = setup().await;
    put(&u.tree(&fx.portal), &format!("{folder}/ok.txt"), b"ok")
        .await
        .unwrap();
    for name in [
        "CON",
        "con",
        "PRN",
        "AUX",
        "NUL",
        "COM1",
        "lpt9",
        "NUL.txt",
        "con.tar.gz",
    ] {
        refused_everywhere(&fx, &u, &folder, name).await;
    }
    assert_eq!(
        docs(&u.tree(&fx.portal), &folder).await,
        vec!["ok.txt".to_string()]
    );
    // Names that merely start like one are fine.
    put(&u.tree(&fx.portal), &format!("{folder}/CONTRACT.txt"), b"c")
        .await
        .unwrap();
    put(&u.tree(&fx.portal), &format!("{folder}/com10.txt"), b"c")
        .await
        .unwrap();
}

#[tokio::test]
async fn template_folder_names_are_checked_too() {
    let fx = Fx::new().await;
    for bad in ["A:B", "Docs/Trailing.", "x\u{1}"] {
        let r = fx.portal.create_matter_type(&fx.firm, "Bad", &[bad]).await;
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "{}: {r:?}",
            bad.escape_debug()
        );
    }
    // Case and NFC duplicates in one template collapse into one folder.
    let mt = fx
        .portal
        .create_matter_type(
            &fx.firm,
            "Dups",
            &["Caf\u{e9}", "CAFE\u{301}", "caf\u{e9}/Sub"],
        )
        .await
        .unwrap();
    let info = fx.portal.matter_type(&fx.staff, mt).await.unwrap();
    assert_eq!(info.folders.len(), 2, "{:?}", info.folders);
    let (_, mp) = fx.matter("2026-302", "Dups", mt).await;
    let staff = fx.staff_tree();
    assert_eq!(
        names(&staff.list(&mp).await.unwrap()),
        vec!["Caf\u{e9}".to_string()]
    );
    assert_eq!(
        names(&staff.list(&format!("{mp}/CAFE\u{301}")).await.unwrap()),
        vec!["Sub".to_string()]
    );
}

#[tokio::test]
async fn matter_folder_names_are_number_and_title_made_safe() {
    let fx = Fx::new().await;
    fx.set_perms(fx.general, CD, fx.client, Permissions::FULL)
        .await;
    let m = fx
        .portal
        .create_matter(
            &fx.firm,
            "2026/301",
            "Smith: \"A\" v. <Jones>?*|.",
            fx.general,
        )
        .await
        .unwrap();
    let u = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let t = u.tree(&fx.portal);
    let root = t.list("/").await.unwrap();
    assert_eq!(root.len(), 1);
    let name = root[0].name.clone();
    assert!(name.starts_with("2026"), "{name}");
    assert!(name.contains("Smith") && name.contains("Jones"), "{name}");
    assert!(
        !name
            .chars()
            .any(|c| "/\\:*?\"<>|".contains(c) || c.is_control()),
        "{name}"
    );
    assert!(!name.ends_with('.') && !name.ends_with(' '), "{name}");
    let info = fx.portal.matters(&fx.staff).await.unwrap();
    assert_eq!(info[0].display, name);
    assert_eq!(
        info[0].title, "Smith: \"A\" v. <Jones>?*|.",
        "the title itself is kept"
    );
    // The safe name is a working path.
    let s = t.stat(&format!("/{name}")).await.unwrap();
    assert_eq!(s.matter, Some(m));
    put(&t, &format!("/{name}/{CD}/a.txt"), b"a").await.unwrap();
    assert_eq!(
        read_all(&t, &format!("/{name}/{CD}/a.txt")).await.unwrap(),
        b"a"
    );
    // A matter whose safe name would collide with another's is refused.
    let r = fx
        .portal
        .create_matter(
            &fx.firm,
            "2026_301",
            "Smith_ \"A\" v. <Jones>?*|",
            fx.general,
        )
        .await;
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
}
